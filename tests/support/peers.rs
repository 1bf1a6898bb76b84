//! PlanetScale's own Go clients as test peers: the singer-tap (Connect) and
//! airbyte-source v2 (VStream), built by `scripts/peers` from the archives in
//! `../shared/peers/planetscale-go`, and run unmodified.
//!
//! They take a host without a port and dial MySQL on 3306 and gRPC on 443
//! with TLS verified against the system roots, so each emulator a peer test
//! starts listens on those ports of a loopback address of its own
//! (`127.77.x.y`: all of 127/8 is loopback), its certificate names that
//! address, and `SSL_CERT_FILE` points Go at the emulator's CA. airbyte-source
//! also insists on a host under `.connect.psdb.cloud`; [`PeerRun::hosts`]
//! names one in a private `/etc/hosts` bound over the real one in a mount
//! namespace of the peer's process alone (`unshare -m`), as DNS would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use super::{mariadb, Emu, Run, Scratch};

/// The path of a peer binary, built on first use (`scripts/peers NAME`).
pub fn peer(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers");
    let out = Command::new(&script)
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {} {name}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(
        out.status.success() && Path::new(&path).is_file(),
        "scripts/peers {name} did not build the peer (status {}): see its message above",
        out.status
    );
    built.insert(name.to_string(), PathBuf::from(&path));
    PathBuf::from(path)
}

/// A loopback address no other test of this process uses.
pub fn loopback() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // The process id spreads concurrent test processes apart.
    let base = std::process::id() % 200;
    Ipv4Addr::new(127, 77, (base + n / 250) as u8 + 1, (n % 250) as u8 + 1)
}

/// Starts an emulator as the peers need it: TLS, MySQL on `IP:3306` and
/// gRPC on `IP:443` of a fresh loopback address, fixtures loaded per shard.
pub async fn peer_emulator(keyspace: &str, shards: &[&str], fixtures: &[(&str, String)]) -> Emu {
    let ip = IpAddr::V4(loopback());
    let mut cfg = psdb_emulator::EmulatorConfig::new(mariadb(), keyspace)
        .shards(shards)
        .tls(true);
    cfg.grpc_listen = SocketAddr::new(ip, 443);
    cfg.mysql_listen = SocketAddr::new(ip, 3306);
    Emu::start_with(cfg, fixtures).await
}

/// The config PlanetScale's clients read for this emulator: the host
/// without a port, as a PlanetScale user writes it.
pub fn peer_config(emu: &Emu, host: &str) -> Value {
    let c = emu.emu.config();
    json!({
        "host": host,
        "database": emu.emu.keyspace(),
        "username": c.username,
        "password": c.password,
    })
}

/// The address a peer dials for this emulator.
pub fn peer_ip(emu: &Emu) -> IpAddr {
    emu.emu.grpc_addr().ip()
}

/// One run of a peer binary.
pub struct PeerRun<'a> {
    bin: PathBuf,
    args: Vec<String>,
    ca_file: Option<PathBuf>,
    hosts: Vec<(String, IpAddr)>,
    scratch: &'a Scratch,
}

impl<'a> PeerRun<'a> {
    pub fn new(bin: PathBuf, scratch: &'a Scratch) -> PeerRun<'a> {
        PeerRun {
            bin,
            args: Vec::new(),
            ca_file: None,
            hosts: Vec::new(),
            scratch,
        }
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// The CA Go verifies the servers against (`SSL_CERT_FILE`).
    pub fn ca(mut self, ca: &Path) -> Self {
        self.ca_file = Some(ca.to_path_buf());
        self
    }

    /// Names that resolve to these addresses for this run only.
    pub fn hosts(mut self, name: &str, ip: IpAddr) -> Self {
        self.hosts.push((name.to_string(), ip));
        self
    }

    /// Runs the peer off the async runtime's threads and returns its
    /// output whatever its exit status.
    pub async fn run(self) -> Run {
        let mut cmd = if self.hosts.is_empty() {
            Command::new(&self.bin)
        } else {
            let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for (name, ip) in &self.hosts {
                hosts.push_str(&format!("\n{ip} {name}\n"));
            }
            let file = self.scratch.write("peer-hosts", &hosts);
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            ])
            .arg(&file)
            .arg(&self.bin);
            c
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .current_dir(self.scratch.dir.path());
        if let Some(ca) = &self.ca_file {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let what = self.bin.display().to_string();
        tokio::task::spawn_blocking(move || {
            Run::from(
                cmd.output()
                    .unwrap_or_else(|e| panic!("running {what}: {e}")),
            )
        })
        .await
        .expect("join")
    }
}

/// Singer messages of a peer's stdout (non-JSON lines are a failure).
pub fn messages(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// Keeps the database busy while a Go peer reads: singer-tap ends a
/// (table, shard) at the first cursor past the position it peeked, or after
/// 90 s. On a real database other traffic moves the position on within
/// moments; here a ticker writes to a table of its own on every shard every
/// 200 ms until dropped.
pub struct Ticker {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ticker {
    pub async fn start(emu: &Emu, shards: &[&str]) -> Ticker {
        let dbs: Vec<String> = shards
            .iter()
            .map(|s| emu.emu.shard_database(s).to_string())
            .collect();
        for db in &dbs {
            mariadb()
                .execute(
                    db,
                    "CREATE TABLE IF NOT EXISTS peer_ticker (id INT PRIMARY KEY, n BIGINT); \
                     INSERT IGNORE INTO peer_ticker VALUES (1, 0)",
                )
                .await
                .expect("create ticker table");
        }
        emu.emu.refresh_capture().await.expect("refresh capture");
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                for db in &dbs {
                    let _ = mariadb()
                        .execute(db, "UPDATE peer_ticker SET n = n + 1 WHERE id = 1")
                        .await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Ticker {
            stop,
            task: Some(task),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
