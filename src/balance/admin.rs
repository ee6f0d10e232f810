//! The admin API on its own listener and thread: the backend registry (list, register, drain,
//! enable, graceful delete), Prometheus metrics, the balancer's own health and config reload.
//! The same thread sweeps finished removals and reloads on SIGHUP. Nothing here is on the
//! request path: changes reach the workers as a new backend set swapped into the pool.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::metrics::{self, Telemetry};
use super::registry::{Registry, RegistryError};
use crate::core::addr::Target;
use crate::core::backend::Backend;
use crate::core::server::{accept_loop, ConnOptions, RequestBody};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// How often finished removals are swept out of the pool.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// Re-reads the config file and applies it; Ok carries a summary, Err why nothing changed.
pub type ReloadFn = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What the admin API works on.
pub struct Admin {
    /// Backend set changes.
    pub registry: Arc<Registry>,
    /// Counters for `/metrics`.
    pub telemetry: Arc<Telemetry>,
    /// Required bearer token, when set.
    pub token: Option<String>,
    /// Config reload, when lbx runs from a config file.
    pub reload: Option<ReloadFn>,
}

/// One backend as `GET /backends` shows it.
pub fn backend_json(b: &Backend) -> Value {
    let o = &b.ops;
    let ewma = o.latency_ewma_us.load(Relaxed);
    let probe_ms = o.last_probe_unix_ms.load(Relaxed);
    let last_probe = match o.last_probe.load(Relaxed) {
        0 => Value::Null,
        r => json!({
            "healthy": r == 1,
            "status": match o.last_probe_status.load(Relaxed) { 0 => Value::Null, s => json!(s) },
            "time": crate::term::format_unix(probe_ms / 1000, (probe_ms % 1000) as u32),
        }),
    };
    json!({
        "address": b.target.to_string(),
        "weight": b.weight(),
        "state": metrics::state(b),
        "removing": o.removing.load(Relaxed),
        "in_flight": b.in_flight.load(Relaxed),
        "requests": b.requests.load(Relaxed),
        "errors": b.errors.load(Relaxed),
        "latency_ewma_ms": if ewma == 0 { Value::Null } else { json!(ewma as f64 / 1000.0) },
        "last_probe": last_probe,
    })
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    text.push('\n');
    reply(status, "application/json", text)
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_reply(status, &json!({ "error": msg }))
}

