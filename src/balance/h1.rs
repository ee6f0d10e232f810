//! A lean HTTP/1.1 exchange with plain `http://` backends, for the common request: one without
//! a body, whose method may be sent twice. The request's own task writes the head in one write
//! and parses the response head in place; there is no connection task, no channel between the
//! two and no copy of the request kept for a retry. (hyper's client connection task was a third
//! of the instructions of a proxied request.) Bodies, upgrades, TLS and HTTP/2 backends go
//! through hyper.
//!
//! Response framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked (its
//! trailers passed on) when `Transfer-Encoding` ends in `chunked`; else `Content-Length`; else
//! the body runs to the close. A connection goes back to its worker's pool only when the
//! response ended cleanly, nothing extra followed it, and neither side said `close`.

use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use hyper::body::Frame;
use std::mem::MaybeUninit;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::proxy::{is_fixed_hop, is_fixed_hop_name, is_forwarded, write_forwarded, Peer};
use super::upstream::ConnPool;
use crate::core::backend::Backend;
use crate::core::client::{ConnectError, Dialer, Stream};
use crate::core::h1::{self, tokens, Chunk, Chunked, Field, HeadFacts};
use crate::core::server::Lines;

/// Read buffer of a connection; a response head may grow it up to [`MAX_HEAD`].
const READ_BUF: usize = 8 * 1024;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Most header fields in a response head or trailer section (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// An HTTP/1.1 connection to a plain `http://` backend.
pub struct H1Conn {
    io: TcpStream,
    /// Bytes at `start..end` were received and not yet used.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The request head being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// The response timeout, re-armed for each request. Moving a registered timer's deadline
    /// later costs no trip to the timer wheel, as making and dropping one per request would.
    timer: Pin<Box<Sleep>>,
    /// When the current request was sent.
    sent_at: Instant,
}

/// How a round trip failed.
enum Fault {
    /// The request could not be written, or the backend reset the connection with it unread
    /// (a pooled connection the backend closed while it was idle). The backend did not take
    /// it, so the request may go again on a new connection.
    Stale,
    /// No response head before the deadline.
    Timeout,
    /// Anything else: a broken answer, an error mid-head.
    Failed(String),
}

/// Why an exchange produced no response.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection could be opened: nothing was sent.
    Connect(ConnectError),
    /// The request was sent and the backend failed: closed, reset or answered nonsense.
    Failed(String),
    /// The request was sent and no response head came before the deadline.
    Timeout,
}

/// A response head from a backend, hop-by-hop fields removed.
pub struct Answer {
    /// The status (never 1xx: interim responses are skipped).
    pub status: StatusCode,
    /// End-to-end header fields, unless they are in `lines`.
    pub headers: HeaderMap,
    /// The end-to-end fields as the backend wrote them, when they were asked for that way.
    pub lines: Option<Lines>,
    /// The body.
    pub body: AnswerBody,
    /// When the request was sent, for latency tracking.
    pub sent_at: Instant,
}

/// A response body: already complete (the connection is back in the pool), or still arriving.
pub enum AnswerBody {
    /// The whole body, received with the head.
    Complete(Bytes),
    /// The body as it arrives.
    Streaming(Reader),
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Up to the backend's close.
    Close,
}

impl H1Conn {
    fn new(io: TcpStream) -> H1Conn {
        H1Conn {
            io,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            out: Vec::with_capacity(512),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            sent_at: Instant::now(),
        }
    }

