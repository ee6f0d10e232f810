//! Per-worker connections to backends. Each worker owns its pool outright (no lock, no
//! atomics). HTTP/1.1 connections carry one request at a time and go back to their worker's
//! pool when the response body ends. An HTTP/2 backend (`h2c://`, or `https://` whose ALPN
//! chose h2) gets a few connections per worker that carry all of that worker's requests to it
//! at once: each as many as the backend allows (its `SETTINGS_MAX_CONCURRENT_STREAMS`), and
//! another is opened when those are all at their limit, up to [`MAX_H2_CONNS`]; after the
//! burst, the worker's sweep closes those beyond the first once they go unused. Concurrent
//! requests wait for the same dial, and closed connections are replaced.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2;
use tokio::sync::Notify;

use super::h1::{H1Conn, Reader};
use crate::core::addr::Scheme;
use crate::core::backend::Backend;
use crate::core::client::{
    classify, handshake, handshake_h2_local, speaks_h2, ConnectError, Dialer, ErrorKind, H2Peer,
    Sender,
};
use crate::core::server::RequestBody;

/// The body lbx sends upstream: the client's streaming body (cut off at `--max-body`), or a
/// buffered one, possibly empty (so the request can be re-sent to another backend).
pub type UpBody = Either<Limited<RequestBody>, Full<Bytes>>;

/// A connection to one backend: HTTP/1.1, or a handle on a shared HTTP/2 connection.
pub type Conn = Sender<UpBody>;

/// Idle connections kept per backend per worker. A cap for a runaway burst only: what goes
/// unused is closed by the sweep (see `IdleList`), so a worker keeps what its load needs and
/// does not close and reopen connections under it.
const MAX_IDLE: usize = 1024;

/// Most HTTP/2 connections a worker keeps to one backend. Past them, a request goes on the
/// connection with the fewest streams open and waits there (in hyper) for a free one.
pub const MAX_H2_CONNS: usize = 8;

/// After a failed dial for an extra HTTP/2 connection, how long requests make do with the
/// connections there are before another is tried.
const GROW_BACKOFF: Duration = Duration::from_secs(1);

/// One worker's backend connections, keyed by backend id.
#[derive(Default)]
pub struct ConnPool {
    /// Idle HTTP/1.1 connections of hyper's client.
    idle: RefCell<HashMap<u64, IdleList<Conn>>>,
    /// Idle connections of the lean HTTP/1.1 path to `http://` backends.
    plain: RefCell<HashMap<u64, IdleList<H1Conn>>>,
    /// What is known of backends that may speak HTTP/2 (every scheme but `http://`).
    shared: RefCell<HashMap<u64, Multiplexed>>,
}

/// One backend's idle connections, the most recently used last (taken first). Connections
/// that stayed idle through a whole sweep interval were not needed: each sweep closes half of
/// them, the longest idle first, as HAProxy's `pool-purge-delay` does. Under steady load the
/// list keeps what the load's peaks use; after a burst it shrinks within seconds.
struct IdleList<T> {
    conns: Vec<T>,
    /// The fewest connections the list held since the last sweep: so many went unused.
    low: usize,
}

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        IdleList {
            conns: Vec::new(),
            low: 0,
        }
    }
}

impl<T> IdleList<T> {
    fn pop(&mut self) -> Option<T> {
        let c = self.conns.pop();
        self.low = self.low.min(self.conns.len());
        c
    }

    /// Keeps `conn` unless the list is full.
    fn push(&mut self, conn: T) {
        if self.conns.len() < MAX_IDLE {
            self.conns.push(conn);
        }
    }

    /// Drops the connections `keep` refuses (ones their backends closed). Those count as
    /// having been unused: they are the oldest, so the purge that follows spares the rest.
    fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        let before = self.conns.len();
        self.conns.retain(keep);
        self.low = self.low.saturating_sub(before - self.conns.len());
    }

    /// Closes half (rounded up) of the connections unused since the last sweep, oldest first.
    fn purge(&mut self) {
        let unused = self.low.min(self.conns.len());
        self.conns.drain(..unused.div_ceil(2));
        self.low = self.conns.len();
    }
}

/// A backend that may speak HTTP/2, as one worker knows it.
enum Multiplexed {
    /// Its first connection (or a replacement for them all) is being opened; requests wait for
    /// it.
    Dialing(Rc<Dial>),
    /// The HTTP/2 connections requests share.
    H2(H2Set),
    /// TLS ALPN chose HTTP/1.1: its connections are pooled one request at a time.
    Http1,
}

