//! `lbx check` end to end: exit codes, expectations, JSON, TLS with a test CA, watch and wait.

mod common;
use common::*;
use std::process::Output;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn check(args: &[&str]) -> Output {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    run_lbx(&all, LIMIT)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Vec<serde_json::Value> {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn healthy_backend_exits_0() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let o = check(&[&addr]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&addr) && out.contains("healthy") && out.contains("200"),
        "{out}"
    );
}

#[test]
fn unhealthy_backend_exits_1() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    assert_eq!(
        request(s.addr(), "POST", "/healthcheck/fail", &[], b"")
            .unwrap()
            .status,
        200
    );
    let o = check(&[&addr]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("unhealthy") && out.contains("503"), "{out}");
}

#[test]
fn closed_port_exits_1() {
    let port = closed_port().to_string();
    let o = check(&[&format!(":{port}")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("connection refused"), "{}", stdout(&o));
    // The phases that finished are kept for an unreachable target: here the name lookup.
    let o = check(&[&format!("localhost:{port}"), "--json"]);
    let v = json(&o);
    assert_eq!(v[0]["error"]["kind"], "connection refused");
    assert!(
        v[0]["timings_ms"]["dns"].as_f64().unwrap() > 0.0,
        "{}",
        v[0]
    );
}

#[test]
fn one_bad_target_among_good_exits_1() {
    let s = serve(1, &[]);
    let port = closed_port().to_string();
    let o = check(&[&s.addr().to_string(), &format!("127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}

#[test]
fn bad_address_exits_2_naming_it() {
    let o = check(&["localhost:notaport"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("notaport"), "{}", stderr(&o));
}

#[test]
fn bad_flags_exit_2_naming_the_value() {
    for (flag, value) in [
        ("--expect-status", "7xx"),
        ("--timeout", "soon"),
        ("--expect-body-regex", "(unclosed"),
        ("-H", "no-colon-here"),
        ("--path", "healthcheck"),
    ] {
        let o = check(&[":9", flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(stderr(&o).contains(value), "{flag}: {}", stderr(&o));
    }
    for (flag, value) in [("--timeout", "0s"), ("--connect-timeout", "0ms")] {
        let o = check(&[":9", flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(stderr(&o).contains(flag), "{flag}: {}", stderr(&o));
    }
    let o = check(&[":9", "--cacert", "/nonexistent/ca.pem"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/ca.pem"), "{}", stderr(&o));
}

#[test]
fn expect_status_both_ways() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    assert_eq!(
        check(&[&addr, "--expect-status", "200"]).status.code(),
        Some(0)
    );
    assert_eq!(
        check(&[&addr, "--expect-status", "300-399,5xx"])
            .status
            .code(),
        Some(1)
    );
    // A 404 is healthy when it is what was asked for.
    let o = check(&[&addr, "--path", "/nope", "--expect-status", "404"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    request(s.addr(), "POST", "/healthcheck/fail", &[], b"").unwrap();
    assert_eq!(
        check(&[&addr, "--expect-status", "503"]).status.code(),
        Some(0)
    );
    let o = check(&[&addr, "--expect-status", "2xx"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("expected 2xx"), "{}", stdout(&o));
}

#[test]
fn expect_body_both_ways() {
    let s = serve(4, &[]);
    let addr = s.addr().to_string();
    assert_eq!(
        check(&[&addr, "--expect-body", "ok"]).status.code(),
        Some(0)
    );
    let o = check(&[&addr, "--expect-body", "degraded"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("degraded"), "{}", stdout(&o));
    let o = check(&[&addr, "--path", "/", "--expect-body-regex", r"server \d$"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = check(&[&addr, "--path", "/", "--expect-body-regex", r"^server"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn method_and_headers_reach_the_backend() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    // /echo answers 200 to any method; check the body to see the method and header arrived.
    let args = [
        addr.as_str(),
        "--path",
        "/echo?x=1",
        "-m",
        "put",
        "-H",
        "X-Probe: yes",
        "--expect-body",
        r#""method":"PUT""#,
        "--expect-body-regex",
        r#""x-probe":"yes".*"path":"/echo\?x=1""#,
    ];
    let o = check(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Without the header the same expectations fail.
    let mut without = args.to_vec();
    without.drain(5..7);
    assert_eq!(check(&without).status.code(), Some(1));
}

#[test]
fn json_has_fields_and_timings() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let port = closed_port().to_string();
    let closed = format!("127.0.0.1:{port}");
    let o = check(&[&addr, &closed, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["address"], addr.as_str());
    assert_eq!(v[0]["healthy"], true);
    assert_eq!(v[0]["status"], 200);
    assert!(v[0]["latency_ms"].as_f64().unwrap() > 0.0);
    let t = &v[0]["timings_ms"];
    for k in ["dns", "connect", "tls", "ttfb", "transfer", "total"] {
        assert!(t[k].is_number(), "timings_ms.{k} missing: {t}");
    }
    assert!(t["connect"].as_f64().unwrap() > 0.0);
    assert_eq!(t["total"], v[0]["latency_ms"]);
    assert_eq!(v[1]["address"], closed.as_str());
    assert_eq!(v[1]["healthy"], false);
    assert!(v[1]["status"].is_null());
    assert_eq!(v[1]["error"]["kind"], "connection refused");
    assert!(v[1]["timings_ms"]["ttfb"].is_null());
}

#[test]
fn h2c_targets_are_probed_over_http2() {
    let s = serve(1, &[]);
    let h2c = format!("h2c://{}", s.addr());
    let o = check(&[&h2c, &s.addr().to_string(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v[0]["address"], h2c.as_str());
    assert_eq!(v[0]["http_version"], "2", "{}", v[0]);
    assert_eq!(v[1]["http_version"], "1.1", "{}", v[1]);
    // A server that speaks only HTTP/1.1 fails an h2c probe.
    let srv = raw::plain(b"ok".to_vec());
    let o = check(&[&format!("h2c://127.0.0.1:{}", srv.port), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(json(&o)[0]["healthy"], false);
}

#[test]
fn many_targets_are_probed_at_once() {
    // 40 closed ports and one live backend: every target reported, in the order given.
    let s = serve(1, &[]);
    let live = s.addr().to_string();
    let mut targets: Vec<String> = (0..40).map(|_| format!(":{}", closed_port())).collect();
    targets.push(live.clone());
    let mut args: Vec<&str> = targets.iter().map(String::as_str).collect();
    args.push("--json");
    let v = json(&check(&args));
    assert_eq!(v.len(), 41);
    assert_eq!(v[40]["address"], live.as_str());
    assert_eq!(v[40]["healthy"], true);
    assert_eq!(v.iter().filter(|r| r["healthy"] == false).count(), 40);
}

/// Waits (bounded) for a line from `rx` that satisfies `pred`; returns it, or panics with what
/// arrived instead.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no matching line within {limit:?}; saw {seen:?}"),
        }
    }
}

fn post(addr: std::net::SocketAddr, path: &str) {
    assert_eq!(request(addr, "POST", path, &[], b"").unwrap().status, 200);
}

#[test]
fn wait_healthy_succeeds_once_the_backend_starts() {
    let port = closed_port().to_string();
    let target = format!("127.0.0.1:{port}");
    let args = ["check", "--wait-healthy", "--timeout", "20s", &target];
    let mut waiter = Proc::start(&args, 0);
    // Its first probe found nothing listening: the backend really starts during the wait.
    wait_line(&waiter.errs, LIMIT, |l| {
        l.contains(&target) && l.contains("DOWN")
    });
    assert!(
        waiter.child.try_wait().unwrap().is_none(),
        "gave up too early"
    );
    let _backend = Proc::start(&["serve", "-p", &port, "--workers", "1"], 1);
    assert_eq!(waiter.wait_exit(LIMIT), Some(0));
    // (Its output may still be on its way through the reader thread.)
    wait_line(&waiter.lines, LIMIT, |l| {
        l.contains(&target) && l.contains("healthy")
    });
}

#[test]
fn wait_healthy_gives_up_when_time_runs_out() {
    let target = format!(":{}", closed_port());
    let o = check(&["--wait-healthy", "--timeout", "1s", &target]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("within 1s"), "{}", stderr(&o));
}

#[test]
fn watch_prints_state_changes() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let args = [
        "check", "--watch", "100ms", "--rise", "1", "--fall", "1", &addr,
    ];
    let mut w = Proc::start(&args, 0);
    let up = wait_line(&w.lines, LIMIT, |l| l.contains(" UP"));
    assert!(up.starts_with("20") && up.contains(&addr), "{up}");
    post(s.addr(), "/healthcheck/fail");
    let down = wait_line(&w.lines, LIMIT, |l| l.contains(" DOWN"));
    assert!(down.contains("503"), "{down}");
    post(s.addr(), "/healthcheck/pass");
    wait_line(&w.lines, LIMIT, |l| l.contains(" UP"));
    // Ctrl-C ends the watch; the exit status is the last state (all up).
    w.signal("INT");
    assert_eq!(w.wait_exit(LIMIT), Some(0));
}

#[test]
fn watch_json_is_ndjson_events() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let args = ["check", "--watch=100ms", "--fall", "2", "--json", &addr];
    let w = Proc::start(&args, 0);
    let parse = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap();
    let first = parse(&wait_line(&w.lines, LIMIT, |_| true));
    assert_eq!(
        (first["event"].as_str(), first["healthy"].as_bool()),
        (Some("up"), Some(true))
    );
    assert!(first["time"].is_string() && first["timings_ms"]["total"].is_number());
    post(s.addr(), "/healthcheck/fail");
    // Only changes are printed: the next line is the fall, not another "up".
    let next = parse(&wait_line(&w.lines, LIMIT, |_| true));
    assert_eq!(
        (next["event"].as_str(), next["status"].as_u64()),
        (Some("down"), Some(503))
    );
}

mod raw {
    //! A tiny HTTP/1.1 server, plain or TLS (with a certificate from a [`TestCa`]), answering
    //! `GET /healthcheck` with 200 and a given body, anything else with 404.

    use std::sync::Arc;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::TestCa;

    /// A running server and, for TLS, its CA (whose files go on drop).
    pub struct Server {
        pub port: u16,
        pub ca: Option<TestCa>,
        _rt: tokio::runtime::Runtime,
    }

    /// Plain HTTP answering /healthcheck with `body`.
    pub fn plain(body: Vec<u8>) -> Server {
        start(None, body, None)
    }

    /// HTTPS for `localhost` answering /healthcheck with `ok` (no ALPN); `tag` names the CA's
    /// directory.
    pub fn tls(tag: &str) -> Server {
        let ca = TestCa::new(&format!("check-{tag}"));
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.key_der.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ca.cert_der.clone().into()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        start(Some(acceptor), b"ok".to_vec(), Some(ca))
    }

    fn start(tls: Option<tokio_rustls::TlsAcceptor>, body: Vec<u8>, ca: Option<TestCa>) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let body = Arc::new(body);
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, body) = (tls.clone(), body.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                answer(s, &body).await;
                            }
                        }
                        None => answer(tcp, &body).await,
                    }
                });
            }
        });
        Server { port, ca, _rt: rt }
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, body: &[u8]) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let (status, body) = if head.starts_with(b"GET /healthcheck ") {
            ("200 OK", body)
        } else {
            ("404 Not Found", &b""[..])
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body).await;
        let _ = s.shutdown().await;
    }
}

#[test]
fn expect_body_reads_the_first_64k_of_a_long_body() {
    let mut body = b"ok ".to_vec();
    body.resize(200 * 1024, b'x');
    body.extend_from_slice(b"END");
    let srv = raw::plain(body);
    let addr = format!("127.0.0.1:{}", srv.port);
    let o = check(&[&addr, "--expect-body", "ok"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Past the first 64 KiB nothing is read.
    assert_eq!(
        check(&[&addr, "--expect-body", "END"]).status.code(),
        Some(1)
    );
}

#[test]
fn https_verifies_against_cacert() {
    let srv = raw::tls("verify");
    let url = format!("https://localhost:{}", srv.port);
    let ca = srv.ca.as_ref().unwrap().ca_path();

    let o = check(&[&url, "--cacert", ca, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v[0]["status"], 200);
    // The server offers no ALPN protocol: HTTP/1.1.
    assert_eq!(v[0]["http_version"], "1.1");
    assert!(
        v[0]["timings_ms"]["tls"].as_f64().unwrap() > 0.0,
        "{}",
        v[0]
    );
    let cert = &v[0]["cert"];
    assert!(
        cert["subject"].as_str().unwrap().contains("localhost"),
        "{cert}"
    );
    assert!(
        cert["issuer"].as_str().unwrap().contains("lbx test CA"),
        "{cert}"
    );
    assert!(cert["days_left"].as_i64().unwrap() > 14, "{cert}");
    assert_eq!(cert["expiring_soon"], false);

    // The same server is not trusted without the CA...
    let o = check(&[&url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("tls"), "{}", stdout(&o));
    // ...unless verification is off.
    assert_eq!(check(&[&url, "--insecure"]).status.code(), Some(0));
}

#[test]
fn https_warns_before_the_certificate_expires() {
    let srv = raw::tls("warn");
    let url = format!("https://localhost:{}", srv.port);
    let ca = srv.ca.as_ref().unwrap().ca_path();
    // rcgen's certificates last for centuries: a huge threshold makes this one "expiring".
    let o = check(&[&url, "--cacert", ca, "--cert-warn-days", "10000000"]);
    assert_eq!(o.status.code(), Some(0), "a warning is not a failure");
    assert!(
        stdout(&o).contains("certificate expires in"),
        "{}",
        stdout(&o)
    );
    let o = check(&[
        &url,
        "--cacert",
        ca,
        "--cert-warn-days",
        "10000000",
        "--json",
    ]);
    assert_eq!(json(&o)[0]["cert"]["expiring_soon"], true);
}

#[test]
fn help_documents_exit_codes() {
    let o = check(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    assert!(
        help.contains("Exit status: 0 all healthy, 1 any unhealthy or unreachable, 2 usage error")
    );
    assert!(help.contains("--wait-healthy") && help.contains("--expect-status"));
}

#[test]
fn admin_mode_takes_the_same_tls_checks() {
    // A bad --cacert is a usage error in --admin mode too (it used to surface as exit 1).
    let port = closed_port().to_string();
    let out = run_lbx(
        &[
            "check",
            "--admin",
            &format!(":{port}"),
            "--cacert",
            "/nonexistent/ca.pem",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
}
