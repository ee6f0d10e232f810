//! Upgraded connections through the balancer: a WebSocket (or another allowed protocol)
//! handshake is forwarded with its upgrade headers over a dedicated, never pooled, HTTP/1.1
//! backend connection; after the backend's 101 the client and backend connections are spliced
//! both ways until either side closes or no byte passes for `--tunnel-timeout`. `https://`
//! backends are offered only http/1.1 by ALPN for this; `h2c://` backends are passed over (an
//! upgrade has no HTTP/2 form here), and a 502 says so when no other backend was left.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::metrics::Served;
use super::outcome::{failed, failure_response, Failure};
use super::proxy::{judge, local, mark_down, prepare, strip_hop_by_hop, Peer, ProxyBody, Worker};
use super::upstream::InFlight;
use crate::core::idle::{Activity, Tracked};
use crate::core::select::Algorithm;
use crate::core::server::RequestBody;

/// Which upgrades are tunnelled, and how long an idle tunnel lives.
#[derive(Clone, Debug)]
pub struct Upgrades {
    /// A tunnel passing no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Protocols tunnelled besides `websocket` (lower-case names, without versions).
    pub allow: Vec<String>,
}

impl Default for Upgrades {
    fn default() -> Self {
        Upgrades {
            idle_timeout: Duration::from_secs(3600),
            allow: Vec::new(),
        }
    }
}

/// What to do with a request that may ask for an upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// An ordinary request: forwarded without its hop-by-hop upgrade headers.
    Plain,
    /// Tunnel it, offering the backend this `Upgrade` value.
    Tunnel(HeaderValue),
    /// Refuse it with this 400 message.
    Refuse(String),
}

/// Reads a request head's upgrade ask (RFC 9110 §7.8). Only an HTTP/1.1 request whose
/// `Connection` names `upgrade` asks. `h2c` is never tunnelled nor passed on (request smuggling
/// through a backend that would switch): a request asking only for it is served as a plain one.
pub fn decide(parts: &Parts, cfg: &Upgrades) -> Decision {
    let h = &parts.headers;
    if !h.contains_key(header::UPGRADE)
        || parts.version != Version::HTTP_11
        || !has_token(h, header::CONNECTION, "upgrade")
    {
        return Decision::Plain;
    }
    let mut wanted = Vec::new();
    for v in h.get_all(header::UPGRADE) {
        let Ok(v) = v.to_str() else {
            return Decision::Refuse("400 bad request: unreadable Upgrade header\n".into());
        };
        wanted.extend(v.split(',').map(str::trim).filter(|p| !p.is_empty()));
    }
    wanted.retain(|p| !name(p).eq_ignore_ascii_case("h2c"));
    if wanted.is_empty() {
        return Decision::Plain;
    }
    let allowed = |p: &str| {
        let n = name(p);
        n.eq_ignore_ascii_case("websocket") || cfg.allow.iter().any(|a| n.eq_ignore_ascii_case(a))
    };
    if let Some(p) = wanted.iter().find(|p| !allowed(p)) {
        return Decision::Refuse(format!(
            "400 bad request: upgrade to '{p}' is not supported (only websocket; others with \
             --allow-upgrade NAME)\n"
        ));
    }
    match HeaderValue::from_str(&wanted.join(", ")) {
        Ok(v) => Decision::Tunnel(v),
        Err(_) => Decision::Refuse("400 bad request: unreadable Upgrade header\n".into()),
    }
}

