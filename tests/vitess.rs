//! The tap against a real Vitess: vtcombo v0.24 (a real vtgate and real
//! vttablets) over MariaDB, through vtgate's MySQL front and its VStream
//! API. What passes here does not rest on this project's own reading of the
//! protocols. Positions are MariaDB's (`MariaDB/0-1-N`), and MariaDB keeps
//! JSON as LONGTEXT, so a JSON column is text here: the one accepted
//! difference from the emulator.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::postgres::Postgres;
use crate::support::vitess::Vt;
use crate::support::{fixture, numbers_sql, sync_args, Emu, Singer, BIN};
use crate::sync::{expected_every_type_on, numbers_and_values, numbers_close};

/// Records replayed in order onto rows keyed by `id`: an upsert replaces
/// the row, a record with `_sdc_deleted_at` removes it.
fn replay(into: &mut BTreeMap<u64, Value>, messages: &[Value], stream: &str) {
    for m in messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == stream)
    {
        let r = &m["record"];
        let id = r["id"].as_u64().expect("id");
        if r["_sdc_deleted_at"].is_string() {
            into.remove(&id);
        } else {
            into.insert(id, r.clone());
        }
    }
}

/// A tap value equals MariaDB's answer: numbers to their precision, and
/// JSON (LONGTEXT on MariaDB, so text through vtgate) as parsed JSON.
fn same_value(got: &Value, want: &Value) -> bool {
    if got == want || (want.is_number() && numbers_close(got, want)) {
        return true;
    }
    !want.is_string()
        && got
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .as_ref()
            == Some(want)
}

/// Every replayed row equals MariaDB's, column by column.
fn assert_every_type_matches(
    got: &BTreeMap<u64, Value>,
    want: &BTreeMap<u64, BTreeMap<String, Value>>,
    when: &str,
) {
    let ids: Vec<&u64> = got.keys().collect();
    let want_ids: Vec<&u64> = want.keys().collect();
    assert_eq!(ids, want_ids, "{when}: ids");
    for (id, row) in want {
        for (col, w) in row {
            let g = &got[id][col];
            assert!(
                same_value(g, w),
                "{when}: row {id} column {col}: got {g}, MariaDB says {w}"
            );
        }
    }
}

/// MariaDB (behind the real vtgate) reports integer display widths
/// (`int(11)`), MySQL 8 (PlanetScale, and the emulator, which answers as
/// MySQL 8) does not, but for `tinyint(1)`. The width means nothing to the
/// type mapping, so the comparison drops it.
pub(crate) fn without_display_width(sql_type: &str) -> String {
    let ints = ["tinyint", "smallint", "mediumint", "int", "bigint", "year"];
    match sql_type.split_once('(') {
        Some((base, rest)) if ints.contains(&base) && !sql_type.starts_with("tinyint(1)") => {
            let after = rest.split_once(')').map(|(_, a)| a).unwrap_or("");
            format!("{base}{after}")
        }
        _ => sql_type.to_string(),
    }
}

