//! The vtgate-like MySQL front (opensrv-mysql).
//!
//! - Login: a real `mysql_native_password` check against the configured
//!   user/password with a random scramble per connection; TLS when configured
//!   (plain connections are accepted too).
//! - Database names: `ks`, `ks@primary|replica|rdonly`, and `ks:shard[@type]`
//!   to target one shard. Anything else is `ER_BAD_DB_ERROR`.
//! - `SHOW VITESS_SHARDS [LIKE ...]` and `SHOW VITESS_TABLETS` are answered
//!   here (wire-protocol.md §7); `SHOW DATABASES` lists the keyspace.
//! - Prepared statements (go-sql-driver prepares every query with `?`
//!   arguments) take the same paths as text: those SHOW statements and DDL
//!   are prepared in the front itself, everything else on the backend.
//!   COM_STMT_RESET is answered with OK. The front runs on a patched
//!   opensrv-mysql (`emulator/vendor/opensrv-mysql/PATCHED.md`), whose
//!   release lost a command that arrived in the same read as the one before.
//! - DDL (CREATE/ALTER/DROP/TRUNCATE/RENAME) goes to every shard unless the
//!   client targeted one shard, and change capture is refreshed right after
//!   it, so rows written next are captured.
//! - Everything else goes to the target shard's backing database (the first
//!   shard by default) on a dedicated backend connection, text queries and
//!   prepared statements alike, with the backend's column types and flags,
//!   NULLs and errors (code and message) passed through.
//! - So that the keyspace looks like the database: the keyspace name used as
//!   a schema qualifier is rewritten to the backing database, and
//!   `information_schema.{columns,tables,statistics,key_column_usage}` are
//!   rewritten to views (in a helper database `_psdb_v_<db>`) that show the
//!   backing database as the keyspace, MariaDB JSON columns as `json`, and
//!   hide the emulator's `_psdb_*` tables. `SHOW TABLES` output is filtered
//!   the same way.
//!
//! The module follows a statement through the front:
//! - this file: configuration, the listener and one task per connection
//!   (plain or TLS, via opensrv-mysql's intermediary);
//! - [`shim`]: the per-connection `AsyncMysqlShim` (login, database
//!   selection, text queries, prepared statements, DDL on every shard);
//! - [`show`]: the Vitess-only statements the front answers itself;
//! - [`rewrite`]: SQL rewriting and the classifiers the shim routes by;
//! - [`views`]: the information_schema views the rewritten SQL reads;
//! - [`results`]: result sets and values between mysql_async and
//!   opensrv-mysql (text and binary rows, parameters).
//!
//! Result columns carry MariaDB's own name, table, type and flags (tests/
//! front.rs compares them with a direct connection over a table of every
//! type). opensrv-mysql 0.7's `Column` has no other fields: it writes the
//! character set, column length and decimals of every column definition
//! itself, as fixed values (utf8_general_ci = 33, 1024, 0), and neither the
//! schema nor the original table and column names; passing MariaDB's would
//! take a fork of the library.
//!
//! Limits: the column metadata above; negative TIME values and DATE/TIME
//! prepared-statement parameters are not supported; other information_schema
//! tables show the backing database name.

mod results;
mod rewrite;
mod shim;
mod show;
mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use opensrv_mysql::{AsyncMysqlIntermediary, IntermediaryOptions};
use tokio::sync::watch;

pub use rewrite::rewrite_sql;
use shim::Shim;

/// What the front needs to know.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    pub keyspace: String,
    /// Shard name → backing database.
    pub shards: BTreeMap<String, String>,
    pub username: String,
    pub password: String,
    pub backing: mysql_async::Opts,
    pub cell: String,
    pub grpc_addr: SocketAddr,
    /// Change capture of every shard, refreshed after DDL through the front
    /// so a table created here is captured before the next statement.
    pub captures: Vec<crate::capture::ShardCapture>,
}

pub struct MysqlFront {
    cfg: Arc<FrontConfig>,
}

impl MysqlFront {
    pub fn new(cfg: FrontConfig) -> MysqlFront {
        MysqlFront { cfg: Arc::new(cfg) }
    }

    /// Creates the views, binds, and serves until shutdown.
    pub async fn serve(
        self,
        addr: SocketAddr,
        tls: Option<Arc<tokio_rustls_025::rustls::ServerConfig>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        if let Err(e) = views::create_views(&self.cfg).await {
            tracing::warn!(error = %e, "could not create information_schema views");
        }
        let listener = crate::listener::bind(addr).await?;
        let local = listener.local_addr()?;
        let cfg = self.cfg.clone();
        let task = tokio::spawn(async move {
            let mut conn_id: u32 = 1;
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.changed() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                conn_id = conn_id.wrapping_add(1);
                let shim = Shim::new(cfg.clone(), conn_id);
                let tls = tls.clone();
                let mut conn_shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let fut = run_connection(shim, stream, tls);
                    tokio::select! {
                        r = fut => {
                            if let Err(e) = r {
                                tracing::debug!(%peer, error = %e, "mysql front connection ended");
                            }
                        }
                        _ = conn_shutdown.changed() => {}
                    }
                });
            }
        });
        Ok((local, task))
    }
}

async fn run_connection(
    mut shim: Shim,
    stream: tokio::net::TcpStream,
    tls: Option<Arc<tokio_rustls_025::rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    // opensrv-mysql writes each packet (each row) straight to its writer
    // and flushes after every command's answer: unbuffered, with
    // TCP_NODELAY, every row was a syscall and a segment of its own
    // (200,000 for the columns of 10,000 tables).
    let mut w = tokio::io::BufWriter::with_capacity(64 * 1024, w);
    let opts = IntermediaryOptions::default();
    let (is_ssl, init) =
        AsyncMysqlIntermediary::init_before_ssl(&mut shim, r, &mut w, &tls).await?;
    match (is_ssl, tls) {
        (true, Some(cfg)) => opensrv_mysql::secure_run_with_options(shim, w, opts, cfg, init).await,
        _ => opensrv_mysql::plain_run_with_options(shim, w, opts, init).await,
    }
}
