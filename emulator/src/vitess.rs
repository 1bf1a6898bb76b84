//! A real Vitess for tests and the demo: `vtcombo` (one vtgate, a vttablet
//! per shard and tablet type, an in-memory topology) over a private MariaDB.
//!
//! The emulator is this project's own reading of the protocols, so a wrong
//! assumption shared by the tap and the emulator passes every test twice.
//! vtcombo is the real vtgate: its VStream API, its MySQL front
//! (`SHOW VITESS_SHARDS`, `SHOW VITESS_TABLETS`, `db@replica`,
//! `information_schema`) and its positions are the truth the emulator is
//! held to.
//!
//! How it is put together:
//! - vtcombo is built once by `scripts/peers vitess` into
//!   `~/.cache/tap-planetscale/vitess-<version>/bin` (or `$VTCOMBO`).
//! - MariaDB runs with the binary log on (`ROW`, `FULL` images, GTIDs), as
//!   VStream needs. vtcombo connects to it without `--start-mysql`, which
//!   skips mysqlctl's MySQL-only init scripts (`super_read_only`).
//! - Every shard is its own database `vt_<keyspace>_<shard>` on that one
//!   server, with a PRIMARY, a REPLICA and an RDONLY tablet over it (all
//!   three read the same database: vtcombo does not replicate). The binary
//!   log is shared, so positions are the server's `MariaDB/0-1-N`.
//! - Users: gRPC uses Vitess's static auth with one user and password, so
//!   the tap logs in as it would anywhere (`grpc_auth: static`). vtcombo
//!   has no static plugin for its MySQL front (only vtgate does), so that
//!   front accepts any login (`--mysql-auth-server-impl none`).
//! - With TLS, both fronts serve a certificate of a generated CA
//!   ([`crate::tls`]); the ready file names the CA file.
//! - The topology defines the cells alias `planetscale_operator_default`
//!   over the one cell, as PlanetScale's does over its availability zones:
//!   airbyte-source asks for tablets in that alias.
//! - [`Vitess::edge`] puts PlanetScale's edge in front of vtgate for
//!   PlanetScale's own Go clients: MySQL on `IP:3306`, gRPC on `IP:443`
//!   with Basic auth (see [`edge`]).
//!
//! Writing rows: tests write straight into the shard databases over the
//! MariaDB connection, as they do with the emulator, so a 2-shard keyspace
//! needs no VSchema; rows land on the shard the test chooses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::mariadb::{self, free_port, HarnessError, KeeperMsg, MariaDb, Server, StartOptions};
use crate::tls::{Certificates, TlsError};

pub mod edge;

use edge::{Edge, EdgeError, EdgeSpec};

/// The Vitess release the harness builds and runs.
pub const VITESS_VERSION: &str = "v0.24.4";

/// Environment variable naming a vtcombo binary to use instead of the cache.
pub const VTCOMBO_ENV: &str = "VTCOMBO";

/// How long vtcombo may take until every tablet serves.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The cell every tablet lives in.
pub const CELL: &str = "test";

/// The cells alias PlanetScale's clients name in a VStream's `cells`
/// (airbyte-source, fivetran-source), defined over [`CELL`].
pub const CELLS_ALIAS: &str = "planetscale_operator_default";

/// Login of both fronts.
const USER: &str = "vt_user";
const PASSWORD: &str = "vt_pass";

