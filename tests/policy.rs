//! Traffic policy end to end: algorithms, passive health, retries, slow start, timeouts and
//! limits, against real `lbx serve` backends (and a raw resetting one) on port 0.

mod common;
use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn count(m: &HashMap<String, usize>, id: &str) -> usize {
    m.get(id).copied().unwrap_or(0)
}

#[test]
fn weighted_three_to_one() {
    let (a, b) = (serve(1, &[]), serve(2, &[]));
    // -b repeats: server 2 at weight 1 from the helper, server 1 at weight 3 added.
    let heavy = format!("{}=3", a.addr());
    let lb = balance(
        &[b.addr()],
        &["-b", &heavy, "--algorithm", "weighted", "--workers", "1"],
    );
    let c = spread(lb.addr(), 400, &[]);
    assert_eq!((count(&c, "1"), count(&c, "2")), (300, 100), "{c:?}");
}

/// Runs `threads` clients of `each` GETs at once; returns the spread over servers.
fn concurrent_spread(
    addr: std::net::SocketAddr,
    threads: usize,
    each: usize,
) -> HashMap<String, usize> {
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || spread(addr, each, &[])))
        .collect();
    let mut total = HashMap::new();
    for h in handles {
        for (k, v) in h.join().expect("client thread") {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

#[test]
fn least_conn_sends_fewer_to_a_slow_backend() {
    let (fast, slow) = (serve(1, &[]), serve(2, &["--delay", "50ms"]));
    let lb = balance(
        &[fast.addr(), slow.addr()],
        &["--algorithm", "least-conn", "--workers", "1"],
    );
    let c = concurrent_spread(lb.addr(), 6, 30);
    assert_eq!(count(&c, "1") + count(&c, "2"), 180);
    assert!(count(&c, "2") * 2 < count(&c, "1"), "{c:?}");
}

#[test]
fn p2c_favours_the_fast_backend() {
    let (fast, slow) = (serve(1, &[]), serve(2, &["--delay", "20ms"]));
    let lb = balance(
        &[fast.addr(), slow.addr()],
        &["--algorithm", "p2c", "--workers", "1"],
    );
    let c = spread(lb.addr(), 200, &[]);
    assert!(count(&c, "1") >= 3 * count(&c, "2"), "{c:?}");
}

#[test]
fn hash_keeps_a_key_on_one_backend_and_balancers_agree() {
    let backends: Vec<Proc> = (1..=3).map(|i| serve(i, &[])).collect();
    let addrs: Vec<_> = backends.iter().map(Proc::addr).collect();
    let args = [
        "--algorithm",
        "hash",
        "--hash-key",
        "header:x-user",
        "--workers",
        "2",
    ];
    let (lb1, lb2) = (balance(&addrs, &args), balance(&addrs, &args));
    let c = spread(lb1.addr(), 100, &[("x-user", "alice")]);
    assert_eq!(c.len(), 1, "alice moved between backends: {c:?}");
    let mut seen = HashMap::new();
    for k in 0..30 {
        let user = format!("user-{k}");
        let h = [("x-user", user.as_str())];
        let one = get_id(lb1.addr(), &h);
        assert_eq!(one, get_id(lb2.addr(), &h), "balancers disagree on {user}");
        *seen.entry(one).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        3,
        "30 keys should reach every backend: {seen:?}"
    );
}

fn get_id(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> String {
    let r = request(addr, "GET", "/", headers, b"").unwrap();
    assert_eq!(r.status, 200);
    r.header("x-server-id").unwrap().to_string()
}

#[test]
fn a_failing_backend_with_a_passing_health_check_is_ejected() {
    let (good, bad) = (serve(1, &[]), serve(2, &["--fail-rate", "1"]));
    let mut lb = balance(
        &[good.addr(), bad.addr()],
        &["--eject-after", "3", "--workers", "1"],
    );
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let r = get(lb.addr(), "/").unwrap();
        statuses.push((r.status, r.header("x-server-id").unwrap_or("?").to_string()));
    }
    let failures = statuses.iter().filter(|(s, _)| *s == 500).count();
    assert_eq!(
        failures, 3,
        "exactly the threshold reaches the client: {statuses:?}"
    );
    let last = statuses.iter().rposition(|(s, _)| *s == 500).unwrap();
    assert!(
        statuses[last + 1..]
            .iter()
            .all(|(s, id)| *s == 200 && id == "1"),
        "no traffic after ejection: {statuses:?}"
    );
    assert_eq!(
        shutdown_log(&mut lb)
            .iter()
            .filter(|l| l.contains("WARN") && l.contains("ejected for 30s"))
            .count(),
        1,
        "logged once"
    );
}

/// Stops a balancer with SIGTERM (it must exit 0) and returns everything it wrote to stderr.
fn shutdown_log(lb: &mut Proc) -> Vec<String> {
    lb.signal("TERM");
    assert_eq!(lb.wait_exit(Duration::from_secs(15)), Some(0));
    lb.rest_of_stderr(Duration::from_secs(5))
}

#[test]
fn a_get_is_retried_but_a_post_is_not() {
    let bad = Resetter::start();
    let good = serve(1, &[]);
    let mut lb = balance(
        &[bad.addr, good.addr()],
        &["--workers", "1", "--eject-after", "0"],
    );
    for _ in 0..4 {
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-server-id"), Some("1"));
    }
    let dropped = bad.dropped();
    assert!(
        dropped >= 1,
        "round robin sent no GET to the resetting backend"
    );
    // A small body of an idempotent request is held so the request can go again.
    for _ in 0..4 {
        let r = request(lb.addr(), "PUT", "/echo", &[], b"hello").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("\"body_len\":5"), "{}", r.text());
    }
    assert!(
        bad.dropped() > dropped,
        "no PUT reached the resetting backend"
    );
    let dropped = bad.dropped();
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(
            request(lb.addr(), "POST", "/echo", &[], b"")
                .unwrap()
                .status,
        );
    }
    let reset_posts = bad.dropped() - dropped;
    assert!(
        reset_posts >= 1,
        "no POST reached the resetting backend: {posts:?}"
    );
    assert_eq!(
        posts.iter().filter(|&&s| s == 502).count(),
        reset_posts,
        "each POST the backend dropped is a 502, not a retry: {posts:?}"
    );
    // Every GET and PUT the backend dropped was retried, and counted.
    let retried = format!("{dropped} retries");
    let log = shutdown_log(&mut lb);
    assert!(
        log.iter().any(|l| l.contains(&retried)),
        "{retried}: {log:?}"
    );
}