#[tokio::test]
async fn discovery_through_real_vtgate_matches_the_emulator() {
    // GIVEN the every-type schema in an unsharded keyspace of a real Vitess,
    // a Vitess internal (GC) table beside it, and a table on both shards of
    // the sharded keyspace
    let vt1 = Vt::shared("vt1");
    vt1.sql("-", &fixture("every_type.sql")).await;
    vt1.sql(
        "-",
        "CREATE TABLE `_vt_hld_6ace8bcef73211ea87e9f875a4d24e90_20200915120410` (id INT PRIMARY KEY)",
    )
    .await;
    let vt = Vt::shared("vt");
    for shard in ["-80", "80-"] {
        vt.sql(
            shard,
            "CREATE TABLE disc_two (k1 INT NOT NULL, k2 VARCHAR(8) NOT NULL, v JSON, PRIMARY KEY (k2, k1))",
        )
        .await;
    }

    // WHEN discovering through vtgate, and through the emulator over the
    // same schema
    let run = crate::support::tap(&["discover", "--config", vt1.config()], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let real: Value = run.json();
    let emu = Emu::start("discvt", &["-"], false, &[("-", fixture("every_type.sql"))]).await;
    let run = crate::support::tap(&["discover", "--config", emu.config()], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let emulated: Value = run.json();

    // THEN the streams, keys, types and metadata are the same, but for the
    // keyspace name, the row-count estimate, and JSON, which MariaDB keeps
    // as LONGTEXT (text through a real vtgate)
    let by_name = |c: &Value| -> BTreeMap<String, Value> {
        c["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|s| (s["stream"].as_str().expect("name").to_string(), s.clone()))
            .collect()
    };
    let fixture_streams = [
        "composite_key",
        "every_type",
        "every_type_view",
        "no_pk",
        "odd name `quoted`",
    ];
    let mut real = by_name(&real);
    assert!(
        !real.keys().any(|n| n.starts_with("_vt")),
        "internal tables are left out: {:?}",
        real.keys()
    );
    // other tests share the keyspace
    real.retain(|n, _| fixture_streams.contains(&n.as_str()));
    let emulated = by_name(&emulated);
    let names: Vec<&String> = real.keys().collect();
    assert_eq!(names, fixture_streams.iter().collect::<Vec<_>>());
    assert_eq!(names, emulated.keys().collect::<Vec<_>>());
    let normalize = |s: &Value, keyspace: &str| -> Value {
        let mut s = crate::support::replace_strings(s, keyspace, "KS");
        for m in s["metadata"].as_array_mut().expect("metadata") {
            if let Some(o) = m["metadata"].as_object_mut() {
                o.remove("row-count");
                if let Some(Value::String(t)) = o.get_mut("sql-datatype") {
                    *t = without_display_width(t);
                }
            }
        }
        s
    };
    for (name, r) in &real {
        let mut r = normalize(r, "vt1");
        let mut e = normalize(&emulated[name], emu.emu.keyspace());
        if name == "every_type" {
            assert_eq!(
                r["schema"]["properties"]["t_json"]["type"],
                json!(["null", "string"]),
                "MariaDB's JSON is LONGTEXT through vtgate"
            );
            for c in [&mut r, &mut e] {
                c["schema"]["properties"]["t_json"] = Value::Null;
                for m in c["metadata"].as_array_mut().expect("metadata") {
                    if m["breadcrumb"] == json!(["properties", "t_json"]) {
                        m["metadata"]["sql-datatype"] = Value::Null;
                    }
                }
            }
        }
        if r != e {
            let (rt, et) = (
                serde_json::to_string_pretty(&r).expect("json"),
                serde_json::to_string_pretty(&e).expect("json"),
            );
            let diff: Vec<String> = rt
                .lines()
                .zip(et.lines())
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("vtgate {a} | emulator {b}"))
                .collect();
            panic!(
                "stream {name}: the real vtgate and the emulator differ:\n{}",
                diff.join("\n")
            );
        }
    }

    // AND the sharded keyspace lists its table with its key in key order,
    // also when reading from REPLICA tablets (`db@replica`)
    for (label, config) in [
        ("primary", vt.config.clone()),
        (
            "replica",
            vt.config_with("replica.json", |c| c["use_replica"] = json!(true)),
        ),
    ] {
        let run =
            crate::support::tap(&["discover", "--config", config.to_str().expect("p")], &[]).await;
        assert_eq!(run.code, 0, "{label}: {}", run.stderr);
        let c = run.json();
        let two = c["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .find(|s| s["stream"] == "disc_two")
            .unwrap_or_else(|| panic!("{label}: disc_two discovered"));
        assert_eq!(two["tap_stream_id"], json!("vt:disc_two"));
        assert_eq!(
            two["metadata"][0]["metadata"]["table-key-properties"],
            json!(["k2", "k1"]),
            "{label}"
        );
    }
}

#[tokio::test]
async fn every_type_copies_and_changes_exactly_through_real_vtgate() {
    // GIVEN the every-type rows on both shards of a real Vitess, and a table
    // for one large transaction
    let mut vt = Vt::shared("vt");
    for shard in ["-80", "80-"] {
        vt.sql(
            shard,
            &fixture("every_type.sql").replace("every_type", "ev_type"),
        )
        .await;
        vt.sql(
            shard,
            "CREATE TABLE ev_big (id BIGINT PRIMARY KEY, v VARCHAR(32))",
        )
        .await;
    }
    vt.schema_reloaded().await;
    // `_sdc_shard` tells the shards' rows apart; decimals as numbers, to
    // compare with MariaDB's numbers (discovery applies the encoding)
    vt.config = vt.config_with("meta.json", |c| {
        c["include_metadata"] = json!(true);
        numbers_and_values(c);
    });
    let catalog = vt.catalog(&["ev_type", "ev_big"]).await;

    // WHEN copying
    let first = vt.sync(&catalog, None).await.ok();

    // THEN every value equals MariaDB's own answer, on both shards
    let mut replayed: BTreeMap<&str, BTreeMap<u64, Value>> = BTreeMap::new();
    let server = vt.vitess.mariadb();
    let want = expected_every_type_on(server, &vt.database("-80"), "ev_type").await;
    let records = first.records("ev_type");
    assert_eq!(records.len(), 2 * want.len(), "every row of both shards");
    for rec in records {
        let id = rec["id"].as_u64().expect("id");
        for (col, w) in &want[&id] {
            let g = &rec[col];
            assert!(
                same_value(g, w),
                "copy: row {id} column {col}: got {g}, MariaDB says {w}"
            );
        }
    }
    // the state holds MariaDB GTID positions for both shards
    let state = first.last_state();
    for shard in ["-80", "80-"] {
        let cursor = state["bookmarks"]["ev_type"]["shards"][shard]["cursor"]
            .as_str()
            .expect("cursor");
        let text = String::from_utf8_lossy(
            &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, cursor)
                .expect("base64"),
        )
        .into_owned();
        assert!(text.contains("MariaDB/0-1-"), "{shard}: {text}");
    }

    // WHEN one shard takes a multi-statement transaction (insert, update of
    // several columns, delete), then a transaction of 25,000 rows, larger
    // than any one response
    let sets = "t_varchar = 'changed ✓', t_decimal = -99.99, t_datetime6 = '2030-01-02 03:04:05.000001', t_enum = 'large', t_set = 'green', t_blob = x'0102', t_json = '{\"k\": [1, 2]}'";
    let tx = format!(
        "START TRANSACTION; \
         INSERT INTO ev_type SELECT 10, t_tinyint, t_tinyint_u, t_bool, t_smallint, t_smallint_u, t_mediumint, t_mediumint_u, t_int, t_int_u, t_bigint, t_bigint_u, t_year, t_bit1, t_bit12, t_decimal, t_decimal_wide, t_float, t_double, t_date, t_datetime, t_datetime6, t_timestamp, t_timestamp3, t_time, t_time6, t_char, t_varchar, t_text, t_longtext, t_enum, t_set, t_binary, t_varbinary, t_blob, t_json, t_geometry, t_point FROM ev_type WHERE id = 1; \
         UPDATE ev_type SET {sets} WHERE id = 1; \
         DELETE FROM ev_type WHERE id = 2; \
         COMMIT;"
    );
    vt.sql("-80", &tx).await;
    vt.sql(
        "-80",
        "START TRANSACTION; INSERT INTO ev_big SELECT seq, CONCAT('big-', seq) FROM seq_1_to_25000; COMMIT;",
    )
    .await;
    let second = vt.sync(&catalog, Some(&state)).await.ok();

    // THEN replaying both runs gives MariaDB's rows exactly
    for out in [&first, &second] {
        replay(
            replayed.entry("ev_type").or_default(),
            &only_shard(out, "-80"),
            "ev_type",
        );
        replay(
            replayed.entry("ev_big").or_default(),
            &out.messages,
            "ev_big",
        );
    }
    let want = expected_every_type_on(server, &vt.database("-80"), "ev_type").await;
    assert_every_type_matches(&replayed["ev_type"], &want, "after changes");
    assert_eq!(
        second.records("ev_big").len(),
        25_000,
        "the large transaction"
    );
    assert_eq!(replayed["ev_big"].len(), 25_000);
    assert_eq!(replayed["ev_big"][&25_000]["v"], json!("big-25000"));
    let deletes = second
        .records("ev_type")
        .iter()
        .filter(|r| r["_sdc_deleted_at"].is_string())
        .count();
    assert_eq!(deletes, 1, "one delete");

    // AND an idle run from the last state ends at once with no records
    let started = Instant::now();
    let idle = vt.sync(&catalog, Some(&second.last_state())).await.ok();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("idle incremental run against the real vtgate: {secs:.2} s");
    assert_eq!(idle.count("RECORD"), 0);
    assert!(secs < 10.0, "an idle run waits for nothing ({secs:.2} s)");
}

/// The messages of a run, with RECORDs of other shards left out (the run
/// must have `include_metadata`).
fn only_shard(out: &Singer, shard: &str) -> Vec<Value> {
    out.messages
        .iter()
        .filter(|m| m["type"] != "RECORD" || m["record"]["_sdc_shard"] == json!(shard))
        .cloned()
        .collect()
}

#[tokio::test]
async fn ddl_during_change_capture_keeps_every_value() {
    // GIVEN a copied table on a real Vitess
    let vt = Vt::shared("vt");
    for shard in ["-80", "80-"] {
        vt.sql(
            shard,
            "CREATE TABLE ddl_t (id INT PRIMARY KEY, name VARCHAR(20), d DECIMAL(10,2)); INSERT INTO ddl_t VALUES (1, 'a', 1.50)",
        )
        .await;
    }
    vt.schema_reloaded().await;
    let catalog = vt.catalog(&["ddl_t"]).await;
    let first = vt.sync(&catalog, None).await.ok();
    assert_eq!(first.records("ddl_t").len(), 2);

    // WHEN a row is written, a column dropped and another added, and more
    // rows written, while the tap is not running
    vt.sql(
        "-80",
        "INSERT INTO ddl_t VALUES (5, 'e', 5.25); \
         ALTER TABLE ddl_t DROP COLUMN d; \
         ALTER TABLE ddl_t ADD COLUMN extra INT; \
         INSERT INTO ddl_t (id, name, extra) VALUES (6, 'f', 66); \
         UPDATE ddl_t SET name = 'E2' WHERE id = 5;",
    )
    .await;
    // the other shard takes the same DDL, as vtgate applies it everywhere
    vt.sql(
        "80-",
        "ALTER TABLE ddl_t DROP COLUMN d; ALTER TABLE ddl_t ADD COLUMN extra INT;",
    )
    .await;
    let second = vt.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN the row written before the DROP keeps its value, later rows have
    // the dropped column as null (the catalog still declares it), in order
    let recs = second.records("ddl_t");
    let got: Vec<(u64, Value, Value)> = recs
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().expect("id"),
                r["name"].clone(),
                r["d"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (5, json!("e"), json!("5.25")),
            (6, json!("f"), Value::Null),
            (5, json!("E2"), Value::Null),
        ],
        "{}",
        second.run.stderr
    );

    // WHEN the table is discovered again and the next rows arrive
    let catalog = vt.catalog(&["ddl_t"]).await;
    vt.sql(
        "-80",
        "INSERT INTO ddl_t (id, name, extra) VALUES (7, 'g', 77)",
    )
    .await;
    let third = vt.sync(&catalog, Some(&second.last_state())).await.ok();

    // THEN the SCHEMA has the new column and not the dropped one, and the
    // record matches it
    let schema = third
        .messages
        .iter()
        .find(|m| m["type"] == "SCHEMA" && m["stream"] == "ddl_t")
        .expect("SCHEMA");
    let props = schema["schema"]["properties"].as_object().expect("props");
    assert!(props.contains_key("extra") && !props.contains_key("d"));
    let recs = third.records("ddl_t");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["extra"], json!(77));
    assert!(recs[0].get("d").is_none(), "{}", recs[0]);
}

