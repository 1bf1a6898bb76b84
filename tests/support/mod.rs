//! Test support: run the real `tap-planetscale` binary, and set up fresh
//! databases on the shared MariaDB.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use psdb_emulator::mariadb::MariaDb;
use serde_json::{json, Value};

pub mod destination;
pub mod import_api;
pub mod peers;
pub mod postgres;
pub mod vitess;

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

/// A fixture file's SQL text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).expect("fixture")
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

tokio::task_local! {
    /// The gRPC API (`psdbconnect` or `vstream`) the tap configs of the
    /// current test use; see [`both_apis!`].
    static API: &'static str;
}

/// Runs a test body with every tap config it writes set to `api`.
pub async fn with_api<F: std::future::Future>(api: &'static str, body: F) -> F::Output {
    API.scope(api, body).await
}

/// The API of the running test (`psdbconnect` outside [`with_api`]).
pub fn api() -> &'static str {
    API.try_with(|a| *a).unwrap_or("psdbconnect")
}

/// Declares one test per gRPC API: `<name>::psdbconnect` and
/// `<name>::vstream` run the same body, so both APIs must pass the same
/// assertions.
#[macro_export]
macro_rules! both_apis {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body() $body

            $(#[$attr])*
            async fn psdbconnect() {
                $crate::support::with_api("psdbconnect", body()).await
            }

            $(#[$attr])*
            async fn vstream() {
                $crate::support::with_api("vstream", body()).await
            }
        }
    };
}

/// The emulator of a test, replaceable by a restarted one.
pub struct Running(Option<psdb_emulator::Emulator>);

impl std::ops::Deref for Running {
    type Target = psdb_emulator::Emulator;
    fn deref(&self) -> &psdb_emulator::Emulator {
        self.0.as_ref().expect("the emulator is running")
    }
}

/// A running emulator over fresh backing databases, with a fixture loaded
/// into every shard, and the tap config to reach it.
pub struct Emu {
    pub emu: Running,
    pub scratch: Scratch,
    pub config: PathBuf,
    /// The gRPC API every config of this emulator names.
    pub api: &'static str,
}

impl Emu {
    /// Starts an emulator with the given shards; `fixtures` maps each shard
    /// to the SQL loaded into its backing database (empty: nothing).
    pub async fn start(
        keyspace: &str,
        shards: &[&str],
        tls: bool,
        fixtures: &[(&str, String)],
    ) -> Emu {
        let cfg = psdb_emulator::EmulatorConfig::new(mariadb(), keyspace)
            .shards(shards)
            .tls(tls);
        Self::start_with(cfg, fixtures).await
    }

    pub async fn start_with(
        cfg: psdb_emulator::EmulatorConfig,
        fixtures: &[(&str, String)],
    ) -> Emu {
        let emu = psdb_emulator::Emulator::start(cfg)
            .await
            .expect("start emulator");
        for (shard, sql) in fixtures {
            if !sql.is_empty() {
                mariadb()
                    .execute(emu.shard_database(shard), sql)
                    .await
                    .expect("load fixture");
            }
        }
        emu.refresh_capture().await.expect("refresh capture");
        let scratch = Scratch::new();
        let api = api();
        let mut cfg = emu.tap_config();
        cfg["api"] = json!(api);
        let config = scratch.write_json("config.json", &cfg);
        Emu {
            emu: Running(Some(emu)),
            scratch,
            config,
            api,
        }
    }

    /// Stops the emulator and starts it again on the same ports, databases
    /// and CA, as a restarted server would come back.
    pub async fn restart(&mut self) {
        let old = self.emu.0.take().expect("the emulator is running");
        let cfg = old.restart_config().expect("restart config");
        old.stop().await;
        let new = psdb_emulator::Emulator::start(cfg)
            .await
            .expect("restart emulator");
        self.emu.0 = Some(new);
    }

    pub fn config(&self) -> &str {
        self.config.to_str().expect("utf8 path")
    }

    /// Runs SQL on one shard's backing database, then waits until the
    /// change capture has numbered it.
    pub async fn sql(&self, shard: &str, sql: &str) {
        mariadb()
            .execute(self.emu.shard_database(shard), sql)
            .await
            .expect("execute");
        self.emu.settle().await.expect("settle");
    }

    /// Runs SQL through the emulator's MySQL front, as a user of the
    /// database would (DDL there also refreshes change capture at once).
    pub async fn front_sql(&self, sql: &str) {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.emu.mysql_addr().ip().to_string())
            .tcp_port(self.emu.mysql_addr().port())
            .user(Some(self.emu.config().username.clone()))
            .pass(Some(self.emu.config().password.clone()))
            .db_name(Some(self.emu.keyspace().to_string()))
            .prefer_socket(false);
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .expect("connect to the front");
        use mysql_async::prelude::Queryable;
        conn.query_drop(sql).await.expect("front statement");
        let _ = conn.disconnect().await;
        self.emu.settle().await.expect("settle");
    }

    /// Discovers with --auto-select and returns the catalog path.
    pub async fn catalog(&self, extra: &[&str]) -> PathBuf {
        let mut args = vec!["discover", "--config", self.config(), "--auto-select"];
        args.extend_from_slice(extra);
        let run = tap(&args, &[]).await;
        assert_eq!(run.code, 0, "discover failed: {}", run.stderr);
        self.scratch.write("catalog.json", &run.stdout)
    }

    /// Writes a catalog with only the named streams selected.
    pub fn select_only(&self, catalog: &Path, streams: &[&str]) -> PathBuf {
        let text = std::fs::read_to_string(catalog).expect("read catalog");
        let mut c: Value = serde_json::from_str(&text).expect("catalog json");
        for s in c["streams"].as_array_mut().expect("streams") {
            let keep = streams.contains(&s["stream"].as_str().unwrap_or(""));
            for m in s["metadata"].as_array_mut().expect("metadata") {
                if m["breadcrumb"] == json!([]) {
                    m["metadata"]["selected"] = json!(keep);
                }
            }
        }
        self.scratch.write_json("catalog-selected.json", &c)
    }

    /// `sync` with a catalog and optional state (written to a file).
    pub async fn sync(&self, catalog: &Path, state: Option<&Value>) -> Singer {
        self.sync_using(&self.config, catalog, state).await
    }

    /// `sync` with another config file.
    pub async fn sync_using(&self, config: &Path, catalog: &Path, state: Option<&Value>) -> Singer {
        run_sync(&self.scratch, config, catalog, state).await
    }

    /// Changes keys of this emulator's own tap config, which `catalog` and
    /// `sync` use.
    pub fn edit_config(&self, edit: impl FnOnce(&mut Value)) {
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.config).expect("config"))
                .expect("config json");
        edit(&mut cfg);
        self.scratch.write_json("config.json", &cfg);
    }

    /// The tap config with some keys changed, written to its own file.
    pub fn config_with(&self, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut cfg = self.emu.tap_config();
        cfg["api"] = json!(self.api);
        edit(&mut cfg);
        self.scratch.write_json(name, &cfg)
    }
}

