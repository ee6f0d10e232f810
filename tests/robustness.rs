//! The balancer under hostile input and misbehaving backends: refuses what is ambiguous,
//! never passes a broken answer off as a good one, and keeps no descriptors behind.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

#[test]
fn malformed_and_ambiguous_requests_are_refused() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("bad request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("invalid header bytes", b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01: 1\r\n\r\n".to_vec(), 400),
        ("oversized head", big.into_bytes(), 431),
        (
            "conflicting Content-Length",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            400,
        ),
        (
            "bad chunk size",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n".to_vec(), 400),
        (
            "absolute-form and Host disagree",
            b"GET http://other.example/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "unknown transfer coding",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
            501,
        ),
    ];
    for (name, bytes, want) in cases {
        let resp = raw(lb.addr(), &bytes);
        assert_eq!(
            raw_status(&resp),
            Some(want),
            "{name}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    // Still serving normally afterwards.
    assert_eq!(get(lb.addr(), "/").unwrap().status, 200);
}

#[test]
fn content_length_with_chunked_is_reframed_never_forwarded_ambiguously() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    // RFC 9112 §6.3: Transfer-Encoding wins; Content-Length must not reach the backend.
    let resp = raw(
        lb.addr(),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
    );
    let r = parse_response(&resp, false).expect("a complete answer");
    if r.status == 200 {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["body_len"], 5, "the chunked framing was used");
        assert!(v["headers"].get("content-length").is_none(), "{v}");
    } else {
        assert_eq!(r.status / 100, 4, "refused as a client error");
    }
}

#[test]
fn http10_without_host_still_reaches_the_backend() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let resp = raw(lb.addr(), b"GET /echo HTTP/1.0\r\n\r\n");
    let r = parse_response(&resp, false).unwrap();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["headers"]["host"], s.addr().to_string());
}

#[test]
fn a_backend_closing_mid_response_never_yields_a_silently_short_200() {
    let b = canned_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    let mut lb = balance(&[b], &["--workers", "1", "--interval", "1h"]);
    let pid = lb.child.id();
    assert_eq!(
        get(lb.addr(), "/healthcheck").unwrap().status,
        200,
        "warm-up"
    );
    assert_no_descriptor_growth(pid, || {
        for _ in 0..20 {
            match get(lb.addr(), "/") {
                Ok(r) => assert_ne!(r.status, 200, "a short body passed as complete: {r:?}"),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
            }
        }
    });
    assert_eq!(lb.wait_exit(Duration::ZERO), None, "still running");
}

#[test]
fn a_malformed_backend_response_gives_502() {
    let b = canned_backend(b"THIS IS NOT HTTP\r\n\r\n");
    let lb = balance(&[b], &["--workers", "1", "--interval", "1h"]);
    let pid = lb.child.id();
    assert_eq!(
        get(lb.addr(), "/healthcheck").unwrap().status,
        200,
        "warm-up"
    );
    assert_no_descriptor_growth(pid, || {
        for _ in 0..20 {
            let r = get(lb.addr(), "/").unwrap();
            assert_eq!(r.status, 502, "{}", r.text());
        }
    });
}

/// Runs `round` twice and checks the second leaves no more descriptors open than the first:
/// a per-request leak grows with every round, while threads and runtimes that start lazily
/// (the prober's, under load) are already counted after the first.
fn assert_no_descriptor_growth(pid: u32, mut round: impl FnMut()) {
    round();
    std::thread::sleep(Duration::from_millis(300));
    let settled = open_fds(pid);
    let before = fd_table(pid);
    round();
    let back = wait_until(Duration::from_secs(10), || open_fds(pid) <= settled + 1);
    assert!(
        back,
        "descriptors grew: {} after the second round, {settled} after the first\nbefore: {before:?}\nafter: {:?}",
        open_fds(pid),
        fd_table(pid)
    );
}

fn fd_table(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_connection_storm_is_answered() {
    const N: usize = 5000;
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "2"]);
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let c = TcpStream::connect_timeout(&lb.addr(), Duration::from_secs(10)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        conns.push(c);
    }
    for c in &mut conns {
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    let mut ok = 0;
    for mut c in conns {
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        if raw_status(&out) == Some(200) {
            ok += 1;
        }
    }
    assert_eq!(ok, N, "every connection of the storm was answered");
    assert_eq!(get(lb.addr(), "/").unwrap().status, 200);
}

