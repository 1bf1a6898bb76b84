//! A private MariaDB server for tests, the demo and benchmarks.
//!
//! Every honest test of the tap needs a real MySQL-compatible server, and the
//! box has no system service, so the harness creates its own: `mariadb-install-db`
//! into a temporary datadir, then `mariadbd --no-defaults` on a free loopback
//! port, with a Unix socket inside the datadir so nothing collides with other
//! servers.
//!
//! Login: `root` over TCP with a fixed password. The install uses
//! `--auth-root-authentication-method=normal`, which only creates
//! `root@localhost`; with `--skip-name-resolve` a TCP client from 127.0.0.1 is
//! *not* `localhost`, so an `--init-file` creates `root@127.0.0.1` (and
//! `root@localhost` gets the same password) on every start.
//!
//! Lifetime: a leaked server per test run on a 2-core box is a real problem, so
//! three layers make sure a child never outlives us:
//! 1. `Drop` kills the server and removes the datadir.
//! 2. The child is spawned with `PR_SET_PDEATHSIG(SIGKILL)` from a dedicated
//!    keeper thread that lives exactly as long as the [`MariaDb`] value (the
//!    kernel sends the signal when the *spawning thread* dies, so spawning from
//!    a tokio worker or blocking-pool thread would kill the server at random).
//!    For [`MariaDb::shared`] the keeper never exits, so the signal fires when
//!    the process dies, however it dies.
//! 3. For the shared server an `atexit` hook kills it and removes the datadir
//!    on a normal exit (libtest exits through `exit()`); datadirs left by a
//!    process that was SIGKILLed are swept by the next harness start (each
//!    datadir records its owner pid).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

/// Password of `root` on servers this harness starts. Fixed, because the
/// servers only listen on loopback and tests print URLs in failures.
const ROOT_PASSWORD: &str = "psdb-root";

/// Prefix of the temporary datadirs, used to sweep ones left by dead processes.
const DATADIR_PREFIX: &str = "psdb-mariadb-";

/// How long a fresh server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable naming an existing server to use instead of starting one.
pub const SHARED_URL_ENV: &str = "TAP_TEST_MARIADB_URL";

/// Errors from starting or using the private server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("io error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mariadb-install-db failed ({status}); output:\n{output}")]
    Install { status: String, output: String },
    #[error("mariadbd did not accept connections within {timeout:?}; see log {log}: {last}")]
    StartTimeout {
        timeout: Duration,
        log: PathBuf,
        last: String,
    },
    #[error("mariadbd exited during startup ({status}); see log {log}:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("invalid MariaDB url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("mysql error: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("shared MariaDB unavailable: {0}")]
    Shared(String),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// Messages to the keeper thread that owns the child process.
pub(crate) enum KeeperMsg {
    /// Kill the server, wait for it, then acknowledge and exit.
    Stop(mpsc::Sender<()>),
}

/// The running child, owned by its keeper thread.
pub(crate) struct Server {
    pub(crate) pid: u32,
    /// How it was launched, so [`MariaDb::restart`] can launch it again.
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<std::ffi::OsString>,
    pub(crate) stop: mpsc::Sender<KeeperMsg>,
    /// Set by the keeper when the child exits on its own.
    pub(crate) exited: Arc<Mutex<Option<String>>>,
    pub(crate) datadir: Option<tempfile::TempDir>,
    pub(crate) log: PathBuf,
}

/// A MariaDB server: either one this harness started (and owns), or an
/// external one named by [`SHARED_URL_ENV`].
pub struct MariaDb {
    host: String,
    port: u16,
    user: String,
    password: String,
    server: Option<Server>,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("owned", &self.server.is_some())
            .finish()
    }
}

impl MariaDb {
    /// Starts a private `mariadbd` on a temp datadir and a free loopback port
    /// and waits (up to 60 s) until root can log in over TCP.
    pub async fn start() -> Result<MariaDb, HarnessError> {
        Self::start_with(&StartOptions::default()).await
    }

