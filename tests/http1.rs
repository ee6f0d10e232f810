//! HTTP/1.1 between clients and the balancer: plain requests (HTTP/1.1, no body, no upgrade)
//! are answered on lbx's lean path, anything else by hyper, on the same connection.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

/// One response read off `s`, exactly its bytes (framed by its Content-Length or chunked
/// coding; none after the head for a HEAD request's), parsed by `parse_response`.
fn read_one(s: &mut TcpStream, head_request: bool) -> Resp {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    // Up to the end of the next line, or of the head.
    let mut line = |raw: &mut Vec<u8>, s: &mut TcpStream| {
        let start = raw.len();
        while raw.len() < start + 2 || !raw.ends_with(b"\r\n") {
            assert_eq!(s.read(&mut byte).expect("read"), 1, "closed early: {raw:?}");
            raw.push(byte[0]);
        }
    };
    while !raw.ends_with(b"\r\n\r\n") {
        line(&mut raw, s);
    }
    let head = parse_response(&raw, true).expect("a response head");
    let take = |raw: &mut Vec<u8>, s: &mut TcpStream, n: usize| {
        let at = raw.len();
        raw.resize(at + n, 0);
        s.read_exact(&mut raw[at..]).expect("read a body");
    };
    if head_request {
    } else if head
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let at = raw.len();
            line(&mut raw, s);
            let size = std::str::from_utf8(&raw[at..raw.len() - 2]).unwrap();
            let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
            take(&mut raw, s, n + 2);
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = head.header("content-length") {
        take(&mut raw, s, n.parse().unwrap());
    }
    parse_response(&raw, head_request).expect("a whole response")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

#[test]
fn plain_and_other_requests_take_turns_on_one_connection() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let mut c = connect(lb.addr());
    // All four in one write: the second has a body (hyper's), the third is a HEAD, the last
    // asks to close.
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          HEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
          GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let r = read_one(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello from server 1");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    assert!(r.header("date").is_some(), "{r:?}");
    let r = read_one(&mut c, false);
    assert_eq!(r.status, 200);
    let echo = r.text();
    assert!(echo.contains(r#""method":"POST""#), "{echo}");
    assert!(echo.contains(r#""body_len":5"#), "{echo}");
    let r = read_one(&mut c, true);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("19"), "{r:?}");
    let r = read_one(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello from server 1");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("closed after the answer");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn answers_without_a_length_are_framed_and_the_connection_goes_on() {
    for (answer, want) in [
        (
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"[..],
            "hello world",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close"[..],
            "until the close",
        ),
    ] {
        let answer: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
        let b = canned_backend(answer);
        let lb = balance(&[b], &["--workers", "1"]);
        let mut c = connect(lb.addr());
        for round in 0..2 {
            c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            let r = read_one(&mut c, false);
            assert_eq!(r.status, 200, "round {round}: {r:?}");
            assert_eq!(r.text(), want, "round {round}");
            assert_eq!(r.header("connection"), None, "{r:?}");
        }
    }
}

#[test]
fn the_balancers_own_answers_have_a_date_and_a_length() {
    let lb = balance_to(&format!("127.0.0.1:{}", closed_port()), &["--workers", "1"]);
    let mut c = connect(lb.addr());
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_one(&mut c, false);
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    assert!(r.header("date").is_some(), "{r:?}");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(!r.body.is_empty());
}

/// Set when the slow backend saw its request's connection closed before it answered.
static ABANDONED: AtomicBool = AtomicBool::new(false);

#[test]
fn a_client_that_leaves_abandons_its_request_upstream() {
    let b = raw_backend(|mut c| {
        let Some(head) = read_request_head(&mut c) else {
            return;
        };
        if head.starts_with(b"GET /healthcheck") {
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            return;
        }
        // Never answers: waits (bounded) for the balancer to give the request up.
        c.set_read_timeout(Some(LIMIT)).unwrap();
        if matches!(c.read(&mut [0u8; 64]), Ok(0)) {
            ABANDONED.store(true, SeqCst);
        }
    });
    let lb = balance(&[b], &["--workers", "1"]);
    let mut c = connect(lb.addr());
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    assert!(
        wait_until(LIMIT, || ABANDONED.load(SeqCst)),
        "the backend's connection stayed open after the client left"
    );
}

#[test]
fn a_long_answer_leaves_the_whole_keep_alive_time_after_it() {
    // Answers after 1.5 s, longer than the balancer's 1 s keep-alive time.
    let b = raw_backend(|mut c| {
        while let Some(head) = read_request_head(&mut c) {
            if head.starts_with(b"GET /healthcheck") {
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                continue;
            }
            std::thread::sleep(Duration::from_millis(1500));
            if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
                .is_err()
            {
                return;
            }
        }
    });
    let lb = balance(&[b], &["--workers", "1", "--idle-timeout", "1s"]);
    let mut c = connect(lb.addr());
    c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_one(&mut c, false);
    assert_eq!((r.status, &r.body[..]), (200, &b"slow"[..]));
    // Well within the keep-alive time counted from the answer, not from the request.
    std::thread::sleep(Duration::from_millis(400));
    c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_one(&mut c, false);
    assert_eq!((r.status, &r.body[..]), (200, &b"slow"[..]));
}

#[test]
fn a_large_head_that_trickles_in_arrives_whole() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let mut c = connect(lb.addr());
    let big = "a".repeat(6000);
    // More than the lean path reads at once, then a pause long enough for the connection to
    // park with the partial head, then the rest (with a body: hyper's request).
    c.write_all(format!("POST /echo HTTP/1.1\r\nHost: a\r\nX-Big: {big}").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.write_all(b"\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    let r = read_one(&mut c, false);
    let echo = r.text();
    assert_eq!(r.status, 200, "{echo}");
    assert!(echo.contains(&format!(r#""x-big":"{big}""#)), "{echo}");
    assert!(echo.contains(r#""body_len":5"#), "{echo}");
}

/// The fields of `answer` as a client of the balancer gets them over the lean path: names as
/// sent, in order.
fn fields_through_balancer(answer: &'static [u8]) -> Resp {
    let lb = balance(&[canned_backend(answer)], &["--workers", "1"]);
    let mut c = connect(lb.addr());
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_one(&mut c, false)
}

#[test]
fn a_backends_fields_arrive_as_written_without_the_hop_by_hop_ones() {
    let r = fields_through_balancer(
        b"HTTP/1.1 200 OK\r\nServer: Test\r\nKeep-Alive: timeout=5\r\nX-Mixed-Case:  Yes \r\n\
          Connection: keep-alive\r\nContent-Length: 2\r\nProxy-Connection: x\r\n\
          Date: Sun, 06 Dec 2026 00:00:00 GMT\r\nTE: trailers\r\n\r\nok",
    );
    assert_eq!(r.text(), "ok");
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["Server", "X-Mixed-Case", "Content-Length", "Date"] {
        assert_eq!(
            names.iter().filter(|n| **n == want).count(),
            1,
            "{want}: {r:?}"
        );
    }
    assert_eq!(r.header("x-mixed-case"), Some("Yes"), "{r:?}");
    assert_eq!(r.header("date"), Some("Sun, 06 Dec 2026 00:00:00 GMT"));
    for gone in ["keep-alive", "connection", "proxy-connection", "te"] {
        assert_eq!(r.header(gone), None, "{gone}: {r:?}");
    }
    let ids = names
        .iter()
        .filter(|n| n.eq_ignore_ascii_case("x-request-id"));
    assert_eq!(ids.count(), 1, "{r:?}");
    assert_eq!(names.len(), 5, "{r:?}");
}

#[test]
fn the_balancer_replaces_or_leaves_out_what_it_must() {
    // The backend's own request id is replaced by the balancer's.
    let r = fields_through_balancer(
        b"HTTP/1.1 200 OK\r\nX-Request-Id: the-backends\r\nContent-Length: 2\r\n\r\nok",
    );
    let ids: Vec<&str> = (r.headers.iter())
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(ids.len() == 1 && ids[0] != "the-backends", "{r:?}");
    // Fields that Connection names are hop-by-hop too (a header map sorts them out).
    let r = fields_through_balancer(
        b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Open: 2\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(
        (r.header("x-secret"), r.header("x-open")),
        (None, Some("2"))
    );
    // Content-Length beside Transfer-Encoding is void: the body is reframed.
    let r = fields_through_balancer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    );
    assert_eq!(
        (r.text().as_str(), r.header("content-length")),
        ("ok", None)
    );
    // Lines that end in a bare LF go out with CRLF (through a map too).
    let r = fields_through_balancer(b"HTTP/1.1 200 OK\nX-Lf: 1\nContent-Length: 2\n\nok");
    assert_eq!((r.text().as_str(), r.header("x-lf")), ("ok", Some("1")));
}
