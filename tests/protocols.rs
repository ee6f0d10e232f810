//! HTTP/2, TLS termination and WebSocket tunnels through the real balancer, checked with Rust
//! clients (hyper, tokio-rustls, tokio-tungstenite) on loopback.

mod common;
use common::*;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on a fresh current-thread runtime, bounded by `LIMIT`.
fn block_on<F: Future>(f: F) -> F::Output {
    block_on_forever(async {
        tokio::time::timeout(LIMIT, f)
            .await
            .expect("within the limit")
    })
}

/// Reads a response body as JSON (serve's `/echo`).
async fn json(resp: hyper::Response<hyper::body::Incoming>) -> Value {
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// `GET uri` over HTTP/2 on an open stream.
async fn h2_get<S>(io: S, uri: &str) -> (hyper::Response<hyper::body::Incoming>, Version)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(uri).body(Empty::new()).unwrap();
    let resp = tx.send_request(req).await.expect("h2 response");
    let v = resp.version();
    (resp, v)
}

/// An HTTP/2 (prior knowledge) connection to `addr`, driven by a spawned task.
async fn h2_connect<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    tx
}

/// `GET path` over HTTP/1.1 on an open stream.
async fn h1_get<S>(io: S, host: &str, path: &str) -> hyper::Response<hyper::body::Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    tx.send_request(req).await.expect("h1 response")
}

#[test]
fn h2c_prior_knowledge_reaches_an_http11_backend() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let addr = lb.addr();
    let v = block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (resp, version) = h2_get(tcp, &format!("http://{addr}/echo?x=1")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(version, Version::HTTP_2);
        json(resp).await
    });
    assert_eq!(v["path"], "/echo?x=1");
    assert_eq!(
        v["headers"]["host"],
        addr.to_string(),
        "Host from :authority"
    );
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    // HTTP/1.1 still works on the same port.
    assert_eq!(get(addr, "/").unwrap().status, 200);
}

#[test]
fn lbx_serve_speaks_h2c_too() {
    let s = serve(1, &[]);
    let addr = s.addr();
    let status = block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        h2_get(tcp, &format!("http://{addr}/")).await.0.status()
    });
    assert_eq!(status, 200);
}

#[test]
fn an_upgrade_to_h2c_is_forwarded_as_a_plain_request() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let r = request(
        lb.addr(),
        "GET",
        "/echo",
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(
            v["headers"].get(h).is_none(),
            "{h} reached the backend: {v}"
        );
    }
}

#[test]
fn upgrades_other_than_websocket_are_refused_unless_allowed() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let ask = [("Connection", "Upgrade"), ("Upgrade", "foo/2")];
    let r = request(lb.addr(), "GET", "/echo", &ask, b"").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("'foo/2'"), "{}", r.text());
    assert!(r.text().contains("--allow-upgrade"), "{}", r.text());

    let lb = balance(&[s.addr()], &["--workers", "1", "--allow-upgrade", "foo"]);
    let r = request(lb.addr(), "GET", "/echo", &ask, b"").unwrap();
    // serve does not switch, but the request reached it with its upgrade headers.
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["headers"]["upgrade"], "foo/2", "{v}");
    assert_eq!(v["headers"]["connection"], "upgrade", "{v}");
}

#[test]
fn a_websocket_echo_round_trip_through_the_balancer() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let addr = lb.addr();
    block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
            .await
            .expect("websocket handshake through the balancer");
        assert_eq!(resp.status(), 101);
        for text in ["hello", "again"] {
            ws.send(Message::text(text)).await.unwrap();
            let back = ws.next().await.expect("an answer").unwrap();
            assert_eq!(back, Message::text(text));
        }
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        let back = ws.next().await.expect("an answer").unwrap();
        assert_eq!(back, Message::binary(vec![0u8, 1, 2, 255]));
        ws.close(None).await.unwrap();
    });
    // The balancer keeps serving.
    assert_eq!(get(addr, "/").unwrap().status, 200);
}

/// A self-signed certificate for `name`, written as PEM files; returns (cert, key, DER).
fn cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let (cp, kp) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cp, c.cert.pem()).unwrap();
    std::fs::write(&kp, c.signing_key.serialize_pem()).unwrap();
    (cp, kp, c.cert.der().to_vec())
}

