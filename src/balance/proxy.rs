//! Forwarding one request: apply the limits, rewrite headers (hop-by-hop out, X-Forwarded-* in),
//! pick candidates, fail over on connect errors, retry idempotent requests within the budget,
//! feed passive health, and stream the response back unchanged.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Body;

use super::access_log::ensure_request_id;
use super::h1::{self, AnswerBody, ExchangeError};
use super::limits::RateLimiter;
use super::metrics::{Arrival, Metered, Served};
use super::outcome::{
    body_too_large, content_length, failed, failure_response, over_limits, too_large, Failure,
};
use super::policy::{Policy, RetryBudget};
use super::tunnel::Decision;
use super::upstream::{ConnPool, InFlight, UpBody, UpstreamBody};
use super::Shared;
use crate::core::addr::Scheme;
use crate::core::backend::Backend;
use crate::core::client::{classify, refused_stream, to_h2, ConnectError, ErrorKind};
use crate::core::clock;
use crate::core::select::Algorithm;
use crate::core::server::{after_backend_writes, after_ready_tasks, Lines, RequestBody};

/// What the balancer answers with: the backend's body, or a short local one.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// One worker's view: the shared state plus this worker's own connection pool.
pub struct Worker {
    /// Pool, dialer and settings shared by all workers.
    pub shared: Arc<Shared>,
    /// This worker's idle backend connections.
    pub conns: Rc<ConnPool>,
    /// This worker's randomness for selection (seedable in tests).
    pub rng: RefCell<fastrand::Rng>,
    /// This worker's share of the retry budget.
    pub budget: RefCell<RetryBudget>,
    /// This worker's per-client token buckets, when `--rate-limit` is set. Rebuilt (empty) when
    /// a reload changes the rate, kept across reloads that do not.
    pub limiter: RefCell<Option<RateLimiter>>,
    /// This worker's copy of the policy and the generation it was taken at.
    pub policy: RefCell<(u64, Rc<super::policy::Policy>)>,
}

impl Worker {
    /// The policy in force: this worker's copy, refreshed after a reload swapped in a new one
    /// (one relaxed load of a rarely written counter per call; no shared reference count).
    /// The rate limiter follows a refreshed policy's `rate_limit`.
    pub fn policy(&self) -> Rc<super::policy::Policy> {
        let generation = self
            .shared
            .policy_generation
            .load(std::sync::atomic::Ordering::Acquire);
        let mut cached = self.policy.borrow_mut();
        if cached.0 != generation {
            let next = Rc::new(Policy::clone(&self.shared.policy.load()));
            if next.rate_limit != cached.1.rate_limit {
                *self.limiter.borrow_mut() = next.rate_limit.map(RateLimiter::new);
            }
            *cached = (generation, next);
        }
        cached.1.clone()
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers every proxy removes, besides those `Connection` names. `Trailer` is
/// end-to-end (RFC 9110 §6.6.2) and stays: hyper only sends the trailer fields it declares.
pub(super) fn is_fixed_hop(n: &HeaderName) -> bool {
    // Compared as standard names (a number each), not as text: this runs for every field of
    // every request.
    n == header::TE
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::PROXY_AUTHENTICATE
        || n == header::PROXY_AUTHORIZATION
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
}

/// [`is_fixed_hop`] for a name as a backend wrote it, in any case (a test in `balance::h1`
/// holds the two to the same names).
pub(super) fn is_fixed_hop_name(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"upgrade"),
        10 => is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every header it names, and
/// the fixed list. Used in both directions. One scan over the names finds what is there, so a
/// message without hop-by-hop headers costs no hashed lookups. Returns whether a `TE` header
/// (removed with the rest) listed `trailers`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) -> bool {
    let (mut conn, mut fixed, mut te) = (false, false, false);
    for k in h.keys() {
        if k == header::CONNECTION {
            conn = true;
        } else if is_fixed_hop(k) {
            fixed = true;
            te |= k == header::TE;
        }
    }
    let trailers = te && crate::core::server::takes_trailers(h);
    if conn {
        // Fast path: a lone `keep-alive` or `close` (what most peers send) names no header.
        let mut values = h.get_all(header::CONNECTION).iter();
        let lone_plain = match (values.next(), values.next()) {
            (Some(v), None) => {
                let v = v.as_bytes();
                v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
            }
            _ => false,
        };
        if lone_plain {
            h.remove(header::CONNECTION);
            conn = false;
        }
    }
    if conn {
        // Every Connection header counts, and each may name several options.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
        h.remove(header::CONNECTION);
    }
    if fixed {
        let hop: Vec<HeaderName> = h.keys().filter(|k| is_fixed_hop(k)).cloned().collect();
        for n in hop {
            h.remove(n);
        }
    }
    trailers
}

/// The client of one connection: its address, and its IP ready for X-Forwarded-For (formatted
/// once per connection, not per request).
pub struct Peer {
    /// Client socket address.
    pub addr: SocketAddr,
    /// The client IP as a header value.
    pub ip: HeaderValue,
    /// The connection came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

impl Peer {
    /// Describes a newly accepted client.
    pub fn new(addr: SocketAddr) -> Peer {
        let ip =
            HeaderValue::try_from(addr.ip().to_string()).expect("an IP is a valid header value");
        Peer {
            addr,
            ip,
            tls: false,
        }
    }

