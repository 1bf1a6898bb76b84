//! Binding the fronts' listeners, shared by the emulator's gRPC and MySQL
//! fronts and the real Vitess harness's edge: a fixed port that a server
//! stopped a moment ago still holds (a restart in a test, a demo run again)
//! is retried for a few seconds before the bind fails.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// How long a fixed port held by a just-stopped server is waited for.
const TRIES: u32 = 50;
const PAUSE: Duration = Duration::from_millis(100);

/// Binds `addr`, retrying a fixed port that is still in use.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && tries < TRIES =>
            {
                tries += 1;
                tokio::time::sleep(PAUSE).await;
            }
            other => return other,
        }
    }
}
