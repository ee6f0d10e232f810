//! Running a worker's `LocalSet` in whole turns: every task that is ready runs before the worker
//! polls its sockets again.
//!
//! A `LocalSet` runs at most 61 of its tasks each time the runtime polls it, then wakes itself,
//! and the runtime polls epoll (without blocking) before it polls the set again. A proxied
//! request is five or six task polls, so a busy worker cut its turns every dozen requests:
//! it read 61 tasks' worth, polled epoll, and only then wrote what it had read, mixed with
//! the next reads. HAProxy on the same load takes some 45 events a poll and does all of a
//! turn's reads, then all its writes.
//!
//! [`block_on`] polls the set again at once while the set still has tasks queued, up to
//! [`PASSES`] times, before it lets the runtime poll the driver (which also runs the timers) and
//! run its own tasks: those spawned with `tokio::spawn`, such as hyper's client connections to
//! TLS and HTTP/2 backends, wait for the end of the turn. So do tasks that yield with tokio's
//! `yield_now` or run out of their co-operative budget: tokio defers those until after the
//! next poll of the driver, which ends a turn early.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Passes over the set per poll of the driver: at most 8 × 61 task polls, some 80 proxied
/// requests, between two looks at the sockets and timers (HAProxy 2.6's `tune.runqueue-depth`
/// is 35 to 280 tasks, depending on its thread count).
pub const PASSES: usize = 8;

/// Runs `fut` on `local` within `rt`, as `LocalSet::block_on` does, in whole turns.
pub fn block_on<F: Future>(
    rt: &tokio::runtime::Runtime,
    local: &tokio::task::LocalSet,
    fut: F,
) -> F::Output {
    rt.block_on(async {
        let mut run = pin!(local.run_until(fut));
        let mut relay: Option<(Arc<Relay>, Waker)> = None;
        std::future::poll_fn(move |cx| {
            let (r, waker) = match relay.take() {
                Some((r, w)) if r.to.will_wake(cx.waker()) => relay.insert((r, w)),
                _ => {
                    let r = Arc::new(Relay {
                        again: AtomicBool::new(false),
                        to: cx.waker().clone(),
                    });
                    let w = Waker::from(r.clone());
                    relay.insert((r, w))
                }
            };
            let mut inner = Context::from_waker(waker);
            // A wake from before this poll is the reason for it, not a reason for a second pass.
            r.again.store(false, Relaxed);
            for _ in 0..PASSES {
                if let Poll::Ready(v) = run.as_mut().poll(&mut inner) {
                    return Poll::Ready(v);
                }
                if !r.again.swap(false, Relaxed) {
                    break;
                }
            }
            Poll::Pending
        })
        .await
    })
}

/// The waker the set is polled with: a wake asks for another pass, and always reaches the
/// runtime too, so none is lost when the passes run out or the wake comes from another thread
/// as a pass ends. (From the worker's own thread, waking the runtime only sets a flag.)
struct Relay {
    again: AtomicBool,
    to: Waker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.again.store(true, Relaxed);
        self.to.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// Runs the future `make` returns on a worker of its own (a current-thread runtime and a
    /// `LocalSet` driven by [`block_on`]), and fails if it has not finished within 20 s: a lost
    /// wake would hang the worker.
    fn on_worker<T, Fut>(make: impl FnOnce() -> Fut + Send + 'static) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T>,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            tx.send(block_on(&rt, &local, make())).unwrap()
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("a wake was lost: the set stalled")
    }

    /// Spawns `n` local tasks that each requeue three times (four polls), then return `then()`.
    fn requeueing<T: 'static>(
        n: usize,
        then: impl Fn() -> T + 'static,
    ) -> Vec<tokio::task::JoinHandle<T>> {
        let then = Rc::new(then);
        (0..n)
            .map(|_| {
                let then = then.clone();
                tokio::task::spawn_local(async move {
                    for _ in 0..3 {
                        crate::core::server::after_ready_tasks().await;
                    }
                    then()
                })
            })
            .collect()
    }

    #[test]
    fn more_ready_tasks_than_a_turn_all_finish() {
        let n = on_worker(|| async {
            let done = Rc::new(std::cell::Cell::new(0));
            let d = done.clone();
            for t in requeueing(5000, move || d.set(d.get() + 1)) {
                t.await.unwrap();
            }
            done.get()
        });
        assert_eq!(n, 5000);
    }

    #[test]
    fn a_turn_runs_every_ready_task_before_the_runtime_gets_its_turn() {
        let seen_early = on_worker(|| async {
            // A task of the runtime's own queue runs only between polls of the set.
            let ran = Arc::new(AtomicBool::new(false));
            let r = ran.clone();
            let runtime_task = tokio::spawn(async move { r.store(true, SeqCst) });
            // 100 tasks × 4 polls: more than one pass of 61, less than a whole turn.
            let r = ran.clone();
            let mut early = 0;
            for t in requeueing(100, move || r.load(SeqCst)) {
                early += usize::from(t.await.unwrap());
            }
            runtime_task.await.unwrap();
            assert!(ran.load(SeqCst));
            early
        });
        assert_eq!(seen_early, 0, "the runtime ran in the middle of a turn");
    }

    #[test]
    fn wakes_from_other_threads_and_timers_arrive() {
        let got = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        on_worker(move || async move {
            for round in 0..200 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let sender = std::thread::spawn(move || tx.send(round).unwrap());
                // Busy neighbours keep the set in its passes while the wake comes in.
                let busy = tokio::task::spawn_local(async {
                    for _ in 0..200 {
                        crate::core::server::after_ready_tasks().await;
                    }
                });
                assert_eq!(rx.await.unwrap(), round);
                g.fetch_add(1, SeqCst);
                busy.await.unwrap();
                sender.join().unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        });
        assert_eq!(got.load(SeqCst), 200);
    }
}
