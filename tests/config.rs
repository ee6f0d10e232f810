//! The config file end to end: errors with line and column, flags over the file, reload on
//! SIGHUP and POST /reload without failing a request, an invalid reload that keeps serving, and
//! reloaded limits (rate limit, connection limits and timeouts, connect timeout) taking effect.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A config file removed on drop.
struct File(PathBuf);

impl File {
    fn new(text: &str) -> File {
        let f = File(temp_path("config.toml"));
        f.write(text);
        f
    }

    fn write(&self, text: &str) {
        // Write then rename, so a reload never reads half a file.
        // The whole name plus .tmp: with_extension would give every test the same temp file.
        let mut tmp = self.0.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn backends_toml(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "backends = [{}]\n[health]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        list.join(", ")
    )
}

/// `lbx balance --config FILE -p 0 --host 127.0.0.1 --workers 2`, with its admin address.
fn balance_from(file: &Path) -> (Proc, SocketAddr) {
    balance_from_workers(file, 2)
}

/// [`balance_from`] with `workers` worker threads.
fn balance_from_workers(file: &Path, workers: usize) -> (Proc, SocketAddr) {
    balance_from_with(file, workers, &[])
}

/// `lbx balance --config FILE -p 0 --host 127.0.0.1 EXTRA...`.
fn balance_config(file: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "balance",
        "--config",
        file.to_str().unwrap(),
        "-p",
        "0",
        "--host",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    Proc::start(&args, 1)
}

/// [`balance_from_workers`] with further flags.
fn balance_from_with(file: &Path, workers: usize, extra: &[&str]) -> (Proc, SocketAddr) {
    let workers = workers.to_string();
    let mut args = vec!["--workers", &workers];
    args.extend_from_slice(extra);
    let lb = balance_config(file, &args);
    let admin = lb
        .wait_line("admin listening on ", Duration::from_secs(10))
        .expect("admin line (the file sets [admin])")
        .parse()
        .unwrap();
    (lb, admin)
}

fn server_id(r: &Resp) -> String {
    r.header("x-server-id").unwrap_or("?").to_string()
}

fn pool(admin: SocketAddr) -> Vec<String> {
    let r = admin_call(admin, "GET", "/backends", None, "");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect()
}

/// The file is now invalid: `POST /reload` answers 400 naming `why`, SIGHUP is refused too, and
/// both refusals are logged with `why`.
fn reload_refused(lb: &Proc, admin: SocketAddr, why: &str) {
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(why), "{}", r.text());
    lb.signal("HUP");
    let mut errs = Vec::new();
    let logged = wait_until(Duration::from_secs(10), || {
        errs.extend(lb.stderr_so_far());
        let failed = |l: &&String| l.contains("reload failed") && l.contains(why);
        errs.iter().filter(failed).count() >= 2
    });
    assert!(logged, "two 'reload failed' lines naming {why:?}: {errs:?}");
}

