//! A periodic timer that costs nothing to poll between its ticks, and the gate it is built on.
//!
//! A connection's task selects over its hyper connection and its one timer, so every poll of the
//! task (five per proxied request) polled the timer too: tokio's `Interval` re-registers the
//! task's waker and spends co-operative budget each time, some 190 instructions, about 3% of a
//! proxied request's user-space instructions. A [`Ticker`] polls its interval with a waker of
//! its own, and polls it again only once that waker has fired. A [`Gate`] does that for any
//! futures a task polls beside its main work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// A periodic timer (missed ticks are delayed, not bunched) whose poll between ticks is a flag
/// check.
pub struct Ticker {
    interval: Interval,
    gate: Gate,
}

impl Ticker {
    /// Ticks first at `start`, then every `period`.
    pub fn new(start: Instant, period: Duration) -> Ticker {
        let mut interval = tokio::time::interval_at(start, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker {
            interval,
            gate: Gate::new(),
        }
    }

    /// The instant of the tick that has come, if one has; else the task in `cx` is woken at
    /// the next one.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let interval = &mut self.interval;
        self.gate.poll(cx, |inner| interval.poll_tick(inner))
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }
}

/// Polls what it guards (timers, channels: whatever registers a waker when polled) with a waker
/// of its own, and again only once that waker has been woken; until then a poll is a flag
/// check. The wake is passed on to the task that polls the gate.
pub struct Gate {
    /// What the gate's waker sets, and the task it passes the wake on to.
    fired: Arc<Fired>,
    /// The waker what is guarded is polled with: it wakes `fired`.
    waker: Waker,
    /// The task's waker as last stored in `fired` (kept here to compare without a lock).
    task: Option<Waker>,
    /// What is guarded was last polled pending, so the gate's waker will be woken when it can
    /// go on.
    waiting: bool,
}

struct Fired {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Fired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    /// A gate that has guarded nothing yet: its first poll runs what it guards.
    pub fn new() -> Gate {
        let fired = Arc::new(Fired {
            fired: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        Gate {
            waker: Waker::from(fired.clone()),
            fired,
            task: None,
            waiting: false,
        }
    }

    /// Runs `guarded` with the gate's waker, unless it was last pending and nothing has woken
    /// the gate since: then `Pending` at once, and the task in `cx` is woken when the gate is.
    pub fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        guarded: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            *self
                .fired
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(w.clone());
            self.task = Some(w);
        }
        if self.waiting && !self.fired.fired.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        let polled = guarded(&mut Context::from_waker(&self.waker));
        self.waiting = polled.is_pending();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// Ticks arrive once per period, in order, however often the ticker is polled between them.
    #[tokio::test(start_paused = true)]
    async fn ticks_once_per_period_however_often_polled() {
        let start = Instant::now();
        let period = Duration::from_millis(100);
        let mut ticker = Ticker::new(start + period, period);
        let mut ticks = Vec::new();
        let mut other = tokio::time::interval(Duration::from_millis(7));
        while ticks.len() < 5 {
            tokio::select! {
                biased;
                now = ticker.tick() => ticks.push(now - start),
                // Another branch wakes the task far more often than the ticker fires.
                _ = other.tick() => {}
            }
        }
        let want: Vec<Duration> = (1..=5).map(|k| period * k).collect();
        assert_eq!(ticks, want);
    }

    /// A task that waits on the ticker alone is woken by it: the wake is passed on.
    #[tokio::test(start_paused = true)]
    async fn a_task_waiting_only_on_the_ticker_is_woken() {
        let start = Instant::now();
        let mut ticker = Ticker::new(start + Duration::from_secs(1), Duration::from_secs(1));
        let task = tokio::spawn(async move {
            let first = ticker.tick().await;
            let second = ticker.tick().await;
            (first - start, second - start)
        });
        let got = tokio::time::timeout(Duration::from_secs(10), task).await;
        let (first, second) = got.expect("the ticker's wake was lost").unwrap();
        assert_eq!(
            (first, second),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
    }

    /// What a gate guards runs once, then not again until its own waker is woken, however
    /// often the task polls the gate; and that wake reaches the task.
    #[tokio::test(start_paused = true)]
    async fn a_gate_runs_what_it_guards_only_after_its_wake() {
        let mut gate = Gate::new();
        let sleep = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(sleep);
        let mut runs = 0;
        let mut other = tokio::time::interval(Duration::from_millis(10));
        let start = Instant::now();
        let done = loop {
            tokio::select! {
                biased;
                at = std::future::poll_fn(|cx| gate.poll(cx, |inner| {
                    runs += 1;
                    sleep.as_mut().poll(inner).map(|()| Instant::now())
                })) => break at,
                // Another branch wakes the task a hundred times before the sleep ends.
                _ = other.tick() => {}
            }
        };
        assert_eq!(done - start, Duration::from_secs(1));
        assert_eq!(
            runs, 2,
            "the guarded sleep was polled at every poll of the task"
        );

        // A task that waits on the gate alone is woken through it.
        let task = tokio::spawn(async move {
            let mut gate = Gate::new();
            let sleep = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(sleep);
            std::future::poll_fn(|cx| gate.poll(cx, |inner| sleep.as_mut().poll(inner))).await
        });
        let got = tokio::time::timeout(Duration::from_secs(10), task).await;
        got.expect("the gate's wake was lost").unwrap();
    }
}
