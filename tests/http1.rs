//! HTTP/1.1 between clients and the balancer: plain requests (HTTP/1.1, no body, no upgrade)
//! are answered on lbx's lean path, anything else by hyper, on the same connection.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

/// One response read off `s`: status, fields (names lowercased) and body, framed by its
/// Content-Length or chunked coding (none for a HEAD request's).
fn read_one(s: &mut TcpStream, head_request: bool) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("read a head"),
            1,
            "closed mid-head: {head:?}"
        );
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.trim_end().split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let fields: Vec<(String, String)> = lines
        .map(|l| l.split_once(':').unwrap())
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if head_request {
    } else if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte).unwrap();
                line.push(byte[0]);
            }
            let size = std::str::from_utf8(&line).unwrap().trim();
            let n = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            s.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = field("content-length") {
        body = vec![0u8; n.parse().unwrap()];
        s.read_exact(&mut body).unwrap();
    }
    (status, fields, body)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
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
    let (status, fields, body) = read_one(&mut c, false);
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "Hello from server 1");
    assert!(field(&fields, "x-request-id").is_some(), "{fields:?}");
    assert!(field(&fields, "date").is_some(), "{fields:?}");
    let (status, _, body) = read_one(&mut c, false);
    assert_eq!(status, 200);
    let echo = String::from_utf8_lossy(&body);
    assert!(echo.contains(r#""method":"POST""#), "{echo}");
    assert!(echo.contains(r#""body_len":5"#), "{echo}");
    let (status, fields, body) = read_one(&mut c, true);
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(field(&fields, "content-length"), Some("19"), "{fields:?}");
    let (status, fields, body) = read_one(&mut c, false);
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "Hello from server 1");
    assert_eq!(field(&fields, "connection"), Some("close"), "{fields:?}");
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
            let (status, fields, body) = read_one(&mut c, false);
            assert_eq!(status, 200, "round {round}: {fields:?}");
            assert_eq!(String::from_utf8_lossy(&body), want, "round {round}");
            assert_eq!(field(&fields, "connection"), None, "{fields:?}");
        }
    }
}

#[test]
fn the_balancers_own_answers_have_a_date_and_a_length() {
    let lb = balance_to(&format!("127.0.0.1:{}", closed_port()), &["--workers", "1"]);
    let mut c = connect(lb.addr());
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (status, fields, body) = read_one(&mut c, false);
    assert!(status == 502 || status == 503, "{status} {fields:?}");
    assert!(field(&fields, "date").is_some(), "{fields:?}");
    assert_eq!(
        field(&fields, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(!body.is_empty());
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
    let (status, _, body) = read_one(&mut c, false);
    assert_eq!((status, &body[..]), (200, &b"slow"[..]));
    // Well within the keep-alive time counted from the answer, not from the request.
    std::thread::sleep(Duration::from_millis(400));
    c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (status, _, body) = read_one(&mut c, false);
    assert_eq!((status, &body[..]), (200, &b"slow"[..]));
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
    let (status, _, body) = read_one(&mut c, false);
    let echo = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{echo}");
    assert!(echo.contains(&format!(r#""x-big":"{big}""#)), "{echo}");
    assert!(echo.contains(r#""body_len":5"#), "{echo}");
}
