//! Tables without a primary key, and TRUNCATE, against the real vtgate and
//! the emulator: what arrives over VStream, and what the tap makes of it.
//!
//! The raw-event tests read vtgate's own VStream with the tap's generated
//! client, so the policy in the tap rests on what the real server sends,
//! not on this project's reading of the Vitess source.

use std::time::Duration;

use serde_json::Value;
use tap_planetscale::pb::binlogdata::{Filter, Rule, ShardGtid, VEvent, VEventType, VGtid};
use tap_planetscale::pb::psdbconnect::v1alpha1::TableCursor;
use tap_planetscale::pb::query::{Field, QueryResult, Row, Type};
use tap_planetscale::pb::vtgate::VStreamRequest;
use tap_planetscale::psdb::PsdbClient;
use tap_planetscale::wire::vstream_batch::{Event, VStreamBatch};

use crate::both_apis;
use crate::support::vitess::Vt;
use crate::support::Emu;

/// One VStream event, summarised: its type, and for ROW events which images
/// each change carries (`B` before, `A` after), for DDL its statement.
fn summary(ev: &VEvent) -> String {
    let kind = VEventType::try_from(ev.r#type).unwrap_or(VEventType::Unknown);
    match kind {
        VEventType::Row => {
            let re = ev.row_event.clone().unwrap_or_default();
            let images: Vec<String> = re
                .row_changes
                .iter()
                .map(|c| {
                    format!(
                        "{}{}",
                        if c.before.is_some() { "B" } else { "" },
                        if c.after.is_some() { "A" } else { "" }
                    )
                })
                .collect();
            format!("ROW {}", images.join(","))
        }
        VEventType::Ddl => format!("DDL {}", ev.statement),
        VEventType::Other => format!("OTHER {}", ev.statement),
        k => k.as_str_name().to_string(),
    }
}

/// The events of a VStream of `table` from `gtid` (empty: copy first),
/// read until `quiet` passes without any but heartbeats.
pub async fn raw_events(
    vt: &Vt<'_>,
    shard: &str,
    table: &str,
    gtid: &str,
    quiet: Duration,
) -> Vec<String> {
    raw_events_of(&vt.config, &vt.keyspace, shard, table, gtid, quiet).await
}

/// [`raw_events`] from any server the tap config at `config` reaches.
async fn raw_events_of(
    config: &std::path::Path,
    keyspace: &str,
    shard: &str,
    table: &str,
    gtid: &str,
    quiet: Duration,
) -> Vec<String> {
    vstream_events(config, keyspace, shard, table, gtid, quiet, |_| false)
        .await
        .iter()
        .map(summary)
        .filter(|s| s != "HEARTBEAT")
        .collect()
}

/// The tap's client for the server the tap config at `config` reaches.
async fn client_of(config: &std::path::Path) -> PsdbClient {
    let (settings, _) = tap_planetscale::config::load(&[config.to_path_buf()], &Default::default())
        .expect("config of the server");
    PsdbClient::connect(&settings)
        .await
        .expect("connect to vtgate")
}

/// The request for every column of `table` on one shard from `gtid`.
fn events_request(keyspace: &str, shard: &str, table: &str, gtid: &str) -> VStreamRequest {
    VStreamRequest {
        tablet_type: 1,
        vgtid: Some(VGtid {
            shard_gtids: vec![ShardGtid {
                keyspace: keyspace.to_string(),
                shard: shard.to_string(),
                gtid: gtid.to_string(),
                table_p_ks: Vec::new(),
            }],
        }),
        filter: Some(Filter {
            rules: vec![Rule {
                r#match: table.to_string(),
                filter: format!("SELECT * FROM `{table}`"),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The VStream events of `table` from `gtid` (empty: copy first) of any
/// server the tap config at `config` reaches, read with the tap's client
/// until `quiet` passes without an event, or through the first response
/// that holds an event `until` accepts.
pub async fn vstream_events(
    config: &std::path::Path,
    keyspace: &str,
    shard: &str,
    table: &str,
    gtid: &str,
    quiet: Duration,
    until: fn(&VEvent) -> bool,
) -> Vec<VEvent> {
    let client = client_of(config).await;
    let req = events_request(keyspace, shard, table, gtid);
    let stream = client
        .vstream(req, Duration::from_secs(60))
        .await
        .expect("open VStream");
    responses(stream, quiet, |r| r.events.iter().any(until))
        .await
        .into_iter()
        .flat_map(|r| r.events)
        .collect()
}

/// The same stream as [`vstream_events`], read as a tap session reads it.
async fn vstream_batches(
    config: &std::path::Path,
    keyspace: &str,
    shard: &str,
    table: &str,
    gtid: &str,
    quiet: Duration,
) -> Vec<VStreamBatch> {
    let client = client_of(config).await;
    let req = events_request(keyspace, shard, table, gtid);
    let stream = client
        .vstream_batches(req, Duration::from_secs(60))
        .await
        .expect("open VStream");
    responses(stream, quiet, |_| false).await
}

/// The responses of `stream` until `quiet` passes without one, or through
/// the first that `last` accepts.
async fn responses<T>(
    mut stream: tonic::Streaming<T>,
    quiet: Duration,
    last: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(Ok(Some(resp))) = tokio::time::timeout(quiet, stream.message()).await {
        let done = last(&resp);
        out.push(resp);
        if done {
            break;
        }
    }
    out
}

/// Every row change of the events, in order: its before- and after-image.
fn changes_of(events: &[VEvent]) -> Vec<(Option<Row>, Option<Row>)> {
    events
        .iter()
        .filter_map(|e| e.row_event.as_ref())
        .flat_map(|re| re.row_changes.iter())
        .map(|c| (c.before.clone(), c.after.clone()))
        .collect()
}

/// The VGTID position of a shard in the events' VGTID, read by `current`.
async fn current(vt: &Vt<'_>, shard: &str, table: &str) -> String {
    current_of(&vt.config, &vt.keyspace, shard, table).await
}

/// [`current`] of any server the tap config at `config` reaches.
async fn current_of(config: &std::path::Path, keyspace: &str, shard: &str, table: &str) -> String {
    let (settings, _) = tap_planetscale::config::load(&[config.to_path_buf()], &Default::default())
        .expect("config of the server");
    let client = PsdbClient::connect(&settings)
        .await
        .expect("connect to vtgate");
    let target = tap_planetscale::psdb::Target {
        keyspace: keyspace.to_string(),
        shard: shard.to_string(),
        table: table.to_string(),
        tablet_type: settings.tablet_type,
        cells: Vec::new(),
    };
    client
        .current(&target, Duration::from_secs(30))
        .await
        .expect("current position")
}

/// Evidence for the keyless and TRUNCATE policies: what the real vtgate
/// sends for a table without a primary key and for `TRUNCATE TABLE`.
#[tokio::test]
async fn real_vtgate_streams_keyless_rows_as_whole_images_and_truncate_as_ddl() {
    // GIVEN a keyless table with two identical rows behind the real vtgate
    let vt = Vt::shared("vt1");
    vt.sql(
        "-",
        "DROP TABLE IF EXISTS kl_events; CREATE TABLE kl_events (a INT, b VARCHAR(8)); \
         INSERT INTO kl_events VALUES (1,'x'),(1,'x'),(2,'y')",
    )
    .await;
    vt.schema_reloaded().await;

    // WHEN it is copied, then updated, deleted from and truncated
    let copy = raw_events(&vt, "-", "kl_events", "", Duration::from_secs(3)).await;
    let pos = current(&vt, "-", "kl_events").await;
    vt.sql(
        "-",
        "UPDATE kl_events SET b = 'z' WHERE a = 1; DELETE FROM kl_events WHERE a = 2; \
         TRUNCATE TABLE kl_events; INSERT INTO kl_events VALUES (3, 'w')",
    )
    .await;
    let changes = raw_events(&vt, "-", "kl_events", &pos, Duration::from_secs(3)).await;

    // THEN the copy holds both duplicates, the update two whole-row
    // before/after pairs, the delete a before-image, and TRUNCATE one DDL
    // event with its statement (no row deletes)
    let rows: Vec<&String> = copy.iter().filter(|e| e.starts_with("ROW")).collect();
    assert_eq!(rows, ["ROW A", "ROW A", "ROW A"], "copy: {copy:?}");
    let interesting: Vec<&String> = changes
        .iter()
        .filter(|e| e.starts_with("ROW") || e.starts_with("DDL"))
        .collect();
    assert_eq!(
        interesting,
        [
            "ROW BA,BA",
            "ROW B",
            "DDL TRUNCATE TABLE kl_events",
            "ROW A"
        ],
        "changes: {changes:?}"
    );
}

/// Table `name` made by `schema` on the real Vitess (keyspace vt1) and on
/// an emulator of its own (keyspace `name`): the emulator, its tap config,
/// and each side's current position.
async fn on_both(
    name: &str,
    schema: &str,
) -> (Vt<'static>, Emu, std::path::PathBuf, String, String) {
    let vt = Vt::shared("vt1");
    vt.sql("-", &format!("DROP TABLE IF EXISTS {name}; {schema}"))
        .await;
    vt.schema_reloaded().await;
    let emu = Emu::start(name, &["-"], false, &[("-", schema.to_string())]).await;
    let emu_config = std::path::PathBuf::from(emu.config());
    let vt_pos = current(&vt, "-", name).await;
    let emu_pos = current_of(&emu_config, name, "-", name).await;
    (vt, emu, emu_config, vt_pos, emu_pos)
}

/// A TRUNCATE over VStream: the real vtgate and the emulator send the same
/// events for it, its position then one DDL with the statement (no row
/// deletes), and rows after it as usual. The real one is truncated straight
/// on MariaDB (its binlog holds the statement either way); the emulator
/// through its MySQL front, the only TRUNCATE it can see.
#[tokio::test]
async fn truncate_arrives_as_the_same_ddl_from_the_emulator_and_the_real_vtgate() {
    // GIVEN the same table on the real Vitess and on the emulator
    let schema = "CREATE TABLE tr_same (id INT PRIMARY KEY); INSERT INTO tr_same VALUES (1), (2);";
    let (vt, emu, emu_config, vt_pos, emu_pos) = on_both("tr_same", schema).await;

    // WHEN each is truncated and gets a row after it
    vt.sql(
        "-",
        "TRUNCATE TABLE tr_same; INSERT INTO tr_same VALUES (3)",
    )
    .await;
    emu.front_sql("TRUNCATE TABLE tr_same").await;
    emu.front_sql("INSERT INTO tr_same VALUES (3)").await;
    let quiet = Duration::from_secs(3);
    let real = raw_events(&vt, "-", "tr_same", &vt_pos, quiet).await;
    let emulated = raw_events_of(&emu_config, "tr_same", "-", "tr_same", &emu_pos, quiet).await;

    // THEN both send the position, then the TRUNCATE as one DDL, then the row
    for (side, events) in [("real vtgate", &real), ("emulator", &emulated)] {
        let interesting: Vec<String> = events
            .iter()
            .filter(|e| e.starts_with("ROW") || e.starts_with("DDL"))
            .map(|e| e.to_ascii_lowercase().replace('`', ""))
            .collect();
        assert_eq!(
            interesting,
            ["ddl truncate table tr_same", "row a"],
            "{side}: {events:?}"
        );
        let ddl = events
            .iter()
            .position(|e| e.starts_with("DDL"))
            .unwrap_or_default();
        assert_eq!(events[ddl.saturating_sub(1)], "VGTID", "{side}: {events:?}");
    }
}

/// The tap over the emulator's VStream: a TRUNCATE made through the MySQL
/// front is warned as from the real vtgate (see below), and rows after it
/// still come.
#[tokio::test]
async fn an_emulator_truncate_is_warned_by_the_tap_over_vstream() {
    // GIVEN a table copied over VStream from the emulator
    let schema = "CREATE TABLE tr_emu (id INT PRIMARY KEY); INSERT INTO tr_emu VALUES (1), (2);";
    let emu = Emu::start("tr_emu", &["-"], false, &[("-", schema.to_string())]).await;
    let config = emu.config_with("vstream.json", |c| c["api"] = "vstream".into());
    let catalog = emu.catalog(&[]).await;
    let first = emu.sync_using(&config, &catalog, None).await.ok();
    assert_eq!(first.records("tr_emu").len(), 2);

    // WHEN it is truncated through the MySQL front and gets a new row
    emu.front_sql("TRUNCATE TABLE tr_emu").await;
    emu.front_sql("INSERT INTO tr_emu VALUES (3)").await;
    let second = emu
        .sync_using(&config, &catalog, Some(&first.last_state()))
        .await
        .ok();

    // THEN the tap warns with the stream and the fix, and the row comes
    let warning = second
        .run
        .stderr
        .lines()
        .find(|l| l.contains("table truncated"))
        .unwrap_or_else(|| panic!("no truncate warning: {}", second.run.stderr));
    assert!(warning.contains("tr_emu"), "{warning}");
    assert!(warning.contains("copy the stream again"), "{warning}");
    let ids: Vec<i64> = second
        .records("tr_emu")
        .iter()
        .map(|r| r["id"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(ids, vec![3]);
}

/// The tap against the real vtgate: a keyless table is discovered as
/// FULL_TABLE and copied in full with a warning, and a TRUNCATE of a
/// followed table is named in a warning with the fix.
#[tokio::test]
async fn real_vtgate_keyless_is_full_table_and_truncate_is_warned() {
    // GIVEN a keyless and a keyed table behind the real vtgate, copied
    let vt = Vt::shared("vt1");
    vt.sql(
        "-",
        "DROP TABLE IF EXISTS kl_tap; CREATE TABLE kl_tap (a INT, b VARCHAR(8)); \
         INSERT INTO kl_tap VALUES (1,'x'),(1,'x'); \
         DROP TABLE IF EXISTS tr_tap; CREATE TABLE tr_tap (id INT PRIMARY KEY); \
         INSERT INTO tr_tap VALUES (1), (2)",
    )
    .await;
    vt.schema_reloaded().await;
    let catalog = vt.catalog(&["kl_tap", "tr_tap"]).await;
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog).expect("catalog")).expect("json");
    let kl = c["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream"] == "kl_tap")
        .expect("kl_tap");
    let md = &kl["metadata"][0]["metadata"];
    assert_eq!(md["forced-replication-method"], "FULL_TABLE", "{md}");
    assert_eq!(md["table-key-properties"], serde_json::json!([]));
    let first = vt.sync(&catalog, None).await.ok();
    assert_eq!(first.records("kl_tap").len(), 2, "both duplicates copied");

    // WHEN the keyed table is truncated and the keyless one changes
    vt.sql(
        "-",
        "TRUNCATE TABLE tr_tap; INSERT INTO tr_tap VALUES (3); UPDATE kl_tap SET b = 'z'",
    )
    .await;
    let second = vt.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN the truncate is warned with the stream and the fix, the row
    // after it still comes, and the keyless table is copied again whole
    let warning = second
        .run
        .stderr
        .lines()
        .find(|l| l.contains("table truncated"))
        .unwrap_or_else(|| panic!("no truncate warning: {}", second.run.stderr));
    assert!(warning.contains("tr_tap"), "{warning}");
    assert!(warning.contains("copy the stream again"), "{warning}");
    let ids: Vec<i64> = second
        .records("tr_tap")
        .iter()
        .map(|r| r["id"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(ids, vec![3]);
    let kl: Vec<&str> = second
        .records("kl_tap")
        .iter()
        .map(|r| r["b"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kl, vec!["z", "z"], "the keyless table, whole, as it is now");
    assert!(second.run.stderr.contains("has no primary key"));
}

both_apis! {
#[tokio::test]
async fn a_keyless_table_is_discovered_as_full_table_and_recopied_with_a_warning() {
    // GIVEN a table without a primary key, with duplicate rows
    let schema = "CREATE TABLE kl (a INT, b VARCHAR(8));\
                  INSERT INTO kl VALUES (1, 'x'), (1, 'x'), (2, 'y');";
    let emu = Emu::start("keyless", &["-"], false, &[("-", schema.to_string())]).await;

    // WHEN discovered with --incremental
    let catalog = emu.catalog(&["--incremental"]).await;

    // THEN it has no key and is forced to FULL_TABLE
    let text = std::fs::read_to_string(&catalog).expect("catalog");
    let c: Value = serde_json::from_str(&text).expect("json");
    let md = &c["streams"][0]["metadata"]
        .as_array()
        .expect("metadata")
        .iter()
        .find(|m| m["breadcrumb"] == serde_json::json!([]))
        .expect("stream metadata")["metadata"];
    assert_eq!(md["table-key-properties"], serde_json::json!([]));
    assert_eq!(md["forced-replication-method"], "FULL_TABLE");
    assert!(md.get("replication-method").is_none(), "{md}");

    // WHEN a user's catalog still asks for INCREMENTAL, and rows change
    // between two runs
    let mut c = c;
    for m in c["streams"][0]["metadata"].as_array_mut().expect("md") {
        if m["breadcrumb"] == serde_json::json!([]) {
            m["metadata"]["replication-method"] = "INCREMENTAL".into();
        }
    }
    let catalog = emu.scratch.write_json("catalog-incremental.json", &c);
    let first = emu.sync(&catalog, None).await.ok();
    emu.sql("-", "UPDATE kl SET b = 'z' WHERE a = 1; DELETE FROM kl WHERE a = 2;")
        .await;
    let second = emu.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN each run copies the whole table between ACTIVATE_VERSIONs, no
    // keyless change image reaches the target, and the run says why once
    for out in [&first, &second] {
        let warnings = out
            .run
            .stderr
            .lines()
            .filter(|l| l.contains("has no primary key"))
            .count();
        assert_eq!(warnings, 1, "one warning per stream: {}", out.run.stderr);
        assert!(out.count("ACTIVATE_VERSION") >= 1, "FULL_TABLE brackets");
        assert!(
            out.records("kl").iter().all(|r| r["_sdc_deleted_at"].is_null()),
            "no delete records"
        );
    }
    assert_eq!(first.records("kl").len(), 3, "duplicates copied");
    let mut rows: Vec<(i64, String)> = second
        .records("kl")
        .iter()
        .map(|r| (r["a"].as_i64().unwrap_or(-1), r["b"].as_str().unwrap_or("").into()))
        .collect();
    rows.sort();
    assert_eq!(rows, vec![(1, "z".into()), (1, "z".into())], "the table as it is now");
}
}

both_apis! {
#[tokio::test]
async fn an_interrupted_keyless_copy_starts_again_rather_than_skip_a_duplicate() {
    // GIVEN a keyless table with two identical rows, and a state saying its
    // copy stopped right after the first of them
    let schema = "CREATE TABLE kl (a INT, b VARCHAR(8));\
                  INSERT INTO kl VALUES (1, 'x'), (1, 'x'), (2, 'y');";
    let emu = Emu::start("kl_resume", &["-"], false, &[("-", schema.to_string())]).await;
    let catalog = emu.catalog(&[]).await;
    let field = |name: &str, ty: Type| Field {
        name: name.to_string().into(),
        r#type: ty as i32,
        ..Default::default()
    };
    let cursor = TableCursor {
        shard: "-".into(),
        keyspace: "kl_resume".into(),
        position: String::new(),
        last_known_pk: Some(QueryResult {
            fields: vec![field("a", Type::Int32), field("b", Type::Varchar)],
            rows: vec![Row::new(&[1, 1], b"1x".to_vec().into())],
            ..Default::default()
        }),
    };
    let state = serde_json::json!({"bookmarks": {"kl": {
        "shards": {"-": {"cursor": tap_planetscale::state::encode_cursor(&cursor)}},
        "version": 1,
        "initial_full_table_complete": false,
    }}});

    // WHEN the next run starts
    let out = emu.sync(&catalog, Some(&state)).await.ok();

    // THEN it copies the whole table again under a new version: resuming
    // after (1, 'x') by every column would skip the second (1, 'x')
    let mut rows: Vec<(i64, String)> = out
        .records("kl")
        .iter()
        .map(|r| (r["a"].as_i64().unwrap_or(-1), r["b"].as_str().unwrap_or("").into()))
        .collect();
    rows.sort();
    assert_eq!(rows, vec![(1, "x".into()), (1, "x".into()), (2, "y".into())]);
    let versions: Vec<&Value> = out
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD")
        .map(|m| &m["version"])
        .collect();
    assert_eq!(versions.len(), 3);
    assert!(
        versions.iter().all(|v| v.is_i64() && **v != 1),
        "a new version: {versions:?}"
    );
}
}

/// A tap session reads a VStream's ROW events off the wire by a plain path
/// of its own (no generated event per row): held to the real vtgate and to
/// the emulator, for a copy and for changes, every row takes that path and
/// reads exactly as the generated type reads it, images and values.
#[tokio::test]
async fn sessions_read_the_rows_of_the_real_vtgate_and_the_emulator_as_prost_does() {
    // GIVEN the same table on both, then the same changes to it
    let schema = "CREATE TABLE pr_same (id INT PRIMARY KEY, s VARCHAR(8), n INT NULL); \
                  INSERT INTO pr_same VALUES (1, 'a', NULL), (2, 'b', 2), (3, 'c', 3);";
    let (vt, emu, emu_config, vt_pos, emu_pos) = on_both("pr_same", schema).await;
    let changes = [
        "UPDATE pr_same SET s = 'z' WHERE id <= 2",
        "DELETE FROM pr_same WHERE id = 3",
        "INSERT INTO pr_same VALUES (4, 'd', NULL)",
    ];
    vt.sql("-", &changes.join("; ")).await;
    emu.sql("-", &changes.join("; ")).await;

    // WHEN each stream is read both ways, from the start (a copy) and from
    // the position before the changes
    let quiet = Duration::from_secs(3);
    let sides = [
        (
            "real vtgate",
            vt.config.clone(),
            vt.keyspace.clone(),
            vt_pos,
        ),
        ("emulator", emu_config, "pr_same".to_string(), emu_pos),
    ];
    for (side, config, keyspace, pos) in &sides {
        for (gtid, want) in [("", 3), (pos.as_str(), 4)] {
            let full =
                vstream_events(config, keyspace, "-", "pr_same", gtid, quiet, |_| false).await;
            let batches = vstream_batches(config, keyspace, "-", "pr_same", gtid, quiet).await;

            // THEN every row came by the plain path, and the rows are the
            // generated type's, image for image
            let events = || batches.iter().flat_map(|b| &b.events);
            let plain: usize = events()
                .map(|e| match e {
                    Event::Rows(run) => run.rows.len(),
                    Event::Other(_) => 0,
                })
                .sum();
            let generic = events()
                .filter(|e| matches!(e, Event::Other(ev) if ev.r#type == VEventType::Row as i32))
                .count();
            assert_eq!((plain, generic), (want, 0), "{side} from {gtid:?}");
            let read: Vec<VEvent> = batches.iter().flat_map(VStreamBatch::to_events).collect();
            assert_eq!(changes_of(&read), changes_of(&full), "{side} from {gtid:?}");
            assert_eq!(changes_of(&full).len(), want, "{side} from {gtid:?}");
        }
    }
}
