//! PlanetScale's edge in front of the real vtgate, so that PlanetScale's own
//! Go clients (airbyte-source) reach a [`super::Vitess`] the way they reach
//! PlanetScale: a host without a port, MySQL on 3306 and gRPC on 443, TLS
//! verified for a `*.connect.psdb.cloud` name, and HTTP Basic auth on every
//! gRPC call.
//!
//! vtgate does none of that by itself. It listens where the harness tells it
//! to (vtcombo runs as `nobody` under root, and cannot bind ports below 1024),
//! and its gRPC auth plugins are `static` (`username` and `password`
//! metadata) and `mtls`; it has no Basic auth. The edge, on one address:
//! - **MySQL, `IP:3306`**: a byte relay to vtgate's MySQL port. TLS is
//!   vtgate's own, end to end (the harness certificate names
//!   `*.connect.psdb.cloud`); `db@primary` and the `SHOW` statements are
//!   vtgate's.
//! - **gRPC, `IP:443`**: TLS (HTTP/2) ends here, with the same certificate.
//!   A call's `authorization: Basic <base64 user:password>` becomes the
//!   `username` and `password` metadata of vtgate's static auth, which
//!   decides; everything else about the call (path, headers, DATA frames,
//!   trailers, snappy compression) travels unchanged, over one TLS
//!   connection to vtgate per client connection. Messages are never
//!   decoded, so no field is lost or re-encoded on the way.
//!
//! It lives in the runtime that started it and stops when dropped.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Where PlanetScale's clients dial MySQL on a host given without a port.
pub const MYSQL_PORT: u16 = 3306;
/// Where they dial gRPC (and airbyte-source's `check` sends an HTTPS GET).
pub const GRPC_PORT: u16 = 443;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("binding {addr}: {source} (ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the edge serves TLS only: start the Vitess with TLS on")]
    NoTls,
    #[error("reading {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What an edge fronts, and with which certificate.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    /// The address both ports listen on.
    pub ip: IpAddr,
    /// vtgate's MySQL front.
    pub mysql_upstream: SocketAddr,
    /// vtgate's gRPC front (TLS, verified against `ca_file`).
    pub grpc_upstream: SocketAddr,
    /// The certificate the edge serves on 443, and its key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA vtgate's certificate is verified against.
    pub ca_file: PathBuf,
}

/// A running edge; dropping it closes both ports and every connection.
pub struct Edge {
    ip: IpAddr,
    /// The two accept loops; each owns the tasks of its connections, so
    /// aborting a loop (on drop) ends those too.
    _tasks: JoinSet<()>,
}

impl Edge {
    /// Binds `IP:3306` and `IP:443` and serves until dropped. Call within a
    /// Tokio runtime; the edge's tasks live in it.
    pub async fn start(spec: EdgeSpec) -> Result<Edge, EdgeError> {
        let grpc = Arc::new(GrpcRelay::new(&spec)?);
        let mysql_addr = SocketAddr::new(spec.ip, MYSQL_PORT);
        let grpc_addr = SocketAddr::new(spec.ip, GRPC_PORT);
        let bind = |addr: SocketAddr| async move {
            crate::listener::bind(addr)
                .await
                .map_err(|source| EdgeError::Bind { addr, source })
        };
        let mysql_listener = bind(mysql_addr).await?;
        let grpc_listener = bind(grpc_addr).await?;
        let mut tasks = JoinSet::new();
        let upstream = spec.mysql_upstream;
        tasks.spawn(accept_loop(mysql_listener, move |tcp| {
            relay_mysql(tcp, upstream)
        }));
        tasks.spawn(accept_loop(grpc_listener, move |tcp| {
            grpc.clone().serve(tcp)
        }));
        Ok(Edge {
            ip: spec.ip,
            _tasks: tasks,
        })
    }

    /// The address a client's host name must resolve to.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn mysql_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, MYSQL_PORT)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, GRPC_PORT)
    }
}

