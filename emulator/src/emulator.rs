//! The emulator as a library: configuration, start-up, addresses, tap config,
//! stop on drop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use tokio::sync::watch;

use crate::capture::{self, ShardCapture};
use crate::faults::FaultHandle;
use crate::grpc::{ShardBackend, SyncService, SyncState};
use crate::mariadb::MariaDb;
use crate::tls::Certificates;
use crate::values::{quote_ident, ChangeText};
use crate::vstream::VStreamService;
use crate::wire::psdbconnect::v1alpha1::connect_server::ConnectServer;
use crate::wire::vtgateservice::vitess_server::VitessServer;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("backing MariaDB: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Where the shards' data lives.
#[derive(Debug, Clone)]
pub struct BackingSpec {
    /// `mysql://user:pw@host:port` of the backing MariaDB.
    pub url: String,
    /// Backing database per shard. Shards not listed get a database: a fresh
    /// uniquely named one when `fresh_databases` is set (tests), else
    /// `<keyspace>_<sanitized shard>`, created if missing.
    pub shard_databases: BTreeMap<String, String>,
    pub fresh_databases: bool,
}

/// Everything [`Emulator::start`] needs.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub keyspace: String,
    /// e.g. `["-"]` or `["-80", "80-"]`.
    pub shards: Vec<String>,
    pub username: String,
    pub password: String,
    pub tls: bool,
    pub backing: BackingSpec,
    pub cdc_text: ChangeText,
    pub grpc_listen: SocketAddr,
    pub mysql_listen: SocketAddr,
    /// Where the CA file goes (a temp dir owned by the emulator if `None`).
    pub cert_dir: Option<PathBuf>,
    /// Cell name of the tablets.
    pub cell: String,
    /// Rows per copy-phase response (default 4000); small values let tests
    /// interrupt a copy after a few batches.
    pub copy_batch_rows: usize,
    /// Keep only the newest N transactions of each shard's change log;
    /// older start positions answer as purged (`None`: keep everything).
    pub retain_changes: Option<u64>,
}

impl EmulatorConfig {
    /// Defaults for tests: keyspace as given, one shard `-`, user `emu` /
    /// password `emu-secret`, no TLS, fresh databases, copy forms, port 0.
    pub fn new(mariadb: &MariaDb, keyspace: &str) -> EmulatorConfig {
        Self::with_url(&mariadb.url(), keyspace)
    }

    pub fn with_url(url: &str, keyspace: &str) -> EmulatorConfig {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        EmulatorConfig {
            keyspace: keyspace.to_string(),
            shards: vec!["-".to_string()],
            username: "emu".to_string(),
            password: "emu-secret".to_string(),
            tls: false,
            backing: BackingSpec {
                url: url.to_string(),
                shard_databases: BTreeMap::new(),
                fresh_databases: true,
            },
            cdc_text: ChangeText::CopyForms,
            grpc_listen: any,
            mysql_listen: any,
            cert_dir: None,
            cell: "zone1".to_string(),
            copy_batch_rows: crate::grpc::DEFAULT_COPY_BATCH_ROWS,
            retain_changes: None,
        }
    }

    pub fn copy_batch_rows(mut self, rows: usize) -> Self {
        self.copy_batch_rows = rows;
        self
    }

    pub fn retain_changes(mut self, keep: u64) -> Self {
        self.retain_changes = Some(keep);
        self
    }

