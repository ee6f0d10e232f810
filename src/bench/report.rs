//! The report: a text summary like oha's (colours and a histogram on a terminal) or one JSON
//! object whose schema the README documents.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::plan::Plan;
use super::recorder::Recorder;
use crate::term::{bold, dim, green, red, yellow};

/// Percentiles reported, with their JSON key and text label.
const PERCENTILES: [(f64, &str, &str); 7] = [
    (50.0, "p50", "p50"),
    (75.0, "p75", "p75"),
    (90.0, "p90", "p90"),
    (95.0, "p95", "p95"),
    (99.0, "p99", "p99"),
    (99.9, "p999", "p99.9"),
    (99.99, "p9999", "p99.99"),
];

/// A finished run, ready to print.
pub struct Report<'a> {
    /// The plan it ran.
    pub plan: &'a Plan,
    /// Every thread's measurements merged.
    pub rec: &'a Recorder,
    /// From the start of measuring to the end of the last request loop.
    pub duration: Duration,
    /// Worker threads used.
    pub threads: usize,
    /// Ended early by Ctrl-C.
    pub interrupted: bool,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles, max, min, mean and stdev in milliseconds; `null` values when nothing answered.
fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = Map::new();
    let empty = h.is_empty();
    let val = |v: f64| if empty { Value::Null } else { json!(v) };
    for (q, key, _) in PERCENTILES {
        m.insert(key.into(), val(ms(h.value_at_percentile(q))));
    }
    m.insert("max".into(), val(ms(h.max())));
    m.insert("min".into(), val(ms(h.min())));
    m.insert("mean".into(), val(h.mean() / 1000.0));
    m.insert("stdev".into(), val(h.stdev() / 1000.0));
    Value::Object(m)
}

