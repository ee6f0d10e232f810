//! `lbx balance`: the load balancer. Worker threads accept and proxy; a prober thread checks
//! backends and flips their routable flags; the pool is shared lock-free.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod discovery;
pub mod h1;
pub mod limits;
pub mod metrics;
mod outcome;
pub mod policy;
pub mod proxy;
pub mod registry;
pub mod trust;
pub mod tunnel;
pub mod upstream;
pub mod validate;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;

use crate::cli::BalanceArgs;
use crate::core::addr::Target;
use crate::core::client::{Alpn, Dialer, TlsOptions};
use crate::core::clock;
use crate::core::health::Transition;
use crate::core::pool::Pool;
use crate::core::prober::{run_prober_reloadable, HealthCheck, ProbeSpec};
use crate::core::select::Algorithm;
use crate::core::server::{self, accept_loop, ConnInfo, ConnOptions, Workers};
use crate::term;
use limits::RateLimiter;
use policy::{Policy, RetryBudget};

/// State every worker shares: the pool, the dialer, the policy and its counters.
pub struct Shared {
    /// The backend set.
    pub pool: Arc<Pool>,
    /// How backends are dialed (TLS offers h2 and http/1.1).
    pub dialer: Dialer,
    /// How backends are dialed for an upgrade (TLS offers http/1.1 only).
    pub upgrade_dialer: Dialer,
    /// Retries, timeouts, limits; swapped whole by a reload (workers keep copies, see
    /// `proxy::Worker::policy`).
    pub policy: arc_swap::ArcSwap<Policy>,
    /// Bumped after each swap of `policy`, so workers know to refresh their copies.
    pub policy_generation: AtomicU64,
    /// Counters the policy keeps.
    pub stats: Arc<Stats>,
    /// Counters and the access log the request path records into.
    pub telemetry: Arc<metrics::Telemetry>,
    /// Which upgrades are tunnelled, and for how long idle.
    pub upgrades: tunnel::Upgrades,
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
    /// Where the admin API listens, when enabled.
    pub admin_addr: Option<SocketAddr>,
    /// Where TLS is served, when certificates are given (`addr` itself without --tls-port).
    pub tls_addr: Option<SocketAddr>,
    /// Run-time changes to the backend set.
    pub registry: Arc<registry::Registry>,
    control: Option<std::thread::JoinHandle<()>>,
    discovery: Option<std::thread::JoinHandle<()>>,
}

impl BalanceHandle {
    /// Stops accepting, waits (up to the grace period) for in-flight requests, stops probing.
    pub fn stop(self) {
        self.workers.shutdown();
        self.workers.join();
        let _ = self.prober.join();
        if let Some(c) = self.control {
            let _ = c.join();
        }
        if let Some(d) = self.discovery {
            let _ = d.join();
        }
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

    /// Admin API, access log and reload settings.
    pub ops: OpsConfig,
    /// TLS termination and upgrades.
    pub protocols: ProtocolConfig,
}

/// TLS termination and upgrade settings.
#[derive(Clone, Debug, Default)]
pub struct ProtocolConfig {
    /// Certificate and key PEM files, in SNI preference order (no TLS when empty).
    pub tls: Vec<(PathBuf, PathBuf)>,
    /// A TLS listener beside the plain one; without it the main listener serves TLS.
    pub tls_port: Option<u16>,
    /// Upgrades tunnelled and their idle timeout.
    pub upgrades: tunnel::Upgrades,
    /// How https backends are verified.
    pub backend_tls: TlsOptions,
}

impl ProtocolConfig {
    /// Reads the protocol flags; certificate and key counts must match.
    pub fn from_args(a: &BalanceArgs) -> anyhow::Result<ProtocolConfig> {
        if a.tls_cert.len() != a.tls_key.len() {
            return Err(crate::usage(format!(
                "--tls-cert and --tls-key (tls.cert and tls.key) pair up in order: {} \
                 certificate(s) but {} key(s)",
                a.tls_cert.len(),
                a.tls_key.len()
            )));
        }
        if a.tls_port.is_some() && a.tls_cert.is_empty() {
            return Err(crate::usage(
                "--tls-port (tls.port) needs --tls-cert and --tls-key (tls.cert and tls.key)",
            ));
        }
        Ok(ProtocolConfig {
            tls: a
                .tls_cert
                .iter()
                .cloned()
                .zip(a.tls_key.iter().cloned())
                .collect(),
            tls_port: a.tls_port,
            upgrades: tunnel::Upgrades {
                idle_timeout: a.tunnel_timeout,
                allow: a
                    .allow_upgrade
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
            },
            backend_tls: TlsOptions {
                insecure: a.backend_insecure,
                cacert: a.backend_cacert.clone(),
            },
        })
    }

