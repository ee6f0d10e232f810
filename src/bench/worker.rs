//! The load loop. Each worker thread runs a current-thread runtime driving its share of the
//! request loops; a loop owns (or, with HTTP/2, shares) one keep-alive connection and sends on
//! it back to back, or on the `--rate` schedule. One path serves every mode: the lean HTTP/1.1
//! client (plain `http://`), hyper's HTTP/1.1 (TLS) and HTTP/2 are the [`Conn`] variants, the
//! open model is an optional send time.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;

use super::fast::{FastConn, FastError};
use super::plan::Plan;
use super::recorder::{Answer, Recorder};
use crate::core::client::{
    classify, handshake_h2, handshake_unspawned, ConnectError, ErrorKind, H1Connection,
};

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

/// Runs the request loops of connections `conns` (indices into the whole run; one loop per
/// connection, or `--streams` loops sharing an HTTP/2 connection) until they end, the `-z`
/// deadline passes or `stop` turns true; in-flight requests are then abandoned, not counted.
pub async fn drive(
    plan: Arc<Plan>,
    conns: Vec<usize>,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let rec = Rc::new(RefCell::new(Recorder::new(plan.rate.is_some())));
    let mut set = JoinSet::new();
    for c in conns {
        let shared: Shared = Rc::default();
        for index in c * plan.streams..(c + 1) * plan.streams {
            let (plan, rec, live, shared) =
                (plan.clone(), rec.clone(), live.clone(), shared.clone());
            set.spawn_local(request_loop(plan, index, shared, rec, live));
        }
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
async fn request_loop(
    plan: Arc<Plan>,
    index: usize,
    shared: Shared,
    rec: Rc<RefCell<Recorder>>,
    live: Arc<Live>,
) {
    let mut conn: Option<Conn> = None;
    let mut dog = Watchdog::new(plan.timeout);
    let mut scratch = Scratch::default();
    for k in 0u64.. {
        // With a rate: when the loop was still busy with the previous request at this one's
        // send time, its latency counts from that time (coordinated-omission correction).
        // Otherwise it counts from the actual send: the timer's own wake-up jitter (up to a
        // millisecond) is the load generator's, not the server's.
        let mut late_from = None;
        let mut behind = false;
        if let Some(at) = plan.scheduled(index, k) {
            let now = Instant::now();
            if now > at {
                late_from = Some(at);
                behind = now > at + BEHIND_SLACK;
            } else {
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let sent = Instant::now();
        let measured = sent >= plan.measure_from;
        if measured && !plan.take() {
            break;
        }
        let result = exchange(&plan, &shared, &mut conn, &mut dog, &mut scratch, sent).await;
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
                    latency_us: micros(done - late_from.unwrap_or(sent)),
                    uncorrected_us: micros(done - sent),
                    group: reply.grouped.then_some(scratch.group.as_slice()),
                    bytes: reply.bytes,
                },
            ),
            Err(cause) => {
                let kind = cause.kind();
                r.error(at, kind);
                r.examples.entry(kind).or_insert_with(|| cause.detail());
            }
        }
        live.requests.store(r.requests, Relaxed);
        live.failures.store(r.failures, Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What the loop keeps of an answer (the group-by value is in [`Scratch::group`]).
struct Reply {
    status: u16,
    grouped: bool,
    bytes: u64,
}

/// Buffers a loop reuses from one request to the next.
#[derive(Default)]
struct Scratch {
    /// The last answer's header map (hyper), reused for the next request.
    headers: Option<HeaderMap>,
    /// The last answer's group-by value.
    group: Vec<u8>,
}

/// A connection a loop sends on.
enum Conn {
    /// Plain HTTP/1.1 through the lean client: the prebuilt request bytes out, the answer
    /// parsed in place.
    Fast(FastConn),
    /// HTTP/1.1; the connection future is polled in the loop's own task (no task hop).
    H1 {
        tx: http1::SendRequest<Full<Bytes>>,
        io: Option<Pin<Box<H1Connection<Full<Bytes>>>>>,
    },
    /// HTTP/2: a clone of the sender its connection's loops share; the connection runs in its
    /// own task.
    H2(http2::SendRequest<Full<Bytes>>),
}

/// The HTTP/2 connection the `--streams` loops of one connection share; the lock makes the
/// first loop dial while the others wait for it instead of each dialing its own.
type Shared = Rc<tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>>;

/// Why an exchange did not produce an answer.
enum Failure {
    /// The connection had closed before the request went out: reconnect and retry.
    Closed,
    /// The attempt failed.
    Failed(Cause),
}

/// Why an attempt failed; the message is only rendered for the report's first example of each
/// kind, so failing fast (a closed port) costs no formatting.
pub enum Cause {
    /// Dialing failed.
    Connect(ConnectError),
    /// HTTP failed on the connection.
    Http(hyper::Error),
    /// HTTP failed on a fast-path connection.
    Fast(FastError),
    /// No complete answer within the timeout.
    Timeout(Duration),
    /// A fresh connection closed before taking the request.
    Closed,
}

impl Cause {
    /// The kind reported.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Cause::Connect(e) => e.kind,
            Cause::Http(e) => classify(e),
            Cause::Fast(e) => e.kind(),
            Cause::Timeout(_) => ErrorKind::RequestTimeout,
            Cause::Closed => ErrorKind::Reset,
        }
    }

    /// The message with its chain of causes.
    pub fn detail(&self) -> String {
        match self {
            Cause::Connect(e) => e.to_string(),
            Cause::Http(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                msg
            }
            Cause::Fast(e) => e.to_string(),
            Cause::Timeout(d) => format!("no complete answer within {d:?}"),
            Cause::Closed => "the connection closed before taking a request".into(),
        }
    }
}

impl Conn {
    async fn open(plan: &Plan, shared: &Shared) -> Result<Conn, Cause> {
        if plan.http2 {
            let mut slot = shared.lock().await;
            // --disable-keepalive: a new connection for every request, streams or not.
            if let Some(tx) = slot.as_ref().filter(|tx| plan.keepalive && !tx.is_closed()) {
                return Ok(Conn::H2(tx.clone()));
            }
            let (stream, _) = plan
                .dialer
                .dial(&plan.target)
                .await
                .map_err(Cause::Connect)?;
            let tx = handshake_h2(stream).await.map_err(Cause::Http)?;
            *slot = Some(tx.clone());
            return Ok(Conn::H2(tx));
        }
        let (stream, _) = plan
            .dialer
            .dial(&plan.target)
            .await
            .map_err(Cause::Connect)?;
        if plan.fast {
            return Ok(Conn::Fast(FastConn::new(stream)));
        }
        let (tx, io) = handshake_unspawned(stream).await.map_err(Cause::Http)?;
        Ok(Conn::H1 {
            tx,
            io: Some(Box::pin(io)),
        })
    }

    /// Sends the plan's request once the connection is ready and reads the answer to the end,
    /// within the request timeout.
    async fn exchange(
        &mut self,
        plan: &Plan,
        dog: &mut Watchdog,
        scratch: &mut Scratch,
        deadline: Instant,
    ) -> Result<Reply, Failure> {
        let mut no_io: Option<Pin<Box<std::future::Pending<()>>>> = None;
        let spare = &mut scratch.headers;
        let out = match self {
            Conn::Fast(c) => {
                let head = plan.method == http::Method::HEAD;
                let trip = c.round_trip(plan.wire, head, &plan.group_by, &mut scratch.group);
                polling(&mut no_io, dog, deadline, async {
                    match trip.await {
                        Ok(r) => Ok(Reply {
                            status: r.status,
                            grouped: r.grouped,
                            bytes: r.bytes,
                        }),
                        Err(FastError::Stale) => Err(Failure::Closed),
                        Err(e) => Err(Failure::Failed(Cause::Fast(e))),
                    }
                })
                .await
            }
            Conn::H1 { tx, io } => {
                polling(
                    io,
                    dog,
                    deadline,
                    round_trip(tx, plan, spare, &mut scratch.group),
                )
                .await
            }
            Conn::H2(tx) => {
                let trip = round_trip(tx, plan, spare, &mut scratch.group);
                polling(&mut no_io, dog, deadline, trip).await
            }
        };
        out.unwrap_or(Err(Failure::Failed(Cause::Timeout(plan.timeout))))
    }

    /// False when the connection cannot carry another request (the server asked to close).
    fn reusable(&self) -> bool {
        match self {
            Conn::Fast(c) => c.reusable(),
            Conn::H1 { .. } | Conn::H2(_) => true,
        }
    }
}

/// The two hyper senders, as the round trip uses them.
trait Sender {
    async fn ready(&mut self) -> hyper::Result<()>;
    async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>>;
}

impl Sender for http1::SendRequest<Full<Bytes>> {
    async fn ready(&mut self) -> hyper::Result<()> {
        http1::SendRequest::ready(self).await
    }
    async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        self.send_request(req).await
    }
}

impl Sender for http2::SendRequest<Full<Bytes>> {
    async fn ready(&mut self) -> hyper::Result<()> {
        http2::SendRequest::ready(self).await
    }
    async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        self.send_request(req).await
    }
}

