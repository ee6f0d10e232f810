//! etcd discovery and registration end to end against a real etcd on loopback ports with a
//! temporary data dir: `serve --register` shows up in a `balance --discover` pool and leaves it
//! at shutdown, a SIGKILLed server's lease expires, two balancers agree (hash included), and
//! a restarted etcd does not cost the balancer its pool. Skips, saying so, without etcd.

mod common;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const PREFIX: &str = "/lbx/backends/";

/// An etcd on two free loopback ports, with its data in a temporary directory.
struct Etcd {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    proc: Option<Daemon>,
}

impl Etcd {
    fn start() -> Option<Etcd> {
        let mut e = Etcd::prepare()?;
        e.launch();
        Some(e)
    }

    /// Picks the ports and the directory without starting etcd.
    fn prepare() -> Option<Etcd> {
        let Some(bin) = installed("etcd") else {
            eprintln!("SKIPPED: etcd is not installed (apt-get install etcd-server)");
            return None;
        };
        Some(Etcd {
            bin,
            dir: temp_path("etcd"),
            client: SocketAddr::from(([127, 0, 0, 1], closed_port())),
            peer: SocketAddr::from(([127, 0, 0, 1], closed_port())),
            proc: None,
        })
    }

    /// Starts (or restarts) the process on the same ports and data, and waits until it answers.
    fn launch(&mut self) {
        let (c, p) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        let child = Command::new(&self.bin)
            .args(["--name", "lbx-test", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("lbx-test={p}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        self.proc = Some(Daemon(child));
        let up = wait_until(Duration::from_secs(20), || self.keys().is_some());
        assert!(up, "etcd did not come up on {}", self.client);
    }

    fn kill(&mut self) {
        self.proc = None;
    }

    fn url(&self) -> String {
        format!("etcd://{}{PREFIX}", self.client)
    }

    fn call(&self, path: &str, body: serde_json::Value) -> Option<serde_json::Value> {
        let headers = [("Content-Type", "application/json")];
        let r = request(
            self.client,
            "POST",
            path,
            &headers,
            body.to_string().as_bytes(),
        )
        .ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
    }

    /// The keys under PREFIX, None while etcd does not answer.
    fn keys(&self) -> Option<Vec<String>> {
        let v = self.call(
            "/v3/kv/range",
            serde_json::json!({"key": B64.encode(PREFIX), "range_end": B64.encode("/lbx/backends0")}),
        )?;
        let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
        Some(
            kvs.iter()
                .map(|kv| {
                    String::from_utf8(B64.decode(kv["key"].as_str().unwrap()).unwrap()).unwrap()
                })
                .collect(),
        )
    }

    fn put(&self, key: &str, value: &str) {
        let body = serde_json::json!({"key": B64.encode(key), "value": B64.encode(value)});
        assert!(self.call("/v3/kv/put", body).is_some(), "put {key}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.proc = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `lbx serve` registered under the etcd prefix.
fn registered(etcd: &Etcd, id: u32, ttl: &str) -> Proc {
    serve(id, &["--register", &etcd.url(), "--register-ttl", ttl])
}

fn discovering(etcd: &Etcd, extra: &[&str]) -> (Proc, SocketAddr) {
    let url = etcd.url();
    let mut args = vec!["--discover", url.as_str(), "--interval", "200ms"];
    args.extend_from_slice(extra);
    balance_args_with_admin(&args)
}

fn addrs(admin: SocketAddr) -> Vec<String> {
    pool_of(admin).into_iter().map(|(a, _)| a).collect()
}

const LIMIT: Duration = Duration::from_secs(15);

/// Waits (bounded) until the balancer's pool is exactly `servers`; returns it.
fn pool_becomes(admin: SocketAddr, servers: &[&Proc]) -> Vec<String> {
    let mut want: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    want.sort();
    assert!(
        wait_until(LIMIT, || addrs(admin) == want),
        "{:?}",
        addrs(admin)
    );
    want
}

/// Waits until `server` is the balancer's whole pool and takes its traffic.
fn serves_only(lb: &Proc, admin: SocketAddr, server: &Proc) {
    pool_becomes(admin, &[server]);
    assert!(wait_until(LIMIT, || get(lb.addr(), "/").is_ok_and(|r| r.status == 200)));
}

#[test]
fn a_registered_server_joins_the_pool_and_leaves_at_shutdown() {
    let Some(etcd) = Etcd::start() else { return };
    let (lb, admin) = discovering(&etcd, &[]);
    let a = registered(&etcd, 1, "10s");
    serves_only(&lb, admin, &a);
    assert_eq!(etcd.keys().unwrap(), [format!("{PREFIX}{}", a.addr())]);
    // A graceful stop deletes the key at once, well before the lease would run out.
    let mut a = a;
    a.signal("TERM");
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(etcd.keys().unwrap(), Vec::<String>::new());
    assert!(
        wait_until(Duration::from_secs(5), || addrs(admin).is_empty()),
        "{:?}",
        addrs(admin)
    );
}

#[test]
fn a_killed_servers_lease_expires_and_it_leaves_the_pool() {
    let Some(etcd) = Etcd::start() else { return };
    let (_lb, admin) = discovering(&etcd, &[]);
    let a = registered(&etcd, 1, "2s");
    let b = registered(&etcd, 2, "2s");
    let want = pool_becomes(admin, &[&a, &b]);
    // Kept alive past several TTLs.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(addrs(admin), want);
    b.signal("KILL");
    pool_becomes(admin, &[&a]);
    assert_eq!(etcd.keys().unwrap(), [format!("{PREFIX}{}", a.addr())]);
}

#[test]
fn two_balancers_see_the_same_pool_and_hash_alike() {
    let Some(etcd) = Etcd::start() else { return };
    let hash = ["--algorithm", "hash", "--hash-key", "header:x-user"];
    let (lb1, admin1) = discovering(&etcd, &hash);
    let servers: Vec<Proc> = (1..=3).map(|id| registered(&etcd, id, "10s")).collect();
    // The second balancer starts later, so it learns the same backends in another order.
    let (lb2, admin2) = discovering(&etcd, &hash);
    let all: Vec<&Proc> = servers.iter().collect();
    for admin in [admin1, admin2] {
        pool_becomes(admin, &all);
    }
    let all_up = |admin: SocketAddr| {
        wait_until(LIMIT, || {
            let r = admin_call(admin, "GET", "/backends", None, "");
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            v.as_array()
                .is_some_and(|a| a.iter().filter(|b| b["state"] == "healthy").count() == 3)
        })
    };
    assert!(all_up(admin1) && all_up(admin2));
    let mut used = std::collections::HashSet::new();
    for user in 0..30 {
        let h = [("x-user", format!("user-{user}"))];
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r1 = request(lb1.addr(), "GET", "/", &h, b"").unwrap();
        let r2 = request(lb2.addr(), "GET", "/", &h, b"").unwrap();
        assert_eq!((r1.status, r2.status), (200, 200));
        assert_eq!(
            r1.header("x-server-id"),
            r2.header("x-server-id"),
            "user-{user}"
        );
        used.insert(r1.header("x-server-id").unwrap_or("?").to_string());
    }
    assert!(used.len() > 1, "every key went to one backend: {used:?}");
}

#[test]
fn a_restarted_etcd_does_not_cost_the_pool() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    etcd.put(
        &format!("{PREFIX}a"),
        &format!(r#"{{"address": "{}"}}"#, a.addr()),
    );
    let (lb, admin) = discovering(&etcd, &[]);
    serves_only(&lb, admin, &a);
    let one = vec![a.addr().to_string()];
    etcd.kill();
    assert!(wait_until(LIMIT, || lb
        .stderr_so_far()
        .iter()
        .any(|l| l.contains("keeping the last good set"))));
    assert_eq!(addrs(admin), one);
    assert!(get(lb.addr(), "/").is_ok_and(|r| r.status == 200));
    etcd.launch();
    etcd.put(
        &format!("{PREFIX}b"),
        &format!(r#"{{"address": "{}", "weight": 2}}"#, b.addr()),
    );
    let mut both = vec![(a.addr().to_string(), 1), (b.addr().to_string(), 2)];
    both.sort();
    assert!(
        wait_until(LIMIT, || pool_of(admin) == both),
        "{:?}",
        pool_of(admin)
    );
}

#[test]
fn a_server_and_a_balancer_started_before_etcd_catch_up_once_it_is_up() {
    let Some(mut etcd) = Etcd::prepare() else {
        return;
    };
    let (lb, admin) = discovering(&etcd, &[]);
    let a = registered(&etcd, 1, "10s");
    assert!(wait_until(LIMIT, || {
        a.stderr_so_far()
            .iter()
            .any(|l| l.contains("registering in") && l.contains("retrying"))
    }));
    assert!(addrs(admin).is_empty());
    etcd.launch();
    serves_only(&lb, admin, &a);
}

#[test]
fn a_config_reload_keeps_what_etcd_discovered() {
    let Some(etcd) = Etcd::start() else { return };
    let (a, b, c) = (serve(1, &[]), serve(2, &[]), serve(3, &[]));
    etcd.put(
        &format!("{PREFIX}b"),
        &format!(r#"{{"address": "{}"}}"#, b.addr()),
    );
    let file = TempFile::new("discover.toml");
    let write = |addrs: &[SocketAddr]| {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(&*file, format!("backends = [{}]\n", list.join(", "))).unwrap();
    };
    write(&[a.addr()]);
    let url = etcd.url();
    let conf = file.to_str().unwrap();
    let (lb, admin) = balance_args_with_admin(&["--config", conf, "--discover", &url]);
    pool_becomes(admin, &[&a, &b]);
    // The file swaps a for c: b, which etcd gave, stays.
    write(&[c.addr()]);
    lb.signal("HUP");
    pool_becomes(admin, &[&b, &c]);
    // etcd dropping b removes it; the file's c stays.
    assert!(etcd
        .call(
            "/v3/kv/deleterange",
            serde_json::json!({"key": B64.encode(format!("{PREFIX}b"))})
        )
        .is_some());
    pool_becomes(admin, &[&c]);
}
