//! Request accounting: balancer-wide counters, the body wrapper that records each exchange when
//! its response ends (status class, latency, bytes, access log line), and the Prometheus text
//! rendering of all of it. Everything is atomics; nothing here takes a lock per request.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, Uri};
use hyper::body::{Body, Frame, SizeHint};

use super::access_log::{AccessLog, Entry, X_REQUEST_ID};
use super::Stats;
use crate::core::backend::{status_class, Backend, LATENCY_BUCKETS};
use crate::core::pool::Pool;
use crate::core::server::{Lines, WithLines};

/// Balancer-wide counters.
#[derive(Default)]
pub struct Metrics {
    /// Responses sent to clients, by status class (index 0 is 1xx … 4 is 5xx).
    pub responses: [AtomicU64; 5],
    /// Client connections open now.
    pub client_connections: AtomicU64,
    /// Client connections accepted since start.
    pub client_connections_total: AtomicU64,
}

/// What the request path records into: counters and the optional access log.
#[derive(Default)]
pub struct Telemetry {
    /// Counters.
    pub metrics: Metrics,
    /// The policy counters (the balancer's own `Stats`): an exchange adds its retries there,
    /// the one count `lbx_retries_total` and the shutdown summary both show.
    pub stats: Arc<Stats>,
    /// The access log, when `--access-log` is on.
    pub access_log: Option<AccessLog>,
}

/// The last backend a request reached, after how many attempts, and whether it answered;
/// `proxy::forward` (or the tunnel) hands it to [`Arrival::finish`] for [`Metered`] to record.
pub struct Served {
    /// The backend the last attempt reached.
    pub backend: Arc<Backend>,
    /// Attempts that reached a backend, the last included; each after the first is a retry.
    pub attempts: u32,
    /// The client got that backend's response (not the balancer's own 502 or 504).
    pub answered: bool,
}

/// Counts an open client connection until dropped (one per connection's service).
pub struct ConnGuard(Arc<Telemetry>);

impl ConnGuard {
    /// Counts a newly accepted connection.
    pub fn new(t: Arc<Telemetry>) -> ConnGuard {
        t.metrics.client_connections.fetch_add(1, Relaxed);
        t.metrics.client_connections_total.fetch_add(1, Relaxed);
        ConnGuard(t)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.metrics.client_connections.fetch_sub(1, Relaxed);
    }
}

/// A request as it arrived, kept until its response ends.
pub struct Arrival {
    start: Instant,
    time: String,
    client: SocketAddr,
    method: Method,
    uri: Uri,
    request_id: HeaderValue,
}

impl Arrival {
    /// Notes a request's arrival; the time string is made only when an access log is on.
    pub fn new(
        t: &Telemetry,
        client: SocketAddr,
        req: &http::request::Parts,
        id: HeaderValue,
    ) -> Self {
        Arrival {
            start: Instant::now(),
            time: if t.access_log.is_some() {
                crate::term::timestamp()
            } else {
                String::new()
            },
            client,
            method: req.method.clone(),
            uri: req.uri.clone(),
            request_id: id,
        }
    }

    /// Stamps the response with the request id and wraps its body so the exchange is recorded
    /// when the body ends (or is dropped). `lines`: the response's fields as the backend wrote
    /// them, which go out with the body (see [`Lines`]).
    pub fn finish<B>(
        self,
        t: Arc<Telemetry>,
        resp: Response<B>,
        served: Option<Served>,
        lines: Option<Lines>,
    ) -> Response<Metered<B>> {
        let (mut parts, body) = resp.into_parts();
        parts.headers.insert(&X_REQUEST_ID, self.request_id.clone());
        let status = parts.status.as_u16();
        Response::from_parts(
            parts,
            Metered {
                inner: body,
                lines,
                bytes: 0,
                pending: Some(Exchange {
                    tel: t,
                    arrival: self,
                    status,
                    served,
                }),
            },
        )
    }
}

