//! `TRUNCATE TABLE` against the real vtgate (which sends it as one DDL
//! event, see `keyless`), and the `on_truncate` policy: `warn` leaves the
//! output as it was; `recopy` marks the stream and the next run copies it
//! again on every shard under a new version, activated at its end, so a
//! target that honours ACTIVATE_VERSION (meltanolabs-target-postgres) ends
//! with exactly the rows the table has, also after a run killed mid-copy.
//! The emulator, which sends a TRUNCATE through its MySQL front as vtgate
//! does, runs the re-copy too.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::postgres::Postgres;
use crate::support::vitess::Vt;
use crate::support::{numbers_sql, sync_args, Emu, Scratch, Singer, BIN};

/// Loads Singer lines into meltanolabs-target-postgres with ACTIVATE_VERSION
/// honoured (it needs the record metadata) and hard deletes, so the rows it
/// keeps are the rows it believes live.
fn load(scratch: &Scratch, pg: &Postgres, lines: &str) {
    let mut config = pg.meltanolabs_config("tap");
    config["hard_delete"] = json!(true);
    pg.load(".venv-ml-pg", &config, scratch.dir.path(), lines);
}

/// The ids the target holds for `table`.
fn target_ids(pg: &Postgres, table: &str) -> Vec<i64> {
    pg.rows(&format!("SELECT id FROM tap.\"{table}\" ORDER BY id"))
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect()
}

/// The ids the table has, over every shard.
async fn source_ids(vt: &Vt<'_>, shards: &[&str], table: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for shard in shards {
        let mut conn = vt
            .vitess
            .mariadb()
            .connect(Some(&vt.database(shard)))
            .await
            .expect("connect");
        let rows: Vec<i64> = conn
            .query(format!("SELECT id FROM `{table}`"))
            .await
            .expect("select");
        let _ = conn.disconnect().await;
        ids.extend(rows);
    }
    ids.sort();
    ids
}

fn ids(out: &Singer, stream: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = out
        .records(stream)
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    ids.sort();
    ids
}

/// The messages of `stream` (and every STATE), in order: `R<version>` for a
/// record, `A<version>` for ACTIVATE_VERSION, `S` for STATE.
fn shape(messages: &[Value], stream: &str) -> Vec<String> {
    let v = |m: &Value| m["version"].as_i64().map_or("-".into(), |v| v.to_string());
    messages
        .iter()
        .filter_map(|m| match m["type"].as_str() {
            Some("RECORD") if m["stream"] == stream => Some(format!("R{}", v(m))),
            Some("ACTIVATE_VERSION") if m["stream"] == stream => Some(format!("A{}", v(m))),
            Some("STATE") => Some("S".into()),
            _ => None,
        })
        .collect()
}

/// Every record of `stream` in `out` carries `version`, and that version
/// is activated once.
fn assert_one_version_activated(out: &Singer, stream: &str, version: i64) {
    let shape = shape(&out.messages, stream);
    let record = format!("R{version}");
    assert!(
        shape
            .iter()
            .filter(|m| m.starts_with('R'))
            .all(|m| *m == record),
        "not all under {version}: {shape:?}"
    );
    let activated: Vec<&String> = shape.iter().filter(|m| m.starts_with('A')).collect();
    assert_eq!(activated, [&format!("A{version}")]);
}

/// A table with two rows on each shard, created straight in the shards'
/// databases; the first shard's rows are 1 and 2, the next's 11 and 12.
async fn table_on_every_shard(vt: &Vt<'_>, shards: &[&str], table: &str) {
    for (i, shard) in shards.iter().enumerate() {
        let base = i * 10;
        vt.sql(
            shard,
            &format!(
                "DROP TABLE IF EXISTS `{table}`; \
                 CREATE TABLE `{table}` (id BIGINT PRIMARY KEY, v VARCHAR(32), amount DECIMAL(10,2)); \
                 INSERT INTO `{table}` VALUES ({}, 'a', 1), ({}, 'b', 2)",
                base + 1,
                base + 2
            ),
        )
        .await;
    }
    vt.schema_reloaded().await;
}

