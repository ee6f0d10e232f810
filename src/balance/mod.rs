//! `lbx balance`: the load balancer. Worker threads accept and proxy; a prober thread checks
//! backends and flips their routable flags; the pool is shared lock-free.

pub mod limits;
mod outcome;
pub mod policy;
pub mod proxy;
pub mod upstream;
pub mod validate;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;

use crate::cli::BalanceArgs;
use crate::core::addr::Target;
use crate::core::client::{Dialer, TlsOptions};
use crate::core::clock;
use crate::core::health::Transition;
use crate::core::pool::Pool;
use crate::core::prober::{run_prober, HealthCheck, ProbeSpec};
use crate::core::select::Algorithm;
use crate::core::server::{self, accept_loop, ConnOptions, Workers};
use crate::term;
use limits::RateLimiter;
use policy::{Policy, RetryBudget};

/// State every worker shares: the pool, the dialer, the policy and its counters.
pub struct Shared {
    /// The backend set.
    pub pool: Arc<Pool>,
    /// How backends are dialed.
    pub dialer: Dialer,
    /// Retries, timeouts, limits.
    pub policy: Policy,
    /// Counters the policy keeps.
    pub stats: Arc<Stats>,
}

/// Policy counters, over all workers (written only when the event happens).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests re-sent to another backend after a failure.
    pub retries: AtomicU64,
    /// Backends ejected by passive health checking.
    pub ejections: AtomicU64,
    /// Requests answered 429 by the rate limit.
    pub rate_limited: AtomicU64,
}

/// A running balancer.
pub struct BalanceHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The backend pool (for the demo and the admin API).
    pub pool: Arc<Pool>,
    /// Policy counters.
    pub stats: Arc<Stats>,
    workers: Workers,
    prober: std::thread::JoinHandle<()>,
}

impl BalanceHandle {
    /// Stops accepting, waits (up to the grace period) for in-flight requests, stops probing.
    pub fn stop(self) {
        self.workers.shutdown();
        self.workers.join();
        let _ = self.prober.join();
    }
}

/// Settings for [`start`], from flags.
#[derive(Clone, Debug)]
pub struct BalanceConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Backends.
    pub backends: Vec<Target>,
    /// Health checking.
    pub health: HealthCheck,
    /// Backend connect timeout.
    pub connect_timeout: Duration,
    /// Shutdown grace period.
    pub grace: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Selection, passive health, retries, timeouts and limits.
    pub policy: Policy,
}

impl BalanceConfig {
    /// Reads the flags.
    pub fn from_args(a: &BalanceArgs) -> BalanceConfig {
        BalanceConfig {
            listen: SocketAddr::new(a.host, a.port),
            backends: a.backends.iter().map(|w| w.target.clone()).collect(),
            health: HealthCheck {
                spec: ProbeSpec::get(&a.health_path, a.timeout),
                interval: a.interval,
                rise: a.rise,
                fall: a.fall,
            },
            connect_timeout: a.connect_timeout,
            grace: a.grace,
            workers: a.workers.unwrap_or_else(server::default_workers),
            policy: Policy {
                algorithm: a.algorithm,
                hash_key: a.hash_key.clone(),
                weights: a.backends.iter().map(|w| w.weight).collect(),
                outlier: crate::core::outlier::Outlier {
                    eject_after: a.eject_after,
                    ..Default::default()
                },
                slow_start: a.slow_start,
                retries: a.retries,
                response_timeout: a.response_timeout,
                header_timeout: a.header_timeout,
                idle_timeout: a.idle_timeout,
                max_connections: a.max_connections,
                max_body: a.max_body,
                rate_limit: a.rate_limit,
            },
        }
    }
}

