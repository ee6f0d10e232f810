//! `lbx bench` end to end: the real binary against real `lbx serve` backends on port 0.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `lbx bench ARGS --json --no-progress`; returns the parsed report and the exit code.
fn bench_json(args: &[&str]) -> (Value, i32) {
    let mut all = vec!["bench", "--json", "--no-progress"];
    all.extend_from_slice(args);
    let out = run_lbx(&all, LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} printed no JSON ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().unwrap_or(-1))
}

fn num(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing or not a count in {v}"))
}

fn status_sum(v: &Value) -> u64 {
    v["status_codes"]
        .as_object()
        .expect("status_codes object")
        .values()
        .map(|n| n.as_u64().expect("count"))
        .sum()
}

#[test]
fn exact_request_count_and_spread() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let (v, code) = bench_json(&["-n", "500", "-c", "10", &addr]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(num(&v, "/summary/requests"), 500);
    assert_eq!(num(&v, "/summary/successes"), 500);
    assert_eq!(num(&v, "/summary/failures"), 0);
    assert_eq!(status_sum(&v), 500);
    assert_eq!(num(&v, "/status_codes/200"), 500);
    assert_eq!(v["groups"], serde_json::json!({"1": 500}));
}

#[test]
fn exact_count_over_threads_and_uneven_connections() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let (v, _) = bench_json(&["-n", "7", "-c", "3", "--threads", "2", &addr]);
    assert_eq!(num(&v, "/summary/requests"), 7);
    assert_eq!(status_sum(&v), 7);
    assert_eq!(num(&v, "/threads"), 2);
}

#[test]
fn json_has_every_documented_field() {
    let s = serve(1, &[]);
    let url = format!("http://{}/", s.addr());
    let (v, _) = bench_json(&["-n", "50", &url]);
    for p in [
        "/url",
        "/method",
        "/http_version",
        "/connections",
        "/threads",
        "/summary/requests",
        "/summary/successes",
        "/summary/failures",
        "/summary/duration_s",
        "/summary/requests_per_sec",
        "/summary/bytes_received",
        "/summary/interrupted",
        "/latency_ms/p50",
        "/latency_ms/p75",
        "/latency_ms/p90",
        "/latency_ms/p95",
        "/latency_ms/p99",
        "/latency_ms/p999",
        "/latency_ms/p9999",
        "/latency_ms/max",
        "/latency_ms/min",
        "/latency_ms/mean",
        "/latency_ms/stdev",
        "/status_codes",
        "/errors",
        "/error_examples",
        "/group_by",
        "/groups",
        "/ungrouped",
        "/timeline",
        "/rate",
    ] {
        assert!(v.pointer(p).is_some(), "{p} missing in {v}");
    }
    for p in ["/p50", "/p99", "/max", "/mean"] {
        let ms = v["latency_ms"].pointer(p).and_then(Value::as_f64);
        assert!(ms.is_some_and(|x| x > 0.0), "latency {p} in {v}");
    }
    let timeline = v["timeline"].as_array().expect("timeline array");
    let answered: u64 = timeline.iter().map(|s| num(s, "/responses")).sum();
    assert_eq!(answered, 50);
    assert_eq!(v["url"], format!("http://{}/", s.addr()));
}

#[test]
fn group_by_another_header() {
    let s = serve(7, &[]);
    let url = format!("{}/echo", s.addr());
    let (v, code) = bench_json(&["-n", "20", "--group-by", "Content-Type", &url]);
    assert_eq!(code, 0);
    assert_eq!(v["group_by"], "content-type");
    assert_eq!(v["groups"], serde_json::json!({"application/json": 20}));
}