    /// Readies an idle connection for the pool: a buffer a large head grew goes back to its
    /// usual size.
    pub(super) fn idle(mut self) -> H1Conn {
        if self.buf.len() > READ_BUF {
            self.buf = vec![0; READ_BUF];
        }
        self
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// True while the idle connection is usable: no end of stream, error or unasked-for bytes
    /// from the backend since its last response. Costs no system call unless the socket has
    /// become readable.
    pub fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more into the buffer (compacting or growing it first when full); `Ok(0)` at the
    /// end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2).min(MAX_HEAD + READ_BUF);
                self.buf.resize(grown, 0);
            }
        }
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Writes the request head: origin-form target, HTTP/1.1, the prepared fields, `Host` when
    /// `host` is given (the client sent none), and the X-Forwarded-* fields for `peer`.
    async fn send(&mut self, head: &Parts, host: Option<&str>, peer: &Peer) -> Result<(), Fault> {
        let out = &mut self.out;
        out.clear();
        out.put_slice(head.method.as_str().as_bytes());
        out.put_u8(b' ');
        let target = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.put_slice(target.as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        if let Some(h) = host {
            out.put_slice(b"host: ");
            out.put_slice(h.as_bytes());
            out.put_slice(b"\r\n");
        }
        for (name, value) in &head.headers {
            if is_forwarded(name) {
                continue;
            }
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        write_forwarded(out, &head.headers, peer);
        out.put_slice(b"\r\n");
        let mut sent = 0;
        poll_fn(|cx| loop {
            if sent == self.out.len() {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out[sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Fault::Stale)),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) if stale_error(&e) => return Poll::Ready(Err(Fault::Stale)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Failed(e.to_string()))),
                Poll::Pending => {
                    ready!(self.timer.as_mut().poll(cx));
                    return Poll::Ready(Err(Fault::Timeout));
                }
            }
        })
        .await
    }

    /// Reads more, unless the deadline passes first (`None`).
    async fn fill_by_deadline(&mut self) -> Option<io::Result<usize>> {
        poll_fn(|cx| {
            if let Poll::Ready(r) = self.poll_fill(cx) {
                return Poll::Ready(Some(r));
            }
            ready!(self.timer.as_mut().poll(cx));
            Poll::Ready(None)
        })
        .await
    }

    /// After an end of stream before any answer: whether a reset or broken pipe is pending,
    /// now or within `RESET_WAIT`. The reset a request draws from a socket the backend had
    /// closed comes after that close's end of stream: at once on an idle loopback, a round
    /// trip later over a network, and later still when the kernel defers the work under load.
    /// A backend that read the request and closed sends no reset, so waiting costs only a
    /// failure that much time.
    async fn reset_follows(&mut self) -> bool {
        let pending = |io: &TcpStream| matches!(io.take_error(), Ok(Some(e)) if stale_error(&e));
        if pending(&self.io) {
            return true;
        }
        tokio::time::sleep(RESET_WAIT).await;
        pending(&self.io)
    }

    /// Reads and parses the response head, skipping interim (1xx) ones.
    async fn read_head(
        &mut self,
        method: &Method,
        want_lines: bool,
    ) -> Result<(Answer0, Framing), Fault> {
        let mut received = false;
        loop {
            if self.start < self.end {
                received = true;
                match parse_head(self.buffered(), method, want_lines).map_err(Fault::Failed)? {
                    Some((n, None)) => {
                        self.consume(n); // an interim response: the final one may follow
                        continue;
                    }
                    Some((n, Some(head))) => {
                        self.consume(n);
                        return Ok(head);
                    }
                    None if self.end - self.start >= MAX_HEAD => {
                        let e = format!("response head over {MAX_HEAD} bytes");
                        return Err(Fault::Failed(e));
                    }
                    None => {}
                }
            }
            match self.fill_by_deadline().await {
                None => return Err(Fault::Timeout),
                // The request went out. A connection that ends before any byte of an answer
                // may have delivered it, so it is not sent again here (the retry policy
                // decides); but a reset says the backend closed with the request unread. The
                // reset comes as an error, or, when the backend had already closed the idle
                // connection (its end of stream not yet seen when the request went out), it
                // answers the request and comes behind that end of stream as the socket's
                // error (EPIPE), if need be a little later.
                Some(Ok(0)) if !received => {
                    return Err(if self.reset_follows().await {
                        Fault::Stale
                    } else {
                        Fault::Failed(CLOSED_UNANSWERED.into())
                    });
                }
                Some(Ok(0)) => return Err(Fault::Failed("the backend closed mid-head".into())),
                Some(Ok(_)) => {}
                Some(Err(e)) if !received && e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Fault::Stale)
                }
                Some(Err(e)) => return Err(Fault::Failed(e.to_string())),
            }
        }
    }
}

/// A connection reset or broken pipe: what a pooled connection the backend closed gives.
fn stale_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// A final response head, before its body is known.
struct Answer0 {
    status: StatusCode,
    /// The fields, unless they are in `lines`.
    headers: HeaderMap,
    lines: Option<Lines>,
    /// The connection may carry another request after this response.
    reusable: bool,
    /// The body, when it has a length and came whole with the head (not yet consumed).
    whole: Option<Bytes>,
}

