//! The binaries' ready-file contract: JSON written atomically (temp file +
//! rename) once both fronts serve, so scripts can poll for the file and then
//! read every address from it. `psdb-emulator` and `psdb-vitess` (the real
//! Vitess) write the same keys, and share their process lifecycle: logs on
//! stderr, serving until SIGTERM or SIGINT.
//!
//! ```json
//! {"grpc_addr": "127.0.0.1:PORT", "mysql_addr": "127.0.0.1:PORT",
//!  "ca_file": "/path/ca.pem" | null, "keyspace": "ks",
//!  "shards": {"-80": {"database": "ks__80"}, "80-": {"database": "ks_80_"}},
//!  "mariadb_url": "mysql://..." (only with --start-mariadb),
//!  "tap_config": {...}}
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

/// Where a tap reaches a local server, and as whom: the ready file's
/// `tap_config` for the emulator and for the real Vitess alike.
pub struct Endpoints<'a> {
    pub grpc: SocketAddr,
    pub mysql: SocketAddr,
    pub keyspace: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub tls: bool,
    pub ca_file: Option<&'a Path>,
}

/// A complete tap config for `e`.
pub fn tap_config(e: &Endpoints<'_>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "host": reach(e.grpc),
        "database": e.keyspace,
        "username": e.username,
        "password": e.password,
        "mysql_host": reach(e.mysql),
        "grpc_host": reach(e.grpc),
        "tls": e.tls,
    });
    if let (Some(ca), Some(obj)) = (e.ca_file, v.as_object_mut()) {
        obj.insert(
            "tls_ca_file".into(),
            serde_json::Value::String(ca.display().to_string()),
        );
    }
    v
}

/// The `name:port` a local client dials for a server bound to `addr`: the
/// address it listens on, or `127.0.0.1` when it listens on every address
/// (tests give each emulator its own loopback address, `127.0.77.N`).
fn reach(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Logs of the binaries: stderr, `RUST_LOG` (default `info`), colour only on
/// a terminal (the demo and the tests keep these logs in files).
pub fn init_logs() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Returns when the process gets SIGTERM or SIGINT: the binaries serve
/// until then.
pub async fn until_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// The ready-file document of a server at `e`: the contract both binaries
/// write, from one place so their keys cannot drift apart.
pub fn document(
    e: &Endpoints<'_>,
    shards: &BTreeMap<String, String>,
    mariadb_url: Option<&str>,
    tap_config: serde_json::Value,
) -> serde_json::Value {
    let shards: serde_json::Map<String, serde_json::Value> = shards
        .iter()
        .map(|(shard, db)| (shard.clone(), serde_json::json!({ "database": db })))
        .collect();
    let mut doc = serde_json::json!({
        "grpc_addr": e.grpc.to_string(),
        "mysql_addr": e.mysql.to_string(),
        "ca_file": e.ca_file.map(|p| p.display().to_string()),
        "keyspace": e.keyspace,
        "shards": shards,
        "tap_config": tap_config,
    });
    if let (Some(url), Some(obj)) = (mariadb_url, doc.as_object_mut()) {
        obj.insert(
            "mariadb_url".into(),
            serde_json::Value::String(url.to_string()),
        );
    }
    doc
}

/// Writes `doc` to `path` atomically.
pub fn write(path: &Path, doc: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