/// A TLS client trusting `roots` and offering `alpn`.
fn connector(roots: &[Vec<u8>], alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone().into()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    // An empty `alpn` offers none.
    if !alpn.is_empty() {
        c.alpn_protocols = vec![alpn.to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(c))
}

/// The DNS names of a certificate's subjectAltName.
fn san(der: &[u8]) -> Vec<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.subject_alternative_name()
        .unwrap()
        .expect("a SAN")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// A balancer over `backend` whose main port serves TLS with a certificate for `localhost`
/// (written to `dir`); returns it and the certificate (DER).
fn balance_over_tls(backend: SocketAddr, dir: &std::path::Path) -> (Proc, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let (crt, key, der) = cert(dir, "localhost");
    let (crt, key) = (crt.to_str().unwrap(), key.to_str().unwrap());
    let lb = balance(
        &[backend],
        &["--workers", "1", "--tls-cert", crt, "--tls-key", key],
    );
    (lb, der)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens TLS to `addr` asking for `sni`; returns the stream, the ALPN choice and the SAN.
async fn tls_connect(
    addr: SocketAddr,
    roots: &[Vec<u8>],
    sni: &str,
    alpn: &[u8],
) -> (Tls, Option<Vec<u8>>, Vec<String>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector(roots, alpn)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (_, conn) = tls.get_ref();
    let chosen = conn.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = conn.peer_certificates().expect("a certificate")[0].to_vec();
    (tls, chosen, san(&leaf))
}

#[test]
fn tls_terminates_h2_and_http11_by_alpn_with_the_certificate_sni_names() {
    let dir = temp_path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (a_crt, a_key, a_der) = cert(&dir, "a.test");
    let (b_crt, b_key, b_der) = cert(&dir, "b.test");
    let s = serve(1, &[]);
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (a_crt, a_key, b_crt, b_key) = (p(&a_crt), p(&a_key), p(&b_crt), p(&b_key));
    let lb = balance(
        &[s.addr()],
        &[
            "--workers",
            "1",
            "--tls-port",
            "0",
            "--tls-cert",
            &a_crt,
            "--tls-key",
            &a_key,
            "--tls-cert",
            &b_crt,
            "--tls-key",
            &b_key,
        ],
    );
    let tls_addr: SocketAddr = lb
        .wait_line("tls listening on ", LIMIT)
        .expect("tls listening line")
        .parse()
        .unwrap();
    assert_ne!(tls_addr, lb.addr());
    let roots = vec![a_der, b_der];
    let (h2, h1) = block_on(async move {
        let (io, alpn, names) = tls_connect(tls_addr, &roots, "a.test", b"h2").await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(names, ["a.test"]);
        let (resp, version) = h2_get(io, "https://a.test/echo").await;
        assert_eq!((resp.status().as_u16(), version), (200, Version::HTTP_2));
        let h2 = json(resp).await;

        let (io, alpn, names) = tls_connect(tls_addr, &roots, "b.test", b"http/1.1").await;
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(names, ["b.test"]);
        let resp = h1_get(io, "b.test", "/echo").await;
        assert_eq!(
            (resp.status().as_u16(), resp.version()),
            (200, Version::HTTP_11)
        );
        (h2, json(resp).await)
    });
    assert_eq!(h2["headers"]["x-forwarded-proto"], "https", "{h2}");
    assert_eq!(h2["headers"]["host"], "a.test", "{h2}");
    assert_eq!(h1["headers"]["x-forwarded-proto"], "https", "{h1}");
    // The plain port still serves plain HTTP.
    let r = request(lb.addr(), "GET", "/echo", &[], b"").unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn certificates_without_tls_port_make_the_main_port_serve_tls() {
    let dir = temp_path("tls-main");
    let s = serve(1, &[]);
    let (lb, der) = balance_over_tls(s.addr(), &dir);
    let tls_addr: SocketAddr = lb
        .wait_line("tls listening on ", LIMIT)
        .expect("tls listening line")
        .parse()
        .unwrap();
    assert_eq!(tls_addr, lb.addr());
    let status = block_on(async move {
        let (io, alpn, _) = tls_connect(tls_addr, &[der], "localhost", b"http/1.1").await;
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        h1_get(io, "localhost", "/").await.status()
    });
    assert_eq!(status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reads one response with a Content-Length body from `io`; returns its text.
async fn read_h1_response<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let len = content_length(&String::from_utf8_lossy(&buf[..end])).unwrap_or(0);
            if buf.len() >= end + 4 + len {
                assert_eq!(buf.len(), end + 4 + len, "nothing beyond one answer");
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let n = tokio::time::timeout(LIMIT, io.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

// An idle HTTP/1 connection over TLS parks as a plain one does (hyper's buffers are freed after
// 100 ms of quiet, the TLS session is kept) and is rebuilt when the client sends again: with
// ALPN http/1.1 and without ALPN, the client never notices. Without ALPN, the first bytes still
// tell HTTP/2 from HTTP/1.
#[test]
fn tls_keep_alive_connections_serve_requests_after_going_idle() {
    use tokio::io::AsyncWriteExt;
    let dir = temp_path("tls-park");
    let s = serve(1, &[]);
    let (lb, der) = balance_over_tls(s.addr(), &dir);
    let addr = lb.addr();
    block_on(async move {
        for alpn in [&b"http/1.1"[..], b""] {
            let (mut io, chosen, _) =
                tls_connect(addr, std::slice::from_ref(&der), "localhost", alpn).await;
            assert_eq!(chosen.as_deref(), (!alpn.is_empty()).then_some(alpn));
            let get = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
            for round in 0..3 {
                io.write_all(get).await.unwrap();
                let r = read_h1_response(&mut io).await;
                assert!(
                    r.starts_with("HTTP/1.1 200"),
                    "round {round}, {alpn:?}: {r}"
                );
                assert!(r.ends_with("Hello from server 1"), "{r}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // Two pipelined requests after a pause, the second split across another pause.
            io.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHo")
                .await
                .unwrap();
            let r = read_h1_response(&mut io).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{alpn:?}: {r}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            io.write_all(b"st: localhost\r\n\r\n").await.unwrap();
            let r = read_h1_response(&mut io).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{alpn:?}: {r}");
        }
        // HTTP/2 with prior knowledge over TLS without ALPN.
        let (io, chosen, _) = tls_connect(addr, &[der], "localhost", b"").await;
        assert_eq!(chosen, None);
        let (resp, version) = h2_get(io, "https://localhost/").await;
        assert_eq!((resp.status().as_u16(), version), (200, Version::HTTP_2));
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_http2_drives_the_h2c_listener() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let url = format!("http://{}/", lb.addr());
    let out = run_lbx(
        &[
            "bench",
            "--json",
            "--no-progress",
            "--http2",
            "-c",
            "2",
            "-n",
            "100",
            &url,
        ],
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["http_version"], "2");
    assert_eq!(v["summary"]["successes"], 100, "{v}");
    assert_eq!(v["status_codes"]["200"], 100, "{v}");
}

#[test]
fn bad_tls_flags_exit_2_naming_the_file_or_value() {
    let b = format!("127.0.0.1:{}", closed_port());
    let base = [
        "balance",
        "-p",
        "0",
        "--host",
        "127.0.0.1",
        "-b",
        b.as_str(),
    ];
    let missing = temp_path("missing.crt");
    let missing = missing.to_str().unwrap();
    let dir = temp_path("tls-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let (a_crt, _, _) = cert(&dir, "a.test");
    let (_, b_key, _) = cert(&dir, "b.test");
    let (a_crt, b_key) = (a_crt.to_str().unwrap(), b_key.to_str().unwrap());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-cert", missing, "--tls-key", missing], missing),
        (vec!["--tls-cert", a_crt, "--tls-key", b_key], a_crt),
        (vec!["--tls-cert", a_crt, "--tls-key", a_crt], a_crt),
        (vec!["--tls-cert", missing], "--tls-key"),
        (vec!["--tls-port", "0"], "--tls-port"),
        (vec!["--tunnel-timeout", "soon"], "soon"),
        (vec!["--backend-cacert", missing], missing),
        (
            vec!["--backend-cacert", a_crt, "--backend-insecure"],
            "--backend-insecure",
        ),
    ];
    for (extra, named) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(&extra);
        let out = run_lbx(&args, LIMIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(named), "{extra:?} should name {named}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn certificate_files_are_re_read_on_reload() {
    let dir = temp_path("tls-reload");
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, key, old) = cert(&dir, "localhost");
    let s = serve(1, &[]);
    let config = dir.join("lbx.toml");
    std::fs::write(
        &config,
        format!(
            "backends = [\"{}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            s.addr()
        ),
    )
    .unwrap();
    let (crt_s, key_s) = (crt.to_str().unwrap(), key.to_str().unwrap());
    let args = [
        "balance",
        "--config",
        config.to_str().unwrap(),
        "-p",
        "0",
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
        "--tls-port",
        "0",
        "--tls-cert",
        crt_s,
        "--tls-key",
        key_s,
    ];
    let lb = Proc::start(&args, 1);
    let admin: SocketAddr = lb
        .wait_line("admin listening on ", LIMIT)
        .expect("admin line")
        .parse()
        .unwrap();
    let tls_addr: SocketAddr = lb
        .wait_line("tls listening on ", LIMIT)
        .expect("tls listening line")
        .parse()
        .unwrap();
    let leaf = |roots: Vec<Vec<u8>>| {
        block_on(async move {
            let (io, _, _) = tls_connect(tls_addr, &roots, "localhost", b"http/1.1").await;
            io.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        })
    };
    assert_eq!(leaf(vec![old.clone()]), old);
    let (_, _, new) = cert(&dir, "localhost"); // same files, a new certificate
    assert_ne!(new, old);
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        leaf(vec![new.clone()]),
        new,
        "new connections get the new one"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn heads_over_64_kib_get_431_over_http1_and_http2() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let addr = lb.addr();
    let statuses = block_on(async move {
        let mut tx = h2_connect::<Empty<Bytes>>(addr).await;
        let mut statuses = Vec::new();
        for n in [60_000, 70_000] {
            let req = Request::get(format!("http://{addr}/echo"))
                .header("x-big", "a".repeat(n))
                .body(Empty::new())
                .unwrap();
            statuses.push(tx.send_request(req).await.expect("an answer").status());
        }
        statuses
    });
    assert_eq!(statuses, [200, 431]);
    // HTTP/1.1: below hyper's read buffer bound, the head is still counted.
    for (n, want) in [(60_000, 200), (70_000, 431)] {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        );
        assert_eq!(raw_status(&raw(addr, head.as_bytes())), Some(want), "{n}");
    }
}

#[test]
fn an_idle_http2_connection_is_closed() {
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1", "--idle-timeout", "300ms"]);
    let addr = lb.addr();
    block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/"))
            .body(Empty::new())
            .unwrap();
        assert_eq!(tx.send_request(req).await.unwrap().status(), 200);
        // The balancer says goodbye; the connection ends (within the test's bound).
        conn.await.unwrap().expect("a clean close");
    });
}

#[test]
fn sigterm_lets_in_flight_http2_requests_finish() {
    let s = serve(1, &["--delay", "1s"]);
    let mut lb = balance(&[s.addr()], &["--workers", "1", "--grace", "10s"]);
    let addr = lb.addr();
    let slow = std::thread::spawn(move || {
        block_on(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (resp, version) = h2_get(tcp, &format!("http://{addr}/")).await;
            (resp.status(), version)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    lb.signal("TERM");
    let (status, version) = slow.join().unwrap();
    assert_eq!((status.as_u16(), version), (200, Version::HTTP_2));
    assert_eq!(lb.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn a_backend_declining_an_upgrade_has_its_answer_passed_on() {
    let s = serve(1, &[]);
    let lb = balance(
        &[s.addr()],
        &[
            "--workers",
            "1",
            "--access-log",
            "--access-log-format",
            "json",
        ],
    );
    let ask = [("Connection", "Upgrade"), ("Upgrade", "websocket")];
    // No Sec-WebSocket-Key: serve refuses the handshake.
    let r = request(lb.addr(), "GET", "/ws", &ask, b"").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("WebSocket handshake"), "{}", r.text());
    // The exchange is accounted to the backend that answered it.
    let line = lb
        .wait_line("{", Duration::from_secs(10))
        .map(|rest| format!("{{{rest}"))
        .expect("an access log line");
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["backend"], s.addr().to_string(), "{line}");
    assert_eq!(entry["status"], 400, "{line}");
    let r = request(lb.addr(), "GET", "/", &ask, b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello from server 1"));
}

#[test]
fn an_idle_websocket_tunnel_is_closed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = serve(1, &[]);
    let lb = balance(
        &[s.addr()],
        &["--workers", "1", "--tunnel-timeout", "300ms"],
    );
    let addr = lb.addr();
    block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
            .await
            .expect("websocket handshake");
        ws.send(Message::text("x")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
        // Then silence: the balancer closes the tunnel (within the test's bound).
        match ws.next().await {
            None | Some(Err(_)) => {}
            Some(Ok(m)) => panic!("unexpected {m:?}"),
        }
    });
}

#[test]
fn a_client_stalling_before_its_protocol_is_known_is_cut_off() {
    use std::io::{Read, Write};
    let s = serve(1, &[]);
    let lb = balance(
        &[s.addr()],
        &["--workers", "1", "--header-timeout", "300ms"],
    );
    // Fewer bytes than the HTTP/2 preface: the auto builder is still telling the versions apart.
    let mut c = std::net::TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    c.write_all(b"GE").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(c.read(&mut buf).expect("closed, not timed out"), 0);
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    use std::io::{Read, Write};
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let mut c = std::net::TcpStream::connect(lb.addr()).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 25];
    c.read_exact(&mut buf).unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 100 Continue\r\n"), "{buf:?}");
    c.write_all(b"hello").unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let start = rest
        .windows(4)
        .position(|w| w == b"HTTP")
        .expect("a final answer");
    let r = parse_response(&rest[start..], false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["body_len"], 5);
}

#[test]
fn response_trailers_reach_http1_and_http2_clients() {
    let b = canned_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n",
    );
    let lb = balance(&[b], &["--workers", "1", "--interval", "1h"]);
    let addr = lb.addr();
    let resp = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&resp);
    assert!(text.contains("hello"), "{text}");
    assert!(text.contains("\r\n0\r\nx-checksum: abc\r\n"), "{text}");
    let trailers = block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (resp, _) = h2_get(tcp, &format!("http://{addr}/")).await;
        let body = resp.into_body().collect().await.unwrap();
        body.trailers().cloned()
    });
    let trailers = trailers.expect("trailers over HTTP/2");
    assert_eq!(trailers["x-checksum"], "abc");
}

/// `GET /trailers` over HTTP/1.1 on a fresh connection, raw: what came back, with its chunks
/// and trailer section as sent.
fn trailers_h1(addr: SocketAddr, te: &str) -> String {
    let head = format!("GET /trailers HTTP/1.1\r\nHost: x\r\n{te}Connection: close\r\n\r\n");
    String::from_utf8_lossy(&raw(addr, head.as_bytes())).into_owned()
}

#[test]
fn trailers_from_hyper_backends_reach_clients_that_take_them() {
    let s = serve(3, &[]);
    // lbx serve, like any hyper server, sends trailers only to a request whose TE allows them.
    let direct = trailers_h1(s.addr(), "");
    assert!(!direct.contains("x-server-id: 3\r\n\r\n"), "{direct}");
    let direct = trailers_h1(s.addr(), "TE: trailers\r\n");
    assert!(
        direct.ends_with("\r\n0\r\nx-server-id: 3\r\n\r\n"),
        "{direct}"
    );
    for backend in [s.addr().to_string(), format!("h2c://{}", s.addr())] {
        let lb = balance_to(&backend, &["--workers", "1", "--interval", "1h"]);
        let addr = lb.addr();
        // HTTP/1.1, chunked: TE (and the Connection option naming it) is hop-by-hop, but its
        // `trailers` is passed on.
        let text = trailers_h1(addr, "TE: gzip, trailers\r\nConnection: TE\r\n");
        assert!(text.contains("Hello from server 3"), "{backend}: {text}");
        assert!(
            text.ends_with("\r\n0\r\nx-server-id: 3\r\n\r\n"),
            "{backend}: {text}"
        );
        // A client that did not ask gets none.
        let text = trailers_h1(addr, "");
        assert!(text.ends_with("\r\n0\r\n\r\n"), "{backend}: {text}");
        // HTTP/2: `te: trailers` is the one TE value allowed.
        let trailers = block_on(async move {
            let mut tx = h2_connect::<Empty<Bytes>>(addr).await;
            let req = Request::get(format!("http://{addr}/trailers"))
                .header("te", "trailers")
                .body(Empty::new())
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap();
            body.trailers().cloned()
        });
        let trailers = trailers.unwrap_or_else(|| panic!("{backend}: no trailers over HTTP/2"));
        assert_eq!(trailers["x-server-id"], "3", "{backend}");
    }
}

#[test]
fn request_trailers_reach_the_backend() {
    let s = serve(1, &[]);
    for backend in [s.addr().to_string(), format!("h2c://{}", s.addr())] {
        let lb = balance_to(&backend, &["--workers", "1", "--interval", "1h"]);
        let resp = raw(
            lb.addr(),
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\
              Connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n",
        );
        let r = parse_response(&resp, false).unwrap();
        assert_eq!(r.status, 200, "{backend}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["body_len"], 5, "{backend}: {v}");
        assert_eq!(v["trailers"]["x-sum"], "42", "{backend}: {v}");
        assert_eq!(v["headers"]["trailer"], "x-sum", "{backend}: {v}");
    }
}

#[test]
fn a_websocket_round_trip_over_the_tls_listener() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = temp_path("wss");
    let s = serve(1, &[]);
    let (lb, der) = balance_over_tls(s.addr(), &dir);
    let addr = lb.addr();
    block_on(async move {
        let (io, _, _) = tls_connect(addr, &[der], "localhost", b"http/1.1").await;
        let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/ws", io)
            .await
            .expect("websocket handshake over TLS");
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("over tls")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));
        ws.close(None).await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_http2_request_body_reaches_the_http11_backend() {
    use http_body_util::Full;
    let s = serve(1, &[]);
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    let addr = lb.addr();
    let v = block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let body = Full::new(Bytes::from(vec![b'x'; 100_000]));
        let req = Request::post(format!("http://{addr}/echo"))
            .body(body)
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        json(resp).await
    });
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body_len"], 100_000, "{v}");
}

// Backend protocols: h2c://, and https:// with ALPN and --backend-cacert.

/// `/echo` through `addr` over HTTP/1.1 as JSON, with extra request headers.
fn echo_h1(addr: SocketAddr, headers: &[(&str, &str)]) -> Value {
    let r = request(addr, "POST", "/echo?a=1", headers, b"hello").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// `/echo` through `addr` over HTTP/2 with prior knowledge, as JSON.
fn echo_h2(addr: SocketAddr) -> Value {
    block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (resp, version) = h2_get(tcp, &format!("http://{addr}/echo")).await;
        assert_eq!((resp.status().as_u16(), version), (200, Version::HTTP_2));
        json(resp).await
    })
}

/// `https://localhost:PORT` for a server on `addr`, the name its test certificate carries.
fn https_to(addr: SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}

#[test]
fn an_h2c_backend_gets_http2_from_http11_and_http2_clients() {
    let s = serve(1, &[]);
    let lb = balance_to(&format!("h2c://{}", s.addr()), &["--workers", "1"]);
    let hop = [
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "gzip"),
        ("X-Kept", "yes"),
    ];
    let v = echo_h1(lb.addr(), &hop);
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    assert_eq!(v["path"], "/echo?a=1");
    assert_eq!(v["body_len"], 5);
    assert_eq!(v["headers"]["host"], lb.addr().to_string(), "{v}");
    assert_eq!(v["headers"]["x-kept"], "yes");
    for h in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(
            v["headers"].get(h).is_none(),
            "{h} reached the backend: {v}"
        );
    }
    let v = echo_h2(lb.addr());
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    assert_eq!(v["headers"]["host"], lb.addr().to_string(), "{v}");
    // And the other way round: an HTTP/2 client to an http:// backend gets there in HTTP/1.1.
    let lb = balance(&[s.addr()], &["--workers", "1"]);
    assert_eq!(echo_h2(lb.addr())["version"], "HTTP/1.1");
}

#[test]
fn an_https_backend_is_verified_with_backend_cacert_and_spoken_to_in_h2() {
    let ca = TestCa::new("https-backend");
    let s = serve(7, &ca.tls_flags());
    let backend = https_to(s.addr());
    let lb = balance_to(
        &backend,
        &["--workers", "1", "--backend-cacert", ca.ca_path()],
    );
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(
        (r.status, r.header("x-server-id")),
        (200, Some("7")),
        "{}",
        r.text()
    );
    // ALPN offered h2 and http/1.1; lbx serve picks h2.
    let v = echo_h1(lb.addr(), &[]);
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    assert_eq!(v["headers"]["x-forwarded-proto"], "http", "{v}");
    assert_eq!(echo_h2(lb.addr())["version"], "HTTP/2.0");

    // Without the CA the certificate is not trusted: the backend goes down, and says why.
    let lb = balance_to(&backend, &["--workers", "1"]);
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let line = lb.wait_stderr(&["DOWN", "certificate"], LIMIT);
    assert!(line.is_some(), "no DOWN line naming the certificate");

    // Verification off: it works again.
    let lb = balance_to(&backend, &["--workers", "1", "--backend-insecure"]);
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!((r.status, r.header("x-server-id")), (200, Some("7")));
}

/// `n` requests for `/echo` through `addr` at once, each from its own client: every one must be
/// answered 200 by an HTTP/2 backend. Returns the backend connections (`x-connection`) they
/// came on.
fn echo_h2_connections(addr: SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    let clients: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/echo", &[], b"")))
        .collect();
    let mut conns = std::collections::BTreeSet::new();
    for c in clients {
        let r = c.join().unwrap().expect("an answer");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["version"], "HTTP/2.0", "{v}");
        conns.insert(r.header("x-connection").expect("x-connection").to_string());
    }
    conns
}

