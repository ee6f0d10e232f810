//! The one HTTP client setup: dialing (TCP or TLS through rustls) with per-phase timings, and the
//! HTTP/1.1 and HTTP/2 handshakes. `balance`, `bench`, `check` and the prober all connect through
//! [`Dialer`]; [`handshake_any`] speaks whichever version the target and ALPN call for.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::addr::Target;

/// The `User-Agent` lbx sends on requests it makes itself.
pub const USER_AGENT: &str = concat!("lbx/", env!("CARGO_PKG_VERSION"));

/// Why a request or connection failed, as reported to users (bench errors, check output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Nothing listens on the port.
    ConnectionRefused,
    /// The TCP (or TLS) connection did not complete in time.
    ConnectTimeout,
    /// The host name did not resolve.
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// Another failure while connecting (unreachable, too many open files, ...).
    Connect,
    /// No complete response in time.
    RequestTimeout,
    /// The peer closed or reset the connection mid-exchange.
    Reset,
    /// The peer broke HTTP (malformed response, bad framing).
    Protocol,
}

impl ErrorKind {
    /// A short, stable name used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::ConnectTimeout => "connect timeout",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::Connect => "connect error",
            ErrorKind::RequestTimeout => "request timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol error",
        }
    }

    /// True for failures before anything was sent: safe to retry elsewhere for any method.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::Dns
                | ErrorKind::Tls
                | ErrorKind::Connect
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed dial: what kind, and the underlying message.
#[derive(Debug)]
pub struct ConnectError {
    /// The category.
    pub kind: ErrorKind,
    /// Human detail.
    pub detail: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() || self.detail == self.kind.as_str() {
            f.write_str(self.kind.as_str())
        } else {
            write!(f, "{}: {}", self.kind, self.detail)
        }
    }
}

impl std::error::Error for ConnectError {}

/// True when an HTTP/2 peer refused the request's stream (`REFUSED_STREAM`): it did no work on
/// it (RFC 9113 §8.7), so the request may be sent again.
pub fn refused_stream(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = e.source();
    }
    false
}

/// Maps a request error from hyper (or an I/O error beneath it) to a kind.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
                io::ErrorKind::TimedOut => ErrorKind::RequestTimeout,
                io::ErrorKind::InvalidData => ErrorKind::Protocol,
                _ => ErrorKind::Reset,
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_user() {
                return ErrorKind::Protocol;
            }
            if h.is_timeout() {
                return ErrorKind::RequestTimeout;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                // Keep looking for an io::Error cause; otherwise it is a reset.
                if e.source().is_none() {
                    return ErrorKind::Reset;
                }
            }
        }
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return c.kind;
        }
        cur = e.source();
    }
    ErrorKind::Reset
}

/// How long each phase of a dial took.
#[derive(Clone, Copy, Debug, Default)]
pub struct DialTimings {
    /// Name resolution (zero for IP literals).
    pub dns: Duration,
    /// TCP connect.
    pub connect: Duration,
    /// TLS handshake (zero for plain HTTP).
    pub tls: Duration,
}

/// TLS settings for `https://` targets.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Skip certificate verification.
    pub insecure: bool,
    /// Extra CA certificates (PEM) trusted besides the webpki and native roots.
    pub cacert: Option<PathBuf>,
}

/// Dials targets. Cheap to clone (clones share their settings); the TLS configuration is built
/// once, on first https use.
#[derive(Clone)]
pub struct Dialer {
    inner: Arc<DialerInner>,
}

struct DialerInner {
    /// In nanoseconds: a reload may change it (see [`Dialer::set_connect_timeout`]). Shared
    /// with [`Dialer::sibling`]s.
    connect_timeout: Arc<AtomicU64>,
    /// What TLS offers in ALPN.
    alpn: Alpn,
    tls_opts: TlsOptions,
    tls: OnceLock<Result<TlsConnector, String>>,
}

/// The HTTP versions a dialer offers in TLS ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1` only: pair with [`handshake`].
    Http1,
    /// `h2` only: pair with [`handshake_h2`].
    H2,
    /// `h2` first, then `http/1.1`: the server picks; pair with [`handshake_any`].
    Any,
}

