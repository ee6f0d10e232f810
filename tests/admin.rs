//! The admin API end to end: token, registry round trip (register, drain, enable, graceful
//! delete), bad input, Prometheus metrics, and the balancer's own health.

mod common;
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "s3cret";

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

fn addresses(admin: std::net::SocketAddr, token: Option<&str>) -> Vec<String> {
    let r = admin_call(admin, "GET", "/backends", token, "");
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect()
}

fn server_id(r: &Resp) -> String {
    r.header("x-server-id").unwrap_or("?").to_string()
}

#[test]
fn token_is_enforced() {
    let a = serve(1, &[]);
    let (_lb, admin) = balance_with_admin(&[a.addr()], &["--admin-token", TOKEN]);
    assert_eq!(admin_call(admin, "GET", "/backends", None, "").status, 401);
    assert_eq!(
        admin_call(admin, "GET", "/backends", Some("wrong"), "").status,
        401
    );
    assert_eq!(admin_call(admin, "GET", "/metrics", None, "").status, 401);
    let r = admin_call(admin, "POST", "/backends", None, r#"{"address": ":9"}"#);
    assert_eq!(r.status, 401);
    assert_eq!(addresses(admin, Some(TOKEN)), [a.addr().to_string()]);
}

#[test]
fn bad_input_is_400_and_changes_nothing() {
    let a = serve(1, &[]);
    let (_lb, admin) = balance_with_admin(&[a.addr()], &[]);
    for body in [
        "{not json",
        r#"{"address": ":9004", "weight": 1, "extra": true}"#,
        r#"{"weight": 1}"#,
        r#"{"address": "nope:"}"#,
        r#"{"address": ":9004", "weight": 0}"#,
        r#"{"address": ":9004", "weight": -1}"#,
        "",
    ] {
        let r = admin_call(admin, "POST", "/backends", None, body);
        assert_eq!(r.status, 400, "body {body:?} gave {}", r.text());
        assert!(json(&r)["error"].is_string());
    }
    let dup = format!(r#"{{"address": "{}"}}"#, a.addr());
    assert_eq!(
        admin_call(admin, "POST", "/backends", None, &dup).status,
        409
    );
    assert_eq!(
        admin_call(admin, "DELETE", "/backends/:1", None, "").status,
        404
    );
    assert_eq!(admin_call(admin, "GET", "/nothing", None, "").status, 404);
    assert_eq!(addresses(admin, None), [a.addr().to_string()]);
}

#[test]
fn registry_round_trip() {
    let a = serve(1, &[]);
    let b = serve(2, &["--delay", "600ms"]);
    let (lb, admin) = balance_with_admin(
        &[a.addr()],
        // b answers after 600ms, health checks included.
        &["--workers", "2", "--interval", "100ms", "--timeout", "2s"],
    );
    let lb_addr = lb.addr();

    // Register: the new backend takes traffic once its health checks pass.
    let body = format!(r#"{{"address": "{}", "weight": 2}}"#, b.addr());
    let r = admin_call(admin, "POST", "/backends", None, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(json(&r)["weight"], 2);
    assert!(
        wait_until(Duration::from_secs(10), || server_id(
            &get(lb_addr, "/").unwrap()
        ) == "2"),
        "the registered backend got no traffic"
    );

    // Drain while a slow request is in flight at it: that request finishes, no new one starts
    // there. Enable: back in rotation.
    let b_path = format!("/backends/{}", b.addr());
    let drain = format!("{b_path}/drain");
    let r = while_slow_request_in_flight(lb_addr, admin, &b_path, || {
        admin_call(admin, "POST", &drain, None, "")
    });
    assert_eq!(r["state"], "draining");
    let r = admin_call(admin, "POST", &format!("{b_path}/enable"), None, "");
    assert_eq!(json(&r)["state"], "healthy");
    assert!(wait_until(Duration::from_secs(10), || server_id(
        &get(lb_addr, "/").unwrap()
    ) == "2"));

    // Delete the same way; then it leaves the list.
    let r = while_slow_request_in_flight(lb_addr, admin, &b_path, || {
        admin_call(admin, "DELETE", &b_path, None, "")
    });
    assert_eq!(r["removing"], true);
    let gone = || !addresses(admin, None).contains(&b.addr().to_string());
    assert!(wait_until(Duration::from_secs(10), gone));
    assert_eq!(addresses(admin, None), [a.addr().to_string()]);
    assert_eq!(
        admin_call(admin, "GET", &b_path, None, "").status,
        404,
        "deleted"
    );
}

#[test]
fn addresses_in_paths_may_carry_their_scheme_or_leave_it_out() {
    let a = serve(1, &[]);
    let h2c = format!("h2c://{}", a.addr());
    let (lb, admin) = balance_args_with_admin(&["-b", &h2c, "--interval", "100ms"]);
    let state = |path: &str| {
        let r = admin_call(admin, "GET", path, None, "");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        json(&r)["state"].as_str().unwrap().to_string()
    };
    let post = |path: &str| {
        let r = admin_call(admin, "POST", path, None, "");
        assert_eq!(r.status, 200, "POST {path}: {}", r.text());
        json(&r)
    };
    let plain = format!("/backends/{h2c}");
    let bare = format!("/backends/{}", a.addr());
    let escaped = format!("/backends/h2c%3A%2F%2F{}", a.addr());
    assert!(wait_until(Duration::from_secs(10), || state(&plain) == "healthy"));

    // With the scheme, as written on the command line.
    assert_eq!(post(&format!("{plain}/drain"))["state"], "draining");
    assert_eq!(post(&format!("{plain}/enable"))["state"], "healthy");
    // Without it: host and port name one backend only.
    assert_eq!(post(&format!("{bare}/drain"))["address"], h2c);
    assert_eq!(state(&bare), "draining");
    assert_eq!(post(&format!("{bare}/enable"))["state"], "healthy");
    // Escaped, as before.
    assert_eq!(post(&format!("{escaped}/drain"))["state"], "draining");
    assert_eq!(post(&format!("{escaped}/enable"))["state"], "healthy");
    assert_eq!(get(lb.addr(), "/").unwrap().status, 200);

    // Another protocol on the same host and port: the bare form is ambiguous, and says so.
    let https = format!("https://{}", a.addr());
    let body = format!(r#"{{"address": "{https}"}}"#);
    assert_eq!(
        admin_call(admin, "POST", "/backends", None, &body).status,
        201
    );
    let r = admin_call(admin, "POST", &format!("{bare}/drain"), None, "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains(&https) && r.text().contains(&h2c),
        "{}",
        r.text()
    );
    let r = admin_call(admin, "DELETE", &format!("/backends/{https}"), None, "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(wait_until(Duration::from_secs(10), || addresses(
        admin, None
    ) == [h2c.clone()]));

    // Delete with the bare form, now unambiguous again.
    let r = admin_call(admin, "DELETE", &bare, None, "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(json(&r)["address"], h2c);
    assert!(wait_until(Duration::from_secs(10), || addresses(
        admin, None
    )
    .is_empty()));
    assert_eq!(admin_call(admin, "GET", &plain, None, "").status, 404);
}

/// Runs a sequential client loop through the balancer, waits until a slow request is in flight
/// at the backend at `b_path` (server 2), then runs `action` (which must stop new requests from
/// going there). Checks that the request in flight still finished at server 2, that every
/// request succeeded, and that none started after `action` reached server 2. Returns the
/// action's JSON answer.
fn while_slow_request_in_flight(
    lb_addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    b_path: &str,
    action: impl FnOnce() -> Resp,
) -> serde_json::Value {
    let acted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(bool, String)>>> = Arc::default();
    let client = {
        let (acted, stop, seen) = (acted.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let after = acted.load(Ordering::SeqCst);
                let r = get(lb_addr, "/").expect("request through the balancer");
                assert_eq!(r.status, 200, "{}", r.text());
                seen.lock().unwrap().push((after, server_id(&r)));
            }
        })
    };
    let in_flight_at_b = || {
        let r = admin_call(admin, "GET", b_path, None, "");
        r.status == 200 && json(&r)["in_flight"] == 1
    };
    assert!(wait_until(Duration::from_secs(20), in_flight_at_b));
    let mark = seen.lock().unwrap().len();
    let r = action();
    assert!(r.status < 300, "{}", r.text());
    acted.store(true, Ordering::SeqCst);
    let answer = json(&r);
    let later = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(after, _)| *after)
            .count()
            >= 10
    };
    assert!(wait_until(Duration::from_secs(20), later));
    stop.store(true, Ordering::SeqCst);
    client.join().expect("no client request failed");
    let seen = seen.lock().unwrap();
    if answer["in_flight"] == 1 {
        assert!(
            seen[mark..].iter().any(|(after, id)| !after && id == "2"),
            "the request in flight finished at server 2: {seen:?}"
        );
    }
    let after_b = seen
        .iter()
        .filter(|(after, id)| *after && id == "2")
        .count();
    assert_eq!(
        after_b, 0,
        "a request reached server 2 after it stopped taking them"
    );
    answer
}