/// Runs `sync` until it has written `stop_after` STATE lines, then kills it
/// with SIGKILL (or lets it finish). Returns its whole lines and whether it
/// was killed.
fn run_and_kill(args: &[String], stop_after: usize) -> (Vec<Value>, bool) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tap");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut lines = Vec::new();
    let mut states = 0;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        // Only a kill may cut a line short; anything else unreadable on
        // stdout is the tap's fault, not the end of its run.
        let v = match line.map(|l| serde_json::from_str::<Value>(&l).map_err(|e| (e, l))) {
            Ok(Ok(v)) => v,
            _ if killed => break,
            Ok(Err((e, l))) => panic!("stdout line is not JSON ({e}): {l}"),
            Err(e) => panic!("stdout is not UTF-8 lines: {e}"),
        };
        if v["type"] == "STATE" {
            states += 1;
        }
        lines.push(v);
        if states >= stop_after && !killed {
            let _ = child.kill();
            killed = true;
        }
    }
    let status = child.wait().expect("wait");
    let stderr = err.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let was_killed = killed && status.signal() == Some(9);
    // A run that was not killed must have finished, not failed: a failed
    // run taken for a finished one would end the rounds early.
    assert!(
        was_killed || status.success(),
        "the tap failed ({status}):\n{stderr}"
    );
    (lines, was_killed)
}

