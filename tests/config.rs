//! The config file end to end: errors with line and column, flags over the file, reload on
//! SIGHUP and POST /reload without failing a request, an invalid reload that keeps serving.

mod common;
use common::*;
use std::net::SocketAddr;
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

/// `lbx balance --config FILE -p 0 --host 127.0.0.1`, with its admin address.
fn balance_from(file: &Path) -> (Proc, SocketAddr) {
    let lb = Proc::start(
        &[
            "balance",
            "--config",
            file.to_str().unwrap(),
            "-p",
            "0",
            "--host",
            "127.0.0.1",
            "--workers",
            "2",
        ],
        1,
    );
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
    let lb = Proc::start(
        &[
            "balance",
            "--config",
            f.path(),
            "-p",
            "0",
            "--host",
            "127.0.0.1",
            "-b",
            &b.addr().to_string(),
            "--access-log",
        ],
        1,
    );
    let r = get(lb.addr(), "/").unwrap();
    assert_eq!(server_id(&r), "2");
    // The access log format came from the file.
    let line = lb
        .wait_line("{", Duration::from_secs(10))
        .expect("a JSON access log line");
    assert!(line.contains("\"request_id\""), "{line}");
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
    let r = admin_call(admin, "POST", "/reload", None, "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("line 2"), "{}", r.text());
    lb.signal("HUP");
    let mut errs = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        errs.extend(lb.stderr_so_far());
        errs.iter().filter(|l| l.contains("reload failed")).count() >= 2
    }));
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
    let lb = Proc::start(
        &[
            "balance",
            "--config",
            f.path(),
            "-p",
            "0",
            "--host",
            "127.0.0.1",
            "--workers",
            "1",
        ],
        1,
    );
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
