//! Test support: run the real `tap-planetscale` binary, and set up fresh
//! databases on the shared MariaDB.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use psdb_emulator::mariadb::MariaDb;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_tap-planetscale");

/// The shared MariaDB of this test process.
pub fn mariadb() -> &'static MariaDb {
    MariaDb::shared().expect("start the shared MariaDB")
}

/// A fresh database loaded with a fixture file from tests/fixtures.
pub async fn database_with(prefix: &str, fixture: &str) -> String {
    let db = mariadb();
    let name = db.create_database(prefix).await.expect("create database");
    let sql = std::fs::read_to_string(fixture_path(fixture)).expect("read fixture");
    db.execute(&name, &sql).await.expect("load fixture");
    name
}

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tap config that talks straight to MariaDB (no TLS, no Vitess suffix).
pub fn direct_config(database: &str) -> Value {
    let db = mariadb();
    json!({
        "host": format!("{}:{}", db.host(), db.port()),
        "database": database,
        "username": db.user(),
        "password": db.password(),
        "tls": false,
    })
}

/// A scratch directory holding the files of one test.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write scratch file");
        p
    }

    pub fn write_json(&self, name: &str, v: &Value) -> PathBuf {
        self.write(name, &serde_json::to_string_pretty(v).expect("json"))
    }
}

/// The outcome of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Parses stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The error lines of stderr (the final one-line error).
    pub fn error_line(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("tap-planetscale: error:") || l.starts_with("error:"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs the binary with arguments and extra environment, off the async
/// runtime's worker threads.
pub async fn tap(args: &[&str], env: &[(&str, &str)]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(&args).stdin(Stdio::null());
        for (k, _) in env_clean() {
            cmd.env_remove(k);
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run tap-planetscale"))
    })
    .await
    .expect("join")
}

/// Variables that would change the tap's behaviour if inherited.
fn env_clean() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("TAP_PLANETSCALE_") || k == "RUST_LOG")
        .collect()
}

/// Replaces every occurrence of `from` in string values and keys.
pub fn replace_strings(v: &Value, from: &str, to: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace(from, to)),
        Value::Array(a) => Value::Array(a.iter().map(|x| replace_strings(x, from, to)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.replace(from, to), replace_strings(x, from, to)))
                .collect(),
        ),
        other => other.clone(),
    }
}
