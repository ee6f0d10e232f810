//! The lean HTTP/1.1 client `lbx bench` uses for plain `http://` targets (not `--http2`): the
//! prebuilt request bytes are written as they are, responses are read into one reusable buffer
//! per connection and parsed in place with `httparse` (the parser hyper itself uses), and the
//! body is framed (Content-Length, chunked, or until close) and skipped, its size counted. No
//! allocation per request in the steady state. TLS and HTTP/2 keep the hyper client.
//!
//! A hostile server can send anything: the head, chunk-size lines and trailers are bounded, chunk
//! sizes are checked for overflow, and the buffer only grows to hold at most one bounded line or
//! head, so a malformed response is a protocol error, never a panic or unbounded memory.

use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::HeaderName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::core::client::{classify, ErrorKind, Stream};
use crate::core::h1::{Chunk, Chunked, Framing, HeadFacts};

/// Largest response head (status line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one response head.
const MAX_HEADERS: usize = 100;
/// Bytes the buffer is grown by when a read needs room.
const READ_CHUNK: usize = 16 * 1024;
/// Room below which the buffer is grown before a read.
const MIN_READ: usize = 2 * 1024;

/// Why a fast-path exchange failed.
#[derive(Debug)]
pub enum FastError {
    /// The response broke HTTP/1.1.
    Malformed(&'static str),
    /// The connection ended before the response was complete.
    Closed,
    /// A reused connection failed or closed before any byte of the response arrived: it had
    /// been closed by the server while idle, so the request may be retried on a new one.
    Stale,
    /// Reading or writing failed.
    Io(io::Error),
}

impl FastError {
    /// The kind reported.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FastError::Malformed(_) => ErrorKind::Protocol,
            FastError::Closed | FastError::Stale => ErrorKind::Reset,
            FastError::Io(e) => classify(e),
        }
    }
}

impl std::fmt::Display for FastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FastError::Malformed(why) => write!(f, "malformed response: {why}"),
            FastError::Closed => f.write_str("connection closed before the response was complete"),
            FastError::Stale => f.write_str("connection closed before taking the request"),
            FastError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Where a response is in its parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the (next) head: a 1xx interim head is followed by another.
    Head,
    /// Body bytes: this many left of the Content-Length.
    Data(u64),
    /// A chunked body, decoded as `core::h1` does.
    Chunked(Chunked),
    /// The body runs until the server closes the connection.
    UntilClose,
    /// The response is complete.
    Done,
}

/// Parses one response at a time from bytes fed in pieces; the status, the group-by value and
/// the body size are kept for the recorder.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    /// The request was HEAD: the response has no body whatever its headers say.
    head_request: bool,
    /// Status code of the final (non-1xx) head.
    pub status: u16,
    /// The group-by header was present (its value is in the caller's buffer).
    pub grouped: bool,
    /// Body bytes received (chunk data only, as hyper counts them).
    pub bytes: u64,
    /// The connection cannot carry another request after this response.
    pub close: bool,
}

impl ResponseReader {
    /// A reader for the response to a request; `head_request` for HEAD.
    pub fn new(head_request: bool) -> ResponseReader {
        ResponseReader {
            state: State::Head,
            head_request,
            status: 0,
            grouped: false,
            bytes: 0,
            close: false,
        }
    }