/// A protocol's name without its version (`websocket/13` is `websocket`).
fn name(protocol: &str) -> &str {
    protocol.split('/').next().unwrap_or(protocol).trim()
}

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A 400 with a message built at run time.
pub fn refuse(msg: String) -> Response<ProxyBody> {
    let mut r = local(StatusCode::BAD_REQUEST, "");
    *r.body_mut() = Either::Right(Full::new(Bytes::from(msg)));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Largest body of a backend's refusal of an upgrade that is passed on (it is read in full:
/// the dedicated connection is not pooled).
const MAX_REFUSAL_BODY: usize = 1024 * 1024;

/// Forwards an upgrade request to a backend on a connection of its own and, after a 101,
/// splices the two connections. A backend that cannot be reached is skipped for the next
/// candidate; once the request is sent there is no retry (the body is streamed).
pub async fn open(
    w: Rc<Worker>,
    peer: Rc<Peer>,
    mut parts: Parts,
    body: RequestBody,
    upgrade: HeaderValue,
    served: &mut Option<Served>,
) -> Response<ProxyBody> {
    let shared = &w.shared;
    let policy = w.policy();
    let Some(client_side) = parts.extensions.remove::<OnUpgrade>() else {
        return refuse("400 bad request: this connection cannot be upgraded\n".into());
    };
    let key = match policy.algorithm {
        Algorithm::Hash => {
            let ip = policy.trusted.client_ip(peer.addr.ip(), &parts.headers);
            policy.hash_key.of(
                &parts.headers,
                std::net::SocketAddr::new(ip, peer.addr.port()),
            )
        }
        _ => None,
    };
    let needs_host = !parts.headers.contains_key(header::HOST) && parts.uri.authority().is_none();
    prepare(&mut parts, &peer);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, upgrade);
    let limit = policy
        .max_body
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let mut pending = Some(Request::from_parts(parts, Limited::new(body, limit)));
    let candidates = shared.pool.pick(key, &mut w.rng.borrow_mut());
    let mut passed_h2c = false;
    for backend in candidates {
        if backend.target.is_h2c() {
            // An upgrade needs HTTP/1.1; an h2c:// backend is spoken to in HTTP/2 only.
            passed_h2c = true;
            continue;
        }
        // TLS offers only http/1.1 here, so an https backend that can speak either takes the
        // upgrade in HTTP/1.1.
        let stream = match shared.upgrade_dialer.dial(&backend.target).await {
            Ok((s, _)) => s,
            Err(e) => {
                mark_down(&backend, &e);
                continue; // nothing was sent
            }
        };
        let handshake = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake::<_, Limited<RequestBody>>(TokioIo::new(stream))
            .await;
        let Ok((mut tx, conn)) = handshake else {
            backend.errors.fetch_add(1, Relaxed);
            continue;
        };
        tokio::task::spawn_local(async move {
            let _ = conn.with_upgrades().await;
        });
        let Some(mut req) = pending.take() else { break };
        if needs_host {
            if let Ok(v) = HeaderValue::from_str(&backend.target.authority) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        backend.requests.fetch_add(1, Relaxed);
        let in_flight = InFlight::new(backend.clone());
        *served = Some(Served {
            backend: backend.clone(),
            attempts: 1,
            answered: false,
        });
        let mut resp =
            match tokio::time::timeout(policy.response_timeout, tx.send_request(req)).await {
                Ok(Ok(r)) => r,
                failure => {
                    backend.errors.fetch_add(1, Relaxed);
                    failed(shared, &backend);
                    let f = match failure {
                        Err(_elapsed) => Failure::Timeout,
                        _ => Failure::Reset,
                    };
                    return failure_response(f, 1);
                }
            };
        judge(shared, &backend, resp.status(), None);
        if let Some(s) = served {
            s.answered = true;
        }
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The backend declined: pass its answer on.
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            return match Limited::new(rbody, MAX_REFUSAL_BODY).collect().await {
                Ok(b) => Response::from_parts(rparts, Either::Right(Full::new(b.to_bytes()))),
                Err(_) => local(
                    StatusCode::BAD_GATEWAY,
                    "502 bad gateway: the backend's answer to an upgrade broke off\n",
                ),
            };
        }
        let backend_side = hyper::upgrade::on(&mut resp);
        let (mut rparts, _) = resp.into_parts();
        let protocol = rparts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut rparts.headers);
        rparts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(p) = protocol {
            rparts.headers.insert(header::UPGRADE, p);
        }
        let idle = shared.upgrades.idle_timeout;
        tokio::task::spawn_local(async move {
            let _in_flight = in_flight; // least-conn counts open tunnels
            if let (Ok(c), Ok(b)) = tokio::join!(client_side, backend_side) {
                splice(TokioIo::new(c), TokioIo::new(b), idle).await;
            }
        });
        return Response::from_parts(rparts, Either::Right(Full::new(Bytes::new())));
    }
    if passed_h2c {
        return local(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: upgrades (WebSocket) are not forwarded to h2c:// backends, which \
             are spoken to in HTTP/2; give the backend as http:// or https://\n",
        );
    }
    local(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 service unavailable: no healthy backend\n",
    )
}

/// Copies both ways until both directions end, or nothing moves for `idle`.
pub async fn splice<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Tracked::new(a, activity.clone());
    let mut b = Tracked::new(b, activity.clone());
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
        _ = activity.idle_for(Some(idle)) => {} // dropping both sides closes them
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::get("/ws").header("host", "x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn websocket_tunnels_h2c_goes_plain_others_are_refused() {
        let cfg = Upgrades::default();
        let ws = req(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(
            decide(&ws, &cfg),
            Decision::Tunnel(HeaderValue::from_static("WebSocket"))
        );
        let h2c = req(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(decide(&h2c, &cfg), Decision::Plain);
        let no_conn = req(&[("upgrade", "websocket")]);
        assert_eq!(decide(&no_conn, &cfg), Decision::Plain);
        let other = req(&[("connection", "upgrade"), ("upgrade", "foo/2")]);
        assert!(matches!(decide(&other, &cfg), Decision::Refuse(m) if m.contains("'foo/2'")));
        let allowed = Upgrades {
            allow: vec!["foo".into()],
            ..Upgrades::default()
        };
        assert!(matches!(decide(&other, &allowed), Decision::Tunnel(_)));
        let mixed = req(&[("connection", "upgrade"), ("upgrade", "h2c, websocket")]);
        assert_eq!(
            decide(&mixed, &cfg),
            Decision::Tunnel(HeaderValue::from_static("websocket"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_closes_a_busy_one_stays() {
        let (a, mut a_peer) = tokio::io::duplex(64);
        let (b, mut b_peer) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let t = tokio::task::spawn_local(splice(a, b, idle));
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    a_peer.write_all(b"x").await.unwrap();
                    let mut got = [0u8; 1];
                    b_peer.read_exact(&mut got).await.unwrap();
                    assert!(!t.is_finished(), "busy tunnel kept open");
                }
                // Idleness is checked every quarter period: closed by 12.5 s after the last move.
                tokio::time::sleep(Duration::from_millis(12_600)).await;
                assert!(t.is_finished(), "idle tunnel closed");
            })
            .await;
    }
}
