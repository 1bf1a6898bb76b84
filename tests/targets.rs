//! Real Singer consumers take our output: pipelinewise-target-postgres into
//! a real PostgreSQL server (with hard deletes), and singer-tools'
//! `singer-check-tap` format check.
//!
//! Type normalisation for comparing PostgreSQL with MariaDB (what
//! pipelinewise-target-postgres makes of our schema under the default
//! encodings):
//! - DECIMAL(12,2) becomes text holding the exact digits: compared to 2
//!   places;
//! - DOUBLE stays double: compared to 15 significant digits (DBL_DIG; a
//!   17th digit came back one unit off through the target);
//! - DATETIME(6) becomes `timestamp without time zone`: compared as
//!   `YYYY-MM-DDTHH:MM:SS.ffffff` (PostgreSQL's JSON drops trailing zeros);
//! - DATE is compared as `YYYY-MM-DD`;
//! - JSON becomes text (json_encoding `string`): compared as parsed JSON
//!   values;
//! - integers and text are compared as they are, except that an empty
//!   string counts as NULL: pipelinewise-target-postgres writes every falsy
//!   value as an empty CSV field, which COPY reads as NULL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::destination::{
    self, differences, duckdb_rows, postgres_rows, split_stored, text_select, Binary, Quirks, Table,
};
use crate::support::postgres::Postgres;
use crate::support::{
    fixture, mariadb, numbers_sql, sync_args, tap, venv_tool, with_api, Emu, Scratch, BIN,
};

const SHARDS: [&str; 2] = ["-80", "80-"];

const TABLE: &str = "CREATE TABLE orders (\
    id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), ratio DOUBLE, \
    created DATETIME(6), day DATE, qty INT, doc JSON, note TEXT)";

/// Which shard holds a row (the test's own stand-in for a vindex).
fn shard_of(id: u64) -> &'static str {
    SHARDS[(id % 2) as usize]
}

/// A deterministic row: every column gets NULLs, odd text and edge values
/// now and then.
fn row_sql(id: u64, gen: u64) -> String {
    let x = id.wrapping_mul(2654435761).wrapping_add(gen * 97) % 1000;
    let name = match x % 7 {
        0 => "NULL".to_string(),
        1 => "'naïve ☃ \"quoted\" \\\\ back'".to_string(),
        _ => format!("'name-{id}-{gen}'"),
    };
    let amount = match x % 11 {
        0 => "NULL".to_string(),
        1 => "-9999999999.99".to_string(),
        _ => format!("{}.{:02}", x * 13, x % 100),
    };
    let ratio = if x.is_multiple_of(13) {
        "NULL".to_string()
    } else {
        format!("{}", (x as f64) / 7.0)
    };
    let created = if x.is_multiple_of(5) {
        "NULL".to_string()
    } else {
        format!(
            "'2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
            x % 12 + 1,
            x % 28 + 1,
            x % 24,
            x % 60,
            (x * 7) % 60,
            x * 1000 + gen
        )
    };
    let day = if x.is_multiple_of(9) {
        "NULL".to_string()
    } else {
        format!("'20{:02}-{:02}-{:02}'", x % 30, x % 12 + 1, x % 28 + 1)
    };
    let qty = if x.is_multiple_of(17) {
        "NULL".to_string()
    } else {
        format!("{}", x as i64 - 500)
    };
    let doc = match x % 4 {
        0 => "NULL".to_string(),
        1 => format!("'{{\"k\": {x}, \"tags\": [\"a\", \"b\"], \"nested\": {{\"g\": {gen}}}}}'"),
        2 => "'[1, 2.5, null, \"x\"]'".to_string(),
        // A bare JSON string: pipelinewise-target-postgres writes those
        // unquoted into a jsonb column, which PostgreSQL rejects (a target
        // bug); the default json_encoding `string` makes the column text.
        3 if x % 8 == 3 => format!("'\"bare {id}\"'"),
        _ => format!("'{id}.5'"),
    };
    let note = if x.is_multiple_of(3) {
        "NULL".to_string()
    } else {
        format!("'{}'", "lorem ipsum ".repeat((x % 20) as usize))
    };
    format!("({id}, {name}, {amount}, {ratio}, {created}, {day}, {qty}, {doc}, {note})")
}

