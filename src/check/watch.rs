//! The repeating modes of `lbx check`: `--watch` prints state changes until Ctrl-C, and
//! `--wait-healthy` re-probes until every target is up or the time runs out. Both judge state
//! with the shared rise/fall logic in [`Health`], fed one probe round at a time.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::report::{event_detail, event_json, event_line, Row};
use super::Plan;
use crate::core::health::{Health, State};
use crate::term;

/// Rise/fall state for each target of a plan, in target order.
struct States(Vec<Health>);

impl States {
    fn new(targets: usize, rise: u32, fall: u32) -> States {
        States((0..targets).map(|_| Health::new(rise, fall)).collect())
    }

    /// Feeds one round; calls `report(row, up)` for each target's first result and each
    /// rise/fall transition, never for an unchanged state.
    fn observe(&mut self, rows: &[Row], mut report: impl FnMut(&Row, bool)) {
        for (h, row) in self.0.iter_mut().zip(rows) {
            let first = h.state() == State::Unknown;
            let changed = h.observe(row.healthy()).is_some();
            if first || changed {
                report(row, h.is_healthy());
            }
        }
    }

    fn all_up(&self) -> bool {
        self.0.iter().all(|h| h.state() == State::Up)
    }
}

/// `--watch INTERVAL`: a round every interval until SIGINT/SIGTERM, printing only state changes
/// (a line each, or an NDJSON object each with `--json`). Returns whether all ended up healthy.
pub(super) async fn watch(plan: &Plan, rise: u32, fall: u32, interval: Duration) -> bool {
    let mut states = States::new(plan.targets.len(), rise, fall);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stop = crate::core::server::wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let rows = tokio::select! {
            rows = plan.round(plan.spec.timeout) => rows,
            _ = &mut stop => break,
        };
        let time = term::timestamp();
        states.observe(&rows, |row, up| {
            let line = if plan.json {
                event_json(&time, row, up, plan.warn_days).to_string()
            } else {
                event_line(&time, row, up, plan.warn_days)
            };
            term::out(&line);
        });
    }
    states.all_up()
}

/// `--wait-healthy`: a round every `poll` until every target is up (true) or `total` has passed
/// (false). State changes are logged to stderr; the last round is printed as in a single check.
pub(super) async fn wait_healthy(
    plan: &Plan,
    rise: u32,
    fall: u32,
    total: Duration,
    poll: Duration,
) -> bool {
    let deadline = Instant::now() + total;
    let mut states = States::new(plan.targets.len(), rise, fall);
    let mut last = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        last = plan.round(plan.spec.timeout.min(left)).await;
        states.observe(&last, |row, up| {
            let msg = format!(
                "{} {} {}",
                row.target,
                term::state_word(up),
                event_detail(row, plan.warn_days)
            );
            if up {
                term::info(msg.trim_end());
            } else {
                term::warn(msg.trim_end());
            }
        });
        if states.all_up() {
            plan.print_rows(&last);
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(poll.min(left)).await;
    }
    plan.print_rows(&last);
    let down = last.iter().filter(|r| !r.healthy()).count();
    term::error(&format!(
        "not every target was healthy within {total:?} ({down} of {} failing their last probe)",
        last.len()
    ));
    false
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::row;
    use super::*;

    /// Feeds rounds of statuses (0 = refused) and returns what would be printed per round.
    fn feed(rise: u32, fall: u32, rounds: &[&[u16]]) -> Vec<Vec<(usize, bool)>> {
        let mut states = States::new(rounds[0].len(), rise, fall);
        rounds
            .iter()
            .map(|round| {
                let rows: Vec<Row> = round.iter().map(|&s| row((s > 0).then_some(s))).collect();
                let mut printed = Vec::new();
                states.observe(&rows, |r, up| {
                    let i = rows.iter().position(|x| std::ptr::eq(x, r)).unwrap();
                    printed.push((i, up));
                });
                printed
            })
            .collect()
    }

    #[test]
    fn first_results_then_only_transitions() {
        let printed = feed(1, 2, &[&[200, 0], &[200, 0], &[503, 200], &[503, 200]]);
        assert_eq!(printed[0], vec![(0, true), (1, false)], "first results");
        assert_eq!(printed[1], vec![], "nothing changed");
        assert_eq!(printed[2], vec![(1, true)], "one failure is below fall 2");
        assert_eq!(printed[3], vec![(0, false)]);
    }

    #[test]
    fn all_up_needs_rise() {
        let mut states = States::new(1, 2, 1);
        states.observe(&[row(None)], |_, _| {});
        states.observe(&[row(Some(200))], |_, _| {});
        assert!(
            !states.all_up(),
            "one success after a failure is below rise 2"
        );
        states.observe(&[row(Some(200))], |_, _| {});
        assert!(states.all_up());
    }
}