    /// The same client, marked as connected over TLS or not.
    pub fn with_tls(self, tls: bool) -> Peer {
        Peer { tls, ..self }
    }
}

/// Adds the balancer's X-Forwarded-* headers; a client's own X-Forwarded-For is appended to.
fn add_forwarded(parts: &mut Parts, peer: &Peer) {
    let h = &mut parts.headers;
    if h.contains_key(&X_FORWARDED_FOR) {
        let mut all = Vec::new();
        for v in h.get_all(&X_FORWARDED_FOR) {
            all.extend_from_slice(v.as_bytes());
            all.extend_from_slice(b", ");
        }
        all.extend_from_slice(peer.ip.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&all) {
            h.insert(&X_FORWARDED_FOR, v);
        }
    } else {
        h.insert(&X_FORWARDED_FOR, peer.ip.clone());
    }
    let proto = if peer.tls { "https" } else { "http" };
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match h.get(header::HOST).cloned() {
        Some(host) => h.insert(&X_FORWARDED_HOST, host),
        None => h.remove(&X_FORWARDED_HOST),
    };
}

/// Rewrites the client's request head for a backend: origin-form target, Host kept (or taken
/// from an absolute-form target), HTTP/1.1, hop-by-hop headers out, X-Forwarded-* in.
/// `TE: trailers` is passed on when the client's `TE` listed it: the client takes trailers, and
/// the balancer forwards them, so the backend may send them (RFC 9110 §10.1.4; hyper's servers
/// send none without it, and HTTP/2 ones such as gRPC's require it).
pub(super) fn prepare(parts: &mut Parts, peer: &Peer) {
    prepare_head(parts);
    add_forwarded(parts, peer);
}

/// [`prepare`] but for the X-Forwarded-* fields: those the lean HTTP/1.1 path writes as it
/// sends (see [`write_forwarded`]), without touching the map.
fn prepare_head(parts: &mut Parts) {
    if strip_hop_by_hop(&mut parts.headers) {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(authority) = parts.uri.authority() {
        // Absolute-form: the target's authority overrides Host (RFC 9112 §3.2.2).
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::from(pq);
    }
    parts.version = Version::HTTP_11;
}

/// True for the X-Forwarded-* fields the balancer sets.
pub(super) fn is_forwarded(n: &HeaderName) -> bool {
    n.as_str().starts_with("x-forwarded-")
        && (n == X_FORWARDED_FOR || n == X_FORWARDED_PROTO || n == X_FORWARDED_HOST)
}

/// Writes what [`add_forwarded`] would have added to `h`, as HTTP/1.1 field lines (the
/// client's own X-Forwarded-Proto and -Host are left out by the caller; its
/// X-Forwarded-For is appended to).
pub(super) fn write_forwarded(out: &mut Vec<u8>, h: &HeaderMap, peer: &Peer) {
    out.extend_from_slice(b"x-forwarded-for: ");
    for v in h.get_all(&X_FORWARDED_FOR) {
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer.ip.as_bytes());
    out.extend_from_slice(if peer.tls {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    if let Some(host) = h.get(header::HOST) {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A short plain-text answer from the balancer itself.
pub(super) fn local(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(msg.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Largest declared body of an idempotent request that is read in full before it is sent, so
/// the request can be retried on another backend.
const RETRY_BUFFER: u64 = 64 * 1024;

/// Takes a backend out after a failed connect; logs only the change, with the reason.
pub(super) fn mark_down(b: &Backend, why: &ConnectError) {
    b.errors.fetch_add(1, Relaxed);
    if b.set_healthy(false) {
        crate::term::warn(&format!(
            "backend {} {} ({why}, during a request)",
            b.target,
            crate::term::state_word(false)
        ));
    }
}

/// Fits a prepared request to the connection it goes out on: absolute-form and version 2 for
/// HTTP/2; back to origin-form HTTP/1.1 for an HTTP/1.1 connection when an earlier attempt had
/// made it an HTTP/2 one (a request an HTTP/2 connection handed back unsent).
fn fit(req: &mut Request<UpBody>, h2: bool, backend: &Backend) {
    if h2 {
        to_h2(req, &backend.target);
    } else if req.version() != Version::HTTP_11 {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        *req.version_mut() = Version::HTTP_11;
    }
}

/// Serves one client request: the request id and the exchange's accounting (metrics, access
/// log) wrap [`forward`].
pub async fn handle(
    w: Rc<Worker>,
    peer: Rc<Peer>,
    req: Request<RequestBody>,
) -> Result<Response<Metered<ProxyBody>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let id = ensure_request_id(&mut parts.headers);
    let arrival = Arrival::new(&w.shared.telemetry, peer.addr, &parts, id);
    let mut served = None;
    let mut lines = None;
    // Reads first, then requests out to backends, then answers out to clients (see
    // `after_ready_tasks` and `after_backend_writes`).
    after_ready_tasks().await;
    // Pinned in place and awaited through the pin: awaited by value, the future would take
    // two slots in this one's state (rustc keeps the value and the awaited copy apart), and
    // this future is moved whole into hyper's connection for every request.
    let Ok(resp) = {
        let fut = forward(
            w.clone(),
            peer,
            Request::from_parts(parts, body),
            &mut served,
            &mut lines,
        );
        std::pin::pin!(fut).await
    };
    after_backend_writes().await;
    Ok(arrival.finish(w.shared.telemetry.clone(), resp, served, lines))
}

/// Forwards one client request to a backend.
/// `served` receives the last backend the request reached and the attempts made, whether it
/// answered or failed (a plain out-parameter: response extensions would allocate a type map
/// per request). `lines` receives the response's fields when they are not in its map: only
/// for a request the lean path read, whose answer it writes (see [`Lines`]).
pub async fn forward(
    w: Rc<Worker>,
    peer: Rc<Peer>,
    req: Request<RequestBody>,
    served: &mut Option<Served>,
    lines: &mut Option<Lines>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let want_lines = body.lean();
    if let Err((status, why)) = super::validate::check(&parts) {
        // What follows a malformed request on the same connection cannot be trusted either.
        let mut r = local(status, why);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    let shared = &w.shared;
    let policy = w.policy();
    // The socket's peer, or the client a trusted proxy names in X-Forwarded-For.
    let client = SocketAddr::new(
        policy.trusted.client_ip(peer.addr.ip(), &parts.headers),
        peer.addr.port(),
    );
    if let Some(refused) = over_limits(&w, client, &parts) {
        return Ok(refused);
    }
    match super::tunnel::decide(&parts, &shared.upgrades) {
        Decision::Plain => {}
        // Boxed: the tunnel's state stays out of every plain request's future.
        Decision::Tunnel(up) => {
            return Ok(Box::pin(super::tunnel::open(w, peer, parts, body, up, served)).await)
        }
        Decision::Refuse(why) => return Ok(super::tunnel::refuse(why)),
    }
    let key = match policy.algorithm {
        Algorithm::Hash => policy.hash_key.of(&parts.headers, client),
        _ => None,
    };
    // HTTP/1.0 may omit Host; a backend spoken to in HTTP/1.1 needs one.
    let needs_host = !parts.headers.contains_key(header::HOST) && parts.uri.authority().is_none();
    prepare_head(&mut parts);
    let limit = policy
        .max_body
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let body = Limited::new(body, limit);
    // A request without a body, or an idempotent one with a small declared body (read first),
    // can be re-sent elsewhere if a backend fails before answering.
    let buffered: Result<Bytes, _> = if body.is_end_stream() {
        Ok(Bytes::new())
    } else if idempotent(&parts.method)
        && content_length(&parts.headers).is_some_and(|n| n <= RETRY_BUFFER)
    {
        // Boxed, as are the other awaits off the lean path below: an awaited future is held in
        // this one's state (twice, as rustc lays it out), and this one is moved whole into
        // hyper's connection for every request.
        match Box::pin(body.collect()).await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => return Ok(too_large()),
            Err(_) => {
                return Ok(local(
                    StatusCode::BAD_REQUEST,
                    "400 bad request: the request body ended early\n",
                ))
            }
        }
    } else {
        Err(body) // streamed as it arrives
    };
    // An idempotent request with its body in hand is kept, to be sent (again) from here: one
    // without a body goes to `http://` backends over the lean HTTP/1.1 path, anything else
    // through hyper as a copy. Other requests go once.
    // X-Forwarded-* go into the map only for hyper.
    let (kept, mut pending): (Option<(Parts, Bytes)>, Option<Request<UpBody>>) = match buffered {
        Ok(b) if idempotent(&parts.method) => (Some((parts, b)), None),
        once => {
            add_forwarded(&mut parts, &peer);
            let body = match once {
                Ok(b) => Either::Right(Full::new(b)),
                Err(streaming) => Either::Left(streaming),
            };
            (None, Some(Request::from_parts(parts, body)))
        }
    };
    let lean = kept.as_ref().filter(|(_, b)| b.is_empty()).map(|(p, _)| p);
    w.budget.borrow_mut().deposit();
    let track_latency = policy.algorithm.needs_latency();
    let candidates = shared.pool.pick(key, &mut w.rng.borrow_mut());
    // Attempts that reached a backend and failed there.
    let mut tries = 0u32;
    let mut paid = 0u32; // failures a retry has been granted for
    let mut last_failure: Option<Failure> = None;
    // Attempts that reached a backend (each after the first is a retry, counted with the
    // exchange when its response ends).
    let mut attempts = 0u32;
    for backend in candidates {
        if let Some(f) = last_failure.filter(|_| paid < tries) {
            // The request was sent and failed: only an idempotent, buffered one goes again,
            // and only within --retries and the budget. Candidates never repeat a backend.
            let allowed = kept.is_some()
                && tries <= policy.retries
                && w.budget
                    .borrow_mut()
                    .withdraw(tokio::time::Instant::now().into_std());
            if !allowed {
                return Ok(failure_response(f, tries));
            }
            paid = tries;
        }
        if let Some(head) = lean.filter(|_| backend.target.scheme == Scheme::Http) {
            let host = needs_host.then_some(backend.target.authority.as_str());
            let in_flight = InFlight::new(backend.clone());
            let ask = h1::Ask {
                head,
                host,
                peer: &peer,
                timeout: policy.response_timeout,
                lines: want_lines,
            };
            let exchange = h1::exchange(&w.conns, &shared.dialer, &backend, &ask);
            let failure = match exchange.await {
                Err(ExchangeError::Timeout) => Failure::Timeout,
                Err(ExchangeError::Connect(e)) => {
                    mark_down(&backend, &e);
                    continue; // next backend: nothing was sent
                }
                Err(ExchangeError::Failed(why)) => {
                    tracing::debug!(backend = %backend.target, %why, "request failed");
                    Failure::Reset
                }
                Ok(mut answer) => {
                    reached(&backend, &mut attempts, served, true);
                    let sent_at = track_latency.then_some(answer.sent_at);
                    *lines = answer.lines.take();
                    return Ok(answered(
                        shared, &backend, sent_at, answer, in_flight, &policy,
                    ));
                }
            };
            reached(&backend, &mut attempts, served, false);
            backend.errors.fetch_add(1, Relaxed);
            failed(shared, &backend);
            tries += 1;
            last_failure = Some(failure);
            continue; // never the same backend twice in a row
        }
        // Two tries per backend: a pooled connection the backend had already closed (the
        // request unsent) is replaced by a fresh one.
        for fresh in [false, true] {
            let req = match pending.take() {
                Some(r) => r,
                None => match &kept {
                    Some((p, b)) => {
                        let mut p = clone_parts(p);
                        add_forwarded(&mut p, &peer);
                        Request::from_parts(p, Either::Right(Full::new(b.clone())))
                    }
                    None => break,
                },
            };
            let checkout = Box::pin(w.conns.checkout(&shared.dialer, &backend, !fresh)).await;
            let (mut conn, reused, stream) = match checkout {
                Ok(c) => (c.conn, c.reused && !fresh, c.stream),
                Err(e) => {
                    mark_down(&backend, &e);
                    pending = Some(req);
                    break; // next backend: nothing was sent
                }
            };
            let mut req = req;
            if needs_host {
                if let Ok(v) = HeaderValue::from_str(&backend.target.authority) {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
            let h2 = conn.is_h2();
            fit(&mut req, h2, &backend);
            let in_flight = InFlight::new(backend.clone());
            let sent_at = track_latency.then(tokio::time::Instant::now);
            let send = tokio::time::timeout(policy.response_timeout, conn.try_send_request(req));
            let sent = Box::pin(send).await;
            // A stream an HTTP/2 backend refused was never processed (RFC 9113 §8.7), as when
            // it sent SETTINGS allowing fewer streams than were already under way.
            let refused = matches!(&sent, Ok(Err(e)) if refused_stream(e.error()));
            // Unless the connection handed it back unsent (or refused it), the request reached
            // this backend: an attempt (and one of its requests), whatever comes of it.
            if !matches!(&sent, Ok(Err(e)) if e.message().is_some()) && !refused {
                reached(&backend, &mut attempts, served, false);
            }
            match sent {
                Ok(Ok(resp)) => {
                    judge(shared, &backend, resp.status(), sent_at);
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    if h2 {
                        // An HTTP/1.1 client gets an HTTP/1.1 status line.
                        rparts.version = Version::HTTP_11;
                    }
                    if let Some(s) = served {
                        s.answered = true;
                    }
                    let body = UpstreamBody::new(
                        rbody,
                        w.conns.clone(),
                        backend.id,
                        (conn, stream),
                        in_flight,
                        policy.response_timeout,
                    );
                    return Ok(Response::from_parts(rparts, Either::Left(body)));
                }
                Ok(Err(mut e)) => {
                    if let Some(unsent) = e.take_message() {
                        pending = Some(unsent);
                        if reused {
                            continue; // stale pooled connection: same backend, fresh one
                        }
                        backend.errors.fetch_add(1, Relaxed);
                        break;
                    }
                    if refused && !fresh && kept.is_some() {
                        continue; // again (once), on the backend's connections as they are now
                    }
                    let e = e.into_error();
                    if body_too_large(&e) {
                        return Ok(too_large());
                    }
                    if e.is_user() {
                        // The client's own body broke (bad chunk, early close): not the backend's fault.
                        return Ok(local(
                            StatusCode::BAD_REQUEST,
                            "400 bad request: the request body could not be read\n",
                        ));
                    }
                    backend.errors.fetch_add(1, Relaxed);
                    failed(shared, &backend);
                    tries += 1;
                    last_failure = Some(Failure::Reset);
                    if classify(&e) == ErrorKind::RequestTimeout {
                        last_failure = Some(Failure::Timeout);
                    }
                    break; // never the same backend twice in a row
                }
                Err(_elapsed) => {
                    backend.errors.fetch_add(1, Relaxed);
                    failed(shared, &backend);
                    tries += 1;
                    last_failure = Some(Failure::Timeout);
                    break;
                }
            }
        }
    }
    if let Some(f) = last_failure {
        return Ok(failure_response(f, tries));
    }
    Ok(local(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 service unavailable: no healthy backend\n",
    ))
}

/// Counts a request that reached `backend` (whatever comes of it): one of the backend's
/// requests, and one more attempt of this request, the latest served by `backend`.
fn reached(
    backend: &Arc<Backend>,
    attempts: &mut u32,
    served: &mut Option<Served>,
    answered: bool,
) {
    backend.requests.fetch_add(1, Relaxed);
    *attempts += 1;
    *served = Some(Served {
        backend: backend.clone(),
        attempts: *attempts,
        answered,
    });
}

/// Feeds a backend's answer to passive health (a 5xx counts against it) and, when the
/// algorithm tracks latency, the time since the request was sent.
pub(super) fn judge(
    shared: &Shared,
    backend: &Backend,
    status: StatusCode,
    sent_at: Option<tokio::time::Instant>,
) {
    if status.is_server_error() {
        failed(shared, backend);
    } else {
        backend.record_success();
    }
    if let Some(t0) = sent_at {
        backend.observe_rtt(t0.elapsed().as_micros() as f64, clock::now_us());
    }
}

/// The response from the lean HTTP/1.1 path, fed to passive health and latency tracking.
fn answered(
    shared: &Shared,
    backend: &Arc<Backend>,
    sent_at: Option<tokio::time::Instant>,
    answer: h1::Answer,
    in_flight: InFlight,
    policy: &Policy,
) -> Response<ProxyBody> {
    judge(shared, backend, answer.status, sent_at);
    let body = match answer.body {
        AnswerBody::Complete(b) => Either::Right(Full::new(b)),
        AnswerBody::Streaming(r) => {
            Either::Left(UpstreamBody::plain(r, in_flight, policy.response_timeout))
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = answer.status;
    *r.headers_mut() = answer.headers;
    r
}

fn clone_parts(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_including_named_ones() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-a, X-B"));
        for n in [
            "x-a",
            "x-b",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-connection",
            "x-keep",
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
    }

    #[test]
    fn lone_keep_alive_takes_the_fast_path() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert(
            HeaderName::from_static("keep-alive"),
            HeaderValue::from_static("timeout=5"),
        );
        h.insert(
            HeaderName::from_static("close"),
            HeaderValue::from_static("kept"),
        );
        h.insert(
            HeaderName::from_static("x-keep"),
            HeaderValue::from_static("1"),
        );
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["close", "x-keep"]);
    }

    #[test]
    fn http2_over_tls_goes_out_as_http11_with_host_from_the_authority() {
        let (mut parts, _) = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://example.com/p")
            .body(())
            .unwrap()
            .into_parts();
        let peer = Peer::new("192.0.2.7:5555".parse().unwrap()).with_tls(true);
        prepare(&mut parts, &peer);
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.uri, "/p");
        assert_eq!(parts.headers["host"], "example.com");
        assert_eq!(parts.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn te_goes_but_its_trailers_is_passed_on() {
        for (te, connection, kept) in [
            ("gzip, Trailers", Some("TE"), Some("trailers")),
            ("trailers", None, Some("trailers")),
            ("gzip", Some("te"), None),
            ("trailersx", None, None),
        ] {
            let mut req = Request::builder().uri("/").header("te", te);
            if let Some(c) = connection {
                req = req.header("connection", c);
            }
            let (mut parts, _) = req.body(()).unwrap().into_parts();
            prepare(&mut parts, &Peer::new("192.0.2.7:5555".parse().unwrap()));
            let got = parts.headers.get_all("te").iter().collect::<Vec<_>>();
            assert_eq!(got, kept.into_iter().collect::<Vec<_>>(), "{te}");
            assert!(!parts.headers.contains_key("connection"));
        }
    }

    #[test]
    fn forwarded_headers_append() {
        let (mut parts, _) = Request::builder()
            .uri("http://example.com:81/p?q=1")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap()
            .into_parts();
        prepare(&mut parts, &Peer::new("192.0.2.7:5555".parse().unwrap()));
        assert_eq!(parts.uri, "/p?q=1");
        assert_eq!(parts.headers["host"], "example.com:81");
        assert_eq!(parts.headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(parts.headers["x-forwarded-proto"], "http");
        assert_eq!(parts.headers["x-forwarded-host"], "example.com:81");
    }
}