#[test]
fn closed_port_counts_refused_connections_and_exits_1() {
    let url = format!("127.0.0.1:{}", closed_port());
    let (v, code) = bench_json(&["-n", "20", "-c", "4", &url]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(num(&v, "/summary/requests"), 20);
    assert_eq!(num(&v, "/summary/failures"), 20);
    assert_eq!(v["errors"], serde_json::json!({"connection refused": 20}));
    assert_eq!(status_sum(&v), 0);
    assert!(v["latency_ms"]["p50"].is_null());
}

#[test]
fn text_report_names_errors_by_kind() {
    let url = format!(":{}", closed_port());
    let out = run_lbx(&["bench", "-n", "5", "--no-progress", &url], LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("connection refused  5"), "{text}");
    assert!(
        text.contains("Requests:      5 (0 succeeded, 5 failed)"),
        "{text}"
    );
}

#[test]
fn bad_flags_exit_2_naming_the_value() {
    for (flag, value) in [
        ("-c", "0"),
        ("-n", "lots"),
        ("-n", "0"),
        ("-z", "fast"),
        ("--rate", "-5"),
        ("-H", "nocolon"),
        ("-m", "G T"),
        ("--timeout", "0s"),
    ] {
        let out = run_lbx(&["bench", flag, value, ":1"], LIMIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(value), "{flag} {value}: {err}");
    }
    for url in [":99999", "ftp://x:1/", "nope"] {
        let out = run_lbx(&["bench", url], LIMIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(url), "{url}: {err}");
    }
    let out = run_lbx(&["bench", "-D", "/no/such/body", ":1"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/body"));
}

#[test]
fn duration_run_stops() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let (v, code) = bench_json(&["-z", "1s", "-c", "4", &addr]);
    assert_eq!(code, 0);
    let n = num(&v, "/summary/requests");
    assert!(n > 0, "{v}");
    assert_eq!(status_sum(&v), n);
    // With -n too, whichever ends first: here the count.
    let (v, _) = bench_json(&["-z", "30s", "-n", "40", &addr]);
    assert_eq!(num(&v, "/summary/requests"), 40);
}

/// The echo's Content-Length grows with the digits of `body_len` and of the request's
/// Content-Length, so a 5-byte and a 50000-byte body differ by exactly 8 bytes.
#[test]
fn post_delivers_the_body() {
    let s = serve(1, &[]);
    let url = format!("http://{}/echo?x=1", s.addr());
    let file = std::env::temp_dir().join(format!("lbx-bench-body-{}", std::process::id()));
    std::fs::write(&file, vec![b'a'; 50_000]).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let common = [
        "-n",
        "10",
        "-m",
        "post",
        "-H",
        "x-test: yes",
        "--group-by",
        "content-length",
    ];
    let (small, code) = bench_json(&[&common[..], &["-d", "hello", &url]].concat());
    assert_eq!(code, 0, "{small}");
    let (big, _) = bench_json(&[&common[..], &["-D", &file_arg, &url]].concat());
    let _ = std::fs::remove_file(&file);
    let len = |v: &Value| -> u64 {
        let g = v["groups"].as_object().expect("groups");
        assert_eq!(g.len(), 1, "{v}");
        g.keys().next().unwrap().parse().unwrap()
    };
    assert_eq!(num(&small, "/status_codes/200"), 10);
    assert_eq!(num(&big, "/status_codes/200"), 10);
    assert_eq!(len(&big) - len(&small), 8, "{small}\n{big}");
    assert_eq!(small["method"], "POST");
}

#[test]
fn sigint_still_prints_a_summary() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let mut p = Proc::start(
        &["bench", "-z", "60s", "-c", "4", "--no-progress", &addr],
        0,
    );
    std::thread::sleep(Duration::from_secs(1));
    p.signal("INT");
    let code = p.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "stderr: {:?}", p.stderr_so_far());
    let out = p.rest_of_stdout(Duration::from_secs(5));
    let text = out.join("\n");
    assert!(text.contains("Summary"), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert!(text.contains("Status codes"), "{text}");
}

#[test]
fn rate_sends_on_schedule() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let (v, code) = bench_json(&["--rate", "200", "-z", "2s", "-c", "10", &addr]);
    assert_eq!(code, 0);
    let n = num(&v, "/summary/requests");
    assert!((300..=500).contains(&n), "{n} requests: {v}");
    assert_eq!(v["rate"]["target_per_sec"], 200.0);
    assert!(v.pointer("/rate/behind_schedule").is_some());
    assert!(v.pointer("/rate/uncorrected_latency_ms/p99").is_some());
}

#[test]
fn fail_on_error_and_all_failed() {
    let all = serve(1, &["--fail-rate", "1"]);
    let (v, code) = bench_json(&["-n", "20", &all.addr().to_string()]);
    assert_eq!(code, 1, "every request answered 500: {v}");
    assert_eq!(num(&v, "/status_codes/500"), 20);
    let half = serve(2, &["--fail-rate", "0.5"]);
    let addr = half.addr().to_string();
    let (v, code) = bench_json(&["-n", "200", &addr]);
    assert_eq!(code, 0, "{v}");
    assert!(num(&v, "/summary/failures") > 0);
    let (_, code) = bench_json(&["-n", "200", "--fail-on-error", &addr]);
    assert_eq!(code, 1);
}

#[test]
fn warmup_and_no_keepalive_keep_exact_counts() {
    let s = serve(1, &[]);
    let addr = s.addr().to_string();
    let (v, _) = bench_json(&["-n", "30", "--warmup", "300ms", &addr]);
    assert_eq!(num(&v, "/summary/requests"), 30);
    let (v, code) = bench_json(&["-n", "30", "-c", "3", "--disable-keepalive", &addr]);
    assert_eq!(code, 0);
    assert_eq!(num(&v, "/status_codes/200"), 30);
}