#[test]
fn errors_name_the_line_and_exit_2() {
    for (text, want) in [
        ("port = 8080\n\n[health]\nrise = 2\nfal = 3\n", "line 5"),
        ("backends = [\":9001\"]\ngrace = \"forever\"\n", "line 2"),
        ("backends = [\":9001\",\n  \"bad address:\"]\n", "line 2"),
        ("port = \"eighty\"\n", "line 1"),
        ("[access_log]\nformat = \"xml\"\n", "line 2"),
        ("[health\n", "line 1"),
        (
            "[traffic]\nretries = 2\nalgorithm = \"fastest\"\n",
            "line 3",
        ),
        ("[traffic]\nmax_body = \"huge\"\n", "line 2"),
        ("tunnel_timeout = \"soon\"\n", "line 1, column 18"),
        (
            "[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nport = \"https\"\n",
            "line 4",
        ),
        ("[discovery]\netcd = [\"dns://x:1\"]\n", "line 2"),
        // Zero where zero means nothing, as the flags refuse it.
        ("[health]\ninterval = \"0s\"\n", "line 2, column 12"),
        ("[health]\nrise = 1\nfall = 0\n", "line 3, column 8"),
        ("[health]\ntimeout = \"0ms\"\n", "line 2"),
        ("connect_timeout = \"0s\"\n", "line 1"),
        ("[traffic]\nidle_timeout = \"0s\"\n", "line 2"),
        ("[traffic]\nresponse_timeout = \"0s\"\n", "line 2"),
        ("workers = 0\n", "line 1, column 11"),
        ("[traffic]\nmax_connections = 0\n", "line 2"),
        ("[traffic]\nrate_limit = \"1e-300/s\"\n", "line 2"),
    ] {
        let f = File::new(text);
        let out = run_lbx(&["balance", "--config", f.path()], Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{text:?} should name {want}: {stderr}"
        );
        assert!(stderr.contains(f.path()), "names the file: {stderr}");
    }
    let out = run_lbx(
        &["balance", "--config", "/nonexistent/lbx.toml"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_file_configures_and_flags_override() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    // The file says port 1 (privileged, would fail) and backend a; the flags say -p 0 and -b b.
    let f = File::new(&format!(
        "port = 1\nbackends = [\"{}\"]\n[access_log]\nformat = \"json\"\n",
        a.addr()
    ));
    let lb = balance_config(&f.0, &["-b", &b.addr().to_string(), "--access-log"]);
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(server_id(&r), "2");
    // The access log format came from the file.
    let line = lb
        .wait_line("{", Duration::from_secs(10))
        .expect("a JSON access log line");
    assert!(line.contains("\"request_id\""), "{line}");
}

#[test]
fn the_file_sets_tls_and_upgrades() {
    let ca = TestCa::new("config-tls");
    let a = serve(1, &[]);
    let f = File::new(&format!(
        "backends = [\"{}\"]\nallow_upgrade = [\"foo\"]\ntunnel_timeout = \"5m\"\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\nport = 0\n",
        a.addr(),
        ca.cert.display(),
        ca.key.display()
    ));
    let lb = balance_config(&f.0, &[]);
    let tls = lb
        .wait_line("tls listening on ", Duration::from_secs(10))
        .expect("a TLS listener from the file");
    let port = tls.rsplit(':').next().unwrap();
    let out = run_lbx(
        &[
            "check",
            "--json",
            "--cacert",
            ca.ca_path(),
            &format!("https://localhost:{port}"),
        ],
        Duration::from_secs(20),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    // The plain port goes on serving plain HTTP, and lets the file's upgrade through.
    let ask = [("Connection", "Upgrade"), ("Upgrade", "foo/2")];
    let r = request(lb.addr(), "GET", "/echo", &ask, b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["headers"]["upgrade"], "foo/2", "{v}");
}

#[test]
fn sighup_adds_and_removes_backends_without_failing_a_request() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let f = File::new(&backends_toml(&[a.addr()]));
    let (lb, admin) = balance_from(&f.0);
    let lb_addr = lb.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = get(lb_addr, "/").expect("request through the balancer");
                assert_eq!(r.status, 200, "{}", r.text());
                seen.lock().unwrap().push(server_id(&r));
            }
        })
    };
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        >= 20));

    // Add b.
    f.write(&backends_toml(&[a.addr(), b.addr()]));
    lb.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .iter()
        .any(|id| id == "2")));

    // Remove a: once it has left the pool, nothing reaches it.
    f.write(&backends_toml(&[b.addr()]));
    lb.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || pool(admin)
        == [b.addr().to_string()]));
    let mark = seen.lock().unwrap().len();
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        >= mark + 20));
    stop.store(true, Ordering::SeqCst);
    client.join().expect("no client request failed");
    let seen = seen.lock().unwrap();
    assert!(
        seen[mark..].iter().all(|id| id == "2"),
        "{:?}",
        &seen[mark..]
    );
}

