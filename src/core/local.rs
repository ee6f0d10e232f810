//! Running a worker's `LocalSet` in whole turns: every task that is ready runs before the worker
//! polls its sockets again.
//!
//! A `LocalSet` runs at most 61 of its tasks each time the runtime polls it, then wakes itself,
//! and the runtime polls epoll (without blocking) before it polls the set again. A proxied
//! request is four or five task polls, so a busy worker cut its turns every dozen requests:
//! it read 61 tasks' worth, polled epoll, and only then wrote what it had read, mixed with
//! the next reads. HAProxy on the same load takes some 45 events a poll and does all of a
//! turn's reads, then all its writes.
//!
//! [`block_on`] polls the set again at once while the set still has tasks queued, up to
//! [`TURNS`] times, before it lets the runtime poll the driver (which also runs the timers).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Polls of the set per poll of the driver: at most 8 × 61 task polls, about 100 proxied
/// requests, between two looks at the sockets and timers (HAProxy's default is 200 tasks).
pub const TURNS: usize = 8;

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
            for _ in 0..TURNS {
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
/// runtime too, so none is lost when the turns run out or the wake comes from another thread
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

    /// Runs `f` on its own thread and fails if it has not finished within 20 s (a lost wake
    /// would hang the worker).
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("a wake was lost: the set stalled")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn more_ready_tasks_than_a_turn_all_finish() {
        let n = within(|| {
            let (rt, local) = (runtime(), tokio::task::LocalSet::new());
            block_on(&rt, &local, async {
                let done = Rc::new(std::cell::Cell::new(0));
                let tasks: Vec<_> = (0..5000)
                    .map(|_| {
                        let done = done.clone();
                        tokio::task::spawn_local(async move {
                            for _ in 0..3 {
                                crate::core::server::after_ready_tasks().await;
                            }
                            done.set(done.get() + 1);
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                done.get()
            })
        });
        assert_eq!(n, 5000);
    }

    #[test]
    fn wakes_from_other_threads_and_timers_arrive() {
        let got = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        within(move || {
            let (rt, local) = (runtime(), tokio::task::LocalSet::new());
            block_on(&rt, &local, async move {
                for round in 0..200 {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let sender = std::thread::spawn(move || tx.send(round).unwrap());
                    // A busy neighbour keeps the set requeueing while the wake comes in.
                    let busy = tokio::task::spawn_local(async {
                        for _ in 0..100 {
                            tokio::task::yield_now().await;
                        }
                    });
                    g.fetch_add(rx.await.unwrap() - round + 1, SeqCst);
                    busy.await.unwrap();
                    sender.join().unwrap();
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            })
        });
        assert_eq!(got.load(SeqCst), 200);
    }
}