fn registry_error(e: &RegistryError) -> Response<Full<Bytes>> {
    let status = match e {
        RegistryError::BadRequest(_) => StatusCode::BAD_REQUEST,
        RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
        RegistryError::Conflict(_) => StatusCode::CONFLICT,
    };
    error(status, &e.to_string())
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same_token(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn authorized(token: Option<&str>, req: &Request<RequestBody>) -> bool {
    let Some(want) = token else { return true };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same_token(given, want.as_bytes()))
}

/// Decodes `%XX` escapes (so `[::1]:9001` can be written `%5B::1%5D:9001`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An address from a path, plain (`h2c://127.0.0.1:9001`) or escaped; with whether it named its
/// scheme.
fn parse_address(raw: &str) -> Result<(Target, bool), RegistryError> {
    let s = percent_decode(raw)
        .ok_or_else(|| RegistryError::BadRequest(format!("bad escape in '{raw}'")))?;
    let t = Target::parse(&s).map_err(RegistryError::BadRequest)?;
    Ok((t, s.contains("://")))
}

/// The backend an address in a path means. Without a scheme it may be any protocol's, as long
/// as only one backend has that host and port (`127.0.0.1:9001` finds `h2c://127.0.0.1:9001`).
/// A backend it does not name is left to the registry to report (404).
fn resolve(registry: &Registry, raw: &str) -> Result<Target, RegistryError> {
    let (t, with_scheme) = parse_address(raw)?;
    if with_scheme || registry.find(&t).is_some() {
        return Ok(t);
    }
    let same: Vec<Target> = registry
        .pool()
        .snapshot()
        .iter()
        .filter(|b| !b.ops.removing.load(Relaxed))
        .map(|b| &b.target)
        .filter(|b| b.port == t.port && b.host.eq_ignore_ascii_case(&t.host))
        .cloned()
        .collect();
    match same.as_slice() {
        [one] => Ok(one.clone()),
        [] => Ok(t),
        many => {
            let names: Vec<String> = many.iter().map(Target::to_string).collect();
            Err(RegistryError::BadRequest(format!(
                "'{raw}' could be any of {}: give the scheme",
                names.join(", ")
            )))
        }
    }
}

/// Where an admin request goes, by its path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `/backends`.
    Backends,
    /// `/backends/{address}`.
    Backend(&'a str),
    /// `/backends/{address}/drain` (true) or `/enable` (false).
    Drain(&'a str, bool),
    Healthz,
    Metrics,
    Reload,
    Unknown,
}

/// Routes a path. The address is all that follows `/backends/`, up to a trailing `/drain` or
/// `/enable`, so it may be written with its scheme (`/backends/h2c://127.0.0.1:9001/drain`).
fn route(path: &str) -> Route<'_> {
    let p = path.trim_matches('/');
    if let Some(rest) = p.strip_prefix("backends/").filter(|r| !r.is_empty()) {
        for (action, on) in [("/drain", true), ("/enable", false)] {
            if let Some(addr) = rest.strip_suffix(action).filter(|a| !a.is_empty()) {
                return Route::Drain(addr, on);
            }
        }
        return Route::Backend(rest);
    }
    match p {
        "backends" => Route::Backends,
        "healthz" => Route::Healthz,
        "metrics" => Route::Metrics,
        "reload" => Route::Reload,
        _ => Route::Unknown,
    }
}

/// Body of `POST /backends`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

async fn register(ctx: &Admin, body: RequestBody) -> Response<Full<Bytes>> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            )
        }
    };
    let reg: Register = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("bad JSON: {e} (expected {{\"address\": \":9004\", \"weight\": 1}})");
            return error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let target = match Target::parse(&reg.address) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match ctx.registry.add(target, reg.weight) {
        Ok(b) => {
            crate::term::info(&format!("backend {} registered (admin API)", b.target));
            json_reply(StatusCode::CREATED, &backend_json(&b))
        }
        Err(e) => registry_error(&e),
    }
}

/// Serves one admin request.
pub async fn handle(
    ctx: Arc<Admin>,
    req: Request<RequestBody>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !authorized(ctx.token.as_deref(), &req) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let m = &parts.method;
    let registry = &ctx.registry;
    let pool = registry.pool();
    let resp = match (m, route(&path)) {
        (&Method::GET, Route::Backends) => {
            let list: Vec<Value> = pool.snapshot().iter().map(|b| backend_json(b)).collect();
            json_reply(StatusCode::OK, &Value::Array(list))
        }
        (&Method::POST, Route::Backends) => register(&ctx, body).await,
        (&Method::GET, Route::Backend(addr)) => match resolve(registry, addr) {
            Ok(t) => match registry.find(&t) {
                Some(b) => json_reply(StatusCode::OK, &backend_json(&b)),
                None => error(StatusCode::NOT_FOUND, &format!("no backend {t}")),
            },
            Err(e) => registry_error(&e),
        },
        (&Method::DELETE, Route::Backend(addr)) => {
            match resolve(registry, addr).and_then(|t| registry.remove(&t)) {
                Ok(b) => {
                    crate::term::info(&format!(
                        "backend {} draining, removed once its {} request(s) in flight finish",
                        b.target,
                        b.in_flight.load(Relaxed)
                    ));
                    json_reply(StatusCode::ACCEPTED, &backend_json(&b))
                }
                Err(e) => registry_error(&e),
            }
        }
        (&Method::POST, Route::Drain(addr, on)) => {
            match resolve(registry, addr).and_then(|t| registry.set_draining(&t, on)) {
                Ok(b) => {
                    crate::term::info(&format!(
                        "backend {} {}",
                        b.target,
                        if on {
                            "draining (admin API)"
                        } else {
                            "enabled (admin API)"
                        }
                    ));
                    json_reply(StatusCode::OK, &backend_json(&b))
                }
                Err(e) => registry_error(&e),
            }
        }
        (&Method::GET, Route::Healthz) => {
            let n = pool.healthy_count();
            let status = if n > 0 {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_reply(status, &json!({ "healthy": n > 0, "routable_backends": n }))
        }
        (&Method::GET, Route::Metrics) => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(&ctx.telemetry, pool),
        ),
        (&Method::POST, Route::Reload) => match &ctx.reload {
            None => error(
                StatusCode::CONFLICT,
                "lbx was not started with --config: nothing to reload",
            ),
            Some(f) => match f() {
                Ok(summary) => json_reply(
                    StatusCode::OK,
                    &json!({ "reloaded": true, "summary": summary }),
                ),
                Err(e) => error(StatusCode::BAD_REQUEST, &e),
            },
        },
        (_, Route::Unknown) => error(StatusCode::NOT_FOUND, &format!("no admin endpoint {path}")),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{m} is not allowed on {path}"),
        ),
    };
    tracing::debug!(method = %m, path = %path, status = resp.status().as_u16(), "admin request");
    Ok(resp)
}

