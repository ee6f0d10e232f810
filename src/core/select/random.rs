//! Uniform random choice over the routable backends, from the injected RNG.

use std::sync::Arc;

use super::{nth_routable, Pick, Select};
use crate::core::backend::Backend;

/// Picks uniformly at random.
pub struct Random;

impl Select for Random {
    fn first(&self, set: &[Arc<Backend>], pick: &mut Pick<'_>) -> Option<usize> {
        nth_routable(set, pick.rng.usize(..usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{set, spread};
    use super::*;

    #[test]
    fn roughly_uniform_and_only_routable() {
        let s = set(4, &[]);
        s[3].set_healthy(false);
        let c = spread(&Random, &s, 3000);
        assert_eq!(c[3], 0);
        for n in &c[..3] {
            assert!((850..1150).contains(n), "{c:?}");
        }
    }
}
