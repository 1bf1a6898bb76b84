//! Tables without a primary key but with a UNIQUE key of NOT NULL columns,
//! which Vitess streams by that key (its "primary key equivalent"): the tap
//! keys them by it, follows their changes and resumes their copies, over
//! both APIs of the emulator and against the real Vitess. A UNIQUE key on a
//! NULLable column keys nothing: such a table stays keyless.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tap_planetscale::pb::binlogdata::{VEvent, VEventType};
use tap_planetscale::pb::psdbconnect::v1alpha1::TableCursor;
use tap_planetscale::pb::query::{Field, QueryResult, Row, Type};

use crate::both_apis;
use crate::keyless::vstream_events;
use crate::reliability::{last_state, spawn_sync};
use crate::support::vitess::Vt;
use crate::support::{Emu, Scratch, Singer};

/// Three tables: keyed by a one-column and by a two-column UNIQUE NOT NULL
/// key, and one whose only UNIQUE key allows NULL. Rows are inserted out
/// of key order.
const SCHEMA: &str = "\
    CREATE TABLE pke_one (note VARCHAR(16), code VARCHAR(16) NOT NULL, v INT, UNIQUE KEY k_code (code)); \
    CREATE TABLE pke_two (a INT NOT NULL, b INT NOT NULL, v VARCHAR(8), UNIQUE KEY k_ab (a, b)); \
    CREATE TABLE pke_null (a INT NULL, v INT, UNIQUE KEY k_a (a)); \
    INSERT INTO pke_one VALUES ('x', 'c', 3), (NULL, 'a', 1), ('y', 'b', 2); \
    INSERT INTO pke_two VALUES (1, 2, 'p'), (1, 1, 'q'), (2, 2, 'r'); \
    INSERT INTO pke_null VALUES (1, 1), (NULL, 2), (NULL, 2);";

/// Inserts, updates (of a non-key column) and deletes by the key.
const CHANGES: &str = "\
    INSERT INTO pke_one VALUES ('z', 'd', 4); \
    UPDATE pke_one SET v = 20, note = 'w' WHERE code = 'b'; \
    DELETE FROM pke_one WHERE code = 'c'; \
    INSERT INTO pke_two VALUES (2, 1, 'new'); \
    UPDATE pke_two SET v = 'upd' WHERE a = 1 AND b = 2; \
    DELETE FROM pke_two WHERE a = 1 AND b = 1; \
    UPDATE pke_null SET v = 9 WHERE a = 1;";

const STREAMS: [&str; 3] = ["pke_one", "pke_two", "pke_null"];

/// The stream-level metadata of `stream` in a catalog.
fn stream_metadata<'a>(catalog: &'a Value, stream: &str) -> &'a Value {
    let s = catalog["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream"] == stream)
        .unwrap_or_else(|| panic!("{stream} discovered"));
    &s["metadata"]
        .as_array()
        .expect("metadata")
        .iter()
        .find(|m| m["breadcrumb"] == json!([]))
        .expect("stream metadata")["metadata"]
}

/// The catalog says what each table is keyed by; keyed ones may be
/// followed, the NULLable one is forced to full copies.
fn assert_discovered_keys(catalog: &Value) {
    let cases = [
        ("pke_one", json!(["code"]), Some("k_code")),
        ("pke_two", json!(["a", "b"]), Some("k_ab")),
        ("pke_null", json!([]), None),
    ];
    for (stream, key, index) in cases {
        let md = stream_metadata(catalog, stream);
        assert_eq!(md["table-key-properties"], key, "{stream}: {md}");
        assert_eq!(
            md.get("primary-key-equivalent"),
            index.map(|i| json!(i)).as_ref()
        );
        match index {
            Some(_) => assert!(md.get("forced-replication-method").is_none(), "{md}"),
            None => assert_eq!(md["forced-replication-method"], "FULL_TABLE", "{md}"),
        }
    }
}

