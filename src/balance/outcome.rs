//! How a request's outcome is judged outside the happy path: the limits checked before a
//! backend is picked, failures fed to passive health (ejections logged once and counted), and
//! the status a client gets when every attempt failed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::LengthLimitError;

use super::limits::retry_after_secs;
use super::proxy::{local, ProxyBody, Worker};
use super::Shared;
use crate::core::backend::Backend;
use crate::core::clock;

/// Feeds a failed request (timeout, reset, 5xx) to passive health; logs and counts an ejection
/// once, from the request that caused it.
pub(super) fn failed(shared: &Shared, b: &Backend) {
    let policy = shared.policy.load();
    let outlier = &policy.outlier;
    if outlier.eject_after == 0 {
        return;
    }
    let set = shared.pool.snapshot();
    if let Some(time) = outlier.on_failure(b, &set, clock::now_ms()) {
        shared.stats.ejections.fetch_add(1, Relaxed);
        crate::term::warn(&format!(
            "backend {} ejected for {}s ({} failed requests in a row; health checks may still pass)",
            b.target,
            time.as_secs(),
            outlier.eject_after
        ));
    }
}

/// How the last attempt at a backend failed after the request was sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The backend reset or closed before a response head.
    Reset,
    /// No response head within `--response-timeout`.
    Timeout,
}

/// The answer when the last attempt failed after sending, after `tries` attempts.
pub(super) fn failure_response(f: Failure, tries: u32) -> Response<ProxyBody> {
    match (f, tries) {
        (Failure::Timeout, _) => local(
            StatusCode::GATEWAY_TIMEOUT,
            "504 gateway timeout: the backend did not answer in time\n",
        ),
        (Failure::Reset, 1) => local(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: the backend failed before answering\n",
        ),
        (Failure::Reset, _) => local(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: every backend tried failed before answering\n",
        ),
    }
}

/// A limit the request is over, answered before any backend is picked.
pub(super) fn over_limits(
    w: &Worker,
    peer: SocketAddr,
    parts: &Parts,
) -> Option<Response<ProxyBody>> {
    if let Some(limiter) = w.limiter.borrow_mut().as_mut() {
        let now = tokio::time::Instant::now().into_std();
        if let Err(wait) = limiter.check(peer.ip(), now) {
            w.shared.stats.rate_limited.fetch_add(1, Relaxed);
            let mut r = local(
                StatusCode::TOO_MANY_REQUESTS,
                "429 too many requests: slow down\n",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
            return Some(r);
        }
    }
    let max = w.policy().max_body?;
    (content_length(&parts.headers)? > max).then(too_large)
}

/// The declared body length, when there is a valid one.
pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// 413 for a body over `--max-body`.
pub(super) fn too_large() -> Response<ProxyBody> {
    local(
        StatusCode::PAYLOAD_TOO_LARGE,
        "413 content too large: the request body is over the limit\n",
    )
}

/// Whether a failed send was the request body going over `--max-body` mid-stream.
pub(super) fn body_too_large(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}
