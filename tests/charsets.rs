//! Text in every character set MariaDB has of the ones the tap decodes,
//! through the emulator (both APIs) and the real vtgate, copy and changes:
//! every cell must be what MariaDB's `CONVERT(col USING utf8mb4)` says.
//! vttablet sends a column's bytes in the column's own charset (with its
//! collation id in `Field.charset`), and so does the emulator.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::both_apis;
use crate::support::vitess::Vt;
use crate::support::{mariadb, Emu, Singer};

/// `(charset, text valid in it, other text valid in it)`.
const CHARSETS: &[(&str, &str, &str)] = &[
    ("latin1", "café crème €", "Ærø ÿ ½"),
    ("latin2", "żółw Łódź", "Ďábel ő"),
    ("cp1250", "Šťastný żółw", "„Őrült” ű"),
    ("cp1251", "Привет мир", "Ёлка ђ №"),
    ("greek", "Αθήνα καλημέρα", "Ωμέγα ψ"),
    ("hebrew", "שלום עולם", "אבג"),
    ("ascii", "plain ascii", "still ascii"),
    ("sjis", "日本語テキスト", "ｶﾀｶﾅ ひらがな"),
    ("gbk", "中文文本", "简体汉字"),
    ("big5", "中文字", "繁體漢字"),
    ("euckr", "한국어 텍스트", "서울"),
    ("ujis", "日本語テキスト", "ひらがな"),
    ("ucs2", "café Привет 中文", "Ωμέγα"),
    ("utf16", "emoji 😀 café", "𝄞 clef"),
    ("utf16le", "emoji 😀 café", "𝄞 clef"),
    ("utf32", "emoji 😀 café", "𝄞 clef"),
    ("utf8mb3", "café 中文", "Привет"),
    ("utf8mb4", "emoji 😀", "𝄞 clef"),
];

/// ENUM and SET columns in non-UTF-8 charsets: `(name, definition, row 1,
/// row 2, the value changes give)`.
const MEMBERS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "e_latin1",
        "ENUM('café','crème','a') CHARACTER SET latin1",
        "café",
        "a",
        "crème",
    ),
    (
        "s_latin1",
        "SET('é','ü','x') CHARACTER SET latin1",
        "é,x",
        "",
        "é,ü",
    ),
    (
        "e_gbk",
        "ENUM('中文','b') CHARACTER SET gbk",
        "b",
        "b",
        "中文",
    ),
    (
        "e_utf16",
        "ENUM('Ωμ','😀') CHARACTER SET utf16",
        "😀",
        "Ωμ",
        "Ωμ",
    ),
];

fn table_sql(table: &str) -> String {
    let mut cols = vec!["id INT PRIMARY KEY".to_string()];
    for (cs, _, _) in CHARSETS {
        cols.push(format!("v_{cs} VARCHAR(40) CHARACTER SET {cs}"));
        cols.push(format!("t_{cs} TEXT CHARACTER SET {cs}"));
    }
    cols.push("b VARBINARY(16)".into());
    cols.extend(MEMBERS.iter().map(|(n, def, ..)| format!("{n} {def}")));
    let row = |id: u32, second: bool| {
        let mut v = vec![id.to_string()];
        for c in CHARSETS {
            let text = if second { c.2 } else { c.1 };
            v.push(format!("'{text}'"));
            v.push(format!("'{text}'"));
        }
        v.push("x'E9FF00'".into());
        for m in MEMBERS {
            v.push(format!("'{}'", if second { m.3 } else { m.2 }));
        }
        format!("({})", v.join(", "))
    };
    format!(
        "CREATE TABLE {table} ({}) DEFAULT CHARSET=utf8mb4; INSERT INTO {table} VALUES {}, {};",
        cols.join(", "),
        row(1, false),
        row(2, true),
    )
}

/// Changes: an insert, and an update of every text column of row 1.
fn changes_sql(table: &str) -> String {
    let sets: Vec<String> = CHARSETS
        .iter()
        .flat_map(|(cs, _, other)| {
            [
                format!("v_{cs} = '{other}'"),
                format!("t_{cs} = CONCAT(t_{cs}, ' {other}')"),
            ]
        })
        .chain(MEMBERS.iter().map(|m| format!("{} = '{}'", m.0, m.4)))
        .collect();
    let mut vals = vec!["3".to_string()];
    for (_, text, other) in CHARSETS {
        vals.push(format!("'{other}'"));
        vals.push(format!("'{text}'"));
    }
    vals.push("x'00'".into());
    vals.extend(MEMBERS.iter().map(|m| format!("'{}'", m.4)));
    format!(
        "INSERT INTO {table} VALUES ({}); UPDATE {table} SET {} WHERE id = 1;",
        vals.join(", "),
        sets.join(", ")
    )
}

