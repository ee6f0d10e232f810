//! Forwarding one request: rewrite headers (hop-by-hop out, X-Forwarded-* in), pick a backend,
//! fail over on connect errors, and stream the response back unchanged.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Incoming};

use super::access_log::ensure_request_id;
use super::metrics::{Arrival, Metered, Served};
use super::upstream::{ConnPool, InFlight, UpBody, UpstreamBody};
use super::Shared;
use crate::core::backend::Backend;
use crate::core::client::{classify, ErrorKind};

/// What the balancer answers with: the backend's body, or a short local one.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// One worker's view: the shared state plus this worker's own connection pool.
pub struct Worker {
    /// Pool, dialer and settings shared by all workers.
    pub shared: Arc<Shared>,
    /// This worker's idle backend connections.
    pub conns: Rc<ConnPool>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers every proxy removes, besides those `Connection` names.
fn is_fixed_hop(n: &HeaderName) -> bool {
    n == header::TE
        || n == header::TRAILER
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::PROXY_AUTHENTICATE
        || n == header::PROXY_AUTHORIZATION
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every header it names, and
/// the fixed list. Used in both directions. One scan over the names finds what is there, so a
/// message without hop-by-hop headers costs no hashed lookups.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let (mut conn, mut fixed) = (false, false);
    for k in h.keys() {
        if k == header::CONNECTION {
            conn = true;
        } else if is_fixed_hop(k) {
            fixed = true;
        }
    }
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
}

/// The client of one connection: its address, and its IP ready for X-Forwarded-For (formatted
/// once per connection, not per request).
pub struct Peer {
    /// Client socket address.
    pub addr: SocketAddr,
    /// The client IP as a header value.
    pub ip: HeaderValue,
}

impl Peer {
    /// Describes a newly accepted client.
    pub fn new(addr: SocketAddr) -> Peer {
        let ip =
            HeaderValue::try_from(addr.ip().to_string()).expect("an IP is a valid header value");
        Peer { addr, ip }
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
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(&X_FORWARDED_HOST, host);
    }
}

/// Rewrites the client's request head for a backend: origin-form target, Host kept (or taken
/// from an absolute-form target), HTTP/1.1, hop-by-hop headers out, X-Forwarded-* in.
fn prepare(parts: &mut Parts, peer: &Peer) {
    strip_hop_by_hop(&mut parts.headers);
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
    add_forwarded(parts, peer);
    parts.version = Version::HTTP_11;
}

fn local(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
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

/// Takes a backend out after a failed connect; logs only the change.
fn mark_down(b: &Backend, why: &str) {
    b.errors.fetch_add(1, Relaxed);
    if b.set_healthy(false) {
        crate::term::warn(&format!(
            "backend {} {} ({why} during a request)",
            b.target,
            crate::term::state_word(false)
        ));
    }
}

/// Serves one client request: the request id and the exchange's accounting (metrics, access
/// log) wrap [`forward`].
pub async fn handle(
    w: Rc<Worker>,
    peer: Rc<Peer>,
    req: Request<Incoming>,
) -> Result<Response<Metered<ProxyBody>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let id = ensure_request_id(&mut parts.headers);
    let arrival = Arrival::new(&w.shared.telemetry, peer.addr, &parts, id);
    let Ok(resp) = forward(w.clone(), peer, Request::from_parts(parts, body)).await;
    Ok(arrival.finish(w.shared.telemetry.clone(), resp))
}

/// Forwards one client request to a backend.
pub async fn forward(
    w: Rc<Worker>,
    peer: Rc<Peer>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    prepare(&mut parts, &peer);
    // A request without a body can be re-sent elsewhere if a backend fails before answering.
    let bodiless = body.is_end_stream();
    let retry_parts = (bodiless && idempotent(&parts.method)).then(|| clone_parts(&parts));
    let mut pending: Option<Request<UpBody>> = Some(Request::from_parts(
        parts,
        if bodiless {
            Either::Right(Empty::new())
        } else {
            Either::Left(body)
        },
    ));
    let shared = &w.shared;
    let mut failed_after_send = false;
    let mut attempts = 0;
    for backend in shared.pool.candidates() {
        // Two tries per backend: a pooled connection the backend had already closed is
        // replaced by a fresh one.
        for fresh in [false, true] {
            let req = match pending.take() {
                Some(r) => r,
                None => match &retry_parts {
                    Some(p) => Request::from_parts(clone_parts(p), Either::Right(Empty::new())),
                    None => break,
                },
            };
            let checkout = if fresh {
                w.conns
                    .connect(&shared.dialer, &backend)
                    .await
                    .map(|conn| (conn, false))
            } else {
                w.conns
                    .checkout(&shared.dialer, &backend)
                    .await
                    .map(|c| (c.conn, c.reused))
            };
            let (mut conn, reused) = match checkout {
                Ok(c) => c,
                Err(e) => {
                    mark_down(&backend, e.kind.as_str());
                    pending = Some(req);
                    break; // next backend
                }
            };
            backend.requests.fetch_add(1, Relaxed);
            attempts += 1;
            let in_flight = InFlight::new(backend.clone());
            match conn.try_send_request(req).await {
                Ok(resp) => {
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    rparts.extensions.insert(Served {
                        backend: backend.clone(),
                        attempts,
                    });
                    let body =
                        UpstreamBody::new(rbody, w.conns.clone(), backend.id, conn, in_flight);
                    return Ok(Response::from_parts(rparts, Either::Left(body)));
                }
                Err(mut e) => {
                    backend.errors.fetch_add(1, Relaxed);
                    if let Some(unsent) = e.take_message() {
                        pending = Some(unsent);
                        if reused {
                            continue; // stale pooled connection: same backend, fresh one
                        }
                        break;
                    }
                    failed_after_send = true;
                    let kind = classify(&e.into_error());
                    if retry_parts.is_none() {
                        return Ok(local(
                            StatusCode::BAD_GATEWAY,
                            if kind == ErrorKind::RequestTimeout {
                                "502 bad gateway: the backend timed out\n"
                            } else {
                                "502 bad gateway: the backend failed before answering\n"
                            },
                        ));
                    }
                    if !reused {
                        break; // a fresh connection failed too: try the next backend
                    }
                }
            }
        }
    }
    if failed_after_send {
        return Ok(local(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: every backend failed before answering\n",
        ));
    }
    Ok(local(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 service unavailable: no healthy backend\n",
    ))
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
