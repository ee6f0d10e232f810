//! The lean HTTP/1.1 server path: plain requests (HTTP/1.1, GET or HEAD, no body, no upgrade)
//! are read, handed to the service and answered here, without hyper's connection machinery.
//! The first request that is anything else goes to hyper with its connection, which comes
//! back here once hyper has let it park.

use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::pin;
use std::task::Poll;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::h1;

/// Most fields a request on this path may have (more go to hyper).
const MAX_FIELDS: usize = 32;

/// Most bytes of an answer gathered before they are written.
const OUT_MAX: usize = 64 * 1024;

/// A request head this path serves, parsed.
pub(super) struct Plain {
    pub(super) req: Request<()>,
    /// The client asked to close after the answer.
    pub(super) close: bool,
}

/// A response's fields as HTTP/1.1 field lines, each ending in CRLF, as a backend wrote them
/// (its hop-by-hop fields left out): the balancer passes a plain backend's answer on without
/// taking its fields apart into a map and putting them together again.
#[derive(Debug)]
pub struct Lines {
    /// The field lines.
    pub bytes: Bytes,
    /// The value of their Content-Length, if they have one.
    pub length: Option<u64>,
    /// They have a Date.
    pub date: bool,
}

/// A response body that may come with its response's fields as [`Lines`]: [`answer`] writes
/// them after the fields of the response's map.
pub trait WithLines {
    /// The fields that come with the body, if any.
    fn lines(&self) -> Option<&Lines> {
        None
    }
}

/// A whole body (the admin API's answers) comes with no lines.
impl WithLines for http_body_util::Full<Bytes> {}

/// Parses the plain request head at the start of `buf` (field values share its bytes), and
/// says how many bytes it took; `None` when `buf` does not start with a whole head, or with one
/// this path does not serve (hyper then takes the connection, these bytes first).
pub(super) fn parse(buf: &Bytes) -> Option<(usize, Plain)> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) | Err(_) => return None,
    };
    if req.version != Some(1) {
        return None;
    }
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return None,
    };
    let path = req.path?;
    let base = buf.as_ptr() as usize;
    let slice = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        buf.slice(at..at + s.len())
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(path.as_bytes())) else {
        return None;
    };
    let mut close = false;
    // Room for the fields the balancer adds.
    let mut headers = HeaderMap::with_capacity(req.headers.len() + 5);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if h.value != b"0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"te")
        {
            return None;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(slice(h.value)),
        ) else {
            return None;
        };
        headers.append(name, value);
    }
    let mut r = Request::new(());
    *r.method_mut() = method;
    *r.uri_mut() = uri;
    *r.version_mut() = Version::HTTP_11;
    *r.headers_mut() = headers;
    Some((n, Plain { req: r, close }))
}

/// Writes `resp`, the answer to a request of `method`, into `out`, and its body as it comes;
/// whenever the body has nothing ready, or `out` holds [`OUT_MAX`] bytes, what `out` holds is
/// written to `io` first. With `close`, the answer says the connection closes after it. Returns
/// whether the connection may carry another request, or an error when it must close (the body
/// failed, or writing did).
pub(super) async fn answer<B, W>(
    method: &Method,
    resp: Response<B>,
    close: bool,
    out: &mut BytesMut,
    io: &mut W,
) -> Result<bool, ()>
where
    B: Body + WithLines,
    W: AsyncWrite + Unpin,
{
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let headers = &parts.headers;
    let lines = body.lines();
    let no_body = status == 204 || status == 304;
    let head_only = no_body || *method == Method::HEAD;
    // One pass over the names (a map lookup hashes; a standard name compares as a number).
    let (mut te, mut length, mut date, mut keep) = (false, None, false, true);
    for (name, value) in headers.iter() {
        if name == header::TRANSFER_ENCODING {
            te = true;
        } else if name == header::CONTENT_LENGTH {
            // Unreadable or conflicting: the body cannot be framed by it, so it closes.
            let n = h1::content_length(value.as_bytes()).map_err(|_| ())?;
            length = agree(length, n)?;
        } else if name == header::DATE {
            date = true;
        } else if name == header::CONNECTION && has_close(value.as_bytes()) {
            keep = false;
        }
    }
    if let Some(l) = lines {
        date |= l.date;
        if let Some(n) = l.length {
            length = agree(length, n)?;
        }
    }
    // Framing: a Transfer-Encoding the service set means chunked here (its Content-Length is
    // void); else its Content-Length; else the body's exact size; else chunked.
    let exact = body.size_hint().exact();
    let chunked = !head_only && (te || (length.is_none() && exact.is_none()));
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers.iter() {
        if name == header::TRANSFER_ENCODING || (te && name == header::CONTENT_LENGTH) {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if let Some(l) = lines {
        out.put_slice(&l.bytes);
    }
    if close && keep {
        out.put_slice(b"connection: close\r\n");
        keep = false;
    }
    if chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    } else if !no_body && !te && length.is_none() {
        // For HEAD only a size the service gave a body for (as hyper does): an empty body
        // says nothing of the resource's.
        if let Some(n) = exact.filter(|&n| n > 0 || *method != Method::HEAD) {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa(n, &mut [0u8; 20]));
            out.put_slice(b"\r\n");
        }
    }
    if !date {
        out.put_slice(b"date: ");
        out.put_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    if head_only {
        return Ok(keep);
    }
    // Bytes the declared Content-Length still allows: a body that runs past it is cut there
    // and one that ends short fails the connection, so the client's framing holds (as hyper's
    // encoder does).
    let mut allowed = if chunked { None } else { length.or(exact) };
    let mut cut = false;
    let mut body = pin!(body);
    while !body.is_end_stream() {
        let mut frame = pin!(body.frame());
        let next = match poll_fn(|cx| Poll::Ready(frame.as_mut().poll(cx))).await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                // Nothing ready: what is written so far goes out while the body waits.
                io.write_all(out).await.map_err(|_| ())?;
                io.flush().await.map_err(|_| ())?;
                out.clear();
                frame.await
            }
        };
        let mut data = match next {
            None => break,
            Some(Err(_)) => return Err(()),
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers: not sent on this path
            },
        };
        let mut n = data.remaining();
        if let Some(left) = allowed.as_mut() {
            if n as u64 > *left {
                n = *left as usize;
                cut = true;
            }
            *left -= n as u64;
        }
        if chunked && n > 0 {
            out.put_slice(hex(n, &mut [0u8; 16]));
            out.put_slice(b"\r\n");
            out.put(data);
            out.put_slice(b"\r\n");
        } else {
            out.put((&mut data).take(n));
        }
        if cut {
            keep = false; // cut at the declared length: what follows cannot be framed
            break;
        }
        if out.len() >= OUT_MAX {
            io.write_all(out).await.map_err(|_| ())?;
            out.clear();
        }
    }
    if chunked {
        out.put_slice(b"0\r\n\r\n");
    }
    if allowed.is_some_and(|left| left > 0) {
        return Err(()); // the body ended short of its length
    }
    Ok(keep)
}

