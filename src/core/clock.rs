//! A process-wide monotonic clock in whole milliseconds and microseconds, so per-backend times
//! (ejection ends, slow-start starts, latency stamps) fit in atomics. Zero means "never".

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the clock started, never 0.
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Microseconds since the clock started, never 0.
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_monotonic() {
        let a = now_ms();
        let b = now_ms();
        assert!(a >= 1 && b >= a);
        assert!(now_us() >= 1);
    }
}
