//! DNS discovery end to end against a real dnsmasq on a loopback port: A records added to and
//! removed from its hosts file (re-read on SIGHUP) show up in the balancer's pool, and SRV
//! records give targets, ports and weights. Skips, saying so, when dnsmasq is not installed.

mod common;
use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A dnsmasq answering for `lbx.test` from `hosts` (NXDOMAIN for names it does not have).
fn dnsmasq(hosts: &std::path::Path, extra: &[String]) -> Option<(Daemon, SocketAddr)> {
    let Some(bin) = installed("dnsmasq") else {
        eprintln!("SKIPPED: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return None;
    };
    // UDP and TCP on one port: bound then released, retried if another test takes it first.
    for _ in 0..5 {
        let port = closed_port();
        let mut child = Command::new(&bin)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port",
                &port.to_string(),
                "--listen-address",
                "127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/lbx.test/",
                "--pid-file=",
                "--user=",
            ])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        std::thread::sleep(Duration::from_millis(300));
        if child.try_wait().expect("wait").is_none() {
            return Some((Daemon(child), SocketAddr::from(([127, 0, 0, 1], port))));
        }
    }
    panic!("dnsmasq would not start");
}

/// How many different servers answer `n` requests (failures not counted).
fn servers_seen(lb: SocketAddr, n: usize) -> usize {
    let mut ids = std::collections::HashSet::new();
    for _ in 0..n {
        if let Ok(r) = get(lb, "/") {
            if r.status == 200 {
                ids.insert(r.header("x-server-id").unwrap_or("?").to_string());
            }
        }
    }
    ids.len()
}

