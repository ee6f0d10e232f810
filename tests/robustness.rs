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

/// A backend that answers /healthcheck properly but misbehaves on every other request.
fn bad_backend(behaviour: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { break };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                if head.starts_with(b"GET /healthcheck") {
                    let _ = c.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                } else {
                    let _ = c.write_all(behaviour);
                }
                // Dropping the stream closes the connection.
            });
        }
    });
    addr
}

#[test]
fn a_backend_closing_mid_response_never_yields_a_silently_short_200() {
    let b = bad_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    let mut lb = balance(&[b], &["--workers", "1", "--interval", "1h"]);
    let pid = lb.child.id();
    assert_eq!(
        get(lb.addr(), "/healthcheck").unwrap().status,
        200,
        "warm-up"
    );
    let baseline = open_fds(pid);
    for _ in 0..20 {
        match get(lb.addr(), "/") {
            Ok(r) => assert_ne!(r.status, 200, "a short body passed as complete: {r:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
        }
    }
    let back = wait_until(Duration::from_secs(10), || open_fds(pid) <= baseline + 1);
    assert!(
        back,
        "descriptors: {} after, {baseline} before",
        open_fds(pid)
    );
    assert_eq!(lb.wait_exit(Duration::ZERO), None, "still running");
}

#[test]
fn a_malformed_backend_response_gives_502() {
    let b = bad_backend(b"THIS IS NOT HTTP\r\n\r\n");
    let lb = balance(&[b], &["--workers", "1", "--interval", "1h"]);
    let pid = lb.child.id();
    assert_eq!(
        get(lb.addr(), "/healthcheck").unwrap().status,
        200,
        "warm-up"
    );
    let baseline = open_fds(pid);
    for _ in 0..20 {
        let r = get(lb.addr(), "/").unwrap();
        assert_eq!(r.status, 502, "{}", r.text());
    }
    let back = wait_until(Duration::from_secs(10), || open_fds(pid) <= baseline + 1);
    assert!(
        back,
        "descriptors: {} after, {baseline} before: {:?}",
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
