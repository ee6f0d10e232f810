//! A periodic timer that costs nothing to poll between its ticks.
//!
//! A connection's task selects over its hyper connection and its one timer, so every poll of the
//! task (five per proxied request) polled the timer too: tokio's `Interval` re-registers the
//! task's waker and spends co-operative budget each time, some 190 instructions, about 3% of a
//! proxied request's user-space instructions. A [`Ticker`] polls its interval with a waker of
//! its own, and polls it again only once that waker has fired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// A periodic timer (missed ticks are delayed, not bunched) whose poll between ticks is a flag
/// check.
pub struct Ticker {
    interval: Interval,
    /// What the interval's waker sets, and the task it passes the wake on to.
    fired: Arc<Fired>,
    /// The waker the interval is polled with: it wakes `fired`.
    waker: Waker,
    /// The task's waker as last stored in `fired` (kept here to compare without a lock).
    task: Option<Waker>,
    /// The interval was last polled pending, so its waker will fire at the next tick.
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

impl Ticker {
    /// Ticks first at `start`, then every `period`.
    pub fn new(start: Instant, period: Duration) -> Ticker {
        let mut interval = tokio::time::interval_at(start, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let fired = Arc::new(Fired {
            fired: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        Ticker {
            interval,
            waker: Waker::from(fired.clone()),
            fired,
            task: None,
            waiting: false,
        }
    }

    /// The instant of the tick that has come, if one has; else the task in `cx` is woken at
    /// the next one.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
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
        let polled = self
            .interval
            .poll_tick(&mut Context::from_waker(&self.waker));
        self.waiting = polled.is_pending();
        polled
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
