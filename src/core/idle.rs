//! Idleness of a byte stream: an IO wrapper that notes when bytes last moved through it, and a
//! wait that ends once none have for a given time (client connection and tunnel idle timeouts).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether bytes moved, shared by the streams of one connection or tunnel. It counts moves
/// rather than timing them, so the hot path reads no clock: idleness is judged by whoever
/// looks at the count now and then.
#[derive(Debug, Default)]
pub struct Activity {
    /// Reads and writes that moved bytes (atomics so the IO stays `Send`; the streams of one
    /// activity are driven by one task, so a plain load and store suffice).
    moves: AtomicU64,
    /// [`READ_WAITING`] and [`WRITE_PENDING`].
    flags: AtomicU8,
}

/// The last read found nothing to read.
const READ_WAITING: u8 = 1;
/// Bytes were offered for writing since the last flush: a writer (hyper) may still hold some.
const WRITE_PENDING: u8 = 2;

/// Quiet checks per idle period: an idle timeout fires between 1 and 1 1/4 periods after the
/// last move.
const CHECKS: u32 = 4;

impl Activity {
    /// Nothing has moved yet.
    pub fn new() -> Arc<Activity> {
        Arc::default()
    }

    fn touch(&self) {
        self.moves
            .store(self.moves.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// How many reads and writes have moved bytes: a change means activity.
    pub fn moves(&self) -> u64 {
        self.moves.load(Relaxed)
    }

    fn flag(&self, flag: u8, on: bool) {
        let f = self.flags.load(Relaxed);
        let g = if on { f | flag } else { f & !flag };
        if f != g {
            self.flags.store(g, Relaxed);
        }
    }

    /// True when the reader is waiting for bytes and everything written has been flushed: the
    /// stream's user (hyper's HTTP/1 connection) holds nothing half done in its buffers.
    pub fn quiet(&self) -> bool {
        self.flags.load(Relaxed) == READ_WAITING
    }

    /// Ends once no byte has moved for `idle` (checked every quarter of it, so it ends up to a
    /// quarter late); never, without a duration.
    pub async fn idle_for(&self, idle: Option<Duration>) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        let step = (idle / CHECKS).max(Duration::from_millis(1));
        let mut seen = self.moves();
        let mut quiet = 0;
        while quiet < CHECKS {
            tokio::time::sleep(step).await;
            let now = self.moves();
            quiet = if now == seen { quiet + 1 } else { 0 };
            seen = now;
        }
    }
}

/// A stream that notes in its [`Activity`] each read or write that moved bytes. It can also
/// be rewound: bytes read earlier are read again first.
pub struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
    prefix: Bytes,
}

impl<I> Tracked<I> {
    /// Wraps `io`, reporting to `activity`.
    pub fn new(io: I, activity: Arc<Activity>) -> Tracked<I> {
        Tracked {
            io,
            activity,
            prefix: Bytes::new(),
        }
    }

    /// Makes `bytes` the next ones read, ahead of any put back before and not read yet.
    pub fn rewind(&mut self, bytes: Bytes) {
        self.prefix = if self.prefix.is_empty() {
            bytes
        } else {
            [&bytes[..], &self.prefix[..]].concat().into()
        };
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.io
    }

    fn note<T>(&self, r: Poll<io::Result<T>>, moved: bool) -> Poll<io::Result<T>> {
        if moved {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            this.activity.flag(READ_WAITING, false);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        this.activity.flag(READ_WAITING, r.is_pending());
        let moved = buf.filled().len() > before;
        this.note(r, moved)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.flag(WRITE_PENDING, true);
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        let moved = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        this.note(r, moved)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.flag(WRITE_PENDING, true);
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        let moved = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        this.note(r, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if r.is_ready() {
            this.activity.flag(WRITE_PENDING, false);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_move() {
        use tokio::time::Instant;
        let activity = Activity::new();
        let (a, mut peer) = tokio::io::duplex(64);
        let mut a = Tracked::new(a, activity.clone());
        let t0 = Instant::now();
        let mover = async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            peer.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            a.read_exact(&mut b).await.unwrap();
        };
        tokio::join!(activity.idle_for(Some(Duration::from_secs(10))), mover);
        // Virtual time: 10 s after the move at 8 s, at most a quarter period late.
        let took = Instant::now() - t0;
        assert!(took >= Duration::from_secs(18), "{took:?}");
        assert!(took <= Duration::from_millis(20_500), "{took:?}");
        let never = tokio::time::timeout(Duration::from_secs(3600), activity.idle_for(None));
        assert!(never.await.is_err());
    }
}
