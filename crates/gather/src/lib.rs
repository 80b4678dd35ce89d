//! Writes of an HTTP/2 connection, gathered. A message into a large room answers hundreds of
//! parked syncs at once, many of them multiplexed over the same connections. A connection's task
//! runs right after each stream that hands it a response, so every answer would leave in a
//! write of its own: one system call, and over loopback one pass through the receiver's network
//! stack, per answer. Here a flush first steps back once behind the tasks already waiting to
//! run, so that the answers they give meanwhile leave together in one write. The load generator
//! gathers its requests the same way.
//!
//! HTTP/1.1 carries one response at a time: a server connection that does not open with the
//! HTTP/2 preface is passed straight through.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Gathered bytes beyond which a write goes out without waiting for the flush.
const HIGH_WATER: usize = 64 * 1024;
/// A buffer larger than this is given back once drained, so that idle connections stay small.
const KEEP_CAPACITY: usize = 16 * 1024;
/// How HTTP/2 connections open (RFC 9113, section 3.4).
const PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The first bytes read so far (this many) begin the HTTP/2 preface.
    Unknown(usize),
    /// HTTP/1.1: writes go straight through.
    Direct,
    /// HTTP/2: writes are gathered until a flush that has stepped back once.
    Gather,
}

/// A connection whose writes wait for the next flush (see the crate's documentation).
pub struct Gathered<T> {
    io: T,
    mode: Mode,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
    /// Whether the pending flush has stepped back already.
    stepped_back: bool,
}

impl<T> Gathered<T> {
    /// A server's connection: gathered if it opens with the HTTP/2 preface.
    pub fn detect(io: T) -> Self {
        Self::with_mode(io, Mode::Unknown(0))
    }

    /// A client's HTTP/2 connection: always gathered.
    pub fn always(io: T) -> Self {
        Self::with_mode(io, Mode::Gather)
    }

    fn with_mode(io: T, mode: Mode) -> Self {
        Self {
            io,
            mode,
            buf: Vec::new(),
            written: 0,
            stepped_back: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Gathered<T> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.pending() >= HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            self.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gathered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Mode::Unknown(seen) = this.mode {
            // The preface may arrive over several reads.
            let read = &buf.filled()[before..];
            let n = read.len().min(PREFACE_START.len() - seen);
            this.mode = if read[..n] != PREFACE_START[seen..seen + n] {
                Mode::Direct
            } else if seen + n == PREFACE_START.len() {
                Mode::Gather
            } else {
                Mode::Unknown(seen + n)
            };
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gathered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.mode != Mode::Gather {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.poll_gather(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.mode != Mode::Gather {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        this.poll_gather(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // Gathering takes any number of slices; passing through, the socket does too.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending() > 0 {
            if !this.stepped_back {
                // Woken at once, the connection's task runs again after the tasks already queued
                // on this thread; the answers they give meanwhile join this write.
                this.stepped_back = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        this.stepped_back = false;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Gathered<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (Gathered::detect(a), b)
    }

    /// A server connection that has read the start of the HTTP/2 preface.
    async fn http2_pair() -> (Gathered<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (mut server, mut client) = pair();
        client.write_all(PREFACE_START).await.unwrap();
        let mut preface = [0u8; PREFACE_START.len()];
        server.read_exact(&mut preface).await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn http2_writes_wait_for_the_flush_and_leave_together() {
        let (mut server, mut client) = http2_pair().await;
        server.write_all(b"one ").await.unwrap();
        server.write_all(b"two").await.unwrap();
        let mut got = [0u8; 7];
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), client.read(&mut got))
                .await
                .is_err(),
            "nothing leaves before the flush"
        );
        server.flush().await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
    }

    #[tokio::test]
    async fn http1_writes_go_straight_through() {
        let (mut server, mut client) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        server.read_exact(&mut request).await.unwrap();
        server.write_all(b"HTTP/1.1 200 OK").await.unwrap();
        let mut got = [0u8; 15];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn a_request_is_told_from_the_preface_over_several_reads() {
        for (first, second, gathered) in [
            (&b"PR"[..], &b"I * HTTP/2.0\r\n"[..], true),
            (&b"P"[..], &b"UT /x HTTP/1.1\r\n"[..], false),
        ] {
            let (mut server, mut client) = pair();
            let mut got = vec![0u8; first.len() + second.len()];
            client.write_all(first).await.unwrap();
            server.read_exact(&mut got[..first.len()]).await.unwrap();
            client.write_all(second).await.unwrap();
            server.read_exact(&mut got[first.len()..]).await.unwrap();
            server.write_all(b"answer").await.unwrap();
            let mut answer = [0u8; 6];
            let early = tokio::time::timeout(
                std::time::Duration::from_millis(20),
                client.read(&mut answer),
            )
            .await;
            assert_eq!(
                early.is_err(),
                gathered,
                "held until the flush only if HTTP/2"
            );
        }
    }

    #[tokio::test]
    async fn a_large_backlog_is_written_before_the_flush() {
        let (mut server, mut client) = http2_pair().await;
        let chunk = vec![7u8; HIGH_WATER];
        server.write_all(&chunk).await.unwrap();
        server.write_all(b"x").await.unwrap();
        let mut got = vec![0u8; HIGH_WATER];
        client.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_gathered() {
        let (mut server, mut client) = http2_pair().await;
        server.write_all(b"goodbye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"goodbye");
    }
}