    pub fn shards(mut self, shards: &[&str]) -> Self {
        self.shards = shards.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    pub fn change_text(mut self, t: ChangeText) -> Self {
        self.cdc_text = t;
        self
    }

    /// The backing database of every shard: the one given, else
    /// `<keyspace>_<shard>` with other characters as `_` (shard `-` as `0`),
    /// with a random suffix when `fresh_databases` is set.
    pub fn backing_databases(&self) -> BTreeMap<String, String> {
        let sanitize = |s: &str, keep: fn(char) -> bool| -> String {
            s.chars().map(|c| if keep(c) { c } else { '_' }).collect()
        };
        let ks = sanitize(&self.keyspace, |c| c.is_ascii_alphanumeric() || c == '_');
        let mut out = BTreeMap::new();
        for shard in &self.shards {
            let db = match self.backing.shard_databases.get(shard) {
                Some(db) => db.clone(),
                None => {
                    let clean = sanitize(shard, |c| c.is_ascii_alphanumeric());
                    let clean = if clean.trim_matches('_').is_empty() {
                        "0".to_string()
                    } else {
                        clean
                    };
                    if self.backing.fresh_databases {
                        let suffix = uuid::Uuid::new_v4().simple().to_string();
                        format!("{ks}_{clean}_{}", &suffix[..10])
                    } else {
                        format!("{ks}_{clean}")
                    }
                }
            };
            out.insert(shard.clone(), db);
        }
        out
    }

    pub fn shard_database(mut self, shard: &str, database: &str) -> Self {
        self.backing
            .shard_databases
            .insert(shard.to_string(), database.to_string());
        self
    }
}

/// A running emulator. Stops (tasks aborted, listeners closed) on drop.
pub struct Emulator {
    cfg: EmulatorConfig,
    grpc_addr: SocketAddr,
    mysql_addr: SocketAddr,
    ca_file: Option<PathBuf>,
    shard_dbs: BTreeMap<String, String>,
    captures: Vec<ShardCapture>,
    faults: FaultHandle,
    conns: Arc<crate::grpc::ConnRegistry>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cert_dir: Option<tempfile::TempDir>,
    /// Set by `restart_config`: leave the cert dir behind for the successor.
    keep_cert_dir: std::sync::atomic::AtomicBool,
}

impl Emulator {
    /// Starts both fronts and change capture; returns once they serve.
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        if cfg.shards.is_empty() {
            return Err(EmulatorError::Config(
                "at least one shard is required".into(),
            ));
        }
        if cfg.keyspace.is_empty() {
            return Err(EmulatorError::Config("keyspace must not be empty".into()));
        }
        let base_opts = mysql_async::Opts::from_url(&cfg.backing.url)
            .map_err(|e| EmulatorError::Config(format!("bad MariaDB url: {e}")))?;
        let mut admin = mysql_async::Conn::new(base_opts.clone()).await?;
        let shard_dbs = cfg.backing_databases();
        for db in shard_dbs.values() {
            admin
                .query_drop(format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                    quote_ident(db)
                ))
                .await?;
        }
        let _ = admin.disconnect().await;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut backends = BTreeMap::new();
        let mut captures = Vec::new();
        for (shard, db) in &shard_dbs {
            let opts: mysql_async::Opts =
                mysql_async::OptsBuilder::from_opts(base_opts.clone())
                    .db_name(Some(db.clone()))
                    .init(vec!["SET time_zone = '+00:00'".to_string()])
                    // Text as vttablet sends it: the column's own bytes,
                    // with its own collation id in the result's fields
                    // (`setup`: again after a pooled connection's reset).
                    .setup(vec!["SET character_set_results = NULL".to_string()])
                    .pool_opts(mysql_async::PoolOpts::default().with_constraints(
                        mysql_async::PoolConstraints::new(0, 64).unwrap_or_default(),
                    ))
                    .into();
            let pool = mysql_async::Pool::new(opts);
            let (capture, task) = capture::start(
                pool.clone(),
                db.clone(),
                cfg.retain_changes,
                shutdown_rx.clone(),
            )
            .await?;
            tasks.push(task);
            captures.push(capture.clone());
            backends.insert(
                shard.clone(),
                ShardBackend {
                    name: shard.clone(),
                    database: db.clone(),
                    pool,
                    capture,
                },
            );
        }

        let (cert_dir_guard, cert_dir) = match &cfg.cert_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("psdb-emulator-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let certs = if cfg.tls {
            std::fs::create_dir_all(&cert_dir)?;
            Some(Certificates::load_or_generate(
                &cert_dir,
                &[cfg.grpc_listen.ip(), cfg.mysql_listen.ip()],
            )?)
        } else {
            None
        };

        let faults = FaultHandle::default();
        let state = Arc::new(SyncState {
            keyspace: cfg.keyspace.clone(),
            shards: backends,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            change_text: cfg.cdc_text,
            faults: faults.clone(),
            copy_batch_rows: cfg.copy_batch_rows,
            conns: Arc::new(crate::grpc::ConnRegistry::default()),
            shutdown: shutdown_rx.clone(),
        });

