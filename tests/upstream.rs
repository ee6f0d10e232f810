//! HTTP/1.1 exchanges with plain `http://` backends, as the balancer's own client speaks them:
//! every way a response body can be delimited, interim responses, and backends that close the
//! connections the balancer keeps.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn quiet_balance(b: SocketAddr) -> Proc {
    balance(&[b], &["--workers", "1", "--interval", "1h"])
}

/// [`quiet_balance`] without retries: a failure the lean path does not mend itself is a 502.
fn strict_balance(b: SocketAddr) -> Proc {
    balance(
        &[b],
        &["--workers", "1", "--interval", "1h", "--retries", "0"],
    )
}

/// Sends `n` GETs one after the other on one keep-alive connection to `lb`, each of which must
/// get the `ok` of a [`closing_backend`]-like backend; pauses 20 ms after each `pause_every`th
/// (none when 0).
fn all_ok_on_one_connection(lb: &Proc, n: usize, pause_every: usize) {
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..n {
        let got = exchange(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = parse_response(&got, false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
        if pause_every > 0 && i % pause_every == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends one request on `c` and reads one response to it (content-length or chunked).
fn exchange(c: &mut TcpStream, req: &str) -> Vec<u8> {
    c.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = c.read(&mut buf).expect("a response");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Ok(r) = parse_response(&got, false) {
            let chunked = r.header("transfer-encoding").is_some();
            if !chunked || got.ends_with(b"\r\n\r\n") {
                return got;
            }
        }
    }
}

#[test]
fn a_body_delimited_by_the_backends_close_arrives_whole() {
    let mut answer = b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\n".to_vec();
    answer.extend((0..100_000u32).map(|i| b'a' + (i % 26) as u8));
    let b = canned_backend(answer.leak());
    let lb = quiet_balance(b);
    for _ in 0..3 {
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-kind"), Some("eof"));
        assert_eq!(r.body.len(), 100_000);
        assert!(r
            .body
            .iter()
            .enumerate()
            .all(|(i, c)| *c == b'a' + (i % 26) as u8));
    }
}

#[test]
fn a_chunked_body_is_decoded_and_its_trailers_passed_on() {
    // Transfer-Encoding wins over the Content-Length beside it; chunk extensions are ignored.
    let b = canned_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\nTrailer: x-sum\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
    );
    let lb = quiet_balance(b);
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.header("content-length"), None);

    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let got = exchange(
        &mut c,
        "GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.contains("\r\n0\r\nx-sum: 11\r\n\r\n"), "{text}");
}

#[test]
fn interim_responses_are_skipped() {
    let b = canned_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    let lb = quiet_balance(b);
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

#[test]
fn ambiguous_or_malformed_framing_is_a_502() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding is badly framed.
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ] {
        let b = canned_backend(answer);
        let lb = quiet_balance(b);
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!(
            r.status,
            502,
            "{:?}: {}",
            String::from_utf8_lossy(answer),
            r.text()
        );
    }
    // A chunked body that breaks off mid-way never arrives as a complete one.
    let b = canned_backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    let lb = quiet_balance(b);
    match get(lb.addr(), "/") {
        Ok(r) => assert_ne!(r.status, 200, "a truncated body passed as complete: {r:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
    }
}

/// A keep-alive backend that closes each connection right after its answer, without saying so:
/// every connection the balancer keeps is dead by the time it is used. Counts connections.
fn closing_backend() -> (SocketAddr, &'static AtomicUsize) {
    static CONNS: AtomicUsize = AtomicUsize::new(0);
    let addr = raw_backend(|mut c| {
        CONNS.fetch_add(1, Ordering::SeqCst);
        if read_request_head(&mut c).is_some() {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (addr, &CONNS)
}

#[test]
fn connections_the_backend_closed_while_kept_cost_no_failed_request() {
    let (b, conns) = closing_backend();
    let lb = strict_balance(b);
    // Every third request after a pause: the close has surely arrived.
    all_ok_on_one_connection(&lb, 30, 3);
    // (The balancer's first health check may have opened one more.)
    assert!(
        conns.load(Ordering::SeqCst) >= 30,
        "one connection per request"
    );
    let log = lb.stderr_so_far().join("\n");
    assert!(!log.contains("down") && !log.contains("ejected"), "{log}");
}

#[test]
fn a_head_answer_and_an_empty_one_leave_the_connection_reusable() {
    let s = serve(1, &[]);
    let lb = quiet_balance(s.addr());
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut seen = Vec::new();
    for req in [
        "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        "HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        c.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        let head_only = req.starts_with("HEAD");
        let r = loop {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
            if let Ok(r) = parse_response(&got, head_only) {
                let want = r
                    .header("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if head_only || r.body.len() >= want {
                    break r;
                }
            }
        };
        assert_eq!(r.status, 200, "{req}");
        assert!(r.header("content-length").is_some(), "{req}: {r:?}");
        if req.contains("/echo") {
            seen.push(
                r.header("x-connection")
                    .expect("a connection number")
                    .to_string(),
            );
        }
    }
    // Every /echo reached the backend on the same kept connection, HEAD ones included.
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|n| *n == seen[0]), "{seen:?}");
}

/// A backend that answers every request with its head, as received.
fn head_echo_backend() -> SocketAddr {
    raw_backend(|mut c| {
        while let Some(head) = read_request_head(&mut c) {
            let mut answer =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", head.len()).into_bytes();
            answer.extend_from_slice(&head);
            if c.write_all(&answer).is_err() {
                return;
            }
        }
    })
}

#[test]
fn the_request_head_is_rewritten_for_the_backend() {
    let b = head_echo_backend();
    let lb = quiet_balance(b);
    let got = raw(
        lb.addr(),
        b"GET http://example.com:81/p?q=1 HTTP/1.1\r\nHost: example.com:81\r\n\
          X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 81\r\n\
          X-Custom: kept\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n\r\n",
    );
    let r = parse_response(&got, false).unwrap();
    assert_eq!(r.status, 200);
    let head = r.text().to_lowercase();
    let lines: Vec<&str> = head.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "get /p?q=1 http/1.1", "{head}");
    let mut fields = lines[1..].to_vec();
    fields.retain(|l| !l.starts_with("x-request-id: "));
    fields.sort();
    assert_eq!(
        fields,
        [
            "host: example.com:81",
            "x-custom: kept",
            "x-forwarded-for: 203.0.113.9, 127.0.0.1",
            "x-forwarded-host: example.com:81",
            "x-forwarded-port: 81",
            "x-forwarded-proto: http",
        ],
        "{head}"
    );
    // HTTP/1.0 without Host: the backend still gets one (its own address), and no
    // X-Forwarded-Host (the client's own is dropped), with or without a body.
    for req in [
        &b"GET /ten HTTP/1.0\r\nX-Forwarded-Host: evil\r\n\r\n"[..],
        b"POST /ten HTTP/1.0\r\nX-Forwarded-Host: evil\r\nContent-Length: 1\r\n\r\nx",
    ] {
        let got = raw(lb.addr(), req);
        let text = String::from_utf8_lossy(&got).to_lowercase();
        assert!(text.contains(&format!("\r\nhost: {b}\r\n")), "{text}");
        assert!(!text.contains("x-forwarded-host"), "{text}");
    }
}

#[test]
fn the_response_timeout_holds_on_kept_connections_too() {
    // On each connection: the first request is answered at once, the second after 100 ms,
    // the third never.
    let b = raw_backend(|mut c| {
        let mut n = 0;
        while let Some(head) = read_request_head(&mut c) {
            n += 1;
            if head.starts_with(b"GET /healthcheck") || n == 1 {
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            } else if n == 2 {
                std::thread::sleep(Duration::from_millis(100));
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
            } else {
                std::thread::sleep(Duration::from_secs(5));
                return;
            }
        }
    });
    let lb = balance(
        &[b],
        &[
            "--workers",
            "1",
            "--interval",
            "1h",
            "--response-timeout",
            "300ms",
            "--retries",
            "0",
        ],
    );
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut next = || {
        let got = exchange(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = parse_response(&got, false).unwrap();
        (r.status, r.text())
    };
    assert_eq!(next(), (200, "ok".to_string()));
    // The first request's deadline passes while its connection waits in the pool.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(next(), (200, "slow".to_string()), "timed out early");
    let (status, _) = next();
    assert_eq!(status, 504);
}

// The close of a kept connection can cross the next request: the backend's end of stream is
// not yet in when the balancer takes the connection and writes, and arrives with the reset the
// request draws. That request was never read, so it goes again on a new connection. The
// backend closes each connection a little later each time (0 to 2 ms after its answer), so
// that some of those closes cross a request.
#[test]
fn a_close_crossing_the_next_request_costs_no_failed_request() {
    static CONNS: AtomicUsize = AtomicUsize::new(0);
    let b = raw_backend(|mut c| {
        let n = CONNS.fetch_add(1, Ordering::SeqCst);
        if read_request_head(&mut c).is_some() {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            std::thread::sleep(Duration::from_micros((n % 41) as u64 * 50));
        }
    });
    let lb = strict_balance(b);
    all_ok_on_one_connection(&lb, 200, 0);
}

#[test]
fn a_request_the_backend_took_and_did_not_answer_is_not_sent_again() {
    // Each connection: the first request is answered, the second read and left unanswered
    // (the backend dies with it).
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let b = raw_backend(|mut c| {
        let mut n = 0;
        while let Some(head) = read_request_head(&mut c) {
            if head.starts_with(b"GET /healthcheck") {
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                return;
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            SEEN.lock().unwrap().push(line);
            n += 1;
            if n > 1 {
                return;
            }
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let lb = strict_balance(b);
    assert_eq!(get(lb.addr(), "/a").unwrap().status, 200);
    let r = get(lb.addr(), "/b").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("GET /b ")).count(),
        1,
        "{seen:?}"
    );
}

#[test]
fn a_connection_whose_answer_had_both_lengths_is_not_reused() {
    static FRESH: AtomicUsize = AtomicUsize::new(0);
    let b = raw_backend(|mut c| {
        let mut first = true;
        while let Some(head) = read_request_head(&mut c) {
            if first && !head.starts_with(b"GET /healthcheck") {
                FRESH.fetch_add(1, Ordering::SeqCst);
            }
            first = false;
            let answer: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n";
            if c.write_all(answer).is_err() {
                return;
            }
        }
    });
    let lb = quiet_balance(b);
    let mut c = TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..3 {
        let got = exchange(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = parse_response(&got, false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    assert_eq!(FRESH.load(Ordering::SeqCst), 3, "a connection was reused");
}

#[test]
fn kept_connections_the_backend_closes_are_let_go() {
    // Keep-alive, closing a connection after 200 ms without a request.
    let b = raw_backend(|mut c| {
        let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
        while read_request_head(&mut c).is_some() {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let lb = quiet_balance(b);
    let pid = lb.child.id();
    assert_eq!(get(lb.addr(), "/").unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let before = open_fds(pid);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let addr = lb.addr();
            std::thread::spawn(move || get(addr, "/").map(|r| r.status))
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap().unwrap(), 200);
    }
    let settled = wait_until(Duration::from_secs(10), || open_fds(pid) <= before);
    assert!(settled, "{} descriptors, {before} before", open_fds(pid));
}

#[test]
fn a_request_a_kept_connection_reset_unread_goes_again_on_a_new_one() {
    // Each connection answers its first request, then resets on the next one without reading
    // it (the backend closed the connection meanwhile, with the request unread).
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let b = raw_backend(|mut c| {
        let Some(head) = read_request_head(&mut c) else {
            return;
        };
        if !head.starts_with(b"GET /healthcheck") {
            SEEN.fetch_add(1, Ordering::SeqCst);
        }
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        // Wait for the next request to arrive, then close with it unread: a reset.
        let mut peek = [0u8; 1];
        let _ = c.peek(&mut peek);
    });
    let lb = strict_balance(b);
    for i in 0..5 {
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(SEEN.load(Ordering::SeqCst), 5, "each request was read once");
}

/// Requests the [`rendezvous_backend`] holds until `BURST` of them are in, so that each burst
/// needs `BURST` backend connections at once.
const BURST: usize = 100;

/// A keep-alive backend that answers no request (but health checks) before `BURST` are
/// waiting (or 10 s have passed), and counts the connections requests came on and those still
/// open.
fn rendezvous_backend() -> (SocketAddr, &'static AtomicUsize, &'static AtomicUsize) {
    use std::sync::{Condvar, Mutex};
    static USED: AtomicUsize = AtomicUsize::new(0);
    static OPEN: AtomicUsize = AtomicUsize::new(0);
    static WAITING: Mutex<(usize, u64)> = Mutex::new((0, 0)); // (waiting, bursts released)
    static RELEASED: Condvar = Condvar::new();
    let addr = raw_backend(|mut c| {
        let mut counted = false;
        while let Some(head) = read_request_head(&mut c) {
            if !head.starts_with(b"GET /healthcheck") {
                if !counted {
                    counted = true;
                    USED.fetch_add(1, Ordering::SeqCst);
                    OPEN.fetch_add(1, Ordering::SeqCst);
                }
                let mut w = WAITING.lock().unwrap();
                let burst = w.1;
                w.0 += 1;
                if w.0 == BURST {
                    *w = (0, burst + 1);
                    RELEASED.notify_all();
                } else {
                    let (mut w, waited) = RELEASED
                        .wait_timeout_while(w, Duration::from_secs(10), |w| w.1 == burst)
                        .unwrap();
                    if waited.timed_out() {
                        w.0 -= 1; // answered alone: the test fails on its counts
                    }
                }
            }
            if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                break;
            }
        }
        if counted {
            OPEN.fetch_sub(1, Ordering::SeqCst);
        }
    });
    (addr, &USED, &OPEN)
}

#[test]
fn a_burst_keeps_its_connections_and_they_close_once_unused() {
    let (b, used, open) = rendezvous_backend();
    let lb = quiet_balance(b);
    // Two bursts, back to back: each of the 100 client connections sends its second request
    // as soon as its first is answered, and all 100 are answered together.
    let (n, c) = ((2 * BURST).to_string(), BURST.to_string());
    let (v, code) = bench_json(&["-n", &n, "-c", &c, &lb.addr().to_string()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(num(&v, "/status_codes/200"), 2 * BURST as u64, "{v}");
    // The second burst went on the first one's connections: none was closed in between.
    assert_eq!(used.load(Ordering::SeqCst), BURST);
    // Unused since, they are closed, half at a time.
    assert!(
        wait_until(Duration::from_secs(30), || open.load(Ordering::SeqCst)
            <= BURST / 4),
        "{} of {BURST} still open",
        open.load(Ordering::SeqCst)
    );
}
