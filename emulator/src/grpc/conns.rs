//! Connection tracking: every accepted gRPC connection is registered by
//! peer address while it is open, so the drop-connection fault can reset
//! the one under a stream, and a stopping emulator can reset them all, as a
//! crashed server would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Accepted gRPC connections that are still open, by peer address. Entries
/// are removed (under the lock) before their socket closes, so a registered
/// fd always belongs to its connection.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    fds: Mutex<HashMap<SocketAddr, RawFd>>,
}

impl ConnRegistry {
    /// Resets (RST) the connection from `peer`, or every connection.
    pub fn reset(&self, peer: Option<SocketAddr>) {
        let Ok(map) = self.fds.lock() else { return };
        for (p, fd) in map.iter() {
            if peer.is_some_and(|want| want != *p) {
                continue;
            }
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: the fd is open: its TrackedStream removes it from this
            // map under the same lock before closing it.
            unsafe {
                libc::setsockopt(
                    *fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// A gRPC connection's TCP stream that stays registered while it is open.
pub struct TrackedStream {
    inner: tokio::net::TcpStream,
    peer: SocketAddr,
    registry: Arc<ConnRegistry>,
}

impl TrackedStream {
    pub fn new(
        inner: tokio::net::TcpStream,
        peer: SocketAddr,
        registry: Arc<ConnRegistry>,
    ) -> Self {
        use std::os::fd::AsRawFd;
        if let Ok(mut m) = registry.fds.lock() {
            m.insert(peer, inner.as_raw_fd());
        }
        TrackedStream {
            inner,
            peer,
            registry,
        }
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Ok(mut m) = self.registry.fds.lock() {
            if m.get(&self.peer) == Some(&self.inner.as_raw_fd()) {
                m.remove(&self.peer);
            }
        }
    }
}

impl tokio::io::AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TrackedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.inner.local_addr().ok(),
            remote_addr: Some(self.peer),
        }
    }
}
