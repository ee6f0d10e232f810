//! Passive health (outlier detection): a backend that fails real traffic `eject_after` times in a
//! row is ejected for a time that doubles with each ejection in a row, capped, and never more
//! than half the pool at once. Pure policy over the backend's atomics; the caller logs.

use std::sync::Arc;
use std::time::Duration;

use super::backend::Backend;

/// First ejection time.
pub const BASE_EJECTION: Duration = Duration::from_secs(30);
/// Longest ejection time.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Outlier detection settings.
#[derive(Clone, Copy, Debug)]
pub struct Outlier {
    /// Failures in a row that eject a backend; 0 turns passive health off.
    pub eject_after: u32,
    /// First ejection time.
    pub base: Duration,
    /// Cap on the ejection time.
    pub max: Duration,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            eject_after: 5,
            base: BASE_EJECTION,
            max: MAX_EJECTION,
        }
    }
}

impl Outlier {
    /// Ejection time for the `streak`-th ejection in a row (0-based): base, 2×base, 4×base… capped.
    pub fn ejection_time(&self, streak: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << streak.min(16))
            .min(self.max)
    }

    /// Feeds one failed request at `b` (a member of `set`) at clock time `now_ms`; returns the
    /// ejection time when this failure ejected it. Exactly one caller wins each ejection.
    pub fn on_failure(&self, b: &Backend, set: &[Arc<Backend>], now_ms: u64) -> Option<Duration> {
        let failures = b.record_failure();
        if self.eject_after == 0 || failures < self.eject_after {
            return None;
        }
        let e = b.ejection();
        if e.until > now_ms {
            return None; // already out
        }
        let out = set.iter().filter(|x| x.is_ejected_at(now_ms)).count();
        if (out + 1) * 2 > set.len() {
            return None; // never more than half the pool
        }
        // An ejection long over no longer counts toward the growing time.
        let max_ms = self.max.as_millis() as u64;
        let streak = if e.last_end != 0 && now_ms.saturating_sub(e.last_end) > max_ms {
            0
        } else {
            e.streak
        };
        let time = self.ejection_time(streak);
        let end = now_ms.saturating_add(time.as_millis() as u64);
        b.try_eject(e.until, end, streak.saturating_add(1))
            .then_some(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::addr::Target;

    fn set(n: u16) -> Vec<Arc<Backend>> {
        (1..=n)
            .map(|p| Arc::new(Backend::new(Target::parse(&format!(":{p}")).unwrap())))
            .collect()
    }

    #[test]
    fn ejects_after_threshold_once() {
        let o = Outlier {
            eject_after: 3,
            ..Outlier::default()
        };
        let s = set(4);
        assert_eq!(o.on_failure(&s[0], &s, 1000), None);
        assert_eq!(o.on_failure(&s[0], &s, 1000), None);
        assert_eq!(o.on_failure(&s[0], &s, 1000), Some(BASE_EJECTION));
        assert!(s[0].is_ejected_at(1000 + 29_999));
        assert!(!s[0].is_ejected_at(1000 + 30_000));
        for _ in 0..5 {
            assert_eq!(o.on_failure(&s[0], &s, 2000), None, "ejected once only");
        }
    }

    #[test]
    fn time_grows_and_caps() {
        let o = Outlier::default();
        let secs: Vec<u64> = (0..6).map(|k| o.ejection_time(k).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 300, 300]);
        let s = set(2);
        let mut now = 1;
        for want in [30, 60, 120] {
            let got = (0..5).find_map(|_| o.on_failure(&s[0], &s, now));
            assert_eq!(got, Some(Duration::from_secs(want)));
            now += want * 1000; // the ejection ends; it fails again at once
        }
        // Long after the last ejection the time starts over.
        now += 10 * 60 * 1000;
        let got = (0..5).find_map(|_| o.on_failure(&s[0], &s, now));
        assert_eq!(got, Some(BASE_EJECTION));
    }

    #[test]
    fn never_more_than_half() {
        let o = Outlier {
            eject_after: 1,
            ..Outlier::default()
        };
        let s = set(3);
        assert!(o.on_failure(&s[0], &s, 10).is_some());
        assert!(
            o.on_failure(&s[1], &s, 10).is_none(),
            "two of three is over half"
        );
        let s = set(4);
        assert!(o.on_failure(&s[0], &s, 10).is_some());
        assert!(o.on_failure(&s[1], &s, 10).is_some());
        assert!(o.on_failure(&s[2], &s, 10).is_none());
    }

    #[test]
    fn off_when_zero() {
        let o = Outlier {
            eject_after: 0,
            ..Outlier::default()
        };
        let s = set(2);
        for _ in 0..100 {
            assert!(o.on_failure(&s[0], &s, 10).is_none());
        }
    }
}
