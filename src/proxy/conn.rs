//! Per-connection bookkeeping for downstream timeouts: is the connection busy, idle, or in the
//! middle of receiving a request head?
//!
//! Owns `Activity` (shared by the connection's IO wrapper, its requests and its watcher),
//! `TrackedIo` (notes the first byte of each request head) and `Activity::expired`, which
//! resolves when the header-read timeout (slowloris) or the idle timeout fires. Invariants: a
//! connection with a request in flight or a response body still streaming is never idle; the
//! header clock starts at the first byte of a request head and stops when the request reaches
//! the proxy.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a connection's watcher fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head took longer than the header-read timeout: close at once.
    HeaderRead,
    /// No request for the idle timeout: close gracefully.
    Idle,
}

#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    busy: AtomicUsize,
    last_ms: AtomicU64,
    /// 0 = no head being received; else start time in ms + 1.
    head_started: AtomicU64,
    head_notify: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            busy: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            head_notify: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Marks a request as in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.last_ms.store(self.now_ms(), Ordering::Release);
        BusyGuard(self.clone())
    }

    fn on_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Release);
            self.head_notify.notify_one();
        }
    }

    /// Resolves when a timeout fires. Cancel-safe: dropping it loses nothing.
    pub async fn expired(&self, header_read: Duration, idle: Duration) -> Expiry {
        let header_ms = u64::try_from(header_read.as_millis()).unwrap_or(u64::MAX);
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let now = self.now_ms();
            let head = self.head_started.load(Ordering::Acquire);
            let busy = self.busy.load(Ordering::Acquire) > 0;
            let deadline = if busy {
                now.saturating_add(idle_ms)
            } else if head > 0 {
                let d = (head - 1).saturating_add(header_ms);
                if now >= d {
                    return Expiry::HeaderRead;
                }
                d
            } else {
                let d = self.last_ms.load(Ordering::Acquire).saturating_add(idle_ms);
                if now >= d {
                    return Expiry::Idle;
                }
                d
            };
            tokio::select! {
                _ = tokio::time::sleep_until(self.at(deadline)) => {}
                _ = self.head_notify.notified() => {}
            }
        }
    }
}

/// Held while a request is in flight (and while its response body streams).
#[derive(Debug)]
pub struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wraps the downstream socket to notice when a request head starts arriving.
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        TrackedIo { inner, activity }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_when_not_busy() {
        let a = Activity::new();
        let guard = a.begin();
        let fired = tokio::time::timeout(
            Duration::from_secs(5),
            a.expired(Duration::from_secs(1), Duration::from_secs(2)),
        )
        .await;
        assert!(fired.is_err(), "busy connection must not expire");
        drop(guard);
        let e = a
            .expired(Duration::from_secs(1), Duration::from_secs(2))
            .await;
        assert_eq!(e, Expiry::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn header_clock_starts_at_first_byte() {
        let a = Activity::new();
        let started = Instant::now();
        let watcher = a.clone();
        let task = tokio::spawn(async move {
            watcher
                .expired(Duration::from_secs(1), Duration::from_secs(60))
                .await
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        a.on_read();
        let e = task.await.unwrap();
        assert_eq!(e, Expiry::HeaderRead);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}
