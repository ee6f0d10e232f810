//! Per-worker keep-alive connections to backends. Each worker owns its pool outright (no lock,
//! no atomics): a connection goes back to its worker's pool when its response body ends.

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
use hyper::client::conn::http1::SendRequest;

use crate::core::backend::Backend;
use crate::core::client::{handshake, ConnectError, Dialer};

/// The body lbx sends upstream: the client's streaming body (cut off at `--max-body`), or a
/// buffered one, possibly empty (so the request can be re-sent to another backend).
pub type UpBody = Either<Limited<Incoming>, Full<Bytes>>;

/// An HTTP/1.1 connection to one backend.
pub type Conn = SendRequest<UpBody>;

/// Idle connections kept per backend per worker.
const MAX_IDLE: usize = 64;

/// One worker's idle connections, keyed by backend id.
#[derive(Default)]
pub struct ConnPool {
    idle: RefCell<HashMap<u64, Vec<Conn>>>,
}

/// A connection ready for a request, and whether it came from the pool.
pub struct Checkout {
    /// The connection.
    pub conn: Conn,
    /// True when it was idle in the pool (it may have been closed by the backend meanwhile).
    pub reused: bool,
}

impl ConnPool {
    /// An idle connection to `backend` that is still open, or a new one.
    pub async fn checkout(
        &self,
        dialer: &Dialer,
        backend: &Backend,
    ) -> Result<Checkout, ConnectError> {
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
        self.connect(dialer, backend).await.map(|conn| Checkout {
            conn,
            reused: false,
        })
    }

    /// A new connection, bypassing the pool.
    pub async fn connect(&self, dialer: &Dialer, backend: &Backend) -> Result<Conn, ConnectError> {
        let (stream, _) = dialer.dial(&backend.target).await?;
        handshake(stream).await.map_err(|e| ConnectError {
            kind: crate::core::client::classify(&e),
            detail: e.to_string(),
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

    /// Drops idle connections of backends that are no longer in the set.
    pub fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.idle.borrow_mut().retain(|id, _| keep(*id));
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
    /// Wraps `inner`, returning `conn` to `pool` when it has been read to the end.
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
            release: Some((pool, backend_id, conn)),
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