/// Runs `lbx bench ARGS --json` in the background; the handle returns its parsed report.
fn bench_in_background(args: Vec<String>) -> std::thread::JoinHandle<serde_json::Value> {
    std::thread::spawn(move || {
        let mut all = vec!["bench".to_string(), "--json".into(), "--no-progress".into()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = run_lbx(&refs, Duration::from_secs(60));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bench report: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    })
}

#[test]
fn a_backend_killed_and_restarted_under_load_fails_no_request() {
    let mut backends: Vec<Proc> = (1..=3).map(|i| serve(i, &[])).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(Proc::addr).collect();
    let port = addrs[1].port().to_string();
    let lb = balance(
        &addrs,
        &["--interval", "200ms", "--rise", "2", "--workers", "2"],
    );
    let load = bench_in_background(vec![
        "--rate".into(),
        "300".into(),
        "-z".into(),
        "5s".into(),
        "-c".into(),
        "16".into(),
        format!("http://{}/", lb.addr()),
    ]);
    // Two crash-and-restart cycles of server 2 while the load runs.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        backends[1].signal("KILL");
        let _ = backends[1].wait_exit(Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(500));
        backends[1] = Proc::start(&["serve", "--workers", "1", "--id", "2", "-p", &port], 1);
    }
    let report = load.join().expect("bench ran");
    let s = &report["summary"];
    assert!(s["requests"].as_u64().unwrap() > 500, "{s}");
    assert_eq!(
        s["failures"], 0,
        "failed client requests: {}",
        report["errors"]
    );
    // The restarted backend rejoins after --rise.
    let back = wait_until(Duration::from_secs(10), || {
        (0..6).any(|_| get(lb.addr(), "/").is_ok_and(|r| r.header("x-server-id") == Some("2")))
    });
    assert!(back, "server 2 did not rejoin");
}

#[test]
fn sigterm_under_load_completes_every_accepted_request() {
    let s = serve(1, &["--delay", "500ms"]);
    let mut lb = balance(&[s.addr()], &["--workers", "2", "--grace", "10s"]);
    let addr = lb.addr();
    // Twenty requests in flight (each takes 500 ms at the backend) when SIGTERM arrives.
    let clients: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(addr, "/")))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    lb.signal("TERM");
    for c in clients {
        let r = c.join().unwrap().expect("an accepted request completes");
        assert_eq!(r.status, 200);
    }
    assert_eq!(lb.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(get(addr, "/").is_err(), "no new connections after shutdown");
}

#[test]
fn slowloris_connections_are_closed_and_others_served() {
    const SLOW: usize = 1000;
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "2", "--header-timeout", "1s"]);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut c = TcpStream::connect(lb.addr()).expect("connect");
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect();
    // Trickle a header line on every slow connection while normal clients are served.
    for round in 0..6 {
        for c in &mut slow {
            let _ = c.write_all(format!("X-Slow-{round}: 1\r\n").as_bytes());
        }
        assert_eq!(
            get(lb.addr(), "/").unwrap().status,
            200,
            "a normal client is served"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Past the header timeout every slow connection has been closed by the balancer.
    let mut closed = 0;
    for mut c in slow {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        match c.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("a slow connection is still open after the header timeout")
            }
            Err(_) => closed += 1, // reset by the balancer
            Ok(n) => {
                let status = raw_status(&buf[..n]);
                assert!(matches!(status, Some(408 | 400)), "{status:?}");
                closed += 1;
            }
        }
    }
    assert_eq!(closed, SLOW);
}

#[test]
fn a_backend_hanging_after_the_head_gives_a_detectably_short_answer() {
    // Head and 10 of 100 promised bytes, then silence with the connection held open.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { break };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if c.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            if head.starts_with(b"GET /healthcheck") {
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            } else {
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
                held.push(c);
            }
        }
    });
    let lb = balance(
        &[addr],
        &[
            "--workers",
            "1",
            "--interval",
            "1h",
            "--response-timeout",
            "1s",
        ],
    );
    match get(lb.addr(), "/") {
        Ok(r) => assert_ne!(r.status, 200, "a stalled body passed as complete: {r:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
    }
    assert_eq!(
        get(lb.addr(), "/healthcheck").unwrap().status,
        200,
        "still responsive"
    );
}

#[test]
fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let backends_seen = |extra: &[&str]| {
        let mut args = vec!["--workers", "1", "--algorithm", "hash", "--hash-key", "ip"];
        args.extend_from_slice(extra);
        let lb = balance(&[a.addr(), b.addr()], &args);
        let mut ids = std::collections::HashSet::new();
        for i in 0..40 {
            let xff = format!("198.51.100.{i}");
            let r = request(lb.addr(), "GET", "/", &[("X-Forwarded-For", &xff)], b"").unwrap();
            assert_eq!(r.status, 200);
            ids.insert(r.header("x-server-id").unwrap().to_string());
        }
        ids.len()
    };
    // Spoofed addresses from an untrusted client: every request hashes on the socket's peer.
    assert_eq!(backends_seen(&[]), 1);
    // From a trusted proxy, the forwarded addresses are the clients: they spread.
    assert_eq!(backends_seen(&["--trusted-proxies", "127.0.0.0/8"]), 2);
}

/// Reads one response with a Content-Length from a keep-alive connection.
fn read_response(c: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).expect("a response");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = content_length(&text[..end]).expect("content-length");
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

