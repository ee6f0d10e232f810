//! Access log and request ids. Workers format each line themselves and hand it to one writer
//! thread over a bounded channel (no shared lock per request); the writer batches lines into a
//! buffered file or stdout and flushes whenever the channel runs dry. When the writer falls
//! behind, lines are dropped and counted rather than slowing requests down.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The request id header: kept when the client sends one, generated otherwise.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

/// Longest client-supplied request id that is kept; a longer one is replaced.
const MAX_ID_LEN: usize = 200;

/// Returns the request's id, inserting a new one when it has none (or an unusable one).
pub fn ensure_request_id(h: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        if !v.is_empty() && v.len() <= MAX_ID_LEN && v.to_str().is_ok() {
            return v.clone();
        }
    }
    // 128 random bits as 32 hex digits, formatted without a heap string.
    let mut id = [0u8; 32];
    let bits = u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..));
    for (i, b) in id.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    let v = HeaderValue::from_bytes(&id).expect("hex is a valid header value");
    h.insert(&X_REQUEST_ID, v.clone());
    v
}

/// How access log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Combined-like text: `client - - [time] "METHOD path" status bytes duration backend
    /// attempts request_id`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One finished request, as logged.
#[derive(serde::Serialize)]
pub struct Entry<'a> {
    /// When the request arrived (RFC 3339 UTC).
    pub time: &'a str,
    /// Client socket address (logged as its IP).
    #[serde(serialize_with = "client_ip")]
    pub client: SocketAddr,
    /// Request method.
    pub method: &'a str,
    /// Path and query as the client sent them.
    pub path: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// From arrival to the end of the response body (logged as `duration_ms`).
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// The backend that answered, if any.
    pub backend: Option<String>,
    /// Attempts made at backends (0 when none was tried).
    pub attempts: u32,
    /// The request id.
    pub request_id: &'a str,
}

impl Entry<'_> {
    /// The line in `format`, without a newline.
    pub fn format(&self, format: LogFormat) -> String {
        let ms = self.duration.as_secs_f64() * 1000.0;
        match format {
            LogFormat::Json => serde_json::to_string(self).unwrap_or_default(),
            LogFormat::Text => format!(
                "{} - - [{}] \"{} {}\" {} {} {:.3}ms {} {} {}",
                self.client.ip(),
                self.time,
                self.method,
                self.path.escape_debug(),
                self.status,
                self.bytes,
                ms,
                self.backend.as_deref().unwrap_or("-"),
                self.attempts,
                self.request_id,
            ),
        }
    }
}

fn client_ip<S: serde::Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&a.ip())
}

/// Milliseconds with microsecond precision.
fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_micros() as f64 / 1000.0)
}

/// Where lines go, and in which format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// A file (appended to), or stdout when None.
    pub path: Option<PathBuf>,
    /// Line format.
    pub format: LogFormat,
}

/// The sending side of the access log, shared by all workers.
pub struct AccessLog {
    tx: SyncSender<String>,
    /// Line format.
    pub format: LogFormat,
    /// Lines dropped because the writer fell behind.
    pub dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens the destination and starts the writer thread.
    pub fn start(cfg: &AccessLogConfig) -> anyhow::Result<AccessLog> {
        use anyhow::Context as _;
        let out: Box<dyn Write + Send> = match &cfg.path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open access log {}", p.display()))?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("lbx-access-log".into())
            .spawn(move || write_lines(rx, out))
            .context("cannot start the access log writer")?;
        Ok(AccessLog {
            tx,
            format: cfg.format,
            dropped: Arc::default(),
        })
    }

    /// Queues one line; never blocks.
    pub fn log(&self, entry: &Entry<'_>) {
        match self.tx.try_send(entry.format(self.format)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The writer thread: ends when every sender is gone.
fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        for line in rx.try_iter() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: "2026-11-24T00:00:00.000Z",
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET",
            path: "/a?b=1",
            status: 200,
            bytes: 17,
            duration: Duration::from_micros(1500),
            backend: Some("127.0.0.1:9001".into()),
            attempts: 1,
            request_id: "abc",
        }
    }

    #[test]
    fn json_has_every_field() {
        let v: serde_json::Value = serde_json::from_str(&entry().format(LogFormat::Json)).unwrap();
        for k in [
            "time",
            "client",
            "method",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "backend",
            "attempts",
            "request_id",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["client"], "127.0.0.1");
    }

    #[test]
    fn text_is_one_line() {
        assert_eq!(
            entry().format(LogFormat::Text),
            "127.0.0.1 - - [2026-11-24T00:00:00.000Z] \"GET /a?b=1\" 200 17 1.500ms 127.0.0.1:9001 1 abc"
        );
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        let made = ensure_request_id(&mut h);
        assert_eq!(made.len(), 32);
        assert_eq!(h[&X_REQUEST_ID], made);
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("mine"));
        assert_eq!(ensure_request_id(&mut h), "mine");
    }
}
