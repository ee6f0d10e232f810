//! Per-client request rate limiting: a token bucket per client IP, one table per worker (no lock
//! shared between threads), swept of idle clients as it grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Table size beyond which buckets that have refilled are dropped.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of `rate` requests per second with a burst of one second's worth.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// A limiter allowing `rate` requests per second per client (at least one in a burst).
    pub fn new(rate: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: rate.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `ip` at `now`, or says how long until one is available.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= SWEEP_AT && !self.buckets.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            // The flags and the config file keep the rate sane; saturate rather than panic.
            Err(Duration::try_from_secs_f64((1.0 - b.tokens) / rate).unwrap_or(Duration::MAX))
        }
    }
}

/// Whole seconds for a `Retry-After` header: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(5.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| l.check(ip, t0).is_ok()).count(), 5);
        let wait = l.check(ip, t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.check(other, t0).is_ok(), "each client has its own bucket");
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!((0..10).filter(|_| l.check(ip, t1).is_ok()).count(), 2);
    }

    #[test]
    fn slow_rates_wait_longer() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(0.1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check(ip, t0).is_ok());
        assert_eq!(retry_after_secs(l.check(ip, t0).unwrap_err()), 10);
    }

    #[test]
    fn sweeps_idle_clients() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1.0);
        for i in 0..SWEEP_AT as u32 {
            let _ = l.check(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + Duration::from_secs(5);
        assert!(l.check("198.51.100.1".parse().unwrap(), later).is_ok());
        assert_eq!(l.buckets.len(), 1);
    }
}
