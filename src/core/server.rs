//! Serving side shared by `serve` and `balance`: SO_REUSEPORT listeners, one current-thread
//! runtime per worker (no cross-core locks), HTTP/1.1 and HTTP/2 (h2c by its preface, h2 by
//! ALPN) on one port, optional TLS termination, upgrades, and graceful shutdown.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use super::conn::{parked_connections, RequestBody};
use super::conn::{Conn, ConnService, ResponseBody, Tracking};
pub use super::lean::{Lines, WithLines};
use anyhow::{anyhow, Context as _};
use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Largest request head accepted (Envoy's default is 60 KiB, nginx's 4 x 8 KiB). The auto
/// builder cannot set hyper's `max_header_size`, so `balance::validate` counts heads against
/// this; hyper's read buffer, bounded a little above it, answers 431 to anything larger.
pub const MAX_HEAD: usize = 64 * 1024;

/// hyper's HTTP/1 read buffer bound: a head that does not fit gets 431.
const MAX_BUF: usize = MAX_HEAD + 16 * 1024;

/// Listen backlog: sized for connection bursts (the kernel caps it at somaxconn).
const BACKLOG: i32 = 4096;

/// Binds `count` listeners on `addr`, sharing the port with SO_REUSEPORT so each worker accepts
/// on its own socket. Port 0 picks a free port once; the rest join it. A port held by anyone
/// else is reported as in use (a plain bind is tried first, so another SO_REUSEPORT process
/// cannot silently share it).
pub fn bind(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    if count <= 1 {
        return Ok(vec![bind_one(addr, false).map_err(|e| bind_error(addr, e))?]);
    }
    // A plain bind fails on a port anyone holds, even a process that set SO_REUSEPORT; it also
    // picks the port when asked for port 0. The shared sockets then take its place.
    let probe = plain_socket(addr).map_err(|e| bind_error(addr, e))?;
    let real = SocketAddr::new(
        addr.ip(),
        probe.local_addr()?.as_socket().map_or(0, |a| a.port()),
    );
    drop(probe);
    (0..count)
        .map(|_| bind_one(real, true).map_err(|e| bind_error(real, e)))
        .collect()
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn plain_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s)
}

fn bind_error(addr: SocketAddr, e: io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::AddrInUse => anyhow!("cannot listen on {addr}: address already in use"),
        io::ErrorKind::PermissionDenied => {
            anyhow!("cannot listen on {addr}: permission denied (ports below 1024 need privileges)")
        }
        io::ErrorKind::AddrNotAvailable => {
            anyhow!("cannot listen on {addr}: address not available on this machine")
        }
        _ => anyhow!("cannot listen on {addr}: {e}"),
    }
}

/// Default worker count: the cores this process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Worker threads, each running one current-thread runtime and a `LocalSet`.
pub struct Workers {
    shutdown: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts one thread per item of `per_worker`, running `f(index, item, shutdown)` to completion.
    pub fn spawn<W, F, Fut>(name: &str, per_worker: Vec<W>, f: F) -> anyhow::Result<Workers>
    where
        W: Send + 'static,
        F: Fn(usize, W, watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let f = Arc::new(f);
        let mut threads = Vec::with_capacity(per_worker.len());
        for (i, w) in per_worker.into_iter().enumerate() {
            let (f, rx) = (f.clone(), rx.clone());
            let t = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    let local = tokio::task::LocalSet::new();
                    // Spawned rather than run as block_on's own future: that one is polled
                    // at every pass over the worker's ready tasks, and the accept loop has no
                    // reason to be.
                    super::local::block_on(&rt, &local, async move {
                        if let Err(e) = tokio::task::spawn_local(f(i, w, rx)).await {
                            if e.is_panic() {
                                std::panic::resume_unwind(e.into_panic());
                            }
                        }
                    });
                })
                .context("cannot start a worker thread")?;
            threads.push(t);
        }
        Ok(Workers {
            shutdown: tx,
            threads,
        })
    }

    /// Asks every worker to stop accepting and finish in-flight work.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// A receiver that turns true at shutdown (for tasks that live beside the workers).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Waits for every worker thread to end.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Runs hyper's per-connection tasks (HTTP/2 streams) on the worker's `LocalSet`: workers are
/// current-thread runtimes, and the services hold `Rc`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(async move {
            let _ = fut.await;
        });
    }
}

