//! Per-worker connections to backends. Each worker owns its pool outright (no lock, no
//! atomics). HTTP/1.1 connections carry one request at a time and go back to their worker's
//! pool when the response body ends. An HTTP/2 backend (`h2c://`, or `https://` whose ALPN
//! chose h2) gets one connection per worker that carries all of that worker's requests to it at
//! once: concurrent requests wait for the same dial, and a closed connection is replaced.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2;
use tokio::sync::Notify;

use crate::core::addr::Scheme;
use crate::core::backend::Backend;
use crate::core::client::{
    classify, handshake, handshake_any, ConnectError, Dialer, ErrorKind, Sender,
};

/// The body lbx sends upstream: the client's streaming body (cut off at `--max-body`), or a
/// buffered one, possibly empty (so the request can be re-sent to another backend).
pub type UpBody = Either<Limited<Incoming>, Full<Bytes>>;

/// A connection to one backend: HTTP/1.1, or a handle on a shared HTTP/2 connection.
pub type Conn = Sender<UpBody>;

/// Idle connections kept per backend per worker.
const MAX_IDLE: usize = 64;

/// One worker's backend connections, keyed by backend id.
#[derive(Default)]
pub struct ConnPool {
    /// Idle HTTP/1.1 connections.
    idle: RefCell<HashMap<u64, Vec<Conn>>>,
    /// What is known of backends that may speak HTTP/2 (every scheme but `http://`).
    shared: RefCell<HashMap<u64, Multiplexed>>,
}

/// A backend that may speak HTTP/2, as one worker knows it.
enum Multiplexed {
    /// Its first connection (or a replacement) is being opened; requests wait for it.
    Dialing(Rc<Dial>),
    /// The HTTP/2 connection every request shares.
    H2(http2::SendRequest<UpBody>),
    /// TLS ALPN chose HTTP/1.1: its connections are pooled one request at a time.
    Http1,
}

/// A dial that other requests wait for.
#[derive(Default)]
struct Dial {
    done: Notify,
    /// Why it failed, once it has: the waiters fail with it rather than dial again.
    failed: RefCell<Option<(ErrorKind, String)>>,
}

/// Ends a shared dial however it ends (completed, failed or cancelled with its request): the
/// `Dialing` mark goes unless the dial replaced it, and the waiters wake.
struct DialDone<'a> {
    pool: &'a ConnPool,
    id: u64,
    dial: Rc<Dial>,
}

impl Drop for DialDone<'_> {
    fn drop(&mut self) {
        let mut shared = self.pool.shared.borrow_mut();
        if let Some(Multiplexed::Dialing(d)) = shared.get(&self.id) {
            if Rc::ptr_eq(d, &self.dial) {
                shared.remove(&self.id);
            }
        }
        self.dial.done.notify_waiters();
    }
}

/// A connection ready for a request, and whether it came from the pool.
pub struct Checkout {
    /// The connection.
    pub conn: Conn,
    /// True when it was idle in the pool or is a shared HTTP/2 one (it may have been closed by
    /// the backend meanwhile).
    pub reused: bool,
}

fn handshake_failed(e: hyper::Error) -> ConnectError {
    ConnectError {
        kind: classify(&e),
        detail: e.to_string(),
    }
}

impl ConnPool {
    /// A connection to `backend` for one request: its shared HTTP/2 connection, else an idle
    /// HTTP/1.1 one that is still open, else a new one.
    pub async fn checkout(
        &self,
        dialer: &Dialer,
        backend: &Backend,
    ) -> Result<Checkout, ConnectError> {
        if backend.target.scheme != Scheme::Http {
            if let Some(c) = self.multiplexed(dialer, backend).await? {
                return Ok(c);
            }
        }
        while let Some(mut conn) = self.pop(backend.id) {
            if conn.is_closed() {
                continue;
            }
            // Ready at once for an idle connection; waits only while the previous response's
            // end is still being processed by the connection task.
            if conn.ready().await.is_ok() {
                return Ok(Checkout { conn, reused: true });
            }
        }
        self.fresh(dialer, backend).await.map(|conn| Checkout {
            conn,
            reused: false,
        })
    }