/// Parses a response head at the start of `bytes`: `None` while incomplete; `Some((n, None))`
/// for an interim (1xx) head of `n` bytes; else the head and its body's framing. With
/// `want_lines` the fields come as [`Lines`] when they can (see [`field_lines`]).
#[allow(clippy::type_complexity)]
fn parse_head(
    bytes: &[u8],
    method: &Method,
    want_lines: bool,
) -> Result<Option<(usize, Option<(Answer0, Framing)>)>, String> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, bytes, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| format!("malformed response head: status {code}"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("101 Switching Protocols to a request without Upgrade".into());
        }
        return Ok(Some((n, None)));
    }
    let mut facts = HeadFacts::new(resp.version);
    let mut fields = [Field::Other; MAX_HEADERS];
    for (h, field) in resp.headers.iter().zip(fields.iter_mut()) {
        *field = facts
            .field(h.name.as_bytes(), h.value)
            .map_err(|e| format!("malformed response head: {e}"))?;
    }
    let framing = facts.framing(*method == Method::HEAD, code);
    let reusable = facts.reusable(framing);
    // A body of known length that came whole with the head goes in the head's copy.
    let whole = match framing {
        h1::Framing::Length(len) if len <= (bytes.len() - n) as u64 => Some(len as usize),
        _ => None,
    };
    let framing = match framing {
        h1::Framing::Length(n) => Framing::Length(n),
        h1::Framing::Chunked => Framing::Chunked(Chunked::default()),
        h1::Framing::UntilClose => Framing::Close,
    };
    if want_lines && !facts.names_fields {
        let fields = &fields[..resp.headers.len()];
        if let Some((lines, whole)) = field_lines(bytes, n, resp.headers, fields, &facts, whole) {
            let head = Answer0 {
                status,
                headers: HeaderMap::new(),
                lines: Some(lines),
                reusable,
                whole,
            };
            return Ok(Some((n, Some((head, framing)))));
        }
    }
    // One copy of the head that every field value shares, not an allocation per value.
    let shared = Bytes::copy_from_slice(&bytes[..n + whole.unwrap_or(0)]);
    let base = bytes.as_ptr() as usize;
    // Sized for the fields kept and the x-request-id the balancer adds, and no more: a map
    // one field too large for its table doubles it, and a table of 12 or more entries is
    // over 1 KiB, which glibc serves from its slow bins, not the per-thread cache.
    let kept = fields[..resp.headers.len()]
        .iter()
        .filter(|f| **f != Field::Hop)
        .count();
    let mut headers = HeaderMap::with_capacity(kept + 1);
    let mut length = false;
    for (h, field) in resp.headers.iter().zip(fields) {
        let bad = || format!("malformed response header {:?}", h.name);
        // A second Content-Length has the first's value (`HeadFacts` refuses others) but maybe
        // not its text ("02"), which some clients refuse.
        if field == Field::Hop || (field == Field::Length && std::mem::replace(&mut length, true)) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad())?;
        if is_fixed_hop(&name) {
            continue;
        }
        let value = shared_value(&shared, base, h.value).map_err(|_| bad())?;
        headers.append(name, value);
    }
    if facts.names_fields {
        // Fields the backend's Connection header names are hop-by-hop too.
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                for token in tokens(h.value) {
                    if let Ok(n) = HeaderName::from_bytes(token) {
                        headers.remove(n);
                    }
                }
            }
        }
    }
    if facts.transfer_encoded() {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
        headers.remove(header::CONTENT_LENGTH);
    }
    let head = Answer0 {
        status,
        headers,
        lines: None,
        reusable,
        whole: whole.map(|len| shared.slice(n..n + len)),
    };
    Ok(Some((n, Some((head, framing)))))
}