/// Parses Prometheus text: every non-comment line is `name{labels} value`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(
                matches!(words.first(), Some(&"HELP") | Some(&"TYPE")),
                "bad comment: {line}"
            );
            if words[0] == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram"].contains(&words[2]),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line}");
            for pair in series[name_end + 1..series.len() - 1].split("\",") {
                let (k, _) = pair.split_once("=\"").expect("label=\"value\"");
                assert!(!k.is_empty(), "{line}");
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        out.insert(series.to_string(), v);
    }
    out
}

fn sum(m: &HashMap<String, f64>, prefix: &str, needle: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.contains(needle))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn a_backend_that_cannot_be_reached_is_sent_no_request() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let (b_addr, a_addr) = (b.addr(), a.addr());
    let (lb, admin) =
        balance_with_admin(&[a_addr, b_addr], &["--workers", "1", "--interval", "1h"]);
    for _ in 0..2 {
        assert_eq!(get(lb.addr(), "/").unwrap().status, 200);
    }
    drop(b); // killed: its kept connection closes, and new ones are refused
    for path in ["/", "/", "/echo", "/"] {
        let r = if path == "/echo" {
            request(lb.addr(), "POST", path, &[], b"x").unwrap()
        } else {
            get(lb.addr(), path).unwrap()
        };
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let m = parse_prometheus(&admin_call(admin, "GET", "/metrics", None, "").text());
    let sent = |addr: SocketAddr| m[&format!("lbx_backend_requests_total{{backend=\"{addr}\"}}")];
    assert_eq!(
        sent(b_addr),
        1.0,
        "the refused connect counted as a request"
    );
    assert_eq!(sent(a_addr), 5.0);
}