#[test]
fn http2_backends_multiplex_concurrent_requests_over_one_connection() {
    let ca = TestCa::new("mux");
    let h2c = serve(1, &["--delay", "100ms"]);
    let tls = serve(
        2,
        &[
            "--delay",
            "100ms",
            "--tls-cert",
            ca.cert.to_str().unwrap(),
            "--tls-key",
            ca.key.to_str().unwrap(),
        ],
    );
    for backend in [format!("h2c://{}", h2c.addr()), https_to(tls.addr())] {
        let lb = balance_to(
            &backend,
            &[
                "--workers",
                "1",
                "--backend-cacert",
                ca.ca_path(),
                "--interval",
                "1h",
            ],
        );
        let conns = echo_h2_connections(lb.addr(), 50);
        assert!(
            conns.len() <= 2,
            "{backend}: 50 requests came on {} connections: {conns:?}",
            conns.len()
        );
    }
}

#[test]
fn a_saturated_http2_backend_connection_gets_company() {
    // Four streams per connection, each request held 300 ms: twenty at once need five.
    let s = serve(1, &["--delay", "300ms", "--max-streams", "4"]);
    let lb = balance_to(
        &format!("h2c://{}", s.addr()),
        &["--workers", "1", "--interval", "1h"],
    );
    // A first request opens the connection and lets it learn the backend's limit.
    echo_h2_connections(lb.addr(), 1);
    let conns = echo_h2_connections(lb.addr(), 20);
    assert!(
        conns.len() > 1,
        "twenty requests at once shared one connection of four streams: {conns:?}"
    );
    // One stream per connection: a worker opens at most eight, and requests beyond them wait.
    let s = serve(2, &["--delay", "300ms", "--max-streams", "1"]);
    let lb = balance_to(
        &format!("h2c://{}", s.addr()),
        &["--workers", "1", "--interval", "1h"],
    );
    echo_h2_connections(lb.addr(), 1);
    let conns = echo_h2_connections(lb.addr(), 12);
    assert!((2..=8).contains(&conns.len()), "{conns:?}");
    // Once the burst is over, the connections it opened close (a sweep every 2 s closes those
    // it finds unused twice); the first stays and carries the next request.
    let closed = wait_until(Duration::from_secs(20), || {
        established_at(s.addr().port()) == 1
    });
    assert!(
        closed,
        "{} connections still open at the backend",
        established_at(s.addr().port())
    );
    let after = echo_h2_connections(lb.addr(), 1);
    assert!(after.is_subset(&conns), "{after:?} not among {conns:?}");
}

