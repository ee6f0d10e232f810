//! `lbx bench`'s lean HTTP/1.1 client (plain `http://`): it is the one in use, and it counts,
//! groups and frames answers correctly against `lbx serve` and against raw responders written
//! here (chunked with extensions and trailers, server-side closes, malformed and cut answers).

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[test]
fn counts_groups_and_bytes_against_serve() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let body = get(s.addr(), "/").expect("GET /").text().len() as u64;
    let (v, code) = bench_json(&["-n", "400", "-c", "8", &addr]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(num(&v, "/summary/requests"), 400);
    assert_eq!(num(&v, "/status_codes/200"), 400);
    assert_eq!(v["groups"], json!({"1": 400}));
    assert_eq!(num(&v, "/summary/bytes_received"), 400 * body);
    // HEAD answers carry a Content-Length but no body.
    let (v, _) = bench_json(&["-n", "50", "-c", "2", "-m", "HEAD", &addr]);
    assert_eq!(num(&v, "/status_codes/200"), 50, "{v}");
    assert_eq!(num(&v, "/summary/bytes_received"), 0);
    // A new connection per request.
    let (v, _) = bench_json(&["-n", "30", "-c", "3", "--disable-keepalive", &addr]);
    assert_eq!(num(&v, "/status_codes/200"), 30, "{v}");
    assert_eq!(v["groups"], json!({"1": 30}));
}

/// A raw HTTP/1.1 server on 127.0.0.1:0: for each request head read, `answer(n)` (n counts the
/// requests on that connection from 1) gives the bytes to send, written in small pieces, and
/// whether to close afterwards. The first request head seen is kept.
fn responder(answer: fn(u64) -> (Vec<u8>, bool)) -> (SocketAddr, Arc<Mutex<Option<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let first = Arc::new(Mutex::new(None));
    let seen = first.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || serve_conn(&mut conn, answer, &seen));
        }
    });
    (addr, first)
}

fn serve_conn(
    conn: &mut TcpStream,
    answer: fn(u64) -> (Vec<u8>, bool),
    seen: &Mutex<Option<Vec<u8>>>,
) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for n in 1u64.. {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        seen.lock().unwrap().get_or_insert(head);
        let (bytes, close) = answer(n);
        for piece in bytes.chunks(7) {
            if conn.write_all(piece).is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

#[test]
fn chunked_answers_and_server_closes() {
    // Chunk extensions, trailers, the group-by header in another case; every third answer on
    // a connection asks to close, and every fifth is delimited by the close itself.
    let (addr, first) = responder(|n| {
        let close = if n % 3 == 0 {
            "Connection: close\r\n"
        } else {
            ""
        };
        if n % 5 == 0 {
            let text = "HTTP/1.1 200 OK\r\nX-SERVER-ID: chunky\r\n\r\n0123456789";
            return (text.into(), true);
        }
        let text = format!(
            "HTTP/1.1 200 OK\r\nx-Server-Id: chunky\r\n{close}Transfer-Encoding: chunked\r\n\r\n\
             4;ext=1\r\nabcd\r\n6\r\nefghij\r\n0\r\nX-Trailer: t\r\n\r\n"
        );
        (text.into(), !close.is_empty())
    });
    let url = format!("http://{addr}/path?q=1");
    let (v, code) = bench_json(&["-n", "60", "-c", "3", "-H", "X-Extra: 1", &url]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(num(&v, "/status_codes/200"), 60, "{v}");
    assert_eq!(num(&v, "/summary/failures"), 0, "{v}");
    assert_eq!(v["groups"], json!({"chunky": 60}));
    assert_eq!(num(&v, "/summary/bytes_received"), 600);
    // The request is the fast path's prebuilt one (hyper would spell `host:` in lower case).
    let head = first.lock().unwrap().clone().expect("a request");
    let head = String::from_utf8(head).expect("text");
    let want = format!(
        "GET /path?q=1 HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lbx/{}\r\nx-extra: 1\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(head, want);
}

#[test]
fn malformed_and_cut_answers_by_kind() {
    type Answer = fn(u64) -> (Vec<u8>, bool);
    let cases: [(Answer, &str); 2] = [
        (
            |_| {
                (
                    b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n".to_vec(),
                    false,
                )
            },
            "protocol error",
        ),
        (
            |_| {
                (
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
                    true,
                )
            },
            "reset",
        ),
    ];
    for (answer, kind) in cases {
        let (addr, _) = responder(answer);
        let (v, code) = bench_json(&["-n", "6", "-c", "2", &addr.to_string()]);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["errors"], json!({kind: 6}));
    }
}
