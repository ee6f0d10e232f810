//! The run plan: everything the workers share, built once from the flags. The request is
//! prebuilt here (method, URI, headers, body as `Bytes`) and cloned cheaply per request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use crate::cli::BenchArgs;
use crate::core::addr::Target;
use crate::core::client::{self, Dialer, TlsOptions};

/// Header slots reserved per request beyond our own, for the answer hyper parses into the same
/// map.
const ANSWER_HEADERS: usize = 12;

/// Requests made when neither `-n` nor `-z` is given.
pub const DEFAULT_REQUESTS: u64 = 200;

/// What every worker needs, shared read-only (plus the request budget) across threads.
pub struct Plan {
    /// Where to connect.
    pub target: Target,
    /// The URL as shown in reports.
    pub url: String,
    /// Dials TCP or TLS with the connect timeout.
    pub dialer: Dialer,
    /// Request method.
    pub method: Method,
    /// Request URI: origin-form for HTTP/1.1, absolute for HTTP/2.
    pub uri: Uri,
    /// Request headers (Host, User-Agent, then `-H`).
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// The whole HTTP/1.1 request as written by the fast path (plain `http://` without
    /// `--http2`): request line, headers, Content-Length and body, serialized once.
    pub wire: &'static [u8],
    /// Send with the lean HTTP/1.1 client ([`super::fast`]) instead of hyper.
    pub fast: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Response header the spread is counted over.
    pub group_by: HeaderName,
    /// Reuse connections between requests.
    pub keepalive: bool,
    /// Speak HTTP/2.
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection (1 for HTTP/1.1).
    pub streams: usize,
    /// Open model: total requests per second.
    pub rate: Option<f64>,
    /// Connections in the whole run.
    pub connections: usize,
    /// Request budget (`u64::MAX` without `-n`).
    pub limit: u64,
    issued: AtomicU64,
    /// When load begins (warm-up included); the `--rate` schedule starts here.
    pub start: Instant,
    /// When measuring begins (after warm-up).
    pub measure_from: Instant,
    /// When a `-z` run ends.
    pub deadline: Option<Instant>,
}

impl Plan {
    /// Builds the plan from the flags; a bad flag combination or body file is a usage error.
    pub fn new(args: &BenchArgs, start: Instant) -> anyhow::Result<Plan> {
        if args.requests == Some(0) {
            return Err(crate::usage(
                "invalid value '0' for '--requests <N>': must be above 0",
            ));
        }
        let (target, path) = (args.url.target.clone(), args.url.path.clone());
        // An h2c:// URL is HTTP/2 with prior knowledge, as --http2 with http:// is.
        let http2 = args.http2 || target.is_h2c();
        if args.streams > 1 && !http2 {
            return Err(crate::usage(
                "--streams needs HTTP/2: add --http2, or give an h2c:// URL",
            ));
        }
        let body = match (&args.body, &args.body_file) {
            (Some(text), _) => leak(text.clone().into_bytes()).0,
            (None, Some(file)) => std::fs::read(file)
                .map(|b| leak(b).0)
                .map_err(|e| crate::usage(format!("--body-file {}: {e}", file.display())))?,
            (None, None) => Bytes::new(),
        };
        let uri_text = if http2 {
            format!(
                "{}://{}{path}",
                target.scheme.uri_scheme(),
                target.authority
            )
        } else {
            path.clone()
        };
        uri_text
            .parse::<Uri>()
            .map_err(|e| crate::usage(format!("bad URL path '{path}': {e}")))?;
        // Validated above, so from_static cannot panic; static bytes clone without atomics.
        let uri = Uri::from_static(leak(uri_text.into_bytes()).1);
        let mut headers = HeaderMap::new();
        if !http2 {
            let host = HeaderValue::from_str(&target.authority)
                .map_err(|e| crate::usage(format!("bad host '{}': {e}", target.authority)))?;
            headers.insert(HOST, host);
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(client::USER_AGENT));
        if args.disable_keepalive && !http2 {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let mut replaced = Vec::new();
        for (name, value) in &args.headers {
            // A repeated -H name adds a value; the first -H of a default header replaces it.
            if headers.contains_key(name) && !replaced.contains(name) {
                headers.remove(name);
            }
            replaced.push(name.clone());
            headers.append(name.clone(), value.clone());
        }
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let v = HeaderValue::from_maybe_shared(leak(value.as_bytes().to_vec()).0);
                v.map(|v| (name.clone(), v))
            })
            .collect::<Result<HeaderMap, _>>()
            .map_err(|e| crate::usage(format!("bad header value: {e}")))?;
        let wire = Box::leak(serialize(&args.method, &path, &headers, &body).into_boxed_slice());
        let tls = TlsOptions {
            insecure: args.insecure,
            cacert: args.cacert.clone(),
        };
        let dialer = if http2 {
            Dialer::new_h2(args.connect_timeout, tls)
        } else {
            Dialer::new(args.connect_timeout, tls)
        };
        if target.is_tls() {
            dialer.check_tls().map_err(crate::usage)?;
        }
        let fast = !http2 && !target.is_tls();
        let limit = match (args.requests, args.duration) {
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => DEFAULT_REQUESTS,
        };
        let measure_from = start + args.warmup.unwrap_or_default();
        Ok(Plan {
            url: format!("{}://{}{path}", target.scheme.as_str(), target.authority),
            target,
            dialer,
            method: args.method.clone(),
            uri,
            headers,
            body,
            wire,
            fast,
            timeout: args.timeout,
            group_by: args.group_by.clone(),
            keepalive: !args.disable_keepalive,
            http2,
            streams: args.streams,
            rate: args.rate,
            connections: args.connections,
            limit,
            issued: AtomicU64::new(0),
            start,
            measure_from,
            deadline: args.duration.map(|d| measure_from + d),
        })
    }

    /// Takes one request from the budget; false once `-n` requests have been started.
    pub fn take(&self) -> bool {
        self.limit == u64::MAX || self.issued.fetch_add(1, Relaxed) < self.limit
    }

    /// A fresh copy of the prebuilt request, its headers written into `spare` (the last
    /// answer's header map, emptied) when given: no header map is allocated per request.
    pub fn request(&self, spare: Option<HeaderMap>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        if let Some(mut spare) = spare {
            spare.clear();
            *headers = spare;
        }
        // hyper reuses the request's header map for parsing the answer: room for a typical
        // answer's headers saves the regrowth (a clone would have capacity for ours only).
        headers.reserve(self.headers.len() + ANSWER_HEADERS);
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        req
    }

    /// Request loops in the run: one per connection, or per stream with HTTP/2.
    pub fn loops(&self) -> usize {
        self.connections * self.streams
    }

    /// The `--rate` send time of loop `index`'s `k`-th request: loops are staggered evenly and
    /// each keeps its own fixed interval, so together they send `rate` requests per second.
    pub fn scheduled(&self, index: usize, k: u64) -> Option<Instant> {
        let rate = self.rate?;
        let slot = index as f64 + k as f64 * self.loops() as f64;
        Some(self.start + Duration::from_secs_f64((slot / rate).min(1e9)))
    }
}