/// One worker's HTTP/2 connections to a backend.
struct H2Set {
    conns: Vec<H2Conn>,
    /// Another connection being opened (every open one was at its limit); requests wait for it.
    growing: Option<Rc<Dial>>,
    /// When the last dial for another connection failed.
    grow_failed: Option<Instant>,
}

/// An HTTP/2 connection and the streams this worker has open on it.
struct H2Conn {
    tx: http2::SendRequest<UpBody>,
    /// Requests on it from their send until their response body ends (or is dropped).
    open: Rc<Cell<usize>>,
    /// How many the backend allows at once.
    peer: H2Peer<UpBody>,
    /// No stream has been taken on it since the last sweep found it without any.
    quiet: Cell<bool>,
}

impl H2Conn {
    fn has_room(&self) -> bool {
        self.open.get() < self.peer.max_streams()
    }

    /// A stream's place on it, for one request.
    fn take(&self, reused: bool) -> Checkout {
        self.open.set(self.open.get() + 1);
        self.quiet.set(false);
        Checkout {
            conn: Sender::H2(self.tx.clone()),
            reused,
            stream: Some(StreamSlot(self.open.clone())),
        }
    }
}

/// What a request to an HTTP/2 backend does next.
enum Step {
    /// Goes on this connection.
    Use(Checkout),
    /// Waits for a dial under way (the backend's first connection: fails with it).
    Wait { dial: Rc<Dial>, first: bool },
    /// Opens the backend's first connection, or a replacement for them all.
    DialFirst,
    /// Opens another connection (marked as under way in the set).
    Grow(Rc<Dial>),
}

impl H2Set {
    /// Drops closed connections; then the first with a free stream, else a dial (one at a time,
    /// up to [`MAX_H2_CONNS`], none for a while after one failed), else the least busy.
    fn next(&mut self) -> Step {
        self.conns.retain(|c| !c.tx.is_closed());
        if let Some(c) = self.conns.iter().find(|c| c.has_room()) {
            return Step::Use(c.take(true));
        }
        if let Some(dial) = &self.growing {
            return Step::Wait {
                dial: dial.clone(),
                first: false,
            };
        }
        if self.conns.is_empty() {
            return Step::DialFirst;
        }
        let backing_off = self.grow_failed.is_some_and(|t| t.elapsed() < GROW_BACKOFF);
        if self.conns.len() < MAX_H2_CONNS && !backing_off {
            let dial = Rc::new(Dial::default());
            self.growing = Some(dial.clone());
            return Step::Grow(dial);
        }
        Step::Use(self.least_busy().expect("not empty").take(true))
    }

    /// Closes the connections beyond the first that have carried nothing for a whole sweep
    /// period (those a burst opened), and the closed ones. The first stays: it is the one
    /// requests are put on first.
    fn shrink(&mut self) {
        let mut first = true;
        self.conns.retain(|c| {
            if c.tx.is_closed() {
                return false;
            }
            let unused = c.open.get() == 0;
            let keep = std::mem::take(&mut first) || !(unused && c.quiet.get());
            c.quiet.set(unused);
            keep
        });
    }

    fn least_busy(&self) -> Option<&H2Conn> {
        self.conns
            .iter()
            .filter(|c| !c.tx.is_closed())
            .min_by_key(|c| c.open.get())
    }
}

/// A dial that other requests wait for.
#[derive(Default)]
struct Dial {
    done: Notify,
    /// Why it failed, once it has: the waiters fail with it rather than dial again.
    failed: RefCell<Option<(ErrorKind, String)>>,
}

/// Ends a shared dial however it ends (completed, failed or cancelled with its request): its
/// mark (`Dialing`, or an `H2Set`'s `growing`) goes unless the dial replaced it, and the
/// waiters wake.
struct DialDone<'a> {
    pool: &'a ConnPool,
    id: u64,
    dial: Rc<Dial>,
}

impl Drop for DialDone<'_> {
    fn drop(&mut self) {
        let mut shared = self.pool.shared.borrow_mut();
        let ours = |d: &Rc<Dial>| Rc::ptr_eq(d, &self.dial);
        match shared.get_mut(&self.id) {
            Some(Multiplexed::Dialing(d)) if ours(d) => {
                shared.remove(&self.id);
            }
            Some(Multiplexed::H2(set)) if set.growing.as_ref().is_some_and(ours) => {
                set.growing = None;
            }
            _ => {}
        }
        self.dial.done.notify_waiters();
    }
}

