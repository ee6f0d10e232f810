//! One backend: its address, weight, routable flag, counters and the passive-health, slow-start
//! and latency state the request path updates, all atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::addr::Target;
use super::clock;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Latency assumed for a backend before its first response, in microseconds.
const DEFAULT_RTT_US: f64 = 1_000.0;
/// Decay time of the latency average, in microseconds (Finagle's and Linkerd's 10 s).
const RTT_DECAY_US: f64 = 10_000_000.0;
/// Share of traffic a backend gets as soon as its slow start begins.
const WARM_FLOOR: f64 = 0.1;

/// A backend server. Shared by every worker; only atomics change after creation.
#[derive(Debug)]
pub struct Backend {
    /// Unique for the life of the process; keys per-worker connection pools.
    pub id: u64,
    /// Where it listens.
    pub target: Target,
    /// Relative share for weighted selection (1 unless given as `:9001=3`).
    weight: AtomicU32,
    healthy: AtomicBool,
    /// Requests sent to it.
    pub requests: AtomicU64,
    /// Requests that failed at it (connect errors, errors before a response).
    pub errors: AtomicU64,
    /// Requests in progress right now.
    pub in_flight: AtomicU64,
    /// Times passive health checking ejected it.
    pub ejections: AtomicU64,
    /// Failed requests in a row (connect errors, timeouts, 5xx answers).
    failures: AtomicU32,
    /// Clock time (ms) its ejection ends; 0 when not ejected (reset once seen to be over, so
    /// routability checks read the clock only while an ejection is on).
    ejected_until: AtomicU64,
    /// Clock time (ms) its last ejection ended or ends; 0 when never ejected.
    last_ejection_end: AtomicU64,
    /// Ejections in a row, for the growing ejection time.
    ejection_streak: AtomicU32,
    /// Clock time (ms) it last came back up after active checks; 0 when never.
    up_since: AtomicU64,
    /// Peak-EWMA response latency in microseconds, as f64 bits; 0 before the first sample.
    rtt: AtomicU64,
    /// Clock time (µs) of the last latency sample.
    rtt_at: AtomicU64,
    /// Operations state (admin API, metrics): appended here so selection code stays untouched.
    pub ops: BackendOps,
}

impl Backend {
    /// A new backend of weight 1, healthy until a probe or a request says otherwise.
    pub fn new(target: Target) -> Backend {
        Backend::weighted(target, 1)
    }

    /// A new backend with a weight (0 is treated as 1).
    pub fn weighted(target: Target, weight: u32) -> Backend {
        Backend {
            id: NEXT_ID.fetch_add(1, Relaxed),
            target,
            weight: AtomicU32::new(weight.max(1)),
            healthy: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_ejection_end: AtomicU64::new(0),
            ejection_streak: AtomicU32::new(0),
            up_since: AtomicU64::new(0),
            rtt: AtomicU64::new(0),
            rtt_at: AtomicU64::new(0),
            ops: BackendOps::default(),
        }
    }

    /// Relative share for weighted selection (at least 1).
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Sets the weight (0 counts as 1); returns whether it changed. Selection tables see it at
    /// the next `Pool::replace`, which the registry performs whenever a weight changed.
    pub fn set_weight(&self, w: u32) -> bool {
        self.weight.swap(w.max(1), Relaxed) != w.max(1)
    }

    /// Whether active health checks (or a failed connect) allow traffic.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Sets the routable flag; returns the previous value.
    pub fn set_healthy(&self, up: bool) -> bool {
        let was = self.healthy.swap(up, Relaxed);
        if was && !up {
            self.ops.downs.fetch_add(1, Relaxed);
        }
        was
    }

    /// The same backend, out of rotation until its health checks pass (for backends added to a
    /// running pool, which should not take traffic before they are known to answer).
    pub fn start_down(self) -> Backend {
        self.healthy.store(false, Relaxed);
        self
    }

    /// Healthy, not draining and not ejected: selection may pick it for a new request. Three
    /// relaxed loads unless an ejection is on; the first check after it ends clears it.
    #[inline]
    pub fn is_routable(&self) -> bool {
        self.is_healthy() && !self.ops.draining.load(Relaxed) && {
            let until = self.ejected_until.load(Relaxed);
            until == 0 || self.ejection_over(until, clock::now_ms())
        }
    }

