//! Traffic policy settings and the per-worker retry budget: the knobs `balance` reads from its
//! flags, gathered in one place so the proxy and the demo share them.

use std::time::{Duration, Instant};

use crate::core::outlier::Outlier;
use crate::core::select::hash::HashKey;
use crate::core::select::Algorithm;

/// How traffic is spread, retried, timed out and limited.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Selection algorithm.
    pub algorithm: Algorithm,
    /// Key for [`Algorithm::Hash`].
    pub hash_key: HashKey,
    /// One weight per backend, in order (missing ones are 1).
    pub weights: Vec<u32>,
    /// Passive health checking.
    pub outlier: Outlier,
    /// Ramp-up time for a backend coming back; zero for none.
    pub slow_start: Duration,
    /// Retries of a failed idempotent request.
    pub retries: u32,
    /// Time to a backend's response head.
    pub response_timeout: Duration,
    /// Time to a new client connection's first request head.
    pub header_timeout: Duration,
    /// Idle time allowed on a client keep-alive connection.
    pub idle_timeout: Duration,
    /// Client connections at once, over all workers.
    pub max_connections: Option<usize>,
    /// Largest request body in bytes.
    pub max_body: Option<u64>,
    /// Requests per second per client IP, per worker.
    pub rate_limit: Option<f64>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted: super::trust::TrustedProxies,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            algorithm: Algorithm::RoundRobin,
            hash_key: HashKey::Ip,
            weights: Vec::new(),
            outlier: Outlier::default(),
            slow_start: Duration::ZERO,
            retries: 2,
            response_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_body: None,
            rate_limit: None,
            trusted: Default::default(),
        }
    }
}

/// Share of requests that may be retried (Linkerd's default budget), in thousandths.
pub const RETRY_RATIO_MILLI: u64 = 200;
/// Retries always allowed per second on top of the ratio, over all workers.
pub const RETRY_FLOOR_PER_SEC: f64 = 10.0;
/// Most ratio credit a quiet period can bank, in thousandths of a retry.
const MAX_BANKED_MILLI: u64 = 100_000;

/// Keeps retries from multiplying an outage: each request banks a fifth of a retry, and a floor
/// of `per_sec` retries per second refills over time. One per worker, so no atomics.
#[derive(Debug)]
pub struct RetryBudget {
    per_sec: f64,
    banked_milli: u64,
    floor: f64,
    at: Instant,
}

impl RetryBudget {
    /// A budget for one of `workers` workers (the per-second floor is shared out among them).
    pub fn new(workers: usize, now: Instant) -> RetryBudget {
        let per_sec = (RETRY_FLOOR_PER_SEC / workers.max(1) as f64).max(1.0);
        RetryBudget {
            per_sec,
            banked_milli: 0,
            floor: per_sec,
            at: now,
        }
    }

    /// Counts one request.
    #[inline]
    pub fn deposit(&mut self) {
        self.banked_milli = (self.banked_milli + RETRY_RATIO_MILLI).min(MAX_BANKED_MILLI);
    }

    /// Takes one retry if the budget allows it at `now`.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.floor = (self.floor + elapsed * self.per_sec).min(self.per_sec);
        if self.banked_milli >= 1000 {
            self.banked_milli -= 1000;
            true
        } else if self.floor >= 1.0 {
            self.floor -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_percent_plus_a_floor() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(1, t0);
        for _ in 0..100 {
            b.deposit();
        }
        // 100 requests bank 20 retries; the floor adds 10 more.
        let granted = (0..100).filter(|_| b.withdraw(t0)).count();
        assert_eq!(granted, 30);
        // Half a second later the floor has refilled by 5.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| b.withdraw(t1)).count(), 5);
    }

    #[test]
    fn floor_is_shared_among_workers() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(2, t0);
        assert_eq!((0..100).filter(|_| b.withdraw(t0)).count(), 5);
    }
}