/// A Content-Length of `n` beside the one already found, if any: an error unless they agree.
fn agree(have: Option<u64>, n: u64) -> Result<Option<u64>, ()> {
    match have {
        Some(l) if l != n => Err(()),
        _ => Ok(Some(n)),
    }
}

/// True when a Connection field value lists `close`.
fn has_close(value: &[u8]) -> bool {
    h1::tokens(value).any(|t| t.eq_ignore_ascii_case(b"close"))
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    /// What `answer` writes for `resp` to a request of `method`, and what it returns.
    async fn written(method: Method, resp: Response<Full<Bytes>>) -> (String, Result<bool, ()>) {
        let (mut out, mut io) = (BytesMut::new(), Vec::new());
        let r = answer(&method, resp, false, &mut out, &mut io).await;
        io.extend_from_slice(&out);
        (String::from_utf8(io).unwrap(), r)
    }

    fn with_length(length: &'static str, body: &'static str) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static(length));
        r.headers_mut()
            .insert(header::DATE, HeaderValue::from_static("x"));
        r
    }

    #[tokio::test]
    async fn a_body_is_held_to_its_declared_length() {
        let (text, r) = written(Method::GET, with_length("5", "hello")).await;
        assert_eq!(r, Ok(true));
        assert!(
            text.ends_with("content-length: 5\r\ndate: x\r\n\r\nhello"),
            "{text}"
        );
        // Longer than declared: cut, and the connection goes.
        let (text, r) = written(Method::GET, with_length("3", "hello")).await;
        assert_eq!(r, Ok(false));
        assert!(text.ends_with("\r\n\r\nhel"), "{text}");
        // Shorter: the connection fails.
        let (_, r) = written(Method::GET, with_length("9", "hello")).await;
        assert_eq!(r, Err(()));
        let (_, r) = written(Method::GET, with_length("nine", "hello")).await;
        assert_eq!(r, Err(()));
    }

    #[tokio::test]
    async fn a_head_answer_gets_no_length_for_an_empty_body() {
        let mut resp = Response::new(Full::new(Bytes::new()));
        resp.headers_mut()
            .insert(header::DATE, HeaderValue::from_static("x"));
        let (text, r) = written(Method::HEAD, resp).await;
        assert_eq!(r, Ok(true));
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: x\r\n\r\n");
        let (text, _) = written(Method::HEAD, with_length("5", "")).await;
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        // A body given to a HEAD request is not sent, but its size is.
        let mut resp = Response::new(Full::new(Bytes::from_static(b"hello")));
        resp.headers_mut()
            .insert(header::DATE, HeaderValue::from_static("x"));
        let (text, _) = written(Method::HEAD, resp).await;
        assert!(
            text.ends_with("date: x\r\ncontent-length: 5\r\n\r\n"),
            "{text}"
        );
    }
}
