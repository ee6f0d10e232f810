//! Power of two random choices (Mitzenmacher; Finagle, Linkerd and Envoy balance this way): two
//! distinct backends drawn from the injected RNG, the one with the lower peak-EWMA latency times
//! requests in flight wins. Steers traffic toward faster backends without scanning them all.

use std::sync::Arc;

use super::{nth_routable, Pick, Select};
use crate::core::backend::Backend;
use crate::core::clock::now_us;

/// Stateless: the latency and load live on each backend.
pub struct P2c;

impl Select for P2c {
    fn first(&self, set: &[Arc<Backend>], pick: &mut Pick<'_>) -> Option<usize> {
        let n = set.len();
        if n < 2 {
            return nth_routable(set, 0);
        }
        let a = pick.rng.usize(..n);
        let mut b = pick.rng.usize(..n - 1);
        if b >= a {
            b += 1;
        }
        match (set[a].is_routable(), set[b].is_routable()) {
            (true, true) => {
                let now = now_us();
                Some(if set[b].load_cost(now) < set[a].load_cost(now) {
                    b
                } else {
                    a
                })
            }
            (true, false) => Some(a),
            (false, true) => Some(b),
            (false, false) => nth_routable(set, a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{set, spread};
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn favours_the_faster_backend() {
        let s = set(2, &[]);
        s[0].observe_rtt(500.0, now_us());
        s[1].observe_rtt(20_000.0, now_us());
        let c = spread(&P2c, &s, 1000);
        assert_eq!(c, [1000, 0], "two backends: both are always drawn");
    }

    #[test]
    fn load_counts_as_well_as_latency() {
        let s = set(3, &[]);
        // One instant for all three: equal estimates, so only the load tells them apart (with
        // a clock read per backend, one could decay a microsecond more and win every draw).
        let now = now_us();
        for b in &s {
            b.observe_rtt(1000.0, now);
        }
        s[0].in_flight.store(10, Relaxed);
        let c = spread(&P2c, &s, 3000);
        // Backend 0 wins only when drawn against... never: both others are less loaded.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1200 && c[2] > 1200, "{c:?}");
    }

    #[test]
    fn seeded_rng_is_deterministic_and_skips_down() {
        let s = set(4, &[]);
        s[2].set_healthy(false);
        let a = spread(&P2c, &s, 500);
        let b = spread(&P2c, &s, 500);
        assert_eq!(a, b);
        assert_eq!(a[2], 0);
    }
}
