//! PlanetScale's own Go singer-tap (Connect), unmodified, against the
//! emulator: the best oracle there is for PlanetScale's Connect API, which
//! has no open-source server. See tests/support/peers.rs for how it is built
//! and reached (its own ports 3306 and 443 on a loopback address per test).
//!
//! Each test compares with MariaDB cell by cell, and where both taps run the
//! same scenario, with our tap. singer-tap's value forms (README "Migrating
//! from the Go singer-tap"): DECIMAL and unsigned TINYINT as strings,
//! DATETIME cut to whole seconds with `Z`, binary bytes as lossy text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::import_api::{ImportApi, TOKEN};
use crate::support::peers::{peer, peer_config, peer_emulator, peer_ip, PeerRun, Ticker};
use crate::support::{fixture, mariadb, tap, Emu, Singer};
use crate::sync::{expected_every_type_on, numbers_and_values, numbers_close};

const ITEMS: &str = "CREATE TABLE peer_items (\
     id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, qty INT, \
     price DECIMAL(10,2), seen DATETIME, note TEXT NULL);";

/// `peer_items` rows `from..=to`, every sixth note NULL.
fn items_rows(from: u64, to: u64) -> String {
    format!(
        "INSERT INTO peer_items SELECT seq, CONCAT('item ', seq), CAST(seq AS SIGNED) * 3 - 100, seq / 8, \
         TIMESTAMP('2024-03-01') + INTERVAL seq * 3671 SECOND, \
         IF(seq % 6 = 0, NULL, CONCAT('note ', seq)) FROM seq_{from}_to_{to};"
    )
}

/// An emulator with `peer_items` in every shard, 150 rows each.
async fn items_emulator(keyspace: &str, shards: &[&str]) -> Emu {
    let fixtures: Vec<(&str, String)> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let from = i as u64 * 1000 + 1;
            (*s, format!("{ITEMS}\n{}", items_rows(from, from + 149)))
        })
        .collect();
    peer_emulator(keyspace, shards, &fixtures).await
}

fn singer_tap() -> PathBuf {
    peer("go-singer-tap")
}

/// singer-tap with `args` against `emu` (config `go-config.json`).
async fn run_singer_tap(emu: &Emu, args: &[&str]) -> crate::support::Run {
    let config = emu.scratch.write_json(
        "go-config.json",
        &peer_config(emu, &peer_ip(emu).to_string()),
    );
    let mut argv = vec!["-config".to_string(), config.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    PeerRun::new(singer_tap(), &emu.scratch)
        .args(&argv)
        .ca(emu.emu.ca_file().expect("TLS is on"))
        .run()
        .await
}

/// singer-tap's catalog, discovered with `-auto-select`.
async fn go_catalog(emu: &Emu) -> PathBuf {
    let run = run_singer_tap(emu, &["-discover", "-auto-select"]).await;
    assert_eq!(run.code, 0, "singer-tap -discover failed:\n{}", run.stderr);
    emu.scratch.write("go-catalog.json", &run.stdout)
}

/// A singer-tap sync from `state` (none: from scratch).
async fn go_sync(emu: &Emu, catalog: &Path, state: Option<&Value>) -> Singer {
    let mut args = vec!["-catalog".to_string(), catalog.display().to_string()];
    if let Some(st) = state {
        let file = emu.scratch.write_json("go-state.json", st);
        args.push("-state".into());
        args.push(file.display().to_string());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_singer_tap(emu, &argv).await;
    assert_eq!(run.code, 0, "singer-tap sync failed:\n{}", run.stderr);
    Singer::parse(run)
}

/// id, name, qty, price, seen, note.
type ItemRow = (
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// MariaDB's rows of `peer_items` over `shards`, in singer-tap's forms.
async fn items_in_mariadb(emu: &Emu, shards: &[&str]) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    for shard in shards {
        let mut conn = mariadb()
            .connect(Some(emu.emu.shard_database(shard)))
            .await
            .expect("connect");
        let rows: Vec<ItemRow> = conn
            .query(
                "SELECT id, name, qty, CAST(price AS CHAR), \
                 DATE_FORMAT(seen, '%Y-%m-%dT%H:%i:%sZ'), note FROM peer_items",
            )
            .await
            .expect("select peer_items");
        for (id, name, qty, price, seen, note) in rows {
            out.insert(
                id,
                json!({"id": id, "name": name, "qty": qty, "price": price, "seen": seen, "note": note}),
            );
        }
    }
    out
}

/// The records of `peer_items` by id; a second record of an id is the later
/// one (a change after the copy).
fn by_id<'a>(records: impl IntoIterator<Item = &'a Value>) -> BTreeMap<i64, Value> {
    records
        .into_iter()
        .map(|r| (r["id"].as_i64().expect("id"), r.clone()))
        .collect()
}

/// Every MariaDB row equals its record, column by column.
fn assert_cells(want: &BTreeMap<i64, Value>, got: &BTreeMap<i64, Value>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: ids"
    );
    for (id, w) in want {
        for col in ["id", "name", "qty", "price", "seen", "note"] {
            assert_eq!(got[id][col], w[col], "{what}: row {id} column {col}");
        }
    }
}