    /// Whether the ejection ending at `until` is over at `now_ms`; clears it when it is.
    fn ejection_over(&self, until: u64, now_ms: u64) -> bool {
        if now_ms < until {
            return false;
        }
        // Lost races mean another thread cleared it, or ejected it anew: both are fine.
        let _ = self
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed);
        true
    }

    /// Whether an ejection is in force at clock time `now_ms`.
    pub fn is_ejected_at(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until.load(Relaxed)
    }

    /// A request succeeded: the failure streak ends (written only when there was one).
    #[inline]
    pub fn record_success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// A request failed; returns the failure streak including this one.
    pub fn record_failure(&self) -> u32 {
        self.failures.fetch_add(1, Relaxed).saturating_add(1)
    }

    /// Ejects it until `until_ms` if no other thread ejected it since `seen_until` was read;
    /// returns whether this call did. `streak` is the ejection count in a row it becomes.
    pub fn try_eject(&self, seen_until: u64, until_ms: u64, streak: u32) -> bool {
        let won = self
            .ejected_until
            .compare_exchange(seen_until, until_ms, Relaxed, Relaxed)
            .is_ok();
        if won {
            self.last_ejection_end.store(until_ms, Relaxed);
            self.ejection_streak.store(streak, Relaxed);
            self.failures.store(0, Relaxed);
            self.ejections.fetch_add(1, Relaxed);
        }
        won
    }

    /// The ejection state: the end of the ejection in force (0 for none), the end of the last
    /// one (0 for never), and the ejections in a row.
    pub fn ejection(&self) -> Ejection {
        Ejection {
            until: self.ejected_until.load(Relaxed),
            last_end: self.last_ejection_end.load(Relaxed),
            streak: self.ejection_streak.load(Relaxed),
        }
    }

    /// Active checks brought it back at `now_ms`: any ejection ends and slow start begins.
    pub fn came_up(&self, now_ms: u64) {
        if self.ejected_until.swap(0, Relaxed) > now_ms {
            self.last_ejection_end.store(now_ms, Relaxed);
        }
        self.ejection_streak.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.up_since.store(now_ms, Relaxed);
    }

    /// Whether it ever came back (up after checks, or out of an ejection), so that slow start
    /// may apply; lets callers skip reading the clock for backends that never left.
    #[inline]
    pub fn has_come_back(&self) -> bool {
        self.up_since.load(Relaxed) != 0 || self.last_ejection_end.load(Relaxed) != 0
    }

    /// Share of a full traffic share it should take at `now_ms` under a slow start of
    /// `window_ms` (1.0 when none applies).
    pub fn warmth(&self, now_ms: u64, window_ms: u64) -> f64 {
        let end = self.last_ejection_end.load(Relaxed);
        let back_from_ejection = if end <= now_ms { end } else { 0 };
        let since = self.up_since.load(Relaxed).max(back_from_ejection);
        warmth(now_ms, since, window_ms)
    }

    /// Records one response latency (time to the response head) at clock time `now_us`.
    pub fn observe_rtt(&self, rtt_us: f64, now_us: u64) {
        let prev = f64::from_bits(self.rtt.load(Relaxed));
        let at = self.rtt_at.swap(now_us, Relaxed);
        let next = peak_ewma(prev, rtt_us, now_us.saturating_sub(at) as f64, RTT_DECAY_US);
        self.rtt.store(next.to_bits(), Relaxed);
    }

    /// Peak-EWMA load at clock time `now_us`: the latency estimate times the requests it would
    /// then have in flight. The estimate decays toward zero while no response arrives (as
    /// tower's does), so a backend that was slow once is tried again later, not starved forever.
    #[inline]
    pub fn load_cost(&self, now_us: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Relaxed));
        let rtt = if rtt > 0.0 {
            let idle = now_us.saturating_sub(self.rtt_at.load(Relaxed)) as f64;
            rtt * (-idle / RTT_DECAY_US).exp()
        } else {
            DEFAULT_RTT_US
        };
        rtt * (self.in_flight.load(Relaxed) + 1) as f64
    }
}