#[test]
fn an_invalid_reload_keeps_serving() {
    let a = serve(1, &[]);
    let f = File::new(&backends_toml(&[a.addr()]));
    let (lb, admin) = balance_from(&f.0);
    f.write("backends = [\n  \"nope:\"\n]\n");
    reload_refused(&lb, admin, "line 2");
    assert_eq!(get(lb.addr(), "/").unwrap().status, 200);
    assert_eq!(pool(admin), [a.addr().to_string()]);

    // A good file again: POST /reload applies it.
    let b = serve(2, &[]);
    f.write(&backends_toml(&[a.addr(), b.addr()]));
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(pool(admin), [a.addr().to_string(), b.addr().to_string()]);

    // A backend registered through the API survives a reload of a file that does not name it.
    let c = serve(3, &[]);
    let body = format!(r#"{{"address": "{}"}}"#, c.addr());
    assert_eq!(
        admin_call(admin, "POST", "/backends", None, &body).status,
        201
    );
    f.write(&backends_toml(&[b.addr()]));
    assert_eq!(admin_call(admin, "POST", "/reload", None, "").status, 200);
    let want = [b.addr().to_string(), c.addr().to_string()];
    assert!(wait_until(Duration::from_secs(10), || pool(admin) == want));
}

#[test]
fn a_reload_to_a_zero_interval_is_refused_and_probing_goes_on() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let f = File::new(&backends_toml(&[a.addr(), b.addr()]));
    let (lb, admin) = balance_from(&f.0);
    f.write(&backends_toml(&[a.addr()]).replace("interval = \"100ms\"", "interval = \"0s\""));
    reload_refused(&lb, admin, "line 3");
    let want = [a.addr().to_string(), b.addr().to_string()];
    assert_eq!(pool(admin), want, "the running backends stay");
    // The prober lives on: a backend that goes away is still taken out.
    drop(b);
    let down = lb.wait_stderr(&["DOWN"], Duration::from_secs(10));
    assert!(down.is_some_and(|l| l.contains(&want[1])));
}

#[test]
fn a_reload_whose_certificate_fails_changes_nothing_and_says_why() {
    let ca = TestCa::new("reload-tls");
    let (a, b) = (serve(1, &[]), serve(2, &[]));
    let file = |backends: &[SocketAddr], retries: u32| {
        format!(
            "{}[traffic]\nretries = {retries}\n",
            backends_toml(backends)
        )
    };
    let f = File::new(&file(&[a.addr()], 2));
    let key = ca.tls_flags()[3];
    let mut tls_flags = ca.tls_flags().to_vec();
    tls_flags.extend(["--tls-port", "0"]);
    let (lb, admin) = balance_from_with(&f.0, 1, &tls_flags);
    let tls = lb
        .wait_line("tls listening on ", Duration::from_secs(10))
        .expect("tls listening line");
    let tls_port = tls.rsplit(':').next().unwrap().to_string();
    let served_over_tls = || {
        let url = format!("https://localhost:{tls_port}");
        let out = run_lbx(
            &["check", "--cacert", ca.ca_path(), &url],
            Duration::from_secs(20),
        );
        out.status.success()
    };
    assert!(served_over_tls());

    // A new backend and a new retry count, but the key file is now unusable.
    f.write(&file(&[a.addr(), b.addr()], 5));
    let good_key = std::fs::read(&ca.key).unwrap();
    std::fs::write(&ca.key, "not a key\n").unwrap();
    reload_refused(&lb, admin, key);
    assert_eq!(pool(admin), [a.addr().to_string()], "the pool is unchanged");
    assert!(served_over_tls(), "the running certificate still serves");

    // With the key back, the same file applies, the retry count among its changes: the failed
    // reload had not recorded it as running.
    std::fs::write(&ca.key, good_key).unwrap();
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("traffic.retries"), "{}", r.text());
    assert_eq!(pool(admin), [a.addr().to_string(), b.addr().to_string()]);
}

#[test]
fn reload_applies_health_check_settings() {
    let a = serve(1, &[]);
    let with_path = |path: &str| {
        format!(
            "backends = [\"{}\"]\n[health]\npath = \"{path}\"\ninterval = \"100ms\"\nrise = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            a.addr()
        )
    };
    // A health path the backend does not serve: it goes down, the balancer answers 503.
    let f = File::new(&with_path("/missing"));
    let (lb, admin) = balance_from(&f.0);
    assert!(wait_until(Duration::from_secs(10), || get(lb.addr(), "/")
        .unwrap()
        .status
        == 503));
    // The right path through a reload: it comes back.
    f.write(&with_path("/healthcheck"));
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("health.path"), "{}", r.text());
    assert!(wait_until(Duration::from_secs(10), || get(lb.addr(), "/")
        .unwrap()
        .status
        == 200));
}

