//! A private PostgreSQL server from Debian's packages, for the end-to-end
//! test through a Singer PostgreSQL target: fresh datadir, free port,
//! trust authentication on loopback, killed when dropped.
//!
//! PostgreSQL refuses to run as root, which CI is; then the server runs as
//! the `postgres` user the Debian package creates.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Postgres {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Child,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/setup")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .expect("no initdb under /usr/lib/postgresql: run scripts/setup")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the server's owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let sockets = dir.path().join("run");
        std::fs::create_dir(&sockets).expect("socket dir");
        std::fs::create_dir(&data).expect("data dir");
        if is_root() {
            let ok = Command::new("chmod")
                .arg("755")
                .arg(dir.path())
                .status()
                .expect("chmod")
                .success()
                && Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&sockets)
                    .arg(&data)
                    .status()
                    .expect("chown")
                    .success();
            assert!(ok, "cannot hand the scratch dir to the postgres user");
        }
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = as_owner(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&sockets)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            // Timestamps read back as text are compared in UTC.
            .args(["-c", "timezone=UTC"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let pg = Postgres {
            _dir: dir,
            bin,
            port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pg.ready() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs one SQL statement and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The rows of a query as JSON objects (`[]` when there are none).
    pub fn rows(&self, select: &str) -> Vec<Value> {
        let text = self.psql(&format!(
            "SELECT coalesce(json_agg(t), '[]'::json) FROM ({select}) t"
        ));
        match serde_json::from_str(text.trim()).expect("json_agg output") {
            Value::Array(rows) => rows,
            other => panic!("not an array: {other}"),
        }
    }

    /// A config for meltanolabs-target-postgres into `schema`, with the
    /// record metadata (which ACTIVATE_VERSION needs) and soft deletes.
    pub fn meltanolabs_config(&self, schema: &str) -> Value {
        serde_json::json!({
            "host": "127.0.0.1",
            "port": self.port,
            "user": "postgres",
            "password": "unused-with-trust-auth",
            "database": "postgres",
            "default_target_schema": schema,
            "add_record_metadata": true,
        })
    }

    /// Loads Singer lines into the target of a project venv (`.venv-ml-pg`
    /// or `.venv-ppw-pg`), as `tap | target-postgres` would.
    pub fn load(&self, venv: &str, config: &Value, dir: &Path, lines: &str) {
        let input = dir.join("singer-lines.jsonl");
        std::fs::write(&input, lines).expect("write singer lines");
        let cfg = dir.join("target-config.json");
        std::fs::write(&cfg, config.to_string()).expect("write target config");
        let out = Command::new(super::venv_tool(venv, "target-postgres"))
            .arg("--config")
            .arg(&cfg)
            .stdin(std::fs::File::open(&input).expect("singer lines"))
            .output()
            .expect("run target-postgres");
        assert!(
            out.status.success(),
            "target-postgres of {venv} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A config for pipelinewise-target-postgres.
    pub fn target_config(&self, schema: &str) -> Value {
        serde_json::json!({
            "host": "127.0.0.1",
            "port": self.port,
            "user": "postgres",
            "password": "unused-with-trust-auth",
            "dbname": "postgres",
            "default_target_schema": schema,
            "hard_delete": true,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The child is `runuser` when root; killing it would orphan the
        // server, so stop the postmaster itself, found by its own port.
        let _ = Command::new("pkill")
            .args([
                "-TERM",
                "-f",
                &format!("p {} -c listen_addresses", self.port),
            ])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