/// A snapshot of a backend's ejection state, from [`Backend::ejection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// End of the ejection in force (clock ms); 0 when none is (or it was seen to be over).
    pub until: u64,
    /// End of the last ejection (clock ms); 0 when never ejected.
    pub last_end: u64,
    /// Ejections in a row.
    pub streak: u32,
}

/// Peak-EWMA (Finagle, Linkerd): a sample above the average replaces it at once; below it, the
/// average decays toward the sample with time constant `tau` (same unit as `elapsed`).
pub fn peak_ewma(prev: f64, sample: f64, elapsed: f64, tau: f64) -> f64 {
    if prev <= 0.0 || sample > prev {
        return sample;
    }
    let w = (-elapsed / tau).exp();
    prev * w + sample * (1.0 - w)
}

/// Linear slow-start ramp: from a small floor at `since_ms` to 1.0 at `since_ms + window_ms`.
pub fn warmth(now_ms: u64, since_ms: u64, window_ms: u64) -> f64 {
    if window_ms == 0 || since_ms == 0 || now_ms >= since_ms.saturating_add(window_ms) {
        return 1.0;
    }
    let done = now_ms.saturating_sub(since_ms) as f64 / window_ms as f64;
    done.max(WARM_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        assert_eq!(peak_ewma(0.0, 5.0, 0.0, 10.0), 5.0);
        assert_eq!(peak_ewma(5.0, 20.0, 0.0, 10.0), 20.0);
        let d = peak_ewma(20.0, 10.0, 10.0, 10.0);
        assert!(d < 20.0 && d > 10.0, "{d}");
        let far = peak_ewma(20.0, 10.0, 1e9, 10.0);
        assert!((far - 10.0).abs() < 1e-6);
    }

    #[test]
    fn an_unobserved_estimate_decays() {
        let b = Backend::new(Target::parse(":1").unwrap());
        assert_eq!(b.load_cost(5), DEFAULT_RTT_US);
        b.observe_rtt(20_000.0, 1_000);
        assert_eq!(b.load_cost(1_000), 20_000.0);
        b.in_flight.store(1, Relaxed);
        assert_eq!(b.load_cost(1_000), 40_000.0);
        let later = b.load_cost(1_000 + 3 * RTT_DECAY_US as u64);
        assert!(later < 40_000.0 * 0.06, "{later}");
    }

    #[test]
    fn warmth_ramps_linearly() {
        assert_eq!(warmth(500, 0, 1000), 1.0, "never came back: full share");
        assert_eq!(warmth(500, 100, 0), 1.0, "slow start off");
        assert_eq!(warmth(100, 100, 1000), WARM_FLOOR);
        assert!((warmth(600, 100, 1000) - 0.5).abs() < 1e-9);
        assert_eq!(warmth(1100, 100, 1000), 1.0);
    }

    #[test]
    fn failures_streak_and_ejection() {
        let b = Backend::new(Target::parse(":1").unwrap());
        assert_eq!(b.record_failure(), 1);
        assert_eq!(b.record_failure(), 2);
        b.record_success();
        assert_eq!(b.record_failure(), 1);
        assert!(b.try_eject(0, 5000, 1));
        assert!(
            !b.try_eject(0, 6000, 1),
            "another thread already ejected it"
        );
        assert!(b.is_ejected_at(4999));
        assert!(!b.is_ejected_at(5000));
        assert_eq!(b.ejections.load(Relaxed), 1);
        // Back from ejection at 5000: slow start from there; the first look clears it.
        assert!((b.warmth(5500, 1000) - 0.5).abs() < 1e-9);
        assert!(!b.ejection_over(5000, 4999));
        assert!(b.ejection_over(5000, 5000));
        assert_eq!(
            b.ejection(),
            Ejection {
                until: 0,
                last_end: 5000,
                streak: 1
            }
        );
        b.came_up(5200);
        assert_eq!(b.ejection().streak, 0);
        assert!(
            (b.warmth(5700, 1000) - 0.5).abs() < 1e-9,
            "slow start from 5200"
        );
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
    /// Times it went down (by probes or by a failed connect).
    pub downs: AtomicU64,
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
            draining: AtomicBool::new(false),
            removing: AtomicBool::new(false),
            responses: Default::default(),
            latency_buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            latency_ewma_us: AtomicU64::new(0),
            downs: AtomicU64::new(0),
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
