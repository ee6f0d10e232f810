//! One client connection's life after accept. HTTP/1 connections, plain or over TLS, *park*
//! when they go quiet: hyper's connection (its 8 KiB read and write buffers, the slot for a
//! request future) is taken apart and dropped, and the task holds only the socket (and the TLS
//! session) until the client sends again. Ten thousand idle keep-alive clients then cost about
//! what their sockets cost, as with nginx, which frees a keep-alive connection's buffers the
//! same way.

use std::cell::{Cell, OnceCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::idle::{Activity, Tracked};
use super::lean::{self, Lines, WithLines};
use super::server::LocalExec;
use super::tick::{Gate, Ticker};

/// How long an HTTP/1 connection stays quiet before it parks. Long enough that a busy
/// keep-alive connection never pays for taking hyper's connection apart and building it again;
/// short enough that idle clients hold no buffers for long.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// Most bytes the lean path reads ahead while a request is answered (more wait in the socket).
const LEAN_HOLD: usize = 64 * 1024;

/// The HTTP/2 connection preface, which tells h2c with prior knowledge from HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service a connection is served with, as hyper needs it.
pub trait ConnService<B>:
    Service<Request<RequestBody>, Response = Response<B>, Error: Into<BoxError>, Future: 'static>
    + 'static
{
}

impl<S, B> ConnService<B> for S where
    S: Service<
            Request<RequestBody>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: 'static,
        > + 'static
{
}

/// A response body hyper can write (and the lean path, with the fields it may carry).
pub trait ResponseBody: Body<Error: Into<BoxError>> + WithLines + 'static {}

impl<B> ResponseBody for B where B: Body<Error: Into<BoxError>> + WithLines + 'static {}

/// What the service wrapper knows about a connection's requests.
#[derive(Default)]
pub(super) struct ConnState {
    /// Requests whose answer (head and body) hyper has not finished with.
    in_flight: Cell<u32>,
    /// Requests received: whether a head has arrived (the first-head deadline no longer
    /// applies), and whether one came and went between two looks.
    requests: Cell<u64>,
    /// The latest request asked for an upgrade, or part of a head is in: the connection must
    /// not park.
    hold: Cell<bool>,
    /// Set while the latest request's body has not been read to its end: hyper may still be
    /// reading it, and parking would take the rest of it for a new head. (Shared with the body,
    /// which may be sent to an HTTP/2 backend's connection and so must be `Send`; made at a
    /// connection's first request with a body.)
    unread_body: OnceCell<Arc<AtomicBool>>,
}

impl ConnState {
    fn seen(&self) -> bool {
        self.requests.get() > 0
    }

    fn settled(&self) -> bool {
        self.in_flight.get() == 0
            && !self.hold.get()
            && !self.unread_body.get().is_some_and(|f| f.load(Relaxed))
    }
}

/// Since when an HTTP/1 connection has been waiting for its next request head, as seen by
/// looking now and then (to within one look's interval).
#[derive(Default)]
struct Waiting {
    since: Option<Instant>,
    requests: u64,
}

impl Waiting {
    fn look(&mut self, state: &ConnState, now: Instant) {
        let requests = state.requests.get();
        if state.in_flight.get() > 0 {
            self.since = None;
        } else if self.since.is_none() || requests != self.requests {
            self.since = Some(now);
        }
        self.requests = requests;
    }
}

/// What a connection's ticker finds at a tick, for hyper's connections and the lean path alike.
enum Found {
    /// No whole head came within the keep-alive time: close.
    Late,
    /// Shutdown began, or the connection moved no byte for the idle timeout: close gracefully.
    Leave,
    /// Bytes moved since the last look.
    Moved,
    /// None did.
    Quiet,
}

/// Whether, and since when, a connection has moved bytes, as seen at its ticks.
struct Looks {
    moves: u64,
    quiet_since: Instant,
}

impl Looks {
    fn new(activity: &Activity) -> Looks {
        Looks {
            moves: activity.moves(),
            quiet_since: Instant::now(),
        }
    }

    /// Looks at the connection at `now`: its bytes, its wait for a head (the first head has
    /// its own deadline), the shutdown signal and the idle timeout.
    fn look(
        &mut self,
        conn: &Conn,
        activity: &Activity,
        state: &ConnState,
        waiting: &mut Waiting,
        now: Instant,
    ) -> Found {
        let moves = activity.moves();
        let moved = moves != self.moves;
        self.moves = moves;
        if moved {
            self.quiet_since = now;
        }
        waiting.look(state, now);
        if state.seen() && waiting.since.is_some_and(|t| now >= t + conn.keep_alive) {
            return Found::Late;
        }
        if conn.shutdown.has_changed().unwrap_or(true)
            || conn.idle.is_some_and(|idle| now >= self.quiet_since + idle)
        {
            return Found::Leave;
        }
        if moved {
            Found::Moved
        } else {
            Found::Quiet
        }
    }
}

/// Wraps a connection's service to follow its requests: the first head's arrival, and whether
/// an answer is still being written.
pub(super) struct Tracking<S> {
    inner: S,
    state: Rc<ConnState>,
}

impl<S> Tracking<S> {
    pub(super) fn new(inner: S) -> Tracking<S> {
        Tracking {
            inner,
            state: Rc::default(),
        }
    }
}

impl<S, B> Tracking<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
{
    /// Answers a request the lean path read (it has no body).
    fn call_plain(&self, req: Request<()>) -> Answering<S::Future> {
        let st = &self.state;
        st.hold.set(false);
        if let Some(f) = st.unread_body.get() {
            f.store(false, Relaxed);
        }
        self.answer(req.map(|()| RequestBody::empty()))
    }

    /// Counts the request in, and in flight until its answer is done with.
    fn answer(&self, req: Request<RequestBody>) -> Answering<S::Future> {
        let st = &self.state;
        st.in_flight.set(st.in_flight.get() + 1);
        st.requests.set(st.requests.get() + 1);
        Answering {
            inner: self.inner.call(req),
            guard: Some(InFlight(st.clone())),
        }
    }
}

impl<S, B> Service<Request<Incoming>> for Tracking<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
{
    type Response = Response<Counted<B>>;
    type Error = S::Error;
    type Future = Answering<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let st = &self.state;
        st.hold.set(
            req.headers().contains_key(hyper::header::UPGRADE)
                || req.method() == hyper::Method::CONNECT,
        );
        let unread = if req.body().is_end_stream() {
            if let Some(f) = st.unread_body.get() {
                f.store(false, Relaxed);
            }
            None
        } else {
            let f = st.unread_body.get_or_init(Arc::default);
            f.store(true, Relaxed);
            Some(f.clone())
        };
        self.answer(req.map(|inner| RequestBody {
            inner: Some(inner),
            unread,
        }))
    }
}

