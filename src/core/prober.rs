//! Active health probing: one probe is a request to the health path on a fresh connection, bounded
//! by a timeout. The periodic loop feeds outcomes to [`Health`] and reports only transitions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::addr::Target;
use super::backend::Backend;
use super::client::{classify, handshake_any, to_h2, DialTimings, Dialer, ErrorKind, USER_AGENT};
use super::health::{Health, Transition};
use super::pool::Pool;

/// Upper bound on the body a probe reads (for `--expect-body`).
const MAX_PROBE_BODY: usize = 64 * 1024;

/// What to request and how long to wait.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// Path and query, e.g. `/healthcheck`.
    pub path: String,
    /// Method (GET by default).
    pub method: Method,
    /// Extra request headers.
    pub headers: HeaderMap,
    /// Total time allowed for connect, request and response body.
    pub timeout: Duration,
}

impl ProbeSpec {
    /// A GET of `path` within `timeout`.
    pub fn get(path: &str, timeout: Duration) -> ProbeSpec {
        ProbeSpec {
            path: path.to_string(),
            method: Method::GET,
            headers: HeaderMap::new(),
            timeout,
        }
    }
}

/// The result of one probe.
#[derive(Clone, Debug, Default)]
pub struct ProbeOutcome {
    /// A 2xx status arrived (callers may apply stricter rules to `status` and `body`).
    pub healthy: bool,
    /// Response status, when one arrived.
    pub status: Option<StatusCode>,
    /// Time from start to the end of the response body (or to the failure).
    pub latency: Duration,
    /// Dial phases.
    pub timings: DialTimings,
    /// Time to the response head, measured from the start.
    pub ttfb: Option<Duration>,
    /// Why it failed, when it failed before a status.
    pub error: Option<(ErrorKind, String)>,
    /// Up to 64 KiB of the response body.
    pub body: Bytes,
    /// Leaf certificate of an https target (DER).
    pub peer_cert: Option<Vec<u8>>,
    /// The HTTP version the answer came in.
    pub version: Option<Version>,
}

impl ProbeOutcome {
    /// A one-line reason for logs: the status or the error.
    pub fn reason(&self) -> String {
        match (&self.status, &self.error) {
            (_, Some((_, detail))) => detail.clone(),
            (Some(s), None) => format!("status {}", s.as_u16()),
            (None, None) => "no answer".into(),
        }
    }
}

/// Probes one target once.
pub async fn probe(dialer: &Dialer, target: &Target, spec: &ProbeSpec) -> ProbeOutcome {
    let start = Instant::now();
    let mut out = ProbeOutcome::default();
    let res = tokio::time::timeout(
        spec.timeout,
        probe_inner(dialer, target, spec, start, &mut out),
    )
    .await;
    match res {
        Ok(Ok(())) => out.healthy = out.status.is_some_and(|s| s.is_success()),
        Ok(Err((kind, detail))) => out.error = Some((kind, detail)),
        Err(_) => {
            let t = &out.timings;
            let dialed = t.connect > Duration::ZERO && (!target.is_tls() || t.tls > Duration::ZERO);
            let kind = if out.ttfb.is_some() || dialed {
                ErrorKind::RequestTimeout
            } else {
                ErrorKind::ConnectTimeout
            };
            out.error = Some((kind, format!("timed out after {:?}", spec.timeout)));
        }
    }
    out.latency = start.elapsed();
    out
}