/// Established TCP connections whose local port is `port` (the server's side of each), from
/// /proc/net/tcp.
fn established_at(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
        })
        .count()
}

#[test]
fn a_burst_on_a_new_http2_connection_is_not_refused_away() {
    // Forty requests at once, before the balancer has heard that the backend allows one stream
    // per connection: the streams it refuses were never processed, and go again.
    let s = serve(1, &["--delay", "20ms", "--max-streams", "1"]);
    let lb = balance_to(
        &format!("h2c://{}", s.addr()),
        &["--workers", "1", "--interval", "1h"],
    );
    let target = lb.addr().to_string();
    let (v, code) = bench_json(&["-n", "40", "-c", "40", &target]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(num(&v, "/status_codes/200"), 40, "{}", v["status_codes"]);
}

#[test]
fn health_checks_speak_each_backends_protocol() {
    // An HTTP/1.1-only backend given as h2c:// fails its (h2c) health checks.
    let b = canned_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
    let lb = balance_to(
        &format!("h2c://{b}"),
        &["--workers", "1", "--interval", "100ms", "--fall", "1"],
    );
    let line = lb.wait_stderr(&["DOWN", "health check failed"], LIMIT);
    assert!(line.is_some(), "the h2c probe of an HTTP/1.1 server passed");
    // The same backend as http:// passes them, and an h2c one passes over h2c.
    let s = serve(1, &[]);
    let list = format!("{b},h2c://{}", s.addr());
    let mut all = vec![
        "--workers",
        "1",
        "--admin",
        "127.0.0.1:0",
        "--interval",
        "100ms",
    ];
    all.extend_from_slice(&["--fall", "1", "--rise", "1"]);
    let lb = balance_to(&list, &all);
    let admin = lb.admin_addr();
    let probed = wait_until(LIMIT, || {
        let r = admin_call(admin, "GET", "/backends", None, "");
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|b| b["last_probe"]["healthy"] == true))
    });
    assert!(probed, "both backends pass their health checks");
}