/// Accepts connections and serves each in a task of its own, until aborted.
async fn accept_loop<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next() => continue,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let fut = serve(tcp);
                conns.spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(%peer, "edge connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin.
                tracing::warn!("edge: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Relays one MySQL connection's bytes both ways until either side closes.
async fn relay_mysql(mut client: TcpStream, upstream: SocketAddr) -> Result<(), String> {
    let mut server = TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connecting to vtgate's MySQL front {upstream}: {e}"))?;
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut server)
        .await
        .map(|_| ())
        .map_err(|e| format!("relaying MySQL: {e}"))
}

/// The gRPC side: TLS toward clients, TLS toward vtgate.
struct GrpcRelay {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    upstream: SocketAddr,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> EdgeError + '_ {
    move |e| EdgeError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl GrpcRelay {
    fn new(spec: &EdgeSpec) -> Result<GrpcRelay, EdgeError> {
        let chain = CertificateDer::pem_file_iter(&spec.cert_file)
            .map_err(pem_error(&spec.cert_file))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error(&spec.cert_file))?;
        let key =
            PrivateKeyDer::from_pem_file(&spec.key_file).map_err(pem_error(&spec.key_file))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&spec.ca_file).map_err(pem_error(&spec.ca_file))? {
            roots.add(ca.map_err(pem_error(&spec.ca_file))?)?;
        }
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // grpc-go servers refuse TLS without ALPN h2.
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(GrpcRelay {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            upstream: spec.grpc_upstream,
        })
    }

    /// Serves one client connection: TLS, then HTTP/2, each call relayed
    /// over one HTTP/2 connection to vtgate opened for this client.
    async fn serve(self: Arc<Self>, tcp: TcpStream) -> Result<(), String> {
        let tls = self
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        // A vtgate that cannot be reached answers each call UNAVAILABLE,
        // as a real edge would, instead of a reset connection.
        let (upstream, _driver) = match self.connect().await {
            Ok((send, driver)) => (Ok(send), Some(driver)),
            Err(e) => (Err(Arc::<str>::from(e)), None),
        };
        let authority = self.upstream.to_string();
        let service = hyper::service::service_fn(move |req| {
            let upstream = upstream.clone();
            let authority = authority.clone();
            async move { Ok::<_, Infallible>(relay_call(req, upstream, &authority).await) }
        });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await
            .map_err(|e| format!("HTTP/2: {e}"))
    }

    /// One HTTP/2 connection to vtgate, and the guard of the task driving
    /// it (aborted with the client connection).
    async fn connect(&self) -> Result<(SendRequest<Incoming>, AbortOnDrop), String> {
        let upstream = self.upstream;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("{what} vtgate's gRPC front {upstream}: {e}")
        };
        let tcp = TcpStream::connect(upstream)
            .await
            .map_err(|e| fail("connecting to", &e))?;
        let _ = tcp.set_nodelay(true);
        // The harness certificate names 127.0.0.1, where vtgate listens.
        let name = ServerName::IpAddress(upstream.ip().into());
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| fail("TLS with", &e))?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail("HTTP/2 with", &e))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("edge: connection to vtgate ended: {e}");
            }
        });
        Ok((send, AbortOnDrop(driver)))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Relays one call to vtgate with Basic auth turned into static auth.
async fn relay_call(
    mut req: Request<Incoming>,
    upstream: Result<SendRequest<Incoming>, Arc<str>>,
    authority: &str,
) -> Response<Reply> {
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(e) => return grpc_status(UNAVAILABLE, &format!("edge: {e}")),
    };
    basic_to_static(req.headers_mut());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    match Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return grpc_status(INTERNAL, &format!("edge: request path: {e}")),
    }
    match upstream.send_request(req).await {
        Ok(resp) => resp.map(Reply::Relayed),
        Err(e) => grpc_status(UNAVAILABLE, &format!("edge: relaying to vtgate: {e}")),
    }
}

/// `authorization: Basic <base64 user:password>` becomes vtgate's static
/// auth metadata (`username`, `password`). Any other header stays as it
/// is: vtgate's static auth refuses a call without a login.
fn basic_to_static(headers: &mut HeaderMap) {
    use base64::Engine;
    let login = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest)
        })
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some((user, password)) = login.as_deref().and_then(|l| l.split_once(':')) else {
        return;
    };
    let (Ok(user), Ok(password)) = (HeaderValue::from_str(user), HeaderValue::from_str(password))
    else {
        return;
    };
    headers.remove(AUTHORIZATION);
    headers.insert("username", user);
    headers.insert("password", password);
}

const INTERNAL: u8 = 13;
const UNAVAILABLE: u8 = 14;

/// A trailers-only gRPC answer from the edge itself.
fn grpc_status(code: u8, message: &str) -> Response<Reply> {
    let mut resp = Response::new(Reply::Empty);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// gRPC's `grpc-message` encoding: printable ASCII but `%` as it is, every
/// other byte as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response body: vtgate's, relayed frame by frame (trailers included),
/// or none for the edge's own answers.
enum Reply {
    Relayed(Incoming),
    Empty,
}

impl http_body::Body for Reply {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Reply::Relayed(body) => Pin::new(body).poll_frame(cx),
            Reply::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Relayed(body) => body.is_end_stream(),
            Reply::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Reply::Relayed(body) => body.size_hint(),
            Reply::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_becomes_static_auth() {
        let mut h = HeaderMap::new();
        // base64("vt_user:pa:ss")
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dnRfdXNlcjpwYTpzcw=="),
        );
        h.insert("grpc-encoding", HeaderValue::from_static("snappy"));
        basic_to_static(&mut h);
        assert_eq!(h.get("username").expect("username"), "vt_user");
        assert_eq!(h.get("password").expect("password"), "pa:ss");
        assert!(h.get(AUTHORIZATION).is_none());
        assert_eq!(h.get("grpc-encoding").expect("encoding"), "snappy");
    }

    #[test]
    fn other_authorization_is_left_for_vtgate_to_refuse() {
        for value in ["Bearer abc", "Basic !!!", "Basic bm9jb2xvbg=="] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(value));
            basic_to_static(&mut h);
            assert!(h.get("username").is_none(), "{value}");
            assert_eq!(h.get(AUTHORIZATION).expect("authorization"), value);
        }
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a 100% é"), "a 100%25 %C3%A9");
    }
}