struct Exchange {
    tel: Arc<Telemetry>,
    arrival: Arrival,
    status: u16,
    served: Option<Served>,
}

impl Exchange {
    fn record(self, bytes: u64) {
        let elapsed = self.arrival.start.elapsed();
        let m = &self.tel.metrics;
        if let Some(c) = status_class(self.status) {
            m.responses[c].fetch_add(1, Relaxed);
        }
        if let Some(s) = &self.served {
            if s.answered {
                s.backend.ops.record_response(self.status, elapsed);
            }
            if s.attempts > 1 {
                let retries = &self.tel.stats.retries;
                retries.fetch_add(u64::from(s.attempts - 1), Relaxed);
            }
        }
        if let Some(log) = &self.tel.access_log {
            let a = &self.arrival;
            log.log(&Entry {
                time: &a.time,
                client: a.client,
                method: a.method.as_str(),
                path: a.uri.path_and_query().map_or("/", |p| p.as_str()),
                status: self.status,
                bytes,
                duration: elapsed,
                backend: self.served.as_ref().map(|s| s.backend.target.to_string()),
                attempts: self.served.as_ref().map_or(0, |s| s.attempts),
                request_id: a.request_id.to_str().unwrap_or("-"),
            });
        }
    }
}

/// A response body that records its exchange once: at its end, or when dropped early (a client
/// that went away is still a request served).
pub struct Metered<B> {
    inner: B,
    lines: Option<Lines>,
    bytes: u64,
    pending: Option<Exchange>,
}

impl<B> Metered<B> {
    fn done(&mut self) {
        if let Some(x) = self.pending.take() {
            x.record(self.bytes);
        }
    }
}

impl<B> WithLines for Metered<B> {
    fn lines(&self) -> Option<&Lines> {
        self.lines.as_ref()
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.done(),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        self.done();
    }
}

/// The state word the admin API and metrics use for a backend.
pub fn state(b: &Backend) -> &'static str {
    if b.ops.draining.load(Relaxed) {
        "draining"
    } else if !b.is_healthy() {
        "unhealthy"
    } else if b.is_ejected_at(crate::core::clock::now_ms()) {
        "ejected"
    } else {
        "healthy"
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Prometheus text being written: a family header, then its samples.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}

type PerBackend = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Backend) -> u64,
);

/// The single-value families with one sample per backend.
const PER_BACKEND: [PerBackend; 7] = [
    (
        "lbx_backend_requests_total",
        "counter",
        "Requests sent to the backend.",
        |b| b.requests.load(Relaxed),
    ),
    (
        "lbx_backend_errors_total",
        "counter",
        "Requests that failed at the backend.",
        |b| b.errors.load(Relaxed),
    ),
    (
        "lbx_backend_in_flight",
        "gauge",
        "Requests in progress at the backend.",
        |b| b.in_flight.load(Relaxed),
    ),
    (
        "lbx_backend_up",
        "gauge",
        "1 when health checks pass, else 0.",
        |b| u64::from(b.is_healthy()),
    ),
    (
        "lbx_backend_draining",
        "gauge",
        "1 when draining (no new requests).",
        |b| u64::from(b.ops.draining.load(Relaxed)),
    ),
    (
        "lbx_backend_down_total",
        "counter",
        "Times it went down (failed health checks or a failed connect).",
        |b| b.ops.downs.load(Relaxed),
    ),
    (
        "lbx_backend_ejections_total",
        "counter",
        "Times passive health checking (outlier detection) ejected it.",
        |b| b.ejections.load(Relaxed),
    ),
];