#[test]
fn slow_answers_time_out_by_kind() {
    let s = serve(1, &["--delay", "3s"]);
    let addr = s.addr().to_string();
    let (v, code) = bench_json(&["-n", "4", "-c", "2", "-t", "200ms", &addr]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["errors"], serde_json::json!({"request timeout": 4}));
}

/// A minimal h2c (HTTP/2 prior knowledge) server on 127.0.0.1:0 answering `x-server-id: h2`;
/// returns its address and a count of the connections it accepted. Lives until the test ends.
fn h2c_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.version(), hyper::Version::HTTP_2);
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"hi")));
                        resp.headers_mut()
                            .insert("x-server-id", hyper::header::HeaderValue::from_static("h2"));
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    (addr, conns)
}

#[test]
fn http2_prior_knowledge_shares_connections_between_streams() {
    let (addr, conns) = h2c_server();
    let url = format!("http://{addr}/");
    // One thread: both connections are dialed (see an_h2c_url_speaks_http2_prior_knowledge).
    let (v, code) = bench_json(&[
        "--threads",
        "1",
        "--http2",
        "-c",
        "2",
        "-p",
        "4",
        "-n",
        "100",
        &url,
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["http_version"], "2");
    assert_eq!(num(&v, "/status_codes/200"), 100);
    assert_eq!(v["groups"], serde_json::json!({"h2": 100}));
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    let (v, _) = bench_json(&["--http2", "-c", "1", "-n", "5", "--disable-keepalive", &url]);
    assert_eq!(num(&v, "/status_codes/200"), 5);
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2 + 5);
}

#[test]
fn streams_need_http2() {
    let out = run_lbx(&["bench", "-p", "4", ":1"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--streams") && err.contains("--http2"),
        "{err}"
    );
}

#[test]
fn an_h2c_url_speaks_http2_prior_knowledge() {
    let (addr, conns) = h2c_server();
    let url = format!("h2c://{addr}/");
    // One thread: every loop takes its first request before any connection is up, so both
    // connections are dialed (on two threads, a late one may find no request left).
    let (v, code) = bench_json(&["--threads", "1", "-c", "2", "-p", "4", "-n", "40", &url]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["http_version"], "2");
    assert_eq!(v["url"], url.as_str());
    assert_eq!(num(&v, "/status_codes/200"), 40);
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// `openssl s_server` with a leaf certificate for 127.0.0.1 signed by a throwaway CA; killed
/// on drop. `None` (test skipped) when the openssl CLI is missing.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.ca.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn tls_server() -> Option<TlsServer> {
    use std::process::{Command, Stdio};
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: the openssl CLI is not installed");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("lbx-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let key = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &key[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=lbx test ca",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &key[..],
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    let port = closed_port();
    let accept = format!("127.0.0.1:{port}");
    let child = Command::new("openssl")
        .args([
            "s_server", "-accept", &accept, "-cert", "leaf.pem", "-key", "leaf.key", "-www",
            "-quiet",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = TlsServer {
        child,
        port,
        ca: dir.join("ca.pem"),
    };
    let up = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "openssl s_server did not start");
    Some(server)
}

#[test]
fn tls_verifies_and_accepts_insecure_or_cacert() {
    let Some(server) = tls_server() else { return };
    let url = format!("https://127.0.0.1:{}/", server.port);
    let (v, code) = bench_json(&["-n", "4", "-c", "1", &url]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["errors"], serde_json::json!({"tls": 4}));
    assert!(v["error_examples"]["tls"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let (v, code) = bench_json(&["-n", "4", "-c", "1", "--insecure", &url]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(num(&v, "/status_codes/200"), 4);
    let ca = server.ca.to_string_lossy().into_owned();
    let (v, code) = bench_json(&["-n", "4", "-c", "1", "--cacert", &ca, &url]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(num(&v, "/status_codes/200"), 4);
}

/// One connection cannot keep a 100/s schedule against 50 ms answers: later requests go out
/// behind schedule, and their corrected latency (from the scheduled time) far exceeds the
/// uncorrected one.
#[test]
fn rate_corrects_for_coordinated_omission() {
    let s = serve(1, &["--delay", "50ms"]);
    let addr = s.addr().to_string();
    let (v, code) = bench_json(&["--rate", "100", "-z", "1s", "-c", "1", &addr]);
    assert_eq!(code, 0, "{v}");
    assert!(num(&v, "/rate/behind_schedule") > 5, "{v}");
    let corrected = v["latency_ms"]["max"].as_f64().unwrap();
    let uncorrected = v["rate"]["uncorrected_latency_ms"]["max"].as_f64().unwrap();
    assert!(uncorrected >= 50.0, "{v}");
    assert!(corrected > 4.0 * uncorrected, "{v}");
}
