//! Real Singer consumers take our output: pipelinewise-target-postgres into
//! a real PostgreSQL server (with hard deletes), and singer-tools'
//! `singer-check-tap` format check.
//!
//! Type normalisation for comparing PostgreSQL with MariaDB (what
//! pipelinewise-target-postgres makes of our schema):
//! - DECIMAL(12,2) becomes `double precision`: compared to 2 places;
//! - DOUBLE stays double: compared to 15 significant digits (DBL_DIG; a
//!   17th digit came back one unit off through the target);
//! - DATETIME(6) becomes `timestamp without time zone`: compared as
//!   `YYYY-MM-DDTHH:MM:SS.ffffff` (PostgreSQL's JSON drops trailing zeros);
//! - DATE is compared as `YYYY-MM-DD`;
//! - JSON becomes `jsonb`: compared as parsed JSON values;
//! - integers and text are compared as they are, except that an empty
//!   string counts as NULL: pipelinewise-target-postgres writes every falsy
//!   value as an empty CSV field, which COPY reads as NULL.

use std::process::Command;

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::postgres::Postgres;
use crate::support::{fixture, mariadb, numbers_sql, venv_tool, Emu, Scratch, BIN};

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
        // Not a bare JSON string: pipelinewise-target-postgres writes those
        // unquoted into jsonb, which PostgreSQL rejects (a target bug).
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
        "amount": r["amount"].as_f64().map(|f| format!("{f:.2}")),
        "ratio": r["ratio"].as_f64().map(|f| format!("{f:.14e}")),
        "created": created,
        "day": r["day"].as_str().map(|d| d.get(..10).unwrap_or(d).to_string()),
        "qty": r["qty"],
        "doc": r["doc"].clone(),
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
    let mut tap_cmd = format!("'{BIN}' sync --config '{config}' --catalog '{catalog}'");
    if let Some(s) = state {
        let p = scratch.write_json("state.json", s);
        tap_cmd.push_str(&format!(" --state '{}'", p.display()));
    }
    let script = format!(
        "set -o pipefail; {tap_cmd} 2>tap.err | '{}' --config '{}'",
        target.display(),
        target_cfg.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(scratch.dir.path())
        .output()
        .expect("run the pipeline");
    let tap_err = std::fs::read_to_string(scratch.dir.path().join("tap.err")).unwrap_or_default();
    assert!(
        out.status.success(),
        "pipeline failed:\ntap: {tap_err}\ntarget: {}",
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