fn insert_sql(ids: impl Iterator<Item = u64>, gen: u64) -> String {
    let rows: Vec<String> = ids.map(|id| row_sql(id, gen)).collect();
    if rows.is_empty() {
        return String::new();
    }
    format!("INSERT INTO orders VALUES {};", rows.join(",\n"))
}

/// Runs SQL on every shard, each getting the rows it holds.
async fn apply(emu: &Emu, ids: &[u64], f: impl Fn(&[u64]) -> String) {
    for shard in SHARDS {
        let mine: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|i| shard_of(*i) == shard)
            .collect();
        if !mine.is_empty() {
            emu.sql(shard, &f(&mine)).await;
        }
    }
}

/// The source table, read from every shard's backing database, in the
/// normalised form.
async fn source_rows(emu: &Emu) -> Vec<Value> {
    let mut rows = Vec::new();
    for shard in SHARDS {
        let mut conn = mariadb()
            .connect(Some(emu.emu.shard_database(shard)))
            .await
            .expect("connect");
        let got: Vec<mysql_async::Row> = conn
            .query(
                "SELECT id, name, CAST(amount AS CHAR), CAST(ratio AS CHAR), \
                 CAST(created AS CHAR), CAST(day AS CHAR), qty, doc, note FROM orders",
            )
            .await
            .expect("select");
        for r in got {
            let text = |i: usize| -> Option<String> { r.get::<Option<String>, _>(i).flatten() };
            rows.push(normalise(&json!({
                "id": r.get::<u64, _>(0),
                "name": text(1),
                "amount": text(2).map(|s| s.parse::<f64>().expect("decimal")),
                "ratio": text(3).map(|s| s.parse::<f64>().expect("double")),
                "created": text(4),
                "day": text(5),
                "qty": r.get::<Option<i64>, _>(6).flatten(),
                "doc": text(7).map(|s| serde_json::from_str::<Value>(&s).expect("json column")),
                "note": text(8),
            })));
        }
        let _ = conn.disconnect().await;
    }
    rows.sort_by_key(|r| r["id"].as_u64());
    rows
}

/// One row in the comparable form (see the module doc).
fn normalise(r: &Value) -> Value {
    let created = r["created"].as_str().map(|s| {
        let s = s.replace(' ', "T");
        match s.split_once('.') {
            Some((whole, frac)) => format!("{whole}.{frac:0<6}"),
            None => format!("{s}.000000"),
        }
    });
    json!({
        "id": r["id"],
        "name": r["name"],
        // A number, or (decimal_encoding `string`) the exact digits as text.
        "amount": r["amount"]
            .as_f64()
            .or_else(|| r["amount"].as_str().and_then(|s| s.parse().ok()))
            .map(|f| format!("{f:.2}")),
        "ratio": r["ratio"].as_f64().map(|f| format!("{f:.14e}")),
        "created": created,
        "day": r["day"].as_str().map(|d| d.get(..10).unwrap_or(d).to_string()),
        "qty": r["qty"],
        // A JSON value, or (json_encoding `string`) its text.
        "doc": match &r["doc"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| r["doc"].clone()),
            other => other.clone(),
        },
        "note": r["note"].as_str().filter(|s| !s.is_empty()),
    })
}

fn target_rows(pg: &Postgres) -> Vec<Value> {
    pg.rows(
        "SELECT id, name, amount, ratio, created, day, qty, doc, note FROM tap.orders ORDER BY id",
    )
    .iter()
    .map(normalise)
    .collect()
}

/// `tap sync | target-postgres`; returns the state the target echoed last.
fn pipeline(
    scratch: &Scratch,
    config: &str,
    catalog: &str,
    state: Option<&Value>,
    pg: &Postgres,
) -> Value {
    let target = venv_tool(".venv-ppw-pg", "target-postgres");
    let target_cfg = scratch.write_json("pg.json", &pg.target_config("tap"));
    pipe(
        scratch,
        Path::new(config),
        Path::new(catalog),
        state,
        &target,
        &target_cfg,
    )
}

