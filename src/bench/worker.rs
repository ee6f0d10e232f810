//! The load loop. Each worker thread runs a current-thread runtime driving its share of the
//! request loops; a loop owns (or, with HTTP/2, shares) one keep-alive connection and sends on
//! it back to back, or on the `--rate` schedule. One path serves every mode: HTTP/1.1 vs HTTP/2
//! is the [`Conn`] variant, the open model is an optional send time.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::plan::Plan;
use super::recorder::{Answer, Recorder};
use crate::core::client::{classify, handshake, ErrorKind};

/// Lateness tolerated before a send counts as behind schedule (timer and wake-up jitter).
const BEHIND_SLACK: Duration = Duration::from_millis(1);

/// Live counts one worker publishes for the progress bar (one cache line per worker).
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct Live {
    /// Attempts measured so far.
    pub requests: AtomicU64,
    /// Failures so far.
    pub failures: AtomicU64,
}

/// What a worker hands back when it ends.
pub struct Outcome {
    /// Its measurements.
    pub recorder: Recorder,
    /// When its last loop ended (or was stopped).
    pub finished: Instant,
}

/// Runs request loops `loops` (indices into the whole run) until they end, the `-z` deadline
/// passes or `stop` turns true; in-flight requests are then abandoned, not counted.
pub async fn drive(
    plan: Arc<Plan>,
    loops: Vec<usize>,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let rec = Rc::new(RefCell::new(Recorder::new(plan.rate.is_some())));
    let mut set = JoinSet::new();
    for index in loops {
        set.spawn_local(request_loop(plan.clone(), index, rec.clone(), live.clone()));
    }
    let deadline = plan.deadline;
    let until_deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = async { while set.join_next().await.is_some() {} } => {}
        _ = until_deadline => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let now = Instant::now();
    set.abort_all();
    let recorder = rec.replace(Recorder::new(plan.rate.is_some()));
    Outcome {
        recorder,
        finished: plan.deadline.map_or(now, |d| now.min(d)),
    }
}

/// One request loop: closed model (next request when the last answer is read) or, with a rate,
/// each request at its scheduled time.
async fn request_loop(plan: Arc<Plan>, index: usize, rec: Rc<RefCell<Recorder>>, live: Arc<Live>) {
    let mut conn: Option<Conn> = None;
    for k in 0u64.. {
        let scheduled = plan.scheduled(index, k);
        let mut behind = false;
        if let Some(at) = scheduled {
            // Still busy with the previous request when this one was due: behind schedule.
            behind = Instant::now() > at + BEHIND_SLACK;
            tokio::time::sleep_until(at.into()).await;
        }
        let sent = Instant::now();
        let measured = sent >= plan.measure_from;
        if measured && !plan.take() {
            break;
        }
        let result = exchange(&plan, &mut conn).await;
        if !measured {
            continue;
        }
        let done = Instant::now();
        let at = done.saturating_duration_since(plan.measure_from);
        let mut r = rec.borrow_mut();
        r.behind += u64::from(behind);
        match result {
            Ok(reply) => r.answer(
                at,
                Answer {
                    status: reply.status,
                    latency_us: micros(done - scheduled.unwrap_or(sent)),
                    uncorrected_us: micros(done - sent),
                    group: reply.group.as_ref().map(HeaderValue::as_bytes),
                    bytes: reply.bytes,
                },
            ),
            Err(kind) => r.error(at, kind),
        }
        live.requests.store(r.requests, Relaxed);
        live.failures.store(r.failures, Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What the loop keeps of an answer.
struct Reply {
    status: u16,
    group: Option<HeaderValue>,
    bytes: u64,
}

/// A connection a loop sends on.
enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn open(plan: &Plan) -> Result<Conn, ErrorKind> {
        let (stream, _) = plan.dialer.dial(&plan.target).await.map_err(|e| e.kind)?;
        let tx = handshake(stream).await.map_err(|e| classify(&e))?;
        Ok(Conn::H1(tx))
    }

    /// True when the connection can take another request.
    async fn ready(&mut self) -> bool {
        match self {
            Conn::H1(tx) => tx.ready().await.is_ok(),
        }
    }

    /// Sends the plan's request and reads the answer to the end.
    async fn send(&mut self, plan: &Plan) -> Result<Reply, hyper::Error> {
        let resp = match self {
            Conn::H1(tx) => tx.send_request(plan.request()).await?,
        };
        let status = resp.status().as_u16();
        let group = resp.headers().get(&plan.group_by).cloned();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(d) = frame?.data_ref() {
                bytes += d.len() as u64;
            }
        }
        Ok(Reply {
            status,
            group,
            bytes,
        })
    }
}

/// One request attempt on the loop's connection, (re)connecting first when needed. A failed
/// connect is a failed attempt; a broken or timed-out connection is dropped for a fresh one.
async fn exchange(plan: &Plan, conn: &mut Option<Conn>) -> Result<Reply, ErrorKind> {
    if let Some(c) = conn.as_mut() {
        if !c.ready().await {
            *conn = None;
        }
    }
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Conn::open(plan).await?),
    };
    let out = match tokio::time::timeout(plan.timeout, c.send(plan)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(ErrorKind::RequestTimeout),
    };
    if out.is_err() || !plan.keepalive {
        *conn = None;
    }
    out
}
