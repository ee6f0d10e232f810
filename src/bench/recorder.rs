//! Per-thread measurements, merged once at the end: latency histograms (flat memory however long
//! the run), counts by status code and error kind, the spread over group-by values, and a
//! per-second timeline.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::core::client::ErrorKind;

/// Highest latency the histograms track, in microseconds (one hour); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One second of the timeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Second {
    /// Responses completed in this second.
    pub responses: u64,
    /// Failed attempts (transport errors and 5xx answers) in this second.
    pub failures: u64,
}

/// Distinct group-by values kept; a header unique per answer (a date, a request id) would
/// otherwise grow the report without bound.
pub const MAX_GROUPS: usize = 1000;

/// The group that answers with values beyond [`MAX_GROUPS`] count under.
pub const OTHER_GROUPS: &str = "(other values)";

/// What one worker thread saw; [`Recorder::merge`] adds threads together.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Latency of answered requests in µs: from the scheduled send time with `--rate`.
    pub latency: Histogram<u64>,
    /// With `--rate`, latency from the actual send time in µs.
    pub uncorrected: Option<Histogram<u64>>,
    /// Answers by status code (index = code).
    pub status: Vec<u64>,
    /// Failed attempts without an answer, by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first message seen for each error kind.
    pub examples: BTreeMap<ErrorKind, String>,
    /// Answers by value of the group-by header (answers without it are not counted here).
    /// At most [`MAX_GROUPS`] values; answers with further values count under
    /// [`OTHER_GROUPS`], so memory stays flat whatever the header holds.
    pub groups: HashMap<String, u64>,
    /// Per second since measuring began.
    pub timeline: Vec<Second>,
    /// With `--rate`, requests sent later than scheduled.
    pub behind: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// Attempts: answers plus errors.
    pub requests: u64,
    /// Transport errors plus 5xx answers.
    pub failures: u64,
}

fn histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

impl Recorder {
    /// An empty recorder; `corrected` adds the uncorrected histogram used with `--rate`.
    pub fn new(corrected: bool) -> Recorder {
        Recorder {
            latency: histogram(),
            uncorrected: corrected.then(histogram),
            status: vec![0; 1000],
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            groups: HashMap::new(),
            timeline: Vec::new(),
            behind: 0,
            bytes: 0,
            requests: 0,
            failures: 0,
        }
    }

    /// Adds `n` answers with group value `g` (no allocation once the value is known).
    fn count_group(&mut self, g: &str, n: u64) {
        if let Some(c) = self.groups.get_mut(g) {
            *c += n;
        } else if self.groups.len() < MAX_GROUPS {
            self.groups.insert(g.to_string(), n);
        } else {
            *self.groups.entry(OTHER_GROUPS.to_string()).or_default() += n;
        }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        if self.timeline.len() <= i {
            self.timeline.resize(i + 1, Second::default());
        }
        &mut self.timeline[i]
    }

    /// Records an answer `at` (since measuring began) with its latencies (µs) and group value.
    pub fn answer(&mut self, at: Duration, a: Answer<'_>) {
        self.requests += 1;
        self.bytes += a.bytes;
        self.latency.saturating_record(a.latency_us.max(1));
        if let Some(h) = self.uncorrected.as_mut() {
            h.saturating_record(a.uncorrected_us.max(1));
        }
        if let Some(c) = self.status.get_mut(usize::from(a.status)) {
            *c += 1;
        }
        let failed = a.status >= 500;
        self.failures += u64::from(failed);
        let sec = self.second(at);
        sec.responses += 1;
        sec.failures += u64::from(failed);
        if let Some(g) = a.group {
            self.count_group(&String::from_utf8_lossy(g), 1);
        }
    }

    /// Records a failed attempt `at` (since measuring began).
    pub fn error(&mut self, at: Duration, kind: ErrorKind) {
        self.requests += 1;
        self.failures += 1;
        *self.errors.entry(kind).or_default() += 1;
        self.second(at).failures += 1;
    }

    /// Adds another thread's measurements.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.latency.add(&other.latency);
        if let (Some(a), Some(b)) = (self.uncorrected.as_mut(), other.uncorrected.as_ref()) {
            let _ = a.add(b);
        }
        for (a, b) in self.status.iter_mut().zip(&other.status) {
            *a += b;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        for (k, v) in &other.examples {
            self.examples.entry(*k).or_insert_with(|| v.clone());
        }
        for (k, v) in &other.groups {
            self.count_group(k, *v);
        }
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize(other.timeline.len(), Second::default());
        }
        for (a, b) in self.timeline.iter_mut().zip(&other.timeline) {
            a.responses += b.responses;
            a.failures += b.failures;
        }
        self.behind += other.behind;
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.failures += other.failures;
    }

    /// Attempts that did not fail: answers with a status below 500.
    pub fn successes(&self) -> u64 {
        self.requests - self.failures
    }
}

/// One answered request, as the worker hands it to [`Recorder::answer`].
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    /// The status code.
    pub status: u16,
    /// Latency in µs (from the scheduled send time with `--rate`).
    pub latency_us: u64,
    /// Latency from the actual send time in µs.
    pub uncorrected_us: u64,
    /// The group-by header's value, when present.
    pub group: Option<&'a [u8]>,
    /// Body bytes received.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: u16, group: Option<&[u8]>) -> Answer<'_> {
        Answer {
            status,
            latency_us: 1000,
            uncorrected_us: 900,
            group,
            bytes: 10,
        }
    }

    #[test]
    fn counts_and_merges() {
        let mut a = Recorder::new(false);
        a.answer(Duration::ZERO, ok(200, Some(b"1")));
        a.answer(Duration::from_millis(1500), ok(500, Some(b"2")));
        a.error(Duration::from_secs(2), ErrorKind::ConnectionRefused);
        let mut b = Recorder::new(false);
        b.answer(Duration::ZERO, ok(200, Some(b"1")));
        b.answer(Duration::ZERO, ok(200, None));
        a.merge(&b);
        assert_eq!((a.requests, a.failures, a.successes()), (5, 2, 3));
        assert_eq!((a.status[200], a.status[500]), (3, 1));
        assert_eq!(a.errors[&ErrorKind::ConnectionRefused], 1);
        assert_eq!(a.latency.len(), 4);
        let want: HashMap<String, u64> = [("1".into(), 2), ("2".into(), 1)].into();
        assert_eq!(a.groups, want);
        // Four answers, three of them grouped: one without the header.
        let answered = a.status.iter().sum::<u64>();
        assert_eq!(answered - a.groups.values().sum::<u64>(), 1);
        assert_eq!(a.timeline.len(), 3);
        assert_eq!(a.timeline[0].responses, 3);
        assert_eq!(a.timeline[1].failures, 1);
        assert_eq!(a.timeline[2].failures, 1);
        assert_eq!(a.bytes, 40);
    }

    #[test]
    fn group_values_are_capped() {
        let mut a = Recorder::new(false);
        for i in 0..MAX_GROUPS + 500 {
            a.answer(Duration::ZERO, ok(200, Some(i.to_string().as_bytes())));
        }
        assert_eq!(
            a.groups.len(),
            MAX_GROUPS + 1,
            "the values kept plus the other bucket"
        );
        assert_eq!(a.groups[OTHER_GROUPS], 500);
        assert_eq!(a.groups.values().sum::<u64>(), (MAX_GROUPS + 500) as u64);
    }
}
