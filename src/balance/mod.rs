//! `lbx balance`: the load balancer. Worker threads accept and proxy; a prober thread checks
//! backends and flips their routable flags; the pool is shared lock-free.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod upstream;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;

use crate::cli::BalanceArgs;
use crate::core::addr::Target;
use crate::core::client::{Dialer, TlsOptions};
use crate::core::health::Transition;
use crate::core::pool::Pool;
use crate::core::prober::{run_prober_reloadable, HealthCheck, ProbeSpec};
use crate::core::server::{self, accept_loop, ConnOptions, Workers};
use crate::term;

/// State every worker shares: the pool and the dialer.
pub struct Shared {
    /// The backend set.
    pub pool: Arc<Pool>,
    /// How backends are dialed.
    pub dialer: Dialer,
    /// Counters and the access log the request path records into.
    pub telemetry: Arc<metrics::Telemetry>,
}

/// A running balancer.
pub struct BalanceHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The backend pool (for the demo and the admin API).
    pub pool: Arc<Pool>,
    workers: Workers,
    prober: std::thread::JoinHandle<()>,
    /// Where the admin API listens, when enabled.
    pub admin_addr: Option<SocketAddr>,
    /// Run-time changes to the backend set.
    pub registry: Arc<registry::Registry>,
    control: Option<std::thread::JoinHandle<()>>,
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
    /// Admin API, access log and reload settings.
    pub ops: OpsConfig,
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
        }
    }
}

impl BalanceConfig {
    /// Reads the flags.
    pub fn from_args(a: &BalanceArgs) -> BalanceConfig {
        BalanceConfig {
            listen: SocketAddr::new(a.host, a.port),
            backends: a.backends.clone(),
            health: HealthCheck {
                spec: ProbeSpec::get(&a.health_path, a.timeout),
                interval: a.interval,
                rise: a.rise,
                fall: a.fall,
            },
            connect_timeout: a.connect_timeout,
            grace: a.grace,
            workers: a.workers.unwrap_or_else(server::default_workers),
            ops: OpsConfig::from_args(a),
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
    let pool = Arc::new(Pool::new(cfg.backends.iter().cloned()));
    let listeners = server::bind(cfg.listen, cfg.workers)?;
    let addr = listeners[0].local_addr()?;
    let telemetry = Arc::new(metrics::Telemetry {
        metrics: Default::default(),
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
        dialer: dialer.clone(),
        telemetry: telemetry.clone(),
    });
    let opts = ConnOptions {
        grace: cfg.grace,
        ..ConnOptions::default()
    };
    let workers = Workers::spawn("balance", listeners, move |_, listener, shutdown| {
        let worker = Rc::new(proxy::Worker {
            shared: shared.clone(),
            conns: Rc::default(),
        });
        accept_loop(listener, opts.clone(), shutdown, move |addr| {
            let (worker, peer) = (worker.clone(), Rc::new(proxy::Peer::new(addr)));
            let conn = metrics::ConnGuard::new(worker.shared.telemetry.clone());
            service_fn(move |req| {
                let _open = &conn;
                proxy::handle(worker.clone(), peer.clone(), req)
            })
        })
    })?;
    let registry = Arc::new(registry::Registry::new(pool.clone()));
    // Health check settings a reload changes reach the prober through this channel.
    let (health_tx, health_rx) = tokio::sync::watch::channel(cfg.health.clone());
    let control = if admin_listener.is_some() || cfg.ops.reloader.is_some() {
        let reload = cfg.ops.reloader.clone().map(|r| {
            let reg = registry.clone();
            Arc::new(move || {
                let (summary, args) = r.reload(&reg)?;
                let hc = BalanceConfig::from_args(&args).health;
                health_tx.send_if_modified(|cur| {
                    let changed = format!("{cur:?}") != format!("{hc:?}");
                    if changed {
                        *cur = hc;
                    }
                    changed
                });
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
                    Transition::Up => term::info(&line),
                    Transition::Down => term::warn(&line),
                }
            }));
        })?;
    Ok(BalanceHandle {
        addr,
        pool,
        workers,
        prober,
        admin_addr,
        registry,
        control,
    })
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
    let mut cfg = BalanceConfig::from_args(&args);
    cfg.ops.reloader = reloader;
    let handle = start(cfg.clone())?;
    if let Some(w) = weights {
        handle.registry.apply_config(&w);
    }
    term::out(&format!("listening on {}", handle.addr));
    if let Some(a) = handle.admin_addr {
        term::out(&format!("admin listening on {a}"));
    }
    let list: Vec<String> = cfg.backends.iter().map(|t| t.to_string()).collect();
    term::out(&format!(
        "balancing over {} backend{} (round robin): {}",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
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
    handle.stop();
    Ok(ExitCode::SUCCESS)
}
