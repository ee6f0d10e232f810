//! Smooth weighted round robin, as nginx: the interleaved order is computed once per backend set
//! (weights 5,1,1 give a a b a c a a, not a a a a a b c) and each pick is one `fetch_add` into it.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::{Pick, Select};
use crate::core::backend::Backend;

/// Longest precomputed sequence; larger weight sums are scaled down to fit.
const MAX_SEQUENCE: u64 = 10_000;

/// A weighted order and a cursor into it.
pub struct Weighted {
    sequence: Vec<u32>,
    next: AtomicUsize,
}

impl Weighted {
    /// Computes the order for `set`'s weights.
    pub fn new(set: &[Arc<Backend>]) -> Weighted {
        let weights: Vec<u64> = set.iter().map(|b| u64::from(b.weight())).collect();
        Weighted {
            sequence: smooth_sequence(&weights),
            next: AtomicUsize::new(0),
        }
    }
}

impl Select for Weighted {
    fn first(&self, set: &[Arc<Backend>], _: &mut Pick<'_>) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let at = self.next.fetch_add(1, Relaxed);
        // A backend that is out gives its turn to the next one in the sequence, so the others
        // keep their relative shares.
        (0..len)
            .map(|k| self.sequence[(at + k) % len] as usize)
            .find(|&i| set.get(i).is_some_and(|b| b.is_routable()))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One full cycle of nginx's smooth weighted round robin over `weights` (indices into them),
/// reduced by their common divisor and scaled to at most [`MAX_SEQUENCE`] picks.
pub fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w.max(1)));
    let mut w: Vec<i64> = weights
        .iter()
        .map(|&x| (x.max(1) / g.max(1)) as i64)
        .collect();
    let sum: i64 = w.iter().sum();
    if sum as u64 > MAX_SEQUENCE {
        for x in &mut w {
            *x = ((*x as u64 * MAX_SEQUENCE / sum as u64) as i64).max(1);
        }
    }
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, x) in current.iter_mut().zip(&w) {
            *c += x;
        }
        let best = (0..w.len()).fold(0, |b, i| if current[i] > current[b] { i } else { b });
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{set, spread};
    use super::*;

    #[test]
    fn nginx_order_without_bursts() {
        let names = |s: Vec<u32>| {
            s.iter()
                .map(|&i| (b'a' + i as u8) as char)
                .collect::<String>()
        };
        assert_eq!(names(smooth_sequence(&[5, 1, 1])), "aabacaa");
        assert_eq!(names(smooth_sequence(&[3, 1])), "aaba");
        assert_eq!(
            names(smooth_sequence(&[2, 2])),
            "ab",
            "reduced by the common divisor"
        );
        assert!(smooth_sequence(&[1_000_000, 1]).len() as u64 <= MAX_SEQUENCE + 1);
    }

    #[test]
    fn three_to_one() {
        let s = set(2, &[3, 1]);
        let w = Weighted::new(&s);
        assert_eq!(spread(&w, &s, 400), [300, 100]);
    }

    #[test]
    fn a_down_backend_keeps_the_others_ratio() {
        let s = set(3, &[3, 1, 2]);
        s[0].set_healthy(false);
        let w = Weighted::new(&s);
        let c = spread(&w, &s, 600);
        assert_eq!(c[0], 0);
        assert_eq!(c[1] + c[2], 600);
        assert!(c[2] > c[1], "{c:?}");
    }
}