async fn probe_inner(
    dialer: &Dialer,
    target: &Target,
    spec: &ProbeSpec,
    start: Instant,
    out: &mut ProbeOutcome,
) -> Result<(), (ErrorKind, String)> {
    // Phases land in `out` as they complete, so a failed or timed-out probe keeps them.
    let stream = dialer
        .dial_recording(target, &mut out.timings)
        .await
        .map_err(|e| (e.kind, e.to_string()))?;
    out.peer_cert = stream
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    // The backend's own protocol: h2c, h2 or HTTP/1.1 as ALPN chose, or plain HTTP/1.1.
    let mut tx = handshake_any::<Full<Bytes>>(stream, target)
        .await
        .map_err(|e| (classify(&e), e.to_string()))?;
    let mut req = Request::builder()
        .method(spec.method.clone())
        .uri(spec.path.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| (ErrorKind::Protocol, e.to_string()))?;
    let h = req.headers_mut();
    h.insert(
        http::header::HOST,
        HeaderValue::from_str(&target.authority).expect("authority is valid"),
    );
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    );
    if !tx.is_h2() {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    for (k, v) in &spec.headers {
        h.insert(k, v.clone());
    }
    if tx.is_h2() {
        to_h2(&mut req, target);
    }
    let resp = tx.try_send_request(req).await.map_err(|e| {
        let e = e.into_error();
        (classify(&e), e.to_string())
    })?;
    out.version = Some(resp.version());
    out.ttfb = Some(start.elapsed());
    out.status = Some(resp.status());
    // A probe only needs the head to decide; the body is read for --expect-body, keeping its
    // first MAX_PROBE_BODY bytes and closing the connection on anything longer.
    let mut body = resp.into_body();
    let mut kept = BytesMut::new();
    while kept.len() < MAX_PROBE_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let take = data.len().min(MAX_PROBE_BODY - kept.len());
                    kept.extend_from_slice(&data[..take]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    out.body = kept.freeze();
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Settings for periodic checks.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    /// What to request.
    pub spec: ProbeSpec,
    /// Time between probe rounds.
    pub interval: Duration,
    /// Successes in a row to come up.
    pub rise: u32,
    /// Failures in a row to go down.
    pub fall: u32,
}

/// Probes every backend of the pool each interval until `shutdown` turns true; updates each
/// backend's routable flag and calls `on_transition` only when a backend changes state.
pub async fn run_prober<F>(
    pool: Arc<Pool>,
    dialer: Dialer,
    hc: HealthCheck,
    mut shutdown: watch::Receiver<bool>,
    on_transition: F,
) where
    F: Fn(&Backend, Transition, &ProbeOutcome),
{
    let mut states: HashMap<u64, Health> = HashMap::new();
    // The flags and the config file refuse a zero interval; tokio's interval would panic on one.
    let mut tick = tokio::time::interval(hc.interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let spec = Arc::new(hc.spec.clone());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let set = pool.snapshot();
        let mut probes = JoinSet::new();
        for (i, b) in set.iter().enumerate() {
            let (dialer, target, spec) = (dialer.clone(), b.target.clone(), spec.clone());
            probes.spawn(async move { (i, probe(&dialer, &target, &spec).await) });
        }
        while let Some(res) = probes.join_next().await {
            let Ok((i, outcome)) = res else { continue };
            let b = &set[i];
            let h = states
                .entry(b.id)
                .or_insert_with(|| Health::new(hc.rise, hc.fall));
            // A request may have taken the backend down since the last probe: it must rise again.
            if !b.is_healthy() && h.is_healthy() {
                h.force_down();
            }
            let t = h.observe(outcome.healthy);
            b.set_healthy(h.is_healthy());
            b.ops.record_probe(
                outcome.healthy,
                outcome.status.map(|s| s.as_u16()),
                unix_ms(),
            );
            if let Some(t) = t {
                on_transition(b, t, &outcome);
            }
        }
        states.retain(|id, _| set.iter().any(|b| b.id == *id));
    }
}

/// [`run_prober`] with settings that may change: each new value of `hc` ends the current probe
/// loop (after its round in progress) and starts one with the new settings. Every backend's
/// rise/fall streak starts over then; one already down must rise again. Ends at `shutdown`.
pub async fn run_prober_reloadable<F>(
    pool: Arc<Pool>,
    dialer: Dialer,
    mut hc: watch::Receiver<HealthCheck>,
    mut shutdown: watch::Receiver<bool>,
    on_transition: F,
) where
    F: Fn(&Backend, Transition, &ProbeOutcome),
{
    let mut updates = true;
    loop {
        let current = hc.borrow_and_update().clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let run = run_prober(
            pool.clone(),
            dialer.clone(),
            current,
            stop_rx,
            &on_transition,
        );
        tokio::pin!(run);
        let restart = loop {
            tokio::select! {
                _ = &mut run => return,
                _ = shutdown.changed() => break false,
                changed = hc.changed(), if updates => match changed {
                    Ok(()) => break true,
                    // No more updates will come: keep probing with what we have.
                    Err(_) => updates = false,
                },
            }
        };
        let _ = stop_tx.send(true);
        run.await;
        if !restart {
            return;
        }
    }
}