/// Kills the tap again and again, each run resuming from the last STATE the
/// killed one wrote, until one finishes; returns every message in order.
async fn sync_through_kills(
    vt: &Vt<'_>,
    catalog: &std::path::Path,
    mut state: Option<Value>,
) -> (Vec<Value>, u32) {
    let mut all = Vec::new();
    // every round but the last was killed
    for round in 0..50u32 {
        let state_file = state
            .as_ref()
            .map(|s| vt.scratch.write_json(&format!("state-{round}.json"), s));
        let args = sync_args(
            &vt.config_with("crash.json", |c| {
                c["state_interval_records"] = json!(2000);
            }),
            catalog,
            state_file.as_deref(),
        );
        let (lines, killed) = tokio::task::spawn_blocking(move || run_and_kill(&args, 3))
            .await
            .expect("join");
        if let Some(s) = lines.iter().rev().find(|m| m["type"] == "STATE") {
            state = Some(s["value"].clone());
        }
        all.extend(lines);
        if !killed {
            return (all, round);
        }
    }
    panic!("the tap never finished in 50 runs");
}

/// MariaDB's rows of a `numbers_sql` table.
async fn table_rows(vt: &Vt<'_>, shard: &str, table: &str) -> BTreeMap<u64, String> {
    let mut conn = vt
        .vitess
        .mariadb()
        .connect(Some(&vt.database(shard)))
        .await
        .expect("connect");
    let rows: Vec<(u64, String)> = conn
        .query(format!("SELECT id, v FROM `{table}` ORDER BY id"))
        .await
        .expect("select");
    let _ = conn.disconnect().await;
    rows.into_iter().collect()
}

