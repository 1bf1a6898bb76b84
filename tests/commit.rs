//! Commit mode and the stdin relay against a real HTTP server on loopback.
//!
//! [`ImportApi`] (in tests/support/import_api.rs) is a small HTTP/1.1
//! server that checks every request the way the Stitch Import API documents
//! them and answers each as the test scripts it.
//! The emulator over MariaDB is the source; records that reach the server
//! are compared with Singer-mode output and with MariaDB's tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::support::import_api::{Accepted, Answer, ImportApi, Seen, MAX_BODY, TOKEN};
use crate::support::{mariadb, numbers_sql, poll_until, tap, wait_until, Emu, Run, Singer, BIN};

/// Runs the tap with `input` on stdin.
async fn tap_with_stdin(args: Vec<String>, input: Vec<u8>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait");
        let _ = writer.join();
        Run::from(out)
    })
    .await
    .expect("join")
}

fn state_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    n.starts_with("state-") && n.ends_with(".json")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.trim_start_matches("state-")
                    .trim_end_matches(".json")
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    });
    files
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
}

/// A commit-mode config for the emulator: fast retries.
fn commit_config(emu: &Emu, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    emu.config_with(name, |c| {
        c["singer_api_backoff_ms"] = json!(5);
        c["singer_api_backoff_max_ms"] = json!(40);
        c["singer_api_timeout_seconds"] = json!(20);
        edit(c);
    })
}

/// The Import API flags for the test server and a state directory.
fn api_args(api: &ImportApi, state_dir: &Path) -> Vec<String> {
    vec![
        "--singer-api-url".into(),
        api.url(),
        "--singer-api-token".into(),
        TOKEN.into(),
        "--state-directory".into(),
        state_dir.to_str().expect("p").into(),
    ]
}

/// `sync --commit` arguments.
fn commit_args(
    config: &Path,
    catalog: &Path,
    api: &ImportApi,
    state_dir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "sync".into(),
        "--config".into(),
        config.to_str().expect("p").into(),
        "--catalog".into(),
        catalog.to_str().expect("p").into(),
        "--commit".into(),
    ];
    args.extend(api_args(api, state_dir));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `relay` arguments for the test server and a state directory.