    /// A connection not taken from the idle pool: a new HTTP/1.1 one, or the backend's shared
    /// HTTP/2 connection once any closed one has been replaced.
    pub async fn connect(&self, dialer: &Dialer, backend: &Backend) -> Result<Conn, ConnectError> {
        if backend.target.scheme != Scheme::Http {
            if let Some(c) = self.multiplexed(dialer, backend).await? {
                return Ok(c.conn);
            }
        }
        self.fresh(dialer, backend).await
    }

    /// A new connection: HTTP/1.1 to an `http://` backend, otherwise whatever the scheme and
    /// ALPN call for (remembered for the next request).
    async fn fresh(&self, dialer: &Dialer, backend: &Backend) -> Result<Conn, ConnectError> {
        let (stream, _) = dialer.dial(&backend.target).await?;
        if backend.target.scheme == Scheme::Http {
            return handshake(stream)
                .await
                .map(Sender::H1)
                .map_err(handshake_failed);
        }
        let conn = handshake_any(stream, &backend.target)
            .await
            .map_err(handshake_failed)?;
        let known = match &conn {
            Sender::H2(tx) => Multiplexed::H2(tx.clone()),
            Sender::H1(_) => Multiplexed::Http1,
        };
        self.shared.borrow_mut().insert(backend.id, known);
        Ok(conn)
    }

    /// The shared HTTP/2 connection of a backend that may speak HTTP/2, opened (by one request
    /// while the others wait) when there is none or it has closed; `None` once the backend is
    /// known to have chosen HTTP/1.1.
    async fn multiplexed(
        &self,
        dialer: &Dialer,
        backend: &Backend,
    ) -> Result<Option<Checkout>, ConnectError> {
        loop {
            let wait = match self.shared.borrow().get(&backend.id) {
                Some(Multiplexed::H2(tx)) if !tx.is_closed() => {
                    return Ok(Some(Checkout {
                        conn: Sender::H2(tx.clone()),
                        reused: true,
                    }))
                }
                Some(Multiplexed::Http1) => return Ok(None),
                Some(Multiplexed::Dialing(d)) => Some(d.clone()),
                Some(Multiplexed::H2(_)) | None => None,
            };
            let Some(dial) = wait else { break };
            dial.done.notified().await;
            let failed = dial.failed.borrow().clone();
            if let Some((kind, detail)) = failed {
                return Err(ConnectError { kind, detail });
            }
        }
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
        conn.map(|conn| {
            Some(Checkout {
                conn,
                reused: false,
            })
        })
    }

    fn pop(&self, id: u64) -> Option<Conn> {
        self.idle.borrow_mut().get_mut(&id).and_then(Vec::pop)
    }

    fn put(&self, id: u64, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(id).or_default();
        if list.len() < MAX_IDLE {
            list.push(conn);
        }
    }

    /// Drops the connections of backends that are no longer in the set.
    pub fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.idle.borrow_mut().retain(|id, _| keep(*id));
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
    inner: Incoming,
    release: Option<(Rc<ConnPool>, u64, Conn)>,
    _in_flight: InFlight,
    read_timeout: Duration,
    /// Made on the first stall and re-armed on later ones: a body that flows costs no timer.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
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
    /// (a shared HTTP/2 one stays where it is).
    pub fn new(
        inner: Incoming,
        pool: Rc<ConnPool>,
        backend_id: u64,
        conn: Conn,
        in_flight: InFlight,
        read_timeout: Duration,
    ) -> Self {
        UpstreamBody {
            inner,
            release: (!conn.is_h2()).then_some((pool, backend_id, conn)),
            _in_flight: in_flight,
            read_timeout,
            stall: None,
            stalled: false,
        }
    }

    fn give_back(&mut self) {
        if let Some((pool, id, conn)) = self.release.take() {
            pool.put(id, conn);
        }
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.give_back();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.release = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.stalled = false;
                Poll::Ready(Some(Ok(frame)))
            }
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
                    this.release = None; // the connection is in an unknown state: close it
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304, Content-Length: 0) may never be polled.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