fn write_hosts(path: &std::path::Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_records_added_and_removed_reach_the_pool() {
    let hosts = TempFile::new("hosts");
    // Two backends on one port, on two loopback addresses.
    let a = serve(1, &["--host", "127.0.0.2"]);
    let port = a.addr().port().to_string();
    let b = Proc::start(
        &[
            "serve",
            "--workers",
            "1",
            "--id",
            "2",
            "--host",
            "127.0.0.3",
            "-p",
            &port,
        ],
        1,
    );
    write_hosts(&hosts, &["127.0.0.2 web.lbx.test".into()]);
    let Some((dns, server)) = dnsmasq(&hosts, &[]) else {
        return;
    };
    let server = server.to_string();
    let spec = format!("dns://web.lbx.test:{port}");
    let (lb, admin) = balance_args_with_admin(&[
        "-b",
        &spec,
        "--dns-server",
        &server,
        "--dns-refresh",
        "1s",
        "--interval",
        "200ms",
    ]);
    let want = |ips: &[&str]| -> Vec<(String, u64)> {
        ips.iter().map(|ip| (format!("{ip}:{port}"), 1)).collect()
    };
    let limit = Duration::from_secs(10);
    assert!(
        wait_until(limit, || pool_of(admin) == want(&["127.0.0.2"])),
        "{:?}",
        pool_of(admin)
    );
    // Traffic reaches the discovered backend once its health checks pass.
    assert!(wait_until(limit, || get(lb.addr(), "/").is_ok_and(|r| r.status == 200)));

    write_hosts(
        &hosts,
        &[
            "127.0.0.2 web.lbx.test".into(),
            "127.0.0.3 web.lbx.test".into(),
        ],
    );
    dns.signal("HUP");
    assert!(
        wait_until(limit, || pool_of(admin)
            == want(&["127.0.0.2", "127.0.0.3"])),
        "{:?}",
        pool_of(admin)
    );
    assert!(wait_until(limit, || servers_seen(lb.addr(), 8) == 2));

    write_hosts(&hosts, &["127.0.0.3 web.lbx.test".into()]);
    dns.signal("HUP");
    assert!(
        wait_until(limit, || pool_of(admin) == want(&["127.0.0.3"])),
        "{:?}",
        pool_of(admin)
    );

    // The name gone altogether: the pool empties, but only once two refreshes agree.
    write_hosts(&hosts, &[]);
    dns.signal("HUP");
    assert!(
        wait_until(limit, || pool_of(admin).is_empty()),
        "{:?}",
        pool_of(admin)
    );
    let errs = lb.stderr_so_far().join("\n");
    assert!(errs.contains("empty answer, keeping the set"), "{errs}");
    drop((a, b));
}

#[test]
fn a_dead_dns_server_keeps_the_last_good_set() {
    let hosts = TempFile::new("hosts-dead");
    let a = serve(1, &["--host", "127.0.0.4"]);
    let port = a.addr().port().to_string();
    write_hosts(&hosts, &["127.0.0.4 keep.lbx.test".into()]);
    let Some((dns, server)) = dnsmasq(&hosts, &[]) else {
        return;
    };
    let (server, spec) = (server.to_string(), format!("dns://keep.lbx.test:{port}"));
    let (lb, admin) =
        balance_args_with_admin(&["-b", &spec, "--dns-server", &server, "--dns-refresh", "1s"]);
    let want = vec![(format!("127.0.0.4:{port}"), 1)];
    assert!(wait_until(Duration::from_secs(10), || pool_of(admin) == want));
    drop(dns);
    assert!(wait_until(Duration::from_secs(15), || {
        lb.stderr_so_far()
            .iter()
            .any(|l| l.contains("lookup failed, keeping the last good set"))
    }));
    assert_eq!(pool_of(admin), want);
}

#[test]
fn srv_records_give_targets_ports_and_weights() {
    let hosts = TempFile::new("hosts-srv");
    let a = serve(1, &[]);
    let b = serve(2, &[]);
    write_hosts(
        &hosts,
        &["127.0.0.1 a.lbx.test".into(), "127.0.0.1 b.lbx.test".into()],
    );
    let srv = |host: &str, port: u16, weight: u16| {
        format!("--srv-host=_http._tcp.web.lbx.test,{host},{port},0,{weight}")
    };
    let extra = [
        srv("a.lbx.test", a.addr().port(), 5),
        srv("b.lbx.test", b.addr().port(), 1),
    ];
    let Some((_dns, server)) = dnsmasq(&hosts, &extra) else {
        return;
    };
    let server = server.to_string();
    let (lb, admin) = balance_args_with_admin(&[
        "-b",
        "srv://_http._tcp.web.lbx.test",
        "--dns-server",
        &server,
        "--algorithm",
        "weighted",
        "--interval",
        "200ms",
    ]);
    let mut want = vec![(a.addr().to_string(), 5), (b.addr().to_string(), 1)];
    want.sort();
    assert!(
        wait_until(Duration::from_secs(10), || pool_of(admin) == want),
        "{:?}",
        pool_of(admin)
    );
    assert!(wait_until(Duration::from_secs(10), || servers_seen(
        lb.addr(),
        12
    ) == 2));
}

/// One backend: `lbx serve` on `ip`, and a dnsmasq answering `name` with `ip`. Returns the
/// backend's port, the DNS server and what to keep alive meanwhile; None (saying so) without
/// dnsmasq.
fn one_backend_named(name: &str, ip: &str) -> Option<(u16, SocketAddr, (Proc, Daemon, TempFile))> {
    let hosts = TempFile::new(name);
    let a = serve(1, &["--host", ip]);
    write_hosts(&hosts, &[format!("{ip} {name}")]);
    let (dns, server) = dnsmasq(&hosts, &[])?;
    Some((a.addr().port(), server, (a, dns, hosts)))
}

#[test]
fn the_config_file_names_dns_backends_and_the_dns_server() {
    let Some((port, server, _keep)) = one_backend_named("file.lbx.test", "127.0.0.5") else {
        return;
    };
    let config = TempFile::new("dns-config.toml");
    std::fs::write(
        &*config,
        format!(
            "backends = [\"dns://file.lbx.test:{port}\"]\n\
             [discovery]\ndns_server = \"{server}\"\ndns_refresh = \"1s\"\n"
        ),
    )
    .unwrap();
    let (lb, admin) = balance_args_with_admin(&["--config", config.to_str().unwrap()]);
    let want = vec![(format!("127.0.0.5:{port}"), 1)];
    assert!(
        wait_until(Duration::from_secs(10), || pool_of(admin) == want),
        "{:?}",
        pool_of(admin)
    );
    assert!(wait_until(Duration::from_secs(10), || get(lb.addr(), "/")
        .is_ok_and(|r| r.status == 200)));
}

#[test]
fn dns_h2c_backends_are_spoken_to_in_http2() {
    let Some((port, server, _keep)) = one_backend_named("h2.lbx.test", "127.0.0.6") else {
        return;
    };
    let (server, spec) = (
        server.to_string(),
        format!("dns://h2c://h2.lbx.test:{port}"),
    );
    let (lb, admin) = balance_args_with_admin(&["-b", &spec, "--dns-server", &server]);
    let want = vec![(format!("h2c://127.0.0.6:{port}"), 1)];
    assert!(
        wait_until(Duration::from_secs(10), || pool_of(admin) == want),
        "{:?}",
        pool_of(admin)
    );
    let mut echo = None;
    assert!(wait_until(Duration::from_secs(10), || {
        echo = get(lb.addr(), "/echo").ok().filter(|r| r.status == 200);
        echo.is_some()
    }));
    let v: serde_json::Value = serde_json::from_slice(&echo.unwrap().body).unwrap();
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    // https:// cannot be checked against addresses found by DNS: refused, naming the value.
    let out = run_lbx(
        &["balance", "-b", "dns://https://h2.lbx.test:443"],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("'dns://https://h2.lbx.test:443'"), "{err}");
}