/// Inserts, updates and deletes on every shard, the same on each.
async fn change_items(emu: &Emu, shards: &[&str]) {
    for (i, shard) in shards.iter().enumerate() {
        let base = i as i64 * 1000;
        emu.sql(
            shard,
            &format!(
                "INSERT INTO peer_items VALUES ({a}, 'new one', 7, 1.25, '2025-05-05 05:05:05', NULL), \
                   ({b}, 'new two', NULL, NULL, NULL, 'n');\
                 UPDATE peer_items SET name = 'renamed', price = price + 1000 WHERE id IN ({u1}, {u2});\
                 DELETE FROM peer_items WHERE id = {d};",
                a = base + 500,
                b = base + 501,
                u1 = base + 3,
                u2 = base + 77,
                d = base + 10,
            ),
        )
        .await;
    }
}

async fn copies_and_follows(shards: &[&str]) {
    // GIVEN peer_items on every shard behind the emulator
    let emu = items_emulator("goitems", shards).await;

    // WHEN singer-tap discovers
    let catalog = go_catalog(&emu).await;
    let c: Value = serde_json::from_str(&std::fs::read_to_string(&catalog).expect("catalog"))
        .expect("catalog json");
    // THEN it sees the table with its key, and its metadata carries the
    // breadcrumb inside each metadata object (singer-tap's own shape)
    let stream = c["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream"] == "peer_items")
        .expect("peer_items discovered");
    assert_eq!(stream["key_properties"], json!(["id"]));
    let props: Vec<&String> = stream["schema"]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    assert_eq!(props, ["id", "name", "note", "price", "qty", "seen"]);
    assert_eq!(stream["metadata"][0]["metadata"]["breadcrumb"], json!([]));

    // WHEN it syncs from scratch (the ticker moves each shard's position on,
    // as other traffic does, so singer-tap does not wait 90 s per shard)
    let _ticker = Ticker::start(&emu, shards).await;
    let full = go_sync(&emu, &catalog, None).await;
    // THEN every row arrives once, equal to MariaDB's
    let want = items_in_mariadb(&emu, shards).await;
    assert_eq!(
        full.records("peer_items").len(),
        want.len(),
        "one record per row"
    );
    assert_cells(&want, &by_id(full.records("peer_items")), "full sync");

    // WHEN rows change and singer-tap resumes from its own state
    change_items(&emu, shards).await;
    let inc = go_sync(&emu, &catalog, Some(&full.last_state())).await;
    // THEN the inserted and updated rows arrive with MariaDB's values and
    // nothing is copied again; singer-tap asks for no deletes, so the
    // deleted rows do not arrive
    let got = by_id(inc.records("peer_items"));
    let want = items_in_mariadb(&emu, shards).await;
    let changed: Vec<i64> = shards
        .iter()
        .enumerate()
        .flat_map(|(i, _)| {
            let b = i as i64 * 1000;
            [b + 3, b + 77, b + 500, b + 501]
        })
        .collect();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        changed,
        "only the changed rows"
    );
    let want_changed: BTreeMap<i64, Value> =
        changed.iter().map(|id| (*id, want[id].clone())).collect();
    assert_cells(&want_changed, &got, "incremental sync");
}

#[tokio::test]
async fn singer_tap_copies_and_follows_one_shard() {
    copies_and_follows(&["-"]).await;
}

#[tokio::test]
async fn singer_tap_copies_and_follows_two_shards() {
    copies_and_follows(&["-80", "80-"]).await;
}

