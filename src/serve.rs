//! `lbx serve`: demo backends. `GET /` names the server, `/healthcheck` can be toggled to fail,
//! `/echo` reflects the request, `/trailers` ends its body with a trailer, and
//! `--delay`/`--fail-rate` inject faults. Every port speaks
//! HTTP/1.1 and h2c, or HTTPS (h2 and http/1.1 by ALPN) with `--tls-cert`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, TRAILER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;

use crate::cli::ServeArgs;
use crate::core::server::{self, accept_loop, ConnOptions, RequestBody, WithLines, Workers};

/// One demo server's identity and switches, shared by every worker.
struct ServerState {
    id: u32,
    id_header: HeaderValue,
    hello: Bytes,
    failing: AtomicBool,
    delay: Option<Duration>,
    fail_rate: f64,
    /// Connections accepted so far; `/echo` names the one a request came on.
    connections: AtomicU64,
}

/// Running demo servers.
pub struct ServeHandle {
    /// Each listener's address and server id.
    pub servers: Vec<(SocketAddr, u32)>,
    /// The listeners serve HTTPS.
    pub tls: bool,
    workers: Workers,
}

impl ServeHandle {
    /// Stops accepting, lets open requests finish, and waits for the workers.
    pub fn stop(self) {
        self.workers.shutdown();
        self.workers.join();
    }
}

/// Binds every port of the range and starts the workers; does not print.
pub fn start(args: &ServeArgs) -> anyhow::Result<ServeHandle> {
    let workers = args.workers.unwrap_or_else(server::default_workers);
    let opts = ConnOptions {
        tls: tls_config(args)?,
        max_streams: Some(args.max_streams),
        ..ConnOptions::default()
    };
    let (lo, hi) = args.port;
    let mut per_worker: Vec<Vec<(std::net::TcpListener, Arc<ServerState>)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut servers = Vec::new();
    for (i, port) in (lo..=hi).enumerate() {
        let id = args.id.saturating_add(i as u32);
        let listeners = server::bind(SocketAddr::new(args.host, port), workers)?;
        servers.push((listeners[0].local_addr()?, id));
        let state = Arc::new(ServerState {
            id,
            id_header: HeaderValue::from(id),
            hello: Bytes::from(format!("Hello from server {id}")),
            failing: AtomicBool::new(false),
            delay: args.delay.filter(|d| !d.is_zero()),
            fail_rate: args.fail_rate,
            connections: AtomicU64::new(0),
        });
        for (w, l) in listeners.into_iter().enumerate() {
            per_worker[w].push((l, state.clone()));
        }
    }
    let workers = Workers::spawn("serve", per_worker, move |_, listeners, shutdown| {
        let opts = opts.clone();
        async move {
            let mut tasks = Vec::new();
            for (listener, state) in listeners {
                let shutdown = shutdown.clone();
                tasks.push(tokio::task::spawn_local(accept_loop(
                    listener,
                    opts.clone(),
                    shutdown,
                    move |_peer| {
                        let state = state.clone();
                        let conn = state.connections.fetch_add(1, Relaxed) + 1;
                        service_fn(move |req| handle(state.clone(), conn, req))
                    },
                )));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    })?;
    Ok(ServeHandle {
        servers,
        tls: args.tls_cert.is_some(),
        workers,
    })
}

/// The TLS setup of `--tls-cert`/`--tls-key`; an unreadable or mismatched file is a usage error
/// naming it.
fn tls_config(args: &ServeArgs) -> anyhow::Result<Option<server::TlsConfig>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let config = crate::core::tls::server_config(&[(cert.clone(), key.clone())])
        .map_err(|e| crate::usage(format!("--tls-cert/--tls-key: {e}")))?;
    Ok(Some(Arc::new(arc_swap::ArcSwap::new(config))))
}

/// Runs `lbx serve` until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let handle = start(&args)?;
    let registration = match &args.register {
        Some(url) => {
            let addrs: Vec<SocketAddr> = handle.servers.iter().map(|(a, _)| *a).collect();
            let r = crate::register::Registration::new(url, &addrs, args.register_ttl);
            Some(r.map_err(crate::usage)?)
        }
        None => None,
    };
    let over = if handle.tls { ", https" } else { "" };
    for (addr, id) in &handle.servers {
        crate::term::out(&format!("listening on {addr} (server {id}{over})"));
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let Some(r) = &registration else {
                return server::wait_for_signal().await;
            };
            tokio::select! {
                _ = server::wait_for_signal() => {}
                _ = r.keep() => {}
            }
            r.deregister().await;
        });
    handle.stop();
    Ok(ExitCode::SUCCESS)
}