        // gRPC front.
        let listener = crate::listener::bind(cfg.grpc_listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: cfg.grpc_listen,
                source,
            })?;
        let grpc_addr = listener.local_addr()?;
        let registry = state.conns.clone();
        let incoming = futures::stream::unfold(listener, move |l| {
            let registry = registry.clone();
            async move {
                let r = l.accept().await.map(|(s, peer)| {
                    let _ = s.set_nodelay(true);
                    crate::grpc::TrackedStream::new(s, peer, registry)
                });
                Some((r, l))
            }
        });
        let mut builder = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .http2_keepalive_interval(None)
            .layer(crate::grpc::SnappyLayer);
        if let Some(c) = &certs {
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&c.cert_pem, &c.key_pem),
            ))?;
        }
        let svc = ConnectServer::new(SyncService {
            state: state.clone(),
        })
        .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(usize::MAX);
        // vtgate's VStream on the same port, so the ready file and the tap
        // config stay the same whichever API the tap uses.
        let vstream = VitessServer::new(VStreamService {
            state: state.clone(),
        })
        .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(usize::MAX);
        let mut grpc_shutdown = shutdown_rx.clone();
        let router = builder.add_service(svc).add_service(vstream);
        tasks.push(tokio::spawn(async move {
            let r = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_shutdown.changed().await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));

        // MySQL front.
        let mysql_tls = match &certs {
            Some(c) => Some(c.mysql_server_config()?),
            None => None,
        };
        let front = crate::mysql_front::MysqlFront::new(crate::mysql_front::FrontConfig {
            keyspace: cfg.keyspace.clone(),
            shards: shard_dbs.clone(),
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            backing: base_opts,
            cell: cfg.cell.clone(),
            grpc_addr,
            captures: captures.clone(),
        });
        let (mysql_addr, mysql_task) = front
            .serve(cfg.mysql_listen, mysql_tls, shutdown_rx.clone())
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: cfg.mysql_listen,
                source,
            })?;
        tasks.push(mysql_task);

        tracing::info!(%grpc_addr, %mysql_addr, keyspace = %cfg.keyspace, "psdb-emulator serving");
        Ok(Emulator {
            ca_file: certs.map(|c| c.ca_file),
            cfg,
            grpc_addr,
            mysql_addr,
            shard_dbs,
            captures,
            faults,
            conns: state.conns.clone(),
            shutdown: shutdown_tx,
            tasks,
            cert_dir: cert_dir_guard,
            keep_cert_dir: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn mysql_addr(&self) -> SocketAddr {
        self.mysql_addr
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    pub fn keyspace(&self) -> &str {
        &self.cfg.keyspace
    }

    pub fn shards(&self) -> Vec<String> {
        self.cfg.shards.clone()
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.cfg
    }

    /// Backing MariaDB database of a shard ("" for an unknown shard).
    pub fn shard_database(&self, shard: &str) -> &str {
        self.shard_dbs.get(shard).map(String::as_str).unwrap_or("")
    }

    /// Backing database per shard.
    pub fn shard_databases(&self) -> &BTreeMap<String, String> {
        &self.shard_dbs
    }

    /// Current position of a shard (`MySQL56/<uuid>:1-N`).
    pub fn position(&self, shard: &str) -> Option<String> {
        let db = self.shard_dbs.get(shard)?;
        let c = self.captures.iter().find(|c| &c.database == db)?;
        Some(c.position(c.head()))
    }

    /// A complete tap config object for this emulator.
    pub fn tap_config(&self) -> serde_json::Value {
        crate::ready::tap_config(&self.endpoints())
    }

    /// Where and as whom a tap reaches this emulator.
    pub fn endpoints(&self) -> crate::ready::Endpoints<'_> {
        crate::ready::Endpoints {
            grpc: self.grpc_addr,
            mysql: self.mysql_addr,
            keyspace: &self.cfg.keyspace,
            username: &self.cfg.username,
            password: &self.cfg.password,
            tls: self.cfg.tls,
            ca_file: self.ca_file.as_deref(),
        }
    }

    /// The ready-file document (`mariadb_url` when the emulator started
    /// its own MariaDB).
    pub fn ready_document(&self, mariadb_url: Option<&str>) -> serde_json::Value {
        crate::ready::document(
            &self.endpoints(),
            &self.shard_dbs,
            mariadb_url,
            self.tap_config(),
        )
    }

    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// Simulates `PURGE BINARY LOGS`: on every shard, start positions older
    /// than the current one are reported purged from now on (the current
    /// position itself still works).
    pub async fn purge_positions_before_now(&self) -> Result<(), EmulatorError> {
        for (shard, db) in &self.shard_dbs {
            if let Some(c) = self.captures.iter().find(|c| &c.database == db) {
                let head = c.sync_now().await?;
                self.faults.set_purged_before(Some(shard), head);
            }
        }
        Ok(())
    }

    /// Re-scans tables/columns of every shard and (re)installs change capture
    /// now (otherwise it happens within 0.5 s of a CREATE/ALTER made
    /// directly on a backing database; DDL through the MySQL front refreshes
    /// by itself). Call it after creating tables directly in a backing
    /// database and before writing rows whose changes must be streamed.
    pub async fn refresh_capture(&self) -> Result<(), EmulatorError> {
        for c in &self.captures {
            c.refresh().await?;
        }
        Ok(())
    }

    /// A config that starts an emulator "restarted" from this one: same
    /// keyspace, shards, backing databases (so positions and UUIDs carry on),
    /// credentials, listen addresses (so the tap config stays valid) and TLS
    /// material and CA file path (so the tap config stays byte-identical).
    /// When the CA lives in this emulator's own temp dir, that dir is kept
    /// after this emulator stops (a few KiB in the temp dir).
    pub fn restart_config(&self) -> Result<EmulatorConfig, EmulatorError> {
        let mut cfg = self.cfg.clone();
        cfg.backing.shard_databases = self.shard_dbs.clone();
        cfg.backing.fresh_databases = false;
        cfg.grpc_listen = self.grpc_addr;
        cfg.mysql_listen = self.mysql_addr;
        if let (Some(ca), None) = (&self.ca_file, &cfg.cert_dir) {
            // Same directory, so the CA path in the tap config stays valid;
            // it is no longer removed when this emulator stops.
            self.keep_cert_dir
                .store(true, std::sync::atomic::Ordering::SeqCst);
            cfg.cert_dir = ca.parent().map(Path::to_path_buf);
        }
        Ok(cfg)
    }

    /// Stops both fronts and change capture and waits until the listeners are
    /// closed (so a restart can bind the same ports at once).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        self.conns.reset(None);
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Stops like [`Emulator::stop`], then removes the emulator's objects
    /// from the backing MariaDB (see [`clean_up`]): a clean exit leaves the
    /// user's databases as they were before it started. Positions handed
    /// out before answer as purged afterwards.
    pub async fn stop_and_clean_up(self) -> Result<(), EmulatorError> {
        let url = self.cfg.backing.url.clone();
        let databases: Vec<String> = self.shard_dbs.values().cloned().collect();
        self.stop().await;
        clean_up(&url, &databases).await
    }

    /// Waits until every shard's change capture has numbered all transactions
    /// committed before this call. (`current` peeks already do this for their
    /// shard.)
    pub async fn settle(&self) -> Result<(), EmulatorError> {
        for c in &self.captures {
            c.sync_now().await?;
        }
        Ok(())
    }
}

/// Removes the emulator's objects for each of `databases` on the MariaDB at
/// `url` (see [`capture::remove`]): what a clean exit removes, and what a
/// killed emulator left behind. No emulator may be serving them.
pub async fn clean_up(url: &str, databases: &[String]) -> Result<(), EmulatorError> {
    let opts = mysql_async::Opts::from_url(url)
        .map_err(|e| EmulatorError::Config(format!("bad MariaDB url: {e}")))?;
    let mut conn = mysql_async::Conn::new(opts).await?;
    for db in databases {
        capture::remove(&mut conn, db).await?;
        tracing::info!(database = %db, "emulator objects removed");
    }
    let _ = conn.disconnect().await;
    Ok(())
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        // Like a crashed server: every open gRPC connection is reset.
        self.conns.reset(None);
        if self.keep_cert_dir.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(dir) = self.cert_dir.take() {
                let _ = dir.keep();
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}