/// `tap sync | target`, failing on any error of either; returns the state
/// the target echoed last.
fn pipe(
    scratch: &Scratch,
    config: &Path,
    catalog: &Path,
    state: Option<&Value>,
    target: &Path,
    target_config: &Path,
) -> Value {
    let state_file = state.map(|s| scratch.write_json("state.json", s));
    let args = sync_args(config, catalog, state_file.as_deref());
    let tap_cmd: Vec<String> = std::iter::once(BIN.to_string())
        .chain(args)
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "set -o pipefail; {} 2>tap.err | '{}' --config '{}'",
        tap_cmd.join(" "),
        target.display(),
        target_config.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(scratch.dir.path())
        .output()
        .expect("run the pipeline");
    let tap_err = std::fs::read_to_string(scratch.dir.path().join("tap.err")).unwrap_or_default();
    assert!(
        out.status.success(),
        "pipeline into {} failed:\ntap: {tap_err}\ntarget: {}",
        target.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("the target echoed no state:\n{tap_err}"));
    serde_json::from_str(last).expect("state line")
}

fn assert_same(pg: &Postgres, source: &[Value], when: &str) {
    let target = target_rows(pg);
    assert_eq!(target.len(), source.len(), "{when}: row counts differ");
    for (t, s) in target.iter().zip(source) {
        assert_eq!(t, s, "{when}: rows differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_target_with_hard_deletes_mirrors_the_source() {
    let emu = Emu::start(
        "pg_e2e",
        &SHARDS,
        false,
        &[("-80", TABLE.to_string()), ("80-", TABLE.to_string())],
    )
    .await;
    apply(&emu, &(1..=600).collect::<Vec<_>>(), |ids| {
        insert_sql(ids.iter().copied(), 0)
    })
    .await;
    let catalog = emu.catalog(&[]).await;
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("join");
    let (config, catalog_s) = (
        emu.config().to_string(),
        catalog.to_str().expect("p").to_string(),
    );

    let state = pipeline(&emu.scratch, &config, &catalog_s, None, &pg);
    assert_same(&pg, &source_rows(&emu).await, "after the initial sync");

    // Two rounds of inserts, updates (NULLs included) and deletes.
    let mut state = state;
    for round in 1..=2u64 {
        let new: Vec<u64> = (600 + round * 100..600 + round * 100 + 50).collect();
        apply(&emu, &new, |ids| insert_sql(ids.iter().copied(), round)).await;
        let updated: Vec<u64> = (1..=600u64)
            .filter(|i| i.is_multiple_of(7 + round))
            .collect();
        apply(&emu, &updated, |ids| {
            ids.iter()
                .map(|id| format!("REPLACE INTO orders VALUES {};", row_sql(*id, round * 10)))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .await;
        let deleted: Vec<u64> = (1..=600).filter(|i| i % (11 + round) == 3).collect();
        apply(&emu, &deleted, |ids| {
            let list: Vec<String> = ids.iter().map(u64::to_string).collect();
            format!("DELETE FROM orders WHERE id IN ({});", list.join(","))
        })
        .await;
        state = pipeline(&emu.scratch, &config, &catalog_s, Some(&state), &pg);
        assert_same(
            &pg,
            &source_rows(&emu).await,
            &format!("after incremental round {round}"),
        );
    }
    // The deletes really went: hard deletes, not soft ones.
    let n: u64 = pg
        .psql("SELECT count(*) FROM tap.orders WHERE _sdc_deleted_at IS NOT NULL")
        .trim()
        .parse()
        .expect("count");
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singer_check_tap_accepts_the_output() {
    let emu = Emu::start(
        "checktap",
        &["-"],
        false,
        &[(
            "-",
            numbers_sql("items", 1, 200) + &fixture("every_type.sql"),
        )],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let run = emu.sync(&catalog, None).await.ok().run;
    let check = venv_tool(".venv-singer-tools", "singer-check-tap");
    let input = emu.scratch.write("sync.out", &run.stdout);
    let out = Command::new(check)
        .stdin(std::fs::File::open(&input).expect("open"))
        .output()
        .expect("run singer-check-tap");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "singer-check-tap rejected the output:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("The output is valid"), "{report}");
    // It counted what we sent.
    let records = run
        .stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"RECORD\""))
        .count();
    assert!(records >= 200);
    assert!(
        report.contains(&format!("{records} record messages")),
        "{report}"
    );
}

// ---------------------------------------------------------------------------
// The every-type fixture and the demo shop, over two shards, through each
// target a Meltano user picks, compared with MariaDB column by column
// (tests/support/destination.rs). A full sync, then inserts, updates and
// deletes, then an incremental run from the state the target echoed.

/// The synced tables and their key columns (the fixture's view and its
/// table with a quoted name are left out: no target here takes the name).
const SHOP_TABLES: &[(&str, &[&str])] = &[
    ("every_type", &["id"]),
    ("no_pk", &[]),
    ("composite_key", &["seq", "tenant"]),
    ("customers", &["id"]),
    ("products", &["id"]),
    ("orders", &["id"]),
];

fn demo_data(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/demo-data")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Each shard's SQL: the every-type fixture (keys moved up by 1000 on the
/// second shard) and the demo shop's rows for the shard's half.
fn shop_fixtures() -> Vec<(&'static str, String)> {
    let every = fixture("every_type.sql");
    let shop = |lo: u32, hi: u32| {
        format!(
            "{}\nSET @lo = {lo}, @hi = {hi};\n{}",
            demo_data("schema.sql"),
            demo_data("rows.sql")
        )
    };
    vec![
        ("-80", format!("{every}\n{}", shop(1, 500))),
        (
            "80-",
            format!(
                "{every}\nUPDATE every_type SET id = id + 1000;\n\
                 UPDATE composite_key SET seq = seq + 1000;\n\
                 DELETE FROM no_pk WHERE a = 2;\n{}",
                shop(501, 1000)
            ),
        ),
    ]
}

/// Inserts, updates and deletes on both shards, between the two runs: the
/// demo's own changes, every type again through the change stream, a JSON
/// column turned into a bare string, and deletes of rows full of values.
async fn shop_changes(emu: &Emu) {
    let copy_every_type = "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'; \
        INSERT INTO every_type SELECT id + 100, t_tinyint, t_tinyint_u, t_bool, t_smallint, \
        t_smallint_u, t_mediumint, t_mediumint_u, t_int, t_int_u, t_bigint, t_bigint_u, t_year, \
        t_bit1, t_bit12, t_decimal, t_decimal_wide, t_float, t_double, t_date, t_datetime, \
        t_datetime6, t_timestamp, t_timestamp3, t_time, t_time6, t_char, t_varchar, t_text, \
        t_longtext, t_enum, t_set, t_binary, t_varbinary, t_blob, t_json, t_geometry, t_point \
        FROM every_type WHERE id < 100;";
    emu.sql(
        "-80",
        &format!(
            "{}\n{copy_every_type}\n\
             UPDATE every_type SET t_varchar = 'changed ✓', t_json = '\"just a string\"', \
             t_decimal = -0.01, t_bigint_u = 18446744073709551614 WHERE id = 1;\n\
             DELETE FROM every_type WHERE id = 3;\n\
             DELETE FROM composite_key WHERE seq = 1 AND tenant = 2;",
            demo_data("changes.sql")
        ),
    )
    .await;
    emu.sql(
        "80-",
        "DELETE FROM every_type WHERE id = 1001;\n\
         UPDATE every_type SET t_blob = x'00', t_json = '7', t_text = 'now text' WHERE id = 1002;\n\
         DELETE FROM customers WHERE id = 777;\n\
         UPDATE orders SET notes = 'changed' WHERE id BETWEEN 3000 AND 3010;",
    )
    .await;
}

/// Where a target's rows end up.
enum Store {
    Postgres(Postgres),
    DuckDb { python: PathBuf, file: PathBuf },
}

impl Store {
    /// Every row of `table` in schema `tap`, as text.
    fn rows(&self, like: &Table, table: &str) -> destination::StoredRows {
        match self {
            Store::Postgres(pg) => postgres_rows(
                pg,
                &text_select(
                    like,
                    |c| format!("\"{c}\"::text AS \"{c}\""),
                    &format!("tap.\"{table}\""),
                ),
            ),
            Store::DuckDb { python, file } => duckdb_rows(
                python,
                file,
                &text_select(
                    like,
                    |c| format!("CAST(\"{c}\" AS VARCHAR) AS \"{c}\""),
                    &format!("tap.\"{table}\""),
                ),
            ),
        }
    }
}

/// What a target does with delete records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deletes {
    /// `hard_delete: true` removes the row.
    Hard,
    /// The row stays with `_sdc_deleted_at` set (SDK targets on
    /// INCREMENTAL streams).
    Soft,
}

/// One target under test.
struct Loader {
    venv: &'static str,
    exe: &'static str,
    config: Value,
    store: Store,
    quirks: Quirks,
    deletes: Deletes,
    /// The target replaces a FULL_TABLE stream's rows at ACTIVATE_VERSION
    /// (target-duckdb and pipelinewise ignore the message and append).
    activate_version: bool,
}

/// The whole scenario for one target: full sync, changes, incremental run;
/// `encodings` are extra tap config keys (empty: the defaults). Returns the
/// store, for checks of its column types.
async fn shop_through(keyspace: &str, loader: Loader, encodings: &[(&str, &str)]) -> Store {
    let emu = Emu::start(keyspace, &["-80", "80-"], false, &shop_fixtures()).await;
    let config = emu.config_with("encoded.json", |c| {
        for (k, v) in encodings {
            c[*k] = json!(v);
        }
    });
    let config_s = config.to_str().expect("utf8").to_string();
    let run = tap(&["discover", "--config", &config_s, "--auto-select"], &[]).await;
    assert_eq!(run.code, 0, "discover failed: {}", run.stderr);
    let all = emu.scratch.write("catalog-all.json", &run.stdout);
    let names: Vec<&str> = SHOP_TABLES.iter().map(|(t, _)| *t).collect();
    let catalog = emu.select_only(&all, &names);
    let target = venv_tool(loader.venv, loader.exe);
    let target_cfg = emu.scratch.write_json("target.json", &loader.config);
    let databases: Vec<String> = ["-80", "80-"]
        .iter()
        .map(|s| emu.emu.shard_database(s).to_string())
        .collect();
    let dbs: Vec<&str> = databases.iter().map(String::as_str).collect();
    let snapshot = || async {
        let mut out = Vec::new();
        for (table, keys) in SHOP_TABLES {
            out.push(destination::source(&dbs, table, keys, loader.quirks).await);
        }
        out
    };
    let run_pipe = |state: Option<Value>| {
        let (scratch_dir, config, catalog, target, target_cfg) = (
            emu.scratch.dir.path().to_path_buf(),
            config.clone(),
            catalog.clone(),
            target.clone(),
            target_cfg.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let scratch = Scratch {
                dir: tempfile::TempDir::new_in(&scratch_dir).expect("tempdir"),
            };
            pipe(
                &scratch,
                &config,
                &catalog,
                state.as_ref(),
                &target,
                &target_cfg,
            )
        })
    };

    // GIVEN the full sync
    let state = run_pipe(None).await.expect("join");
    let before = snapshot().await;
    let mut wrong = Vec::new();
    for (want, (table, _)) in before.iter().zip(SHOP_TABLES) {
        assert!(!want.rows.is_empty(), "{table} has rows");
        let (live, gone) = split_stored(want, &loader.store.rows(want, table), loader.quirks);
        wrong.extend(differences(
            want,
            &live,
            &format!("{table} after the full sync"),
        ));
        assert!(gone.rows.is_empty(), "{table}: nothing deleted yet");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The target echoed a state with a cursor for every stream and shard;
    // a keyless table is copied in full each run (FULL_TABLE), so its
    // bookmark holds a completed copy's version instead.
    for (table, keys) in SHOP_TABLES {
        if keys.is_empty() {
            assert_eq!(
                state["bookmarks"][table]["initial_full_table_complete"], true,
                "{table} in the echoed state: {state}"
            );
            continue;
        }
        for shard in ["-80", "80-"] {
            assert!(
                state["bookmarks"][table]["shards"][shard]["cursor"].is_string(),
                "{table}/{shard} in the echoed state: {state}"
            );
        }
    }

    // WHEN rows change and the incremental run resumes from that state
    shop_changes(&emu).await;
    let state2 = run_pipe(Some(state.clone())).await.expect("join");
    assert_ne!(state2, state, "the cursors moved");

    // THEN the target holds what MariaDB holds, and deleted rows are gone
    // (hard) or kept with their values (soft: the whole before-image over
    // VStream, the keys alone over Connect).
    let after = snapshot().await;
    let mut deleted = 0;
    for ((want, old), (table, keys)) in after.iter().zip(&before).zip(SHOP_TABLES) {
        let (live, gone) = split_stored(want, &loader.store.rows(want, table), loader.quirks);
        if keys.is_empty() {
            keyless_copies(&loader, want, old, &live, &gone, table, &mut wrong);
            continue;
        }
        wrong.extend(differences(
            want,
            &live,
            &format!("{table} after the incremental run"),
        ));
        let mut expect_gone = old.clone();
        expect_gone.rows.retain(|k, _| !want.rows.contains_key(k));
        deleted += expect_gone.rows.len();
        match loader.deletes {
            Deletes::Hard => assert!(
                gone.rows.is_empty(),
                "{table}: hard deletes leave no row behind"
            ),
            Deletes::Soft => {
                if emu.api == "psdbconnect" {
                    // Connect sends a deleted row's keys only.
                    for row in expect_gone.rows.values_mut() {
                        for (i, c) in want.columns.iter().enumerate() {
                            if !keys.contains(&c.name.as_str()) {
                                row[i] = None;
                            }
                        }
                    }
                }
                wrong.extend(differences(
                    &expect_gone,
                    &gone,
                    &format!("{table}: soft-deleted rows"),
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(deleted, 7, "the changes deleted seven rows");
    loader.store
}

/// A keyless table is copied whole each run (FULL_TABLE, see the README).
/// A target that honours ACTIVATE_VERSION holds this run's copy live and the
/// previous copy soft-deleted or gone; one that ignores it appends every
/// copy, the limit the README names.
fn keyless_copies(
    loader: &Loader,
    want: &Table,
    old: &Table,
    live: &Table,
    gone: &Table,
    table: &str,
    wrong: &mut Vec<String>,
) {
    if !loader.activate_version {
        assert_eq!(
            live.rows.len() + gone.rows.len(),
            old.rows.len() + want.rows.len(),
            "{table}: a target without ACTIVATE_VERSION appends each full copy"
        );
        return;
    }
    wrong.extend(differences(
        want,
        live,
        &format!("{table}: this run's copy"),
    ));
    match loader.deletes {
        Deletes::Soft => wrong.extend(differences(
            old,
            gone,
            &format!("{table}: the previous copy, soft-deleted"),
        )),
        Deletes::Hard => assert!(gone.rows.is_empty(), "{table}: the previous copy is gone"),
    }
}

/// `column → type` of `tap.every_type` in PostgreSQL, with numeric
/// precision and scale.
fn pg_types(store: &Store) -> BTreeMap<String, String> {
    let Store::Postgres(pg) = store else {
        panic!("not PostgreSQL")
    };
    pg.rows(
        "SELECT attname::text AS name, format_type(atttypid, atttypmod) AS ty FROM pg_attribute \
         WHERE attrelid = 'tap.every_type'::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .iter()
    .map(|r| {
        (
            r["name"].as_str().unwrap_or("").to_string(),
            r["ty"].as_str().unwrap_or("").to_string(),
        )
    })
    .collect()
}

fn duckdb_loader(dir: &Path) -> Loader {
    let file = dir.join("shop.duckdb");
    Loader {
        venv: ".venv-duckdb",
        exe: "target-duckdb",
        config: json!({
            "path": file,
            "default_target_schema": "tap",
            "hard_delete": true,
            // no_pk has no key.
            "primary_key_required": false,
        }),
        store: Store::DuckDb {
            python: venv_tool(".venv-duckdb", "python"),
            file,
        },
        quirks: Quirks {
            empty_string_is_null: true,
            binary: Binary::Base64Text,
            json_null_is_json: false,
        },
        deletes: Deletes::Hard,
        activate_version: false,
    }
}

/// `extra` is added to the target's config; `json_encoding` is the tap's.
fn meltanolabs_loader(pg: Postgres, extra: Value, json_encoding: &str) -> Loader {
    let mut config = json!({
        "host": "127.0.0.1",
        "port": pg.port,
        "user": "postgres",
        "password": "unused-with-trust-auth",
        "database": "postgres",
        "default_target_schema": "tap",
        "add_record_metadata": true,
    });
    let bytea = extra["interpret_content_encoding"] == json!(true);
    let jsonb = json_encoding == "value";
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Loader {
        venv: ".venv-ml-pg",
        exe: "target-postgres",
        config,
        store: Store::Postgres(pg),
        quirks: Quirks {
            empty_string_is_null: false,
            binary: if bytea {
                Binary::Bytea
            } else {
                Binary::Base64Text
            },
            json_null_is_json: jsonb,
        },
        deletes: Deletes::Soft,
        activate_version: true,
    }
}

async fn start_postgres() -> Postgres {
    tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_defaults_mirror_the_shop_over_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    shop_through("duck_c", duckdb_loader(dir.path()), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_defaults_mirror_the_shop_over_vstream() {
    with_api("vstream", async {
        let dir = tempfile::tempdir().expect("tempdir");
        shop_through("duck_v", duckdb_loader(dir.path()), &[]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meltanolabs_postgres_defaults_mirror_the_shop_over_connect() {
    let pg = start_postgres().await;
    let store = shop_through("mlpg_c", meltanolabs_loader(pg, json!({}), "string"), &[]).await;
    // x-singer.decimal strings became exact numeric columns.
    let types = pg_types(&store);
    for (col, want) in [
        ("t_decimal", "numeric(12,2)"),
        ("t_decimal_wide", "numeric(65,30)"),
        ("t_bigint_u", "numeric(20,0)"),
        ("id", "numeric(20,0)"),
        ("t_bigint", "bigint"),
        ("t_blob", "text"),
        ("t_json", "text"),
    ] {
        assert_eq!(
            types.get(col).map(String::as_str),
            Some(want),
            "{col}: {types:?}"
        );
    }
}

/// The settings the README gives for meltanolabs-target-postgres: bytea for
/// binary columns and jsonb for JSON ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meltanolabs_postgres_exact_settings_mirror_the_shop_over_vstream() {
    with_api("vstream", async {
        let pg = start_postgres().await;
        let loader = meltanolabs_loader(pg, json!({"interpret_content_encoding": true}), "value");
        let store = shop_through(
            "mlpg_v",
            loader,
            &[("binary_encoding", "base16"), ("json_encoding", "value")],
        )
        .await;
        let types = pg_types(&store);
        for (col, want) in [
            ("t_decimal", "numeric(12,2)"),
            ("t_blob", "bytea"),
            ("t_point", "bytea"),
            ("t_json", "jsonb"),
        ] {
            assert_eq!(
                types.get(col).map(String::as_str),
                Some(want),
                "{col}: {types:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelinewise_postgres_defaults_mirror_the_shop_over_vstream() {
    with_api("vstream", async {
        let pg = start_postgres().await;
        let mut config = pg.target_config("tap");
        config["primary_key_required"] = json!(false);
        let loader = Loader {
            venv: ".venv-ppw-pg",
            exe: "target-postgres",
            config,
            store: Store::Postgres(pg),
            quirks: Quirks {
                empty_string_is_null: true,
                binary: Binary::Base64Text,
                json_null_is_json: false,
            },
            deletes: Deletes::Hard,
            activate_version: false,
        };
        shop_through("ppw_v", loader, &[]).await;
    })
    .await;
}

/// Ids and names of the live rows of `schema.orders` (soft-deleted rows
/// left out).
fn live_names(pg: &Postgres, schema: &str, soft: bool) -> Vec<(u64, Option<String>)> {
    let filter = if soft {
        " WHERE _sdc_deleted_at IS NULL"
    } else {
        ""
    };
    pg.rows(&format!(
        "SELECT id, name FROM {schema}.orders{filter} ORDER BY id"
    ))
    .iter()
    .map(|r| {
        (
            r["id"].as_u64().expect("id"),
            r["name"].as_str().map(str::to_string),
        )
    })
    .collect()
}

/// An update that changes a row's key is, to the target, the old key's
/// delete and then the new row: pipelinewise-target-postgres (hard deletes)
/// and meltanolabs-target-postgres (soft deletes) end with exactly
/// MariaDB's rows, over either API.
async fn key_changes_reach_the_targets() {
    let keyspace = format!("keymove_{}", crate::support::api());
    let emu = Emu::start(
        &keyspace,
        &SHARDS,
        false,
        &[("-80", TABLE.to_string()), ("80-", TABLE.to_string())],
    )
    .await;
    apply(&emu, &(1..=200).collect::<Vec<_>>(), |ids| {
        insert_sql(ids.iter().copied(), 0)
    })
    .await;
    let catalog = emu.catalog(&[]).await;
    let pg = start_postgres().await;
    let config = emu.config().to_string();
    let catalog_s = catalog.to_str().expect("p").to_string();
    let ml_target = venv_tool(".venv-ml-pg", "target-postgres");
    let ml_config = emu
        .scratch
        .write_json("ml.json", &pg.meltanolabs_config("ml"));
    let ml = |state: Option<&Value>| {
        pipe(
            &emu.scratch,
            Path::new(&config),
            Path::new(&catalog_s),
            state,
            &ml_target,
            &ml_config,
        )
    };
    let ppw_state = pipeline(&emu.scratch, &config, &catalog_s, None, &pg);
    let ml_state = ml(None);

    // WHEN keys change: moved alone, moved with other columns, and moved
    // onto a key that was just freed in the same transaction
    apply(&emu, &(1..=200).collect::<Vec<_>>(), |ids| {
        let lo = ids[0];
        format!(
            "UPDATE orders SET id = id + 10000 WHERE id % 10 = {r} AND id < 150;\
             UPDATE orders SET id = id + 20000, name = 'moved and renamed' WHERE id = {a};\
             DELETE FROM orders WHERE id = {b};\
             UPDATE orders SET id = {b} WHERE id = {c};",
            r = lo % 2,
            a = lo + 152,
            b = lo + 160,
            c = lo + 170,
        )
    })
    .await;
    pipeline(&emu.scratch, &config, &catalog_s, Some(&ppw_state), &pg);
    ml(Some(&ml_state));

    // THEN both targets hold MariaDB's rows, old keys gone
    let source = source_rows(&emu).await;
    assert_same(&pg, &source, "pipelinewise after key changes");
    let want: Vec<(u64, Option<String>)> = source
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().expect("id"),
                r["name"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert!(want.iter().any(|(id, _)| *id > 10000), "keys moved");
    assert_eq!(
        live_names(&pg, "ml", true),
        want,
        "meltanolabs after key changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_reach_the_targets_over_connect() {
    with_api("psdbconnect", key_changes_reach_the_targets()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_reach_the_targets_over_vstream() {
    with_api("vstream", key_changes_reach_the_targets()).await;
}
