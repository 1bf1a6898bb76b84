//! The `psdb-emulator` binary: ready-file contract, shard databases, clean
//! exit on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn ready_file_and_sigterm() {
    let db = mariadb();
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready.json");
    let log_path = dir.path().join("emulator.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let explicit = db.create_database("bin").await.expect("db");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_psdb-emulator"))
        .args([
            "--mariadb-url",
            &db.url(),
            "--keyspace",
            "binks",
            "--shards",
            "-80,80-",
            "--shard-database",
            &format!("80-={explicit}"),
            "--tls",
            "--cert-dir",
            &dir.path().display().to_string(),
            "--ready-file",
            &ready.display().to_string(),
        ])
        .stderr(log)
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while !ready.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "no ready file");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("emulator exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).expect("read")).expect("json");
    assert_eq!(doc["keyspace"], "binks");
    assert_eq!(doc["shards"]["-80"]["database"], "binks__80");
    assert_eq!(doc["shards"]["80-"]["database"], explicit.as_str());
    let ca = doc["ca_file"].as_str().expect("ca_file");
    assert!(std::path::Path::new(ca).exists());
    let tap = &doc["tap_config"];
    for key in [
        "host",
        "database",
        "username",
        "password",
        "mysql_host",
        "grpc_host",
        "tls",
        "tls_ca_file",
    ] {
        assert!(tap.get(key).is_some(), "tap_config lacks {key}");
    }
    assert_eq!(tap["grpc_host"], doc["grpc_addr"]);
    assert_eq!(tap["mysql_host"], doc["mysql_addr"]);
    assert!(std::net::TcpStream::connect(doc["mysql_addr"].as_str().expect("addr")).is_ok());

    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    // A log written to a file carries no colour codes.
    let log = std::fs::read_to_string(&log_path).expect("read log");
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a file: {log:?}");
}

/// `--help` documents the backing database names the emulator really uses
/// (the ready-file test above sees `binks__80` for shard `-80`).
#[test]
fn help_names_the_default_backing_databases() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psdb-emulator"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains(
            "keyspace `ks` stores shard `-` in `ks_0`, `-80` in `ks__80` and `80-` in `ks_80_`"
        ),
        "{help}"
    );
}

/// Issue 19: a table the emulator cannot capture is logged with the reason
/// and served without changes; the emulator still starts and writes its
/// ready file, and a 64-character table name is captured.
#[tokio::test]
async fn uncapturable_table_is_logged_and_the_ready_file_still_written() {
    let db = mariadb();
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready.json");
    let log = dir.path().join("stderr.log");
    let backing = db.create_database("refuse").await.expect("db");
    let long = "n".repeat(64);
    db.execute(
        &backing,
        &format!(
            "CREATE TABLE clash (id INT PRIMARY KEY, _psdb_seq INT);\
             CREATE TABLE `{long}` (id INT PRIMARY KEY);"
        ),
    )
    .await
    .expect("schema");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_psdb-emulator"))
        .args([
            "--mariadb-url",
            &db.url(),
            "--keyspace",
            "refuseks",
            &format!("--shard-database=-={backing}"),
            "--ready-file",
            &ready.display().to_string(),
        ])
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while !ready.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "no ready file");
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("emulator exited early: {status}\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&log).expect("stderr");
    let warning = text
        .lines()
        .find(|l| l.contains("table served without change capture"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(warning.contains("clash"), "{warning}");
    assert!(warning.contains("_psdb_seq"), "the reason: {warning}");
    assert!(!text.contains(&long), "the 64-character table is captured");
    let mut conn = db.connect(Some(&backing)).await.expect("connect");
    use mysql_async::prelude::Queryable;
    let triggers: Vec<String> = conn
        .exec(
            "SELECT CAST(event_object_table AS CHAR) FROM information_schema.triggers \
             WHERE trigger_schema = ?",
            (&backing,),
        )
        .await
        .expect("triggers");
    assert_eq!(
        triggers,
        vec![long.clone(), long.clone(), long],
        "only the long table's"
    );
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().expect("wait").success());
}