#[test]
fn slow_start_ramps_a_returning_backend() {
    let (a, b) = (serve(1, &[]), serve(2, &[]));
    let lb = balance(
        &[a.addr(), b.addr()],
        &[
            "--slow-start",
            "3s",
            "--interval",
            "100ms",
            "--rise",
            "1",
            "--fall",
            "1",
            "--workers",
            "1",
        ],
    );
    let set = |path: &str| {
        assert_eq!(
            request(b.addr(), "POST", path, &[], b"").unwrap().status,
            200
        );
    };
    set("/healthcheck/fail");
    assert!(wait_until(Duration::from_secs(10), || {
        lb.stderr_so_far().iter().any(|l| l.contains("DOWN"))
    }));
    set("/healthcheck/pass");
    assert!(wait_until(Duration::from_secs(10), || {
        lb.stderr_so_far().iter().any(|l| l.contains("UP"))
    }));
    // Count server 2's share in the first and the last second of the ramp.
    let start = Instant::now();
    let (mut first, mut last) = ((0, 0), (0, 0));
    while start.elapsed() < Duration::from_millis(3500) {
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!(r.status, 200);
        let is_b = usize::from(r.header("x-server-id") == Some("2"));
        let t = start.elapsed();
        if t < Duration::from_secs(1) {
            first = (first.0 + is_b, first.1 + 1);
        } else if t >= Duration::from_millis(2500) {
            last = (last.0 + is_b, last.1 + 1);
        }
    }
    let share = |(b, n): (usize, usize)| b as f64 / n.max(1) as f64;
    assert!(
        first.1 >= 20 && last.1 >= 20,
        "too few requests: {first:?} {last:?}"
    );
    assert!(share(first) < 0.3, "first second: {first:?}");
    assert!(
        share(last) > share(first) + 0.1,
        "no ramp: {first:?} then {last:?}"
    );
}