/// The catalog at `path` with every stream's method set to `method`.
fn with_method(scratch: &Scratch, path: &Path, method: &str) -> PathBuf {
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("catalog")).expect("json");
    for s in c["streams"].as_array_mut().expect("streams") {
        for m in s["metadata"].as_array_mut().expect("metadata") {
            if m["breadcrumb"] == json!([]) {
                m["metadata"]["replication-method"] = json!(method);
            }
        }
    }
    scratch.write_json(&format!("catalog-{method}.json"), &c)
}

/// One record, summarised: its key, `v`, and whether it is a delete.
fn summary(record: &Value, key: &[&str]) -> String {
    let k: Vec<String> = key.iter().map(|c| record[*c].to_string()).collect();
    if record["_sdc_deleted_at"].is_null() {
        format!("{} v={}", k.join(","), record["v"])
    } else {
        format!("{} deleted", k.join(","))
    }
}

fn summaries(out: &Singer, stream: &str, key: &[&str]) -> Vec<String> {
    out.records(stream)
        .iter()
        .map(|r| summary(r, key))
        .collect()
}

/// The first run copies every table; the second emits exactly the changes
/// of the keyed tables with their keys, and copies the keyless one again.
fn assert_copy_then_changes(first: &Singer, second: &Singer) {
    let mut one = summaries(first, "pke_one", &["code"]);
    one.sort();
    assert_eq!(one, [r#""a" v=1"#, r#""b" v=2"#, r#""c" v=3"#]);
    assert_eq!(first.records("pke_two").len(), 3);
    assert_eq!(first.records("pke_null").len(), 3, "NULL duplicates copied");
    for m in first.messages.iter().filter(|m| m["type"] == "SCHEMA") {
        let want = match m["stream"].as_str() {
            Some("pke_one") => json!(["code"]),
            Some("pke_two") => json!(["a", "b"]),
            _ => json!([]),
        };
        assert_eq!(m["key_properties"], want, "{m}");
    }

    assert_eq!(
        summaries(second, "pke_one", &["code"]),
        [r#""d" v=4"#, r#""b" v=20"#, r#""c" deleted"#],
        "changes of pke_one"
    );
    let updated = second
        .records("pke_one")
        .into_iter()
        .find(|r| r["code"] == "b")
        .expect("update");
    assert_eq!(updated["note"], "w", "the update's whole after-image");
    assert_eq!(
        summaries(second, "pke_two", &["a", "b"]),
        [r#"2,1 v="new""#, r#"1,2 v="upd""#, "1,1 deleted"],
        "changes of pke_two"
    );
    let mut kl: Vec<String> = summaries(second, "pke_null", &["a"]);
    kl.sort();
    assert_eq!(
        kl,
        ["1 v=9", "null v=2", "null v=2"],
        "pke_null copied whole"
    );
    for out in [first, second] {
        let warned: Vec<&str> = out
            .run
            .stderr
            .lines()
            .filter(|l| l.contains("has no primary key"))
            .collect();
        assert_eq!(warned.len(), 1, "{}", out.run.stderr);
        assert!(warned[0].contains("pke_null"), "{}", warned[0]);
    }
}

both_apis! {
#[tokio::test]
async fn a_table_keyed_by_a_unique_key_is_followed_by_it() {
    // GIVEN tables keyed only by UNIQUE NOT NULL keys, and one whose
    // UNIQUE key allows NULL
    let emu = Emu::start("pke", &["-"], false, &[("-", SCHEMA.to_string())]).await;

    // WHEN discovered
    let catalog = emu.catalog(&["--incremental"]).await;
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog).expect("catalog")).expect("json");

    // THEN the unique keys are their keys, and INCREMENTAL is theirs
    assert_discovered_keys(&c);
    for stream in ["pke_one", "pke_two"] {
        assert_eq!(stream_metadata(&c, stream)["replication-method"], "INCREMENTAL");
    }

    // WHEN copied, changed and synced again
    let first = emu.sync(&catalog, None).await.ok();
    emu.sql("-", CHANGES).await;
    let second = emu.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN exactly the changes arrive, with their keys
    assert_copy_then_changes(&first, &second);
}
}

#[tokio::test]
async fn real_vitess_follows_a_table_by_its_unique_key() {
    // GIVEN the same tables behind the real vtgate
    let vt = Vt::shared("vt1");
    vt.sql(
        "-",
        &format!("DROP TABLE IF EXISTS pke_one, pke_two, pke_null; {SCHEMA}"),
    )
    .await;
    vt.schema_reloaded().await;

    // WHEN discovered through vtgate, copied, changed and synced again
    let catalog = vt.catalog(&STREAMS).await;
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog).expect("catalog")).expect("json");
    assert_discovered_keys(&c);
    for stream in ["pke_one", "pke_two"] {
        assert_eq!(
            stream_metadata(&c, stream)["replication-method"],
            "INCREMENTAL"
        );
    }
    let first = vt.sync(&catalog, None).await.ok();
    vt.sql("-", CHANGES).await;
    let second = vt.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN as from the emulator: exactly the changes, with their keys
    assert_copy_then_changes(&first, &second);
}

