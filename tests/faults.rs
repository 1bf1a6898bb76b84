//! The fault matrix and crash-and-resume trials: real faults injected into
//! the emulator (and SIGKILLs of the tap) while rows change underneath; the
//! union of everything emitted, replayed in order by primary key and
//! honouring `_sdc_deleted_at`, must equal MariaDB's final table.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use psdb_emulator::{Fault, FaultKind};
use serde_json::{json, Value};

use psdb_emulator::mariadb::MariaDb;

use crate::both_apis;
use crate::support::{mariadb, sync_args, tap, wait_until, Emu, Singer, BIN};

const SHARDS: [&str; 2] = ["-80", "80-"];

/// Rows per shard at the start: ids are odd on -80 and even on 80-.
fn seed_sql(shard: &str, rows: u64) -> String {
    let parity = if shard == "-80" { 1 } else { 0 };
    format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40), n INT);\n\
         INSERT INTO items SELECT seq * 2 - {}, CONCAT('v', seq), seq FROM seq_1_to_{rows};\n",
        1 - parity
    )
}

/// A small deterministic generator (xorshift64*), so trials are seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random single- and multi-row transactions on both shards.
async fn churn(dbs: Vec<mysql_async::Opts>, seed: u64, ops: u32, pause: Duration) {
    let mut rng = Rng(seed.wrapping_mul(2_654_435_761).max(1));
    let mut conns = Vec::new();
    for opts in dbs {
        conns.push(mysql_async::Conn::new(opts).await.expect("connect"));
    }
    for op in 0..ops {
        let s = rng.below(2) as usize;
        let parity = if s == 0 { 1 } else { 0 };
        let id = |r: &mut Rng| (r.below(3000) + 1) * 2 - (1 - parity);
        let stmt = match rng.below(5) {
            0 | 1 => format!("INSERT INTO items VALUES ({}, 'ins-{op}', {op}) ON DUPLICATE KEY UPDATE v = 'dup-{op}', n = {op}", id(&mut rng)),
            2 => format!("UPDATE items SET v = 'upd-{op}', n = n + 1 WHERE id = {}", id(&mut rng)),
            3 => format!("DELETE FROM items WHERE id = {}", id(&mut rng)),
            _ => {
                let (a, b) = (id(&mut rng), id(&mut rng));
                format!("START TRANSACTION; DELETE FROM items WHERE id = {a}; INSERT INTO items VALUES ({a}, 'tx-{op}', 0) ; UPDATE items SET v = 'tx-{op}' WHERE id = {b}; COMMIT")
            }
        };
        conns[s].query_drop(stmt).await.expect("churn statement");
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    for c in conns {
        let _ = c.disconnect().await;
    }
}

/// MariaDB's final table, over both shards.
async fn table(server: &MariaDb, emu: &Emu) -> BTreeMap<u64, (String, i64)> {
    let mut out = BTreeMap::new();
    for shard in SHARDS {
        let mut conn = server
            .connect(Some(emu.emu.shard_database(shard)))
            .await
            .expect("connect");
        let rows: Vec<(u64, Option<String>, Option<i64>)> = conn
            .query("SELECT id, v, n FROM items")
            .await
            .expect("select");
        for (id, v, n) in rows {
            out.insert(id, (v.unwrap_or_default(), n.unwrap_or_default()));
        }
    }
    out
}

/// Replays records in order onto a table keyed by `id`. Returns the number
/// of records and of duplicates (records that changed nothing: an upsert of
/// the row as it already was, or a delete of an absent row).
fn replay(messages: &[Value], into: &mut BTreeMap<u64, (String, i64)>) -> (usize, usize) {
    let (mut n, mut dup) = (0, 0);
    for m in messages.iter().filter(|m| m["type"] == "RECORD") {
        n += 1;
        let r = &m["record"];
        let id = r["id"].as_u64().expect("id");
        if r["_sdc_deleted_at"].is_string() {
            if into.remove(&id).is_none() {
                dup += 1;
            }
        } else {
            let row = (
                r["v"].as_str().unwrap_or_default().to_string(),
                r["n"].as_i64().unwrap_or_default(),
            );
            if into.insert(id, row.clone()).as_ref() == Some(&row) {
                dup += 1;
            }
        }
    }
    (n, dup)
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn last_state(messages: &[Value]) -> Option<Value> {
    messages
        .iter()
        .rev()
        .find(|m| m["type"] == "STATE")
        .map(|m| m["value"].clone())
}

struct Trial {
    /// A private MariaDB when the trial restarts it; else the shared one.
    server: Option<MariaDb>,
    emu: Emu,
    catalog: std::path::PathBuf,
    config: std::path::PathBuf,
    messages: Vec<Value>,
    state: Option<Value>,
    runs: usize,
}

fn dbs_on(server: &MariaDb, emu: &Emu) -> Vec<mysql_async::Opts> {
    SHARDS
        .iter()
        .map(|s| server.opts(Some(emu.emu.shard_database(s))))
        .collect()
}

fn dbs(emu: &Emu) -> Vec<mysql_async::Opts> {
    dbs_on(mariadb(), emu)
}

impl Trial {
    async fn new(name: &str, rows: u64, timeout_seconds: u64) -> Trial {
        let emu = Emu::start(
            name,
            &SHARDS,
            false,
            &[
                ("-80", seed_sql("-80", rows)),
                ("80-", seed_sql("80-", rows)),
            ],
        )
        .await;
        let catalog = emu.catalog(&[]).await;
        let config = emu.config_with("trial-config.json", |c| {
            c["timeout_seconds"] = json!(timeout_seconds);
            c["state_interval_records"] = json!(500);
            c["max_retries"] = json!(8);
        });
        Trial {
            server: None,
            emu,
            catalog,
            config,
            messages: Vec::new(),
            state: None,
            runs: 0,
        }
    }

    /// Starts a fresh sync (no state) in the background, for faults that
    /// must land while it runs.
    fn spawn_run(&self) -> tokio::task::JoinHandle<crate::support::Run> {
        let (config, catalog) = (self.config.clone(), self.catalog.clone());
        tokio::spawn(async move {
            let args = [
                "sync",
                "--config",
                config.to_str().expect("p"),
                "--catalog",
                catalog.to_str().expect("p"),
            ];
            tap(&args, &[]).await
        })
    }

    fn maria(&self) -> &MariaDb {
        self.server.as_ref().unwrap_or_else(|| mariadb())
    }

    /// One sync from the current state; its output joins the record.
    async fn run(&mut self) -> Singer {
        let state_file = self.state.as_ref().map(|st| {
            self.emu
                .scratch
                .write_json(&format!("trial-state-{}.json", self.runs), st)
        });
        let args = sync_args(&self.config, &self.catalog, state_file.as_deref());
        self.runs += 1;
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = Singer::parse(tap(&argv, &[]).await);
        assert!(!out.run.stderr.contains("panicked"), "{}", out.run.stderr);
        self.messages.extend(out.messages.iter().cloned());
        if let Some(st) = last_state(&out.messages) {
            self.state = Some(st);
        }
        out
    }

    /// Runs once more without faults and checks the replay against MariaDB.
    async fn finish(&mut self) -> (usize, usize) {
        self.emu.emu.faults().clear();
        self.emu.emu.faults().set_purged_before(None, 0);
        self.emu.emu.settle().await.expect("settle");
        let last = self.run().await;
        assert_eq!(last.run.code, 0, "final run: {}", last.run.stderr);
        let mut replayed = BTreeMap::new();
        let (records, duplicates) = replay(&self.messages, &mut replayed);
        let want = table(self.maria(), &self.emu).await;
        let missing: Vec<&u64> = want
            .keys()
            .filter(|k| !replayed.contains_key(k))
            .take(10)
            .collect();
        let extra: Vec<&u64> = replayed
            .keys()
            .filter(|k| !want.contains_key(k))
            .take(10)
            .collect();
        let differ: Vec<&u64> = want
            .iter()
            .filter(|(k, v)| replayed.get(k).is_some_and(|r| r != *v))
            .map(|(k, _)| k)
            .take(10)
            .collect();
        if !(missing.is_empty() && extra.is_empty() && differ.is_empty()) {
            for id in missing
                .iter()
                .chain(extra.iter())
                .chain(differ.iter())
                .take(3)
            {
                let history: Vec<String> = self
                    .messages
                    .iter()
                    .filter(|m| m["type"] == "RECORD" && m["record"]["id"] == json!(id))
                    .map(|m| m["record"].to_string())
                    .collect();
                eprintln!("id {id}: final {:?}; emitted {history:?}", want.get(id));
            }
            if let Ok(path) = std::env::var("CRASH_DUMP") {
                let text: Vec<String> = self.messages.iter().map(|m| m.to_string()).collect();
                let _ = std::fs::write(&path, text.join("\n"));
                eprintln!("dumped to {path}; shard dbs {:?}", dbs(&self.emu));
                if std::env::var("CRASH_HOLD").is_ok() {
                    std::thread::sleep(Duration::from_secs(900));
                }
            }
        }
        assert!(
            missing.is_empty() && extra.is_empty() && differ.is_empty(),
            "replay differs from MariaDB: missing {missing:?}, extra {extra:?}, different {differ:?}"
        );
        (records, duplicates)
    }
}

fn status(code: tonic::Code, message: &str) -> FaultKind {
    FaultKind::Status {
        code: code as i32,
        message: message.into(),
    }
}

/// A recoverable fault during the first run: the run itself completes.
async fn recoverable(name: &str, fault: Fault, timeout_seconds: u64) {
    let mut t = Trial::new(name, 6000, timeout_seconds).await;
    t.emu.emu.faults().set(fault);
    let d = dbs(&t.emu);
    let (_, out) = tokio::join!(churn(d, 7, 150, Duration::from_millis(2)), t.run());
    assert_eq!(
        out.run.code, 0,
        "{name}: a recoverable fault must not fail the run:\n{}",
        out.run.stderr
    );
    assert!(
        out.run.stderr.contains("retrying")
            || out.run.stderr.contains("resuming")
            || timeout_seconds < 10,
        "{name}: no retry logged:\n{}",
        out.run.stderr
    );
    t.finish().await;
}

/// A permanent fault: the run fails with one clear line and a STATE from
/// which a rerun completes.
/// `code` is the exit code the README's rule gives the fault.
async fn permanent(
    name: &str,
    arm: impl FnOnce(&Emu),
    want: &str,
    during_changes: bool,
    code: i32,
) {
    let mut t = Trial::new(name, 6000, 30).await;
    if during_changes {
        let first = t.run().await;
        assert_eq!(first.run.code, 0, "{}", first.run.stderr);
        churn(dbs(&t.emu), 11, 120, Duration::ZERO).await;
        t.emu.emu.settle().await.expect("settle");
        arm(&t.emu);
        let out = t.run().await;
        assert_eq!(out.run.code, code, "{name}: {}", out.run.stderr);
        assert!(
            out.run.error_line().contains(want),
            "{name}: {}",
            out.run.stderr
        );
        assert!(
            last_state(&out.messages).is_some(),
            "{name}: a STATE is emitted"
        );
    } else {
        arm(&t.emu);
        let d = dbs(&t.emu);
        let (_, out) = tokio::join!(churn(d, 13, 150, Duration::from_millis(2)), t.run());
        assert_eq!(out.run.code, code, "{name}: {}", out.run.stderr);
        assert!(
            out.run.error_line().contains(want),
            "{name}: {}",
            out.run.stderr
        );
        assert!(
            last_state(&out.messages).is_some(),
            "{name}: a STATE is emitted"
        );
    }
    t.finish().await;
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_unavailable_after_n_responses() {
    recoverable(
        "f_unavail",
        Fault::new(status(tonic::Code::Unavailable, "injected unavailable"), 1),
        30,
    )
    .await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_tcp_drop_mid_copy() {
    recoverable("f_dropcopy", Fault::new(FaultKind::DropConnection, 1), 30).await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stall_past_the_deadline() {
    recoverable("f_stall", Fault::new(FaultKind::Stall, 1), 2).await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_tcp_drop_during_changes() {
    let mut t = Trial::new("f_dropchg", 2000, 30).await;
    let first = t.run().await;
    assert_eq!(first.run.code, 0, "{}", first.run.stderr);
    churn(dbs(&t.emu), 17, 200, Duration::ZERO).await;
    t.emu.emu.settle().await.expect("settle");
    t.emu
        .emu
        .faults()
        .set(Fault::new(FaultKind::DropConnection, 0).persistent());
    let emu_faults = t.emu.emu.faults();
    // clear the persistent drop after a few retries
    let clear = async move {
        let from = emu_faults.fired();
        wait_until("three dropped connections", Duration::from_secs(60), || {
            emu_faults.fired() >= from + 3
        })
        .await;
        emu_faults.clear();
    };
    let (_, out) = tokio::join!(clear, t.run());
    assert_eq!(out.run.code, 0, "{}", out.run.stderr);
    assert!(
        out.run.stderr.contains("retrying") || out.run.stderr.contains("resuming"),
        "{}",
        out.run.stderr
    );
    t.finish().await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_emulator_restarted_mid_run() {
    let mut t = Trial::new("f_restart", 30_000, 30).await;
    // a stalled stream makes sure the restart lands mid-run
    t.emu
        .emu
        .faults()
        .set(Fault::new(FaultKind::Stall, 1).persistent());
    let d = dbs(&t.emu);
    // the tap runs in the background while the server goes away and comes back
    let run = t.spawn_run();
    let churning = tokio::spawn(churn(d, 19, 150, Duration::from_millis(3)));
    let faults = t.emu.emu.faults();
    wait_until("a stalled stream", Duration::from_secs(60), || faults.fired() >= 1).await;
    t.emu.restart().await;
    churning.await.expect("churn");
    let out = Singer::parse(run.await.expect("join"));
    assert_eq!(
        out.run.code, 0,
        "the run survives a restart: {}",
        out.run.stderr
    );
    assert!(
        out.run.stderr.contains("retrying") || out.run.stderr.contains("resuming"),
        "the restart hit the run: {}",
        out.run.stderr
    );
    t.messages.extend(out.messages.iter().cloned());
    t.state = last_state(&out.messages);
    t.finish().await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_mariadb_restarted_between_runs() {
    // GIVEN a keyspace on a private MariaDB (the shared one serves other tests)
    let mut server = MariaDb::start().await.expect("private MariaDB");
    let cfg = psdb_emulator::EmulatorConfig::new(&server, "f_mdb").shards(&SHARDS);
    let emu = Emu::start_with(cfg, &[]).await;
    for shard in SHARDS {
        server
            .execute(emu.emu.shard_database(shard), &seed_sql(shard, 3000))
            .await
            .expect("seed");
    }
    emu.emu.refresh_capture().await.expect("refresh");
    let catalog = emu.catalog(&[]).await;
    let config = emu.config_with("trial-config.json", |c| c["max_retries"] = json!(8));
    let mut t = Trial {
        server: None,
        emu,
        catalog,
        config,
        messages: Vec::new(),
        state: None,
        runs: 0,
    };
    let first = t.run().await;
    assert_eq!(first.run.code, 0, "{}", first.run.stderr);
    churn(dbs_on(&server, &t.emu), 23, 100, Duration::ZERO).await;
    t.emu.emu.settle().await.expect("settle");

    // WHEN MariaDB goes down hard and comes back between runs
    server.restart().await.expect("restart MariaDB");
    churn(dbs_on(&server, &t.emu), 29, 100, Duration::ZERO).await;

    // THEN the next runs pick up every change
    t.server = Some(server);
    t.finish().await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_unauthenticated_mid_run() {
    permanent(
        "f_unauth",
        |e| {
            e.emu.faults().set(Fault::new(
                status(tonic::Code::Unauthenticated, "credentials revoked"),
                1,
            ))
        },
        "refused the credentials",
        false,
        2,
    )
    .await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_purged_position() {
    permanent(
        "f_purged",
        |e| e.emu.faults().set_purged_before(None, u64::MAX),
        "purged",
        true,
        2,
    )
    .await;
}
}

both_apis! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_malformed_row() {
    permanent(
        "f_malformed",
        |e| e.emu.faults().set(Fault::new(FaultKind::MalformedRow, 0)),
        "bad data from the server",
        false,
        1,
    )
    .await;
}
}

both_apis! {
/// Crash and resume: SIGKILL the tap at seeded random moments while rows
/// change, restart from the last STATE that reached stdout, and check the
/// replay. At-least-once delivery is allowed; loss is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_resume_loses_nothing() {
    let seeds: Vec<u64> = std::env::var("CRASH_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3, 4, 5]);
    let kills_per_seed: u32 = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut report = Vec::new();
    for seed in seeds {
        let mut t = Trial::new(&format!("crash{seed}"), 8000, 30).await;
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1));
        let mut kills = 0;
        for k in 0..kills_per_seed {
            // changes arrive while the tap runs; it dies after a random
            // number of output lines (or a random delay)
            let after_lines = 1 + rng.below(if k == 0 { 12 } else { 6 });
            let churn_seed = seed * 100 + u64::from(k);
            let state_file = t
                .state
                .as_ref()
                .map(|st| t.emu.scratch.write_json(&format!("crash-state-{k}.json"), st));
            let args = sync_args(&t.config, &t.catalog, state_file.as_deref());
            let delay_ms = rng.below(400);
            let reader = tokio::task::spawn_blocking(move || {
                let mut child = Command::new(BIN)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn");
                let stdout = child.stdout.take().expect("stdout");
                let mut lines = Vec::new();
                let mut reader = BufReader::new(stdout);
                let started = std::time::Instant::now();
                let mut line = String::new();
                let mut killed = false;
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            // only whole lines count: a kill may cut the last one
                            if line.ends_with('\n') {
                                lines.push(line.trim_end().to_string());
                            }
                        }
                    }
                    if !killed
                        && (lines.len() as u64 >= after_lines
                            || started.elapsed() > Duration::from_millis(delay_ms + 200))
                    {
                        let _ = child.kill();
                        killed = true;
                    }
                }
                let status = child.wait().expect("wait");
                use std::os::unix::process::ExitStatusExt;
                (lines, killed && status.signal() == Some(9))
            });
            let d = dbs(&t.emu);
            let (_, res) = tokio::join!(churn(d, churn_seed, 60, Duration::from_millis(1)), reader);
            let (lines, killed) = res.expect("join");
            if killed {
                kills += 1;
            }
            let msgs = parse_lines(&lines.join("\n"));
            t.messages.extend(msgs.iter().cloned());
            if let Some(st) = last_state(&msgs) {
                t.state = Some(st);
            }
        }
        let (records, duplicates) = t.finish().await;
        report.push((seed, kills, records, duplicates));
    }
    let total_kills: u32 = report.iter().map(|r| r.1).sum();
    for (seed, kills, records, dup) in &report {
        println!("crash-and-resume seed {seed}: {kills} kills, {records} records, {dup} duplicates, 0 rows lost");
    }
    assert!(
        report.len() >= 5 || std::env::var("CRASH_SEEDS").is_ok(),
        "at least 5 seeds"
    );
    assert!(
        total_kills >= 20 || std::env::var("CRASH_KILLS").is_ok(),
        "at least 20 kills, got {total_kills}"
    );
}
}

both_apis! {
/// Columns added and dropped while a sync is running: the run finishes,
/// new columns are ignored, dropped ones become null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_during_a_run() {
    let t = Trial::new("f_ddl", 20_000, 3).await;
    // every session stalls after one response until the DDL is done, so
    // the change lands in the middle of the copy whatever the timing
    t.emu
        .emu
        .faults()
        .set(Fault::new(FaultKind::Stall, 1).persistent());
    let run = t.spawn_run();
    let faults = t.emu.emu.faults();
    wait_until("a stalled stream", Duration::from_secs(60), || faults.fired() >= 1).await;
    t.emu
        .front_sql("ALTER TABLE items ADD COLUMN extra INT DEFAULT 7")
        .await;
    t.emu.front_sql("ALTER TABLE items DROP COLUMN v").await;
    t.emu.emu.faults().clear();
    let out = Singer::parse(run.await.expect("join"));
    assert_eq!(out.run.code, 0, "{}", out.run.stderr);
    assert!(!out.run.stderr.contains("panicked"));
    let recs: Vec<&Value> = out
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD")
        .map(|m| &m["record"])
        .collect();
    assert_eq!(recs.len(), 40_000, "every row arrives");
    assert!(
        recs.iter().all(|r| r.get("extra").is_none()),
        "a column the catalog lacks is never emitted"
    );
    assert!(
        recs.iter().any(|r| r["v"].is_string()),
        "rows copied before the drop carry v"
    );
    assert!(
        recs.iter().any(|r| r["v"].is_null()),
        "rows copied after the drop carry v = null"
    );
    assert!(out.run.stderr.contains("dropped?"), "{}", out.run.stderr);
}
}

both_apis! {
/// A cursor the server cannot use fails clearly, naming stream and shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_the_server_cannot_use_is_a_clear_error() {
    let t = Trial::new("f_badcur", 100, 30).await;
    // a position on a server UUID this shard never had, far in the future
    let bad = tap_planetscale::pb::psdbconnect::v1alpha1::TableCursor {
        shard: "-80".into(),
        keyspace: "f_badcur".into(),
        position: "MySQL56/11111111-2222-3333-4444-555555555555:1-99999999".into(),
        last_known_pk: None,
    };
    let good = t.emu.sync(&t.catalog, None).await.ok().last_state();
    let mut state = good.clone();
    state["bookmarks"]["items"]["shards"]["-80"]["cursor"] =
        json!(tap_planetscale::state::encode_cursor(&bad));
    // a change so that the shard has something newer than its saved cursor
    t.emu
        .front_sql("INSERT INTO items VALUES (100002, 'x', 1)")
        .await;
    let out = t.emu.sync(&t.catalog, Some(&state)).await;
    // The emulator answers a position of another server UUID as purged (the
    // change log it names is gone, e.g. removed on a clean exit): an input
    // the user must change, exit 2.
    assert_eq!(out.run.code, 2, "{}", out.run.stderr);
    let line = out.run.error_line();
    assert!(line.contains("stream `items` shard `-80`"), "{line}");
    assert!(line.contains("purged"), "{line}");
    assert!(!out.run.stderr.contains("panicked"));
}
}