/// The end-to-end fields of a final response head of `n` bytes at the start of `bytes`, as
/// they were written (hop-by-hop ones, and Content-Length beside Transfer-Encoding, left out),
/// copied with the body that came whole after the head (`whole` bytes). A second Content-Length
/// (of the same value: `HeadFacts` refuses others) and the backend's X-Request-Id (the
/// balancer's replaces it) are left out too. `None` when a line does not end in CRLF (httparse
/// takes a bare LF too): a map sorts those fields out.
fn field_lines(
    bytes: &[u8],
    n: usize,
    fields: &[httparse::Header<'_>],
    kinds: &[Field],
    facts: &HeadFacts,
    whole: Option<usize>,
) -> Option<(Lines, Option<Bytes>)> {
    let base = bytes.as_ptr() as usize;
    let mut out = BytesMut::with_capacity(n + whole.unwrap_or(0));
    let (mut date, mut length) = (false, false);
    // The run of kept lines not yet copied: they are copied a run at a time.
    let (mut from, mut to) = (0, 0);
    for (h, kind) in fields.iter().zip(kinds) {
        let at = (h.name.as_ptr() as usize).wrapping_sub(base);
        // The value's end; an empty one's slice says nothing of where it is, but the name
        // ends at the colon.
        let mut end = match h.value.is_empty() {
            true => at + h.name.len() + 1,
            false => (h.value.as_ptr() as usize).wrapping_sub(base) + h.value.len(),
        };
        while matches!(bytes.get(end), Some(b' ' | b'\t')) {
            end += 1;
        }
        if bytes.get(end..end + 2) != Some(b"\r\n") {
            return None;
        }
        end += 2;
        let keep = match kind {
            Field::Hop => false,
            Field::Length => !facts.transfer_encoded() && !std::mem::replace(&mut length, true),
            Field::Other => match line_kind(h.name.as_bytes()) {
                Line::Keep => true,
                Line::Date => {
                    date = true;
                    true
                }
                Line::Drop => false,
            },
        };
        if !keep {
            continue;
        }
        if at != to {
            out.extend_from_slice(&bytes[from..to]);
            from = at;
        }
        to = end;
    }
    out.extend_from_slice(&bytes[from..to]);
    let fields_len = out.len();
    let body = whole.map(|len| {
        out.extend_from_slice(&bytes[n..n + len]);
        out.split_off(fields_len).freeze()
    });
    let lines = Lines {
        bytes: out.freeze(),
        length: facts.length().filter(|_| !facts.transfer_encoded()),
        date,
    };
    Some((lines, body))
}

/// What a field other than Connection, Transfer-Encoding and Content-Length is to [`Lines`].
enum Line {
    Keep,
    Date,
    /// Hop-by-hop (RFC 9110 §7.6.1: the fixed names of [`is_fixed_hop`]), or X-Request-Id.
    Drop,
}

fn line_kind(name: &[u8]) -> Line {
    if is_fixed_hop_name(name) || name.eq_ignore_ascii_case(b"x-request-id") {
        Line::Drop
    } else if name.eq_ignore_ascii_case(b"date") {
        Line::Date
    } else {
        Line::Keep
    }
}

/// The fields of a whole trailer section (its final empty line included), if it has any.
fn parse_trailers(section: &[u8]) -> Result<Option<HeaderMap>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        Ok(httparse::Status::Partial) => return Err("malformed trailers".into()),
        Err(e) => return Err(format!("malformed trailers: {e}")),
    };
    let mut trailers = HeaderMap::new();
    for f in fields.iter() {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            trailers.append(k, v);
        }
    }
    Ok((!trailers.is_empty()).then_some(trailers))
}

/// A field value as a slice of `shared`, a copy of the bytes that start at address `base` and
/// hold `value`.
fn shared_value(
    shared: &Bytes,
    base: usize,
    value: &[u8],
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let at = (value.as_ptr() as usize).wrapping_sub(base);
    match at.checked_add(value.len()) {
        Some(end) if !value.is_empty() && end <= shared.len() => {
            HeaderValue::from_maybe_shared(shared.slice(at..end))
        }
        _ => HeaderValue::from_bytes(value),
    }
}

/// A request for [`exchange`], and how its answer is wanted.
pub struct Ask<'a> {
    /// The request's head: it has no body, and is safe to send twice.
    pub head: &'a Parts,
    /// The Host to send when the head has none.
    pub host: Option<&'a str>,
    /// The client, for X-Forwarded-*.
    pub peer: &'a Peer,
    /// How long the answer's head may take, from the send.
    pub timeout: Duration,
    /// The answer's fields as [`Lines`] where they can be.
    pub lines: bool,
}