/// The HTTP/1.1 request as bytes on the wire. Our own headers are spelled as wrk and curl do
/// (`Host`, `User-Agent`, `Connection`); `-H` names as parsed (lower case). Content-Length is
/// added, as hyper does, when there is a body or the method expects one, unless `-H` set it.
fn serialize(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    for part in [method.as_str(), " ", path, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        let name = match *name {
            HOST => "Host",
            USER_AGENT => "User-Agent",
            CONNECTION => "Connection",
            _ => name.as_str(),
        };
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let wants_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if (!body.is_empty() || wants_body)
        && !headers.contains_key(CONTENT_LENGTH)
        && !headers.contains_key(TRANSFER_ENCODING)
    {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Keeps bytes for the rest of the process, so per-request clones of the prebuilt request are
/// plain copies instead of atomic reference counts. The plan lives until exit anyway.
fn leak(bytes: Vec<u8>) -> (Bytes, &'static str) {
    let b: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    (
        Bytes::from_static(b),
        std::str::from_utf8(b).unwrap_or_default(),
    )
}

/// A plan from `lbx bench ARGS` (tests only).
#[cfg(test)]
pub(crate) fn test_plan(args: &[&str]) -> Plan {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    let cli = Cli::try_parse_from([&["lbx", "bench"], args].concat()).expect("parses");
    let Command::Bench(b) = cli.command else {
        panic!("not bench")
    };
    Plan::new(&b, Instant::now()).expect("plan")
}

#[cfg(test)]
mod tests {
    use super::test_plan as plan;
    use super::*;

    #[test]
    fn prebuilt_request() {
        let p = plan(&[
            "-m",
            "post",
            "-d",
            "hello",
            "-H",
            "User-Agent: mine",
            "-H",
            "X-A: 1",
            "-H",
            "X-A: 2",
            ":8080/api?q=1",
        ]);
        let r = p.request(None);
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri(), "/api?q=1");
        assert_eq!(r.headers()[HOST], "127.0.0.1:8080");
        assert_eq!(r.headers()[USER_AGENT], "mine");
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert!(r.headers().get(CONNECTION).is_none());
        assert_eq!(p.body, "hello");
        assert_eq!((p.limit, p.keepalive), (DEFAULT_REQUESTS, true));
        assert!(p.fast);
        assert_eq!(
            std::str::from_utf8(p.wire).unwrap(),
            "POST /api?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: mine\r\n\
             x-a: 1\r\nx-a: 2\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn keepalive_http2_and_schedule() {
        let p = plan(&["--disable-keepalive", "-z", "1s", ":8080"]);
        assert_eq!(p.request(None).headers()[CONNECTION], "close");
        let wire = std::str::from_utf8(p.wire).unwrap();
        assert!(
            wire.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{wire}"
        );
        assert!(wire.ends_with("\r\nConnection: close\r\n\r\n"), "{wire}");
        assert!(!wire.contains("Content-Length"), "{wire}");
        assert_eq!(p.limit, u64::MAX);
        assert_eq!(p.deadline, Some(p.measure_from + Duration::from_secs(1)));
        let p = plan(&["--http2", "-p", "3", "-c", "2", "--rate", "100", ":8080/x"]);
        assert_eq!(p.request(None).uri(), "http://127.0.0.1:8080/x");
        assert!(!p.fast);
        assert!(p.request(None).headers().get(HOST).is_none());
        assert_eq!(p.loops(), 6);
        let at = p.scheduled(1, 2).unwrap();
        assert_eq!(at - p.start, Duration::from_millis(130));
        let p = plan(&["-p", "2", "h2c://:8080/y"]);
        assert!(p.http2 && !p.fast);
        assert_eq!(p.request(None).uri(), "http://127.0.0.1:8080/y");
        assert_eq!(p.url, "h2c://127.0.0.1:8080/y");
    }
}