    /// Loads the certificates; an unreadable or mismatched file is a usage error naming it.
    fn server_config(&self) -> anyhow::Result<Option<server::TlsConfig>> {
        if self.tls.is_empty() {
            return Ok(None);
        }
        let config = crate::core::tls::server_config(&self.tls)
            .map_err(|e| crate::usage(format!("--tls-cert/--tls-key: {e}")))?;
        Ok(Some(Arc::new(arc_swap::ArcSwap::new(config))))
    }
}

/// Operations settings: the admin API and the access log.
#[derive(Clone, Debug, Default)]
pub struct OpsConfig {
    /// Admin API address (off when None).
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin API requires.
    pub admin_token: Option<String>,
    /// Access log destination and format (off when None).
    pub access_log: Option<access_log::AccessLogConfig>,
    /// Re-reads the config file on SIGHUP and `POST /reload` (when run with `--config`).
    pub reloader: Option<Arc<config::Reloader>>,
    /// Backends discovered from DNS and etcd.
    pub discovery: discovery::DiscoveryConfig,
}

impl OpsConfig {
    /// Reads the operations flags.
    pub fn from_args(a: &BalanceArgs) -> OpsConfig {
        OpsConfig {
            admin: a.admin,
            admin_token: a.admin_token.clone().filter(|t| !t.is_empty()),
            access_log: a.access_log.as_ref().map(|p| access_log::AccessLogConfig {
                path: (p.as_os_str() != "-").then(|| p.clone()),
                format: a.access_log_format,
            }),
            reloader: None,
            discovery: discovery::DiscoveryConfig {
                sources: a
                    .backends
                    .iter()
                    .filter_map(|b| match b {
                        discovery::BackendSpec::Discovered(s) => Some(s.clone()),
                        discovery::BackendSpec::Static(_) => None,
                    })
                    .chain(a.discover.iter().cloned())
                    .collect(),
                dns_refresh: a.dns_refresh,
                dns_server: a.dns_server,
            },
        }
    }
}

impl BalanceConfig {
    /// Reads the flags.
    pub fn from_args(a: &BalanceArgs) -> anyhow::Result<BalanceConfig> {
        Ok(BalanceConfig {
            listen: SocketAddr::new(a.host, a.port),
            backends: statics(a).map(|w| w.target.clone()).collect(),
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
                weights: statics(a).map(|w| w.weight).collect(),
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
                trusted: trust::TrustedProxies(a.trusted_proxies.clone()),
            },
            ops: OpsConfig::from_args(a),
            protocols: ProtocolConfig::from_args(a)?,
        })
    }
}

/// The fixed `-b` backends (not the DNS names).
fn statics(a: &BalanceArgs) -> impl Iterator<Item = &crate::core::addr::WeightedTarget> {
    a.backends.iter().filter_map(|b| b.as_static())
}