#[tokio::test]
async fn state_moves_between_singer_tap_and_ours_both_ways() {
    let shards = ["-80", "80-"];
    let emu = items_emulator("gostate", &shards).await;
    let catalog = go_catalog(&emu).await;
    let _ticker = Ticker::start(&emu, &shards).await;

    // GIVEN singer-tap's state after its full sync
    let go_full = go_sync(&emu, &catalog, None).await;
    assert_eq!(go_full.records("peer_items").len(), 300);
    change_items(&emu, &shards).await;

    // WHEN our tap resumes it, with singer-tap's own catalog
    let ours = emu.sync(&catalog, Some(&go_full.last_state())).await.ok();
    // THEN nothing is copied again and every change since arrives (ours
    // also carries the deletes)
    let recs = ours.records("peer_items");
    let want = items_in_mariadb(&emu, &shards).await;
    let mut live: Vec<i64> = recs
        .iter()
        .filter(|r| r["_sdc_deleted_at"].is_null())
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    let mut deleted: Vec<i64> = recs
        .iter()
        .filter(|r| !r["_sdc_deleted_at"].is_null())
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    live.sort();
    deleted.sort();
    assert_eq!(
        live,
        [3, 77, 500, 501, 1003, 1077, 1500, 1501],
        "changed rows only"
    );
    assert_eq!(deleted, [10, 1010], "the deletes");
    for r in recs.iter().filter(|r| r["_sdc_deleted_at"].is_null()) {
        let id = r["id"].as_i64().expect("id");
        assert_eq!(r["name"], want[&id]["name"], "row {id}");
    }

    // WHEN singer-tap resumes our state after more changes
    emu.sql("-80", "UPDATE peer_items SET qty = 4242 WHERE id = 5")
        .await;
    emu.sql(
        "80-",
        "INSERT INTO peer_items VALUES (1900, 'late', 1, 2.5, NULL, NULL)",
    )
    .await;
    let go_inc = go_sync(&emu, &catalog, Some(&ours.last_state())).await;
    // THEN singer-tap copies nothing again and sees both changes
    let got = by_id(go_inc.records("peer_items"));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [5, 1900]);
    assert_eq!(got[&5]["qty"], json!(4242));
    assert_eq!(got[&1900]["name"], json!("late"));
}

/// Columns of `every_type` where singer-tap's value differs from MariaDB's
/// and ours does not, and why (README "Migrating from the Go singer-tap").
/// The test fails when this list is not exactly what it sees.
const SINGER_TAP_DIFFERS: &[(&str, &str)] = &[
    ("t_binary", "bytes as raw text (lossy where not UTF-8)"),
    (
        "t_bit1",
        "BIT(1) as the raw byte in a string, not a boolean",
    ),
    ("t_bit12", "BIT(n) as raw bytes in a string, not a number"),
    ("t_blob", "bytes as raw text, lossy"),
    ("t_date", "zero date as \"0000-00-00\", not null"),
    ("t_datetime", "zero date as \"\", not null"),
    ("t_datetime6", "fraction of a second dropped"),
    ("t_geometry", "WKB bytes as raw text, lossy"),
    (
        "t_timestamp3",
        "fractional TIMESTAMP as MySQL text, not RFC 3339",
    ),
    ("t_varbinary", "bytes as raw text, lossy"),
    ("t_year", "YEAR 0 as \"0000\""),
];

/// singer-tap's sync from scratch fails, saying `why`.
async fn assert_go_sync_fails(emu: &Emu, catalog: &Path, why: &str) {
    let cat = catalog.display().to_string();
    let run = run_singer_tap(emu, &["-catalog", &cat]).await;
    assert_ne!(
        run.code, 0,
        "singer-tap's sync passed where it fails ({why})"
    );
    assert!(
        run.stderr.contains(why),
        "singer-tap's failure: {}",
        run.stderr
    );
}

/// Two values name the same thing: equal, numbers that agree, or text
/// that reads as the expected number or JSON document, or as the expected
/// UTC time written with `Z`. Anything else is a difference of value.
fn same(got: &Value, want: &Value) -> bool {
    let agree =
        |a: &Value| a == want || (a.is_number() && want.is_number() && numbers_close(a, want));
    if agree(got) {
        return true;
    }
    let Some(text) = got.as_str() else {
        return false;
    };
    if serde_json::from_str::<Value>(text).is_ok_and(|v| agree(&v)) {
        return true;
    }
    let utc = text.strip_suffix('Z').map(|t| format!("{t}+00:00"));
    utc.is_some() && utc.as_deref() == want.as_str()
}

