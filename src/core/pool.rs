//! The backend set and selection over it: an immutable snapshot (backends plus the algorithm's
//! per-set state) swapped atomically, atomics only per pick, no lock.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::addr::Target;
use super::backend::Backend;
use super::clock;
use super::select::{self, Algorithm, Pick, Select};

/// An immutable list of backends; replaced whole when the set changes.
pub type BackendSet = Vec<Arc<Backend>>;

/// One backend set with its selection state, built together so they always match.
pub struct Snapshot {
    backends: BackendSet,
    select: Box<dyn Select>,
    algorithm: Algorithm,
}

impl Deref for Snapshot {
    type Target = BackendSet;
    fn deref(&self) -> &BackendSet {
        &self.backends
    }
}

/// The live backend set and how requests are spread over it.
pub struct Pool {
    set: ArcSwap<Snapshot>,
    slow_start_ms: AtomicU64,
}

impl Pool {
    /// A round-robin pool over these targets, all healthy until probed.
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Pool {
        Pool::with_policy(
            targets.into_iter().map(|t| (t, 1)),
            Algorithm::RoundRobin,
            Duration::ZERO,
        )
    }

    /// A pool over weighted targets with `algorithm`, and a slow start of `slow_start` for
    /// backends coming back (zero: none).
    pub fn with_policy(
        targets: impl IntoIterator<Item = (Target, u32)>,
        algorithm: Algorithm,
        slow_start: Duration,
    ) -> Pool {
        let set: BackendSet = targets
            .into_iter()
            .map(|(t, w)| Arc::new(Backend::weighted(t, w)))
            .collect();
        Pool {
            set: ArcSwap::from_pointee(Snapshot {
                select: select::build(algorithm, &set),
                backends: set,
                algorithm,
            }),
            slow_start_ms: AtomicU64::new(slow_start.as_millis() as u64),
        }
    }

    /// The current set (a cheap, lock-free load).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.set.load_full()
    }

    /// Replaces the set atomically (rebuilding the algorithm's tables once, here); requests
    /// already routed keep their backend.
    pub fn replace(&self, set: BackendSet) {
        // rcu: a concurrent set_policy (a reload) and this change both survive.
        self.set.rcu(|cur| Snapshot {
            select: select::build(cur.algorithm, &set),
            backends: set.clone(),
            algorithm: cur.algorithm,
        });
    }

    /// Switches the algorithm and the slow-start time (a reload): the current set's selection
    /// state is rebuilt for the new algorithm and swapped in.
    pub fn set_policy(&self, algorithm: Algorithm, slow_start: Duration) {
        self.slow_start_ms
            .store(slow_start.as_millis() as u64, Relaxed);
        self.set.rcu(|cur| Snapshot {
            select: select::build(algorithm, &cur.backends),
            backends: cur.backends.clone(),
            algorithm,
        });
    }

    /// The selection algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.set.load().algorithm
    }

    /// Number of backends that may take traffic now.
    pub fn healthy_count(&self) -> usize {
        self.set.load().iter().filter(|b| b.is_routable()).count()
    }

    /// Candidates for a request without a hash key, with thread-local randomness.
    pub fn candidates(&self) -> Candidates {
        self.pick(None, &mut fastrand::Rng::new())
    }

    /// Ordered candidates for one request: the algorithm's pick first, then the other backends
    /// in ring order, each at most once. Routability is re-checked as the iterator advances,
    /// so a backend marked down or ejected mid-request is skipped.
    pub fn pick(&self, key: Option<u64>, rng: &mut fastrand::Rng) -> Candidates {
        let set = self.set.load_full();
        let mut pick = Pick { key, rng };
        let mut start = set.select.first(&set, &mut pick).unwrap_or(0);
        if self.slow_start_ms.load(Relaxed) != 0 {
            start = self.warm_up(&set, start, pick.rng);
        }
        Candidates {
            set,
            start,
            offset: 0,
        }
    }

    /// Slow start: a backend still ramping up keeps its pick with probability equal to its
    /// warmth, otherwise the next routable one takes it (the ramping one stays a fallback).
    fn warm_up(&self, set: &Snapshot, start: usize, rng: &mut fastrand::Rng) -> usize {
        let Some(b) = set.get(start).filter(|b| b.has_come_back()) else {
            return start;
        };
        let warmth = b.warmth(clock::now_ms(), self.slow_start_ms.load(Relaxed));
        if warmth >= 1.0 || rng.f64() < warmth {
            return start;
        }
        let n = set.len();
        (1..n)
            .map(|k| (start + k) % n)
            .find(|&i| set[i].is_routable())
            .unwrap_or(start)
    }
}

/// Ordered candidates for one request, from [`Pool::pick`].
pub struct Candidates {
    set: Arc<Snapshot>,
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
    fn ejected_backends_are_skipped() {
        let p = pool(2);
        p.snapshot()[0].try_eject(0, u64::MAX, 1);
        assert!(p.candidates().all(|b| b.target.port == 2));
        assert_eq!(p.healthy_count(), 1);
    }

    #[test]
    fn weighted_pool_from_targets() {
        let p = Pool::with_policy(
            [
                (Target::parse(":1").unwrap(), 3),
                (Target::parse(":2").unwrap(), 1),
            ],
            Algorithm::Weighted,
            Duration::ZERO,
        );
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[pick(&p) as usize - 1] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn slow_start_ramps_a_returning_backend() {
        let p = Pool::with_policy(
            (1..=2).map(|i| (Target::parse(&format!(":{i}")).unwrap(), 1)),
            Algorithm::RoundRobin,
            Duration::from_secs(3600),
        );
        p.snapshot()[1].came_up(clock::now_ms());
        let mut rng = fastrand::Rng::with_seed(3);
        let second = (0..2000)
            .filter(|_| p.pick(None, &mut rng).next().unwrap().target.port == 2)
            .count();
        // Just back: about the floor share (10%) of its half instead of the half.
        assert!((50..200).contains(&second), "{second}");
    }

    #[test]
    fn a_hashed_key_fails_over_in_ring_order_and_comes_back() {
        let p = Pool::with_policy(
            (1..=4).map(|i| (Target::parse(&format!(":{i}")).unwrap(), 1)),
            Algorithm::Hash,
            Duration::ZERO,
        );
        let mut rng = fastrand::Rng::with_seed(1);
        let key = Some(select::hash::hash(b"alice", 0));
        let order: Vec<u16> = p.pick(key, &mut rng).map(|b| b.target.port).collect();
        assert_eq!(order.len(), 4);
        let home = order[0];
        for _ in 0..10 {
            assert_eq!(p.pick(key, &mut rng).next().unwrap().target.port, home);
        }
        p.snapshot()[home as usize - 1].set_healthy(false);
        assert_eq!(p.pick(key, &mut rng).next().unwrap().target.port, order[1]);
        p.snapshot()[home as usize - 1].set_healthy(true);
        assert_eq!(p.pick(key, &mut rng).next().unwrap().target.port, home);
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