/// Binds, starts the workers and the prober; does not print.
pub fn start(cfg: BalanceConfig) -> anyhow::Result<BalanceHandle> {
    if !cfg.health.spec.path.starts_with('/') {
        return Err(crate::usage(format!(
            "--health-path '{}' must start with '/'",
            cfg.health.spec.path
        )));
    }
    // Backends are spoken to in their own protocol: https ones offer h2 and http/1.1 by ALPN.
    let backend_tls = &cfg.protocols.backend_tls;
    let dialer = Dialer::with_alpn(cfg.connect_timeout, backend_tls.clone(), Alpn::Any);
    if backend_tls.cacert.is_some() {
        // The error names the file.
        dialer
            .check_tls()
            .map_err(|e| crate::usage(format!("--backend-cacert {e}")))?;
    } else if cfg.backends.iter().any(Target::is_tls) {
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
    let tls = cfg.protocols.server_config()?;
    let listeners = server::bind(cfg.listen, cfg.workers)?;
    let addr = listeners[0].local_addr()?;
    // Each worker gets its plain listener and, with --tls-port, a TLS one beside it.
    let (tls_listeners, tls_addr) = match (&tls, cfg.protocols.tls_port) {
        (Some(_), Some(port)) => {
            let l = server::bind(SocketAddr::new(cfg.listen.ip(), port), cfg.workers)?;
            let a = l[0].local_addr()?;
            (l.into_iter().map(Some).collect(), Some(a))
        }
        (Some(_), None) => (Vec::new(), Some(addr)),
        (None, _) => (Vec::new(), None),
    };
    let mut tls_listeners: Vec<Option<std::net::TcpListener>> = tls_listeners;
    tls_listeners.resize_with(listeners.len(), || None);
    let per_worker: Vec<_> = listeners.into_iter().zip(tls_listeners).collect();
    let stats = Arc::new(Stats::default());
    let telemetry = Arc::new(metrics::Telemetry {
        metrics: Default::default(),
        stats: stats.clone(),
        access_log: match &cfg.ops.access_log {
            Some(c) => Some(access_log::AccessLog::start(c)?),
            None => None,
        },
    });
    let admin_listener = match cfg.ops.admin {
        Some(a) => Some(server::bind(a, 1)?.remove(0)),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        upgrade_dialer: dialer.sibling(Alpn::Http1),
        dialer: dialer.clone(),
        policy: arc_swap::ArcSwap::from_pointee(policy.clone()),
        policy_generation: AtomicU64::new(0),
        stats: stats.clone(),
        telemetry: telemetry.clone(),
        upgrades: cfg.protocols.upgrades.clone(),
    });
    let worker_count = cfg.workers.max(1);
    // One set of connection limits for every accept loop; a reload replaces it.
    let conn_settings = Arc::new(server::ConnSettings::new(conn_limits(policy, worker_count)));
    let opts = ConnOptions {
        limits: conn_settings.clone(),
        grace: cfg.grace,
        // Without --tls-port the main listener serves TLS.
        tls: tls.clone().filter(|_| tls_addr == Some(addr)),
        max_streams: None,
    };
    let reload_shared = shared.clone();
    let tls_opts = ConnOptions {
        tls: tls.clone(),
        ..opts.clone()
    };
    let workers = Workers::spawn("balance", per_worker, move |_, (plain, tls_l), shutdown| {
        // The limiter and the worker's policy copy come from one load, so they agree.
        let policy = Rc::new(Policy::clone(&shared.policy.load()));
        let worker = Rc::new(proxy::Worker {
            shared: shared.clone(),
            conns: Rc::default(),
            rng: RefCell::new(fastrand::Rng::new()),
            budget: RefCell::new(RetryBudget::new(
                worker_count,
                tokio::time::Instant::now().into_std(),
            )),
            limiter: RefCell::new(policy.rate_limit.map(RateLimiter::new)),
            policy: RefCell::new((0, policy)),
        });
        // Idle connections to backends that left the set (registry, reload, discovery), idle
        // lean connections their backends closed, half the idle HTTP/1.1 connections unused
        // since the last sweep, and HTTP/2 connections a burst opened that have gone unused,
        // are dropped by a periodic sweep of this worker's own pool.
        let (pool_sweep, sweep_conns) = (shared.pool.clone(), worker.conns.clone());
        let mut sweep_stop = shutdown.clone();
        let sweep = async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = sweep_stop.changed() => return,
                }
                let set = pool_sweep.snapshot();
                sweep_conns.retain(|id| set.iter().any(|b| b.id == id));
                sweep_conns.sweep();
            }
        };
        let make = move |info: ConnInfo| {
            let peer = Rc::new(proxy::Peer::new(info.peer).with_tls(info.tls));
            let worker = worker.clone();
            let conn = metrics::ConnGuard::new(worker.shared.telemetry.clone());
            service_fn(move |req| {
                let _open = &conn;
                proxy::handle(worker.clone(), peer.clone(), req)
            })
        };
        let plain_loop = accept_loop(plain, opts.clone(), shutdown.clone(), make.clone());
        let tls_loop = tls_l.map(|l| accept_loop(l, tls_opts.clone(), shutdown, make));
        async move {
            let sweep = tokio::task::spawn_local(sweep);
            match tls_loop {
                Some(tls_loop) => {
                    tokio::join!(plain_loop, tls_loop);
                }
                None => plain_loop.await,
            }
            sweep.abort();
        }
    })?;
    let registry = Arc::new(registry::Registry::new(pool.clone()));
    // Health check settings a reload changes reach the prober through this channel.
    let (health_tx, health_rx) = tokio::sync::watch::channel(cfg.health.clone());
    let discovering = !cfg.ops.discovery.sources.is_empty();
    // Sources remove backends too, and the control thread sweeps finished removals.
    let control = if admin_listener.is_some() || cfg.ops.reloader.is_some() || discovering {
        let reload = cfg.ops.reloader.clone().map(|r| {
            let reg = registry.clone();
            Arc::new(move || {
                // All or nothing: everything that can fail (the file, the settings, the
                // certificates) is read and checked before anything is applied.
                let prepared = r.prepare().and_then(|merged| {
                    let new =
                        BalanceConfig::from_args(&merged.args).map_err(|e| format!("{e:#}"))?;
                    // Certificate files are re-read: a renewed certificate takes effect for new
                    // connections. (Turning TLS on or off takes a restart.)
                    let certs = match &tls {
                        Some(_) if !new.protocols.tls.is_empty() => Some(
                            crate::core::tls::server_config(&new.protocols.tls)
                                .map_err(|e| format!("TLS certificates: {e}"))?,
                        ),
                        _ => None,
                    };
                    Ok((merged, new, certs))
                });
                let (merged, new, certs) = match prepared {
                    Ok(p) => p,
                    Err(e) => {
                        term::warn(&format!("reload failed, keeping the running config: {e}"));
                        return Err(e);
                    }
                };
                let summary = r.commit(&reg, &merged);
                if let (Some(t), Some(c)) = (&tls, certs) {
                    t.store(c);
                }
                reload_shared
                    .dialer
                    .set_connect_timeout(new.connect_timeout);
                conn_settings.set(conn_limits(&new.policy, worker_count));
                apply_policy(&reload_shared, new.policy);
                let hc = new.health;
                health_tx.send_if_modified(|cur| {
                    let changed = format!("{cur:?}") != format!("{hc:?}");
                    if changed {
                        *cur = hc;
                    }
                    changed
                });
                term::info(&summary);
                Ok(summary)
            }) as admin::ReloadFn
        });
        let ctx = Arc::new(admin::Admin {
            registry: registry.clone(),
            telemetry,
            token: cfg.ops.admin_token.clone(),
            reload,
        });
        Some(admin::spawn_control(
            ctx,
            admin_listener,
            workers.subscribe(),
        )?)
    } else {
        None
    };
    let discovery = discovery::spawn(
        cfg.ops.discovery.clone(),
        registry.clone(),
        workers.subscribe(),
    )?;
    let (p, d, hc, stop) = (pool.clone(), dialer, health_rx, workers.subscribe());
    let prober = std::thread::Builder::new()
        .name("lbx-prober".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(run_prober_reloadable(p, d, hc, stop, |b, t, outcome| {
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
        admin_addr,
        tls_addr,
        registry,
        control,
        discovery,
    })
}

/// The client connection limits `policy` sets for each accept loop of `workers` workers.
fn conn_limits(policy: &Policy, workers: usize) -> server::ConnLimits {
    server::ConnLimits {
        header_timeout: policy.header_timeout,
        idle_timeout: Some(policy.idle_timeout),
        // Each worker takes its share of the limit (rounded up), so no count crosses threads.
        max_connections: policy.max_connections.map(|m| m.div_ceil(workers)),
    }
}

/// Puts a reloaded policy in force for new requests: the pool's algorithm and slow start, then
/// the settings each request reads (workers pick up the new copy at their next request).
/// Weights travel with the backends, through the registry.
fn apply_policy(shared: &Shared, next: Policy) {
    let cur = shared.policy.load();
    if cur.algorithm != next.algorithm || cur.slow_start != next.slow_start {
        shared.pool.set_policy(next.algorithm, next.slow_start);
    }
    shared.policy.store(Arc::new(next));
    shared
        .policy_generation
        .fetch_add(1, std::sync::atomic::Ordering::Release);
}

/// Runs `lbx balance` until SIGINT/SIGTERM, then drains and exits 0.
pub fn run(args: BalanceArgs) -> anyhow::Result<ExitCode> {
    let (args, weights, reloader) = match args.config.clone() {
        Some(path) => {
            let (merged, reloader) = config::load(args, &path)?;
            (merged.args, Some(merged.backends), Some(Arc::new(reloader)))
        }
        None => (args, None, None),
    };
    crate::logging::init(args.log_level.as_deref());
    let mut cfg = BalanceConfig::from_args(&args)?;
    cfg.ops.reloader = reloader;
    let handle = start(cfg.clone())?;
    // Handlers first: a test or a supervisor may signal as soon as it reads "listening".
    let signals_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut signals = {
        let _rt = signals_rt.enter();
        server::Signals::install()?
    };
    if let Some(w) = weights {
        handle.registry.apply_config(&w);
    }
    term::out(&format!("listening on {}", handle.addr));
    if let Some(a) = handle.admin_addr {
        term::out(&format!("admin listening on {a}"));
    }
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
    if !list.is_empty() || cfg.ops.discovery.sources.is_empty() {
        term::out(&format!(
            "balancing over {} backend{} ({}): {}",
            list.len(),
            if list.len() == 1 { "" } else { "s" },
            cfg.policy.algorithm.name(),
            list.join(", ")
        ));
    } else {
        term::out(&format!(
            "balancing over discovered backends ({})",
            cfg.policy.algorithm.name()
        ));
    }
    for s in &cfg.ops.discovery.sources {
        term::out(&format!("discovering backends from {s}"));
    }
    if let Some(a) = handle.tls_addr {
        term::out(&format!("tls listening on {a}"));
    }
    signals_rt.block_on(signals.recv());
    term::info(&format!(
        "shutting down: no new connections, waiting up to {:?} for requests in flight",
        cfg.grace
    ));
    let stats = handle.stats.clone();
    handle.stop();
    term::info(&format!(
        "{} retries, ejected backends {} times, rate-limited {} requests",
        stats.retries.load(Relaxed),
        stats.ejections.load(Relaxed),
        stats.rate_limited.load(Relaxed)
    ));
    Ok(ExitCode::SUCCESS)
}