#[test]
fn the_file_sets_traffic_policy() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let f = File::new(&format!(
        "backends = [{{ address = \"{}\", weight = 3 }}, \"{}\"]\n\
         [traffic]\nalgorithm = \"weighted\"\nmax_body = \"1k\"\n",
        a.addr(),
        b.addr()
    ));
    let lb = balance_config(&f.0, &["--workers", "1"]);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        let r = get(lb.addr(), "/").unwrap();
        *counts.entry(server_id(&r)).or_insert(0) += 1;
    }
    assert_eq!(
        (counts["1"], counts["2"]),
        (30, 10),
        "weights from the file: {counts:?}"
    );
    let r = request(lb.addr(), "POST", "/echo", &[], &[b'x'; 2048]).unwrap();
    assert_eq!(r.status, 413, "max_body from the file");
}

#[test]
fn reload_applies_traffic_policy_to_new_requests() {
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    let with = |traffic: &str| {
        format!(
            "backends = [{{ address = \"{}\", weight = 3 }}, \"{}\"]\n[traffic]\n{traffic}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            a.addr(),
            b.addr()
        )
    };
    let f = File::new(&with("algorithm = \"round-robin\""));
    let (lb, admin) = balance_from(&f.0);
    let spread = |n| {
        let mut c = std::collections::HashMap::new();
        for _ in 0..n {
            *c.entry(server_id(&get(lb.addr(), "/").unwrap()))
                .or_insert(0) += 1;
        }
        c
    };
    let before = spread(40);
    assert_eq!(
        (before["1"], before["2"]),
        (20, 20),
        "round robin ignores weights"
    );
    assert_eq!(
        request(lb.addr(), "POST", "/echo", &[], &[b'x'; 2048])
            .unwrap()
            .status,
        200
    );
    f.write(&with("algorithm = \"weighted\"\nmax_body = \"1k\""));
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("traffic.algorithm"), "{}", r.text());
    let after = spread(40);
    assert_eq!(
        (after["1"], after["2"]),
        (30, 10),
        "weighted after the reload: {after:?}"
    );
    let r = request(lb.addr(), "POST", "/echo", &[], &[b'x'; 2048]).unwrap();
    assert_eq!(r.status, 413, "max_body after the reload");
}

/// A config file over `backend` with `traffic` as its `[traffic]` section and an admin API.
fn traffic_toml(backend: SocketAddr, traffic: &str) -> String {
    format!("backends = [\"{backend}\"]\n[traffic]\n{traffic}\n[admin]\nlisten = \"127.0.0.1:0\"\n")
}

/// POST /reload, which must succeed and name `setting` among the changes.
fn reload_naming(admin: SocketAddr, setting: &str) {
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(setting), "{}", r.text());
    assert!(
        !r.text().contains("next restart"),
        "{setting} applies without a restart: {}",
        r.text()
    );
}

const ASK: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends `GET /` on a kept-alive connection and reads the one response (10 s at most).
fn exchange(c: &mut TcpStream) -> Resp {
    send_and_read(c, ASK)
}

/// Sends `bytes` and reads one whole response (10 s at most).
fn send_and_read(c: &mut TcpStream, bytes: &[u8]) -> Resp {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(bytes).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a whole response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        if let Ok(r) = parse_response(&raw, false) {
            return r;
        }
    }
}

/// A new connection that sends `GET /` and, the balancer being at its connection limit, gets
/// no answer (within 300 ms, as `policy::max_connections_holds_new_ones_in_the_queue` checks).
fn waiting(lb: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(lb).unwrap();
    c.write_all(ASK).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        c.read(&mut [0u8; 64]).is_err(),
        "a connection served over the limit"
    );
    c
}