/// The rows as MariaDB gives them in UTF-8: id → column → text.
async fn expected(
    server: &psdb_emulator::mariadb::MariaDb,
    database: &str,
    table: &str,
) -> BTreeMap<i64, BTreeMap<String, String>> {
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    for (cs, _, _) in CHARSETS {
        for p in ["v", "t"] {
            names.push(format!("{p}_{cs}"));
            exprs.push(format!("CONVERT({p}_{cs} USING utf8mb4)"));
        }
    }
    for m in MEMBERS {
        names.push(m.0.to_string());
        exprs.push(format!("CONVERT({} USING utf8mb4)", m.0));
    }
    let mut conn = server.connect(Some(database)).await.expect("connect");
    let sql = format!("SELECT id, {} FROM {table} ORDER BY id", exprs.join(", "));
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.expect("select");
    let _ = conn.disconnect().await;
    rows.into_iter()
        .map(|r| {
            let id: i64 = r.get(0).expect("id");
            let cells = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), r.get::<String, _>(i + 1).expect("text")))
                .collect();
            (id, cells)
        })
        .collect()
}

/// Replays the records of `runs` onto rows by id and compares every text
/// cell with `want`; also: no charset warning in either run's log.
fn assert_rows(
    side: &str,
    runs: &[&Singer],
    stream: &str,
    want: &BTreeMap<i64, BTreeMap<String, String>>,
) {
    let mut got: BTreeMap<i64, Value> = BTreeMap::new();
    for run in runs {
        for r in run.records(stream) {
            got.insert(r["id"].as_i64().expect("id"), r.clone());
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{side}: ids"
    );
    let mut damaged = Vec::new();
    for (id, cells) in want {
        for (col, text) in cells {
            if got[id][col].as_str() != Some(text.as_str()) {
                damaged.push(format!("{id}.{col}: {} != {text:?}", got[id][col]));
            }
        }
        let b = got[id]["b"].as_str().expect("b is text");
        assert!(!b.contains('\u{fffd}'), "{side}: binary column b as {b}");
    }
    for run in runs {
        assert!(
            !run.run.stderr.contains("character set") || !damaged.is_empty(),
            "{side}: a charset warning: {}",
            run.run.stderr
        );
    }
    assert!(
        damaged.is_empty(),
        "{side}: {} damaged cells:\n{}\n{}",
        runs[0].run.stderr,
        damaged.len(),
        damaged.join("\n")
    );
}

both_apis! {
    #[tokio::test]
    async fn every_charset_arrives_as_mariadb_converts_it_from_the_emulator() {
        // Changes in today's forms, and in old Vitess's (ENUM as index, SET
        // as bitmask), whose members the emulator finds in the column's charset
        use psdb_emulator::ChangeText::{ChangeForms, CopyForms};
        for (keyspace, forms) in [("cs_emu", CopyForms), ("cs_emu_old", ChangeForms)] {
            // GIVEN a table with a VARCHAR and a TEXT column per charset
            let cfg = psdb_emulator::EmulatorConfig::new(mariadb(), keyspace)
                .shards(&["-"])
                .change_text(forms);
            let emu = Emu::start_with(cfg, &[("-", table_sql("cs_all"))]).await;
            let catalog = emu.catalog(&[]).await;

            // WHEN it is copied, then changed (insert, update) and synced again
            let first = emu.sync(&catalog, None).await.ok();
            emu.sql("-", &changes_sql("cs_all")).await;
            let second = emu.sync(&catalog, Some(&first.last_state())).await.ok();

            // THEN every cell is MariaDB's own text, in the copy and after the changes
            let db = emu.emu.shard_database("-").to_string();
            assert_eq!(second.records("cs_all").len(), 2, "{}", second.run.stderr);
            let want = expected(mariadb(), &db, "cs_all").await;
            assert_rows(keyspace, &[&first, &second], "cs_all", &want);
        }
    }
}

#[tokio::test]
async fn every_charset_arrives_as_mariadb_converts_it_from_the_real_vtgate() {
    // GIVEN the same table behind the real vtgate (unsharded keyspace vt1)
    let vt = Vt::shared("vt1");
    vt.sql(
        "-",
        &format!("DROP TABLE IF EXISTS cs_vt; {}", table_sql("cs_vt")),
    )
    .await;
    vt.schema_reloaded().await;
    let catalog = vt.catalog(&["cs_vt"]).await;

    // WHEN it is copied over VStream, then changed and synced again
    let first = vt.sync(&catalog, None).await.ok();
    let copied = first.records("cs_vt").len();
    assert_eq!(copied, 2, "copy: {}", first.run.stderr);
    vt.sql("-", &changes_sql("cs_vt")).await;
    let second = vt.sync(&catalog, Some(&first.last_state())).await.ok();

    // THEN every cell is MariaDB's own text
    assert_eq!(second.records("cs_vt").len(), 2, "{}", second.run.stderr);
    assert_rows(
        "real vtgate",
        &[&first, &second],
        "cs_vt",
        &expected(vt.vitess.mariadb(), &vt.database("-"), "cs_vt").await,
    );
}

/// The tap's collation table (src/collations.rs) is MariaDB's own: every
/// id the running MariaDB knows names the same character set there.
#[tokio::test]
async fn collations_match_mariadb() {
    let mut conn = mariadb().connect(None).await.expect("connect");
    let rows: Vec<(u64, String)> = conn
        .query(
            "SELECT id, CAST(character_set_name AS CHAR) \
             FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY ORDER BY id",
        )
        .await
        .expect("collations");
    let _ = conn.disconnect().await;
    let ours: Vec<(u64, String)> = tap_planetscale::collations::MARIADB
        .iter()
        .map(|(id, cs)| (u64::from(*id), cs.to_string()))
        .collect();
    assert_eq!(ours, rows);
}

both_apis! {
    /// A copy in batches resumes after a text key in its own charset: the
    /// emulator's `last_known_pk` goes back to MariaDB in the key column's
    /// charset (latin1 and utf16 keys here), so no row is lost or repeated.
    #[tokio::test]
    async fn a_copy_resumes_after_non_utf8_text_keys() {
        // GIVEN latin1- and utf16-keyed tables, copied two rows a batch
        let keys = ["a", "é", "è", "ê", "ë", "ß", "z", "Ωμ", "€"];
        let latin: Vec<&str> = keys.iter().copied().filter(|k| *k != "Ωμ").collect();
        let values = |ks: &[&str]| {
            ks.iter()
                .map(|k| format!("('{k}', '{k}')"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let schema = format!(
            "CREATE TABLE cs_k1 (k VARCHAR(8) CHARACTER SET latin1 COLLATE latin1_bin PRIMARY KEY, v TEXT CHARACTER SET latin1); \
             INSERT INTO cs_k1 VALUES {}; \
             CREATE TABLE cs_k16 (k VARCHAR(8) CHARACTER SET utf16 COLLATE utf16_bin PRIMARY KEY, v TEXT CHARACTER SET utf16); \
             INSERT INTO cs_k16 VALUES {};",
            values(&latin),
            values(&keys)
        );
        let cfg = psdb_emulator::EmulatorConfig::new(mariadb(), "cs_pk")
            .shards(&["-"])
            .copy_batch_rows(2);
        let emu = Emu::start_with(cfg, &[("-", schema)]).await;
        let catalog = emu.catalog(&[]).await;

        // WHEN each is copied, its stream cut after the first batch, so
        // that the copy resumes after the second row's key
        for (stream, want) in [("cs_k1", &latin), ("cs_k16", &keys.to_vec())] {
            let only = emu.select_only(&catalog, &[stream]);
            emu.emu.faults().set(psdb_emulator::Fault::new(
                psdb_emulator::FaultKind::Status {
                    code: tonic::Code::Unavailable as i32,
                    message: "injected".into(),
                },
                1,
            ));
            let out = emu.sync(&only, None).await.ok();
            assert!(out.run.stderr.contains("injected"), "{}", out.run.stderr);

            // THEN every key arrives once, as its text
            let mut got: Vec<String> = out
                .records(stream)
                .iter()
                .map(|r| {
                    assert_eq!(r["k"], r["v"], "{stream}");
                    r["k"].as_str().expect("k").to_string()
                })
                .collect();
            got.sort();
            let mut want: Vec<String> = want.iter().map(|k| k.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "{stream}: {}", out.run.stderr);
        }
    }
}
