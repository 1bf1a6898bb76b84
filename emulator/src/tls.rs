//! Generated certificates: a throwaway CA and a server certificate for
//! `localhost`, `127.0.0.1` and the addresses the fronts listen on, so
//! clients can verify TLS against a CA file exactly as they would against
//! PlanetScale's public roots. PlanetScale's Go clients take a host without
//! a port (MySQL on 3306, gRPC on 443), so tests that run them give each
//! emulator its own loopback address, which its certificate must name.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// PEM material for the fronts.
pub struct Certificates {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_file: PathBuf,
}

impl Certificates {
    /// Loads `ca.pem`, `server.pem` and `server.key` from `dir` if all three
    /// exist (so a restarted emulator keeps the CA its clients trust), else
    /// generates new ones for `ips` as well as the loopback names and writes
    /// them there.
    pub fn load_or_generate(dir: &Path, ips: &[IpAddr]) -> Result<Certificates, TlsError> {
        let ca_file = dir.join("ca.pem");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if let (Some(ca_pem), Some(cert_pem), Some(key_pem)) =
            (read("ca.pem"), read("server.pem"), read("server.key"))
        {
            return Ok(Certificates {
                ca_pem,
                cert_pem,
                key_pem,
                ca_file,
            });
        }
        let certs = Self::generate_for(dir, ips)?;
        for (name, text) in [
            ("server.pem", &certs.cert_pem),
            ("server.key", &certs.key_pem),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| TlsError::Write { path, source })?;
        }
        Ok(certs)
    }

    /// Generates a CA and a server certificate, writing the CA to `dir/ca.pem`.
    pub fn generate(dir: &Path) -> Result<Certificates, TlsError> {
        Self::generate_for(dir, &[])
    }

    /// As [`Certificates::generate`], the server certificate also naming
    /// `ips`.
    pub fn generate_for(dir: &Path, ips: &[IpAddr]) -> Result<Certificates, TlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "psdb-emulator test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate()?;
        // PlanetScale's Connect hosts are `<region>.connect.psdb.cloud`, and
        // airbyte-source refuses any other host name: with the wildcard a
        // test can give the emulator such a name in a private /etc/hosts.
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "*.connect.psdb.cloud".to_string(),
        ])?;
        let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        params.subject_alt_names.push(SanType::IpAddress(loopback));
        for ip in ips {
            if *ip != loopback && !ip.is_unspecified() {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer)?;

        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).map_err(|source| TlsError::Write {
            path: ca_file.clone(),
            source,
        })?;
        Ok(Certificates {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_file,
        })
    }

    /// rustls 0.22 server config for the MySQL front (opensrv-mysql's version).
    pub fn mysql_server_config(
        &self,
    ) -> Result<std::sync::Arc<tokio_rustls_025::rustls::ServerConfig>, TlsError> {
        use tokio_rustls_025::rustls;
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls_pemfile_certs(&self.cert_pem)?
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from)
                .collect();
        let key = rustls_pemfile_key(&self.key_pem)?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                certs,
                rustls::pki_types::PrivateKeyDer::Pkcs8(
                    rustls::pki_types::PrivatePkcs8KeyDer::from(key),
                ),
            )
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(std::sync::Arc::new(config))
    }
}

/// Decodes the DER bodies of `CERTIFICATE` blocks.
fn rustls_pemfile_certs(pem: &str) -> Result<Vec<Vec<u8>>, TlsError> {
    pem_blocks(pem, "CERTIFICATE")
}

fn rustls_pemfile_key(pem: &str) -> Result<Vec<u8>, TlsError> {
    pem_blocks(pem, "PRIVATE KEY")?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::Config("no private key in PEM".into()))
}

fn pem_blocks(pem: &str, label: &str) -> Result<Vec<Vec<u8>>, TlsError> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let Some(stop) = after.find(&end) else { break };
        let body: String = after[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| TlsError::Config(format!("bad PEM: {e}")))?;
        out.push(der);
        rest = &after[stop + end.len()..];
    }
    Ok(out)
}