/// Binds, starts the workers and the prober; does not print.
pub fn start(cfg: BalanceConfig) -> anyhow::Result<BalanceHandle> {
    if !cfg.health.spec.path.starts_with('/') {
        return Err(crate::usage(format!(
            "--health-path '{}' must start with '/'",
            cfg.health.spec.path
        )));
    }
    let dialer = Dialer::new(cfg.connect_timeout, TlsOptions::default());
    if cfg.backends.iter().any(Target::is_tls) {
        dialer
            .check_tls()
            .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?;
    }
    let policy = &cfg.policy;
    let weighted = cfg
        .backends
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), policy.weights.get(i).copied().unwrap_or(1)));
    let pool = Arc::new(Pool::with_policy(
        weighted,
        policy.algorithm,
        policy.slow_start,
    ));
    let listeners = server::bind(cfg.listen, cfg.workers)?;
    let addr = listeners[0].local_addr()?;
    let stats = Arc::new(Stats::default());
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        dialer: dialer.clone(),
        policy: policy.clone(),
        stats: stats.clone(),
    });
    let worker_count = cfg.workers.max(1);
    let opts = ConnOptions {
        grace: cfg.grace,
        header_timeout: policy.header_timeout,
        idle_timeout: Some(policy.idle_timeout),
        // Each worker takes its share of the limit (rounded up), so no count crosses threads.
        max_connections: policy.max_connections.map(|m| m.div_ceil(worker_count)),
    };
    let workers = Workers::spawn("balance", listeners, move |_, listener, shutdown| {
        let worker = Rc::new(proxy::Worker {
            shared: shared.clone(),
            conns: Rc::default(),
            rng: RefCell::new(fastrand::Rng::new()),
            budget: RefCell::new(RetryBudget::new(
                worker_count,
                tokio::time::Instant::now().into_std(),
            )),
            limiter: shared
                .policy
                .rate_limit
                .map(|r| RefCell::new(RateLimiter::new(r))),
        });
        accept_loop(listener, opts.clone(), shutdown, move |addr| {
            let (worker, peer) = (worker.clone(), Rc::new(proxy::Peer::new(addr)));
            service_fn(move |req| proxy::handle(worker.clone(), peer.clone(), req))
        })
    })?;
    let (p, d, hc, stop) = (
        pool.clone(),
        dialer,
        cfg.health.clone(),
        workers.subscribe(),
    );
    let prober = std::thread::Builder::new()
        .name("lbx-prober".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(run_prober(p, d, hc, stop, |b, t, outcome| {
                let line = match t {
                    Transition::Up => format!(
                        "backend {} {} (health checks pass)",
                        b.target,
                        term::state_word(true)
                    ),
                    Transition::Down => format!(
                        "backend {} {} (health check failed: {})",
                        b.target,
                        term::state_word(false),
                        outcome.reason()
                    ),
                };
                match t {
                    Transition::Up => {
                        b.came_up(clock::now_ms());
                        term::info(&line)
                    }
                    Transition::Down => term::warn(&line),
                }
            }));
        })?;
    Ok(BalanceHandle {
        addr,
        pool,
        stats,
        workers,
        prober,
    })
}

/// Runs `lbx balance` until SIGINT/SIGTERM, then drains and exits 0.
pub fn run(args: BalanceArgs) -> anyhow::Result<ExitCode> {
    let cfg = BalanceConfig::from_args(&args);
    let handle = start(cfg.clone())?;
    term::out(&format!("listening on {}", handle.addr));
    let weighs = matches!(
        cfg.policy.algorithm,
        Algorithm::Weighted | Algorithm::LeastConn
    );
    if !weighs && cfg.policy.weights.iter().any(|&w| w != 1) {
        term::warn("backend weights (ADDR=N) only count with --algorithm weighted or least-conn");
    }
    let list: Vec<String> = cfg
        .backends
        .iter()
        .enumerate()
        .map(|(i, t)| match cfg.policy.weights.get(i) {
            Some(&w) if w != 1 => format!("{t} (weight {w})"),
            _ => t.to_string(),
        })
        .collect();
    term::out(&format!(
        "balancing over {} backend{} ({}): {}",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        cfg.policy.algorithm.name(),
        list.join(", ")
    ));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(server::wait_for_signal());
    term::info(&format!(
        "shutting down: no new connections, waiting up to {:?} for requests in flight",
        cfg.grace
    ));
    let stats = handle.stats.clone();
    handle.stop();
    term::info(&format!(
        "retried {} requests, ejected backends {} times, rate-limited {} requests",
        stats.retries.load(Relaxed),
        stats.ejections.load(Relaxed),
        stats.rate_limited.load(Relaxed)
    ));
    Ok(ExitCode::SUCCESS)
}