impl Dialer {
    /// A dialer with this connect timeout (covering DNS, TCP and TLS) whose TLS offers `alpn`.
    pub fn with_alpn(connect_timeout: Duration, tls_opts: TlsOptions, alpn: Alpn) -> Dialer {
        Dialer::build(
            Arc::new(AtomicU64::new(nanos(connect_timeout))),
            tls_opts,
            alpn,
        )
    }

    /// A dialer whose TLS offers HTTP/1.1 only; pair it with [`handshake`].
    pub fn new(connect_timeout: Duration, tls_opts: TlsOptions) -> Dialer {
        Dialer::with_alpn(connect_timeout, tls_opts, Alpn::Http1)
    }

    /// Like [`Dialer::new`], but TLS offers HTTP/2 (`h2`) in ALPN instead of HTTP/1.1; pair it
    /// with [`handshake_h2`].
    pub fn new_h2(connect_timeout: Duration, tls_opts: TlsOptions) -> Dialer {
        Dialer::with_alpn(connect_timeout, tls_opts, Alpn::H2)
    }

    /// The same TLS options and connect timeout (a change to either's reaches both), offering
    /// `alpn` instead (its TLS setup is its own).
    pub fn sibling(&self, alpn: Alpn) -> Dialer {
        let i = &self.inner;
        Dialer::build(i.connect_timeout.clone(), i.tls_opts.clone(), alpn)
    }

    fn build(connect_timeout: Arc<AtomicU64>, tls_opts: TlsOptions, alpn: Alpn) -> Dialer {
        Dialer {
            inner: Arc::new(DialerInner {
                connect_timeout,
                alpn,
                tls_opts,
                tls: OnceLock::new(),
            }),
        }
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_nanos(self.inner.connect_timeout.load(Relaxed))
    }

    /// Changes the connect timeout of this dialer and its clones: dials that start afterwards
    /// use it, those under way keep theirs (a config reload of `lbx balance`).
    pub fn set_connect_timeout(&self, timeout: Duration) {
        self.inner.connect_timeout.store(nanos(timeout), Relaxed);
    }

    /// Fails early (at start-up) when the TLS options cannot be loaded, e.g. a bad `--cacert`.
    pub fn check_tls(&self) -> Result<(), String> {
        self.tls().map(|_| ())
    }