/// The answer a [`waiting`] connection gets once it is served (10 s at most).
fn served(c: &mut TcpStream) -> Resp {
    send_and_read(c, b"")
}

/// True when `c` is closed (end of stream or reset) before `limit`, false when it stays open.
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    c.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn reload_turns_the_rate_limit_on_and_off() {
    let a = serve(1, &[]);
    let f = File::new(&traffic_toml(a.addr(), ""));
    let (lb, admin) = balance_from(&f.0);
    let statuses = |n| -> Vec<u16> {
        (0..n)
            .map(|_| get(lb.addr(), "/").unwrap().status)
            .collect()
    };
    assert!(statuses(20).iter().all(|&s| s == 200), "no limit yet");

    // One request a minute per client and worker: of 20, at most one per worker gets through.
    f.write(&traffic_toml(a.addr(), "rate_limit = \"1/m\""));
    reload_naming(admin, "traffic.rate_limit");
    let limited = statuses(20);
    let refused = limited.iter().filter(|&&s| s == 429).count();
    assert!(refused >= 18, "{refused} of 20 got 429: {limited:?}");

    // Removed again: nothing is limited.
    f.write(&traffic_toml(a.addr(), ""));
    reload_naming(admin, "traffic.rate_limit");
    let after = statuses(20);
    assert!(after.iter().all(|&s| s == 200), "{after:?}");
}

#[test]
fn reload_lowering_max_connections_keeps_open_connections() {
    let a = serve(1, &[]);
    let f = File::new(&traffic_toml(a.addr(), ""));
    let (lb, admin) = balance_from_workers(&f.0, 1);
    let mut first = TcpStream::connect(lb.addr()).unwrap();
    let mut second = TcpStream::connect(lb.addr()).unwrap();
    assert_eq!(exchange(&mut first).status, 200);
    assert_eq!(exchange(&mut second).status, 200);

    // Two connections are open and the limit drops to one: neither is closed, a third waits.
    f.write(&traffic_toml(a.addr(), "max_connections = 1"));
    reload_naming(admin, "traffic.max_connections");
    let mut third = waiting(lb.addr());
    assert_eq!(
        exchange(&mut first).status,
        200,
        "an open connection works on"
    );
    assert_eq!(exchange(&mut second).status, 200);

    // Once both have closed, the waiting connection is served.
    drop(first);
    drop(second);
    assert_eq!(served(&mut third).status, 200);
}

#[test]
fn reload_raising_max_connections_serves_a_waiting_connection() {
    let a = serve(1, &[]);
    let f = File::new(&traffic_toml(a.addr(), "max_connections = 1"));
    let (lb, admin) = balance_from_workers(&f.0, 1);
    let mut first = TcpStream::connect(lb.addr()).unwrap();
    assert_eq!(exchange(&mut first).status, 200);
    let mut second = waiting(lb.addr());

    // The limit goes up while the first connection stays open: the waiting one is taken.
    f.write(&traffic_toml(a.addr(), "max_connections = 2"));
    reload_naming(admin, "traffic.max_connections");
    assert_eq!(served(&mut second).status, 200);
    assert_eq!(exchange(&mut first).status, 200);
}

#[test]
fn reload_shortens_the_header_timeout_of_new_connections() {
    let a = serve(1, &[]);
    let patient = "header_timeout = \"1h\"\nidle_timeout = \"1h\"";
    let f = File::new(&traffic_toml(a.addr(), patient));
    let (lb, admin) = balance_from(&f.0);
    let partial = b"GET / HTTP/1.1\r\nHost: x\r\n";
    let mut before = TcpStream::connect(lb.addr()).unwrap();
    before.write_all(partial).unwrap();
    // Accepted (its limits fixed) before the reload: the balancer counts it as open.
    let open = |l: &str| l.starts_with("lbx_client_connections ") && l.ends_with(" 1");
    assert!(
        wait_until(Duration::from_secs(10), || admin_call(
            admin, "GET", "/metrics", None, ""
        )
        .text()
        .lines()
        .any(open)),
        "the first connection was never accepted"
    );

    let hasty = "header_timeout = \"300ms\"\nidle_timeout = \"1h\"";
    f.write(&traffic_toml(a.addr(), hasty));
    reload_naming(admin, "traffic.header_timeout");
    // A new connection that stalls mid-head is cut off (well before our 10 s read timeout).
    let mut after = TcpStream::connect(lb.addr()).unwrap();
    after.write_all(partial).unwrap();
    assert!(
        closed_within(&mut after, Duration::from_secs(10)),
        "a stalled head outlived the reloaded header timeout"
    );
    // The connection accepted before the reload keeps its hour: still open, and it completes.
    assert!(
        !closed_within(&mut before, Duration::from_millis(200)),
        "the connection from before the reload was cut off"
    );
    assert_eq!(send_and_read(&mut before, b"\r\n").status, 200);
}

