//! The backend set and round-robin selection over it: an immutable snapshot swapped atomically,
//! one `fetch_add` per pick, no lock.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::addr::Target;
use super::backend::Backend;

/// An immutable list of backends; replaced whole when the set changes.
pub type BackendSet = Vec<Arc<Backend>>;

/// The live backend set plus the round-robin cursor.
pub struct Pool {
    set: ArcSwap<BackendSet>,
    next: AtomicUsize,
}

impl Pool {
    /// A pool over these targets, all healthy until probed.
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Pool {
        let set: BackendSet = targets
            .into_iter()
            .map(|t| Arc::new(Backend::new(t)))
            .collect();
        Pool {
            set: ArcSwap::from_pointee(set),
            next: AtomicUsize::new(0),
        }
    }

    /// The current set (a cheap, lock-free load).
    pub fn snapshot(&self) -> Arc<BackendSet> {
        self.set.load_full()
    }

    /// Replaces the set atomically; requests already routed keep their backend.
    pub fn replace(&self, set: BackendSet) {
        self.set.store(Arc::new(set));
    }

    /// Number of backends that may take traffic now.
    pub fn healthy_count(&self) -> usize {
        self.set.load().iter().filter(|b| b.is_routable()).count()
    }

    /// Round robin over the healthy backends: the first item is this request's pick, the rest
    /// are fallbacks in ring order, each backend at most once. Health is re-checked as the
    /// iterator advances, so a backend marked down mid-request is skipped.
    pub fn candidates(&self) -> Candidates {
        let set = self.set.load_full();
        let healthy = set.iter().filter(|b| b.is_routable()).count();
        let start = if healthy == 0 {
            0
        } else {
            let k = self.next.fetch_add(1, Relaxed) % healthy;
            // Position of the k-th healthy backend: spreads evenly over the healthy ones,
            // instead of giving a down backend's turn to its neighbour.
            set.iter()
                .enumerate()
                .filter(|(_, b)| b.is_routable())
                .nth(k)
                .map_or(0, |(i, _)| i)
        };
        Candidates {
            set,
            start,
            offset: 0,
        }
    }
}

/// Ordered candidates for one request, from [`Pool::candidates`].
pub struct Candidates {
    set: Arc<BackendSet>,
    start: usize,
    offset: usize,
}

impl Iterator for Candidates {
    type Item = Arc<Backend>;

    fn next(&mut self) -> Option<Arc<Backend>> {
        let n = self.set.len();
        while self.offset < n {
            let b = &self.set[(self.start + self.offset) % n];
            self.offset += 1;
            if b.is_routable() {
                return Some(b.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> Pool {
        Pool::new((1..=n).map(|p| Target::parse(&format!(":{p}")).unwrap()))
    }

    fn pick(p: &Pool) -> u16 {
        p.candidates().next().unwrap().target.port
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let p = pool(3);
        let mut counts = [0; 3];
        for _ in 0..30 {
            counts[pick(&p) as usize - 1] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn skips_unhealthy_evenly() {
        let p = pool(3);
        p.snapshot()[1].set_healthy(false);
        let mut counts = [0; 3];
        for _ in 0..30 {
            counts[pick(&p) as usize - 1] += 1;
        }
        assert_eq!(counts, [15, 0, 15]);
    }

    #[test]
    fn fallbacks_cover_the_rest_once() {
        let p = pool(4);
        p.snapshot()[2].set_healthy(false);
        let order: Vec<u16> = p.candidates().map(|b| b.target.port).collect();
        assert_eq!(order.len(), 3);
        assert!(!order.contains(&3));
        let mut sorted = order.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3);
    }

    #[test]
    fn none_healthy_yields_nothing() {
        let p = pool(2);
        for b in p.snapshot().iter() {
            b.set_healthy(false);
        }
        assert!(p.candidates().next().is_none());
        assert_eq!(p.healthy_count(), 0);
    }

    #[test]
    fn draining_backends_are_not_picked() {
        let p = pool(3);
        p.snapshot()[0]
            .ops
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut counts = [0; 3];
        for _ in 0..30 {
            counts[pick(&p) as usize - 1] += 1;
        }
        assert_eq!(counts, [0, 15, 15]);
        assert_eq!(p.healthy_count(), 2);
    }

    #[test]
    fn replace_swaps_the_set() {
        let p = pool(2);
        p.replace(vec![Arc::new(Backend::new(Target::parse(":7").unwrap()))]);
        assert_eq!(pick(&p), 7);
    }
}