/// Rows of `pke_resume`, inserted out of key order.
const RESUME_SCHEMA: &str = "\
    CREATE TABLE pke_resume (seq INT NOT NULL, code VARCHAR(8) NOT NULL, note TEXT, UNIQUE KEY k_code (code)); \
    INSERT INTO pke_resume VALUES (1, 'e', NULL), (2, 'a', NULL), (3, 'd', 'x'), (4, 'b', NULL), (5, 'c', 'x');";

/// A state saying the copy of `pke_resume` under version 1 stopped after
/// key `b`, as `keyspace` names it.
fn stopped_after_b(keyspace: &str) -> Value {
    let cursor = TableCursor {
        shard: "-".into(),
        keyspace: keyspace.into(),
        position: String::new(),
        last_known_pk: Some(QueryResult {
            fields: vec![Field {
                name: "code".into(),
                r#type: Type::Varchar as i32,
                ..Default::default()
            }],
            rows: vec![Row::new(&[1], b"b".to_vec().into())],
            ..Default::default()
        }),
    };
    json!({"bookmarks": {"pke_resume": {
        "shards": {"-": {"cursor": tap_planetscale::state::encode_cursor(&cursor)}},
        "version": 1,
        "initial_full_table_complete": false,
    }}})
}

/// The resumed copy sends the rows after key `b` in key order; a FULL_TABLE
/// copy keeps its version.
fn assert_resumed_after_b(out: &Singer, full_table: bool) {
    let codes: Vec<&str> = out
        .records("pke_resume")
        .iter()
        .map(|r| r["code"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(codes, ["c", "d", "e"], "{}", out.run.stderr);
    let versions: Vec<&Value> = out
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD" || m["type"] == "ACTIVATE_VERSION")
        .map(|m| &m["version"])
        .collect();
    if full_table {
        assert_eq!(versions, [&json!(1); 4], "the same copy, resumed");
    } else {
        assert_eq!(versions, [&Value::Null; 3], "a CDC stream's copy phase");
    }
    assert!(
        !out.run.stderr.contains("has no primary key"),
        "{}",
        out.run.stderr
    );
}

both_apis! {
#[tokio::test]
async fn an_interrupted_copy_resumes_after_the_unique_key() {
    // GIVEN a table keyed by a unique key whose copy stopped after key `b`
    let emu = Emu::start("pke_resume", &["-"], false, &[("-", RESUME_SCHEMA.to_string())]).await;
    let catalog = emu.catalog(&[]).await;

    for method in ["INCREMENTAL", "FULL_TABLE"] {
        // WHEN the next run starts, the stream followed or copied in full
        let catalog = with_method(&emu.scratch, &catalog, method);
        let out = emu.sync(&catalog, Some(&stopped_after_b("pke_resume"))).await.ok();

        // THEN it resumes after `b` by that key (a full copy under the
        // same version)
        assert_resumed_after_b(&out, method == "FULL_TABLE");
    }
}
}

#[tokio::test]
async fn real_vitess_resumes_an_interrupted_copy_after_the_unique_key() {
    // GIVEN the same table and state against the real vtgate
    let vt = Vt::shared("vt1");
    vt.sql(
        "-",
        &format!("DROP TABLE IF EXISTS pke_resume; {RESUME_SCHEMA}"),
    )
    .await;
    vt.schema_reloaded().await;
    let catalog = vt.catalog(&["pke_resume"]).await;

    for method in ["INCREMENTAL", "FULL_TABLE"] {
        // WHEN the next run starts
        let catalog = with_method(&vt.scratch, &catalog, method);
        let out = vt.sync(&catalog, Some(&stopped_after_b("vt1"))).await.ok();

        // THEN vttablet resumes after `b` by the unique key, as the
        // emulator does
        assert_resumed_after_b(&out, method == "FULL_TABLE");
    }
}

/// The key fields of the lastpk in a copy's VGTIDs of `table`.
async fn copy_key_fields(config: &Path, keyspace: &str, table: &str) -> Vec<String> {
    // Up to the first copy progress: a shared Vitess under load is never
    // quiet, and the stream would otherwise run to its deadline.
    let copy_progress = |e: &VEvent| {
        e.vgtid.as_ref().is_some_and(|v| {
            v.shard_gtids
                .iter()
                .any(|sg| sg.table_p_ks.iter().any(|t| t.lastpk.is_some()))
        })
    };
    let events = vstream_events(
        config,
        keyspace,
        "-",
        table,
        "",
        Duration::from_secs(3),
        copy_progress,
    )
    .await;
    events
        .iter()
        .filter(|e| e.r#type == VEventType::Vgtid as i32)
        .filter_map(|e| e.vgtid.as_ref())
        .flat_map(|v| &v.shard_gtids)
        .flat_map(|sg| &sg.table_p_ks)
        .filter_map(|t| t.lastpk.as_ref())
        .map(|pk| {
            let names: Vec<String> = pk
                .fields
                .iter()
                .map(|f| String::from_utf8_lossy(&f.name).into_owned())
                .collect();
            names.join(",")
        })
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Which index a copy is keyed by, for the cases of Vitess's choice: the
/// real vtgate and the emulator send the same lastpk fields.
#[tokio::test]
async fn the_emulator_keys_a_copy_by_the_same_index_as_the_real_vtgate() {
    // (table, definition, the keys Vitess may pick: one, but for a tie,
    // which Vitess leaves to the server's `ORDER BY … LIMIT 1`, and the
    // real vtgate was seen to pick either of the tied indexes)
    let cases: [(&str, &str, &[&[&str]]); 5] = [
        // cheapest type: int before bigint before varchar
        ("pkc_cost", "s VARCHAR(8) NOT NULL, n BIGINT NOT NULL, m INT NOT NULL, UNIQUE KEY zs (s), UNIQUE KEY yn (n), UNIQUE KEY xm (m)", &[&["m"]]),
        // summed cost: two tiny columns before one int
        ("pkc_sum", "m INT NOT NULL, e ENUM('a','b','c') NOT NULL, t TINYINT NOT NULL, UNIQUE KEY one (m), UNIQUE KEY two (t, e)", &[&["t", "e"]]),
        // a tie: either index, never both columns
        ("pkc_tie", "p INT NOT NULL, q INT NOT NULL, UNIQUE KEY zz (p), UNIQUE KEY aa (q)", &[&["p"], &["q"]]),
        // a NULLable unique key does not count
        ("pkc_null", "p INT NULL, q VARCHAR(4) NOT NULL, UNIQUE KEY kp (p), UNIQUE KEY kq (q)", &[&["q"]]),
        // a primary key wins over any unique key
        ("pkc_pk", "p INT NOT NULL, q VARCHAR(4) NOT NULL, PRIMARY KEY (q), UNIQUE KEY kp (p)", &[&["q"]]),
    ];
    let mut ddl = String::new();
    for (table, def, _) in &cases {
        ddl.push_str(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({def}); "
        ));
    }
    let rows = "INSERT INTO pkc_cost VALUES ('a', 1, 1); INSERT INTO pkc_sum VALUES (1, 'a', 1); \
                INSERT INTO pkc_tie VALUES (1, 2); INSERT INTO pkc_null VALUES (NULL, 'a'); \
                INSERT INTO pkc_pk VALUES (1, 'a');";
    let vt = Vt::shared("vt1");
    vt.sql("-", &format!("{ddl}{rows}")).await;
    vt.schema_reloaded().await;
    let emu = Emu::start("pkc", &["-"], false, &[("-", format!("{ddl}{rows}"))]).await;
    let emu_config = PathBuf::from(emu.config());

    for (table, _, want) in cases {
        let real = copy_key_fields(&vt.config, "vt1", table).await;
        let emulated = copy_key_fields(&emu_config, "pkc", table).await;
        assert!(
            want.iter().any(|w| *w == real),
            "real vtgate, {table}: {real:?}"
        );
        assert!(
            want.iter().any(|w| *w == emulated),
            "emulator, {table}: {emulated:?}"
        );
    }
}

/// A full copy of a table keyed by a unique key, killed mid-way and
/// resumed from its last STATE, sends every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_copy_resumes_by_the_unique_key_without_loss_or_duplicates() {
    // GIVEN a large table keyed by a unique key, its rows inserted in an
    // order that is not the key's (k = seq * 7919 mod N covers 0..N)
    const N: u64 = 200_000;
    let schema = format!(
        "CREATE TABLE pke_big (seq INT, k BIGINT NOT NULL, v VARCHAR(32), UNIQUE KEY k_k (k)); \
         INSERT INTO pke_big SELECT seq, (seq * 7919) % {N}, CONCAT('row-', seq) FROM seq_1_to_{N};"
    );
    let emu = Emu::start("pke_big", &["-"], false, &[("-", schema)]).await;
    // FULL_TABLE: a keyless copy would start again (duplicating what was
    // sent); this one resumes
    let catalog = emu.catalog(&["--incremental=false"]).await;

    // WHEN its copy is stopped by SIGTERM after the first records
    let mut child = spawn_sync(&emu, &catalog, None);
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < 20 || !line.contains("\"type\":\"RECORD\"") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "ended early"
        );
        lines.push(line.trim_end().to_string());
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("read rest");
    lines.extend(rest.lines().map(str::to_string));
    assert_eq!(child.wait().expect("wait").code(), Some(143));
    let state = last_state(&lines);

    // ... and the next run resumes from its last STATE
    let resumed = emu.sync(&catalog, Some(&state)).await.ok();

    // THEN together they hold every key exactly once, under one version
    let partial: Vec<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["type"] == "RECORD")
        .filter_map(|m| m["record"]["k"].as_u64())
        .collect();
    assert!((partial.len() as u64) < N, "stopped mid-copy");
    let mut all: Vec<u64> = partial
        .iter()
        .copied()
        .chain(
            resumed
                .records("pke_big")
                .iter()
                .filter_map(|r| r["k"].as_u64()),
        )
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "every key once");
    let version = state["bookmarks"]["pke_big"]["version"].clone();
    assert!(version.is_i64(), "a copy in progress: {state}");
    assert!(
        resumed
            .messages
            .iter()
            .filter(|m| m["type"] == "RECORD" || m["type"] == "ACTIVATE_VERSION")
            .all(|m| m["version"] == version),
        "the same copy, resumed under version {version}"
    );
}