/// Sends a request to a plain `http://` backend and reads the response head: on an idle pooled
/// connection if there is one, and again on a new connection when the pooled one turns out to
/// have been closed before answering.
pub async fn exchange(
    pool: &Rc<ConnPool>,
    dialer: &Dialer,
    backend: &Backend,
    ask: &Ask<'_>,
) -> Result<Answer, ExchangeError> {
    if let Some(mut conn) = pool.pop_plain(backend.id) {
        match round_trip(&mut conn, ask).await {
            Ok(found) => return Ok(finish(pool, backend.id, conn, found)),
            Err(Fault::Stale) => {} // closed while idle, nothing sent: a new connection
            Err(f) => return Err(f.into()),
        }
    }
    // Boxed: a dial's state is large, and it is needed only for a new connection.
    let mut conn = match Box::pin(dialer.dial(&backend.target)).await {
        Ok((Stream::Plain(tcp), _)) => H1Conn::new(tcp),
        Ok(_) => {
            return Err(ExchangeError::Failed(
                "an http:// backend was dialed with TLS".into(),
            ))
        }
        Err(e) => return Err(ExchangeError::Connect(e)),
    };
    match round_trip(&mut conn, ask).await {
        Ok(found) => Ok(finish(pool, backend.id, conn, found)),
        Err(f) => Err(f.into()),
    }
}

/// How long an end of stream before any answer waits for the reset that says the request was
/// never read (see `H1Conn::reset_follows`).
const RESET_WAIT: Duration = Duration::from_millis(10);

/// Why a request that went out got no answer at all.
const CLOSED_UNANSWERED: &str = "the backend closed the connection before answering";

impl From<Fault> for ExchangeError {
    fn from(f: Fault) -> ExchangeError {
        match f {
            Fault::Stale => ExchangeError::Failed(CLOSED_UNANSWERED.into()),
            Fault::Timeout => ExchangeError::Timeout,
            Fault::Failed(e) => ExchangeError::Failed(e),
        }
    }
}

async fn round_trip(conn: &mut H1Conn, ask: &Ask<'_>) -> Result<(Answer0, Framing), Fault> {
    // The response timeout runs from the send, not the dial (as on hyper's path).
    conn.sent_at = Instant::now();
    conn.timer.as_mut().reset(conn.sent_at + ask.timeout);
    conn.send(ask.head, ask.host, ask.peer).await?;
    conn.read_head(&ask.head.method, ask.lines).await
}

/// The answer: its body whole when it came with the head (the connection back in the pool at
/// once), else a reader that streams it.
fn finish(
    pool: &Rc<ConnPool>,
    id: u64,
    mut conn: H1Conn,
    (head, framing): (Answer0, Framing),
) -> Answer {
    let Answer0 {
        status,
        headers,
        lines,
        reusable,
        whole,
    } = head;
    let sent_at = conn.sent_at;
    let body = match whole {
        Some(body) => {
            conn.consume(body.len());
            if reusable && conn.start == conn.end {
                pool.put_plain(id, conn);
            }
            AnswerBody::Complete(body)
        }
        None => AnswerBody::Streaming(Reader {
            conn: Some(conn),
            framing,
            reusable,
            pool: pool.clone(),
            id,
        }),
    };
    Answer {
        status,
        headers,
        lines,
        body,
        sent_at,
    }
}

/// A response body still arriving from a backend. When it ends cleanly the connection goes back
/// to the pool; dropped early, or after an error, the connection is closed.
pub struct Reader {
    /// `None` once the body has ended (or failed).
    conn: Option<H1Conn>,
    framing: Framing,
    reusable: bool,
    pool: Rc<ConnPool>,
    id: u64,
}

