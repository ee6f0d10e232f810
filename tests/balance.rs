//! `lbx balance` end to end against real `lbx serve` backends on port 0.

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn server_id(r: &Resp) -> String {
    r.header("x-server-id").unwrap_or("?").to_string()
}

/// Fast health checks so transitions happen within a test's patience.
const FAST: &[&str] = &[
    "--interval",
    "100ms",
    "--timeout",
    "500ms",
    "--workers",
    "2",
];

#[test]
fn round_robin_spreads_evenly() {
    let backends: Vec<Proc> = (1..=3).map(|i| serve(i, &[])).collect();
    let addrs: Vec<_> = backends.iter().map(Proc::addr).collect();
    let lb = balance(&addrs, &["--workers", "1"]);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("Hello from server {}", server_id(&r)));
        *counts.entry(server_id(&r)).or_default() += 1;
    }
    let want: HashMap<String, usize> = (1..=3).map(|i| (i.to_string(), 10)).collect();
    assert_eq!(counts, want);
}

#[test]
fn a_killed_backend_fails_no_request() {
    let mut backends: Vec<Proc> = (1..=3).map(|i| serve(i, &[])).collect();
    let addrs: Vec<_> = backends.iter().map(Proc::addr).collect();
    let lb = balance(&addrs, FAST);
    let lb_addr = lb.addr();
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let (d, k) = (done.clone(), killed.clone());
    // Clients keep going while backend 2 dies, and for 200 requests after; every answer must
    // still be a 200.
    let client = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let mut after_kill = 0;
        for i in 0..20_000 {
            let r = get(lb_addr, "/").expect("request through the balancer");
            assert_eq!(r.status, 200, "request {i} failed: {}", r.text());
            d.store(i + 1, Ordering::SeqCst);
            ids.push(server_id(&r));
            if k.load(Ordering::SeqCst) {
                after_kill += 1;
                if after_kill == 200 {
                    break;
                }
            }
        }
        ids
    });
    assert!(wait_until(Duration::from_secs(20), || done
        .load(Ordering::SeqCst)
        >= 50));
    backends[1].signal("KILL");
    let _ = backends[1].wait_exit(Duration::from_secs(5));
    let at_kill = done.load(Ordering::SeqCst);
    killed.store(true, Ordering::SeqCst);
    let ids = client.join().expect("no client request failed");
    // A few requests may have been answered by server 2 just before it died; none after.
    let after = ids.get(at_kill + 1..).unwrap_or_default();
    assert!(
        after.len() >= 150,
        "{} requests after the kill",
        after.len()
    );
    assert!(
        !after.iter().any(|id| id == "2"),
        "server 2 answered after it was killed"
    );
    assert!(after.iter().any(|id| id == "1"));
    assert!(after.iter().any(|id| id == "3"));
}

#[test]
fn a_recovered_backend_rejoins_after_rise() {
    let a = serve(1, &[]);
    let mut b = serve(2, &[]);
    let b_port = b.addr().port().to_string();
    let lb = balance(
        &[a.addr(), b.addr()],
        &[
            "--interval",
            "100ms",
            "--rise",
            "2",
            "--fall",
            "1",
            "--workers",
            "1",
        ],
    );
    b.signal("KILL");
    let _ = b.wait_exit(Duration::from_secs(5));
    // Down: every answer comes from server 1.
    for _ in 0..10 {
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!((r.status, server_id(&r).as_str()), (200, "1"));
    }
    let _b2 = Proc::start(&["serve", "--workers", "1", "--id", "2", "-p", &b_port], 1);
    let back = wait_until(Duration::from_secs(10), || {
        (0..4).any(|_| {
            get(lb.addr(), "/")
                .map(|r| server_id(&r) == "2")
                .unwrap_or(false)
        })
    });
    assert!(back, "server 2 did not rejoin the rotation");
    let logged = wait_until(Duration::from_secs(5), || {
        lb.stderr_so_far().iter().any(|l| l.contains("UP"))
    });
    assert!(logged, "the transition to UP was not logged");
}

#[test]
fn a_failing_health_check_takes_a_backend_out_and_back() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let lb = balance(
        &[a.addr(), b.addr()],
        &[
            "--interval",
            "100ms",
            "--rise",
            "2",
            "--fall",
            "2",
            "--workers",
            "1",
        ],
    );
    assert_eq!(
        request(b.addr(), "POST", "/healthcheck/fail", &[], b"")
            .unwrap()
            .status,
        200
    );
    let out = wait_until(Duration::from_secs(10), || {
        (0..4).all(|_| {
            get(lb.addr(), "/")
                .map(|r| server_id(&r) == "1")
                .unwrap_or(false)
        })
    });
    assert!(
        out,
        "server 2 kept getting traffic while its health check failed"
    );
    assert_eq!(
        request(b.addr(), "POST", "/healthcheck/pass", &[], b"")
            .unwrap()
            .status,
        200
    );
    let back = wait_until(Duration::from_secs(10), || {
        (0..4).any(|_| {
            get(lb.addr(), "/")
                .map(|r| server_id(&r) == "2")
                .unwrap_or(false)
        })
    });
    assert!(
        back,
        "server 2 did not come back after its health check passed"
    );
}

#[test]
fn all_backends_down_gives_503() {
    let lb = balance(
        &[
            format!("127.0.0.1:{}", closed_port()).parse().unwrap(),
            format!("127.0.0.1:{}", closed_port()).parse().unwrap(),
        ],
        &["--workers", "1"],
    );
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no healthy backend"), "{}", r.text());
}

#[test]
fn requests_arrive_intact_without_hop_by_hop_headers() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let body = vec![b'x'; 100_000];
    let r = request(
        lb.addr(),
        "POST",
        "/echo?a=1&b=two",
        &[
            ("X-Custom", "kept"),
            ("Connection", "X-Hop"),
            ("X-Hop", "dropped"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("TE", "gzip, trailers"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-server-id"),
        Some("1"),
        "response headers come back"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo?a=1&b=two");
    assert_eq!(v["body_len"], 100_000);
    let h = &v["headers"];
    assert_eq!(h["x-custom"], "kept");
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(h.get(hop).is_none(), "{hop} was forwarded: {h}");
    }
    // TE is hop-by-hop too, but that the client takes trailers is passed on.
    assert_eq!(h["te"], "trailers", "{h}");
    assert!(h.get("connection").is_none() || h["connection"] != "X-Hop");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], lb.addr().to_string());
}

#[test]
fn statuses_pass_through() {
    let s = serve(1, &["--fail-rate", "1"]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(r.status, 500, "the backend's own status is returned");
    assert_eq!(get(lb.addr(), "/missing").unwrap().status, 404);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let s = serve(1, &["--delay", "1s"]);
    let mut lb = balance(&[s.addr()], &["--workers", "1", "--grace", "10s"]);
    let addr = lb.addr();
    let slow = std::thread::spawn(move || get(addr, "/"));
    std::thread::sleep(Duration::from_millis(300));
    lb.signal("TERM");
    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status, 200);
    assert_eq!(lb.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn bad_backend_addresses_exit_2_naming_them() {
    for bad in [":abc", "ftp://x:1", "::1:80", "host:99999"] {
        let out = run_lbx(
            &["balance", "-p", "0", "-b", &format!(":1,{bad}")],
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn a_port_in_use_is_reported() {
    let s = serve(1, &[]);
    let port = s.addr().port().to_string();
    let out = run_lbx(
        &["balance", "--host", "127.0.0.1", "-p", &port, "-b", ":1"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
}
