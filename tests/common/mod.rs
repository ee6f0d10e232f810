//! Shared integration-test harness: run the real `lbx` binary on port 0, read its
//! `listening on ADDR` lines, talk plain HTTP/1.1 to it, and kill it on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn lbx() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lbx"));
    c.env("NO_COLOR", "1");
    c
}

/// Runs `lbx ARGS` to completion (bounded by `limit`), returning its output.
pub fn run_lbx(args: &[&str], limit: Duration) -> Output {
    let mut child = lbx()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lbx");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "lbx {args:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running lbx process, killed when dropped.
pub struct Proc {
    pub child: Child,
    /// Addresses from its `listening on` lines, in order.
    pub addrs: Vec<SocketAddr>,
    /// Further stdout lines as they arrive.
    pub lines: Receiver<String>,
    /// Everything it writes to stderr, as lines.
    pub errs: Receiver<String>,
}

impl Proc {
    /// Starts `lbx ARGS` and waits for `n` `listening on` lines (10 s at most).
    pub fn start(args: &[&str], n: usize) -> Proc {
        let mut child = lbx()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lbx");
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let (etx, errs) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                if etx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            child,
            addrs: Vec::new(),
            lines,
            errs,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.addrs.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix("listening on ") {
                        let a = rest.split_whitespace().next().unwrap();
                        let a = a.trim_start_matches("http://");
                        p.addrs.push(a.parse().expect("listening address"));
                    }
                }
                Err(_) => {
                    let errs: Vec<String> = p.errs.try_iter().collect();
                    panic!("lbx {args:?} did not print {n} listening lines; stderr: {errs:?}");
                }
            }
        }
        p
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Sends a signal (e.g. "TERM", "INT", "KILL").
    pub fn signal(&self, sig: &str) {
        send_signal(self.child.id(), sig);
    }

    /// Waits (bounded) for the process to exit and returns its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The stdout lines not yet taken, up to the end of the stream (bounded by `limit`). Call it
    /// after the process has exited: its reader thread may still be delivering the last lines.
    pub fn rest_of_stdout(&self, limit: Duration) -> Vec<String> {
        rest_of(&self.lines, limit)
    }

    /// The stderr lines not yet taken, up to the end of the stream; as `rest_of_stdout`.
    pub fn rest_of_stderr(&self, limit: Duration) -> Vec<String> {
        rest_of(&self.errs, limit)
    }

    /// Stderr lines so far.
    pub fn stderr_so_far(&self) -> Vec<String> {
        self.errs.try_iter().collect()
    }

    /// Waits (bounded) for a stderr line that contains every one of `parts`, and returns it.
    pub fn wait_stderr(&self, parts: &[&str], limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.errs.recv_timeout(left) {
                Ok(l) if parts.iter().all(|p| l.contains(p)) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

/// Lines from `rx` until its sender is gone (the stream ended) or `limit` passes.
fn rest_of(rx: &Receiver<String>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(_) => return out,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lbx serve -p 0 --workers 1 --id ID EXTRA...`.
pub fn serve(id: u32, extra: &[&str]) -> Proc {
    let id = id.to_string();
    let mut args = vec!["serve", "-p", "0", "--workers", "1", "--id", id.as_str()];
    args.extend_from_slice(extra);
    Proc::start(&args, 1)
}

/// Starts `lbx balance -p 0 --host 127.0.0.1 -b A,B,... EXTRA...`.
pub fn balance(backends: &[SocketAddr], extra: &[&str]) -> Proc {
    let list = backends
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    balance_to(&list, extra)
}

/// Starts `lbx balance -p 0 --host 127.0.0.1 -b BACKENDS EXTRA...`, backends as written
/// (`h2c://127.0.0.1:9001,https://localhost:9002`).
pub fn balance_to(backends: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["balance", "-p", "0", "--host", "127.0.0.1", "-b", backends];
    args.extend_from_slice(extra);
    Proc::start(&args, 1)
}

/// A port on 127.0.0.1 with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Resp> {
    request(addr, "GET", path, &[], b"")
}

/// One request on a fresh connection (`Connection: close`), 10 s timeouts.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

/// Parses a complete HTTP/1.1 response (content-length, chunked, or read-to-close).
pub fn parse_response(raw: &[u8], head_only: bool) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        let mut out = Vec::new();
        let mut p = rest;
        loop {
            let nl = p
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("chunk size"))?;
            let size_str = std::str::from_utf8(&p[..nl]).map_err(|_| bad("chunk size"))?;
            let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            p = &p[nl + 2..];
            if size == 0 {
                break;
            }
            if p.len() < size + 2 {
                return Err(bad("truncated chunk"));
            }
            out.extend_from_slice(&p[..size]);
            p = &p[size + 2..];
        }
        out
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if rest.len() < len {
            return Err(bad("truncated body"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Polls `f` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends raw bytes on a fresh connection and reads until the peer closes or 5 s of silence;
/// returns what arrived.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// The status code of a raw response, if it starts with a status line.
pub fn raw_status(resp: &[u8]) -> Option<u16> {
    let line = resp.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Open file descriptors of a process (Linux).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Counts `x-server-id` values over `n` sequential GETs of `/` with `headers`; every answer
/// must be a 200.
pub fn spread(
    addr: SocketAddr,
    n: usize,
    headers: &[(&str, &str)],
) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for i in 0..n {
        let r = request(addr, "GET", "/", headers, b"").expect("request");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let id = r.header("x-server-id").unwrap_or("?").to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// The Content-Length a message head (request or response, as text) declares, if any.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse().unwrap())
    })
}

/// Reads a request head byte by byte (nothing after it); `None` if the peer closes first.
pub fn read_request_head(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// A raw backend that answers `/healthcheck` with 200 but reads any other request head and
/// closes the connection without a response (a backend failing mid-request). Counts those.
pub struct Resetter {
    pub addr: SocketAddr,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Resetter {
    /// Starts it on a free port of 127.0.0.1 (the thread ends with the test process).
    pub fn start() -> Resetter {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dropped = std::sync::Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let d = d.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if head.starts_with(b"GET /healthcheck ") {
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                    } else {
                        d.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Resetter { addr, dropped }
    }

    /// Requests it has dropped so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Proc {
    /// Waits (bounded) for a stdout line starting with `prefix` and returns the rest of it.
    pub fn wait_line(&self, prefix: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Some(rest.to_string());
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

/// Starts `lbx balance` over `backends` with `--admin 127.0.0.1:0` and EXTRA, and returns it
/// with the admin address from its `admin listening on ADDR` line.
pub fn balance_with_admin(backends: &[SocketAddr], extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let lb = balance(backends, &args);
    let admin = lb
        .wait_line("admin listening on ", Duration::from_secs(10))
        .expect("admin listening line")
        .parse()
        .expect("admin address");
    (lb, admin)
}

/// One admin API request, with `Authorization: Bearer TOKEN` when a token is given.
pub fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    request(admin, method, path, &headers, body.as_bytes()).expect("admin request")
}

/// A fresh path in the temp directory (nothing is created there).
pub fn temp_path(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("lbx-{name}-{}-{nanos}", std::process::id()))
}

/// A raw backend: each accepted connection is handed to `serve` on a thread of its own (the
/// threads end with the test process).
pub fn raw_backend(serve: impl Fn(TcpStream) + Send + Sync + Copy + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { break };
            std::thread::spawn(move || serve(c));
        }
    });
    addr
}

/// A raw backend that answers `/healthcheck` with 200 and every other request with `answer`,
/// then closes.
pub fn canned_backend(answer: &'static [u8]) -> SocketAddr {
    raw_backend(move |mut c| {
        let Some(head) = read_request_head(&mut c) else {
            return;
        };
        let reply: &[u8] = if head.starts_with(b"GET /healthcheck") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        } else {
            answer
        };
        let _ = c.write_all(reply);
    })
}

/// The path of an installed program, if `PATH` (or /usr/sbin, /sbin) has it.
pub fn installed(bin: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A helper process (a DNS server, etcd) killed and reaped when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    /// Sends a signal (e.g. "HUP", "KILL").
    pub fn signal(&self, sig: &str) {
        send_signal(self.0.id(), sig);
    }
}

/// Sends signal `sig` (e.g. "HUP") to process `pid` with kill(1).
pub fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The addresses and weights in a balancer's pool, from its admin API, sorted; backends on
/// their way out (draining) are left out.
pub fn pool_of(admin: SocketAddr) -> Vec<(String, u64)> {
    let r = admin_call(admin, "GET", "/backends", None, "");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let mut out: Vec<(String, u64)> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|b| b["state"] != "draining")
                .map(|b| {
                    let addr = b["address"].as_str().unwrap_or("?").to_string();
                    (addr, b["weight"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Starts `lbx balance -p 0 --host 127.0.0.1 --admin 127.0.0.1:0 ARGS` (backends in ARGS) and
/// returns it with its admin address.
pub fn balance_args_with_admin(args: &[&str]) -> (Proc, SocketAddr) {
    let mut all = vec![
        "balance",
        "-p",
        "0",
        "--host",
        "127.0.0.1",
        "--admin",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let lb = Proc::start(&all, 1);
    let admin = lb.admin_addr();
    (lb, admin)
}

impl Proc {
    /// Waits for the `admin listening on ADDR` line and returns ADDR.
    pub fn admin_addr(&self) -> SocketAddr {
        self.wait_line("admin listening on ", Duration::from_secs(10))
            .expect("admin listening line")
            .parse()
            .expect("admin address")
    }
}

/// A fresh temp path (see [`temp_path`]) whose file is removed when dropped, pass or fail.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(name: &str) -> TempFile {
        TempFile(temp_path(name))
    }
}

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `lbx bench ARGS --json --no-progress` (within a minute); returns the parsed report and
/// the exit code.
pub fn bench_json(args: &[&str]) -> (serde_json::Value, i32) {
    let mut all = vec!["bench", "--json", "--no-progress"];
    all.extend_from_slice(args);
    let out = run_lbx(&all, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} printed no JSON ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().unwrap_or(-1))
}

/// The count at JSON pointer `path` of a bench report.
pub fn num(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing or not a count in {v}"))
}

/// Asserts that the server closed `c` (end of stream or reset, not the client's own read
/// timeout) without answering 200.
pub fn assert_cut_off(c: &mut TcpStream) {
    use std::io::Read;
    let mut buf = Vec::new();
    match c.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection stayed open: {e}"
        ),
    }
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "answered: {}",
        String::from_utf8_lossy(&buf)
    );
}

/// A throwaway CA ("lbx test CA") and a certificate for `localhost` it signed, written as PEM
/// files into a temp directory that goes on drop; the leaf's DER too, for servers built in tests.
pub struct TestCa {
    /// The directory holding the files.
    pub dir: std::path::PathBuf,
    /// The CA certificate (for `--cacert`, `--backend-cacert`).
    pub ca: std::path::PathBuf,
    /// The leaf certificate (for `--tls-cert`).
    pub cert: std::path::PathBuf,
    /// The leaf's private key (for `--tls-key`).
    pub key: std::path::PathBuf,
    /// The leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// The leaf's private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl TestCa {
    /// Makes the CA and the leaf; `tag` names the directory.
    pub fn new(tag: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lbx test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let dir = temp_path(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_file, cert, key) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&ca_file, ca.as_ref().pem()).unwrap();
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        TestCa {
            dir,
            ca: ca_file,
            cert,
            key,
            cert_der: leaf.der().to_vec(),
            key_der: leaf_key.serialize_der(),
        }
    }

    /// The CA file's path as text.
    pub fn ca_path(&self) -> &str {
        self.ca.to_str().unwrap()
    }

    /// `--tls-cert CERT --tls-key KEY` for `lbx serve` or `lbx balance`.
    pub fn tls_flags(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