    /// Like [`MariaDb::start`], with tuning (the benchmarks want a larger
    /// buffer pool).
    pub async fn start_with(opts: &StartOptions) -> Result<MariaDb, HarnessError> {
        sweep_stale_datadirs();
        let mut last_err = None;
        // A free port found by binding :0 can be taken before mariadbd binds
        // it; retry a few times rather than fail a test run.
        for _ in 0..3 {
            match start_once(opts).await {
                Ok(db) => return Ok(db),
                Err(e @ HarnessError::Exited { .. }) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| HarnessError::Shared("no start attempt".into())))
    }

    /// Connects to an existing server by URL (`mysql://user:pw@host:port`);
    /// nothing is started or stopped.
    pub fn external(url: &str) -> Result<MariaDb, HarnessError> {
        let opts = mysql_async::Opts::from_url(url).map_err(|e| HarnessError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        Ok(MariaDb {
            host: opts.ip_or_hostname().to_string(),
            port: opts.tcp_port(),
            user: opts.user().unwrap_or("root").to_string(),
            password: opts.pass().unwrap_or("").to_string(),
            server: None,
        })
    }

    /// One server for the whole test process, started on first use and
    /// killed when the process exits. If `TAP_TEST_MARIADB_URL` is set, that
    /// server is used instead.
    ///
    /// Synchronous on purpose: it can be called from any test, async or not,
    /// and from any runtime flavour. The start runs on its own thread with its
    /// own runtime (so nothing it spawns is tied to one test's runtime), and
    /// the first caller blocks for the few seconds it takes.
    pub fn shared() -> Result<&'static MariaDb, HarnessError> {
        static SHARED: OnceLock<Result<MariaDb, String>> = OnceLock::new();
        let res = SHARED.get_or_init(|| {
            if let Ok(url) = std::env::var(SHARED_URL_ENV) {
                if !url.is_empty() {
                    return MariaDb::external(&url).map_err(|e| e.to_string());
                }
            }
            let handle = std::thread::Builder::new()
                .name("mariadb-shared-start".into())
                .spawn(|| -> Result<MariaDb, String> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(MariaDb::start()).map_err(|e| e.to_string())
                });
            let db = match handle {
                Ok(h) => h
                    .join()
                    .map_err(|_| "startup thread panicked".to_string())
                    .and_then(|r| r),
                Err(e) => Err(e.to_string()),
            }?;
            if let Some(server) = &db.server {
                register_exit_cleanup(server);
            }
            Ok(db)
        });
        res.as_ref().map_err(|e| HarnessError::Shared(e.clone()))
    }

    /// `mysql://root:<pw>@127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!(
            "mysql://{}:{}@{}:{}",
            pct(&self.user),
            pct(&self.password),
            self.host,
            self.port
        )
    }

    /// URL with a default database.
    pub fn url_for(&self, database: &str) -> String {
        format!("{}/{}", self.url(), pct(database))
    }

    pub fn host(&self) -> String {
        self.host.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Path of the server's error log, when this harness started it.
    pub fn log_file(&self) -> Option<&Path> {
        self.server.as_ref().map(|s| s.log.as_path())
    }

    /// The Unix socket of a server this harness started.
    pub fn socket(&self) -> Option<PathBuf> {
        let server = self.server.as_ref()?;
        Some(server.datadir.as_ref()?.path().join("mysqld.sock"))
    }

    /// Connection options for `database` (or none).
    pub fn opts(&self, database: Option<&str>) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .db_name(database.map(str::to_string))
            .prefer_socket(false)
            .into()
    }

    /// Opens a new connection (each call is independent of any runtime's pool).
    pub async fn connect(&self, database: Option<&str>) -> Result<mysql_async::Conn, HarnessError> {
        Ok(mysql_async::Conn::new(self.opts(database)).await?)
    }

    /// Creates a fresh uniquely named database (`<prefix>_<random>`, utf8mb4)
    /// and returns its name.
    pub async fn create_database(&self, prefix: &str) -> Result<String, HarnessError> {
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{clean}_{}", &suffix[..12]);
        let mut conn = self.connect(None).await?;
        conn.query_drop(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        ))
        .await?;
        conn.disconnect().await?;
        Ok(name)
    }

    /// Runs a batch of SQL statements (multi-statement text) against a database.
    pub async fn execute(&self, database: &str, sql: &str) -> Result<(), HarnessError> {
        let mut conn = self.connect(Some(database)).await?;
        conn.query_drop(sql).await?;
        conn.disconnect().await?;
        Ok(())
    }
}