#[tokio::test]
async fn singer_tap_and_ours_on_every_type() {
    // GIVEN every type behind the emulator
    let emu = peer_emulator("godiff", &["-"], &[("-", fixture("every_type.sql"))]).await;
    emu.edit_config(numbers_and_values);
    let _ticker = Ticker::start(&emu, &["-"]).await;

    // singer-tap fails a sync on two of these types, which ours copies
    // (tests/sync.rs): it types POINT as an integer (its mapping takes any
    // type ending in "int" for one), and parses BIGINT UNSIGNED as a signed
    // 64-bit number. Each is shown alone, then both are taken out of its way.
    let go_cat = go_catalog(&emu).await;
    let cap = "UPDATE every_type SET t_bigint_u = 9223372036854775807 \
               WHERE t_bigint_u > 9223372036854775807";
    emu.front_sql(cap).await;
    assert_go_sync_fails(&emu, &go_cat, "as [[null integer]]").await;
    emu.front_sql("ALTER TABLE every_type DROP COLUMN t_point")
        .await;
    emu.front_sql("UPDATE every_type SET t_bigint_u = 18446744073709551615 WHERE id = 1")
        .await;
    let go_cat = go_catalog(&emu).await;
    assert_go_sync_fails(&emu, &go_cat, "value out of range").await;
    emu.front_sql(cap).await;

    // WHEN both taps copy it (ours with its own catalog)
    let go = go_sync(&emu, &go_cat, None).await;
    let our_cat = emu.catalog(&[]).await;
    let our_cat = emu.select_only(&our_cat, &["every_type"]);
    let ours = emu.sync(&our_cat, None).await.ok();

    // THEN ours equals MariaDB in every cell
    let want = expected_every_type_on(mariadb(), emu.emu.shard_database("-"), "every_type").await;
    let ours = by_id(ours.records("every_type"));
    let go = by_id(go.records("every_type"));
    assert_eq!(ours.len(), want.len());
    assert_eq!(go.len(), want.len());
    let mut differ: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, row) in &want {
        let id = *id as i64;
        for (col, w) in row {
            let o = &ours[&id][col];
            assert!(same(o, w), "ours, row {id} column {col}: {o}, MariaDB {w}");
            let g = &go[&id][col];
            if !same(g, w) {
                differ
                    .entry(col.clone())
                    .or_default()
                    .push(format!("row {id}: singer-tap {g}, MariaDB {w}"));
            }
        }
    }
    // AND singer-tap differs exactly where the list says
    let seen: Vec<&str> = differ.keys().map(String::as_str).collect();
    let listed: Vec<&str> = SINGER_TAP_DIFFERS.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        seen, listed,
        "columns where singer-tap differs: {differ:#?}"
    );
}

#[tokio::test]
async fn commit_mode_of_singer_tap_and_ours_delivers_the_same_records() {
    let emu = items_emulator("gocommit", &["-"]).await;
    let catalog = go_catalog(&emu).await;
    let _ticker = Ticker::start(&emu, &["-"]).await;

    // WHEN singer-tap commits to one Import API and ours to another
    let go_api = ImportApi::start_as_documented().await;
    let go_states = tempfile::tempdir().expect("tempdir");
    let url = go_api.url();
    let states = go_states.path().display().to_string();
    let run = run_singer_tap(
        &emu,
        &[
            "-catalog",
            catalog.to_str().expect("p"),
            "-commit",
            "-singer-api-url",
            &url,
            "-singer-api-token",
            TOKEN,
            "-state-directory",
            &states,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "singer-tap -commit failed:\n{}", run.stderr);
    let our_api = ImportApi::start().await;
    let our_states = tempfile::tempdir().expect("tempdir");
    let run = tap(
        &[
            "sync",
            "--config",
            emu.config(),
            "--catalog",
            catalog.to_str().expect("p"),
            "--commit",
            "--singer-api-url",
            &our_api.url(),
            "--singer-api-token",
            TOKEN,
            "--state-directory",
            our_states.path().to_str().expect("p"),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "our --commit failed:\n{}", run.stderr);

    // THEN both APIs hold every row of MariaDB under the same ids, with the
    // same names and quantities
    go_api.assert_no_problems();
    our_api.assert_no_problems();
    let want = items_in_mariadb(&emu, &["-"]).await;
    let go = go_api.by_id("peer_items");
    let ours = our_api.by_id("peer_items");
    assert_eq!(go.len(), want.len(), "singer-tap's rows");
    assert_eq!(ours.len(), want.len(), "our rows");
    for (id, w) in &want {
        let id = *id as u64;
        for col in ["name", "qty", "note"] {
            assert_eq!(go[&id][col], w[col], "singer-tap row {id} {col}");
            assert_eq!(ours[&id][col], w[col], "our row {id} {col}");
        }
    }
}