#[test]
fn response_timeout_gives_504() {
    let slow = serve(1, &["--delay", "3s"]);
    let lb = balance(
        &[slow.addr()],
        &["--response-timeout", "200ms", "--workers", "1"],
    );
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    let r = request(lb.addr(), "POST", "/echo", &[], b"x").unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
}

#[test]
fn max_body_gives_413() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--max-body", "1k", "--workers", "1"]);
    let ok = request(lb.addr(), "POST", "/echo", &[], &[b'a'; 1024]).unwrap();
    assert_eq!(ok.status, 200);
    let big = request(lb.addr(), "POST", "/echo", &[], &[b'a'; 1025]).unwrap();
    assert_eq!(big.status, 413, "{}", big.text());
    // A chunked body gives no length up front: cut off as it streams past the limit.
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'a'; 800];
    let mut req = b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        req.extend_from_slice(b"320\r\n");
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.write_all(&req).unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let r = parse_response(&raw, false).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn rate_limit_gives_429_with_retry_after() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--rate-limit", "5/s", "--workers", "1"]);
    let statuses: Vec<Resp> = (0..20).map(|_| get(lb.addr(), "/").unwrap()).collect();
    let ok = statuses.iter().filter(|r| r.status == 200).count();
    // A burst of 5, plus what refills at 5/s while the 20 requests run.
    assert!((5..=12).contains(&ok), "{ok} of 20 allowed");
    let limited = statuses.iter().find(|r| r.status == 429).expect("a 429");
    let after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(after >= 1);
    assert!(statuses[..5].iter().all(|r| r.status == 200));
}

#[test]
fn a_slow_request_head_is_cut_off() {
    let s = serve(1, &[]);
    let lb = balance(
        &[s.addr()],
        &["--header-timeout", "300ms", "--workers", "1"],
    );
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Closed by lbx (end of stream or reset), not our 10 s read timeout, and unanswered.
    assert_cut_off(&mut c);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--idle-timeout", "300ms", "--workers", "1"]);
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then closed by lbx once idle: end of stream well before our read timeout.
    let end = c.read(&mut buf);
    assert!(matches!(end, Ok(0)), "{end:?}");
}

#[test]
fn max_connections_holds_new_ones_in_the_queue() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--max-connections", "1", "--workers", "1"]);
    let ask = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = TcpStream::connect(lb.addr()).unwrap();
    first.write_all(ask).unwrap();
    let mut buf = [0u8; 4096];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(first.read(&mut buf).unwrap() > 0);
    // The kernel completes the second handshake, but lbx does not take it while the first is open.
    let mut second = TcpStream::connect(lb.addr()).unwrap();
    second.write_all(ask).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        second.read(&mut buf).is_err(),
        "second connection served over the limit"
    );
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = second.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[test]
fn bad_policy_flags_exit_2_naming_the_value() {
    for (flag, value) in [
        ("--algorithm", "fastest"),
        ("--hash-key", "path"),
        ("--rate-limit", "lots/s"),
        ("--max-body", "huge"),
        ("--response-timeout", "soon"),
        ("--max-connections", "0"),
        ("-b", ":9001=0"),
    ] {
        let out = run_lbx(
            &["balance", "-b", ":9001", flag, value],
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(value), "{flag} {value}: {err}");
    }
}