#[test]
fn check_probes_h2c_and_https_targets_in_their_protocol() {
    let ca = TestCa::new("check-protocols");
    let plain = serve(1, &[]);
    let tls = serve(2, &ca.tls_flags());
    let h2c = format!("h2c://{}", plain.addr());
    let https = https_to(tls.addr());
    let out = run_lbx(
        &["check", "--json", "--cacert", ca.ca_path(), &h2c, &https],
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    for (row, want) in [(&v[0], &h2c), (&v[1], &https)] {
        assert_eq!(row["address"], want.as_str());
        assert_eq!(
            (row["healthy"].as_bool(), row["http_version"].as_str()),
            (Some(true), Some("2")),
            "{row}"
        );
    }
    // Without the CA the https target fails on its certificate.
    let out = run_lbx(&["check", "--json", &https], LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["error"]["kind"], "tls", "{v}");
}

#[test]
fn websockets_reach_https_backends_in_http11_and_are_refused_for_h2c_ones() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ca = TestCa::new("wss-backend");
    let tls = serve(1, &ca.tls_flags());
    let lb = balance_to(
        &https_to(tls.addr()),
        &["--workers", "1", "--backend-cacert", ca.ca_path()],
    );
    let addr = lb.addr();
    block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
            .await
            .expect("websocket handshake to an https backend");
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("over https")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("over https")
        );
        ws.close(None).await.unwrap();
    });
    let plain = serve(2, &[]);
    let lb = balance_to(&format!("h2c://{}", plain.addr()), &["--workers", "1"]);
    let ask = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let r = request(lb.addr(), "GET", "/ws", &ask, b"").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("h2c://"), "{}", r.text());
    // Plain requests to it still work.
    assert_eq!(get(lb.addr(), "/").unwrap().status, 200);
}