    fn tls(&self) -> Result<&TlsConnector, String> {
        self.inner
            .tls
            .get_or_init(|| {
                build_tls(&self.inner.tls_opts, self.inner.alpn)
                    .map(|c| TlsConnector::from(Arc::new(c)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Opens a connection to `target` within the connect timeout.
    pub async fn dial(&self, target: &Target) -> Result<(Stream, DialTimings), ConnectError> {
        let mut t = DialTimings::default();
        let stream = self.dial_recording(target, &mut t).await?;
        Ok((stream, t))
    }

    /// Like [`Dialer::dial`], but writes each phase into `timings` as soon as it completes, so
    /// the phases that finished survive a failed dial or an outer timeout (`lbx check` shows
    /// the DNS time of a refused target).
    pub async fn dial_recording(
        &self,
        target: &Target,
        timings: &mut DialTimings,
    ) -> Result<Stream, ConnectError> {
        let limit = self.connect_timeout();
        match tokio::time::timeout(limit, self.dial_inner(target, timings)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError {
                kind: ErrorKind::ConnectTimeout,
                detail: format!("no connection within {limit:?}"),
            }),
        }
    }

    async fn dial_inner(
        &self,
        target: &Target,
        t: &mut DialTimings,
    ) -> Result<Stream, ConnectError> {
        let start = Instant::now();
        let tcp = match target.socket_addr() {
            Some(addr) => TcpStream::connect(addr).await.map_err(connect_err)?,
            None => {
                let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
                    .await
                    .map_err(|e| ConnectError {
                        kind: ErrorKind::Dns,
                        detail: format!("{}: {e}", target.host),
                    })?
                    .collect();
                t.dns = start.elapsed();
                let mut last = None;
                let mut found = None;
                for a in addrs {
                    match TcpStream::connect(a).await {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (found, last) {
                    (Some(s), _) => s,
                    (None, Some(e)) => return Err(connect_err(e)),
                    (None, None) => {
                        return Err(ConnectError {
                            kind: ErrorKind::Dns,
                            detail: format!("{} has no addresses", target.host),
                        })
                    }
                }
            }
        };
        t.connect = start.elapsed() - t.dns;
        let _ = tcp.set_nodelay(true);
        if !target.is_tls() {
            return Ok(Stream::Plain(tcp));
        }
        let tls_start = Instant::now();
        let connector = self.tls().map_err(|e| ConnectError {
            kind: ErrorKind::Tls,
            detail: e,
        })?;
        let name = ServerName::try_from(target.host.clone()).map_err(|e| ConnectError {
            kind: ErrorKind::Tls,
            detail: e.to_string(),
        })?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectError {
                kind: ErrorKind::Tls,
                detail: e.to_string(),
            })?;
        t.tls = tls_start.elapsed();
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A duration in whole nanoseconds, saturating (at over 500 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn connect_err(e: io::Error) -> ConnectError {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
        _ => ErrorKind::Connect,
    };
    ConnectError {
        kind,
        detail: e.to_string(),
    }
}

/// A request body hyper's clients can send: data that crosses threads, errors it can box.
pub trait RequestBody:
    Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + 'static
{
}

impl<B> RequestBody for B where
    B: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + 'static
{
}

/// Starts HTTP/1.1 on a dialed stream; the connection is driven by a spawned task on the current
/// runtime and ends when the returned sender (and any response in flight) is dropped.
pub async fn handshake<B>(stream: Stream) -> Result<http1::SendRequest<B>, hyper::Error>
where
    B: RequestBody + Send,
{
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// An HTTP/1.1 connection for the caller to poll itself (see [`handshake_unspawned`]).
pub type H1Connection<B> = http1::Connection<TokioIo<Stream>, B>;

/// Like [`handshake`], but returns the connection future instead of spawning it, so a caller on
/// a hot path (the load generator) can poll it in the same task as its requests and save a task
/// switch per request. Requests only progress while the connection is polled.
pub async fn handshake_unspawned<B>(
    stream: Stream,
) -> Result<(http1::SendRequest<B>, H1Connection<B>), hyper::Error>
where
    B: RequestBody,
{
    http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
}

/// Starts HTTP/2 on a dialed stream (h2 by ALPN over TLS, prior knowledge over plain TCP); the
/// connection is driven by a spawned task and carries concurrent requests from clones of the
/// returned sender.
pub async fn handshake_h2<B>(stream: Stream) -> Result<http2::SendRequest<B>, hyper::Error>
where
    B: RequestBody + Unpin + Send,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// hyper's handle on an HTTP/2 connection (the task that dispatches its requests).
type H2Task<B> = http2::Connection<TokioIo<Stream>, B, TokioExecutor>;

/// What a client knows of its HTTP/2 peer, through the connection's dispatch task (which
/// [`handshake_h2_local`] drives).
pub struct H2Peer<B>(Rc<RefCell<Pin<Box<H2Task<B>>>>>)
where
    B: RequestBody + Unpin + Send;

impl<B> H2Peer<B>
where
    B: RequestBody + Unpin + Send,
{
    /// How many concurrent streams the peer allows (`SETTINGS_MAX_CONCURRENT_STREAMS`) as the
    /// connection knows it now: the handshake's assumption until the peer's SETTINGS arrive.
    pub fn max_streams(&self) -> usize {
        self.0.borrow().current_max_send_streams()
    }
}

/// Like [`handshake_h2`], and also returns the [`H2Peer`] that tells how many concurrent
/// streams the peer allows: `assumed` (hyper's 100 when `None`) until its SETTINGS arrive,
/// streams beyond it waiting in hyper meanwhile. hyper's sender does not tell that; the
/// connection's dispatch task does, so it is driven by a local task (call this inside a
/// `LocalSet`) that shares it.
pub async fn handshake_h2_local<B>(
    stream: Stream,
    assumed: Option<usize>,
) -> Result<(http2::SendRequest<B>, H2Peer<B>), hyper::Error>
where
    B: RequestBody + Unpin + Send,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_max_send_streams(assumed)
        .handshake(TokioIo::new(stream))
        .await?;
    let task = Rc::new(RefCell::new(Box::pin(conn)));
    let driven = task.clone();
    tokio::task::spawn_local(async move {
        let _ = std::future::poll_fn(|cx| driven.borrow_mut().as_mut().poll(cx)).await;
    });
    Ok((tx, H2Peer(task)))
}

/// An HTTP connection of either version: what [`handshake_any`] made of a dialed stream.
pub enum Sender<B> {
    /// HTTP/1.1: one request at a time.
    H1(http1::SendRequest<B>),
    /// HTTP/2: clones carry concurrent requests over the one connection.
    H2(http2::SendRequest<B>),
}

impl<B: Body + 'static> Sender<B> {
    /// True for HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Waits until the connection can take a request (HTTP/2: at once while it is open).
    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    /// Sends a request: for HTTP/2 its URI must be absolute (see [`to_h2`]). A request that
    /// never left is handed back in the error.
    pub fn try_send_request(
        &mut self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>> {
        match self {
            Sender::H1(s) => Either::Left(s.try_send_request(req)),
            Sender::H2(s) => Either::Right(s.try_send_request(req)),
        }
    }
}

/// Turns a request made for HTTP/1.1 (origin-form target, `Host` header) into one for HTTP/2
/// to `target`: an absolute URI, whose scheme and authority become `:scheme` and `:authority`
/// (the `Host` value when it is a valid authority, else the target's; `Host` itself stays, equal
/// to it), and version 2. The caller has removed connection-specific headers.
pub fn to_h2<T>(req: &mut Request<T>, target: &Target) {
    let authority = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| Authority::try_from(target.authority.as_str()).ok());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(target.scheme.uri_scheme());
    parts.authority = authority;
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
}

/// Starts the HTTP version `target` and the dialed stream call for (see [`speaks_h2`]). Either
/// connection is driven by a spawned task.
pub async fn handshake_any<B>(stream: Stream, target: &Target) -> Result<Sender<B>, hyper::Error>
where
    B: RequestBody + Unpin + Send,
{
    if speaks_h2(&stream, target) {
        handshake_h2(stream).await.map(Sender::H2)
    } else {
        handshake(stream).await.map(Sender::H1)
    }
}

/// True when a dialed stream is to speak HTTP/2: to an `h2c://` target, or when TLS ALPN chose
/// `h2`; HTTP/1.1 otherwise.
pub fn speaks_h2(stream: &Stream, target: &Target) -> bool {
    target.is_h2c() || stream.alpn_h2()
}

fn build_tls(opts: &TlsOptions, alpn: Alpn) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Native roots are best effort: a machine without a CA bundle still has webpki's.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = &opts.cacert {
            for cert in load_pem_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
        Alpn::Any => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(config)
}

/// Reads every certificate in a PEM file; an error names the file.
pub fn load_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificates found", path.display()));
    }
    Ok(certs)
}

/// `--insecure`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A dialed connection: plain TCP or TLS over TCP.
pub enum Stream {
    /// `http://`
    Plain(TcpStream),
    /// `https://`
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// True when TLS ALPN chose HTTP/2.
    pub fn alpn_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// The peer's certificate chain, leaf first (TLS only).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.get_ref().1.peer_certificates(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_connect_timeout_reaches_every_clone_and_no_other_dialer() {
        let d = Dialer::new(Duration::from_secs(3), TlsOptions::default());
        let (clone, sibling, other) = (
            d.clone(),
            d.sibling(Alpn::Any),
            Dialer::new(Duration::from_secs(3), TlsOptions::default()),
        );
        d.set_connect_timeout(Duration::from_millis(250));
        assert_eq!(clone.connect_timeout(), Duration::from_millis(250));
        assert_eq!(sibling.connect_timeout(), Duration::from_millis(250));
        assert_eq!(other.connect_timeout(), Duration::from_secs(3));
        clone.set_connect_timeout(Duration::MAX);
        assert_eq!(d.connect_timeout(), Duration::from_nanos(u64::MAX));
    }
}