#[test]
fn metrics_count_the_requests_sent() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let (lb, admin) = balance_with_admin(&[a.addr(), b.addr()], &["--workers", "1"]);
    for _ in 0..10 {
        assert_eq!(get(lb.addr(), "/").unwrap().status, 200);
    }
    assert_eq!(get(lb.addr(), "/nope").unwrap().status, 404);
    let mut m = HashMap::new();
    let counted = wait_until(Duration::from_secs(10), || {
        let r = admin_call(admin, "GET", "/metrics", None, "");
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        m = parse_prometheus(&r.text());
        m.get("lbx_requests_total{class=\"4xx\"}") == Some(&1.0)
            && m.get("lbx_requests_total{class=\"2xx\"}") == Some(&10.0)
    });
    assert!(counted, "{m:?}");
    for addr in [a.addr(), b.addr()] {
        let l = format!("backend=\"{addr}\"");
        // Round robin over 11 requests: the first backend gets the odd ones.
        let want = if addr == a.addr() { 6.0 } else { 5.0 };
        assert_eq!(m[&format!("lbx_backend_requests_total{{{l}}}")], want);
        let inf = format!("lbx_backend_latency_seconds_bucket{{{l},le=\"+Inf\"}}");
        assert_eq!(
            m[&inf],
            m[&format!("lbx_backend_latency_seconds_count{{{l}}}")]
        );
    }
    assert_eq!(
        sum(&m, "lbx_backend_responses_total", "class=\"2xx\""),
        10.0
    );
    assert_eq!(sum(&m, "lbx_backend_responses_total", "class=\"4xx\""), 1.0);
    assert_eq!(sum(&m, "lbx_backend_latency_seconds_count", ""), 11.0);
    assert_eq!(m["lbx_backends_routable"], 2.0);
    assert_eq!(m["lbx_retries_total"], 0.0);
}