    /// Consumes what it can from the front of `buf`; true once the response is complete. The
    /// value of the `group_by` header (case-insensitive) is copied into `group`.
    pub fn advance(
        &mut self,
        buf: &mut BytesMut,
        group_by: &HeaderName,
        group: &mut Vec<u8>,
    ) -> Result<bool, FastError> {
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Head => {
                    if !self.head(buf, group_by, group)? {
                        return Ok(false);
                    }
                }
                State::Data(left) => match self.skip(buf, left) {
                    0 => self.state = State::Done,
                    left => {
                        self.state = State::Data(left);
                        return Ok(false);
                    }
                },
                State::Chunked(mut chunked) => {
                    let next = chunked.next(buf).map_err(FastError::Malformed)?;
                    self.state = State::Chunked(chunked);
                    match next {
                        Chunk::Framing(n) => buf.advance(n),
                        Chunk::Data(n) => {
                            self.skip(buf, n as u64);
                        }
                        Chunk::End(n) => {
                            buf.advance(n);
                            self.state = State::Done;
                        }
                        Chunk::More => return Ok(false),
                    }
                }
                State::UntilClose => {
                    self.bytes += buf.len() as u64;
                    buf.clear();
                    return Ok(false);
                }
            }
        }
    }

    /// Skips up to `left` body bytes from the front of `buf`, counting them; how many are left.
    fn skip(&mut self, buf: &mut BytesMut, left: u64) -> u64 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        buf.advance(n);
        self.bytes += n as u64;
        left - n as u64
    }

    /// The connection reached end of file: Ok when that completes the response (a body
    /// delimited by the close), `Closed` when the response was cut short.
    pub fn eof(&mut self) -> Result<(), FastError> {
        match self.state {
            State::Done | State::UntilClose => {
                self.state = State::Done;
                self.close = true;
                Ok(())
            }
            _ => Err(FastError::Closed),
        }
    }

    /// Parses a head from `buf` when it holds a whole one; true when it did (and chose how the
    /// body is framed).
    fn head(
        &mut self,
        buf: &mut BytesMut,
        group_by: &HeaderName,
        group: &mut Vec<u8>,
    ) -> Result<bool, FastError> {
        // Uninitialized slots, as hyper does: no need to clear the array for every response.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(FastError::Malformed("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(FastError::Malformed("too many header fields"))
            }
            Err(_) => return Err(FastError::Malformed("invalid response head")),
        };
        if len > MAX_HEAD {
            return Err(FastError::Malformed("response head too large"));
        }
        let status = resp.code.unwrap_or(0);
        if status == 101 {
            return Err(FastError::Malformed("unexpected 101 Switching Protocols"));
        }
        if (100..200).contains(&status) {
            // An interim answer: the final head follows.
            buf.advance(len);
            return Ok(true);
        }
        let mut facts = HeadFacts::new(resp.version);
        group.clear();
        self.grouped = false;
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            facts.field(name, h.value).map_err(FastError::Malformed)?;
            if !self.grouped && name.eq_ignore_ascii_case(group_by.as_str().as_bytes()) {
                self.grouped = true;
                group.extend_from_slice(h.value);
            }
        }
        self.status = status;
        buf.advance(len);
        let framing = facts.framing(self.head_request, status);
        self.close |= !facts.reusable(framing);
        self.state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Data(n),
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::UntilClose => State::UntilClose,
        };
        Ok(true)
    }
}

/// What the fast path keeps of an answer (the group-by value is in the caller's buffer).
#[derive(Clone, Copy, Debug)]
pub struct FastReply {
    /// Status code.
    pub status: u16,
    /// The group-by header was present.
    pub grouped: bool,
    /// Body bytes received.
    pub bytes: u64,
}

/// One plain HTTP/1.1 connection and its read buffer.
pub struct FastConn {
    stream: Stream,
    buf: BytesMut,
    /// Some response has completed on it: a failure before the next response's first byte
    /// means the server had closed it while idle.
    used: bool,
    /// It can carry another request.
    reusable: bool,
}