/// An HTTPS server for `localhost` (`ca`'s leaf) that offers only http/1.1 by ALPN and answers
/// every request with the HTTP version it came in; its thread ends with the test process.
fn https_http11_only(ca: &TestCa) -> SocketAddr {
    use http_body_util::Full;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.key_der.clone()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.cert_der.clone().into()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        block_on_forever(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|req: Request<_>| async move {
                        let v = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(v),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        })
    });
    addr
}

/// Runs `f` on a fresh current-thread runtime with no time limit (for servers on their own
/// thread).
fn block_on_forever<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn an_https_backend_that_chooses_http11_by_alpn_is_spoken_to_in_http11() {
    let ca = TestCa::new("https-h1");
    let b = https_http11_only(&ca);
    let lb = balance_to(
        &https_to(b),
        &["--workers", "1", "--backend-cacert", ca.ca_path()],
    );
    let addr = lb.addr();
    let clients: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || get(addr, "/")))
        .collect();
    for c in clients {
        let r = c.join().unwrap().expect("an answer");
        assert_eq!((r.status, r.text().as_str()), (200, "HTTP/1.1"));
    }
    // An HTTP/2 client too.
    let body = block_on(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (resp, _) = h2_get(tcp, &format!("http://{addr}/")).await;
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    assert_eq!(body, "HTTP/1.1");
}