#[test]
fn healthz_is_503_when_every_backend_is_down() {
    let mut a = serve(1, &[]);
    let (_lb, admin) =
        balance_with_admin(&[a.addr()], &["--interval", "100ms", "--timeout", "500ms"]);
    let r = admin_call(admin, "GET", "/healthz", None, "");
    assert_eq!(r.status, 200, "{}", r.text());
    a.signal("KILL");
    let _ = a.wait_exit(Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(10), || admin_call(
        admin, "GET", "/healthz", None, ""
    )
    .status
        == 503));
}

#[test]
fn check_admin_prints_the_pool() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let (_lb, admin) = balance_with_admin(&[a.addr(), b.addr()], &["--admin-token", TOKEN]);
    let admin_s = admin.to_string();
    let drain = format!("/backends/{}/drain", b.addr());
    assert_eq!(
        admin_call(admin, "POST", &drain, Some(TOKEN), "").status,
        200
    );

    let out = run_lbx(
        &["check", "--admin", &admin_s, "--admin-token", TOKEN],
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a draining backend: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("BACKEND"), "{stdout}");
    assert!(lines[1].starts_with(&a.addr().to_string()) && lines[1].contains("healthy"));
    assert!(lines[2].starts_with(&b.addr().to_string()) && lines[2].contains("draining"));

    let out = run_lbx(
        &[
            "check",
            "--admin",
            &admin_s,
            "--admin-token",
            TOKEN,
            "--json",
        ],
        Duration::from_secs(20),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["state"], "healthy");
    assert_eq!(v[1]["state"], "draining");

    let out = run_lbx(&["check", "--admin", &admin_s], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn log_level_filters_operational_logs() {
    let a = serve(1, &[]);
    let (lb, admin) = balance_with_admin(&[a.addr()], &["--log-level", "debug"]);
    assert_eq!(admin_call(admin, "GET", "/healthz", None, "").status, 200);
    let mut errs = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        errs.extend(lb.stderr_so_far());
        errs.iter()
            .any(|l| l.contains(" DEBUG admin request") && l.contains("path=/healthz"))
    }));
    drop(lb);

    let (mut lb, admin) = balance_with_admin(&[a.addr()], &["--log-level", "warn"]);
    assert_eq!(admin_call(admin, "GET", "/healthz", None, "").status, 200);
    lb.signal("TERM");
    assert_eq!(lb.wait_exit(Duration::from_secs(15)), Some(0));
    let errs = lb.rest_of_stderr(Duration::from_secs(5));
    assert!(
        errs.iter()
            .all(|l| !l.contains(" INFO ") && !l.contains(" DEBUG ")),
        "{errs:?}"
    );

    let out = run_lbx(
        &["balance", "-b", ":1", "--log-level", "loud"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_readme_lists_every_metric_family_exported() {
    let a = serve(1, &[]);
    let log = TempFile::new("metrics-families.log");
    let (_lb, admin) = balance_with_admin(&[a.addr()], &["--access-log", log.to_str().unwrap()]);
    let text = admin_call(admin, "GET", "/metrics", None, "").text();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("a Metrics section");
    let listed: std::collections::BTreeSet<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(listed, exported, "README metrics table vs /metrics");
}