impl Report<'_> {
    fn secs(&self) -> f64 {
        self.duration.as_secs_f64()
    }

    fn per_sec(&self) -> f64 {
        if self.secs() > 0.0 {
            self.rec.requests as f64 / self.secs()
        } else {
            0.0
        }
    }

    fn statuses(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.rec
            .status
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code, *n))
    }

    /// Group values (absent header excluded) with counts, largest first, then by value.
    fn groups(&self) -> Vec<(&str, u64)> {
        let mut g: Vec<(&str, u64)> = self
            .rec
            .groups
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        g.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| natural(a.0, b.0)));
        g
    }

    /// Min, mean and max responses per second over the run's full seconds (two at least).
    fn per_second_spread(&self) -> Option<(u64, f64, u64)> {
        let full = (self.duration.as_secs() as usize).min(self.rec.timeline.len());
        let secs: Vec<u64> = self.rec.timeline[..full]
            .iter()
            .map(|s| s.responses)
            .collect();
        let (lo, hi) = (secs.iter().min()?, secs.iter().max()?);
        (secs.len() >= 2).then(|| {
            (
                *lo,
                secs.iter().sum::<u64>() as f64 / secs.len() as f64,
                *hi,
            )
        })
    }

    fn answered(&self) -> u64 {
        self.rec.latency.len()
    }

    /// The one JSON object printed by `--json`:
    ///
    /// - `url`, `method`, `http_version` ("1.1" or "2"), `connections`, `threads`
    /// - `summary`: `requests` (attempts measured), `successes`, `failures` (transport errors
    ///   plus 5xx answers), `duration_s`, `requests_per_sec`, `bytes_received` (bodies),
    ///   `interrupted` (Ctrl-C)
    /// - `latency_ms`: `p50 p75 p90 p95 p99 p999 p9999 max min mean stdev` of answered requests
    ///   (corrected with `--rate`); `null` when nothing was answered
    /// - `status_codes`: `{"200": n}`; `errors`: `{"connection refused": n}` by kind;
    ///   `error_examples`: the first message of each kind
    /// - `group_by` (header name), `groups`: `{value: n}`, `ungrouped`: answers without it
    /// - `timeline`: `[{second, responses, failures}]` from the start of measuring
    /// - `rate`: `null`, or `{target_per_sec, achieved_per_sec, behind_schedule,
    ///   uncorrected_latency_ms}` with `--rate`
    pub fn json(&self) -> Value {
        let r = self.rec;
        let status: Map<String, Value> = self
            .statuses()
            .map(|(c, n)| (c.to_string(), json!(n)))
            .collect();
        let errors: Map<String, Value> = r
            .errors
            .iter()
            .map(|(k, n)| (k.as_str().to_string(), json!(n)))
            .collect();
        let groups: Map<String, Value> = self
            .groups()
            .into_iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        let timeline: Vec<Value> = r
            .timeline
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"second": i, "responses": s.responses, "failures": s.failures}))
            .collect();
        let rate = match (self.plan.rate, &r.uncorrected) {
            (Some(target), Some(unc)) => json!({
                "target_per_sec": target,
                "achieved_per_sec": self.per_sec(),
                "behind_schedule": r.behind,
                "uncorrected_latency_ms": latency_json(unc),
            }),
            _ => Value::Null,
        };
        json!({
            "url": self.plan.url,
            "method": self.plan.method.as_str(),
            "http_version": if self.plan.http2 { "2" } else { "1.1" },
            "connections": self.plan.connections,
            "threads": self.threads,
            "summary": {
                "requests": r.requests,
                "successes": r.successes(),
                "failures": r.failures,
                "duration_s": self.secs(),
                "requests_per_sec": self.per_sec(),
                "bytes_received": r.bytes,
                "interrupted": self.interrupted,
            },
            "latency_ms": latency_json(&r.latency),
            "status_codes": status,
            "errors": errors,
            "error_examples": r.examples.iter().map(|(k, m)| (k.as_str().to_string(), json!(m))).collect::<Map<String, Value>>(),
            "group_by": self.plan.group_by.as_str(),
            "groups": groups,
            "ungrouped": self.answered() - self.groups().iter().map(|g| g.1).sum::<u64>(),
            "timeline": timeline,
            "rate": rate,
        })
    }

    /// The text summary; `tty` adds the latency histogram.
    pub fn text(&self, tty: bool) -> String {
        let r = self.rec;
        let mut o = String::new();
        let _ = writeln!(o, "{}", bold("Summary"));
        if self.interrupted {
            let _ = writeln!(
                o,
                "  {}",
                yellow("interrupted: the run ended early (Ctrl-C)")
            );
        }
        let failed = if r.failures > 0 {
            red(&format!("{} failed", r.failures))
        } else {
            green("0 failed")
        };
        let _ = writeln!(
            o,
            "  Requests:      {} ({} succeeded, {failed})",
            r.requests,
            r.successes()
        );
        let _ = writeln!(o, "  Duration:      {:.3} s", self.secs());
        let _ = writeln!(o, "  Requests/sec:  {:.1}", self.per_sec());
        let _ = writeln!(o, "  Received:      {}", bytes(r.bytes));
        if let Some((lo, mean, hi)) = self.per_second_spread() {
            let _ = writeln!(
                o,
                "  Per second:    min {lo}, mean {mean:.0}, max {hi} (full seconds)"
            );
        }
        if let Some(target) = self.plan.rate {
            let _ = writeln!(
                o,
                "  Target rate:   {target} req/s, {} sent behind schedule",
                r.behind
            );
        }
        if self.answered() > 0 {
            o.push('\n');
            self.latency_text(&mut o);
            if tty {
                o.push('\n');
                histogram_text(&mut o, &r.latency);
            }
        }
        let statuses: Vec<_> = self.statuses().collect();
        if !statuses.is_empty() {
            let _ = writeln!(o, "\n{}", bold("Status codes"));
            for (code, n) in statuses {
                let c = code.to_string();
                let c = match code {
                    200..=299 => green(&c),
                    400..=499 => yellow(&c),
                    500.. => red(&c),
                    _ => c,
                };
                let _ = writeln!(o, "  {c}  {n}");
            }
        }
        if !r.errors.is_empty() {
            let _ = writeln!(o, "\n{}", bold("Errors"));
            let width = r.errors.keys().map(|k| k.as_str().len()).max().unwrap_or(0);
            for (k, n) in &r.errors {
                let _ = writeln!(o, "  {}  {n}", red(&format!("{:<width$}", k.as_str())));
                if let Some(m) = r.examples.get(k) {
                    let _ = writeln!(o, "    {}", dim(&format!("e.g. {m}")));
                }
            }
        }
        let groups = self.groups();
        if !groups.is_empty() {
            let _ = writeln!(
                o,
                "\n{}",
                bold(&format!("Spread over {}", self.plan.group_by))
            );
            let width = groups.iter().map(|g| g.0.len()).max().unwrap_or(0);
            let answered = self.answered().max(1) as f64;
            for (k, n) in &groups {
                let share = *n as f64 / answered;
                let bar = "■".repeat((share * 30.0).round() as usize);
                let _ = writeln!(o, "  {k:<width$}  {n:>8}  {:>5.1}%  {bar}", share * 100.0);
            }
            let ungrouped = self.answered() - groups.iter().map(|g| g.1).sum::<u64>();
            if ungrouped > 0 {
                let _ = writeln!(
                    o,
                    "  {}",
                    dim(&format!("{ungrouped} answers without the header"))
                );
            }
        }
        o.truncate(o.trim_end().len());
        o
    }

    fn latency_text(&self, o: &mut String) {
        let unc = self.rec.uncorrected.as_ref();
        let title = if unc.is_some() {
            "Latency (ms)       corrected  uncorrected"
        } else {
            "Latency (ms)"
        };
        let _ = writeln!(o, "{}", bold(title));
        let h = &self.rec.latency;
        let mut rows: Vec<(&str, f64, Option<f64>)> = PERCENTILES
            .iter()
            .map(|(q, _, label)| {
                (
                    *label,
                    ms(h.value_at_percentile(*q)),
                    unc.map(|u| ms(u.value_at_percentile(*q))),
                )
            })
            .collect();
        rows.push(("max", ms(h.max()), unc.map(|u| ms(u.max()))));
        rows.push(("mean", h.mean() / 1000.0, unc.map(|u| u.mean() / 1000.0)));
        for (label, v, u) in rows {
            match u {
                Some(u) => {
                    let _ = writeln!(o, "  {label:<8} {v:>16.3}  {u:>11.3}");
                }
                None => {
                    let _ = writeln!(o, "  {label:<8} {v:>10.3}");
                }
            }
        }
    }
}