async fn truncate_is_recopied_under_a_new_version(keyspace: &str, shards: &[&str]) {
    // GIVEN a table with rows on every shard, copied with on_truncate: recopy
    // into a target that honours ACTIVATE_VERSION
    let vt = Vt::shared(keyspace);
    let table = format!("tr_recopy_{keyspace}");
    table_on_every_shard(&vt, shards, &table).await;
    let catalog = vt.catalog(&[&table]).await;
    let config = vt.config_with("recopy.json", |c| c["on_truncate"] = json!("recopy"));
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("join");
    let first = vt.sync_using(&config, &catalog, None).await.ok();
    load(&vt.scratch, &pg, &first.run.stdout);

    // WHEN the first shard's table is truncated, rows are written after it,
    // and an incremental run follows
    vt.sql(
        shards[0],
        &format!("TRUNCATE TABLE `{table}`; INSERT INTO `{table}` VALUES (100, 'new', 3), (101, 'new', 4)"),
    )
    .await;
    let second = vt
        .sync_using(&config, &catalog, Some(&first.last_state()))
        .await
        .ok();
    load(&vt.scratch, &pg, &second.run.stdout);

    // THEN it warns naming the stream and the re-copy, the rows after the
    // TRUNCATE still come, and the state marks the stream; nothing is
    // activated yet
    let warning = second
        .run
        .stderr
        .lines()
        .find(|l| l.contains("table truncated"))
        .unwrap_or_else(|| panic!("no truncate warning: {}", second.run.stderr));
    assert!(
        warning.contains(&table) && warning.contains(shards[0]),
        "{warning}"
    );
    assert!(
        warning.contains("the next run copies it again on every shard"),
        "{warning}"
    );
    assert_eq!(ids(&second, &table), vec![100, 101]);
    assert_eq!(second.count("ACTIVATE_VERSION"), 0);
    let marked = second.last_state();
    assert_eq!(
        marked["bookmarks"][&table]["recopy"],
        json!(true),
        "{marked}"
    );
    assert_eq!(
        target_ids(&pg, &table).len(),
        2 * shards.len() + 2,
        "the target still holds the truncated rows"
    );

    // WHEN the next run starts
    let third = vt.sync_using(&config, &catalog, Some(&marked)).await.ok();
    load(&vt.scratch, &pg, &third.run.stdout);

    // THEN it copies every row of every shard again under one new version,
    // activates it after the last of them, and the target holds exactly
    // the rows the table has
    let source = source_ids(&vt, shards, &table).await;
    assert_eq!(ids(&third, &table), source, "every shard copied again");
    let messages = shape(&third.messages, &table);
    let version = third
        .messages
        .iter()
        .find(|m| m["type"] == "RECORD")
        .and_then(|m| m["version"].as_i64())
        .expect("a version");
    let activate = format!("A{version}");
    let at = messages
        .iter()
        .position(|m| *m == activate)
        .unwrap_or_else(|| panic!("no {activate}: {messages:?}"));
    assert!(
        messages[..at]
            .iter()
            .filter(|m| m.starts_with('R'))
            .all(|m| *m == format!("R{version}")),
        "{messages:?}"
    );
    assert!(
        messages[at..].iter().all(|m| !m.starts_with('R')),
        "{messages:?}"
    );
    assert_eq!(
        messages.last().map(String::as_str),
        Some("S"),
        "a STATE ends the re-copy"
    );
    assert!(
        third
            .run
            .stderr
            .contains("copying the stream again (recopy, or on_truncate: recopy after a TRUNCATE) on every shard"),
        "{}",
        third.run.stderr
    );
    assert_eq!(
        target_ids(&pg, &table),
        source,
        "the target dropped what vanished"
    );

    // AND the re-copy is over: its keys leave the state, its cursors stay,
    // and the next run captures changes only, without a version
    let done = third.last_state();
    let bookmark = &done["bookmarks"][&table];
    assert!(
        bookmark.get("recopy").is_none() && bookmark.get("recopy_version").is_none(),
        "{bookmark}"
    );
    for shard in shards {
        let cursor = tap_planetscale::state::decode_cursor(
            bookmark["shards"][shard]["cursor"]
                .as_str()
                .expect("cursor"),
        )
        .expect("decodes");
        assert!(
            !cursor.position.is_empty() && cursor.last_known_pk.is_none(),
            "{shard}: {cursor:?}"
        );
    }
    vt.sql(
        shards[shards.len() - 1],
        &format!("INSERT INTO `{table}` VALUES (200, 'later', 5)"),
    )
    .await;
    let fourth = vt.sync_using(&config, &catalog, Some(&done)).await.ok();
    assert_eq!(
        shape(&fourth.messages, &table)
            .iter()
            .filter(|m| *m != "S")
            .collect::<Vec<_>>(),
        ["R-"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recopy_after_truncate_on_a_sharded_keyspace() {
    truncate_is_recopied_under_a_new_version("vt", &["-80", "80-"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recopy_after_truncate_on_an_unsharded_keyspace() {
    truncate_is_recopied_under_a_new_version("vt1", &["-"]).await;
}

#[tokio::test]
async fn warn_leaves_the_output_as_it_was() {
    // GIVEN a copied table and the default on_truncate
    let vt = Vt::shared("vt");
    let shards = ["-80", "80-"];
    let table = "tr_warn";
    table_on_every_shard(&vt, &shards, table).await;
    let catalog = vt.catalog(&[table]).await;
    let first = vt.sync(&catalog, None).await.ok();

    // WHEN it is truncated and two runs follow
    vt.sql(
        "-80",
        &format!("TRUNCATE TABLE `{table}`; INSERT INTO `{table}` VALUES (100, 'new', 3)"),
    )
    .await;
    let second = vt.sync(&catalog, Some(&first.last_state())).await.ok();
    let third = vt.sync(&catalog, Some(&second.last_state())).await.ok();

    // THEN the warning gives the fix, the row after the TRUNCATE comes
    // without a version, nothing is marked, and nothing is copied again
    let warning = second
        .run
        .stderr
        .lines()
        .find(|l| l.contains("table truncated"))
        .unwrap_or_else(|| panic!("no truncate warning: {}", second.run.stderr));
    assert!(
        warning.contains(table) && warning.contains("on_truncate: recopy"),
        "{warning}"
    );
    assert_eq!(
        shape(&second.messages, table)
            .iter()
            .filter(|m| *m != "S")
            .collect::<Vec<_>>(),
        ["R-"]
    );
    for out in [&second, &third] {
        let state = out.last_state();
        assert!(state["bookmarks"][table].get("recopy").is_none(), "{state}");
        assert_eq!(out.count("ACTIVATE_VERSION"), 0);
    }
    assert!(third.records(table).is_empty(), "no re-copy");
}

/// The complete lines a killed tap wrote.
struct Killed {
    lines: Vec<String>,
}

impl Killed {
    /// The last STATE the killed run wrote, and the version of the
    /// re-copy of `stream` it shows under way.
    fn recopy_under_way(&self, stream: &str) -> (Value, i64) {
        let last_state = self
            .messages()
            .iter()
            .rev()
            .find(|m| m["type"] == "STATE")
            .map(|m| m["value"].clone())
            .expect("a STATE before the kill");
        let version = last_state["bookmarks"][stream]["recopy_version"]
            .as_i64()
            .expect("a re-copy under way");
        (last_state, version)
    }

    fn messages(&self) -> Vec<Value> {
        self.lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Whether a STATE line shows a copy under way on some shard of `stream`:
/// a cursor with a `last_known_pk`.
fn mid_copy(line: &str, stream: &str) -> bool {
    let Ok(m) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    let Some(shards) = m["value"]["bookmarks"][stream]["shards"].as_object() else {
        return false;
    };
    m["type"] == "STATE"
        && shards.values().any(|b| {
            b["cursor"]
                .as_str()
                .and_then(|c| tap_planetscale::state::decode_cursor(c).ok())
                .is_some_and(|c| c.last_known_pk.is_some())
        })
}

/// Runs a sync and SIGKILLs it at the first STATE that shows a copy of
/// `stream` under way.
fn sync_killed_mid_copy(config: &Path, catalog: &Path, state: &Path, stream: &str) -> Killed {
    let mut child = Command::new(BIN)
        .args(sync_args(config, catalog, Some(state)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tap");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut lines, mut line) = (Vec::new(), String::new());
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read");
        assert!(n > 0, "the tap ended before a STATE mid-copy");
        lines.push(line.trim_end().to_string());
        if mid_copy(&line, stream) {
            break;
        }
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    Killed { lines }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_recopy_resumes_under_the_same_version() {
    // GIVEN a stream marked for a re-copy after a TRUNCATE, with 12,000
    // rows on each shard of the sharded keyspace
    let vt = Vt::shared("vt");
    let shards = ["-80", "80-"];
    let table = "tr_kill";
    table_on_every_shard(&vt, &shards, table).await;
    let catalog = vt.catalog(&[table]).await;
    let config = vt.config_with("recopy.json", |c| {
        c["on_truncate"] = json!("recopy");
        c["state_interval_records"] = json!(500);
    });
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("join");
    let first = vt.sync_using(&config, &catalog, None).await.ok();
    load(&vt.scratch, &pg, &first.run.stdout);
    vt.sql(
        "-80",
        &format!(
            "TRUNCATE TABLE `{table}`; {}",
            numbers_sql(table, 1000, 12_999)
        ),
    )
    .await;
    vt.sql("80-", &numbers_sql(table, 13_000, 24_999)).await;
    let second = vt
        .sync_using(&config, &catalog, Some(&first.last_state()))
        .await
        .ok();
    // (Its 24,000 changes are not loaded, to keep the test short: the
    // target still holds the truncated rows 1 and 2, which must go.)
    assert_eq!(
        second.last_state()["bookmarks"][table]["recopy"],
        json!(true)
    );

    // WHEN the re-copy is killed mid-copy
    let state = vt.scratch.write_json("marked.json", &second.last_state());
    let killed = tokio::task::spawn_blocking({
        let (config, catalog) = (config.clone(), catalog.clone());
        move || sync_killed_mid_copy(&config, &catalog, &state, table)
    })
    .await
    .expect("join");
    let messages = killed.messages();
    let (last_state, version) = killed.recopy_under_way(table);
    assert!(
        !messages.iter().any(|m| m["type"] == "ACTIVATE_VERSION"),
        "killed before its end"
    );
    load(&vt.scratch, &pg, &(killed.lines.join("\n") + "\n"));

    // AND the next run starts from the last STATE it wrote
    let resumed = vt
        .sync_using(&config, &catalog, Some(&last_state))
        .await
        .ok();
    load(&vt.scratch, &pg, &resumed.run.stdout);

    // THEN it resumes under the same version and activates it at the end;
    // the two runs together copied every row, and the target holds exactly
    // the rows the table has
    assert_one_version_activated(&resumed, table, version);
    let source = source_ids(&vt, &shards, table).await;
    let mut copied: Vec<i64> = messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == table)
        .map(|m| m["record"]["id"].as_i64().expect("id"))
        .chain(ids(&resumed, table))
        .collect();
    copied.sort();
    copied.dedup();
    assert_eq!(copied, source, "no row skipped across the kill");
    assert!(
        ids(&resumed, table).len() < source.len(),
        "the resumed run did not start over: {} of {}, after {} killed; resumed from {last_state}\n{}",
        ids(&resumed, table).len(),
        source.len(),
        messages.iter().filter(|m| m["type"] == "RECORD").count(),
        resumed.run.stderr
    );
    assert_eq!(target_ids(&pg, table), source);
}

/// The same re-copy over the emulator's VStream, sharded, where a
/// TRUNCATE through its MySQL front reaches every shard as vtgate's does.
#[tokio::test]
async fn recopy_after_truncate_over_the_emulator() {
    // GIVEN a table on two shards of the emulator, copied over VStream with
    // on_truncate: recopy
    let table = |ids: &str| {
        format!("CREATE TABLE tr_emu (id BIGINT PRIMARY KEY, v VARCHAR(8)); INSERT INTO tr_emu VALUES {ids};")
    };
    let emu = Emu::start(
        "tr_recopy",
        &["-80", "80-"],
        false,
        &[
            ("-80", table("(1, 'a'), (2, 'b')")),
            ("80-", table("(11, 'c')")),
        ],
    )
    .await;
    let config = emu.config_with("recopy.json", |c| {
        c["api"] = json!("vstream");
        c["on_truncate"] = json!("recopy");
    });
    let catalog = emu.catalog(&[]).await;
    let first = emu.sync_using(&config, &catalog, None).await.ok();
    assert_eq!(ids(&first, "tr_emu"), [1, 2, 11]);

    // WHEN it is truncated, gets a row, and two runs follow
    emu.front_sql("TRUNCATE TABLE tr_emu").await;
    emu.sql("80-", "INSERT INTO tr_emu VALUES (12, 'd')").await;
    let second = emu
        .sync_using(&config, &catalog, Some(&first.last_state()))
        .await
        .ok();
    let third = emu
        .sync_using(&config, &catalog, Some(&second.last_state()))
        .await
        .ok();

    // THEN the first marks the stream and the second copies every shard
    // again under one version, activated after its last record
    assert_eq!(ids(&second, "tr_emu"), [12]);
    assert_eq!(
        second.last_state()["bookmarks"]["tr_emu"]["recopy"],
        json!(true)
    );
    let shape = shape(&third.messages, "tr_emu");
    let version = third
        .messages
        .iter()
        .find(|m| m["type"] == "RECORD")
        .and_then(|m| m["version"].as_i64())
        .expect("a version");
    let rows: Vec<&String> = shape.iter().filter(|m| *m != "S").collect();
    assert_eq!(
        rows,
        [&format!("R{version}"), &format!("A{version}")],
        "{shape:?}"
    );
    assert_eq!(ids(&third, "tr_emu"), [12]);
    assert!(third.last_state()["bookmarks"]["tr_emu"]
        .get("recopy_version")
        .is_none());
}

/// `recopy` (here the config key, the same as `--recopy`): a stream copied
/// again on demand under a new version, ACTIVATE_VERSION at its end, while
/// another stream carries on from its cursor; killed mid-copy, the next run
/// with the key still set resumes it rather than starting over; a name the
/// catalog does not select is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recopy_on_demand_copies_one_stream_again_and_resumes() {
    // GIVEN two tables copied into a target that honours ACTIVATE_VERSION
    let vt = Vt::shared("vt");
    let shards = ["-80", "80-"];
    let (table, other) = ("rc_again", "rc_other");
    table_on_every_shard(&vt, &shards, table).await;
    table_on_every_shard(&vt, &shards, other).await;
    vt.sql("-80", &numbers_sql(table, 1000, 9_999)).await;
    vt.sql("80-", &numbers_sql(table, 10_000, 19_999)).await;
    let catalog = vt.catalog(&[table, other]).await;
    let config = vt.config_with("plain.json", |c| {
        c["state_interval_records"] = json!(500);
    });
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("join");
    let first = vt.sync_using(&config, &catalog, None).await.ok();
    load(&vt.scratch, &pg, &first.run.stdout);
    // ... and a target that has since gone wrong: a row it should not
    // have, and rows it lost
    pg.psql(&format!(
        "INSERT INTO tap.\"{table}\" (id, v) VALUES (777777, 'stale'); \
         DELETE FROM tap.\"{table}\" WHERE id BETWEEN 2000 AND 2100;"
    ));
    vt.sql(
        "-80",
        &format!("INSERT INTO `{other}` VALUES (5, 'new', 5)"),
    )
    .await;

    // WHEN a name the catalog does not select is asked for
    let bad = vt.config_with("bad.json", |c| c["recopy"] = json!(format!("{table},nope")));
    let state_file = vt.scratch.write_json("first.json", &first.last_state());
    let run = crate::support::tap(
        &sync_args(&bad, &catalog, Some(&state_file))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    )
    .await;
    // THEN the run fails before any output, naming it
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(
        run.error_line().contains("`nope`") && run.error_line().contains(table),
        "{}",
        run.error_line()
    );

    // WHEN the re-copy is asked for and killed mid-copy
    let config = vt.config_with("recopy.json", |c| {
        c["state_interval_records"] = json!(500);
        c["recopy"] = json!(table);
    });
    let killed = tokio::task::spawn_blocking({
        let (config, catalog, state) = (config.clone(), catalog.clone(), state_file.clone());
        move || sync_killed_mid_copy(&config, &catalog, &state, table)
    })
    .await
    .expect("join");
    let (last_state, version) = killed.recopy_under_way(table);
    load(&vt.scratch, &pg, &(killed.lines.join("\n") + "\n"));

    // AND the next run, with the key still set, starts from its last STATE
    let resumed = vt
        .sync_using(&config, &catalog, Some(&last_state))
        .await
        .ok();
    load(&vt.scratch, &pg, &resumed.run.stdout);

    // THEN it finished the same re-copy (same version, not from the start)
    // and activated it; the other stream only sent its change
    assert_one_version_activated(&resumed, table, version);
    let source = source_ids(&vt, &shards, table).await;
    assert!(
        ids(&resumed, table).len() < source.len(),
        "the resumed run started over"
    );
    let others: Vec<i64> = killed
        .messages()
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == other)
        .map(|m| m["record"]["id"].as_i64().expect("id"))
        .chain(ids(&resumed, other))
        .collect();
    assert_eq!(others, [5], "the other stream carried on from its cursor");
    assert!(resumed.last_state()["bookmarks"][table]
        .get("recopy_version")
        .is_none());
    // AND the target holds exactly the table's rows again
    assert_eq!(target_ids(&pg, table), source);
}