impl FastConn {
    /// Wraps a dialed connection.
    pub fn new(stream: Stream) -> FastConn {
        FastConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            used: false,
            reusable: true,
        }
    }

    /// False once the server asked to close (or the body ran until the close).
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Writes `request` (the prebuilt bytes) and reads its whole response; `head_request` for
    /// HEAD. The `group_by` header's value is copied into `group`.
    pub async fn round_trip(
        &mut self,
        request: &[u8],
        head_request: bool,
        group_by: &HeaderName,
        group: &mut Vec<u8>,
    ) -> Result<FastReply, FastError> {
        let stale = |used: bool, e: io::Error| {
            if used {
                FastError::Stale
            } else {
                FastError::Io(e)
            }
        };
        if let Err(e) = self.stream.write_all(request).await {
            self.reusable = false;
            return Err(stale(self.used, e));
        }
        let mut reader = ResponseReader::new(head_request);
        let mut started = false;
        loop {
            if !self.buf.is_empty() {
                started = true;
                match reader.advance(&mut self.buf, group_by, group) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        self.reusable = false;
                        return Err(e);
                    }
                }
            }
            if self.buf.capacity() - self.buf.len() < MIN_READ {
                self.buf.reserve(READ_CHUNK);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.reusable = false;
                    if !started && self.used {
                        return Err(FastError::Stale);
                    }
                    reader.eof()?;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.reusable = false;
                    return Err(if started {
                        FastError::Io(e)
                    } else {
                        stale(self.used, e)
                    });
                }
            }
        }
        self.used = true;
        if reader.close {
            self.reusable = false;
        }
        Ok(FastReply {
            status: reader.status,
            grouped: reader.grouped,
            bytes: reader.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::h1::MAX_TRAILERS;

    /// Feeds `pieces` one after another; the reader's result after each and its final state.
    fn feed(head: bool, pieces: &[&[u8]]) -> (Result<bool, FastError>, ResponseReader, Vec<u8>) {
        let mut r = ResponseReader::new(head);
        let mut buf = BytesMut::new();
        let mut group = Vec::new();
        let name = HeaderName::from_static("x-server-id");
        let mut out = Ok(false);
        for p in pieces {
            buf.extend_from_slice(p);
            out = r.advance(&mut buf, &name, &mut group);
            if !matches!(out, Ok(false)) {
                break;
            }
        }
        (out, r, group)
    }

    fn whole(head: bool, text: &[u8]) -> (Result<bool, FastError>, ResponseReader, Vec<u8>) {
        feed(head, &[text])
    }

    #[test]
    fn content_length_body_and_group() {
        let (out, r, g) = whole(
            false,
            b"HTTP/1.1 200 OK\r\nX-Server-ID: 7\r\nContent-Length: 9\r\n\r\nserver 7\n",
        );
        assert!(out.unwrap());
        assert_eq!(
            (r.status, r.grouped, r.bytes, r.close),
            (200, true, 9, false)
        );
        assert_eq!(g, b"7");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;name=value\r\nhello\r\nA \t; x\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n";
        let (out, r, g) = whole(false, text);
        assert!(out.unwrap());
        assert_eq!(
            (r.status, r.grouped, r.bytes, r.close),
            (200, false, 15, false)
        );
        assert!(g.is_empty());
    }

    #[test]
    fn split_across_reads_at_every_byte() {
        let text: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nx-server-id: b\r\n\
            Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let pieces: Vec<&[u8]> = text.chunks(1).collect();
        let (out, r, g) = feed(false, &pieces);
        assert!(out.unwrap());
        assert_eq!((r.status, r.bytes), (201, 19));
        assert_eq!(g, b"b");
        for cut in 1..text.len() {
            let (out, r, _) = feed(false, &[&text[..cut], &text[cut..]]);
            assert!(out.unwrap(), "cut at {cut}");
            assert_eq!((r.status, r.bytes), (201, 19), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_leftover_stays_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\n"[..],
        );
        let mut r = ResponseReader::new(false);
        let name = HeaderName::from_static("x-server-id");
        assert!(r.advance(&mut buf, &name, &mut Vec::new()).unwrap());
        assert_eq!(&buf[..], b"HTTP/1.1 404 Not Found\r\n");
    }

    #[test]
    fn no_body_for_head_204_and_304() {
        let (out, r, _) = whole(true, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        assert!(out.unwrap());
        assert_eq!((r.status, r.bytes), (200, 0));
        let (out, r, _) = whole(
            true,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(out.unwrap());
        assert!(!r.close);
        for status in [204, 304] {
            let text = format!("HTTP/1.1 {status} X\r\n\r\n");
            let (out, r, _) = whole(false, text.as_bytes());
            assert!(out.unwrap());
            assert_eq!((r.status, r.bytes, r.close), (status, 0, false));
        }
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let (out, mut r, _) = feed(
            false,
            &[
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\nsome",
                b" more",
            ],
        );
        assert!(!out.unwrap());
        assert!(r.close);
        r.eof().unwrap();
        assert_eq!(r.bytes, 9);
        // HTTP/1.0 closes unless asked not to; Connection: close is honoured.
        let (_, r, _) = whole(false, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(r.close);
        let text = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!whole(false, text).1.close);
        let text = b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n";
        assert!(whole(false, text).1.close);
    }

    #[test]
    fn eof_before_the_end_is_a_reset() {
        for text in [
            &b"HTTP/1.1 200 OK\r\nContent-Le"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ] {
            let (out, mut r, _) = whole(false, text);
            assert!(!out.unwrap());
            let e = r.eof().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Reset, "{text:?}");
        }
    }

    #[test]
    fn malformed_is_a_protocol_error() {
        let bad: &[&[u8]] = &[
            b"HTTX/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\nA\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nAB\r\n",
        ];
        for text in bad {
            let (out, _, _) = whole(false, text);
            let e = out.expect_err(&String::from_utf8_lossy(text));
            assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        // An endless head, chunk-size line or trailer section fails once past its bound
        // instead of growing the buffer.
        let endless = vec![b'a'; MAX_HEAD + 10];
        let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        head.extend_from_slice(&endless);
        let (out, _, _) = whole(false, &head);
        assert_eq!(out.unwrap_err().kind(), ErrorKind::Protocol);
        let mut chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        chunk.extend_from_slice(&endless);
        assert_eq!(
            whole(false, &chunk).0.unwrap_err().kind(),
            ErrorKind::Protocol
        );
        let mut trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for _ in 0..MAX_TRAILERS / 8 {
            trailers.extend_from_slice(b"X: 123\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(
            whole(false, &trailers).0.unwrap_err().kind(),
            ErrorKind::Protocol
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"X: 1\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            whole(false, &many).0.unwrap_err().kind(),
            ErrorKind::Protocol
        );
    }
}