/// Up to ten latency buckets from min to max, log-spaced so the body and the tail both show;
/// each row is the bucket's upper bound, its count and a bar.
fn histogram_text(o: &mut String, h: &Histogram<u64>) {
    let _ = writeln!(o, "{}", bold("Histogram (ms)"));
    let (lo, hi) = (h.min().max(1), h.max().max(1));
    let ratio = hi as f64 / lo as f64;
    let mut counts: Vec<(u64, u64)> = Vec::new();
    let mut from = lo;
    for i in 1..=10 {
        let to = ((lo as f64 * ratio.powf(f64::from(i) / 10.0)).round() as u64).clamp(from, hi);
        if counts.last().is_some_and(|c| c.0 >= to) {
            continue;
        }
        counts.push((to, h.count_between(from, to)));
        from = h.next_non_equivalent(to);
    }
    let top = counts.iter().map(|c| c.1).max().unwrap_or(1).max(1);
    for (to, n) in counts {
        let bar = "■".repeat((n * 40 / top) as usize);
        let _ = writeln!(o, "  {:>10.3} [{n:>8}] {}", ms(to), green(&bar));
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// Orders "2" before "10": numbers by value, then text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_rows_cover_every_answer_once() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [90, 100, 150, 400, 1_000, 2_500, 80_000, 80_001, 1_000_000] {
            h.record(v).unwrap();
        }
        let mut o = String::new();
        histogram_text(&mut o, &h);
        let total: u64 = o
            .lines()
            .filter_map(|l| {
                l.split('[')
                    .nth(1)?
                    .split(']')
                    .next()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert_eq!(total, 9, "{o}");
        assert!(o.lines().count() <= 11, "{o}");
    }

    #[test]
    fn per_second_spread_uses_full_seconds() {
        use crate::bench::recorder::{Recorder, Second};
        let plan = crate::bench::plan::test_plan(&["-z", "3s", ":1"]);
        let mut rec = Recorder::new(false);
        rec.timeline = [10, 30, 20, 1]
            .map(|responses| Second {
                responses,
                failures: 0,
            })
            .to_vec();
        let mut report = Report {
            plan: &plan,
            rec: &rec,
            duration: Duration::from_millis(3500),
            threads: 1,
            interrupted: false,
        };
        assert_eq!(report.per_second_spread(), Some((10, 20.0, 30)));
        report.duration = Duration::from_millis(1500);
        assert_eq!(report.per_second_spread(), None);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["10", "2", "b", "1"];
        v.sort_by(|a, b| natural(a, b));
        assert_eq!(v, ["1", "2", "10", "b"]);
    }
}