/// The control thread: the admin listener (when `--admin` is given), the removal sweeper and
/// SIGHUP reloads (when running from a config file). Ends at shutdown.
pub fn spawn_control(
    ctx: Arc<Admin>,
    listener: Option<std::net::TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The handler is installed before start() returns, so a SIGHUP sent right after the
    // `listening on` line reloads instead of killing the process.
    #[cfg(unix)]
    let mut hangup = match ctx.reload {
        Some(_) => {
            let _guard = rt.enter();
            Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            )?)
        }
        None => None,
    };
    let thread = std::thread::Builder::new()
        .name("lbx-admin".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let sweeper_ctx = ctx.clone();
                let mut stop = shutdown.clone();
                tokio::task::spawn_local(async move {
                    let mut tick = tokio::time::interval(SWEEP_EVERY);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => { sweeper_ctx.registry.sweep(); }
                            _ = stop.changed() => return,
                        }
                    }
                });
                #[cfg(unix)]
                if let (Some(mut hup), Some(reload)) = (hangup.take(), ctx.reload.clone()) {
                    let mut stop = shutdown.clone();
                    tokio::task::spawn_local(async move {
                        loop {
                            tokio::select! {
                                _ = hup.recv() => {
                                    // The reload function logs its outcome, failures included.
                                    let _ = reload();
                                }
                                _ = stop.changed() => return,
                            }
                        }
                    });
                }
                match listener {
                    Some(l) => {
                        let opts = ConnOptions {
                            grace: Duration::from_secs(1),
                            ..ConnOptions::default()
                        };
                        accept_loop(l, opts, shutdown, move |_| {
                            let ctx = ctx.clone();
                            service_fn(move |req| handle(ctx.clone(), req))
                        })
                        .await;
                    }
                    None => {
                        let _ = shutdown.changed().await;
                    }
                }
            });
        })?;
    Ok(thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"secret", b"secret"));
        assert!(!same_token(b"secre", b"secret"));
        assert!(!same_token(b"secreT", b"secret"));
    }

    #[test]
    fn addresses_may_be_escaped() {
        assert_eq!(parse_address("%5B::1%5D:9001").unwrap().0.port, 9001);
        assert_eq!(
            parse_address(":9001").unwrap().0.to_string(),
            "127.0.0.1:9001"
        );
        assert!(parse_address("h2c%3A%2F%2F127.0.0.1%3A9001").unwrap().1);
        assert!(!parse_address("127.0.0.1:9001").unwrap().1);
        assert!(parse_address("%zz").is_err());
        assert!(parse_address(":0").is_err());
    }

    #[test]
    fn addresses_in_paths_may_hold_their_scheme() {
        assert_eq!(route("/backends"), Route::Backends);
        assert_eq!(route("/backends/"), Route::Backends);
        assert_eq!(route("/backends/:9001"), Route::Backend(":9001"));
        assert_eq!(
            route("/backends/h2c://127.0.0.1:9001"),
            Route::Backend("h2c://127.0.0.1:9001")
        );
        assert_eq!(
            route("/backends/h2c://127.0.0.1:9001/drain"),
            Route::Drain("h2c://127.0.0.1:9001", true)
        );
        assert_eq!(
            route("/backends/https://api.internal:443/enable/"),
            Route::Drain("https://api.internal:443", false)
        );
        assert_eq!(route("/backends/drain"), Route::Backend("drain"));
        assert_eq!(route("/healthz/"), Route::Healthz);
        assert_eq!(route("/nothing"), Route::Unknown);
    }
}