fn values(rows: &BTreeMap<u64, Value>) -> BTreeMap<u64, String> {
    rows.iter()
        .map(|(id, r)| (*id, r["v"].as_str().unwrap_or_default().to_string()))
        .collect()
}

#[tokio::test]
async fn killed_mid_copy_and_mid_changes_resumes_without_loss() {
    // GIVEN a table of 120,000 rows on a real Vitess
    let vt = Vt::shared("vt1");
    vt.sql("-", &numbers_sql("crash_items", 1, 120_000)).await;
    vt.schema_reloaded().await;
    let catalog = vt.catalog(&["crash_items"]).await;

    // WHEN the copy is killed with SIGKILL again and again, each run
    // resuming from the last STATE of the one before
    let (copy, kills) = sync_through_kills(&vt, &catalog, None).await;
    assert!(kills >= 2, "the copy was killed mid-way ({kills} kills)");
    let mut rows = BTreeMap::new();
    replay(&mut rows, &copy, "crash_items");

    // THEN no row is missing or different
    assert_eq!(
        values(&rows),
        table_rows(&vt, "-", "crash_items").await,
        "after the copy"
    );

    // WHEN 60,000 changes follow (updates, deletes and inserts in 1000-row
    // transactions) and change capture is killed the same way
    let state = copy
        .iter()
        .rev()
        .find(|m| m["type"] == "STATE")
        .map(|m| m["value"].clone());
    let mut sql = String::new();
    for k in 0..20u64 {
        let (a, b) = (k * 1000 + 1, k * 1000 + 1000);
        sql.push_str(&format!(
            "START TRANSACTION; UPDATE crash_items SET v = CONCAT('u', id) WHERE id BETWEEN {a} AND {b}; COMMIT;\n\
             START TRANSACTION; DELETE FROM crash_items WHERE id BETWEEN {} AND {}; COMMIT;\n\
             START TRANSACTION; INSERT INTO crash_items SELECT seq, CONCAT('n', seq), 0 FROM seq_{}_to_{}; COMMIT;\n",
            a + 40_000,
            b + 40_000,
            a + 200_000,
            b + 200_000
        ));
    }
    vt.sql("-", &sql).await;
    let (changes, kills) = sync_through_kills(&vt, &catalog, state).await;
    assert!(
        kills >= 2,
        "change capture was killed mid-way ({kills} kills)"
    );
    replay(&mut rows, &changes, "crash_items");

    // THEN the replayed table equals MariaDB's again
    assert_eq!(
        values(&rows),
        table_rows(&vt, "-", "crash_items").await,
        "after the changes"
    );
}

