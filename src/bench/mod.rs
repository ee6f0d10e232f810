//! `lbx bench`: the load generator. Worker threads ([`worker`]) drive the load and record into
//! per-thread [`recorder::Recorder`]s; this module starts them, shows live progress, handles
//! Ctrl-C, merges the recorders and hands the result to [`report`].

pub mod args;
pub mod fast;
pub mod plan;
pub mod recorder;
pub mod report;
pub mod worker;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use crate::cli::BenchArgs;
use crate::core::server::default_workers;
use plan::Plan;
use recorder::Recorder;
use report::Report;
use worker::{Live, Outcome};

/// Runs a benchmark, prints its report, and returns the exit status: 0 when the run completed,
/// 1 when no request succeeded (or any failed, with `--fail-on-error`).
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = Arc::new(Plan::new(&args, Instant::now())?);
    let threads = args
        .threads
        .unwrap_or_else(default_workers)
        .clamp(1, plan.connections);
    let show_progress = !args.json && !args.no_progress && crate::term::stdout_is_tty();
    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
    let mut lives = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let conns: Vec<usize> = (t..plan.connections).step_by(threads).collect();
        let live = Arc::new(Live::default());
        lives.push(live.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a worker runtime")?;
        let (plan, stop, done) = (plan.clone(), stop_rx.clone(), done_tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                let out = local.block_on(&rt, worker::drive(plan, conns, live, stop));
                let _ = done.send(out);
            })
            .context("cannot start a worker thread")?;
        handles.push(h);
    }
    drop(done_tx);
    let progress = show_progress.then(progress::Bar::new);
    let (outcomes, interrupted) = main_rt.block_on(async {
        let mut outcomes = Vec::with_capacity(threads);
        let mut interrupted = false;
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                out = done_rx.recv() => match out {
                    Some(o) => {
                        outcomes.push(o);
                        if outcomes.len() == threads { break; }
                    }
                    None => break,
                },
                _ = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    let _ = stop_tx.send(true);
                }
                _ = tick.tick() => {
                    if let Some(p) = &progress { p.update(&plan, &lives); }
                }
            }
        }
        (outcomes, interrupted)
    });
    if let Some(p) = &progress {
        p.finish();
    }
    for h in handles {
        let _ = h.join();
    }
    let mut total = Recorder::new(plan.rate.is_some());
    let mut finished = plan.measure_from;
    for o in &outcomes {
        total.merge(&o.recorder);
        finished = finished.max(o.finished);
    }
    let report = Report {
        plan: &plan,
        rec: &total,
        duration: finished - plan.measure_from,
        threads,
        interrupted,
    };
    if args.json {
        crate::term::out(&report.json().to_string());
    } else {
        crate::term::out(&report.text(crate::term::stdout_is_tty()));
    }
    let failed = (total.successes() == 0) || (args.fail_on_error && total.failures > 0);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

mod progress {
    //! The live progress bar: done / total (or elapsed / duration), current req/s, failures.

    use std::cell::Cell;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    use std::time::Instant;

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

    use super::plan::Plan;
    use super::worker::Live;

    pub struct Bar {
        bar: ProgressBar,
        last: Cell<(Instant, u64)>,
    }

    impl Bar {
        pub fn new() -> Bar {
            let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{wide_bar:.cyan/blue} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
            Bar {
                bar,
                last: Cell::new((Instant::now(), 0)),
            }
        }

        pub fn update(&self, plan: &Plan, lives: &[Arc<Live>]) {
            let now = Instant::now();
            let done: u64 = lives.iter().map(|l| l.requests.load(Relaxed)).sum();
            let failed: u64 = lives.iter().map(|l| l.failures.load(Relaxed)).sum();
            let (then, before) = self.last.replace((now, done));
            let secs = now.duration_since(then).as_secs_f64().max(1e-3);
            let rps = done.saturating_sub(before) as f64 / secs;
            let elapsed = now.saturating_duration_since(plan.measure_from);
            let mut share: f64 = 0.0;
            let mut head = String::new();
            if plan.limit != u64::MAX {
                share = done as f64 / plan.limit as f64;
                head = format!("{done}/{}", plan.limit);
            }
            if let Some(d) = plan.deadline.map(|d| d - plan.measure_from) {
                let t = elapsed.as_secs_f64() / d.as_secs_f64();
                if t > share {
                    share = t;
                    head = format!(
                        "{:.0}s/{:.0}s, {done}",
                        elapsed.as_secs_f64(),
                        d.as_secs_f64()
                    );
                }
            }
            self.bar
                .set_position((share.clamp(0.0, 1.0) * 1000.0) as u64);
            if now < plan.measure_from {
                self.bar.set_message("warming up");
            } else {
                self.bar
                    .set_message(format!("{head} requests, {rps:.0} req/s, {failed} failed"));
            }
        }

        pub fn finish(&self) {
            self.bar.finish_and_clear();
        }
    }
}
