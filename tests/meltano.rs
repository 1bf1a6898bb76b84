//! Meltano 4 from PyPI drives the tap as a custom extractor, with
//! target-jsonl as the loader, against the emulator: discovery, select
//! rules, state kept by Meltano between runs, `config test` and
//! `select --list`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{numbers_sql, venv_tool, wait_until, Emu, BIN};

/// A Meltano project in a scratch directory.
struct Project {
    dir: PathBuf,
}

impl Project {
    /// Writes `meltano.yml` for the emulator's config. Every setting that
    /// has no `kind` reaches the tap as a string, as Meltano sends it.
    fn new(emu: &Emu) -> Project {
        let dir = emu.scratch.dir.path().join("meltano");
        std::fs::create_dir_all(dir.join("out")).expect("project dir");
        let cfg = emu.emu.tap_config();
        let s = |k: &str| cfg[k].as_str().unwrap_or_default().to_string();
        let yml = format!(
            r#"default_environment: dev
project_id: tap-planetscale-tests
send_anonymous_usage_stats: false
environments:
- name: dev
plugins:
  extractors:
  - name: tap-planetscale
    namespace: tap_planetscale
    executable: {bin}
    capabilities: [catalog, discover, state, about]
    settings:
    - {{name: host}}
    - {{name: database}}
    - {{name: username}}
    - {{name: password, kind: password}}
    - {{name: mysql_host}}
    - {{name: grpc_host}}
    - {{name: tls}}
    - {{name: max_parallel_readers}}
    - {{name: state_interval_seconds, kind: integer}}
    config:
      host: "{host}"
      database: {database}
      username: {username}
      password: {password}
      mysql_host: "{mysql_host}"
      grpc_host: "{grpc_host}"
      tls: false
      max_parallel_readers: 2
      state_interval_seconds: 1
    select:
    - "{database}:items.*"
    - "{database}:big.*"
    - "!{database}:big.v"
    metadata:
      "*":
        replication-method: INCREMENTAL
  loaders:
  - name: target-jsonl
    namespace: target_jsonl
    executable: {jsonl}
    settings:
    - {{name: destination_path}}
    config:
      destination_path: out
"#,
            bin = BIN,
            host = s("host"),
            database = s("database"),
            username = s("username"),
            password = s("password"),
            mysql_host = s("mysql_host"),
            grpc_host = s("grpc_host"),
            jsonl = venv_tool(".venv", "target-jsonl").display(),
        );
        std::fs::write(dir.join("meltano.yml"), yml).expect("meltano.yml");
        Project { dir }
    }

    fn meltano(&self, args: &[&str]) -> Output {
        Command::new(venv_tool(".venv-meltano", "meltano"))
            .args(args)
            .current_dir(&self.dir)
            .env("MELTANO_SEND_ANONYMOUS_USAGE_STATS", "false")
            .env_remove("TAP_PLANETSCALE_LOG_FORMAT")
            .output()
            .expect("run meltano")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.meltano(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "meltano {args:?} failed:\n{text}");
        text
    }

    /// Records per stream in the files target-jsonl wrote since `before`.
    fn written(&self, before: &[PathBuf]) -> Vec<(String, Value)> {
        let mut rows = Vec::new();
        for f in files(&self.dir.join("out")) {
            if before.contains(&f) {
                continue;
            }
            let stream = f
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .unwrap_or_default()
                .to_string();
            for line in std::fs::read_to_string(&f).expect("read").lines() {
                rows.push((stream.clone(), serde_json::from_str(line).expect("jsonl")));
            }
        }
        rows
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meltano_runs_full_then_incremental_with_its_own_state() {
    let emu = Emu::start(
        "meltano",
        &["-80", "80-"],
        false,
        &[
            (
                "-80",
                numbers_sql("items", 1, 150) + &numbers_sql("big", 1, 20_000),
            ),
            (
                "80-",
                numbers_sql("items", 151, 300) + &numbers_sql("big", 20_001, 40_000),
            ),
        ],
    )
    .await;
    let project = Project::new(&emu);
    let ks = emu.emu.keyspace().to_string();

    // The select rules as Meltano applies them to our catalog.
    let list = project.ok(&["select", "tap-planetscale", "--list", "--all"]);
    assert!(
        list.contains(&format!("[automatic  ] {ks}:items.id")),
        "{list}"
    );
    assert!(
        list.contains(&format!("[excluded   ] {ks}:big.v")),
        "{list}"
    );
    assert!(
        list.contains(&format!("[selected   ] {ks}:big.amount")),
        "{list}"
    );

    // First run: everything.
    let run = project.ok(&["run", "tap-planetscale", "target-jsonl"]);
    let rows = project.written(&[]);
    let items = rows.iter().filter(|(s, _)| s == "items").count();
    let big: Vec<&Value> = rows
        .iter()
        .filter(|(s, _)| s == "big")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(items, 300, "{run}");
    assert_eq!(big.len(), 40_000, "{run}");
    assert!(
        big.iter().all(|r| r.get("v").is_none()),
        "deselected column sent"
    );
    let state = project.ok(&["state", "get", "dev:tap-planetscale-to-target-jsonl"]);
    assert!(
        state.contains("singer_state") && state.contains("cursor"),
        "{state}"
    );

    // Changes on both shards, then a second run from Meltano's state.
    let before = files(&project.dir.join("out"));
    emu.sql("-80", "INSERT INTO items VALUES (1001, 'new', 1.00); UPDATE items SET v = 'changed' WHERE id = 5; DELETE FROM items WHERE id = 7;").await;
    emu.sql(
        "80-",
        "UPDATE items SET amount = 9.99 WHERE id = 200; DELETE FROM big WHERE id = 30000;",
    )
    .await;
    // target-jsonl names its files by the second: the next run must start
    // in a later second for its file names to differ.
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let first = second();
    wait_until("the next second", Duration::from_secs(3), || {
        second() > first
    })
    .await;
    let run = project.ok(&["run", "tap-planetscale", "target-jsonl"]);
    let changes = project.written(&before);
    let mut got: Vec<String> = changes
        .iter()
        .map(|(s, r)| {
            let deleted = !r["_sdc_deleted_at"].is_null();
            format!(
                "{s}:{}:{}",
                r["id"],
                if deleted { "deleted" } else { "upsert" }
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "big:30000:deleted",
            "items:1001:upsert",
            "items:200:upsert",
            "items:5:upsert",
            "items:7:deleted"
        ],
        "{run}"
    );

    // `config test` runs an ordinary sync, stops at the first RECORD with
    // SIGTERM; the tap must answer it promptly.
    let started = Instant::now();
    let test = project.ok(&["config", "test", "tap-planetscale"]);
    assert!(test.contains("Plugin configuration is valid"), "{test}");
    let took = started.elapsed();
    eprintln!("meltano config test took {took:?}");
    let leftover = Command::new("pgrep")
        .args(["-f", &format!("{BIN}.*{}", project.dir.display())])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&leftover.stdout).trim().is_empty(),
        "the tap outlived `config test`"
    );
}
