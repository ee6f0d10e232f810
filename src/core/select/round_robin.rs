//! Round robin: one `fetch_add` per pick over the routable backends.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::{nth_routable, Pick, Select};
use crate::core::backend::Backend;

/// The round-robin cursor.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Select for RoundRobin {
    fn first(&self, set: &[Arc<Backend>], _: &mut Pick<'_>) -> Option<usize> {
        nth_routable(set, self.next.fetch_add(1, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{set, spread};
    use super::*;

    #[test]
    fn even_and_skips_down_evenly() {
        let s = set(3, &[]);
        let rr = RoundRobin::default();
        assert_eq!(spread(&rr, &s, 30), [10, 10, 10]);
        s[1].set_healthy(false);
        assert_eq!(spread(&rr, &s, 30), [15, 0, 15]);
    }
}