/// Waits until the connection takes a request, sends the plan's, and reads the answer.
async fn round_trip(
    tx: &mut impl Sender,
    plan: &Plan,
    spare: &mut Option<HeaderMap>,
    group: &mut Vec<u8>,
) -> Result<Reply, Failure> {
    if tx.ready().await.is_err() {
        return Err(Failure::Closed);
    }
    let reply = match tx.send(plan.request(spare.take())).await {
        Ok(resp) => read_reply(plan, resp, spare, group).await,
        Err(e) => Err(e),
    };
    reply.map_err(|e| Failure::Failed(Cause::Http(e)))
}

/// A request timeout that costs no timer operation per request: one sleep per loop, re-armed
/// only when it fires before the current request's deadline. Deadlines only grow, so the sleep
/// never fires later than the current one.
struct Watchdog {
    sleep: Pin<Box<Sleep>>,
}

impl Watchdog {
    fn new(timeout: Duration) -> Watchdog {
        Watchdog {
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// True once `deadline` has passed; otherwise the task is woken by then.
    fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            self.sleep.as_mut().reset(deadline.into());
        }
    }
}

/// Runs `fut` while also driving the connection `io` (a finished connection is dropped, which
/// fails whatever `fut` waits for on it); `None` when `deadline` passes first.
async fn polling<C, F>(
    io: &mut Option<Pin<Box<C>>>,
    dog: &mut Watchdog,
    deadline: Instant,
    fut: F,
) -> Option<F::Output>
where
    C: Future + ?Sized,
    F: Future,
{
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        // Two passes with a connection to drive: it writes the request `fut` has just queued in
        // this same poll instead of after a trip through the scheduler.
        let passes = if io.is_some() { 2 } else { 1 };
        for _ in 0..passes {
            if let Some(c) = io.as_mut() {
                if c.as_mut().poll(cx).is_ready() {
                    *io = None;
                }
            }
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
        }
        if dog.poll_expired(cx, deadline) {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Reads the status, the group-by header (into `group`) and the whole body.
async fn read_reply(
    plan: &Plan,
    resp: Response<Incoming>,
    spare: &mut Option<HeaderMap>,
    group: &mut Vec<u8>,
) -> Result<Reply, hyper::Error> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status.as_u16();
    group.clear();
    let value = parts.headers.get(&plan.group_by);
    if let Some(v) = value {
        group.extend_from_slice(v.as_bytes());
    }
    let grouped = value.is_some();
    *spare = Some(parts.headers);
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            bytes += d.len() as u64;
        }
    }
    Ok(Reply {
        status,
        grouped,
        bytes,
    })
}

/// One request attempt on the loop's connection, (re)connecting first when needed. A failed
/// connect is a failed attempt; a broken or timed-out connection is dropped for a fresh one.
async fn exchange(
    plan: &Plan,
    shared: &Shared,
    conn: &mut Option<Conn>,
    dog: &mut Watchdog,
    scratch: &mut Scratch,
    sent: Instant,
) -> Result<Reply, Cause> {
    loop {
        let fresh = conn.is_none();
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Conn::open(plan, shared).await?),
        };
        match c.exchange(plan, dog, scratch, sent + plan.timeout).await {
            Ok(reply) => {
                if !plan.keepalive || !c.reusable() {
                    *conn = None;
                }
                return Ok(reply);
            }
            Err(Failure::Closed) if !fresh => *conn = None,
            Err(Failure::Closed) => {
                *conn = None;
                return Err(Cause::Closed);
            }
            Err(Failure::Failed(kind)) => {
                *conn = None;
                return Err(kind);
            }
        }
    }
}