#[derive(Debug, thiserror::Error)]
pub enum VitessError {
    #[error(
        "vtcombo not found at {0}; run `scripts/peers vitess` (scripts/setup does) to build it, \
         or set {VTCOMBO_ENV}"
    )]
    NoBinary(PathBuf),
    #[error("starting the MariaDB under Vitess: {0}")]
    Mariadb(#[from] HarnessError),
    #[error("certificates for Vitess: {0}")]
    Tls(#[from] TlsError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vtcombo exited during startup ({status}); its log {log}:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("vtcombo did not serve every tablet within {timeout:?} (last: {last}); its log {log}:\n{tail}")]
    StartTimeout {
        timeout: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("shared Vitess unavailable: {0}")]
    Shared(String),
    #[error("mysql error: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("PlanetScale's edge in front of vtgate: {0}")]
    Edge(#[from] EdgeError),
    #[error("defining the cells alias {CELLS_ALIAS} through vtctld: {0}")]
    CellsAlias(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VitessError {
    let context = context.into();
    move |source| VitessError::Io { context, source }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VitessConfig {
    pub keyspace: String,
    /// `-`, or a split such as `-80`, `80-`.
    pub shards: Vec<String>,
    pub tls: bool,
    /// More keyspaces beside the first, with their shards: one vtgate
    /// serving an unsharded and a sharded keyspace, as clusters do.
    pub more_keyspaces: Vec<(String, Vec<String>)>,
}

impl VitessConfig {
    pub fn new(keyspace: &str) -> VitessConfig {
        VitessConfig {
            keyspace: keyspace.to_string(),
            shards: vec!["-".to_string()],
            tls: false,
            more_keyspaces: Vec::new(),
        }
    }

    pub fn keyspace(mut self, keyspace: &str, shards: &[&str]) -> Self {
        self.more_keyspaces.push((
            keyspace.to_string(),
            shards.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    /// Every keyspace with its shards, the first one first.
    fn keyspaces(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        std::iter::once((&self.keyspace, &self.shards))
            .chain(self.more_keyspaces.iter().map(|(k, s)| (k, s)))
    }

    pub fn shards(mut self, shards: &[&str]) -> Self {
        self.shards = shards.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
}

/// A running vtcombo over its own MariaDB. Dropping it stops both.
pub struct Vitess {
    cfg: VitessConfig,
    mariadb: MariaDb,
    server: Option<Server>,
    /// Files of this instance (auth, certificates, vtcombo's log); removed
    /// on drop, swept with the MariaDB datadirs if the process was killed.
    dir: tempfile::TempDir,
    grpc_addr: SocketAddr,
    mysql_addr: SocketAddr,
    ca_file: Option<PathBuf>,
    /// MariaDB's Unix socket, which vtcombo uses.
    socket: PathBuf,
    /// vtcombo's HTTP status port: never used, but it must be free.
    status_port: u16,
}

impl Vitess {
    /// Starts MariaDB and vtcombo and waits until every tablet of every
    /// shard serves.
    pub async fn start(cfg: VitessConfig) -> Result<Vitess, VitessError> {
        let binary = vtcombo_path();
        if !binary.is_file() {
            return Err(VitessError::NoBinary(binary));
        }
        let mariadb = MariaDb::start_with(&binlog_options()).await?;
        // The `psdb-mariadb-` prefix lets the MariaDB harness sweep this
        // directory too when its owner was killed.
        let dir = tempfile::Builder::new()
            .prefix("psdb-mariadb-vitess-")
            .tempdir()
            .map_err(io_err("creating the Vitess directory"))?;
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
            .map_err(io_err("writing owner.pid"))?;
        let ca_file = if cfg.tls {
            Some(Certificates::load_or_generate(dir.path(), &[])?.ca_file)
        } else {
            None
        };
        write_auth_files(dir.path())?;
        let socket = mariadb
            .socket()
            .ok_or_else(|| VitessError::Shared("the MariaDB under Vitess has no socket".into()))?;
        open_socket_dir(&socket)?;
        let grpc_addr = loopback(free_port()?);
        let mysql_addr = loopback(free_port()?);
        let mut vt = Vitess {
            cfg,
            mariadb,
            server: None,
            dir,
            grpc_addr,
            mysql_addr,
            ca_file,
            socket,
            status_port: free_port()?,
        };
        vt.launch(&binary).await?;
        Ok(vt)
    }

    /// One Vitess for the whole test process (keyspace `vt` with shards
    /// `-80` and `80-`, and the unsharded keyspace `vt1`; TLS on), started
    /// on first use; see [`MariaDb::shared`] for why this is synchronous.
    pub fn shared() -> Result<&'static Vitess, VitessError> {
        static SHARED: OnceLock<Result<Vitess, String>> = OnceLock::new();
        let res = SHARED.get_or_init(|| {
            let handle = std::thread::Builder::new()
                .name("vitess-shared-start".into())
                .spawn(|| -> Result<Vitess, String> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    let cfg = VitessConfig::new("vt")
                        .shards(&["-80", "80-"])
                        .keyspace("vt1", &["-"])
                        .tls(true);
                    rt.block_on(Vitess::start(cfg)).map_err(|e| e.to_string())
                });
            match handle {
                Ok(h) => h
                    .join()
                    .map_err(|_| "startup thread panicked".to_string())
                    .and_then(|r| r),
                Err(e) => Err(e.to_string()),
            }
        });
        res.as_ref().map_err(|e| VitessError::Shared(e.clone()))
    }

    async fn launch(&mut self, binary: &Path) -> Result<(), VitessError> {
        let log = self.dir.path().join("vtcombo.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err("opening vtcombo's log"))?;
        let log_err = log_file
            .try_clone()
            .map_err(io_err("opening vtcombo's log"))?;
        let mut cmd = run_unprivileged(binary, self.dir.path())?;
        cmd.args(self.args())
            .env("VTDATAROOT", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err));
        let server = mariadb::spawn_keeper(cmd, log.clone()).map_err(VitessError::Mariadb)?;
        self.server = Some(server);
        self.wait_serving(&log).await?;
        self.add_cells_alias().await
    }

    /// Defines [`CELLS_ALIAS`] over [`CELL`] in vtcombo's in-memory
    /// topology, through its vtctld gRPC service (`AddCellsAlias`), as
    /// `vtctldclient AddCellsAlias` would. vtcombo's topology flag has no
    /// place for aliases. vtcombo's log can say it serves a moment before
    /// its gRPC port takes calls (after a restart most of all), so a failed
    /// call is tried again for a while; an alias already there is fine.
    async fn add_cells_alias(&self) -> Result<(), VitessError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match self.add_cells_alias_once().await {
                Ok(()) => return Ok(()),
                Err(VitessError::CellsAlias(e)) if e.contains("already exists") => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    async fn add_cells_alias_once(&self) -> Result<(), VitessError> {
        let fail = |e: &dyn std::fmt::Display| VitessError::CellsAlias(e.to_string());
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        let mut ep =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", self.grpc_addr))
                .map_err(|e| fail(&e))?;
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).map_err(io_err(format!("reading {}", ca.display())))?;
            ep = ep
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                        .domain_name("localhost"),
                )
                .map_err(|e| fail(&e))?;
        }
        let channel = ep.connect().await.map_err(|e| fail(&e))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| fail(&e))?;
        let mut req = tonic::Request::new(AddCellsAliasRequest {
            name: CELLS_ALIAS.to_string(),
            cells: vec![CELL.to_string()],
        });
        for (k, v) in [("username", USER), ("password", PASSWORD)] {
            req.metadata_mut()
                .insert(k, tonic::metadata::MetadataValue::from_static(v));
        }
        let codec =
            tonic_prost::ProstCodec::<AddCellsAliasRequest, AddCellsAliasResponse>::default();
        grpc.unary(
            req,
            http::uri::PathAndQuery::from_static("/vtctlservice.Vtctld/AddCellsAlias"),
            codec,
        )
        .await
        .map_err(|e| fail(&e))?;
        Ok(())
    }

    /// Starts PlanetScale's edge in front of this vtgate on `ip` (ports
    /// 3306 and 443; see [`edge`]), in the calling Tokio runtime. It needs
    /// TLS on, and serves until dropped.
    pub async fn edge(&self, ip: std::net::IpAddr) -> Result<Edge, VitessError> {
        let ca_file = self.ca_file.clone().ok_or(EdgeError::NoTls)?;
        let dir = self.dir.path();
        Ok(Edge::start(EdgeSpec {
            ip,
            mysql_upstream: self.mysql_addr,
            grpc_upstream: self.grpc_addr,
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            ca_file,
        })
        .await?)
    }

    /// The login both fronts (and the edge's Basic auth) accept.
    pub fn login(&self) -> (&'static str, &'static str) {
        (USER, PASSWORD)
    }

    fn args(&self) -> Vec<String> {
        let dir = self.dir.path();
        let db = &self.mariadb;
        let mut args: Vec<String> = [
            "--bind-address",
            "127.0.0.1",
            "--grpc-bind-address",
            "127.0.0.1",
            "--mysql-server-bind-address",
            "127.0.0.1",
            "--db-charset",
            "utf8mb4",
            "--mycnf-server-id",
            "1",
            "--dbddl-plugin",
            "vttest",
            "--enable-online-ddl=false",
            // As PlanetScale runs: vstreamer decodes events from before a DDL
            // with the schema of their time, not the current one.
            "--track-schema-versions",
            "--tablet-refresh-interval",
            "1s",
            "--gateway-initial-tablet-timeout",
            "30s",
            "--queryserver-config-schema-reload-time",
            "1s",
            "--mysql-auth-server-impl",
            "none",
            "--grpc-auth-mode",
            "static",
            // vtctld only to define the cells alias at start.
            "--service-map",
            "grpc-vtgateservice,grpc-vtctld",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let pairs = [
            ("--port", self.status_port.to_string()),
            ("--grpc-port", self.grpc_addr.port().to_string()),
            ("--mysql-server-port", self.mysql_addr.port().to_string()),
            // The socket, not TCP: a tablet then has no MySQL host name,
            // and vttablet leaves replication alone. Over TCP a REPLICA or
            // RDONLY tablet that starts after its shard has a PRIMARY asks
            // that primary for its status, which vtcombo's in-process
            // tablet manager does not implement, and vtcombo exits.
            ("--db-socket", self.socket.display().to_string()),
            ("--db-app-user", db.user().to_string()),
            ("--db-app-password", db.password().to_string()),
            ("--db-dba-user", db.user().to_string()),
            ("--db-dba-password", db.password().to_string()),
            ("--db-allprivs-user", db.user().to_string()),
            ("--db-allprivs-password", db.password().to_string()),
            ("--db-filtered-user", db.user().to_string()),
            ("--db-filtered-password", db.password().to_string()),
            ("--db-repl-user", db.user().to_string()),
            ("--db-repl-password", db.password().to_string()),
            ("--proto-topo", self.topology()),
            (
                "--grpc-auth-static-password-file",
                dir.join("grpc-auth.json").display().to_string(),
            ),
        ];
        for (k, v) in pairs {
            args.push(k.to_string());
            args.push(v);
        }
        if self.ca_file.is_some() {
            let cert = dir.join("server.pem").display().to_string();
            let key = dir.join("server.key").display().to_string();
            for (k, v) in [
                ("--grpc-cert", &cert),
                ("--grpc-key", &key),
                ("--mysql-server-ssl-cert", &cert),
                ("--mysql-server-ssl-key", &key),
            ] {
                args.push(k.to_string());
                args.push(v.clone());
            }
        }
        args
    }

    /// vttest's topology in protobuf text: one keyspace, its shards, a
    /// REPLICA and an RDONLY tablet beside each PRIMARY (vtcombo counts the
    /// PRIMARY among the replicas, hence 2).
    fn topology(&self) -> String {
        let mut text = String::new();
        for (keyspace, shards) in self.cfg.keyspaces() {
            let shards: String = shards
                .iter()
                .map(|s| format!("shards:{{name:\"{s}\"}} "))
                .collect();
            text.push_str(&format!(
                "keyspaces:{{name:\"{keyspace}\" {shards}replica_count:2 rdonly_count:1}} "
            ));
        }
        text.push_str(&format!("cells:\"{CELL}\""));
        text
    }

    /// Polls vtgate's MySQL front until every tablet of the keyspace is
    /// SERVING (3 per shard), or vtcombo dies, or the time is up.
    async fn wait_serving(&self, log: &Path) -> Result<(), VitessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let want: usize = self.cfg.keyspaces().map(|(_, s)| s.len() * 3).sum();
        let mut last;
        loop {
            if let Some(status) = self.server.as_ref().and_then(mariadb::exited_status) {
                return Err(VitessError::Exited {
                    status,
                    log: log.to_path_buf(),
                    tail: tail(log),
                });
            }
            match self.serving_tablets().await {
                Ok(n) if n >= want => return Ok(()),
                Ok(n) => last = format!("{n} of {want} tablets serving"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(VitessError::StartTimeout {
                    timeout: START_TIMEOUT,
                    last,
                    log: log.to_path_buf(),
                    tail: tail(log),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn serving_tablets(&self) -> Result<usize, VitessError> {
        let mut conn = self.vtgate_conn(None).await?;
        let rows: Vec<mysql_async::Row> = conn.query("SHOW VITESS_TABLETS").await?;
        let _ = conn.disconnect().await;
        Ok(rows
            .iter()
            .filter(|r| {
                let get = |i: usize| r.get::<String, _>(i).unwrap_or_default();
                let ks = get(1);
                self.cfg.keyspaces().any(|(k, _)| *k == ks) && get(4) == "SERVING"
            })
            .count())
    }

    /// A connection to vtgate's MySQL front (TLS when on, verified against
    /// the generated CA).
    pub async fn vtgate_conn(
        &self,
        database: Option<&str>,
    ) -> Result<mysql_async::Conn, VitessError> {
        let mut b = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.mysql_addr.ip().to_string())
            .tcp_port(self.mysql_addr.port())
            .user(Some(USER))
            .pass(Some(PASSWORD))
            .db_name(database)
            .prefer_socket(false);
        if let Some(ca) = &self.ca_file {
            b = b.ssl_opts(
                mysql_async::SslOpts::default()
                    .with_root_certs(vec![ca.clone().into()])
                    .with_danger_skip_domain_validation(true),
            );
        }
        Ok(mysql_async::Conn::new(b).await?)
    }

    /// Kills vtcombo as a crash would (MariaDB keeps running), then starts
    /// it again on the same ports and waits until it serves.
    pub async fn restart(&mut self) -> Result<(), VitessError> {
        self.kill();
        self.launch(&vtcombo_path()).await
    }

    /// Kills vtcombo (MariaDB keeps running).
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            let (ack_tx, ack_rx) = mpsc::channel();
            if server.stop.send(KeeperMsg::Stop(ack_tx)).is_ok() {
                let _ = ack_rx.recv_timeout(Duration::from_secs(10));
            }
        }
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

    pub fn shards(&self) -> &[String] {
        &self.cfg.shards
    }

    /// The MariaDB under vtcombo, for writing rows and comparing.
    pub fn mariadb(&self) -> &MariaDb {
        &self.mariadb
    }

    /// The backing database of a shard of the first keyspace, as vtcombo
    /// names it.
    pub fn shard_database(&self, shard: &str) -> String {
        Self::backing_database(&self.cfg.keyspace, shard)
    }

    /// The backing database of a shard of any keyspace.
    pub fn backing_database(keyspace: &str, shard: &str) -> String {
        format!("vt_{keyspace}_{shard}")
    }

    pub fn shard_databases(&self) -> BTreeMap<String, String> {
        self.cfg
            .shards
            .iter()
            .map(|s| (s.clone(), self.shard_database(s)))
            .collect()
    }

    /// A complete tap config for the first keyspace over the VStream API.
    pub fn tap_config(&self) -> serde_json::Value {
        self.tap_config_for(&self.cfg.keyspace)
    }

    /// A complete tap config for one keyspace over the VStream API.
    pub fn tap_config_for(&self, keyspace: &str) -> serde_json::Value {
        let mut v = crate::ready::tap_config(&self.endpoints(keyspace));
        v["api"] = serde_json::json!("vstream");
        v["grpc_auth"] = serde_json::json!("static");
        v
    }

    /// Where and as whom a tap reaches one keyspace.
    fn endpoints<'a>(&'a self, keyspace: &'a str) -> crate::ready::Endpoints<'a> {
        crate::ready::Endpoints {
            grpc: self.grpc_addr,
            mysql: self.mysql_addr,
            keyspace,
            username: USER,
            password: PASSWORD,
            tls: self.cfg.tls,
            ca_file: self.ca_file.as_deref(),
        }
    }

    /// The ready-file document of the first keyspace, with the emulator's
    /// keys.
    pub fn ready_document(&self) -> serde_json::Value {
        crate::ready::document(
            &self.endpoints(&self.cfg.keyspace),
            &self.shard_databases(),
            Some(&self.mariadb.url()),
            self.tap_config(),
        )
    }
}

impl Drop for Vitess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The vtcombo to run: `$VTCOMBO`, else the cache `scripts/peers` fills.
pub fn vtcombo_path() -> PathBuf {
    if let Some(p) = std::env::var_os(VTCOMBO_ENV) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("TAP_PEERS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/tap-planetscale")
        });
    cache
        .join(format!("vitess-{VITESS_VERSION}"))
        .join("bin/vtcombo")
}

/// MariaDB as VStream needs it: a row-based binary log with full images.
fn binlog_options() -> StartOptions {
    StartOptions {
        extra_args: [
            "--log-bin=mariadb-bin",
            "--server-id=1",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--log-slave-updates",
            "--gtid-strict-mode=1",
            "--binlog-checksum=CRC32",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..StartOptions::default()
    }
}

/// `vtctldata.AddCellsAliasRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct AddCellsAliasRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, repeated, tag = "2")]
    cells: Vec<String>,
}

/// `vtctldata.AddCellsAliasResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
struct AddCellsAliasResponse {}

fn write_auth_files(dir: &Path) -> Result<(), VitessError> {
    let grpc = serde_json::json!([{ "Username": USER, "Password": PASSWORD }]);
    std::fs::write(dir.join("grpc-auth.json"), grpc.to_string())
        .map_err(io_err("writing grpc-auth.json"))
}

/// The command that runs vtcombo. Vitess refuses to run as root
/// (`servenv.Init: running this as root makes no sense`), and CI runs as
/// root: there vtcombo runs as `nobody`, from a link in its own directory
/// (the cache under root's home is closed to other users), and owns that
/// directory.
fn run_unprivileged(binary: &Path, dir: &Path) -> Result<Command, VitessError> {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Command::new(binary));
    }
    let local = dir.join("vtcombo");
    if !local.exists() {
        std::fs::hard_link(binary, &local)
            .or_else(|_| std::fs::copy(binary, &local).map(|_| ()))
            .map_err(io_err(format!("linking {} for nobody", binary.display())))?;
    }
    let entries = std::fs::read_dir(dir).map_err(io_err("listing the Vitess directory"))?;
    for path in std::iter::once(dir.to_path_buf()).chain(entries.flatten().map(|e| e.path())) {
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY))
            .map_err(io_err(format!("handing {} to nobody", path.display())))?;
    }
    let mut cmd = Command::new(local);
    cmd.uid(NOBODY).gid(NOBODY);
    Ok(cmd)
}

/// Lets vtcombo, running as `nobody`, through MariaDB's private directory
/// to the socket inside it (traverse only; the socket itself is 0777).
fn open_socket_dir(socket: &Path) -> Result<(), VitessError> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    if let Some(dir) = socket.parent() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(io_err(format!("opening {} to vtcombo", dir.display())))?;
    }
    Ok(())
}

/// `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The last lines of vtcombo's log, without the flag list cobra prints
/// after a failed start (hundreds of lines that hide the cause).
fn tail(log: &Path) -> String {
    std::fs::read_to_string(log)
        .map(|t| {
            let lines: Vec<&str> = t
                .lines()
                .filter(|l| !l.starts_with("  ") && !l.trim().is_empty())
                .collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        })
        .unwrap_or_default()
}
