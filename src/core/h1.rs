//! HTTP/1.1 response framing, shared by lbx's two lean HTTP/1.1 clients: `bench`'s load
//! generator and `balance`'s exchange with plain `http://` backends. What a response head says
//! about its body and its connection (RFC 9112 §6.3 and §9.3), and the line-level pieces of a
//! chunked body. Both clients parse heads with `httparse` and feed the fields in here, so they
//! cannot disagree on where a response ends.

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` (zero for HEAD, 204 and 304 whatever the fields say).
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// What a field meant to the framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `Connection` or `Transfer-Encoding`: about this hop only.
    Hop,
    /// `Content-Length` (end-to-end, but framing).
    Length,
    /// Anything else.
    Other,
}

/// The facts of a response head that decide its framing, gathered field by field.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadFacts {
    http10: bool,
    length: Option<u64>,
    transfer: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    /// `Connection` named other fields (hop-by-hop too).
    pub names_fields: bool,
}

impl HeadFacts {
    /// For a response of this HTTP version (`httparse`'s minor version: 0 for HTTP/1.0).
    pub fn new(minor_version: Option<u8>) -> HeadFacts {
        HeadFacts {
            http10: minor_version == Some(0),
            ..HeadFacts::default()
        }
    }

    /// Takes in one field; an error for a malformed or conflicting `Content-Length`.
    pub fn field(&mut self, name: &[u8], value: &[u8]) -> Result<Field, &'static str> {
        // Most fields are none of the three: their length alone says so, without a
        // case-insensitive comparison each.
        if !matches!(name.len(), 10 | 14 | 17) {
            return Ok(Field::Other);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value)?;
            if self.length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length");
            }
            self.length = Some(n);
            return Ok(Field::Length);
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.http10 {
                // RFC 9112 §6.1: faulty framing (hyper's client refuses it too).
                return Err("Transfer-Encoding in an HTTP/1.0 response");
            }
            self.transfer = true;
            // Chunked only when it is the last coding applied.
            self.chunked = tokens(value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            return Ok(Field::Hop);
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else {
                    self.names_fields = true;
                }
            }
            return Ok(Field::Hop);
        }
        Ok(Field::Other)
    }

    /// The Content-Length, if there was one.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// True when `Transfer-Encoding` was present: a `Content-Length` beside it is void.
    pub fn transfer_encoded(&self) -> bool {
        self.transfer
    }

    /// How the body of this response to a request (HEAD or not) with this status is framed.
    pub fn framing(&self, head_request: bool, status: u16) -> Framing {
        if head_request || status == 204 || status == 304 {
            Framing::Length(0)
        } else if self.transfer {
            // Transfer-Encoding overrides Content-Length; without chunked last, the body runs
            // until the close.
            if self.chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            self.length.map_or(Framing::UntilClose, Framing::Length)
        }
    }

    /// True when the connection can carry another request after a response so framed. Not
    /// after one with both Transfer-Encoding and Content-Length (RFC 9112 §6.3: a sign of
    /// smuggling, so the connection is not trusted further).
    pub fn reusable(&self, framing: Framing) -> bool {
        let open = if self.http10 {
            self.keep_alive && !self.close
        } else {
            !self.close
        };
        open && framing != Framing::UntilClose && !(self.transfer && self.length.is_some())
    }
}

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Most bytes of trailer section (its final empty line included) accepted.
pub const MAX_TRAILERS: usize = 64 * 1024;

/// Where a chunked body's decoder is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunked {
    /// A chunk-size line comes next.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data comes next.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

/// What the front of a chunked body's buffer holds, as [`Chunked::next`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes of framing (a size line, a CRLF): drop them.
    Framing(usize),
    /// This many bytes of chunk data: take them.
    Data(usize),
    /// The trailer section, this long with its final empty line: take it; the body has ended.
    End(usize),
    /// More bytes are needed.
    More,
}

impl Chunked {
    /// Reads what comes next at the front of `buf`. The caller then removes the bytes the
    /// answer counts (all of them) from its buffer.
    pub fn next(&mut self, buf: &[u8]) -> Result<Chunk, &'static str> {
        match *self {
            Chunked::Size => {
                let Some(len) = line(buf, MAX_CHUNK_LINE, "chunk-size line too long")? else {
                    return Ok(Chunk::More);
                };
                let size = chunk_size(&buf[..len - 2])?;
                *self = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
                Ok(Chunk::Framing(len))
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Chunk::More);
                }
                let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                *self = match left - n as u64 {
                    0 => Chunked::DataEnd,
                    left => Chunked::Data(left),
                };
                Ok(Chunk::Data(n))
            }
            Chunked::DataEnd => match buf {
                [b'\r', b'\n', ..] => {
                    *self = Chunked::Size;
                    Ok(Chunk::Framing(2))
                }
                [] | [b'\r'] => Ok(Chunk::More),
                _ => Err("chunk data not followed by CRLF"),
            },
            Chunked::Trailers => {
                let mut at = 0;
                loop {
                    let room = MAX_TRAILERS - at;
                    match line(&buf[at..], room, "trailers too large")? {
                        Some(2) => return Ok(Chunk::End(at + 2)),
                        Some(len) if at + len < MAX_TRAILERS => at += len,
                        Some(_) => return Err("trailers too large"),
                        None => return Ok(Chunk::More),
                    }
                }
            }
        }
    }
}

/// The length (CRLF included) of the CRLF-terminated line at the front of `buf`; `None` until
/// it is all there; an error when it is longer than `max` or ends in a bare LF.
pub fn line(buf: &[u8], max: usize, too_long: &'static str) -> Result<Option<usize>, &'static str> {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) if i >= 1 && window[i - 1] == b'\r' => Ok(Some(i + 1)),
        Some(_) => Err("line not ended by CRLF"),
        None if buf.len() >= max => Err(too_long),
        None => Ok(None),
    }
}

/// Parses a chunk-size line (without its CRLF): hex digits, optional whitespace, then optional
/// `;extensions`.
pub fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("invalid chunk size");
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or("chunk size too large")?;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err("invalid chunk size");
    }
    Ok(size)
}

/// Parses a Content-Length value: decimal digits, surrounded by optional whitespace.
pub fn content_length(value: &[u8]) -> Result<u64, &'static str> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err("invalid Content-Length");
    }
    v.iter()
        .try_fold(0u64, |n, &b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
        .ok_or("invalid Content-Length")
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(version: u8, fields: &[(&str, &str)]) -> Result<HeadFacts, &'static str> {
        let mut f = HeadFacts::new(Some(version));
        for (k, v) in fields {
            f.field(k.as_bytes(), v.as_bytes())?;
        }
        Ok(f)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = facts(1, &[("Content-Length", "5")]).unwrap();
        assert_eq!(f.framing(false, 200), Framing::Length(5));
        assert!(f.reusable(Framing::Length(5)));
        assert_eq!(f.framing(true, 200), Framing::Length(0));
        assert_eq!(f.framing(false, 304), Framing::Length(0));
        let f = facts(
            1,
            &[
                ("content-length", "5"),
                ("Transfer-Encoding", "gzip, chunked"),
            ],
        )
        .unwrap();
        assert_eq!(f.framing(false, 200), Framing::Chunked);
        assert!(f.transfer_encoded());
        assert!(!f.reusable(Framing::Chunked), "TE beside CL: not reused");
        assert!(facts(1, &[("Transfer-Encoding", "chunked")])
            .unwrap()
            .reusable(Framing::Chunked));
        assert!(facts(0, &[("Transfer-Encoding", "chunked")]).is_err());
        let f = facts(1, &[("Transfer-Encoding", "chunked, gzip")]).unwrap();
        assert_eq!(f.framing(false, 200), Framing::UntilClose);
        assert!(!f.reusable(Framing::UntilClose));
        let f = facts(1, &[]).unwrap();
        assert_eq!(f.framing(false, 200), Framing::UntilClose);
    }

    #[test]
    fn connection_reuse_by_version_and_tokens() {
        let len = Framing::Length(0);
        assert!(!facts(0, &[]).unwrap().reusable(len));
        assert!(facts(0, &[("Connection", "Keep-Alive")])
            .unwrap()
            .reusable(len));
        assert!(!facts(1, &[("Connection", "close")]).unwrap().reusable(len));
        let named = facts(1, &[("Connection", "x-a, keep-alive")]).unwrap();
        assert!(named.names_fields && named.reusable(len));
    }

    #[test]
    fn bad_lengths_are_refused() {
        assert!(facts(1, &[("Content-Length", "1"), ("Content-Length", "2")]).is_err());
        assert!(facts(1, &[("Content-Length", "1"), ("Content-Length", "1")]).is_ok());
        for bad in ["", "-1", "+2", "1 2", "99999999999999999999"] {
            assert!(content_length(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(content_length(b" 42 "), Ok(42));
    }

    /// Decodes a whole chunked body fed in pieces of `step` bytes: its data and trailers.
    fn decode(body: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
        let (mut state, mut buf, mut data) = (Chunked::default(), Vec::new(), Vec::new());
        let mut pieces = body.chunks(step);
        loop {
            match state.next(&buf)? {
                Chunk::Framing(n) => drop(buf.drain(..n)),
                Chunk::Data(n) => data.extend(buf.drain(..n)),
                Chunk::End(n) => return Ok((data, buf.drain(..n).collect())),
                Chunk::More => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Err("ended early"),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";
        for step in 1..body.len() {
            let (data, trailers) = decode(body, step).unwrap();
            assert_eq!(data, b"hello world");
            assert_eq!(trailers, b"x-sum: 11\r\n\r\n");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).unwrap(), (vec![], b"\r\n".to_vec()));
        for bad in [&b"5\r\nhelloX\r\n"[..], b"5\nhello\r\n", b"z\r\n"] {
            assert!(decode(bad, 64).is_err(), "{bad:?}");
        }
        let long = [b"0\r\nx: ".as_slice(), &[b'a'; MAX_TRAILERS], b"\r\n\r\n"].concat();
        assert_eq!(decode(&long, 4096), Err("trailers too large"));
    }

    #[test]
    fn chunk_sizes_and_lines() {
        assert_eq!(chunk_size(b"1a"), Ok(26));
        assert_eq!(chunk_size(b"0;ext=1"), Ok(0));
        assert_eq!(chunk_size(b"A \t;x"), Ok(10));
        for bad in [&b""[..], b"g", b"1 2", b"fffffffffffffffff"] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(line(b"5\r\nhello", 16, "long"), Ok(Some(3)));
        assert_eq!(line(b"5\r", 16, "long"), Ok(None));
        assert!(line(b"5\nhello", 16, "long").is_err());
        assert_eq!(line(b"123456", 4, "long"), Err("long"));
    }
}