/// Lets every other task the worker has ready run first: the calling task goes to the back of
/// the worker's run queue, once.
///
/// A proxy that writes as soon as it has read sends one request or answer per wake-up of the
/// process at the other end. Yielding between reading and writing makes a worker read what
/// the last poll of its sockets delivered before it writes any of it (a turn runs the whole
/// queue, up to some 500 task polls: see [`super::local`]), so its writes leave together and
/// the backends and clients behind them wake once for several. (No system call: the task
/// wakes itself and so is queued behind the tasks already woken. Tokio's `yield_now` would
/// first poll the sockets again.)
pub async fn after_ready_tasks() {
    requeue(1).await
}

/// Like [`after_ready_tasks`], twice: an answer read from a backend goes out to its client
/// after the requests that this turn's reads send to backends. A turn then runs as HAProxy's
/// loop does: reads, requests out, answers out; the backends start on their requests while
/// the worker writes the answers.
pub async fn after_backend_writes() {
    requeue(2).await
}

/// Puts the calling task at the back of the run queue `passes` times.
async fn requeue(passes: u8) {
    let mut left = passes;
    std::future::poll_fn(|cx| {
        if left == 0 {
            return std::task::Poll::Ready(());
        }
        left -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// True when a request's `TE` lists `trailers` (RFC 9110 §10.1.4): its client takes trailer
/// fields.
pub fn takes_trailers(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// A TLS server configuration that a reload may swap (new certificate files).
pub type TlsConfig = Arc<ArcSwap<rustls::ServerConfig>>;

/// What the service factory learns about a new connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// True when the connection came over TLS.
    pub tls: bool,
}

/// The limits of a client connection, fixed when it is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time a client has to send a complete request head. Without `idle_timeout` it covers
    /// every request, keep-alive waits included; with it, only a new connection's first. A new
    /// connection's TLS handshake counts against it too.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request head (hyper's header read
    /// timer starts when a connection goes idle, so this bounds idle time plus head time). A
    /// connection (HTTP/2 ones included) that moves no byte for this long is also closed
    /// gracefully.
    pub idle_timeout: Option<Duration>,
    /// Connections an accept loop keeps open at once; beyond it, it stops accepting and new
    /// connections wait in the kernel's accept queue.
    pub max_connections: Option<usize>,
}

impl ConnLimits {
    /// How long a keep-alive connection may wait for its next request head.
    pub fn keep_alive(&self) -> Duration {
        self.idle_timeout.unwrap_or(self.header_timeout)
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: None,
            max_connections: None,
        }
    }
}

/// [`ConnLimits`] that may change while accept loops run (a config reload), shared by those
/// loops. A loop reads them as it accepts each connection, without a lock: a new value applies
/// to connections accepted afterwards, while open ones keep the limits they were accepted with.
/// A lower `max_connections` closes nothing: the loop stops accepting until enough connections
/// have ended.
#[derive(Debug)]
pub struct ConnSettings {
    current: ArcSwap<ConnLimits>,
    /// Wakes loops waiting at their connection limit when the limits change.
    changed: Notify,
}

impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings::new(ConnLimits::default())
    }
}

impl ConnSettings {
    /// Settings starting at `limits`.
    pub fn new(limits: ConnLimits) -> ConnSettings {
        ConnSettings {
            current: ArcSwap::from_pointee(limits),
            changed: Notify::new(),
        }
    }

    /// The limits in force.
    pub fn get(&self) -> Arc<ConnLimits> {
        self.current.load_full()
    }

    /// Puts `limits` in force for new connections (nothing changes when they are the same).
    pub fn set(&self, limits: ConnLimits) {
        if **self.current.load() != limits {
            self.current.store(Arc::new(limits));
            self.changed.notify_waiters();
        }
    }
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ConnOptions {
    /// Timeouts and the connection limit, read for each new connection.
    pub limits: Arc<ConnSettings>,
    /// How long to wait for in-flight requests at shutdown.
    pub grace: Duration,
    /// Terminate TLS on this listener (the handshake counts against `header_timeout`).
    pub tls: Option<TlsConfig>,
    /// Concurrent streams an HTTP/2 client may open per connection (hyper's 200 when unset).
    pub max_streams: Option<u32>,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            limits: Arc::default(),
            grace: Duration::from_secs(10),
            tls: None,
            max_streams: None,
        }
    }
}

/// Open-connection count of one accept loop, and a wake-up for when one closes.
#[derive(Default)]
struct Slots {
    open: Cell<usize>,
    freed: Notify,
}

impl Slots {
    /// Waits until fewer connections are open than the limit in force (which a change of
    /// `settings` may raise or lower meanwhile); false when shutdown comes first.
    async fn room(&self, settings: &ConnSettings, shutdown: &mut watch::Receiver<bool>) -> bool {
        loop {
            // Created before the limit is read, so a change stored after the read still wakes
            // this wait (`notify_waiters` reaches every `Notified` already created).
            let changed = settings.changed.notified();
            let Some(max) = settings.current.load().max_connections else {
                return true;
            };
            if self.open.get() < max {
                return true;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return false,
                _ = self.freed.notified() => {}
                _ = changed => {}
            }
        }
    }
}