impl MariaDb {
    /// Kills the server, as a crash would, and starts it again on the same
    /// datadir and port; returns once it accepts connections again. Only
    /// for servers this harness started (not the shared one: other tests
    /// use it).
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        let Some(mut old) = self.server.take() else {
            return Err(HarnessError::Shared(
                "only a server started by this harness can be restarted".into(),
            ));
        };
        let (ack_tx, ack_rx) = mpsc::channel();
        if old.stop.send(KeeperMsg::Stop(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
        let mut cmd = Command::new(&old.program);
        cmd.args(&old.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut next = spawn_keeper(cmd, old.log.clone())?;
        next.datadir = old.datadir.take();
        self.server = Some(next);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.connect(None)).await {
                Ok(Ok(mut conn)) => {
                    widen_table_cache(&mut conn).await;
                    let _ = conn.disconnect().await;
                    return Ok(());
                }
                _ if Instant::now() > deadline => {
                    return Err(HarnessError::StartTimeout {
                        timeout: START_TIMEOUT,
                        log: old.log.clone(),
                        last: "no answer after restart".into(),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let (ack_tx, ack_rx) = mpsc::channel();
            if server.stop.send(KeeperMsg::Stop(ack_tx)).is_ok() {
                let _ = ack_rx.recv_timeout(Duration::from_secs(10));
            }
            // TempDir's own drop removes the datadir.
            drop(server.datadir);
        }
    }
}

/// Knobs for [`MariaDb::start_with`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// `innodb_buffer_pool_size`, e.g. "64M".
    pub buffer_pool: String,
    /// Extra `--option=value` arguments for mariadbd.
    pub extra_args: Vec<String>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            buffer_pool: "128M".into(),
            extra_args: Vec::new(),
        }
    }
}

/// Percent-encodes the few characters that would break a URL userinfo/path.
pub(crate) fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Finds a server program: `$<env>` if set, else on PATH, else in the sbin/bin
/// directories Debian installs to (`/usr/sbin` is often not on a user's PATH).
fn find_program(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
            .iter()
            .map(PathBuf::from),
    );
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(name)
}

pub(crate) fn free_port() -> Result<u16, HarnessError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    let port = l
        .local_addr()
        .map_err(io_err("finding a free port"))?
        .port();
    Ok(port)
}

/// Removes datadirs whose owner process is gone (left by a killed run).
fn sweep_stale_datadirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DATADIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(owner) = std::fs::read_to_string(path.join("owner.pid")) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<i32>() else {
            continue;
        };
        if pid > 0 && !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