/// What the buffered bytes give.
enum Step {
    Frame(Frame<Bytes>),
    /// The body ended (the connection released).
    End,
    /// More bytes are needed.
    More,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Reader {
    /// True once the body has ended.
    pub fn is_end(&self) -> bool {
        self.conn.is_none()
    }

    /// Bytes left, when the body has a known length.
    pub fn remaining(&self) -> Option<u64> {
        match (self.framing, &self.conn) {
            (_, None) => Some(0),
            (Framing::Length(n), _) => Some(n),
            _ => None,
        }
    }

    /// Gives up on the body: the connection closes.
    pub fn abandon(&mut self) {
        self.conn = None;
    }

    /// The next frame of the body.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let step = match self.step() {
                Ok(s) => s,
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            match step {
                Step::Frame(f) => return Poll::Ready(Some(Ok(f))),
                Step::End => return Poll::Ready(None),
                Step::More => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.conn = None; // the body ends with the connection
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err("the backend closed mid-body".into())));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Returns the connection to the pool if it can carry another request.
    fn done(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.start == conn.end {
                self.pool.put_plain(self.id, conn);
            }
        }
    }

    /// Decodes what is buffered.
    fn step(&mut self) -> Result<Step, String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        let have = conn.buffered();
        match &mut self.framing {
            Framing::Length(0) => {
                self.done();
                Ok(Step::End)
            }
            Framing::Length(left) => {
                if have.is_empty() {
                    return Ok(Step::More);
                }
                let n = have.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let data = Bytes::copy_from_slice(&have[..n]);
                conn.consume(n);
                *left -= n as u64;
                if *left == 0 {
                    self.done();
                }
                Ok(Step::Frame(Frame::data(data)))
            }
            Framing::Close => {
                if have.is_empty() {
                    return Ok(Step::More);
                }
                let data = Bytes::copy_from_slice(have);
                let n = have.len();
                conn.consume(n);
                Ok(Step::Frame(Frame::data(data)))
            }
            Framing::Chunked(state) => loop {
                let have = conn.buffered();
                match state.next(have)? {
                    Chunk::Framing(n) => conn.consume(n),
                    Chunk::Data(n) => {
                        let data = Bytes::copy_from_slice(&have[..n]);
                        conn.consume(n);
                        return Ok(Step::Frame(Frame::data(data)));
                    }
                    Chunk::End(n) => {
                        let trailers = parse_trailers(&have[..n])?;
                        conn.consume(n);
                        self.done();
                        return Ok(match trailers {
                            Some(t) => Step::Frame(Frame::trailers(t)),
                            None => Step::End,
                        });
                    }
                    Chunk::More => return Ok(Step::More),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> (Answer0, Framing) {
        match parse_head(raw.as_bytes(), &method, false) {
            Ok(Some((n, Some(h)))) => {
                assert_eq!(n, raw.len());
                h
            }
            _ => panic!("not a final head: {raw:?}"),
        }
    }

    #[test]
    fn the_field_map_is_sized_for_the_fields_kept() {
        // nginx's answer: six fields, one of them hop-by-hop.
        let raw = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 07:35:38 GMT\r\n\
                   Content-Type: text/plain\r\nContent-Length: 9\r\nConnection: keep-alive\r\n\
                   x-server-id: 1\r\n\r\n";
        let (h, _) = head(raw, Method::GET);
        let mut headers = h.headers;
        assert_eq!(headers.len(), 5);
        // Room for the x-request-id the balancer adds, in the small table: sized by all six
        // fields plus one, the map would take a table of 12 entries (over 1 KiB).
        let capacity = headers.capacity();
        assert!(capacity < 12, "a table of {capacity} entries");
        headers.insert("x-request-id", HeaderValue::from_static("a"));
        assert_eq!(
            headers.capacity(),
            capacity,
            "adding the request id grew the map"
        );
    }

    fn lines(raw: &str) -> Option<(Lines, Option<Bytes>)> {
        match parse_head(raw.as_bytes(), &Method::GET, true) {
            Ok(Some((_, Some((h, _))))) => h.lines.map(|l| (l, h.whole)),
            _ => panic!("not a final head: {raw:?}"),
        }
    }

    #[test]
    fn field_lines_are_the_end_to_end_lines_as_written() {
        let raw = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 07:35:38 GMT\r\n\
                   Content-Type: text/plain\r\nContent-Length: 9\r\nConnection: keep-alive\r\n\
                   x-server-id: 1\r\n\r\nserver 1\nHTTP/1.1";
        let (l, body) = lines(raw).expect("lines");
        assert_eq!(
            l.bytes,
            "Server: nginx\r\nDate: Sun, 06 Dec 2026 07:35:38 GMT\r\nContent-Type: text/plain\r\n\
             Content-Length: 9\r\nx-server-id: 1\r\n"
        );
        assert_eq!((l.length, l.date), (Some(9), true));
        assert_eq!(body.as_deref(), Some(&b"server 1\n"[..]));
        // Every fixed hop-by-hop name goes, whatever its case; trailing blanks stay.
        let (l, body) = lines(
            "HTTP/1.1 200 OK\r\nKeep-Alive: 1\r\nA: 1 \r\nTE: x\r\nUPGRADE: y\r\nProxy-Connection: z\r\n\
             Proxy-Authenticate: z\r\nProxy-Authorization: z\r\nB:2\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 3\r\n\r\n",
        )
        .expect("lines");
        assert_eq!(l.bytes, "A: 1 \r\nB:2\r\n");
        assert_eq!((l.length, l.date, body), (None, false, None));
        // A body not yet whole is not copied.
        let (l, body) = lines("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nserver").expect("lines");
        assert_eq!(
            (l.bytes.as_ref(), body),
            (&b"Content-Length: 9\r\n"[..], None)
        );
    }

    #[test]
    fn the_backends_request_id_a_second_length_and_empty_values_as_lines() {
        let (l, _) = lines(
            "HTTP/1.1 200 OK\r\nX-Request-ID: b\r\nContent-Length: 0\r\nX-A:\r\nX-B:  \r\n\
             content-length: 00\r\nX-C: 1\r\n\r\n",
        )
        .expect("lines");
        assert_eq!(l.bytes, "Content-Length: 0\r\nX-A:\r\nX-B:  \r\nX-C: 1\r\n");
        assert_eq!(l.length, Some(0));
        // The map path keeps one Content-Length too.
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\ncontent-length: 00\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.headers.get_all("content-length").iter().count(), 1);
    }

    #[test]
    fn lines_leave_out_what_is_fixed_hop_by_hop_and_nothing_else() {
        for name in [
            "TE",
            "Upgrade",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "Keep-Alive",
            "Proxy-Connection",
            "Trailer",
            "Date",
            "Server",
            "X-Forwarded-For",
            "Te-X",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{name}: v\r\nContent-Length: 0\r\n\r\n");
            let (l, _) = lines(&raw).expect("lines");
            let gone = !l.bytes.starts_with(name.as_bytes());
            let hop = is_fixed_hop(&HeaderName::from_bytes(name.as_bytes()).unwrap());
            assert_eq!(gone, hop, "{name}");
        }
    }

    #[test]
    fn a_map_takes_the_fields_lines_cannot_carry() {
        for (raw, gone) in [
            (
                "HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            ("HTTP/1.1 200 OK\nX-A: 1\nX-B: 2\nContent-Length: 0\n\n", false),
        ] {
            let Ok(Some((_, Some((h, _))))) = parse_head(raw.as_bytes(), &Method::GET, true) else {
                panic!("not a final head: {raw:?}");
            };
            assert!(h.lines.is_none(), "{raw:?}");
            assert_eq!(h.headers.contains_key("x-a"), !gone, "{raw:?}");
            assert!(h.headers.contains_key("x-b") && h.headers.contains_key("content-length"));
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = || Method::GET;
        let (h, f) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", get());
        assert_eq!((f, h.reusable), (Framing::Length(5), true));
        let (h, f) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            get(),
        );
        assert_eq!(f, Framing::Chunked(Chunked::Size));
        assert!(h.headers.get("content-length").is_none() && !h.reusable);
        let (h, f) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", get());
        assert_eq!((f, h.reusable), (Framing::Close, false));
        let (h, f) = head("HTTP/1.1 200 OK\r\n\r\n", get());
        assert_eq!((f, h.reusable), (Framing::Close, false));
        let (_, f) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(f, Framing::Length(0));
        let (_, f) = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            get(),
        );
        assert_eq!(f, Framing::Length(0));
        let (h, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", get());
        assert!(!h.reusable);
        let (h, _) = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            get(),
        );
        assert!(h.reusable);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            get(),
        );
        assert!(!h.reusable);
    }

    #[test]
    fn hop_by_hop_fields_go_including_those_connection_names() {
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: x-a, keep-alive\r\nX-A: 1\r\nKeep-Alive: timeout=5\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        let mut names: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "x-b"]);
    }

    #[test]
    fn interim_heads_are_skipped_and_nonsense_refused() {
        let early = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        let raw = format!("{early}HTTP/1.1 200 OK\r\n");
        let raw = raw.as_bytes();
        let interim =
            parse_head(raw, &Method::GET, false).map(|r| r.map(|(n, h)| (n, h.is_none())));
        assert_eq!(interim, Ok(Some((early.len(), true))));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(
                parse_head(bad.as_bytes(), &Method::GET, false).is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nX: ", &Method::GET, false),
            Ok(None)
        ));
    }
}
