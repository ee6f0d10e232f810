//! Selection strategies: each picks a request's first choice over one backend snapshot; the pool
//! turns it into ordered candidates (the pick, then the rest in ring order) and the proxy filters
//! and retries. Per-set state (a Maglev table, a weighted sequence) is built when the set changes,
//! never per request; per-request state is atomics only.

pub mod hash;
pub mod least_conn;
pub mod p2c;
pub mod random;
pub mod round_robin;
pub mod weighted;

use std::sync::Arc;

use clap::ValueEnum;

use super::backend::Backend;

/// The selection algorithms `--algorithm` offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// Each routable backend in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's): shares follow `:PORT=WEIGHT`, without bursts.
    Weighted,
    /// Fewest requests in flight (per weight), ties in turn.
    LeastConn,
    /// Power of two random choices by peak-EWMA latency times requests in flight.
    P2c,
    /// Consistent hashing of `--hash-key` over a Maglev table.
    Hash,
    /// Uniformly at random.
    Random,
}

impl Algorithm {
    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round robin",
            Algorithm::Weighted => "weighted round robin",
            Algorithm::LeastConn => "least connections",
            Algorithm::P2c => "power of two choices, peak EWMA",
            Algorithm::Hash => "consistent hash, Maglev",
            Algorithm::Random => "random",
        }
    }

    /// Whether the proxy should measure response latency for it.
    pub fn needs_latency(self) -> bool {
        self == Algorithm::P2c
    }
}

/// What one request brings to selection.
pub struct Pick<'a> {
    /// The request's hash key, for [`Algorithm::Hash`]; `None` falls back to round robin.
    pub key: Option<u64>,
    /// Randomness, injected so tests are deterministic (each worker owns one).
    pub rng: &'a mut fastrand::Rng,
}

/// One algorithm over one backend set.
pub trait Select: Send + Sync {
    /// Index in `set` of this request's first choice; the pool adds the fallbacks. Should
    /// prefer routable backends; `None` when none is.
    fn first(&self, set: &[Arc<Backend>], pick: &mut Pick<'_>) -> Option<usize>;
}

/// Builds `algorithm`'s state for `set` (called when the set changes).
pub fn build(algorithm: Algorithm, set: &[Arc<Backend>]) -> Box<dyn Select> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(round_robin::RoundRobin::default()),
        Algorithm::Weighted => Box::new(weighted::Weighted::new(set)),
        Algorithm::LeastConn => Box::new(least_conn::LeastConn::default()),
        Algorithm::P2c => Box::new(p2c::P2c),
        Algorithm::Hash => Box::new(hash::Maglev::new(set)),
        Algorithm::Random => Box::new(random::Random),
    }
}

/// Index of the `k`-th routable backend (k counted modulo the routable count), or `None`.
/// Spreads a down backend's turns over all the others instead of giving them to its neighbour.
pub(crate) fn nth_routable(set: &[Arc<Backend>], k: usize) -> Option<usize> {
    let routable = set.iter().filter(|b| b.is_routable()).count();
    if routable == 0 {
        return None;
    }
    set.iter()
        .enumerate()
        .filter(|(_, b)| b.is_routable())
        .nth(k % routable)
        .map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::core::addr::Target;

    /// Backends on ports 1..=n with the given weights (empty: all 1).
    pub fn set(n: u16, weights: &[u32]) -> Vec<Arc<Backend>> {
        (1..=n)
            .map(|p| {
                let t = Target::parse(&format!(":{p}")).unwrap();
                let w = weights.get(p as usize - 1).copied().unwrap_or(1);
                Arc::new(Backend::weighted(t, w))
            })
            .collect()
    }

    /// Counts first choices per backend over `rounds` picks with a seeded RNG.
    pub fn spread(s: &dyn Select, set: &[Arc<Backend>], rounds: usize) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0; set.len()];
        for _ in 0..rounds {
            let mut p = Pick {
                key: None,
                rng: &mut rng,
            };
            counts[s.first(set, &mut p).unwrap()] += 1;
        }
        counts
    }
}