async fn start_once(opts: &StartOptions) -> Result<MariaDb, HarnessError> {
    let tmp = tempfile::Builder::new()
        .prefix(DATADIR_PREFIX)
        .tempdir()
        .map_err(io_err("creating the datadir"))?;
    let base = tmp.path().to_path_buf();
    std::fs::write(base.join("owner.pid"), std::process::id().to_string())
        .map_err(io_err("writing owner.pid"))?;
    let datadir = base.join("data");
    let log = base.join("mariadbd.err");
    let socket = base.join("mysqld.sock");
    let init = base.join("init.sql");
    std::fs::write(
        &init,
        format!(
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n\
             ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n\
             ALTER USER 'root'@'localhost' IDENTIFIED BY '{pw}';\n\
             FLUSH PRIVILEGES;\n",
            pw = ROOT_PASSWORD
        ),
    )
    .map_err(io_err("writing init.sql"))?;

    let install = Command::new(find_program("mariadb-install-db", "MARIADB_INSTALL_DB"))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .arg("--user=root")
        .arg("--innodb-buffer-pool-size=32M")
        .arg("--innodb-log-file-size=16M")
        .arg(format!("--tmpdir={}", base.display()))
        // Concurrent bootstraps otherwise share /tmp temp-table names.
        .env("TMPDIR", &base)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("running mariadb-install-db"))?;
    if !install.status.success() {
        return Err(HarnessError::Install {
            status: install.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&install.stdout),
                String::from_utf8_lossy(&install.stderr)
            ),
        });
    }

    let port = free_port()?;
    let mut cmd = Command::new(find_program("mariadbd", "MARIADBD"));
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            base.join("mariadbd.pid").display()
        ))
        .arg(format!("--log-error={}", log.display()))
        .arg(format!("--tmpdir={}", base.display()))
        .arg(format!("--init-file={}", init.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--user=root")
        .arg("--skip-name-resolve")
        .arg("--skip-log-bin")
        .arg("--character-set-server=utf8mb4")
        .arg("--collation-server=utf8mb4_general_ci")
        .arg("--default-time-zone=+00:00")
        .arg(format!("--innodb-buffer-pool-size={}", opts.buffer_pool))
        .arg("--innodb-log-file-size=64M")
        .arg("--innodb-flush-log-at-trx-commit=2")
        .arg("--innodb-doublewrite=0")
        .arg("--performance-schema=OFF")
        .arg("--max-connections=1000")
        .arg("--max-allowed-packet=256M")
        // Every captured table has a shadow table, so a schema of 10,000
        // tables is 20,000 to the server. A definition cache smaller than
        // that (the default is 400) makes every information_schema query
        // over the schema re-read each definition and InnoDB's statistics
        // (`table_rows` of 10,000 tables: 8 s instead of 0.2 s; InnoDB's
        // own dictionary cache is sized by it too). The open-table cache
        // likewise, set once the server is up (see `widen_table_cache`).
        .arg("--table-definition-cache=32768")
        .arg("--table-open-cache=8192")
        .args(&opts.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = spawn_keeper(cmd, log.clone())?;
    let mut db = MariaDb {
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        password: ROOT_PASSWORD.into(),
        server: Some(Server {
            datadir: Some(tmp),
            ..server
        }),
    };

    let deadline = Instant::now() + START_TIMEOUT;
    let mut last: String;
    loop {
        if let Some(status) = db.server.as_ref().and_then(exited_status) {
            let tail = std::fs::read_to_string(&log)
                .map(|t| {
                    let lines: Vec<&str> = t.lines().collect();
                    lines[lines.len().saturating_sub(20)..].join("\n")
                })
                .unwrap_or_default();
            // Keep the log readable for the error: detach the datadir.
            if let Some(s) = db.server.as_mut() {
                if let Some(dir) = s.datadir.take() {
                    let _ = dir.keep();
                }
            }
            return Err(HarnessError::Exited { status, log, tail });
        }
        match tokio::time::timeout(Duration::from_secs(5), db.connect(None)).await {
            Ok(Ok(mut conn)) => {
                widen_table_cache(&mut conn).await;
                let _ = conn.disconnect().await;
                tracing::debug!(port, "private mariadbd is up");
                return Ok(db);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connect timed out".into(),
        }
        if Instant::now() > deadline {
            if let Some(s) = db.server.as_mut() {
                if let Some(dir) = s.datadir.take() {
                    let _ = dir.keep();
                }
            }
            return Err(HarnessError::StartTimeout {
                timeout: START_TIMEOUT,
                log,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Entries of the open-table cache of a private server.
const TABLE_OPEN_CACHE: u32 = 32_768;

/// Widens the open-table cache of a private server to [`TABLE_OPEN_CACHE`],
/// so a schema of 10,000 captured tables stays open: reopening a table
/// parses its three capture triggers, and a scan over more tables than the
/// cache holds reopens every one of them (`discover` over 10,000 tables:
/// 10 s instead of 3.5 s). At startup mariadbd caps the cache to half its
/// open-files limit (9,485 under a limit of 20,000), counting a file per
/// open table as MyISAM needs; an InnoDB table holds none (InnoDB keeps its
/// own, `innodb_open_files`), so the cap is lifted once the server is up.
/// A refusal only costs speed.
async fn widen_table_cache(conn: &mut mysql_async::Conn) {
    let sql = format!("SET GLOBAL table_open_cache = {TABLE_OPEN_CACHE}");
    if let Err(e) = conn.query_drop(sql).await {
        tracing::debug!(error = %e, "could not widen the open-table cache");
    }
}

pub(crate) fn exited_status(s: &Server) -> Option<String> {
    s.exited.lock().ok().and_then(|g| g.clone())
}

/// Spawns the child from a dedicated thread that owns it until told to stop
/// (see the module docs for why the spawning thread matters).
pub(crate) fn spawn_keeper(mut cmd: Command, log: PathBuf) -> Result<Server, HarnessError> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl and getppid are async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = PathBuf::from(cmd.get_program());
    let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let (stop_tx, stop_rx) = mpsc::channel::<KeeperMsg>();
    let (pid_tx, pid_rx) = mpsc::channel::<std::io::Result<u32>>();
    let exited = Arc::new(Mutex::new(None));
    let exited_k = exited.clone();
    std::thread::Builder::new()
        .name("mariadbd-keeper".into())
        .spawn(move || {
            let mut child: Child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                    return;
                }
            };
            let _ = pid_tx.send(Ok(child.id()));
            loop {
                match stop_rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(KeeperMsg::Stop(ack)) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        let _ = ack.send(());
                        return;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Ok(Some(status)) = child.try_wait() {
                            if let Ok(mut g) = exited_k.lock() {
                                *g = Some(status.to_string());
                            }
                            // Nothing left to keep; wait for the stop message so
                            // the owner can still acknowledge-drop cleanly.
                            if let Ok(KeeperMsg::Stop(ack)) = stop_rx.recv() {
                                let _ = ack.send(());
                            }
                            return;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                }
            }
        })
        .map_err(io_err("spawning the keeper thread"))?;
    let pid = pid_rx
        .recv()
        .map_err(|_| HarnessError::Shared("keeper thread died".into()))?
        .map_err(io_err("spawning mariadbd"))?;
    Ok(Server {
        pid,
        program,
        args,
        stop: stop_tx,
        exited,
        datadir: None,
        log,
    })
}

/// What the exit hook needs about the shared server.
struct ExitCleanup {
    pid: i32,
    dir: PathBuf,
}

static EXIT_CLEANUP: OnceLock<ExitCleanup> = OnceLock::new();

extern "C" fn cleanup_at_exit() {
    if let Some(c) = EXIT_CLEANUP.get() {
        // SAFETY: plain syscalls on a pid we spawned.
        unsafe {
            libc::kill(c.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(c.pid, &mut status, 0);
        }
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

fn register_exit_cleanup(server: &Server) {
    let Some(dir) = server.datadir.as_ref().map(|d| d.path().to_path_buf()) else {
        return;
    };
    let Ok(pid) = i32::try_from(server.pid) else {
        return;
    };
    if EXIT_CLEANUP.set(ExitCleanup { pid, dir }).is_ok() {
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
    }
}
