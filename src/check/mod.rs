//! `lbx check`: probe targets from scripts. Every target is probed at once with the shared
//! prober; the result is a table, JSON, a watch stream of state changes, or a wait for health.
//!
//! Layout: `expect` decides what counts as healthy, `cert` reads the peer certificate, `report`
//! renders rows, `watch` runs the repeating modes (`--watch`, `--wait-healthy`).

pub mod admin;
pub mod cert;
pub mod expect;
pub mod report;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use http::HeaderMap;

use crate::cli::CheckArgs;
use crate::core::addr::Target;
use crate::core::client::{Alpn, Dialer, TlsOptions};
use crate::core::prober::{probe, ProbeSpec};
use expect::Expect;
use report::Row;

/// Per-probe timeout when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Total wait for `--wait-healthy` when `--timeout` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Time between rounds of `--wait-healthy`.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Everything one round of probes needs, checked and built once from the flags.
struct Plan {
    targets: Vec<Target>,
    dialer: Dialer,
    spec: ProbeSpec,
    expect: Expect,
    warn_days: u32,
    json: bool,
}

/// The dialer for probes and for `--admin`: the connect timeout bounded by the probe timeout
/// (both above zero, as their flags require), and the TLS settings checked up front (a bad
/// `--cacert` is a usage error).
fn dialer(args: &CheckArgs, probe_timeout: Duration) -> anyhow::Result<Dialer> {
    let connect_timeout = args
        .connect_timeout
        .map_or(probe_timeout, |c| c.min(probe_timeout));
    // Targets are probed in their own protocol: https ones offer h2 and http/1.1 by ALPN.
    let dialer = Dialer::with_alpn(
        connect_timeout,
        TlsOptions {
            insecure: args.insecure,
            cacert: args.cacert.clone(),
        },
        Alpn::Any,
    );
    let tls = args.targets.iter().chain(&args.admin).any(Target::is_tls);
    if args.cacert.is_some() || tls {
        dialer
            .check_tls()
            .map_err(|e| crate::usage(format!("--cacert {e}")))?;
    }
    Ok(dialer)
}

impl Plan {
    fn new(args: &CheckArgs, probe_timeout: Duration) -> anyhow::Result<Plan> {
        let dialer = dialer(args, probe_timeout)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &args.headers {
            headers.append(name.clone(), value.clone());
        }
        let spec = ProbeSpec {
            method: args.method.clone(),
            headers,
            ..ProbeSpec::get(&args.path, probe_timeout)
        };
        Ok(Plan {
            targets: args.targets.clone(),
            dialer,
            spec,
            expect: Expect {
                status: args.expect_status.clone(),
                body: args.expect_body.clone(),
                body_regex: args.expect_body_regex.clone(),
            },
            warn_days: args.cert_warn_days,
            json: args.json,
        })
    }

    /// Probes every target at once, each within `timeout`; rows come back in target order.
    async fn round(&self, timeout: Duration) -> Vec<Row> {
        let spec = std::sync::Arc::new(ProbeSpec {
            timeout,
            ..self.spec.clone()
        });
        let handles: Vec<_> = self
            .targets
            .iter()
            .map(|t| {
                let (dialer, target, spec) = (self.dialer.clone(), t.clone(), spec.clone());
                tokio::spawn(async move { probe(&dialer, &target, &spec).await })
            })
            .collect();
        let mut rows = Vec::with_capacity(handles.len());
        for (target, h) in self.targets.iter().zip(handles) {
            let outcome = match h.await {
                Ok(o) => o,
                // A probe task cannot panic on input; if one ever does, report it, don't abort.
                Err(e) => failed_outcome(format!("probe task failed: {e}")),
            };
            rows.push(Row::new(target.clone(), &spec.path, outcome, &self.expect));
        }
        rows
    }

    /// Prints one round as a JSON array or a table.
    fn print_rows(&self, rows: &[Row]) {
        if self.json {
            let arr: Vec<_> = rows.iter().map(|r| r.to_json(self.warn_days)).collect();
            let text = serde_json::to_string_pretty(&arr).unwrap_or_else(|_| "[]".into());
            crate::term::out(&text);
        } else {
            let tty = crate::term::stdout_is_tty();
            for line in report::table(rows, self.warn_days, tty) {
                crate::term::out(&line);
            }
            if tty && rows.len() > 1 {
                let up = rows.iter().filter(|r| r.healthy()).count();
                crate::term::out(&crate::term::bold(&format!(
                    "{up} of {} healthy",
                    rows.len()
                )));
            }
        }
    }
}

fn failed_outcome(detail: String) -> crate::core::prober::ProbeOutcome {
    crate::core::prober::ProbeOutcome {
        error: Some((crate::core::client::ErrorKind::Protocol, detail)),
        ..Default::default()
    }
}

/// Flag parser for `--watch`: a duration above 0. The flag's value is optional, so a target
/// written right after it lands here: the error says how to fix that.
pub fn parse_watch_interval(s: &str) -> Result<Duration, String> {
    match crate::core::units::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the watch interval must be above 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{e}; put targets before --watch, or write --watch=INTERVAL"
        )),
    }
}

fn exit_code(all_healthy: bool) -> ExitCode {
    if all_healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs `lbx check`: one round (default), `--watch` until Ctrl-C, `--wait-healthy`, or the
/// pool of a running balancer with `--admin`.
/// Exit status: 0 all healthy, 1 any unhealthy or unreachable; usage errors are returned as
/// [`crate::UsageError`] (exit 2).
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if let Some(target) = &args.admin {
        let timeout = args.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let dialer = dialer(&args, timeout)?;
        let token = args.admin_token.as_deref().filter(|t| !t.is_empty());
        return admin::run(&dialer, target, token, timeout, args.json);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.wait_healthy {
        // `--wait-healthy --timeout 30s`: the timeout bounds the whole wait; each probe gets at
        // most the default per-probe timeout of what is left.
        let total = args.timeout.unwrap_or(DEFAULT_WAIT);
        let plan = Plan::new(&args, total.min(DEFAULT_TIMEOUT))?;
        let done = watch::wait_healthy(&plan, args.rise, args.fall, total, WAIT_POLL);
        return Ok(exit_code(rt.block_on(done)));
    }
    let plan = Plan::new(&args, args.timeout.unwrap_or(DEFAULT_TIMEOUT))?;
    if let Some(interval) = args.watch {
        let done = watch::watch(&plan, args.rise, args.fall, interval);
        return Ok(exit_code(rt.block_on(done)));
    }
    let rows = rt.block_on(plan.round(plan.spec.timeout));
    plan.print_rows(&rows);
    Ok(exit_code(rows.iter().all(Row::healthy)))
}
