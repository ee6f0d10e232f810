//! `lbx check` end to end: exit codes, expectations, JSON, TLS with a test CA, watch and wait.

mod common;
use common::*;
use std::process::Output;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn check(args: &[&str]) -> Output {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    run_lbx(&all, LIMIT)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Vec<serde_json::Value> {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn healthy_backend_exits_0() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let o = check(&[&addr]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&addr) && out.contains("healthy") && out.contains("200"),
        "{out}"
    );
}

#[test]
fn unhealthy_backend_exits_1() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    assert_eq!(
        request(s.addr(), "POST", "/healthcheck/fail", &[], b"")
            .unwrap()
            .status,
        200
    );
    let o = check(&[&addr]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("unhealthy") && out.contains("503"), "{out}");
}

#[test]
fn closed_port_exits_1() {
    let port = closed_port().to_string();
    let o = check(&[&format!(":{port}")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("connection refused"), "{}", stdout(&o));
}

#[test]
fn one_bad_target_among_good_exits_1() {
    let s = serve(1, &[]);
    let port = closed_port().to_string();
    let o = check(&[&s.addr().to_string(), &format!("127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}

#[test]
fn bad_address_exits_2_naming_it() {
    let o = check(&["localhost:notaport"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("notaport"), "{}", stderr(&o));
}

#[test]
fn bad_flags_exit_2_naming_the_value() {
    for (flag, value) in [
        ("--expect-status", "7xx"),
        ("--timeout", "soon"),
        ("--expect-body-regex", "(unclosed"),
        ("-H", "no-colon-here"),
        ("--path", "healthcheck"),
    ] {
        let o = check(&[":9", flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(stderr(&o).contains(value), "{flag}: {}", stderr(&o));
    }
    let o = check(&[":9", "--cacert", "/nonexistent/ca.pem"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/ca.pem"), "{}", stderr(&o));
}

#[test]
fn expect_status_both_ways() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    assert_eq!(
        check(&[&addr, "--expect-status", "200"]).status.code(),
        Some(0)
    );
    assert_eq!(
        check(&[&addr, "--expect-status", "300-399,5xx"])
            .status
            .code(),
        Some(1)
    );
    // A 404 is healthy when it is what was asked for.
    let o = check(&[&addr, "--path", "/nope", "--expect-status", "404"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    request(s.addr(), "POST", "/healthcheck/fail", &[], b"").unwrap();
    assert_eq!(
        check(&[&addr, "--expect-status", "503"]).status.code(),
        Some(0)
    );
    let o = check(&[&addr, "--expect-status", "2xx"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("expected 2xx"), "{}", stdout(&o));
}

#[test]
fn expect_body_both_ways() {
    let s = serve(4, &[]);
    let addr = s.addr().to_string();
    assert_eq!(
        check(&[&addr, "--expect-body", "ok"]).status.code(),
        Some(0)
    );
    let o = check(&[&addr, "--expect-body", "degraded"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("degraded"), "{}", stdout(&o));
    let o = check(&[&addr, "--path", "/", "--expect-body-regex", r"server \d$"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = check(&[&addr, "--path", "/", "--expect-body-regex", r"^server"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn method_and_headers_reach_the_backend() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    // /echo answers 200 to any method; check the body to see the method and header arrived.
    let args = [
        addr.as_str(),
        "--path",
        "/echo?x=1",
        "-m",
        "put",
        "-H",
        "X-Probe: yes",
        "--expect-body",
        r#""method":"PUT""#,
        "--expect-body-regex",
        r#""x-probe":"yes".*"path":"/echo\?x=1""#,
    ];
    let o = check(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Without the header the same expectations fail.
    let mut without = args.to_vec();
    without.drain(5..7);
    assert_eq!(check(&without).status.code(), Some(1));
}

#[test]
fn json_has_fields_and_timings() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let port = closed_port().to_string();
    let closed = format!("127.0.0.1:{port}");
    let o = check(&[&addr, &closed, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["address"], addr.as_str());
    assert_eq!(v[0]["healthy"], true);
    assert_eq!(v[0]["status"], 200);
    assert!(v[0]["latency_ms"].as_f64().unwrap() > 0.0);
    let t = &v[0]["timings_ms"];
    for k in ["dns", "connect", "tls", "ttfb", "transfer", "total"] {
        assert!(t[k].is_number(), "timings_ms.{k} missing: {t}");
    }
    assert!(t["connect"].as_f64().unwrap() > 0.0);
    assert_eq!(t["total"], v[0]["latency_ms"]);
    assert_eq!(v[1]["address"], closed.as_str());
    assert_eq!(v[1]["healthy"], false);
    assert!(v[1]["status"].is_null());
    assert_eq!(v[1]["error"]["kind"], "connection refused");
    assert!(v[1]["timings_ms"]["ttfb"].is_null());
}

#[test]
fn many_targets_are_probed_at_once() {
    // 40 closed ports and one live backend: every target reported, in the order given.
    let s = serve(1, &[]);
    let live = s.addr().to_string();
    let mut targets: Vec<String> = (0..40).map(|_| format!(":{}", closed_port())).collect();
    targets.push(live.clone());
    let mut args: Vec<&str> = targets.iter().map(String::as_str).collect();
    args.push("--json");
    let v = json(&check(&args));
    assert_eq!(v.len(), 41);
    assert_eq!(v[40]["address"], live.as_str());
    assert_eq!(v[40]["healthy"], true);
    assert_eq!(v.iter().filter(|r| r["healthy"] == false).count(), 40);
}
