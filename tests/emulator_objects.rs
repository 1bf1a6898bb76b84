//! The emulator's own objects over a user's MariaDB (issue 19, point 6): the
//! real `psdb-emulator` binary over the shared MariaDB, as a user runs it
//! over their own server. A clean exit (SIGTERM) leaves the backing database
//! as it was, a position from before it answers as purged, and after a
//! kill -9 `--cleanup` removes what was left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::support::{direct_config, mariadb, run_sync, tap, wait_for, wait_until, Scratch, BIN};

/// The emulator binary beside the tap's.
fn emulator_bin() -> PathBuf {
    let p = Path::new(BIN).with_file_name("psdb-emulator");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p psdb-emulator`",
        p.display()
    );
    p
}

/// One `psdb-emulator` process over the shared MariaDB, keyspace `objs`,
/// its one shard stored in `database`.
struct Server {
    child: Child,
    ready: Value,
}

impl Server {
    async fn start(scratch: &Scratch, database: &str, extra: &[&str]) -> Server {
        let ready_file = scratch.dir.path().join("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let log = std::fs::File::create(scratch.dir.path().join("emulator.log")).expect("log");
        let log_path = scratch.dir.path().join("emulator.log");
        let mut child = Command::new(emulator_bin())
            .args(["--mariadb-url", &mariadb().url(), "--keyspace", "objs"])
            .arg(format!("--shard-database=-={database}"))
            .arg("--ready-file")
            .arg(&ready_file)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start psdb-emulator");
        wait_until("the ready file", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("psdb-emulator exited ({status}) before it was ready:\n{log}");
            }
            ready_file.exists()
        })
        .await;
        let text = std::fs::read_to_string(&ready_file).expect("ready file");
        Server {
            child,
            ready: serde_json::from_str(&text).expect("ready json"),
        }
    }

    fn config(&self, scratch: &Scratch) -> PathBuf {
        scratch.write_json("config.json", &self.ready["tap_config"])
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the process to end; its exit code.
    async fn exit_code(mut self) -> Option<i32> {
        let mut code = None;
        wait_until(
            "the emulator to exit",
            Duration::from_secs(60),
            || match self.child.try_wait() {
                Ok(Some(status)) => {
                    code = status.code();
                    true
                }
                _ => false,
            },
        )
        .await;
        code
    }
}

/// Every `_psdb_*` object that belongs to backing database `db`: tables and
/// sequences and triggers in it, and databases named after it.
async fn leftovers(db: &str) -> Vec<String> {
    let mut conn = mariadb().connect(None).await.expect("connect");
    let tables: Vec<(String, String)> = conn
        .exec(
            "SELECT CAST(table_type AS CHAR), CAST(table_name AS CHAR) \
             FROM information_schema.tables \
             WHERE table_schema = ? AND table_name LIKE '\\_psdb\\_%'",
            (db,),
        )
        .await
        .expect("tables");
    let triggers: Vec<String> = conn
        .exec(
            "SELECT CAST(trigger_name AS CHAR) FROM information_schema.triggers \
             WHERE trigger_schema = ? AND trigger_name LIKE '\\_psdb\\_%'",
            (db,),
        )
        .await
        .expect("triggers");
    let databases: Vec<String> = conn
        .exec(
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata \
             WHERE schema_name LIKE '\\_psdb\\_%' AND (schema_name LIKE CONCAT('%', ?, '%') \
             OR schema_name = ?)",
            (db, psdb_emulator::capture::own_database(db)),
        )
        .await
        .expect("databases");
    let _ = conn.disconnect().await;
    tables
        .into_iter()
        .map(|(ty, name)| format!("{ty} {name}"))
        .chain(triggers.into_iter().map(|t| format!("TRIGGER {t}")))
        .chain(databases.into_iter().map(|d| format!("DATABASE {d}")))
        .collect()
}

/// Waits until the emulator has installed capture on `items`.
async fn captured(db: &str) {
    wait_for(
        "the capture triggers of items",
        Duration::from_secs(30),
        || async { leftovers(db).await.iter().any(|o| o.starts_with("TRIGGER")) },
    )
    .await;
}

/// The streams `discover` lists straight against MariaDB (no emulator).
async fn direct_streams(scratch: &Scratch, db: &str) -> Vec<String> {
    let config = scratch.write_json("direct.json", &direct_config(db));
    let run = tap(
        &["discover", "--config", config.to_str().expect("utf8")],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "discover: {}", run.stderr);
    let c = run.json();
    c["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["stream"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A fresh backing database holding `items`.
async fn user_database(name: &str) -> String {
    let server = mariadb();
    let db = server.create_database(name).await.expect("create database");
    server
        .execute(
            &db,
            "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(8)); \
             INSERT INTO items VALUES (1, 'a'), (2, 'b')",
        )
        .await
        .expect("user table");
    db
}

#[tokio::test]
async fn a_clean_exit_leaves_the_users_database_as_it_was() {
    // GIVEN an emulator serving a user's database, capturing its table
    let scratch = Scratch::new();
    let db = user_database("objs_clean").await;
    let server = Server::start(&scratch, &db, &[]).await;
    captured(&db).await;
    let before = leftovers(&db).await;
    assert!(
        before.iter().any(|o| o.starts_with("DATABASE")),
        "the emulator's own database exists while it runs: {before:?}"
    );
    assert!(
        before
            .iter()
            .all(|o| !o.starts_with("BASE TABLE") && !o.starts_with("SEQUENCE")),
        "no table of the emulator's in the user's database: {before:?}"
    );

    // WHEN it gets SIGTERM
    server.signal("-TERM");
    assert_eq!(server.exit_code().await, Some(0), "a clean exit");

    // THEN nothing of the emulator's is left, discover straight against
    // MariaDB lists only the user's table, and the rows are untouched
    assert_eq!(leftovers(&db).await, Vec::<String>::new());
    assert_eq!(
        direct_streams(&scratch, &db).await,
        vec!["items".to_string()]
    );
    let mut conn = mariadb().connect(Some(&db)).await.expect("connect");
    let n: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM items")
        .await
        .expect("count");
    assert_eq!(n, Some(2));
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn a_position_from_before_a_clean_exit_answers_as_purged() {
    // GIVEN a state synced from an emulator that then exited cleanly, and
    // rows written while no emulator ran
    let scratch = Scratch::new();
    let db = user_database("objs_purged").await;
    let server = Server::start(&scratch, &db, &[]).await;
    let config = server.config(&scratch);
    let run = tap(
        &[
            "discover",
            "--config",
            config.to_str().expect("utf8"),
            "--auto-select",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let catalog = scratch.write("catalog.json", &run.stdout);
    let first = run_sync(&scratch, &config, &catalog, None).await.ok();
    server.signal("-TERM");
    assert_eq!(server.exit_code().await, Some(0));
    mariadb()
        .execute(&db, "INSERT INTO items VALUES (3, 'unseen')")
        .await
        .expect("insert");

    // WHEN an emulator starts again and the tap resumes that state
    let server = Server::start(&scratch, &db, &[]).await;
    let config = server.config(&scratch);
    let second = run_sync(&scratch, &config, &catalog, Some(&first.last_state())).await;

    // THEN the run fails as purged rather than skip the unseen row
    assert_ne!(second.run.code, 0, "{}", second.run.stderr);
    assert!(
        second.run.stderr.contains("purged"),
        "{}",
        second.run.stderr
    );
    server.signal("-TERM");
    assert_eq!(server.exit_code().await, Some(0));
    assert_eq!(leftovers(&db).await, Vec::<String>::new());
}

#[tokio::test]
async fn cleanup_removes_what_a_killed_emulator_left() {
    // GIVEN an emulator killed with SIGKILL while capturing
    let scratch = Scratch::new();
    let db = user_database("objs_killed").await;
    let server = Server::start(&scratch, &db, &[]).await;
    captured(&db).await;
    server.signal("-KILL");
    server.exit_code().await;
    let left = leftovers(&db).await;
    assert!(
        left.iter().any(|o| o.starts_with("TRIGGER"))
            && left.iter().any(|o| o.starts_with("DATABASE")),
        "a kill leaves the emulator's objects: {left:?}"
    );
    assert!(
        direct_streams(&scratch, &db).await == vec!["items".to_string()],
        "even then, no _psdb_ table in the user's database"
    );

    // WHEN the cleanup command runs with the same flags
    let out = Command::new(emulator_bin())
        .args([
            "--cleanup",
            "--mariadb-url",
            &mariadb().url(),
            "--keyspace",
            "objs",
        ])
        .arg(format!("--shard-database=-={db}"))
        .output()
        .expect("run --cleanup");

    // THEN it succeeds and nothing is left
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(leftovers(&db).await, Vec::<String>::new());
}
