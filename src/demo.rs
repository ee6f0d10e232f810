//! `lbx demo`: the showcase. Three demo backends and a balancer in one process; load through it
//! with `bench`; one backend stopped (traffic continues on the others with no errors), then
//! restarted (it rejoins after its health checks pass).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::balance::{self, BalanceConfig};
use crate::cli::{Cli, Command, DemoArgs, ServeArgs};
use crate::core::addr::Target;
use crate::core::prober::{HealthCheck, ProbeSpec};
use crate::serve::{self, ServeHandle};
use crate::term;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn serve_args(id: u32, port: u16) -> ServeArgs {
    ServeArgs {
        id,
        port: (port, port),
        host: LOOPBACK,
        delay: None,
        fail_rate: 0.0,
        workers: Some(1),
        tls_cert: None,
        tls_key: None,
        max_streams: 200,
        register: None,
        register_ttl: std::time::Duration::from_secs(10),
    }
}

fn step(n: u32, text: &str) {
    term::out("");
    term::out(&term::bold(&format!("[{n}] {text}")));
}

/// Sends a short burst through the balancer with `lbx bench` and prints its report.
fn load(lb: SocketAddr) -> anyhow::Result<()> {
    let url = format!("http://{lb}/");
    let cli = Cli::try_parse_from([
        "lbx",
        "bench",
        "-n",
        "3000",
        "-c",
        "16",
        "--no-progress",
        &url,
    ])?;
    let Command::Bench(args) = cli.command else {
        unreachable!("parsed a bench command line")
    };
    crate::bench::run(args)?;
    Ok(())
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    term::out(&term::bold(
        "lbx demo: three backends, one balancer, a failure and a recovery",
    ));
    let mut servers: Vec<Option<ServeHandle>> = Vec::new();
    for id in 1..=3 {
        servers.push(Some(serve::start(&serve_args(id, 0))?));
    }
    let addrs: Vec<SocketAddr> = servers
        .iter()
        .map(|s| s.as_ref().expect("started").servers[0].0)
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        term::out(&format!("  backend: server {} on {a}", i + 1));
    }
    let cfg = BalanceConfig {
        listen: SocketAddr::new(LOOPBACK, args.port),
        backends: addrs
            .iter()
            .map(|a| Target::parse(&a.to_string()).expect("a socket address parses"))
            .collect(),
        health: HealthCheck {
            spec: ProbeSpec::get("/healthcheck", Duration::from_secs(1)),
            interval: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        },
        connect_timeout: Duration::from_secs(3),
        grace: Duration::from_secs(5),
        workers: 2,
        policy: Default::default(),
        ops: Default::default(),
        protocols: Default::default(),
    };
    let lb = balance::start(cfg).map_err(|e| {
        if args.port != 0 {
            e.context("the demo balancer could not start (pick another port with -p, or -p 0)")
        } else {
            e
        }
    })?;
    term::out(&format!(
        "  balancer: http://{} (round robin, health checks every 500ms, rise 2, fall 3)",
        lb.addr
    ));

    step(
        1,
        "Load through the balancer: round robin spreads it evenly",
    );
    load(lb.addr)?;

    step(
        2,
        "Server 2 stops. Its requests fail over to servers 1 and 3: no client sees an error",
    );
    if let Some(s) = servers[1].take() {
        s.stop();
    }
    load(lb.addr)?;

    step(
        3,
        "Server 2 comes back on the same port and rejoins once its health checks pass",
    );
    servers[1] = Some(serve::start(&serve_args(2, addrs[1].port()))?);
    let started = Instant::now();
    let b2 = lb.pool.snapshot()[1].clone();
    while !b2.is_healthy() && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    term::out(&format!(
        "  server 2 is {} after {:.1}s",
        if b2.is_healthy() {
            term::green("back in rotation")
        } else {
            term::red("still down")
        },
        started.elapsed().as_secs_f64()
    ));
    load(lb.addr)?;

    if !args.exit {
        term::out("");
        term::out(&format!(
            "The balancer keeps serving on http://{0}. Try: curl -i http://{0}/   (Ctrl-C to stop)",
            lb.addr
        ));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::core::server::wait_for_signal());
    }
    lb.stop();
    for s in servers.into_iter().flatten() {
        s.stop();
    }
    Ok(ExitCode::SUCCESS)
}
