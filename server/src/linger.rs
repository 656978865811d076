//! Lingering close: a connection the server is done with is not closed
//! while its peer may still be reading what was sent.
//!
//! When HTTP/2 ends a connection (graceful shutdown, or the client went
//! away), hyper flushes the last frames, shuts the write side (FIN) and
//! drops the socket. A client that is still reading the end of a large
//! result keeps sending WINDOW_UPDATE frames as it reads; arriving at a
//! closed socket they make the kernel answer RST, and the client's kernel
//! then throws away whatever it had received and not yet handed to the
//! client: the tail of the result, which the server had sent in full.
//! (Seen in CI: a 200,000-row stream cut at 198,657 rows when SIGTERM came
//! mid-stream; the client saw a reset connection.)
//!
//! The remedy is the one nginx (`lingering_close`) and Go's net/http
//! (`closeWriteAndWait`) use: after the write side is shut, keep reading and
//! discarding what the peer sends until it closes its side, for a bounded
//! time, and only then close the socket. [`Lingering`] wraps each accepted
//! TCP stream (under TLS too) and does this when hyper drops it;
//! [`Drains::wait`] lets a graceful shutdown wait for the drains before
//! the process exits (which would close the sockets just the same).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The longest a closed connection is drained, in all.
pub const LINGER_MAX: Duration = Duration::from_secs(10);
/// The longest a drain waits for the peer's next bytes (or its FIN).
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// Hands out [`Lingering`] streams; each one's drain holds a clone of the
/// sender that [`Drains::wait`] waits on.
#[derive(Clone)]
pub struct Tracker(mpsc::Sender<()>);

/// Waits for the drains of every stream a [`Tracker`] wrapped.
pub struct Drains(mpsc::Receiver<()>);

/// A tracker for accepted streams and the wait for their drains.
pub fn tracked() -> (Tracker, Drains) {
    let (sender, receiver) = mpsc::channel(1);
    (Tracker(sender), Drains(receiver))
}

impl Tracker {
    /// Wraps an accepted stream so that its close lingers.
    pub fn wrap(&self, stream: TcpStream) -> Lingering {
        Lingering {
            info: stream.connect_info(),
            stream: Some(stream),
            pending: Some(self.0.clone()),
        }
    }
}

impl Drains {
    /// Waits until every tracker is gone and every stream it wrapped has
    /// been dropped and drained (each drain is bounded by [`LINGER_MAX`]).
    pub async fn wait(mut self) {
        // Nothing is ever sent: `recv` answers `None` once the last sender
        // (a tracker, or a stream or its drain) is gone.
        while self.0.recv().await.is_some() {}
    }
}

/// An accepted TCP stream whose close lingers (see the module's doc).
pub struct Lingering {
    /// `Some` until dropped.
    stream: Option<TcpStream>,
    info: TcpConnectInfo,
    /// Keeps [`Drains::wait`] waiting until this stream's drain is done.
    pending: Option<mpsc::Sender<()>>,
}

impl Lingering {
    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl Connected for Lingering {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(stream), pending) = (self.stream.take(), self.pending.take()) else {
            return;
        };
        // Dropped outside a runtime (never in the server): closed at once.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            drain(stream).await;
            drop(pending);
        });
    }
}

/// Shuts `stream`'s write side (if hyper has not) and reads until the peer
/// closes its side, an error, or the bounds; then the socket closes.
async fn drain(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER_MAX, async {
        loop {
            match tokio::time::timeout(LINGER_IDLE, stream.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => continue,
                // FIN, an error, or a peer that went quiet.
                _ => break,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpSocket};

    const SENT: usize = 128 * 1024;

    /// What the peer reads when the server writes `SENT` bytes, shuts its
    /// write side and drops the stream (as hyper does), while the peer has
    /// not read yet and then sends a few bytes (a WINDOW_UPDATE) before
    /// reading: the number of bytes read, and whether the read ended in an
    /// error rather than the end of the stream.
    async fn peer_reads(lingering: bool) -> (usize, bool) {
        let socket = TcpSocket::new_v4().unwrap();
        // Inherited by the accepted stream: room in the kernel for all it
        // writes, so the server is done writing before the peer reads.
        socket.set_send_buffer_size(1 << 20).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = socket.listen(1).unwrap();
        let address = listener.local_addr().unwrap();
        let peer_socket = TcpSocket::new_v4().unwrap();
        // A small window: most of what the server writes waits in the
        // server's kernel, not the peer's.
        peer_socket.set_recv_buffer_size(4096).unwrap();
        let mut peer = peer_socket.connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let (tracker, drains) = tracked();
        let (written, on_written) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut stream = tracker.wrap(accepted);
            stream.write_all(&vec![7u8; SENT]).await.unwrap();
            stream.shutdown().await.unwrap();
            if lingering {
                drop(stream);
            } else {
                // What dropping a plain TcpStream does: close at once.
                drop(stream.stream.take());
                drop(stream);
            }
            drop(tracker);
            let _ = written.send(());
        });
        tokio::time::timeout(Duration::from_secs(10), on_written)
            .await
            .expect("the server's kernel takes all it writes")
            .unwrap();
        peer.write_all(&[0u8; 13]).await.unwrap();
        let mut read = 0;
        let mut buf = vec![0u8; 65536];
        let broken = loop {
            match peer.read(&mut buf).await {
                Ok(0) => break false,
                Ok(n) => read += n,
                Err(_) => break true,
            }
        };
        drop(peer);
        tokio::time::timeout(Duration::from_secs(10), drains.wait())
            .await
            .expect("the drain ends once the peer has closed");
        (read, broken)
    }

    #[tokio::test]
    async fn a_peer_that_writes_after_the_close_still_reads_everything_sent() {
        // The failure this module prevents, shown on a plain close: the
        // peer's late bytes reset the connection and what was still in
        // the server's kernel is lost.
        let (read, broken) = peer_reads(false).await;
        assert!(
            broken && read < SENT,
            "plain close: read {read} of {SENT}, broken {broken}"
        );
        // A lingering close: every byte, then the end of the stream.
        assert_eq!(peer_reads(true).await, (SENT, false));
    }
}