/// hyper's connection settings for connections accepted under some [`ConnLimits`]: the auto
/// builder (h2c, TLS) and the HTTP/1 one (plain connections, which park while idle).
struct Builders {
    auto: Rc<auto::Builder<LocalExec>>,
    h1: Rc<http1::Builder>,
}

impl Builders {
    fn new(limits: &ConnLimits, max_streams: Option<u32>) -> Builders {
        let keep_alive = limits.keep_alive();
        // The keep-alive time is enforced by the connection's own timer (`conn::Conn`).
        let mut h1 = http1::Builder::new();
        h1.header_read_timeout(None)
            .max_buf_size(MAX_BUF)
            .writev(false)
            .keep_alive(true);
        let mut auto = auto::Builder::new(LocalExec);
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(keep_alive)
            .max_buf_size(MAX_BUF)
            .writev(false)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32);
        if let Some(n) = max_streams {
            auto.http2().max_concurrent_streams(n);
        }
        Builders {
            auto: Rc::new(auto),
            h1: Rc::new(h1),
        }
    }
}

/// Releases a connection's slot when its task ends.
struct Slot(Rc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        self.0.freed.notify_one();
    }
}

/// Accepts on `listener` until shutdown, serving each connection (HTTP/1.1 or HTTP/2, over TLS
/// when `opts.tls` is set) with the service `make(info)` returns; then stops accepting and
/// waits (up to `grace`) for open requests to finish.
pub async fn accept_loop<M, S, B>(
    listener: std::net::TcpListener,
    opts: ConnOptions,
    mut shutdown: watch::Receiver<bool>,
    make: M,
) where
    M: Fn(ConnInfo) -> S,
    S: ConnService<B>,
    B: ResponseBody,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            crate::term::error(&format!("listener: {e}"));
            return;
        }
    };
    let settings = &opts.limits;
    let mut limits = settings.get();
    let mut builders = Builders::new(&limits, opts.max_streams);
    let slots = Rc::new(Slots::default());
    loop {
        if !slots.room(settings, &mut shutdown).await {
            break;
        }
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        crate::term::warn(&format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        // A reload may have lowered the limit while this loop waited in accept: then the
        // connection waits here, unserved, as it would have in the accept queue.
        if !slots.room(settings, &mut shutdown).await {
            break;
        }
        // The limits in force now apply to this connection for its whole life.
        let now = settings.current.load();
        if !Arc::ptr_eq(&*now, &limits) {
            limits = arc_swap::Guard::into_inner(now);
            builders = Builders::new(&limits, opts.max_streams);
        }
        let _ = stream.set_nodelay(true);
        slots.open.set(slots.open.get() + 1);
        let slot = Slot(slots.clone());
        let info = ConnInfo {
            peer,
            tls: opts.tls.is_some(),
        };
        let service = Tracking::new(make(info));
        let conn = Conn {
            auto: builders.auto.clone(),
            h1: builders.h1.clone(),
            shutdown: shutdown.clone(),
            // Slowloris: the TLS handshake and the first request head must be complete in time
            // (hyper's header timer only starts once the auto builder has told HTTP/1 from
            // HTTP/2); later heads are bounded by hyper's timer.
            deadline: Instant::now() + limits.header_timeout,
            idle: limits.idle_timeout,
            keep_alive: limits.keep_alive(),
        };
        let tls = opts.tls.as_ref().map(|t| t.load_full());
        tokio::task::spawn_local(async move {
            let _slot = slot;
            match tls {
                None => conn.serve_plain(stream, service).await,
                // Boxed: the TLS state stays out of plain connections' tasks.
                Some(config) => Box::pin(conn.serve_tls(config, stream, service)).await,
            }
        });
    }
    drop(listener);
    // Every connection task has seen the shutdown and is closing gracefully (those still in
    // their TLS handshake are bounded by the header timeout): wait for them all to end.
    let deadline = Instant::now() + opts.grace;
    while slots.open.get() > 0 {
        tokio::select! {
            _ = slots.freed.notified() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
}

/// SIGINT and SIGTERM handlers, installed when made: a signal that arrives after this (say,
/// right after a "listening" line) is caught rather than fatal.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; needs a Tokio runtime context.
    pub fn install() -> io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Blocks until SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    match Signals::install() {
        Ok(mut s) => s.recv().await,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