fn relay_args(api: &ImportApi, state_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["relay".to_string()];
    args.extend(api_args(api, state_dir));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn run(args: &[String]) -> Run {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = tap(&argv, &[]).await;
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

/// The only stdout line of commit mode is the newest state file.
fn assert_prints_newest(r: &Run, dir: &Path) -> PathBuf {
    let newest = state_files(dir).pop().expect("a state file");
    assert_eq!(
        r.stdout.trim_end(),
        newest.to_str().expect("p"),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout.lines().count(), 1);
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_mode_sends_what_singer_mode_writes_in_batches_within_limits() {
    // GIVEN 3500 rows, and what Singer mode writes for them
    let emu = Emu::start(
        "c_small",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 3500))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let singer = emu.sync(&catalog, None).await.ok();
    let want: BTreeMap<u64, Value> = singer
        .records("items")
        .into_iter()
        .map(|r| (r["id"].as_u64().expect("id"), r.clone()))
        .collect();
    assert_eq!(want.len(), 3500);
    let schema = singer
        .messages
        .iter()
        .find(|m| m["type"] == "SCHEMA")
        .expect("schema")["schema"]
        .clone();
    assert!(schema["properties"]["_sdc_deleted_at"].is_object());

    // WHEN the same sync runs in commit mode, default batch size, into a
    // state directory that does not exist yet
    let api = ImportApi::start().await;
    let config = commit_config(&emu, "commit.json", |_| {});
    let dir = emu.scratch.dir.path().join("state/nested");
    let r = run(&commit_args(&config, &catalog, &api, &dir, &[])).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // THEN every record arrived once, converted exactly as in Singer mode,
    // with the SCHEMA's schema and keys, in requests within the limits
    api.assert_no_problems();
    assert_eq!(api.by_id("items"), want);
    assert_eq!(
        api.schema_of("items"),
        Some((schema.clone(), json!(["id"])))
    );
    let seen = api.seen();
    assert!(seen.iter().all(|s| s.sequences.len() <= 1000));
    assert!(seen.len() >= 4, "3500 records need at least 4 requests");
    assert!(
        seen.iter().any(|s| s.sequences.len() == 1000),
        "full requests are used"
    );
    // sequences rise strictly through the run
    let seqs: Vec<u64> = api.accepted().iter().map(|a| a.sequence).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequences rise");
    // the newest state file holds the bare state, and is the stdout line
    let newest = assert_prints_newest(&r, &dir);
    let state = read_json(&newest);
    assert!(
        state["bookmarks"]["items"]["shards"]["-"]["cursor"].is_string(),
        "{state}"
    );
    assert!(state.get("value").is_none(), "bare, not wrapped: {state}");

    // WHEN --batch-size is below 1000
    let api2 = ImportApi::start().await;
    let dir2 = emu.scratch.dir.path().join("state2");
    let r = run(&commit_args(
        &config,
        &catalog,
        &api2,
        &dir2,
        &["--batch-size", "300"],
    ))
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // THEN no request holds more than that
    api2.assert_no_problems();
    assert_eq!(api2.by_id("items").len(), 3500);
    assert!(api2.seen().iter().all(|s| s.sequences.len() <= 300));
    assert!(api2.seen().len() >= 12);

    // WHEN nothing changed and the run resumes from the newest state file
    let before = api.accepted().len();
    let r = run(&commit_args(
        &config,
        &catalog,
        &api,
        &dir,
        &["--state", newest.to_str().expect("p")],
    ))
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // THEN nothing is sent again
    assert_eq!(api.accepted().len(), before);

    // WHEN rows change and it resumes again
    emu.sql("-", "INSERT INTO items VALUES (5000, 'new', 1.5); UPDATE items SET v = 'changed' WHERE id = 7; DELETE FROM items WHERE id = 9").await;
    let newest = state_files(&dir).pop().expect("state");
    let r = run(&commit_args(
        &config,
        &catalog,
        &api,
        &dir,
        &["--state", newest.to_str().expect("p")],
    ))
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // THEN exactly the changes arrive, the delete as an upsert with
    // _sdc_deleted_at, with sequences above the first run's
    api.assert_no_problems();
    let new: Vec<Accepted> = api.accepted()[before..].to_vec();
    let ids: Vec<u64> = new
        .iter()
        .map(|a| a.data["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, vec![5000, 7, 9], "{new:?}");
    assert_eq!(new[1].data["v"], "changed");
    assert!(new[2].data["_sdc_deleted_at"].is_string());
    assert!(new[0].sequence > *seqs.last().expect("seq"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_close_to_2_mib_fill_requests_to_the_exact_limit() {
    // GIVEN rows of very different sizes, some close to 2 MiB
    let sizes: [usize; 10] = [
        1_900_000, 100_000, 50_000, 2_090_000, 900_000, 900_000, 900_000, 10, 10, 1_500_000,
    ];
    let mut sql =
        String::from("CREATE TABLE blobs (id INT NOT NULL PRIMARY KEY, body LONGTEXT);\n");
    for (i, n) in sizes.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO blobs VALUES ({}, REPEAT('x', {n}));\n",
            i + 1
        ));
    }
    let emu = Emu::start("c_big", &["-"], false, &[("-", sql)]).await;
    let catalog = emu.catalog(&[]).await;
    let api = ImportApi::start().await;
    // no time-based STATE in the middle of the copy: only size splits
    let config = commit_config(&emu, "commit.json", |c| {
        c["state_interval_seconds"] = json!(3600);
    });
    let dir = emu.scratch.dir.path().join("state");

    // WHEN they are committed
    let r = run(&commit_args(&config, &catalog, &api, &dir, &[])).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // THEN every row arrives whole
    api.assert_no_problems();
    let got = api.by_id("blobs");
    for (i, n) in sizes.iter().enumerate() {
        assert_eq!(
            got[&(i as u64 + 1)]["body"].as_str().map(str::len),
            Some(*n),
            "row {}",
            i + 1
        );
    }
    // AND each request is as full as it can be: it is within 2 MiB, and
    // the next record would not have fitted (no halving)
    let seen: Vec<Seen> = api
        .seen()
        .into_iter()
        .filter(|s| s.table == "blobs")
        .collect();
    for s in &seen {
        assert!(s.body_len <= MAX_BODY, "{s:?}");
    }
    for w in seen.windows(2) {
        let next = w[1].message_lens[0];
        assert!(
            w[0].body_len + 1 + next > MAX_BODY,
            "a request of {} bytes was sent although the next record ({next} bytes) fitted",
            w[0].body_len
        );
    }
    // the exact packing: 1.9M+100k+50k | 2.09M | 900k+900k | 900k+10+10 | 1.5M
    let counts: Vec<usize> = seen.iter().map(|s| s.message_lens.len()).collect();
    assert_eq!(counts, vec![3, 1, 2, 3, 1]);
    assert_prints_newest(&r, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_big_for_any_request_is_a_clear_error() {
    // GIVEN a row whose request alone would be over 2 MiB, between small ones
    let sql = "CREATE TABLE docs (id INT NOT NULL PRIMARY KEY, body LONGTEXT);\n\
               INSERT INTO docs VALUES (1, 'a'), (2, REPEAT('y', 2100000)), (3, 'c');\n";
    let emu = Emu::start("c_huge", &["-"], false, &[("-", sql.to_string())]).await;
    let catalog = emu.catalog(&[]).await;
    let api = ImportApi::start().await;
    let config = commit_config(&emu, "commit.json", |_| {});
    let dir = emu.scratch.dir.path().join("state");

    // WHEN committed
    let r = run(&commit_args(&config, &catalog, &api, &dir, &[])).await;

    // THEN the run fails naming the stream and the key, and nothing was
    // sent for that record
    assert_eq!(r.code, 1, "{}", r.stderr);
    let line = r.error_line();
    assert!(line.contains("stream `docs`"), "{line}");
    assert!(line.contains("id=2"), "{line}");
    assert!(line.contains("2097152"), "{line}");
    assert_eq!(line.lines().count(), 1);
    api.assert_no_problems();
    assert!(!api.by_id("docs").contains_key(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_server_errors_and_dropped_connections_are_retried() {
    // GIVEN a server that answers 429, 500, drops the connection, accepts,
    // then answers 503
    let emu = Emu::start(
        "c_retry",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 2500))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let api = ImportApi::start().await;
    api.script(vec![
        Answer::Status(429, "slow down"),
        Answer::Status(500, "oops"),
        Answer::Drop,
        Answer::Accept,
        Answer::Status(503, "unavailable"),
    ]);
    let config = commit_config(&emu, "commit.json", |_| {});
    let dir = emu.scratch.dir.path().join("state");

    // WHEN committed
    let started = Instant::now();
    let r = run(&commit_args(&config, &catalog, &api, &dir, &[])).await;

    // THEN the run succeeds, each failure was retried, and no batch that
    // got a 2xx was sent again
    assert_eq!(r.code, 0, "{}", r.stderr);
    api.assert_no_problems();
    assert_eq!(r.stderr.matches("retrying").count(), 4, "{}", r.stderr);
    for want in [
        "HTTP 429: slow down",
        "HTTP 500: oops",
        "HTTP 503: unavailable",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
    let statuses: Vec<Option<u16>> = api.seen().iter().map(|s| s.status).take(5).collect();
    assert_eq!(
        statuses,
        vec![Some(429), Some(500), None, Some(202), Some(503)]
    );
    let by_id = api.by_id("items"); // panics on a duplicate
    assert_eq!(by_id.len(), 2500);
    // the first three failures were the same batch, sent again unchanged
    let seen = api.seen();
    assert_eq!(seen[0].sequences, seen[1].sequences);
    assert_eq!(seen[0].sequences, seen[2].sequences);
    assert_eq!(seen[0].sequences, seen[3].sequences);
    assert_ne!(seen[3].sequences, seen[4].sequences);
    // backoff is bounded by the configured maximum (40 ms here)
    assert!(started.elapsed() < Duration::from_secs(60));

    // WHEN the server keeps failing
    let api = ImportApi::start().await;
    api.script(vec![Answer::Status(503, "down"); 10]);
    let config = commit_config(&emu, "commit-2.json", |c| {
        c["singer_api_max_retries"] = json!(2);
    });
    let r = run(&commit_args(
        &config,
        &catalog,
        &api,
        &emu.scratch.dir.path().join("s2"),
        &[],
    ))
    .await;
    // THEN it gives up after the configured attempts, with the last answer
    assert_eq!(r.code, 1, "{}", r.stderr);
    let line = r.error_line();
    assert!(line.contains("after 3 attempts"), "{line}");
    assert!(line.contains("HTTP 503: down"), "{line}");
    assert_eq!(api.seen().len(), 3);

    // WHEN the server takes too long to answer
    let api = ImportApi::start().await;
    api.script(vec![Answer::Hold(Arc::new(Notify::new()))]);
    let config = commit_config(&emu, "commit-3.json", |c| {
        c["singer_api_timeout_seconds"] = json!(2);
    });
    let r = run(&commit_args(
        &config,
        &catalog,
        &api,
        &emu.scratch.dir.path().join("s3"),
        &[],
    ))
    .await;
    // THEN the request times out and is sent again on a new connection
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("within 2 s"), "{}", r.stderr);
    let seen = api.seen();
    assert_eq!(seen[0].sequences, seen[1].sequences);
    assert_eq!(api.by_id("items").len(), 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_client_errors_fail_at_once_with_status_and_message() {
    let emu = Emu::start(
        "c_fatal",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 50))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let config = commit_config(&emu, "commit.json", |_| {});
    for (code, msg) in [
        (400, "Record 0 did not conform to schema"),
        (401, "Not authorized"),
        (413, "Request Entity Too Large"),
    ] {
        // GIVEN a server that refuses the first batch
        let api = ImportApi::start().await;
        api.script(vec![Answer::Status(code, msg)]);
        let dir = emu.scratch.dir.path().join(format!("state-{code}"));
        // WHEN committed
        let r = run(&commit_args(&config, &catalog, &api, &dir, &[])).await;
        // THEN the run fails at once with the status and the message
        assert_eq!(r.code, 1, "{code}: {}", r.stderr);
        let line = r.error_line();
        assert!(line.contains(&format!("HTTP {code}: {msg}")), "{line}");
        assert!(line.contains("stream `items`"), "{line}");
        assert_eq!(api.seen().len(), 1, "{code}: not retried");
        assert!(api.accepted().is_empty());
        // AND no state file covers the refused records: a run resumed from
        // the newest one (if any) on a healthy server delivers them all
        let mut args = commit_args(&config, &catalog, &api, &dir, &[]);
        if let Some(newest) = state_files(&dir).pop() {
            args.extend([
                "--state".to_string(),
                newest.to_str().expect("p").to_string(),
            ]);
        }
        let r = run(&args).await;
        assert_eq!(r.code, 0, "{code}: {}", r.stderr);
        assert_eq!(api.by_id("items").len(), 50, "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_appear_only_after_the_batches_before_them_are_accepted() {
    // GIVEN a server that holds the first two requests until told
    let api = ImportApi::start().await;
    let (first, second) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    api.script(vec![
        Answer::Hold(first.clone()),
        Answer::Hold(second.clone()),
    ]);
    let scratch = tempfile::tempdir().expect("tmp");
    let dir = scratch.path().join("st");
    let args = relay_args(&api, &dir, &[]);
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    use std::io::Write;
    let schema = r#"{"type":"SCHEMA","stream":"t","schema":{"type":"object","properties":{"id":{"type":"integer"}}},"key_properties":["id"]}"#;
    let rec = |id: u32| format!(r#"{{"type":"RECORD","stream":"t","record":{{"id":{id}}}}}"#);
    let state = |n: u32| format!(r#"{{"type":"STATE","value":{{"bookmarks":{{"n":{n}}}}}}}"#);

    // WHEN records and a STATE arrive and their batch is held
    let text = format!("{schema}\n{}\n{}\n{}\n", rec(1), rec(2), state(1));
    stdin.write_all(text.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    wait_until("the first request", Duration::from_secs(20), || {
        api.seen().len() == 1
    })
    .await;
    // THEN no state file appears while the batch is held
    let early = poll_until(Duration::from_millis(300), || {
        std::future::ready(!state_files(&dir).is_empty())
    })
    .await;
    assert!(!early, "{:?}", state_files(&dir));

    // WHEN the batch is accepted
    first.notify_one();
    // THEN the state file appears, holding the bare state value
    wait_until("the first state file", Duration::from_secs(20), || {
        state_files(&dir).len() == 1
    })
    .await;
    assert_eq!(
        read_json(&state_files(&dir)[0]),
        json!({"bookmarks": {"n": 1}})
    );

    // WHEN more records and a STATE come and that batch is held
    let text = format!("{}\n{}\n", rec(3), state(2));
    stdin.write_all(text.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    wait_until("the second request", Duration::from_secs(20), || {
        api.seen().len() == 2
    })
    .await;
    // THEN there is still only the first state file while it is held
    let early = poll_until(Duration::from_millis(300), || {
        std::future::ready(state_files(&dir).len() != 1)
    })
    .await;
    assert!(!early, "{:?}", state_files(&dir));
    second.notify_one();
    wait_until("the second state file", Duration::from_secs(20), || {
        state_files(&dir).len() == 2
    })
    .await;

    // WHEN the input ends
    drop(stdin);
    let r = tokio::task::spawn_blocking(move || Run::from(child.wait_with_output().expect("wait")))
        .await
        .expect("join");
    // THEN the relay exits 0 and prints the newest state file
    assert_eq!(r.code, 0, "{}", r.stderr);
    let newest = assert_prints_newest(&r, &dir);
    assert_eq!(read_json(&newest), json!({"bookmarks": {"n": 2}}));
    api.assert_no_problems();
    assert_eq!(api.by_id("t").len(), 3);
}

/// MariaDB's table `items` as (v, amount text).
async fn items_in(emu: &Emu) -> BTreeMap<u64, (String, String)> {
    let mut conn = mariadb()
        .connect(Some(emu.emu.shard_database("-")))
        .await
        .expect("connect");
    let rows: Vec<(u64, Option<String>, Option<String>)> = conn
        .query("SELECT id, v, CAST(amount AS CHAR) FROM items")
        .await
        .expect("select");
    let _ = conn.disconnect().await;
    rows.into_iter()
        .map(|(id, v, a)| (id, (v.unwrap_or_default(), a.unwrap_or_default())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_way_resumes_from_the_newest_state_file_with_nothing_lost() {
    // GIVEN 20000 rows and a slow server
    let emu = Emu::start(
        "c_kill",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 20_000))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let api = ImportApi::start().await;
    api.set_delay(Duration::from_millis(40));
    let config = commit_config(&emu, "commit.json", |c| {
        c["state_interval_records"] = json!(700);
    });
    let dir = emu.scratch.dir.path().join("state");
    let args = commit_args(&config, &catalog, &api, &dir, &["--batch-size", "250"]);

    // WHEN the tap is killed with SIGKILL after some batches and state files
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until(
        "some accepted batches and state files",
        Duration::from_secs(60),
        || api.accepted().len() >= 3000 && state_files(&dir).len() >= 3,
    )
    .await;
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed mid-run");
    let at_kill = api.by_id("items").len();
    assert!(at_kill < 20_000, "the kill landed before the end");
    // and rows change while it is down
    emu.sql("-", "INSERT INTO items VALUES (30000, 'late', 3.25); UPDATE items SET v = 'moved', amount = 9.99 WHERE id = 2; DELETE FROM items WHERE id = 19999").await;

    // WHEN it resumes from the newest state file, on a healthy server
    api.set_delay(Duration::ZERO);
    let newest = state_files(&dir).pop().expect("a state file");
    let mut resume = args.clone();
    resume.extend([
        "--state".to_string(),
        newest.to_str().expect("p").to_string(),
    ]);
    let r = run(&resume).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    api.assert_no_problems();

    // THEN replaying everything accepted, in sequence order, by key, gives
    // MariaDB's table: nothing was lost
    let mut accepted = api.accepted();
    accepted.sort_by_key(|a| a.sequence);
    let mut table: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for a in &accepted {
        let id = a.data["id"].as_u64().expect("id");
        if a.data["_sdc_deleted_at"].is_string() {
            table.remove(&id);
        } else {
            table.insert(
                id,
                (
                    a.data["v"].as_str().unwrap_or_default().to_string(),
                    // decimal_encoding `string`: the exact digits as text.
                    a.data["amount"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| a.data["amount"].to_string()),
                ),
            );
        }
    }
    let want = items_in(&emu).await;
    assert_eq!(table.len(), want.len());
    for (id, (v, amount)) in &want {
        let got = table.get(id).unwrap_or_else(|| panic!("id {id} lost"));
        assert_eq!(&got.0, v, "id {id}");
        assert_eq!(
            got.1.parse::<f64>().ok(),
            amount.parse::<f64>().ok(),
            "id {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_pushes_a_recorded_singer_stream() {
    // GIVEN a recorded Singer stream of two FULL_TABLE streams (with
    // ACTIVATE_VERSION and versioned records)
    let sql = format!(
        "{}CREATE TABLE notes (id INT NOT NULL PRIMARY KEY, txt TEXT, meta JSON);\n\
         INSERT INTO notes VALUES (1, 'héllo \"q\"', '{{\"a\": [1, 2.50]}}'), (2, NULL, NULL);\n",
        numbers_sql("items", 1, 1200)
    );
    let emu = Emu::start("c_relay", &["-"], false, &[("-", sql)]).await;
    let catalog = emu.catalog(&["--incremental=false"]).await;
    let recorded: Singer = emu.sync(&catalog, None).await.ok();
    assert!(recorded.count("ACTIVATE_VERSION") > 0);
    let api = ImportApi::start().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let dir = scratch.path().join("st");

    // WHEN it is piped into the relay (Go http-tap's flag names)
    let args: Vec<String> = [
        "relay",
        "--api-url",
        &api.url(),
        "--api-token",
        TOKEN,
        "--state-directory",
        dir.to_str().expect("p"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = tap_with_stdin(args, recorded.run.stdout.clone().into_bytes()).await;

    // THEN every record arrives as recorded, with its stream's schema, and
    // the last STATE is the newest state file
    assert_eq!(r.code, 0, "{}", r.stderr);
    api.assert_no_problems();
    for stream in ["items", "notes"] {
        let want: BTreeMap<u64, Value> = recorded
            .records(stream)
            .into_iter()
            .map(|r| (r["id"].as_u64().expect("id"), r.clone()))
            .collect();
        assert_eq!(api.by_id(stream), want, "{stream}");
        let schema = recorded
            .messages
            .iter()
            .find(|m| m["type"] == "SCHEMA" && m["stream"] == stream)
            .expect("schema");
        assert_eq!(
            api.schema_of(stream),
            Some((schema["schema"].clone(), schema["key_properties"].clone()))
        );
    }
    let newest = assert_prints_newest(&r, &dir);
    assert_eq!(read_json(&newest), recorded.last_state());
    // AND the records keep their order: sequences follow the input order
    let order: Vec<(String, u64)> = recorded
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD")
        .map(|m| {
            (
                m["stream"].as_str().expect("s").to_string(),
                m["record"]["id"].as_u64().expect("id"),
            )
        })
        .collect();
    let mut accepted = api.accepted();
    accepted.sort_by_key(|a| a.sequence);
    let got: Vec<(String, u64)> = accepted
        .iter()
        .map(|a| (a.table.clone(), a.data["id"].as_u64().expect("id")))
        .collect();
    assert_eq!(got, order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_input_errors_name_the_line() {
    let api = ImportApi::start().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let dir = scratch.path().join("st");
    let base = |extra: &[&str]| relay_args(&api, &dir, extra);
    let schema = r#"{"type":"SCHEMA","stream":"t","schema":{"type":"object","properties":{"id":{"type":"integer"},"p":{"type":"string"}}},"key_properties":["id"]}"#;
    let long = format!(
        r#"{{"type":"RECORD","stream":"t","record":{{"id":1,"p":"{}"}}}}"#,
        "z".repeat(2000)
    );
    let cases: Vec<(String, &[&str], &str)> = vec![
        (
            format!(
                "{{\"type\":\"STATE\",\"value\":{{}}}}\n{}\n",
                r#"{"type":"RECORD","stream":"t","record":{"id":1}}"#
            ),
            &[],
            "stdin line 2: RECORD for stream `t` before any SCHEMA",
        ),
        (
            format!("{schema}\n\n{}\n", r#"{"type":"BATCH","stream":"t"}"#),
            &[],
            "stdin line 3: unknown message type `BATCH`",
        ),
        (
            format!("{schema}\n{long}\n"),
            &["--buffer-size", "1"],
            "stdin line 2: is longer than 1024 bytes",
        ),
        (
            format!("{schema}\n{{\"type\":\"RECORD\",\"stream\":\"t\",\"record\":[1]}}\n"),
            &[],
            "stdin line 2: stream `t`: RECORD's `record` must be a JSON object, got an array",
        ),
        (
            format!("{schema}\nnot json\n"),
            &[],
            "stdin line 2: is not a Singer message",
        ),
    ];
    for (input, extra, want) in cases {
        let r = tap_with_stdin(base(extra), input.into_bytes()).await;
        assert_eq!(r.code, 2, "{want}: {}", r.stderr);
        let line = r.error_line();
        assert!(line.contains(want), "want `{want}`, got `{line}`");
        assert_eq!(line.lines().count(), 1);
    }
    // the same over-long line passes with the default limit
    let r = tap_with_stdin(base(&[]), format!("{schema}\n{long}\n").into_bytes()).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    api.assert_no_problems();
    assert_eq!(api.by_id("t").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_mode_requires_a_token_and_a_state_directory() {
    let emu = Emu::start(
        "c_flags",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 3))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let cat = catalog.to_str().expect("p");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                "sync",
                "--config",
                emu.config(),
                "--catalog",
                cat,
                "--commit",
                "--state-directory",
                "/tmp/x",
            ],
            vec![],
            "commit mode needs an Import API token",
        ),
        (
            vec![
                "sync",
                "--config",
                emu.config(),
                "--catalog",
                cat,
                "--commit",
                "--singer-api-token",
                "t",
            ],
            vec![],
            "commit mode needs a directory for its state files",
        ),
        // the config/env form of --commit
        (
            vec!["sync", "--config", emu.config(), "--catalog", cat],
            vec![
                ("TAP_PLANETSCALE_COMMIT", "true"),
                ("TAP_PLANETSCALE_SINGER_API_TOKEN", "t"),
            ],
            "commit mode needs a directory for its state files",
        ),
        (
            vec!["relay", "--state-directory", "/tmp/x"],
            vec![],
            "commit mode needs an Import API token",
        ),
        (
            vec![
                "relay",
                "--singer-api-token",
                "t",
                "--state-directory",
                "/tmp/x",
                "--singer-api-url",
                "ftp://x",
            ],
            vec![],
            "Import API URL `ftp://x` must start with http:// or https://",
        ),
        (
            vec![
                "relay",
                "--singer-api-token",
                "tok\nen",
                "--state-directory",
                "/tmp/x",
            ],
            vec![],
            "the Import API token has characters an HTTP header cannot carry",
        ),
    ];
    for (args, env, want) in cases {
        let r = tap(&args, &env).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        let line = r.error_line();
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(r.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_commit_mode_sends_what_was_read_and_writes_a_final_state_file() {
    // GIVEN a commit-mode run on a slow server
    let emu = Emu::start(
        "c_term",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 20_000))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let api = ImportApi::start().await;
    // Slow enough (80 requests × 150 ms) that the signal lands mid-run even
    // when a loaded machine wakes the test late.
    api.set_delay(Duration::from_millis(150));
    let config = commit_config(&emu, "commit.json", |_| {});
    let dir = emu.scratch.dir.path().join("state");
    let args = commit_args(&config, &catalog, &api, &dir, &["--batch-size", "250"]);
    let child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");

    // WHEN it gets SIGTERM mid-run
    wait_until("some accepted batches", Duration::from_secs(60), || {
        api.accepted().len() >= 2000
    })
    .await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let r = tokio::task::spawn_blocking(move || Run::from(child.wait_with_output().expect("wait")))
        .await
        .expect("join");

    // THEN it exits 143 after the records it read were accepted, and the
    // newest state file, printed on stdout, resumes without a gap
    // (how many records that is depends on how much the sync had already
    // read: a batch being written when the signal comes is finished)
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert!(r.stderr.contains("SIGTERM"), "{}", r.stderr);
    api.by_id("items"); // none accepted twice
    let newest = assert_prints_newest(&r, &dir);
    api.set_delay(Duration::ZERO);
    let mut resume = args.clone();
    resume.extend([
        "--state".to_string(),
        newest.to_str().expect("p").to_string(),
    ]);
    let r = run(&resume).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    api.assert_no_problems();
    let ids: std::collections::BTreeSet<u64> = api
        .accepted()
        .iter()
        .map(|a| a.data["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 20_000);
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&20_000));
}