/// Everything as Prometheus text exposition format (version 0.0.4).
pub fn render(t: &Telemetry, pool: &Pool) -> String {
    let set = pool.snapshot();
    let m = &t.metrics;
    let mut o = Exposition(String::with_capacity(4096 + set.len() * 2048));
    o.family(
        "lbx_requests_total",
        "counter",
        "Responses sent to clients, by status class.",
    );
    for (i, c) in CLASSES.iter().enumerate() {
        o.sample(
            "lbx_requests_total",
            &format!("class=\"{c}\""),
            m.responses[i].load(Relaxed),
        );
    }
    let mut scalars = vec![
        (
            "lbx_retries_total",
            "counter",
            "Attempts at backends beyond a request's first, whether it then succeeded or not.",
            t.stats.retries.load(Relaxed),
        ),
        (
            "lbx_client_connections",
            "gauge",
            "Client connections open now.",
            m.client_connections.load(Relaxed),
        ),
        (
            "lbx_client_connections_parked",
            "gauge",
            "Idle HTTP/1 client connections parked now (holding no HTTP state or buffers).",
            crate::core::server::parked_connections(),
        ),
        (
            "lbx_client_connections_total",
            "counter",
            "Client connections accepted.",
            m.client_connections_total.load(Relaxed),
        ),
        (
            "lbx_backends_routable",
            "gauge",
            "Backends that may take new requests.",
            pool.healthy_count() as u64,
        ),
    ];
    if let Some(log) = &t.access_log {
        scalars.push((
            "lbx_access_log_dropped_total",
            "counter",
            "Access log lines dropped.",
            log.dropped.load(Relaxed),
        ));
    }
    for (name, kind, help, v) in scalars {
        o.family(name, kind, help);
        o.sample(name, "", v);
    }
    let labels: Vec<String> = set
        .iter()
        .map(|b| format!("backend=\"{}\"", b.target.to_string().replace('"', "'")))
        .collect();
    for (name, kind, help, value) in PER_BACKEND {
        o.family(name, kind, help);
        for (b, l) in set.iter().zip(&labels) {
            o.sample(name, l, value(b));
        }
    }
    let name = "lbx_backend_responses_total";
    o.family(name, "counter", "Backend responses by status class.");
    for (b, l) in set.iter().zip(&labels) {
        for (i, c) in CLASSES.iter().enumerate() {
            o.sample(
                name,
                &format!("{l},class=\"{c}\""),
                b.ops.responses[i].load(Relaxed),
            );
        }
    }
    let name = "lbx_backend_latency_seconds";
    o.family(
        name,
        "histogram",
        "Time from request arrival to the end of the response body.",
    );
    for (b, l) in set.iter().zip(&labels) {
        let mut cumulative = 0;
        for (i, bucket) in b.ops.latency_buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |v| v.to_string());
            o.sample(
                &format!("{name}_bucket"),
                &format!("{l},le=\"{le}\""),
                cumulative,
            );
        }
        let sum = b.ops.latency_sum_us.load(Relaxed) as f64 / 1e6;
        o.sample(&format!("{name}_sum"), l, sum);
        o.sample(&format!("{name}_count"), l, cumulative);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::addr::Target;
    use std::time::Duration;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let pool = Pool::new([Target::parse(":9001").unwrap()]);
        let b = pool.snapshot()[0].clone();
        b.ops.record_response(200, Duration::from_millis(3));
        b.ops.record_response(503, Duration::from_secs(60));
        let t = Telemetry::default();
        t.metrics.responses[1].fetch_add(1, Relaxed);
        let text = render(&t, &pool);
        assert!(text.contains("lbx_requests_total{class=\"2xx\"} 1\n"));
        let l = "backend=\"127.0.0.1:9001\"";
        assert!(text.contains(&format!(
            "lbx_backend_responses_total{{{l},class=\"5xx\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "lbx_backend_latency_seconds_bucket{{{l},le=\"0.005\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "lbx_backend_latency_seconds_bucket{{{l},le=\"+Inf\"}} 2\n"
        )));
        assert!(text.contains(&format!("lbx_backend_latency_seconds_count{{{l}}} 2\n")));
    }
}