// An idle HTTP/1 connection parks (hyper's buffers are freed after 100 ms of quiet) and is
// rebuilt when the client sends again: the client never notices.
#[test]
fn keep_alive_connections_serve_requests_after_going_idle() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    for target in [s.addr(), lb.addr()] {
        let mut c = TcpStream::connect(target).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for round in 0..3 {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let r = read_response(&mut c);
            assert!(
                r.starts_with("HTTP/1.1 200"),
                "round {round} via {target}: {r}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // Two pipelined requests after a pause, the second split across another pause.
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo")
            .unwrap();
        let r = read_response(&mut c);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        std::thread::sleep(Duration::from_millis(300));
        c.write_all(b"st: x\r\n\r\n").unwrap();
        let r = read_response(&mut c);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
}

/// `lbx_client_connections_parked` from the balancer's admin metrics.
fn parked(admin: SocketAddr) -> u64 {
    let m = admin_call(admin, "GET", "/metrics", None, "").text();
    m.lines()
        .find_map(|l| l.strip_prefix("lbx_client_connections_parked "))
        .expect("the parked gauge")
        .trim()
        .parse()
        .unwrap()
}

// A connection whose last request had a body parks too, once hyper has read the body to its
// end and the answer is out.
#[test]
fn a_connection_parks_after_a_request_with_a_body() {
    let s = serve(1, &[]);
    let (lb, admin) = balance_with_admin(&[s.addr()], &["--workers", "1"]);
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for (round, body) in ["hello", "a longer body, sent in the same write"]
        .iter()
        .enumerate()
    {
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(format!("{head}{body}").as_bytes()).unwrap();
        let r = read_response(&mut c);
        assert!(r.starts_with("HTTP/1.1 200"), "round {round}: {r}");
        assert!(r.contains(&format!("\"body_len\":{}", body.len())), "{r}");
        assert!(
            wait_until(Duration::from_secs(5), || parked(admin) == 1),
            "round {round}: {} parked",
            parked(admin)
        );
    }
    // Chunked, with the connection parked before it: it wakes, and parks again after.
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c);
    assert!(r.contains("\"body_len\":3"), "{r}");
    assert!(wait_until(Duration::from_secs(5), || parked(admin) == 1));
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_response(&mut c).starts_with("HTTP/1.1 200"));
}

// A body still arriving after its answer has gone out (the backend answered early, and reads
// the body on) keeps its connection unparked, however long it pauses: the rest of the body
// must not be taken for the next request's head.
#[test]
fn a_body_still_arriving_after_its_answer_is_read_as_a_body() {
    use std::sync::Mutex;
    static HEADS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let b = raw_backend(|mut c| {
        while let Some(head) = read_request_head(&mut c) {
            let head = String::from_utf8_lossy(&head).into_owned();
            if !head.starts_with("GET /healthcheck") {
                HEADS
                    .lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or("").to_string());
            }
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let len = content_length(&head).unwrap_or(0);
            let mut body = vec![0u8; len];
            if c.read_exact(&mut body).is_err() {
                return;
            }
        }
    });
    let (lb, admin) = balance_with_admin(&[b], &["--workers", "1", "--interval", "1h"]);
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n0123456789")
        .unwrap();
    let r = read_response(&mut c);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(parked(admin), 0, "parked with its body a third read");
    // The body's last 20 bytes, which look like a request head.
    c.write_all(b"GET /xy HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut c);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        *HEADS.lock().unwrap(),
        ["POST / HTTP/1.1", "GET / HTTP/1.1"]
    );
}

// Parking must not restart the header timer: a head trickled in one byte per pause longer
// than the park delay is still cut off by --header-timeout.
#[test]
fn a_head_trickled_across_parks_is_cut_off() {
    let s = serve(1, &[]);
    let lb = balance(
        &[s.addr()],
        &[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "1s",
            "--workers",
            "1",
        ],
    );
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_response(&mut c).starts_with("HTTP/1.1 200"));
    // About 50 bytes, one per 200 ms: 10 s, far past the 1 s header timeout.
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijkl\r\n\r\n";
    for b in head {
        std::thread::sleep(Duration::from_millis(200));
        if c.write_all(&[*b]).is_err() {
            return; // closed under us: cut off
        }
    }
    assert_cut_off(&mut c);
}

// RFC 9112 §9.3 and Appendix C.2.2: an HTTP/1.0 client gets an HTTP/1.0 answer it can read
// (no chunked framing: the body ends when the connection closes), and keep-alive only when it
// asks for it.
#[test]
fn http10_clients_get_http10_framing_and_keep_alive_only_when_asked() {
    let chunked = canned_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let lb = balance(&[chunked], &["--workers", "1"]);
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out)
        .expect("closed after the answer, not left open");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nhello world"), "{text}");

    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for round in 0..2 {
        c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = read_response(&mut c);
        assert!(r.starts_with("HTTP/1.0 200"), "round {round}: {r}");
        assert!(
            r.to_ascii_lowercase().contains("connection: keep-alive"),
            "round {round}: {r}"
        );
    }
}
