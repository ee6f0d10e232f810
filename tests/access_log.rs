//! Access log lines and request ids end to end.

mod common;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

fn read_lines(path: &PathBuf, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() >= n
    });
    assert!(
        ok,
        "expected {n} lines in {}, got {lines:?}",
        path.display()
    );
    lines
}

#[test]
fn request_ids_are_kept_or_generated_and_reach_the_backend() {
    let a = serve(1, &[]);
    let lb = balance(&[a.addr()], &[]);
    let r = request(
        lb.addr(),
        "GET",
        "/echo",
        &[("X-Request-Id", "given-1")],
        b"",
    )
    .unwrap();
    assert_eq!(r.header("x-request-id"), Some("given-1"));
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(echo["headers"]["x-request-id"], "given-1");

    let r = get(lb.addr(), "/echo").unwrap();
    let id = r
        .header("x-request-id")
        .expect("a generated id")
        .to_string();
    assert_eq!(id.len(), 32);
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(echo["headers"]["x-request-id"], id.as_str());
    assert_ne!(
        get(lb.addr(), "/").unwrap().header("x-request-id"),
        Some(id.as_str())
    );
}

#[test]
fn json_lines_have_the_documented_fields() {
    let a = serve(1, &[]);
    let path = temp_path("access.json");
    let p = path.to_str().unwrap();
    let lb = balance(
        &[a.addr()],
        &["--access-log", p, "--access-log-format", "json"],
    );
    let r = request(lb.addr(), "GET", "/?x=1", &[("x-request-id", "abc")], b"").unwrap();
    assert_eq!(r.status, 200);
    let r = request(lb.addr(), "POST", "/echo", &[], b"hello").unwrap();
    assert_eq!(r.status, 200);
    let lines = read_lines(&path, 2);
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (line, e) in v.iter().enumerate() {
        for k in [
            "time",
            "client",
            "method",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "backend",
            "attempts",
            "request_id",
        ] {
            assert!(e.get(k).is_some(), "line {line} lacks {k}: {e}");
        }
        assert_eq!(e["client"], "127.0.0.1");
        assert_eq!(e["backend"], a.addr().to_string());
        assert_eq!(e["attempts"], 1);
        assert_eq!(e["status"], 200);
        assert!(e["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(v[0]["method"], "GET");
    assert_eq!(v[0]["path"], "/?x=1");
    assert_eq!(v[0]["request_id"], "abc");
    assert_eq!(v[0]["bytes"], "Hello from server 1".len());
    assert_eq!(v[1]["method"], "POST");
    assert_eq!(v[1]["bytes"], r.body.len());
    drop(lb);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn text_lines_go_to_stdout_by_default() {
    let a = serve(1, &[]);
    let lb = balance(&[a.addr()], &["--access-log"]);
    // The backend is gone: the balancer answers itself, and that is logged too.
    drop(a);
    let r = request(lb.addr(), "GET", "/p", &[("x-request-id", "t-1")], b"").unwrap();
    let line = lb
        .wait_line("127.0.0.1 - - [", Duration::from_secs(10))
        .expect("an access log line on stdout");
    assert!(
        line.contains(&format!("\"GET /p\" {} ", r.status)),
        "{line}"
    );
    assert!(r.status >= 500, "{}", r.text());
    assert!(line.ends_with(" - 0 t-1"), "{line}");
}

#[test]
fn a_request_failing_at_every_backend_is_logged_and_counted_with_its_retry() {
    let (a, b) = (Resetter::start(), Resetter::start());
    let path = TempFile::new("access-failed.json");
    let (mut lb, admin) = balance_with_admin(
        &[a.addr, b.addr],
        &[
            "--workers",
            "1",
            "--interval",
            "1h",
            "--access-log",
            path.to_str().unwrap(),
            "--access-log-format",
            "json",
        ],
    );
    // Sent to one, reset; retried on the other, reset again: a 502 after two attempts.
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!((a.dropped(), b.dropped()), (1, 1));
    let line = &read_lines(&path.0, 1)[0];
    let e: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(e["status"], 502, "{line}");
    assert_eq!(e["attempts"], 2, "{line}");
    let last = e["backend"].as_str().unwrap_or("-").to_string();
    assert!(
        [a.addr.to_string(), b.addr.to_string()].contains(&last),
        "the last backend tried is named: {line}"
    );
    let metrics = admin_call(admin, "GET", "/metrics", None, "").text();
    assert!(
        metrics.lines().any(|l| l == "lbx_retries_total 1"),
        "{metrics}"
    );
    // The shutdown summary tells the same.
    lb.signal("TERM");
    assert_eq!(lb.wait_exit(Duration::from_secs(15)), Some(0));
    let log = lb.rest_of_stderr(Duration::from_secs(5));
    assert!(log.iter().any(|l| l.contains("1 retries")), "{log:?}");
}