/// A sync run's output, parsed.
pub struct Singer {
    pub run: Run,
    pub messages: Vec<Value>,
}

impl Singer {
    pub fn parse(run: Run) -> Singer {
        let messages = run
            .stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {l}\nstderr: {}", run.stderr)
                })
            })
            .collect();
        Singer { run, messages }
    }

    pub fn ok(self) -> Singer {
        assert_eq!(self.run.code, 0, "sync failed:\n{}", self.run.stderr);
        self
    }

    pub fn records(&self, stream: &str) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "RECORD" && m["stream"] == stream)
            .map(|m| &m["record"])
            .collect()
    }

    pub fn last_state(&self) -> Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m["type"] == "STATE")
            .map(|m| m["value"].clone())
            .expect("a STATE message")
    }

    pub fn count(&self, kind: &str) -> usize {
        self.messages.iter().filter(|m| m["type"] == kind).count()
    }
}

/// Waits until `ready` holds, checking every 20 ms; fails the test naming
/// `what` once `limit` has passed. Tests wait on a condition, never for a
/// fixed time: a fixed time is too short on a loaded machine and wasted on
/// an idle one.
pub async fn wait_until(what: &str, limit: std::time::Duration, mut ready: impl FnMut() -> bool) {
    wait_for(what, limit, || std::future::ready(ready())).await
}

/// [`wait_until`] for a condition that must itself wait (a query, a call).
pub async fn wait_for<F>(what: &str, limit: std::time::Duration, ready: impl FnMut() -> F)
where
    F: std::future::Future<Output = bool>,
{
    if !poll_until(limit, ready).await {
        panic!("timed out after {limit:?} waiting for {what}");
    }
}

/// The one polling loop: whether `ready` held within `limit`, for callers
/// that build their own failure message.
pub async fn poll_until<F>(limit: std::time::Duration, mut ready: impl FnMut() -> F) -> bool
where
    F: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if ready().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A table of rows `from..=to` with an id, a text and a decimal.
pub fn numbers_sql(table: &str, from: u64, to: u64) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{table}` (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(32), amount DECIMAL(10,2));\n\
         INSERT INTO `{table}` SELECT seq, CONCAT('row-', seq), seq / 100 FROM seq_{from}_to_{to};\n"
    )
}

/// A tool that scripts/setup installed into one of the project's venvs
/// (`.venv`, `.venv-meltano`, …). A missing tool fails the test: the suite
/// never skips for lack of a tool.
pub fn venv_tool(venv: &str, name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(venv)
        .join("bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is not installed: run scripts/setup",
        p.display()
    );
    p
}

/// Runs `sync` with a config, a catalog and an optional state (written to a
/// file in `scratch`), and checks that the run used the API its config
/// names.
pub async fn run_sync(
    scratch: &Scratch,
    config: &Path,
    catalog: &Path,
    state: Option<&Value>,
) -> Singer {
    let state_file = state.map(|st| scratch.write_json("state-in.json", st));
    let args = sync_args(config, catalog, state_file.as_deref());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = Singer::parse(tap(&argv, &[]).await);
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(config).expect("config"))
        .expect("config json");
    let want = cfg["api"].as_str().unwrap_or("psdbconnect");
    if out.run.stderr.contains("sync starting") {
        assert!(
            out.run.stderr.contains(&format!("api={want}")),
            "the run did not use api {want}: {}",
            out.run.stderr
        );
    }
    out
}

/// `sync` arguments for a config, a catalog and an optional state file.
pub fn sync_args(config: &Path, catalog: &Path, state: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "sync".to_string(),
        "--config".into(),
        config.to_str().expect("p").into(),
        "--catalog".into(),
        catalog.to_str().expect("p").into(),
    ];
    if let Some(st) = state {
        args.push("--state".into());
        args.push(st.to_str().expect("p").into());
    }
    args
}

/// The rows of the end-of-run table a text-log sync prints on stderr, each
/// as column name → cell.
pub fn summary_table(stderr: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut header: Option<Vec<&str>> = None;
    let mut rows = Vec::new();
    for line in stderr.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.starts_with(&["stream", "shard", "phase"]) {
            header = Some(cells);
            continue;
        }
        match &header {
            Some(h) if cells.len() == h.len() => rows.push(
                h.iter()
                    .zip(&cells)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            _ => header = None,
        }
    }
    rows
}
