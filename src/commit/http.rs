//! The Import API over HTTP/1.1: one kept-alive connection, plain TCP for
//! `http://` and rustls (webpki roots) for `https://`.
//!
//! Built on hyper's connection-level client, which tonic already brings
//! into the tree, rather than a full client stack: one endpoint, one
//! request at a time, no redirects, no cookies. Retrying is the caller's
//! business; this module only reports what happened.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::config::Secret;

/// The batch endpoint, under the configured base URL.
pub const BATCH_PATH: &str = "/v2/import/batch";

/// What went wrong below HTTP: worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {endpoint} failed: {source}")]
    Tls {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {endpoint} failed: {source}")]
    Http {
        endpoint: String,
        source: hyper::Error,
    },
    /// Every part was validated in `new`, so this should not happen.
    #[error("cannot build the request: {0}")]
    Build(String),
    #[error("no answer from {endpoint} within {secs} s")]
    Timeout { endpoint: String, secs: u64 },
}

/// Settings the client cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("Import API URL `{url}` {problem}; give a base URL like https://api.stitchdata.com")]
    Url { url: String, problem: &'static str },
    #[error("the Import API token has characters an HTTP header cannot carry (control characters or non-ASCII); check the token")]
    Token,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<Duration>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The Import API client.
pub struct ImportApi {
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    path: String,
    authorization: HeaderValue,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for ImportApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportApi")
            .field("endpoint", &self.endpoint())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ImportApi {
    pub fn new(url: &str, token: &Secret, timeout: Duration) -> Result<ImportApi, SetupError> {
        let bad = |problem| SetupError::Url {
            url: url.to_string(),
            problem,
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = format!("{}{BATCH_PATH}", uri.path().trim_end_matches('/'));
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| SetupError::Token)?;
        authorization.set_sensitive(true);
        let tls = if https {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|_| bad("cannot be reached: no TLS protocol version available"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| bad("has a host name TLS cannot verify"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(ImportApi {
            tls,
            host,
            port,
            authority: authority.as_str().to_string(),
            path,
            authorization,
            timeout,
            conn: None,
        })
    }

    /// `host:port`, for messages.
    pub fn endpoint(&self) -> String {
        crate::config::Endpoint {
            host: self.host.clone(),
            port: self.port,
        }
        .to_string()
    }

    /// POSTs one batch body and reads the whole answer, within the timeout.
    pub async fn post_batch(&mut self, body: Bytes) -> Result<Reply, TransportError> {
        let secs = self.timeout.as_secs();
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(r) => r,
            Err(_) => {
                // The connection is in an unknown state: never reuse it.
                self.conn = None;
                Err(TransportError::Timeout {
                    endpoint: self.endpoint(),
                    secs,
                })
            }
        }
    }

    async fn exchange(&mut self, body: Bytes) -> Result<Reply, TransportError> {
        let mut sender = match self.conn.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let req = Request::post(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("tap-planetscale/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body));
        let req = req.map_err(|e| TransportError::Build(e.to_string()))?;
        let http_err = |source| TransportError::Http {
            endpoint: self.endpoint(),
            source,
        };
        let resp = sender.send_request(req).await.map_err(http_err)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes();
        self.conn = Some(sender);
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let endpoint = self.endpoint();
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| TransportError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| TransportError::Tls {
                        endpoint: endpoint.clone(),
                        source,
                    })?,
            ),
            None => Box::new(tcp),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|source| TransportError::Http {
                endpoint: endpoint.clone(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "import API connection closed");
            }
        });
        debug!(endpoint = %endpoint, "connected to the import API");
        Ok(sender)
    }
}

/// What an HTTP status means for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the batch is in; never send it again.
    Accepted,
    /// 408, 429 and 5xx: the server may take it later.
    Retry,
    /// Any other status: sending it again cannot help.
    Reject,
}

pub fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted,
        408 | 429 | 500..=599 => Outcome::Retry,
        _ => Outcome::Reject,
    }
}

/// The server's explanation: the `message` (and `error`) of a JSON answer
/// such as the Import API's `{"status": …, "message": …}`, else the text,
/// shortened to one line.
pub fn server_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        error: Option<String>,
    }
    let text = match serde_json::from_slice::<Answer>(body) {
        Ok(Answer {
            message: Some(m), ..
        }) => m,
        Ok(Answer { error: Some(e), .. }) => e,
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".into();
    }
    match one_line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let cases = [
            (200, Outcome::Accepted),
            (201, Outcome::Accepted),
            (202, Outcome::Accepted),
            (204, Outcome::Accepted),
            (301, Outcome::Reject),
            (400, Outcome::Reject),
            (401, Outcome::Reject),
            (403, Outcome::Reject),
            (404, Outcome::Reject),
            (408, Outcome::Retry),
            (413, Outcome::Reject),
            (422, Outcome::Reject),
            (429, Outcome::Retry),
            (500, Outcome::Retry),
            (502, Outcome::Retry),
            (503, Outcome::Retry),
            (504, Outcome::Retry),
        ];
        for (status, want) in cases {
            assert_eq!(classify(status), want, "{status}");
        }
    }

    #[test]
    fn server_messages_are_one_line() {
        let long = "y".repeat(400);
        let cases: Vec<(&[u8], String)> = vec![
            (
                br#"{"status":"error","message":"Record 0 did not conform to schema"}"#,
                "Record 0 did not conform to schema".into(),
            ),
            (br#"{"error":"Not authorized"}"#, "Not authorized".into()),
            (b"Bad\r\n  Gateway", "Bad Gateway".into()),
            (b"", "(empty body)".into()),
            (long.as_bytes(), format!("{}…", "y".repeat(300))),
        ];
        for (body, want) in cases {
            assert_eq!(server_message(body), want);
        }
    }

    #[test]
    fn urls() {
        let token = Secret::new("t");
        let t = Duration::from_secs(1);
        let ok = [
            (
                "https://api.stitchdata.com",
                "api.stitchdata.com",
                443,
                "/v2/import/batch",
            ),
            (
                "http://127.0.0.1:8080/",
                "127.0.0.1",
                8080,
                "/v2/import/batch",
            ),
            ("http://[::1]:9/base", "::1", 9, "/base/v2/import/batch"),
        ];
        for (url, host, port, path) in ok {
            let api = ImportApi::new(url, &token, t).expect(url);
            assert_eq!(
                (api.host.as_str(), api.port, api.path.as_str()),
                (host, port, path)
            );
        }
        for url in [
            "api.stitchdata.com",
            "ftp://x",
            "https://",
            "http://h/?q=1",
            "",
        ] {
            assert!(ImportApi::new(url, &token, t).is_err(), "{url}");
        }
    }
}