/// A body of frames known in advance: `/trailers`' data and trailer. Its length is not
/// declared, so HTTP/1.1 sends it chunked (trailers need that).
type Frames =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// What `lbx serve` answers with: a whole body, or `/trailers`' frames.
type ServeBody = Either<Full<Bytes>, Frames>;

impl WithLines for ServeBody {}

/// Answers one request that came on the `conn`th connection of this server.
async fn handle(
    state: Arc<ServerState>,
    conn: u64,
    req: Request<RequestBody>,
) -> Result<Response<ServeBody>, Infallible> {
    if let Some(d) = state.delay {
        tokio::time::sleep(d).await;
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/trailers") => return Ok(with_trailer(&req, &state)),
        (_, "/echo") => echo(req, conn).await,
        (&Method::GET, "/ws") => websocket_echo(req),
        (&Method::GET | &Method::HEAD, "/") => {
            if state.fail_rate > 0.0 && fastrand::f64() < state.fail_rate {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("server {} failed (injected)", state.id),
                )
            } else {
                text(StatusCode::OK, state.hello.clone())
            }
        }
        (&Method::GET | &Method::HEAD, "/healthcheck") => {
            if state.failing.load(Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "failing")
            } else {
                text(StatusCode::OK, "ok")
            }
        }
        (&Method::POST, "/healthcheck/fail") => {
            state.failing.store(true, Relaxed);
            text(StatusCode::OK, "health check now failing")
        }
        (&Method::POST, "/healthcheck/pass") => {
            state.failing.store(false, Relaxed);
            text(StatusCode::OK, "health check now passing")
        }
        (_, "/" | "/healthcheck" | "/healthcheck/fail" | "/healthcheck/pass" | "/trailers") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    let mut resp = resp;
    resp.headers_mut()
        .insert("x-server-id", state.id_header.clone());
    Ok(resp.map(Either::Left))
}

/// `GET /trailers`: `Hello from server N` sent chunked, declaring `Trailer: x-server-id`, then
/// that trailer, but only when the request's `TE` lists `trailers` (hyper's HTTP/1.1 servers
/// send none otherwise; this does the same over HTTP/2).
fn with_trailer(req: &Request<RequestBody>, state: &ServerState) -> Response<ServeBody> {
    let mut frames = vec![Ok(Frame::data(state.hello.clone()))];
    if server::takes_trailers(req.headers()) {
        let mut t = HeaderMap::new();
        t.insert("x-server-id", state.id_header.clone());
        frames.push(Ok(Frame::trailers(t)));
    }
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let mut r = Response::new(Either::Right(body));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(TRAILER, HeaderValue::from_static("x-server-id"));
    h.insert("x-server-id", state.id_header.clone());
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Reflects what arrived: method, path with query, HTTP version, headers, the body's length
/// (streamed, not buffered) and its trailers; the `x-connection` header numbers this server's
/// connection that carried it (a header, so the body's length does not change with it).
async fn echo(req: Request<RequestBody>, conn: u64) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let mut body_len: u64 = 0;
    let mut trailers = BTreeMap::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_len += d.len() as u64;
                }
                if let Some(t) = f.trailers_ref() {
                    trailers = fields(t);
                }
            }
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading body: {e}")),
        }
    }
    let headers = fields(&parts.headers);
    let path = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
        "trailers": trailers,
    });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("x-connection", HeaderValue::from(conn));
    r
}

/// Header fields by name, the values of a repeated one joined with `, `.
fn fields(h: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        out.entry(k.as_str().to_string())
            .and_modify(|cur| {
                cur.push_str(", ");
                cur.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

/// `GET /ws`: a WebSocket echo. Answers the handshake with 101, then echoes every text and
/// binary message back until the client closes.
fn websocket_echo(mut req: Request<RequestBody>) -> Response<Full<Bytes>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let h = req.headers();
    let upgrade = h
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = h
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let (true, Some(accept)) = (upgrade, key) else {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake is expected on /ws",
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::task::spawn_local(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}
