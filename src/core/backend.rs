//! One backend: its address, its routable flag and its counters, all atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::addr::Target;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A backend server. Shared by every worker; only atomics change after creation.
#[derive(Debug)]
pub struct Backend {
    /// Unique for the life of the process; keys per-worker connection pools.
    pub id: u64,
    /// Where it listens.
    pub target: Target,
    healthy: AtomicBool,
    /// Requests sent to it.
    pub requests: AtomicU64,
    /// Requests that failed at it (connect errors, errors before a response).
    pub errors: AtomicU64,
    /// Requests in progress right now.
    pub in_flight: AtomicU64,
    /// Operations state (admin API, metrics): appended here so selection code stays untouched.
    pub ops: BackendOps,
}

impl Backend {
    /// A new backend, healthy until a probe or a request says otherwise.
    pub fn new(target: Target) -> Backend {
        Backend {
            id: NEXT_ID.fetch_add(1, Relaxed),
            target,
            healthy: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            ops: BackendOps::default(),
        }
    }

    /// Whether selection may pick it.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Sets the routable flag; returns the previous value.
    pub fn set_healthy(&self, up: bool) -> bool {
        let was = self.healthy.swap(up, Relaxed);
        if was && !up {
            self.ops.ejections.fetch_add(1, Relaxed);
        }
        was
    }

    /// The same backend, out of rotation until its health checks pass (for backends added to a
    /// running pool, which should not take traffic before they are known to answer).
    pub fn start_down(self) -> Backend {
        self.healthy.store(false, Relaxed);
        self
    }

    /// Whether selection may pick it for a new request: healthy and not draining.
    #[inline]
    pub fn is_routable(&self) -> bool {
        self.is_healthy() && !self.ops.draining.load(Relaxed)
    }
}

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus `le` labels); a last
/// `+Inf` bucket is implied.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Per-backend state the operator sees and sets: weight, drain flag, response counters by status
/// class, a latency histogram and EWMA, the last probe. All atomics: the request path records
/// into them without a lock.
#[derive(Debug)]
pub struct BackendOps {
    /// Relative weight, as registered (1 when not given).
    pub weight: AtomicU32,
    /// Set by drain (or a graceful delete): no new requests, in-flight ones finish.
    pub draining: AtomicBool,
    /// Set once a delete is under way; the backend leaves the set when in-flight reaches 0.
    pub removing: AtomicBool,
    /// Responses by status class: index 0 is 1xx … index 4 is 5xx.
    pub responses: [AtomicU64; 5],
    /// Response count per latency bucket (non-cumulative; the last one is `+Inf`).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of response latencies, in microseconds.
    pub latency_sum_us: AtomicU64,
    /// Exponentially weighted moving average of latency, in microseconds (0 before the first).
    pub latency_ewma_us: AtomicU64,
    /// Times it was taken out of rotation (by probes or by a failed request).
    pub ejections: AtomicU64,
    /// Last probe: 0 none yet, 1 passed, 2 failed.
    pub last_probe: AtomicU32,
    /// Status of the last probe's response (0 when none arrived).
    pub last_probe_status: AtomicU32,
    /// When the last probe finished, in milliseconds since the Unix epoch.
    pub last_probe_unix_ms: AtomicU64,
}

impl Default for BackendOps {
    fn default() -> Self {
        BackendOps {
            weight: AtomicU32::new(1),
            draining: AtomicBool::new(false),
            removing: AtomicBool::new(false),
            responses: Default::default(),
            latency_buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            latency_ewma_us: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            last_probe: AtomicU32::new(0),
            last_probe_status: AtomicU32::new(0),
            last_probe_unix_ms: AtomicU64::new(0),
        }
    }
}

impl BackendOps {
    /// Records one finished response: its status class and its latency.
    pub fn record_response(&self, status: u16, latency: Duration) {
        if let Some(c) = status_class(status) {
            self.responses[c].fetch_add(1, Relaxed);
        }
        self.latency_buckets[latency_bucket(latency)].fetch_add(1, Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Relaxed);
        // Racy read-modify-write on purpose: an EWMA that loses an update under contention is
        // still an EWMA, and a CAS loop on the request path buys nothing.
        let old = self.latency_ewma_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.latency_ewma_us.store(new.max(1), Relaxed);
    }

    /// Records one probe result.
    pub fn record_probe(&self, ok: bool, status: Option<u16>, unix_ms: u64) {
        self.last_probe.store(if ok { 1 } else { 2 }, Relaxed);
        self.last_probe_status
            .store(status.map_or(0, u32::from), Relaxed);
        self.last_probe_unix_ms.store(unix_ms, Relaxed);
    }
}

/// Index of a status class (0 for 1xx … 4 for 5xx), or None outside 100..=599.
pub fn status_class(status: u16) -> Option<usize> {
    (100..600)
        .contains(&status)
        .then(|| usize::from(status / 100 - 1))
}

/// Index of the histogram bucket a latency falls in.
pub fn latency_bucket(latency: Duration) -> usize {
    let s = latency.as_secs_f64();
    LATENCY_BUCKETS
        .iter()
        .position(|le| s <= *le)
        .unwrap_or(LATENCY_BUCKETS.len())
}