/// Holds a request's stream on an HTTP/2 connection (counted against the backend's limit) until
/// dropped.
pub struct StreamSlot(Rc<Cell<usize>>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A connection ready for a request, and whether it came from the pool.
pub struct Checkout {
    /// The connection.
    pub conn: Conn,
    /// True when it was idle in the pool or is a shared HTTP/2 one (it may have been closed by
    /// the backend meanwhile).
    pub reused: bool,
    /// The request's stream, on an HTTP/2 connection.
    pub stream: Option<StreamSlot>,
}

fn handshake_failed(e: hyper::Error) -> ConnectError {
    ConnectError {
        kind: classify(&e),
        detail: e.to_string(),
    }
}

impl ConnPool {
    /// A connection to `backend` for one request: one of its HTTP/2 connections (a closed one
    /// replaced first), else, when `reuse_idle`, an idle HTTP/1.1 one that is still open, else
    /// a new one.
    pub async fn checkout(
        &self,
        dialer: &Dialer,
        backend: &Backend,
        reuse_idle: bool,
    ) -> Result<Checkout, ConnectError> {
        if backend.target.scheme != Scheme::Http {
            if let Some(c) = self.multiplexed(dialer, backend).await? {
                return Ok(c);
            }
        }
        while let Some(mut conn) = reuse_idle.then(|| self.pop(backend.id)).flatten() {
            if conn.is_closed() {
                continue;
            }
            // Ready at once for an idle connection; waits only while the previous response's
            // end is still being processed by the connection task.
            if conn.ready().await.is_ok() {
                return Ok(Checkout {
                    conn,
                    reused: true,
                    stream: None,
                });
            }
        }
        self.fresh(dialer, backend).await
    }

    /// A new connection: HTTP/1.1 to an `http://` backend, otherwise whatever the scheme and
    /// ALPN call for (remembered for the next request; an HTTP/2 one joins the backend's set).
    async fn fresh(&self, dialer: &Dialer, backend: &Backend) -> Result<Checkout, ConnectError> {
        let (stream, _) = dialer.dial(&backend.target).await?;
        if !speaks_h2(&stream, &backend.target) {
            let conn = handshake(stream).await.map_err(handshake_failed)?;
            if backend.target.scheme != Scheme::Http {
                self.shared
                    .borrow_mut()
                    .insert(backend.id, Multiplexed::Http1);
            }
            return Ok(Checkout {
                conn: Sender::H1(conn),
                reused: false,
                stream: None,
            });
        }
        // Another connection to a backend that has told its limit on the others assumes the
        // same until it hears it: more streams would be refused.
        let known = match self.shared.borrow().get(&backend.id) {
            Some(Multiplexed::H2(set)) => set.conns.iter().map(|c| c.peer.max_streams()).max(),
            _ => None,
        };
        let (tx, peer) = handshake_h2_local(stream, known)
            .await
            .map_err(handshake_failed)?;
        let conn = H2Conn {
            tx,
            open: Rc::default(),
            peer,
            quiet: Cell::new(false),
        };
        let checkout = conn.take(false);
        let mut shared = self.shared.borrow_mut();
        match shared.get_mut(&backend.id) {
            Some(Multiplexed::H2(set)) => set.conns.push(conn),
            _ => {
                let set = H2Set {
                    conns: vec![conn],
                    growing: None,
                    grow_failed: None,
                };
                shared.insert(backend.id, Multiplexed::H2(set));
            }
        }
        Ok(checkout)
    }

    /// A stream on one of the HTTP/2 connections of a backend that may speak HTTP/2: opening
    /// the first (by one request while the others wait) when there is none open, and another
    /// when all are at their limit; `None` once the backend is known to have chosen HTTP/1.1.
    async fn multiplexed(
        &self,
        dialer: &Dialer,
        backend: &Backend,
    ) -> Result<Option<Checkout>, ConnectError> {
        loop {
            let step = match self.shared.borrow_mut().get_mut(&backend.id) {
                Some(Multiplexed::Http1) => return Ok(None),
                Some(Multiplexed::Dialing(d)) => Step::Wait {
                    dial: d.clone(),
                    first: true,
                },
                Some(Multiplexed::H2(set)) => set.next(),
                None => Step::DialFirst,
            };
            match step {
                Step::Use(c) => return Ok(Some(c)),
                Step::Wait { dial, first } => {
                    dial.done.notified().await;
                    let failed = dial.failed.borrow().clone();
                    if let (true, Some((kind, detail))) = (first, failed) {
                        return Err(ConnectError { kind, detail });
                    }
                }
                Step::DialFirst => return self.dial_first(dialer, backend).await.map(Some),
                Step::Grow(dial) => return self.grow(dialer, backend, dial).await.map(Some),
            }
        }
    }

    /// Opens a backend's first HTTP/2 connection (or its ALPN says HTTP/1.1) while requests
    /// that come meanwhile wait, and fail with it if it fails.
    async fn dial_first(
        &self,
        dialer: &Dialer,
        backend: &Backend,
    ) -> Result<Checkout, ConnectError> {
        let dial = Rc::new(Dial::default());
        self.shared
            .borrow_mut()
            .insert(backend.id, Multiplexed::Dialing(dial.clone()));
        let done = DialDone {
            pool: self,
            id: backend.id,
            dial: dial.clone(),
        };
        let conn = self.fresh(dialer, backend).await;
        if let Err(e) = &conn {
            *dial.failed.borrow_mut() = Some((e.kind, e.detail.clone()));
        }
        drop(done);
        conn
    }

    /// Opens another HTTP/2 connection to a backend whose open ones are all at their limit.
    /// If it cannot be opened, the request goes on the least busy open one.
    async fn grow(
        &self,
        dialer: &Dialer,
        backend: &Backend,
        dial: Rc<Dial>,
    ) -> Result<Checkout, ConnectError> {
        let done = DialDone {
            pool: self,
            id: backend.id,
            dial,
        };
        let conn = self.fresh(dialer, backend).await;
        let fallback = match (&conn, self.shared.borrow_mut().get_mut(&backend.id)) {
            (Err(_), Some(Multiplexed::H2(set))) => {
                set.grow_failed = Some(Instant::now());
                set.least_busy().map(|c| c.take(true))
            }
            _ => None,
        };
        drop(done);
        fallback.map_or(conn, Ok)
    }

    fn pop(&self, id: u64) -> Option<Conn> {
        self.idle.borrow_mut().get_mut(&id).and_then(IdleList::pop)
    }

    fn put(&self, id: u64, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        self.idle.borrow_mut().entry(id).or_default().push(conn);
    }

    /// An idle lean connection to `id` that is still open.
    pub fn pop_plain(&self, id: u64) -> Option<H1Conn> {
        let mut plain = self.plain.borrow_mut();
        let list = plain.get_mut(&id)?;
        while let Some(conn) = list.pop() {
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a lean connection whose response ended cleanly for the next request to `id`.
    pub fn put_plain(&self, id: u64, conn: H1Conn) {
        let mut plain = self.plain.borrow_mut();
        plain.entry(id).or_default().push(conn.idle());
    }

    /// Closes the idle lean connections their backends have closed (hyper's connections
    /// notice that themselves), half the idle HTTP/1.1 connections unused since the last
    /// sweep, and the HTTP/2 connections beyond each backend's first that have carried
    /// nothing since the last sweep. Called every couple of seconds.
    pub fn sweep(&self) {
        for list in self.plain.borrow_mut().values_mut() {
            list.retain(H1Conn::still_open);
            list.purge();
        }
        for list in self.idle.borrow_mut().values_mut() {
            list.purge();
        }
        for m in self.shared.borrow_mut().values_mut() {
            if let Multiplexed::H2(set) = m {
                set.shrink();
            }
        }
    }

    /// Drops the connections of backends that are no longer in the set.
    pub fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.idle.borrow_mut().retain(|id, _| keep(*id));
        self.plain.borrow_mut().retain(|id, _| keep(*id));
        self.shared.borrow_mut().retain(|id, _| keep(*id));
    }
}

/// Counts a request in flight at a backend until dropped.
pub struct InFlight(Arc<Backend>);

impl InFlight {
    /// Starts counting.
    pub fn new(b: Arc<Backend>) -> InFlight {
        b.in_flight.fetch_add(1, Relaxed);
        InFlight(b)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A backend's response body streamed to the client. When it ends cleanly the connection goes
/// back to the worker's pool; if the client goes away first, the connection is dropped. A
/// backend that stops sending mid-body for longer than the read timeout ends the body with an
/// error, so the client sees a truncated response instead of waiting forever.
pub struct UpstreamBody {
    source: Source,
    _in_flight: InFlight,
    _stream: Option<StreamSlot>,
    read_timeout: Duration,
    /// Made on the first stall and re-armed on later ones: a body that flows costs no timer.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
}

/// Where the body comes from.
enum Source {
    /// hyper's client; an HTTP/1.1 connection to give back when the body ends.
    Hyper {
        inner: Incoming,
        release: Option<(Rc<ConnPool>, u64, Conn)>,
    },
    /// The lean HTTP/1.1 path (it gives its connection back itself).
    Plain(Reader),
}

/// The backend paused mid-body for longer than the read timeout.
#[derive(Debug)]
pub struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the backend sent nothing for {:?} mid-body", self.0)
    }
}

impl std::error::Error for BodyStalled {}

impl UpstreamBody {
    /// Wraps `inner`, returning an HTTP/1.1 `conn` to `pool` when it has been read to the end
    /// (a shared HTTP/2 one stays where it is, its `stream` held until this is dropped).
    pub fn new(
        inner: Incoming,
        pool: Rc<ConnPool>,
        backend_id: u64,
        (conn, stream): (Conn, Option<StreamSlot>),
        in_flight: InFlight,
        read_timeout: Duration,
    ) -> Self {
        let release = (!conn.is_h2()).then_some((pool, backend_id, conn));
        UpstreamBody::from_source(
            Source::Hyper { inner, release },
            stream,
            in_flight,
            read_timeout,
        )
    }

    /// Wraps a body arriving on the lean HTTP/1.1 path.
    pub fn plain(reader: Reader, in_flight: InFlight, read_timeout: Duration) -> Self {
        UpstreamBody::from_source(Source::Plain(reader), None, in_flight, read_timeout)
    }

    fn from_source(
        source: Source,
        stream: Option<StreamSlot>,
        in_flight: InFlight,
        read_timeout: Duration,
    ) -> Self {
        UpstreamBody {
            source,
            _in_flight: in_flight,
            _stream: stream,
            read_timeout,
            stall: None,
            stalled: false,
        }
    }

    /// The connection cannot carry another request: close it when the body goes.
    fn abandon(&mut self) {
        match &mut self.source {
            Source::Hyper { release, .. } => *release = None,
            Source::Plain(r) => r.abandon(),
        }
    }
}

fn give_back(release: &mut Option<(Rc<ConnPool>, u64, Conn)>) {
    if let Some((pool, id, conn)) = release.take() {
        pool.put(id, conn);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Hyper { inner, release } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    give_back(release);
                    Poll::Ready(None)
                }
                Poll::Ready(Some(r)) => Poll::Ready(Some(r.map_err(Into::into))),
                Poll::Pending => Poll::Pending,
            },
            Source::Plain(r) => r.poll_frame(cx),
        };
        match polled {
            Poll::Ready(Some(Err(e))) => {
                this.abandon();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.stalled = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let limit = this.read_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if !this.stalled {
                    this.stalled = true;
                    stall.as_mut().reset(tokio::time::Instant::now() + limit);
                }
                if stall.as_mut().poll(cx).is_ready() {
                    this.abandon(); // the connection is in an unknown state: close it
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Hyper { inner, .. } => inner.is_end_stream(),
            Source::Plain(r) => r.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Hyper { inner, .. } => inner.size_hint(),
            Source::Plain(r) => r
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304, Content-Length: 0) may never be polled.
        if let Source::Hyper { inner, release } = &mut self.source {
            if inner.is_end_stream() {
                give_back(release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdleList;

    fn list(n: usize) -> IdleList<usize> {
        let mut l = IdleList::default();
        (0..n).for_each(|c| l.push(c));
        l
    }

    #[test]
    fn the_purge_halves_what_went_unused_oldest_first() {
        let mut l = list(20);
        l.purge(); // a new list: nothing known to be unused yet
        assert_eq!(l.conns.len(), 20);
        for _ in 0..12 {
            l.pop();
        }
        (100..104).for_each(|c| l.push(c));
        l.purge(); // 8 never taken: 4 go, the oldest
        assert_eq!(l.conns, [4, 5, 6, 7, 100, 101, 102, 103]);
        l.purge(); // all 8 unused since
        assert_eq!(l.conns, [100, 101, 102, 103]);
    }

    #[test]
    fn connections_found_closed_count_as_the_unused_ones() {
        let mut l = list(20);
        l.purge();
        for _ in 0..10 {
            l.pop();
        }
        (100..110).for_each(|c| l.push(c));
        // The 10 never taken were closed by their backend; the 10 used since are spared.
        l.retain(|c| *c >= 100);
        l.purge();
        assert_eq!(l.conns.len(), 10);
    }
}