#[tokio::test]
async fn vtcombo_restarted_mid_copy_is_retried_and_resumed() {
    // GIVEN a Vitess of its own with a table being copied
    let mut vitess =
        psdb_emulator::vitess::Vitess::start(psdb_emulator::vitess::VitessConfig::new("vr"))
            .await
            .expect("start Vitess");
    let files = crate::support::Scratch::new();
    let vt = Vt::on(&vitess, "vr");
    vt.sql("-", &numbers_sql("restart_items", 1, 150_000)).await;
    vt.schema_reloaded().await;
    let catalog = std::fs::read_to_string(vt.catalog(&["restart_items"]).await).expect("catalog");
    let catalog = files.write("catalog.json", &catalog);
    let mut config = vitess.tap_config_for("vr");
    config["max_retries"] = json!(30);
    config["retry_budget_seconds"] = json!(240);
    let config = files.write_json("patient.json", &config);
    let want = table_rows(&vt, "-", "restart_items").await;
    let args = sync_args(&config, &catalog, None);
    drop(vt);

    // WHEN vtcombo is killed and started again once the copy has begun
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tap");
    let stdout = child.stdout.take().expect("stdout");
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut first = Some(first_tx);
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"RECORD\"") {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            lines.push(line);
        }
        lines
    });
    let began = tokio::time::timeout(Duration::from_secs(60), first_rx).await;
    if !matches!(began, Ok(Ok(()))) {
        let out = child.wait_with_output().expect("wait");
        panic!(
            "the copy did not begin: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    vitess.restart().await.expect("restart vtcombo");
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let lines = reader.join().expect("reader");

    // THEN the tap retried, finished, and wrote every row
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "the tap failed: {stderr}");
    assert!(stderr.contains("retrying"), "it retried: {stderr}");
    let messages: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut rows = BTreeMap::new();
    replay(&mut rows, &messages, "restart_items");
    assert_eq!(values(&rows), want);
}

