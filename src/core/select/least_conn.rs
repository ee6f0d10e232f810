//! Least connections: the routable backend with the fewest requests in flight per unit of
//! weight; backends tied for the lowest take turns.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::{Pick, Select};
use crate::core::backend::Backend;

/// The tie-breaking cursor.
#[derive(Default)]
pub struct LeastConn {
    next: AtomicUsize,
}

impl Select for LeastConn {
    fn first(&self, set: &[Arc<Backend>], _: &mut Pick<'_>) -> Option<usize> {
        // First pass: the lowest load per weight and how many backends share it.
        let mut best: Option<(u64, u64, usize)> = None; // (in flight, weight, ties)
        for b in set.iter().filter(|b| b.is_routable()) {
            let (load, w) = (b.in_flight.load(Relaxed), u64::from(b.weight()));
            best = match best {
                // load/w against bl/bw, without division.
                Some((bl, bw, ties)) if load * bw == bl * w => Some((bl, bw, ties + 1)),
                Some((bl, bw, _)) if load * bw > bl * w => best,
                _ => Some((load, w, 1)),
            };
        }
        let (bl, bw, ties) = best?;
        // Second pass: the tied backends take turns.
        let k = self.next.fetch_add(1, Relaxed) % ties;
        set.iter()
            .enumerate()
            .filter(|(_, b)| {
                b.is_routable() && b.in_flight.load(Relaxed) * bw == bl * u64::from(b.weight())
            })
            .nth(k)
            .map(|(i, _)| i)
            .or_else(|| set.iter().position(|b| b.is_routable()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{set, spread};
    use super::*;

    #[test]
    fn fewest_in_flight_wins() {
        let s = set(3, &[]);
        s[0].in_flight.store(2, Relaxed);
        s[1].in_flight.store(1, Relaxed);
        s[2].in_flight.store(3, Relaxed);
        assert_eq!(spread(&LeastConn::default(), &s, 10), [0, 10, 0]);
    }

    #[test]
    fn ties_go_round_robin() {
        let s = set(3, &[]);
        assert_eq!(spread(&LeastConn::default(), &s, 30), [10, 10, 10]);
        s[0].in_flight.store(1, Relaxed);
        assert_eq!(spread(&LeastConn::default(), &s, 30), [0, 15, 15]);
    }

    #[test]
    fn weight_scales_load_and_down_is_skipped() {
        let s = set(2, &[4, 1]);
        s[0].in_flight.store(3, Relaxed);
        s[1].in_flight.store(1, Relaxed);
        assert_eq!(spread(&LeastConn::default(), &s, 4), [4, 0], "3/4 < 1/1");
        s[0].set_healthy(false);
        assert_eq!(spread(&LeastConn::default(), &s, 4), [0, 4]);
    }
}
