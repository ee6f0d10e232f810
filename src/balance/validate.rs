//! Request checks that hyper's parser leaves to a proxy (RFC 9110, RFC 9112 §3.2 and §6): a
//! request that a backend could read differently from the balancer is refused, never forwarded.

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{StatusCode, Version};

use crate::core::server::MAX_HEAD;

/// Why a request is refused: the status and a short plain-text reason.
pub type Refusal = (StatusCode, &'static str);

/// Checks one request head before it is forwarded.
pub fn check(parts: &Parts) -> Result<(), Refusal> {
    if head_size(parts) > MAX_HEAD {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "431 request header fields too large: the request head is over 64 KiB\n",
        ));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err((
            StatusCode::BAD_REQUEST,
            "400 bad request: more than one Host header\n",
        ));
    }
    if host.is_none() && parts.version == Version::HTTP_11 && parts.uri.authority().is_none() {
        return Err((
            StatusCode::BAD_REQUEST,
            "400 bad request: HTTP/1.1 request without Host\n",
        ));
    }
    if let (Some(authority), Some(host)) = (parts.uri.authority(), host) {
        let default_port = if parts.uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let same = host.to_str().is_ok_and(|h| {
            same_authority(
                h,
                authority.host(),
                authority.port_u16().unwrap_or(default_port),
                default_port,
            )
        });
        if !same {
            return Err((
                StatusCode::BAD_REQUEST,
                "400 bad request: the request target's authority and Host disagree\n",
            ));
        }
    }
    if !chunked_only(&parts.headers) {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "501 not implemented: transfer codings other than chunked are not supported\n",
        ));
    }
    Ok(())
}

/// The request line's and the header fields' length (names and values), however the head
/// arrived: hyper's HTTP/1 buffer and HTTP/2 header list limits are only approximations of it.
fn head_size(parts: &Parts) -> usize {
    let target = parts.uri.scheme_str().map_or(0, str::len)
        + parts.uri.authority().map_or(0, |a| a.as_str().len())
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let fields: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    parts.method.as_str().len() + target + fields
}

/// True when `host` (a Host header value) names `auth_host:auth_port`.
fn same_authority(host: &str, auth_host: &str, auth_port: u16, default_port: u16) -> bool {
    let (h, p) = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, p.parse::<u16>().ok()),
        _ => (host, Some(default_port)),
    };
    h.eq_ignore_ascii_case(auth_host) && p == Some(auth_port)
}

/// Transfer-Encoding, when present, must be exactly `chunked`: the balancer re-frames bodies,
/// so any other coding would reach the backend without its label.
fn chunked_only(h: &HeaderMap) -> bool {
    h.get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .all(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(build: http::request::Builder) -> Parts {
        build.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_rules() {
        assert!(check(&parts(Request::get("/").header("host", "a"))).is_ok());
        let two = parts(Request::get("/").header("host", "a").header("host", "b"));
        assert_eq!(check(&two).unwrap_err().0, StatusCode::BAD_REQUEST);
        let none = parts(Request::get("/").version(Version::HTTP_11));
        assert_eq!(check(&none).unwrap_err().0, StatusCode::BAD_REQUEST);
        let old = parts(Request::get("/").version(Version::HTTP_10));
        assert!(check(&old).is_ok(), "HTTP/1.0 may omit Host");
    }

    #[test]
    fn absolute_form_must_match_host() {
        let ok = parts(Request::get("http://Example.com/x").header("host", "example.com:80"));
        assert!(check(&ok).is_ok());
        let ok =
            parts(Request::get("http://example.com:8080/x").header("host", "example.com:8080"));
        assert!(check(&ok).is_ok());
        let bad = parts(Request::get("http://other.example/").header("host", "x"));
        assert_eq!(check(&bad).unwrap_err().0, StatusCode::BAD_REQUEST);
        let bad = parts(Request::get("http://example.com:81/").header("host", "example.com"));
        assert!(check(&bad).is_err());
        let v6 = parts(Request::get("http://[::1]:8080/").header("host", "[::1]:8080"));
        assert!(check(&v6).is_ok());
    }

    #[test]
    fn heads_over_64_kib_are_refused() {
        let ok = parts(
            Request::get("/")
                .header("host", "a")
                .header("x", "b".repeat(60_000)),
        );
        assert!(check(&ok).is_ok());
        let big = parts(
            Request::get("/")
                .header("host", "a")
                .header("x", "b".repeat(70_000)),
        );
        assert_eq!(
            check(&big).unwrap_err().0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many = (0..40).fold(Request::get("/").header("host", "a"), |b, i| {
            b.header(format!("x-{i}"), "c".repeat(2_000))
        });
        assert!(check(&parts(many)).is_err(), "the fields add up");
    }

    #[test]
    fn http2_carries_the_authority_in_the_target() {
        let h2 = parts(Request::get("http://example.com:8080/x").version(Version::HTTP_2));
        assert!(check(&h2).is_ok());
        let both = parts(
            Request::get("https://example.com/x")
                .version(Version::HTTP_2)
                .header("host", "example.com:443"),
        );
        assert!(check(&both).is_ok());
    }

    #[test]
    fn only_chunked_transfer_coding() {
        let ok = parts(
            Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "chunked"),
        );
        assert!(check(&ok).is_ok());
        let gz = parts(
            Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "gzip, chunked"),
        );
        assert_eq!(check(&gz).unwrap_err().0, StatusCode::NOT_IMPLEMENTED);
    }
}