pin_project! {
    /// A request's body as services get it: hyper's (none for a request the lean path read),
    /// telling the connection when it has been read to its end (so that the connection may
    /// park after the answer). A body dropped unread leaves the connection unparked until its
    /// next request: hyper drains or closes.
    pub struct RequestBody {
        inner: Option<Incoming>,
        unread: Option<Arc<AtomicBool>>,
    }
}

impl RequestBody {
    /// The body of a request that has none.
    fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            unread: None,
        }
    }

    /// The lean path read the request (and writes its answer, with any [`Lines`] its body
    /// carries).
    pub fn lean(&self) -> bool {
        self.inner.is_none()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = ready!(Pin::new(&mut *inner).poll_frame(cx));
        let ended = match &r {
            None => true,
            Some(Ok(_)) => inner.is_end_stream(),
            Some(Err(_)) => false,
        };
        if ended {
            if let Some(f) = this.unread.take() {
                f.store(false, Relaxed);
            }
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// HTTP/1 connections parked now, over all workers.
static PARKED: AtomicU64 = AtomicU64::new(0);

/// How many HTTP/1 client connections are parked now (over all workers of the process).
pub fn parked_connections() -> u64 {
    PARKED.load(Relaxed)
}

/// Counts a connection as parked until dropped.
struct Parked;

impl Parked {
    fn now() -> Parked {
        PARKED.fetch_add(1, Relaxed);
        Parked
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        PARKED.fetch_sub(1, Relaxed);
    }
}

/// Counts one request as in flight until dropped (with its response body, or its future when
/// the request is abandoned).
struct InFlight(Rc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

pin_project! {
    /// The service's future; its response body keeps the request counted.
    pub(super) struct Answering<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, B, E> Future for Answering<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Counted<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let r = ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(r.map(|resp| {
            resp.map(|body| Counted {
                body,
                _guard: guard,
            })
        }))
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until hyper drops it.
    pub(super) struct Counted<B> {
        #[pin]
        body: B,
        _guard: Option<InFlight>,
    }
}

impl<B: WithLines> WithLines for Counted<B> {
    fn lines(&self) -> Option<&Lines> {
        self.body.lines()
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's first bytes (`None`: closed, failed or silent past the deadline): whether
/// they are HTTP/1's rather than (the start of) the HTTP/2 preface, and the bytes to replay
/// when they had to be read rather than peeked. Too few bytes to tell go to the auto builder,
/// which waits for the rest.
async fn sniff_opening<I: Park>(io: &mut I, deadline: Instant) -> Option<(bool, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    match tokio::time::timeout_at(deadline, io.first_bytes(&mut buf)).await {
        Ok(Ok((n @ 1.., consumed))) => {
            let first = &buf[..n];
            let replay = match consumed {
                true => Bytes::copy_from_slice(first),
                false => Bytes::new(),
            };
            Some((first != &H2_PREFACE[..n], replay))
        }
        _ => None,
    }
}

/// How the lean path left a connection.
enum Lean {
    /// Closed, or to be.
    Close,
    /// Quiet: to park.
    Park,
    /// A request for hyper: its bytes are put back.
    Hyper,
}

/// The stream hyper's HTTP/1 connection runs on.
type H1Io<I> = TokioIo<Tracked<I>>;

/// A stream an idle HTTP/1 connection can park on.
pub(super) trait Park: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Resolves when the peer may have sent something, or closed.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + '_;

    /// The first bytes the peer sends, into `buf`: how many, and whether they were consumed
    /// (read rather than peeked, so they must be replayed).
    fn first_bytes<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = std::io::Result<(usize, bool)>> + 'a;

    /// Bytes the stream has received and decoded but nobody has read yet.
    fn take_buffered(&mut self) -> Bytes {
        Bytes::new()
    }
}

impl Park for TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + '_ {
        TcpStream::readable(self)
    }

    async fn first_bytes(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, bool)> {
        Ok((self.peek(buf).await?, false))
    }
}

impl Park for tokio_rustls::server::TlsStream<TcpStream> {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + '_ {
        self.get_ref().0.readable()
    }

    /// Decrypted bytes cannot be peeked: they are read.
    async fn first_bytes(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, bool)> {
        Ok((self.read(buf).await?, true))
    }

    /// Plaintext rustls decrypted from records the socket delivered with the last request.
    fn take_buffered(&mut self) -> Bytes {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        // WouldBlock (nothing decoded waits), end of stream or an error: the next read sees it.
        while let Ok(n @ 1..) = std::io::Read::read(&mut self.get_mut().1.reader(), &mut chunk) {
            out.extend_from_slice(&chunk[..n]);
        }
        out.into()
    }
}

/// One accepted connection's serving context.
pub(super) struct Conn {
    pub(super) auto: Rc<auto::Builder<LocalExec>>,
    pub(super) h1: Rc<http1::Builder>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// When the first request head must have arrived (the TLS handshake included).
    pub(super) deadline: Instant,
    /// Close a connection that moves no byte for this long.
    pub(super) idle: Option<Duration>,
    /// How long a keep-alive connection may wait for its next request head.
    pub(super) keep_alive: Duration,
}

impl Conn {
    /// Serves a plain TCP connection: HTTP/1 (parking while idle) or h2c.
    pub(super) fn serve_plain<S, B>(
        self,
        stream: TcpStream,
        service: Tracking<S>,
    ) -> impl Future<Output = ()>
    where
        S: ConnService<B>,
        B: ResponseBody,
    {
        // Not an async fn of its own: the task's state is `serve_h1`'s alone, with no second
        // copy of the connection's parts.
        self.serve_h1(stream, true, service)
    }

    /// Serves HTTP/1 on `io`, taking hyper's connection apart whenever the client goes quiet,
    /// and building it again when the client sends. With `sniff`, the first bytes are looked at
    /// first, and the HTTP/2 preface goes to the auto builder instead.
    async fn serve_h1<I, S, B>(mut self, mut io: I, sniff: bool, service: Tracking<S>)
    where
        I: Park,
        S: ConnService<B>,
        B: ResponseBody,
    {
        let prefix = if sniff {
            // Bound before the match, so nothing of the sniff outlives it in the task's state.
            let first = sniff_opening(&mut io, self.deadline).await;
            match first {
                None => return,
                Some((true, prefix)) => prefix,
                // Boxed: the task of a parked HTTP/1 connection stays small.
                Some((false, prefix)) => return Box::pin(self.serve(io, prefix, service)).await,
            }
        } else {
            Bytes::new()
        };
        let state = service.state.clone();
        let activity = Activity::new();
        let mut io = Tracked::new(io, activity.clone());
        io.rewind(prefix);
        let mut service = service;
        // Since when the connection has been waiting for a request head (None while a request
        // is in flight); the next head must be in within the keep-alive time.
        let mut waiting = Waiting::default();
        loop {
            // Boxed: the lean path holds a request's future while it is answered; a parked
            // connection's task keeps none of that.
            let lean = Box::pin(self.serve_lean(&mut io, &service, &activity, &mut waiting));
            match lean.await {
                Lean::Close => return,
                Lean::Park => {}
                Lean::Hyper => {
                    // Boxed: a parked connection's task keeps none of hyper's state.
                    let conn = Box::pin(
                        self.h1
                            .serve_connection(TokioIo::new(io), service)
                            .with_upgrades(),
                    );
                    let Some(parts) = self.run_h1(conn, &activity, &state, &mut waiting).await
                    else {
                        return;
                    };
                    (io, service) = (parts.io.into_inner(), parts.service);
                    // In a block of its own, so none of these buffers stays in the parked
                    // task's state.
                    let replayed = {
                        // Bytes hyper had read, then any the stream itself decoded and holds
                        // (TLS).
                        let (read_buf, held) = (parts.read_buf, io.get_mut().take_buffered());
                        let unread = match (read_buf.is_empty(), held.is_empty()) {
                            (_, true) => read_buf,
                            (true, false) => held,
                            (false, false) => [&read_buf[..], &held[..]].concat().into(),
                        };
                        // Even empty, it may share hyper's read buffer: dropped here if so.
                        !unread.is_empty() && {
                            io.rewind(unread);
                            true
                        }
                    };
                    if replayed {
                        // Part of a head had arrived: serve it at once, and park no more until
                        // a whole head is in (hyper's header timer must run on, or a client
                        // trickling a head could restart it at every park).
                        state.hold.set(true);
                        continue;
                    }
                }
            }
            trim::parked();
            let _parked = Parked::now();
            // Parked: the task holds the stream and nothing else until the client sends.
            let until = waiting.since.unwrap_or_else(Instant::now) + self.keep_alive;
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => return,
                _ = tokio::time::sleep_until(until) => return,
                ready = io.get_ref().readable() => if ready.is_err() { return },
            }
        }
    }

    /// Serves plain requests (see [`lean`]) until the connection should park, hand over to
    /// hyper (the bytes read put back) or close. It keeps the rules [`Conn::run_h1`] keeps
    /// while waiting for a head: the first-head deadline, the keep-alive time, the idle
    /// timeout and shutdown, on one ticker.
    async fn serve_lean<I, S, B>(
        &self,
        io: &mut Tracked<I>,
        service: &Tracking<S>,
        activity: &Activity,
        waiting: &mut Waiting,
    ) -> Lean
    where
        I: Park,
        S: ConnService<B>,
        B: ResponseBody,
    {
        let state = &service.state;
        // Read into, and split off whole when a head is looked at.
        let mut buf = BytesMut::new();
        // What followed the last head in what was read (a pipelined request): looked at next,
        // and while it waits the connection is not read.
        let mut pending = Bytes::new();
        let mut out = BytesMut::new();
        let mut tick = Ticker::new(Instant::now() + PARK_AFTER, PARK_AFTER);
        let mut looks = Looks::new(activity);
        loop {
            if pending.is_empty() && buf.is_empty() {
                if buf.capacity() < 1024 {
                    buf.reserve(4096);
                }
                let read = loop {
                    tokio::select! {
                        biased;
                        r = io.read_buf(&mut buf) => break r,
                        _ = tick.tick() => {
                            // The clock, not the tick's own instant: the ticker is not polled
                            // while a request is answered, and a late tick says when it was due.
                            let now = Instant::now();
                            if !state.seen() && now >= self.deadline {
                                return Lean::Close;
                            }
                            match looks.look(self, activity, state, waiting, now) {
                                Found::Late => return Lean::Close,
                                Found::Leave => {
                                    let _ = io.shutdown().await;
                                    return Lean::Close;
                                }
                                Found::Quiet => return Lean::Park,
                                Found::Moved => {}
                            }
                        }
                    }
                };
                if !matches!(read, Ok(1..)) {
                    return Lean::Close;
                }
            }
            // Only one of the two holds bytes: the connection is read only while nothing is
            // pending.
            let bytes = if pending.is_empty() {
                buf.split().freeze()
            } else {
                std::mem::take(&mut pending)
            };
            let Some((n, plain)) = lean::parse(&bytes) else {
                io.rewind(bytes);
                return Lean::Hyper;
            };
            pending = bytes.slice(n..);
            drop(bytes);
            let method = plain.req.method().clone();
            let resp = {
                let mut answering = std::pin::pin!(service.call_plain(plain.req));
                loop {
                    tokio::select! {
                        biased;
                        r = answering.as_mut() => break r,
                        // The client closing meanwhile abandons the request, as with hyper; bytes
                        // it sends meanwhile are kept for after the answer. Not while a pipelined
                        // request waits: it is answered first, and a client may send its requests
                        // and then close its side.
                        r = io.read_buf(&mut buf), if pending.is_empty() && buf.len() < LEAN_HOLD => {
                            if !matches!(r, Ok(1..)) {
                                return Lean::Close;
                            }
                        }
                    }
                }
            };
            let Ok(resp) = resp else {
                return Lean::Close;
            };
            let close = plain.close || self.shutdown.has_changed().unwrap_or(true);
            let keep = lean::answer(&method, resp, close, &mut out, io).await;
            let sent = io.write_all(&out).await.is_ok() && io.flush().await.is_ok();
            out.clear();
            match keep {
                Ok(true) if sent && !close => {}
                Ok(_) if sent => {
                    let _ = io.shutdown().await;
                    return Lean::Close;
                }
                _ => return Lean::Close,
            }
        }
    }

    /// Drives one HTTP/1 connection until it ends (`None`) or has been quiet with nothing in
    /// flight for [`PARK_AFTER`], when it is taken apart and its parts returned. One timer,
    /// ticking every [`PARK_AFTER`] while the connection is active, enforces the keep-alive
    /// time (hyper's per-request header timer is off: that saves arming a timer per request),
    /// the idle timeout, parking, and a graceful close at shutdown (within one tick).
    async fn run_h1<I, S, B>(
        &mut self,
        mut conn: Pin<Box<http1::UpgradeableConnection<H1Io<I>, Tracking<S>>>>,
        activity: &Arc<Activity>,
        state: &ConnState,
        waiting: &mut Waiting,
    ) -> Option<http1::Parts<H1Io<I>, Tracking<S>>>
    where
        I: Park,
        S: ConnService<B>,
        B: ResponseBody,
    {
        let mut closing = false;
        let mut first_head = !state.seen();
        // Polled at every poll of this task: a `Ticker` costs a flag check between ticks.
        let mut tick = Ticker::new(Instant::now() + PARK_AFTER, PARK_AFTER);
        // Shutdown is looked for at each tick, not waited for: a channel's `changed()` takes
        // a lock each time it is polled, and this task is polled twice per request.
        let mut looks = Looks::new(activity);
        let first_deadline = tokio::time::sleep_until(self.deadline);
        tokio::pin!(first_deadline);
        loop {
            tokio::select! {
                biased;
                _ = conn.as_mut() => return None,
                _ = &mut first_deadline, if first_head => {
                    if !state.seen() {
                        return None; // dropping the connection closes it
                    }
                    first_head = false;
                }
                now = tick.tick() => {
                    // Once a head has come the first-head deadline has nothing left to do:
                    // stop polling its timer at every poll of this task.
                    first_head &= !state.seen();
                    match looks.look(self, activity, state, waiting, now) {
                        Found::Late => return None, // no whole head in time: close
                        _ if closing => {}
                        Found::Leave => {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        Found::Quiet if state.settled() && activity.quiet() => {
                            return Pin::into_inner(conn).into_parts();
                        }
                        Found::Quiet | Found::Moved => {}
                    }
                }
            }
        }
    }

    /// Serves a TLS connection once its handshake completes (within the first-head deadline):
    /// HTTP/2 when ALPN chose it, HTTP/1 (parking while idle, as plain connections do) when it
    /// chose http/1.1, and without ALPN, what the first bytes say.
    pub(super) async fn serve_tls<S, B>(
        self,
        config: Arc<rustls::ServerConfig>,
        stream: TcpStream,
        service: Tracking<S>,
    ) where
        S: ConnService<B>,
        B: ResponseBody,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake = tokio::time::timeout_at(self.deadline, acceptor.accept(stream)).await;
        let Ok(Ok(tls)) = handshake else {
            return;
        };
        match tls.get_ref().1.alpn_protocol().map(|p| p == b"h2") {
            Some(true) => self.serve(tls, Bytes::new(), service).await,
            Some(false) => self.serve_h1(tls, false, service).await,
            None => self.serve_h1(tls, true, service).await,
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 (told apart by the preface) on `io` until it closes, without
    /// parking (HTTP/2, over TLS or h2c). At shutdown, and when no byte has moved for the idle
    /// timeout (hyper's header timer only covers HTTP/1), the connection closes gracefully:
    /// requests in flight finish first.
    pub(super) async fn serve<I, S, B>(self, io: I, prefix: Bytes, service: Tracking<S>)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: ConnService<B>,
        B: ResponseBody,
    {
        let state = service.state.clone();
        let activity = Activity::new();
        let mut io = Tracked::new(io, activity.clone());
        io.rewind(prefix);
        // Boxed, so the task of a parked HTTP/1 connection stays small.
        let mut conn = Box::pin(
            self.auto
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned(),
        );
        let mut first_head = true;
        let mut closing = false;
        let mut shutdown = self.shutdown.clone();
        let stop = shutdown.changed();
        let first_deadline = tokio::time::sleep_until(self.deadline);
        let idle = activity.idle_for(self.idle);
        tokio::pin!(stop, first_deadline, idle);
        // The connection's timers and the shutdown signal are polled through a gate: only after
        // one of them woke it, not at every poll of this task (each frame read or written).
        let mut gate = Gate::new();
        loop {
            let event = std::future::poll_fn(|cx| {
                if conn.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Ended);
                }
                gate.poll(cx, |cx| {
                    if !closing && stop.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Shutdown);
                    }
                    if first_head && first_deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::FirstDeadline);
                    }
                    if !closing && idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Idle);
                    }
                    Poll::Pending
                })
            })
            .await;
            match event {
                Event::Ended => return,
                Event::FirstDeadline => {
                    if !state.seen() {
                        return; // dropping the connection closes it
                    }
                    first_head = false;
                }
                Event::Shutdown | Event::Idle => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What ends a wait in [`Conn::serve`].
enum Event {
    /// The connection is done.
    Ended,
    /// The worker is shutting down.
    Shutdown,
    /// The first-head deadline passed.
    FirstDeadline,
    /// No byte moved for the idle timeout.
    Idle,
}

/// glibc keeps freed heap memory mapped, and the buffers parked connections free lie between
/// allocations that live on (the connections' tasks), so the process would keep the size of
/// its busiest moment. After a burst of parking, each worker asks glibc to hand whole free
/// pages back to the kernel: at most twice a second, and only after many connections parked.
mod trim {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use tokio::sync::Notify;

    /// Parked connections that make a trim worth it (about 20 KB freed each).
    const BATCH: u32 = 64;
    /// Wait after the batch fills (more parking tends to follow), and between trims.
    const SETTLE: Duration = Duration::from_millis(200);
    const GAP: Duration = Duration::from_millis(300);

    thread_local! {
        static PARKED: Cell<u32> = const { Cell::new(0) };
        static WAKE: Rc<Notify> = {
            let wake = Rc::new(Notify::new());
            tokio::task::spawn_local(trimmer(wake.clone()));
            wake
        };
    }

    /// Notes that a connection on this worker parked.
    pub(super) fn parked() {
        let n = PARKED.with(|p| {
            p.set(p.get() + 1);
            p.get()
        });
        if n == BATCH {
            WAKE.with(|w| w.notify_one());
        }
    }

    async fn trimmer(wake: Rc<Notify>) {
        loop {
            wake.notified().await;
            tokio::time::sleep(SETTLE).await;
            PARKED.with(|p| p.set(0));
            release_free_pages();
            tokio::time::sleep(GAP).await;
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn release_free_pages() {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers; it only returns free pages to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn release_free_pages() {}
}