/// A backend on 127.0.0.1 that answers health checks until [`Hanging::hang`]; then nobody
/// accepts its connections, its accept queue fills, and the kernel drops further attempts: a
/// dial to it hangs until the dialer (or the probe) gives up.
struct Hanging {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<std::net::TcpListener>>,
    /// Once hung: the listener and the connections that fill its queue, kept open.
    held: Option<(std::net::TcpListener, Vec<TcpStream>)>,
}

impl Hanging {
    fn start() -> Hanging {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(1).unwrap(); // a short accept queue, quick to fill
        s.set_nonblocking(true).unwrap();
        let l: std::net::TcpListener = s.into();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let server = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
            l
        });
        Hanging {
            addr,
            stop,
            server: Some(server),
            held: None,
        }
    }

    /// Stops accepting and fills the accept queue (probes may take some of its places).
    fn hang(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let listener = self.server.take().unwrap().join().unwrap();
        let mut queued = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) {
                Ok(c) => queued.push(c),
                Err(_) => {
                    // An attempt hung: the queue is full.
                    self.held = Some((listener, queued));
                    return;
                }
            }
        }
        panic!("the accept queue of {} never filled", self.addr);
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits (20 s at most) for the stderr line that reports `backend` down, and returns it.
fn down_line(lb: &Proc, backend: SocketAddr) -> String {
    let want = format!("backend {backend} DOWN");
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            found = found
                .take()
                .or_else(|| lb.stderr_so_far().into_iter().find(|l| l.contains(&want)));
            found.is_some()
        }),
        "no line with {want:?}"
    );
    found.unwrap()
}

#[test]
fn reload_changes_the_connect_timeout_of_new_dials() {
    let a = serve(1, &[]);
    let (mut x, mut y) = (Hanging::start(), Hanging::start());
    let backends = [a.addr(), x.addr, y.addr];
    let file = |connect: &str| {
        format!(
            "backends = [\"{}\", \"{}\", \"{}\"]\nconnect_timeout = \"{connect}\"\n\
             [health]\ninterval = \"100ms\"\ntimeout = \"1s\"\nfall = 5\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            backends[0], backends[1], backends[2]
        )
    };
    let f = File::new(&file("30s"));
    let (lb, admin) = balance_from(&f.0);
    // Every backend passes a probe first, so going down is a transition the log reports.
    let probed_up = |b: SocketAddr| {
        let r = admin_call(admin, "GET", "/backends", None, "");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["address"] == b.to_string() && e["last_probe"]["healthy"] == true)
    };
    assert!(wait_until(Duration::from_secs(10), || probed_up(x.addr)
        && probed_up(y.addr)));

    // Under a 30 s connect timeout, the 1 s probe timeout is what ends a hanging dial.
    x.hang();
    let line = down_line(&lb, x.addr);
    assert!(line.contains("timed out after 1s"), "{line}");

    // After a reload to 50 ms, the dialer gives up first, and says after how long. (Of the
    // five failures that take y down, at most the probes queued before it hung can be
    // anything else.)
    f.write(&file("50ms"));
    reload_naming(admin, "connect_timeout");
    y.hang();
    let line = down_line(&lb, y.addr);
    assert!(line.contains("no connection within 50ms"), "{line}");
}