/// A partial row image (`binlog_row_image=NOBLOB` on the tablet's MySQL)
/// leaves out of an update the TEXT and BLOB columns it did not touch, and
/// vttablet sends them as NULL with a `data_columns` bitmap. Written as
/// null, they would wipe the target's value: the run stops instead, naming
/// the table and the setting to fix.
#[tokio::test]
async fn a_partial_row_image_stops_the_run_instead_of_writing_nulls() {
    // GIVEN a copied table with a TEXT column on a real Vitess
    let vt = Vt::shared("vt1");
    vt.sql(
        "-",
        "DROP TABLE IF EXISTS noblob_t; \
         CREATE TABLE noblob_t (id INT PRIMARY KEY, n INT, body TEXT); \
         INSERT INTO noblob_t VALUES (1, 1, 'kept')",
    )
    .await;
    vt.schema_reloaded().await;
    let catalog = vt.catalog(&["noblob_t"]).await;
    let first = vt.sync(&catalog, None).await.ok();
    assert_eq!(first.records("noblob_t")[0]["body"], json!("kept"));

    // WHEN an update that leaves `body` alone is logged with NOBLOB images
    vt.sql(
        "-",
        "SET SESSION binlog_row_image = 'NOBLOB'; UPDATE noblob_t SET n = 2 WHERE id = 1",
    )
    .await;
    let second = vt.sync(&catalog, Some(&first.last_state())).await;

    // THEN no record carries `body` as null, and the run fails saying why
    let wiped: Vec<&Value> = second
        .records("noblob_t")
        .into_iter()
        .filter(|r| r["body"].is_null())
        .collect();
    assert!(wiped.is_empty(), "records with body wiped: {wiped:?}");
    assert_ne!(second.run.code, 0, "{}", second.run.stderr);
    for needle in ["noblob_t", "binlog_row_image", "FULL"] {
        assert!(
            second.run.stderr.contains(needle),
            "stderr names {needle}: {}",
            second.run.stderr
        );
    }
}

#[tokio::test]
async fn an_update_of_the_key_deletes_the_old_key_through_real_vtgate() {
    // GIVEN a copied table on a real Vitess, over VStream as the harness
    // configures it
    let vt = Vt::shared("vt");
    vt.sql(
        "-80",
        "CREATE TABLE keymove_t (id INT PRIMARY KEY, name VARCHAR(20)); \
         INSERT INTO keymove_t VALUES (1, 'one'), (2, 'two')",
    )
    .await;
    vt.sql(
        "80-",
        "CREATE TABLE keymove_t (id INT PRIMARY KEY, name VARCHAR(20))",
    )
    .await;
    vt.schema_reloaded().await;
    let catalog = vt.catalog(&["keymove_t"]).await;
    let first = vt.sync(&catalog, None).await.ok();
    assert_eq!(first.records("keymove_t").len(), 2);

    // WHEN a row's key changes, and another row changes in place
    vt.sql(
        "-80",
        "UPDATE keymove_t SET id = 10, name = 'ten' WHERE id = 1; \
         UPDATE keymove_t SET name = 'TWO' WHERE id = 2",
    )
    .await;
    let second = vt.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN the old key is deleted (with its before-image) before the new
    // row, and the update in place is one record
    let got: Vec<(Value, Value, bool)> = second
        .records("keymove_t")
        .iter()
        .map(|r| {
            (
                r["id"].clone(),
                r["name"].clone(),
                !r["_sdc_deleted_at"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(1), json!("one"), true),
            (json!(10), json!("ten"), false),
            (json!(2), json!("TWO"), false),
        ],
        "{}",
        second.run.stderr
    );

    // AND replayed into pipelinewise-target-postgres (hard deletes) and
    // meltanolabs-target-postgres (soft deletes), both hold MariaDB's rows
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("join");
    let dir = vt.scratch.dir.path();
    let ml = pg.meltanolabs_config("ml");
    for out in [&first, &second] {
        pg.load(
            ".venv-ppw-pg",
            &pg.target_config("ppw"),
            dir,
            &out.run.stdout,
        );
        pg.load(".venv-ml-pg", &ml, dir, &out.run.stdout);
    }
    let want = vec![
        json!({"id": 2, "name": "TWO"}),
        json!({"id": 10, "name": "ten"}),
    ];
    assert_eq!(
        pg.rows("SELECT id, name FROM ppw.keymove_t ORDER BY id"),
        want
    );
    assert_eq!(
        pg.rows("SELECT id, name FROM ml.keymove_t WHERE _sdc_deleted_at IS NULL ORDER BY id"),
        want
    );
}
