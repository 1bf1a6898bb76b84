//! Any schema a MySQL user can create: the emulator captures tables with
//! every legal identifier (issue 19), and a table it cannot capture is
//! served with its copy and no changes instead of stopping it.

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::both_apis;
use crate::support::{mariadb, Emu};

/// `name` quoted for MariaDB.
fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Tables with odd names, each with an odd key column and an odd value
/// column: the 64-character limit (twice, sharing 63 characters), spaces,
/// dots, dashes, backticks, non-ASCII letters and reserved words.
fn odd_tables() -> Vec<(String, String, String)> {
    let long = "l".repeat(63);
    vec![
        (format!("{long}a"), "k".repeat(64), "v".repeat(64)),
        (format!("{long}b"), "key".into(), "v".repeat(64)),
        (
            "odd name.with-dash".into(),
            "the key".into(),
            "a.b-c".into(),
        ),
        ("tick`table".into(), "id`x".into(), "val`ue".into()),
        ("Bücher_ñ_日本".into(), "schlüssel".into(), "prix €".into()),
        ("select".into(), "from".into(), "order".into()),
    ]
}

fn odd_schema() -> String {
    odd_tables()
        .iter()
        .map(|(t, k, v)| {
            format!(
                "CREATE TABLE {} ({} INT NOT NULL PRIMARY KEY, {} VARCHAR(32)) \
                 DEFAULT CHARSET=utf8mb4;\nINSERT INTO {0} VALUES (1, 'one'), (2, 'two'), (3, 'three');\n",
                q(t),
                q(k),
                q(v)
            )
        })
        .collect()
}

/// The records of a stream as (key, value, deleted) triples.
fn rows(out: &crate::support::Singer, t: &(String, String, String)) -> Vec<(i64, Value, bool)> {
    out.records(&t.0)
        .iter()
        .map(|r| {
            (
                r[&t.1].as_i64().unwrap_or(-1),
                r[&t.2].clone(),
                r["_sdc_deleted_at"].is_string(),
            )
        })
        .collect()
}

both_apis! {
#[tokio::test]
async fn odd_identifiers_are_copied_and_followed_through_changes() {
    // GIVEN tables named with every kind of legal identifier
    let emu = Emu::start("odd", &["-"], false, &[("-", odd_schema())]).await;
    let catalog = emu.catalog(&[]).await;

    // WHEN copied
    let first = emu.sync(&catalog, None).await.ok();

    // THEN every table's rows arrive under its own name
    for t in odd_tables() {
        let got = rows(&first, &t);
        let keys: Vec<i64> = got.iter().map(|r| r.0).collect();
        assert_eq!(keys, vec![1, 2, 3], "copy of {}", t.0);
        assert_eq!(got[0].1, "one", "value column of {}", t.0);
    }

    // WHEN each is inserted into, updated and deleted from
    let mut sql = String::new();
    for (t, k, v) in odd_tables() {
        sql.push_str(&format!(
            "INSERT INTO {0} VALUES (4, 'four'); UPDATE {0} SET {2} = 'TWO' WHERE {1} = 2; \
             DELETE FROM {0} WHERE {1} = 3;\n",
            q(&t),
            q(&k),
            q(&v)
        ));
    }
    emu.sql("-", &sql).await;
    let second = emu.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN exactly those changes come, each under its own table
    for t in odd_tables() {
        let got: Vec<(i64, Value, bool)> = rows(&second, &t)
            .into_iter()
            .map(|(k, v, d)| (k, if d { Value::Null } else { v }, d))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, Value::from("four"), false),
                (2, Value::from("TWO"), false),
                (3, Value::Null, true),
            ],
            "changes of {}",
            t.0
        );
    }
}
}

both_apis! {
#[tokio::test]
async fn a_table_that_cannot_be_captured_is_copied_and_the_rest_still_change() {
    // GIVEN a table whose column names clash with the emulator's own
    // shadow-table columns (so its capture cannot be installed), next to
    // an ordinary one
    let schema = "CREATE TABLE clash (id INT PRIMARY KEY, _psdb_img VARCHAR(8));\
                  INSERT INTO clash VALUES (1, 'a'), (2, 'b');\
                  CREATE TABLE fine (id INT PRIMARY KEY, v VARCHAR(8));\
                  INSERT INTO fine VALUES (1, 'a');";
    let emu = Emu::start("refuse", &["-"], false, &[("-", schema.to_string())]).await;
    let catalog = emu.catalog(&[]).await;

    // WHEN both are copied, then both change
    let first = emu.sync(&catalog, None).await.ok();
    emu.sql(
        "-",
        "INSERT INTO clash VALUES (3, 'c'); INSERT INTO fine VALUES (2, 'b');",
    )
    .await;
    let second = emu.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN the clashing table is copied, its writes still succeed, and the
    // other table's changes still stream
    assert_eq!(first.records("clash").len(), 2, "copy of the refused table");
    assert_eq!(first.records("fine").len(), 1);
    let fine: Vec<i64> = second
        .records("fine")
        .iter()
        .map(|r| r["id"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(fine, vec![2], "changes of the captured table");
    assert!(second.records("clash").is_empty(), "no changes are invented");
    let mut conn = mariadb()
        .connect(Some(emu.emu.shard_database("-")))
        .await
        .expect("connect");
    let count: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM clash")
        .await
        .expect("count");
    assert_eq!(count, Some(3), "the write to the refused table succeeded");
}
}

both_apis! {
#[tokio::test]
async fn changes_older_than_the_retention_answer_as_purged() {
    // GIVEN an emulator that keeps the newest 3 transactions per shard
    let cfg = psdb_emulator::EmulatorConfig::new(mariadb(), "retain").retain_changes(3);
    let emu = Emu::start_with(cfg, &[("-", crate::support::numbers_sql("items", 1, 5))]).await;
    let catalog = emu.catalog(&[]).await;
    let first = emu.sync(&catalog, None).await.ok();
    let copied = first.last_state();

    // WHEN one transaction follows, the copy's state still resumes
    emu.sql("-", "UPDATE items SET v = 'one' WHERE id = 1").await;
    let second = emu.sync(&catalog, Some(&copied)).await.ok();
    assert_eq!(second.records("items").len(), 1, "within the retention");
    let recent = second.last_state();

    // WHEN five more follow, the state before them is past the retention
    for id in 2..=5 {
        emu.sql("-", &format!("UPDATE items SET v = 'later' WHERE id = {id}"))
            .await;
    }
    emu.sql("-", "DELETE FROM items WHERE id = 1").await;
    let old = emu.sync(&catalog, Some(&recent)).await;

    // THEN it fails as purged, as with a server whose binlogs expired
    assert_ne!(old.run.code, 0, "a pruned position must not resume");
    assert!(old.run.stderr.contains("purged"), "{}", old.run.stderr);
    assert!(old.records("items").is_empty(), "nothing from a gap");
    // and the change log really shrank to the retained transactions
    let own = psdb_emulator::capture::own_database(emu.emu.shard_database("-"));
    let mut conn = mariadb().connect(Some(&own)).await.expect("connect");
    let left: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM `_psdb_changelog` FOR SYSTEM_TIME ALL")
        .await
        .expect("count");
    assert_eq!(left, Some(3), "one row per retained transaction, no history");
}
}
