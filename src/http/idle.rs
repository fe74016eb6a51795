//! The write side of a connection, bounded in idle time: a connection whose writes
//! make no progress for [`ConnectionLimits::idle_timeout`](super::ConnectionLimits)
//! fails with `TimedOut`, so a client that stops reading a response (a clone's pack,
//! say) does not hold its task and buffers forever.
//!
//! Only the time the connection is blocked on the client counts: the timer is armed
//! when a write (or flush, or shutdown) cannot go on, and disarmed by the next one that
//! can. A reader that is slow but keeps making room is never cut; time the server
//! spends on its own work between writes is not the client's either. Room is what the
//! kernel reports: a full socket turns writable again once about a third of its send
//! buffer (which grows with the connection's speed) has been taken, so the reader must
//! take that much within the limit. It wraps the TCP stream, under TLS when that is
//! on, so it sees every byte either way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner`, whose writes fail when they stall for longer than `limit`.
#[derive(Debug)]
pub(super) struct WriteTimeout<T> {
    inner: T,
    /// How long a write may stay blocked (`None`: for ever).
    limit: Option<Duration>,
    /// Whether a write is blocked, the timer then running.
    stalled: bool,
    /// Fires when a stalled write has waited `limit`: made once, reset per stall.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeout<T> {
    pub(super) fn new(inner: T, limit: Option<Duration>) -> Self {
        WriteTimeout {
            inner,
            limit,
            stalled: false,
            timer: None,
        }
    }

    /// What a write (or flush or shutdown) of `inner` answered, judged: progress
    /// disarms the timer, a stall arms it, and a stall past the limit is an error.
    fn judge<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        let Poll::Pending = poll else {
            self.stalled = false;
            return poll;
        };
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let deadline = Instant::now() + limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.stalled {
            self.stalled = true;
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.stalled = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client took none of the response for {}s",
                        limit.as_secs_f64()
                    ),
                )))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.judge(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.judge(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.judge(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.judge(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes `total` bytes to `server` while `reader` reads the other end; what the
    /// writes came to, and how much the reader got.
    async fn send(
        limit: Option<Duration>,
        total: usize,
        server: tokio::io::DuplexStream,
        reader: impl Future<Output = (usize, tokio::io::DuplexStream)> + Send + 'static,
    ) -> (io::Result<()>, usize) {
        let reading = tokio::spawn(reader);
        let mut conn = WriteTimeout::new(server, limit);
        let chunk = vec![7u8; 16 << 10];
        let mut sent = 0;
        let result = async {
            while sent < total {
                sent += conn.write(&chunk).await?;
            }
            conn.shutdown().await
        }
        .await;
        drop(conn);
        let (got, _pipe) = reading.await.expect("reader");
        (result, got)
    }

    /// Reads once every `every`, `chunk` bytes at most, until the end or `stop_after`
    /// reads; then stops reading but stays connected (the pipe is handed back open).
    async fn reader(
        mut pipe: tokio::io::DuplexStream,
        chunk: usize,
        every: Duration,
        stop_after: usize,
    ) -> (usize, tokio::io::DuplexStream) {
        let mut got = 0;
        let mut buf = vec![0u8; chunk];
        for _ in 0..stop_after {
            tokio::time::sleep(every).await;
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        (got, pipe)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_gets_everything() {
        let (client, server) = tokio::io::duplex(64 << 10);
        let (result, got) = send(
            Some(Duration::from_secs(2)),
            1 << 20,
            server,
            reader(client, 32 << 10, Duration::from_millis(1500), usize::MAX),
        )
        .await;
        result.expect("a reader that keeps reading is not cut");
        assert_eq!(got, 1 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_is_cut_off() {
        let (client, server) = tokio::io::duplex(64 << 10);
        let started = Instant::now();
        let (result, got) = send(
            Some(Duration::from_secs(2)),
            1 << 20,
            server,
            reader(client, 32 << 10, Duration::from_millis(100), 4),
        )
        .await;
        let e = result.expect_err("a reader that stops is cut");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(got < 1 << 20);
        // Four reads, then the limit.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_waits() {
        let (client, server) = tokio::io::duplex(64 << 10);
        let sending = send(
            None,
            1 << 20,
            server,
            reader(client, 32 << 10, Duration::from_millis(100), 4),
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(600), sending)
                .await
                .is_err(),
            "without a limit the write waits for the reader"
        );
    }

    /// Time spent between writes (the server at work) does not count, and each stall
    /// has its own limit.
    #[tokio::test(start_paused = true)]
    async fn time_between_writes_is_not_the_clients() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut conn = WriteTimeout::new(server, Some(Duration::from_secs(2)));
        let reading = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 4096];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        for _ in 0..5 {
            // Stalls about a second, each time.
            conn.write_all(&[1u8; 8192]).await.expect("write");
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        conn.shutdown().await.expect("shutdown");
        drop(conn);
        assert_eq!(reading.await.expect("reader"), 5 * 8192);
    }
}
