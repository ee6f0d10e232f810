//! `lbx serve` end to end: identity, health toggle, echo, ranges, bad flags.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn answers_with_its_id_and_health() {
    let s = serve(7, &[]);
    let r = get(s.addr(), "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello from server 7");
    assert_eq!(r.header("x-server-id"), Some("7"));
    let h = get(s.addr(), "/healthcheck").unwrap();
    assert_eq!((h.status, h.text().as_str()), (200, "ok"));
    assert_eq!(
        request(s.addr(), "POST", "/healthcheck/fail", &[], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(get(s.addr(), "/healthcheck").unwrap().status, 503);
    assert_eq!(
        request(s.addr(), "POST", "/healthcheck/pass", &[], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(get(s.addr(), "/healthcheck").unwrap().status, 200);
    assert_eq!(get(s.addr(), "/nope").unwrap().status, 404);
}

#[test]
fn echo_reflects_the_request() {
    let s = serve(1, &[]);
    let r = request(
        s.addr(),
        "PUT",
        "/echo?a=1&b=2",
        &[("X-Custom", "yes")],
        b"hello world",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/echo?a=1&b=2");
    assert_eq!(v["headers"]["x-custom"], "yes");
    assert_eq!(v["body_len"], 11);
    assert_eq!(v["version"], "HTTP/1.1");
    // Each connection gets the next number.
    let conn = |r: &Resp| -> u64 { r.header("x-connection").unwrap().parse().unwrap() };
    let first = conn(&r);
    assert_eq!(conn(&get(s.addr(), "/echo").unwrap()), first + 1);
}

#[test]
fn tls_flags_serve_https_with_h2_and_http11_by_alpn() {
    let ca = TestCa::new("serve-tls");
    let s = serve(1, &ca.tls_flags());
    let url = format!("https://localhost:{}/", s.addr().port());
    let bench = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["bench", "--json", "--no-progress", "-n", "3", "-c", "1"];
        args.extend_from_slice(&["--cacert", ca.ca_path(), &url]);
        args.extend_from_slice(extra);
        let out = run_lbx(&args, Duration::from_secs(20));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for (extra, version) in [(&[][..], "1.1"), (&["--http2"][..], "2")] {
        let v = bench(extra);
        assert_eq!(v["http_version"], version, "{v}");
        assert_eq!(v["status_codes"]["200"], 3, "{v}");
    }
}

#[test]
fn fail_rate_one_fails_every_root_request() {
    let s = serve(1, &["--fail-rate", "1"]);
    for _ in 0..5 {
        assert_eq!(get(s.addr(), "/").unwrap().status, 500);
    }
    assert_eq!(get(s.addr(), "/healthcheck").unwrap().status, 200);
}

#[test]
fn a_port_range_runs_one_server_per_port() {
    // Two consecutive free ports: both bound at once here, then released for the server.
    let (lo, hi) = (0..100)
        .find_map(|_| {
            let a = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let lo = a.local_addr().ok()?.port();
            let _b = std::net::TcpListener::bind(("127.0.0.1", lo.checked_add(1)?)).ok()?;
            Some((lo, lo + 1))
        })
        .expect("two consecutive free ports");
    let range = format!("{lo}-{hi}");
    let s = Proc::start(&["serve", "--workers", "1", "--id", "4", "-p", &range], 2);
    assert_eq!(get(s.addrs[0], "/").unwrap().text(), "Hello from server 4");
    assert_eq!(get(s.addrs[1], "/").unwrap().text(), "Hello from server 5");
}

#[test]
fn a_port_in_use_is_reported() {
    let s = serve(1, &[]);
    let port = s.addr().port().to_string();
    let out = run_lbx(&["serve", "-p", &port], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
}

#[test]
fn bad_flags_exit_2_naming_the_value() {
    for (args, bad) in [
        (vec!["serve", "-p", "http"], "http"),
        (vec!["serve", "--fail-rate", "2"], "2"),
        (vec!["serve", "--delay", "soon"], "soon"),
        (vec!["serve", "--host", "nowhere"], "nowhere"),
        (
            vec!["serve", "--tls-cert", "/nonexistent/c.pem"],
            "--tls-key",
        ),
        (
            vec![
                "serve",
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/nonexistent/k.pem",
            ],
            "/nonexistent/c.pem",
        ),
    ] {
        let out = run_lbx(&args, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(bad),
            "{args:?}"
        );
    }
}
