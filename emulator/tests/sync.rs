//! The gRPC Sync front: current, copy, resume, changes, include flags, columns.

mod common;

use std::time::Duration;

use common::*;
use psdb_emulator::EmulatorConfig;

#[tokio::test]
async fn copy_then_changes() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks")).await;
    let d = emu.shard_database("-").to_string();
    db.execute(
        &d,
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), amount DECIMAL(8,2), j JSON);\
         INSERT INTO t VALUES (2,'b',0.50,'{\"a\": 1}'),(1,'a',NULL,NULL),(3,'c',-12.30,'[1]');",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let pos0 = current(&emu, "-", "t").await;
    assert!(pos0.starts_with("MySQL56/"), "{pos0}");

    let resps = sync_until(&emu, request(&emu, "-", "t", ""), |r| {
        r.iter()
            .any(|x| x.cursor.as_ref().is_some_and(|c| c.last_known_pk.is_none()))
    })
    .await;
    let rows: Vec<_> = resps.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("a"), None, None],
            vec![s("2"), s("b"), s("0.50"), s("{\"a\": 1}")],
            vec![s("3"), s("c"), s("-12.30"), s("[1]")],
        ]
    );
    let f = &resps[0].result[0].fields;
    assert_eq!(f[3].r#type, psdb_emulator::wire::query::Type::Json as i32);
    assert_eq!(f[3].column_type, "json");
    assert_eq!(f[2].column_type, "decimal(8,2)");
    let snapshot = resps
        .last()
        .and_then(|r| r.cursor.clone())
        .expect("cursor")
        .position;

    db.execute(
        &d,
        "INSERT INTO t VALUES (4,'d',1.00,NULL);\
         UPDATE t SET name='bb' WHERE id=2;\
         DELETE FROM t WHERE id=1;\
         BEGIN; INSERT INTO t VALUES (5,'e',NULL,NULL),(6,'f',NULL,NULL); UPDATE t SET amount=2 WHERE id=5; COMMIT;",
    )
    .await
    .expect("changes");
    let resps = sync_until(&emu, request(&emu, "-", "t", &snapshot), |r| {
        r.iter().map(|x| rows_of(&x.result).len()).sum::<usize>() >= 3
            && r.iter().map(|x| x.updates.len()).sum::<usize>() >= 2
            && r.iter().map(|x| x.deletes.len()).sum::<usize>() >= 1
    })
    .await;
    let inserts: Vec<_> = resps.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(inserts[0], vec![s("4"), s("d"), s("1.00"), None]);
    let upd = &resps
        .iter()
        .flat_map(|r| r.updates.clone())
        .collect::<Vec<_>>()[0];
    assert_eq!(rows_of(&[decoded(&upd.before)])[0][1], s("b"));
    assert_eq!(rows_of(&[decoded(&upd.after)])[0][1], s("bb"));
    let del = &resps
        .iter()
        .flat_map(|r| r.deletes.clone())
        .collect::<Vec<_>>()[0];
    let key = decoded(&del.result);
    assert_eq!(key.fields.len(), 1);
    assert_eq!(rows_of(&[key])[0], vec![s("1")]);
    // Positions advance one per transaction: 4 transactions after the snapshot.
    let n = |p: &str| {
        p.rsplit('-')
            .next()
            .and_then(|x| x.parse::<u64>().ok())
            .expect("n")
    };
    let last = resps
        .last()
        .and_then(|r| r.cursor.clone())
        .expect("cursor")
        .position;
    assert_eq!(n(&last), n(&snapshot) + 4, "{snapshot} -> {last}");
}

#[tokio::test]
async fn idle_stream_waits_until_deadline() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks")).await;
    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (id INT PRIMARY KEY)",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let pos = current(&emu, "-", "t").await;
    let started = std::time::Instant::now();
    let (resps, status) = sync_collect(
        &emu,
        request(&emu, "-", "t", &pos),
        Duration::from_millis(1500),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(resps.iter().all(|r| r.result.is_empty()));
}

#[tokio::test]
async fn resume_copy_from_last_known_pk() {
    use psdb_emulator::wire::query::{Field, QueryResult, Row};
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks")).await;
    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (a INT, b VARCHAR(5), v INT, PRIMARY KEY (a, b));\
         INSERT INTO t VALUES (1,'x',1),(1,'y',2),(2,'x',3),(2,'y',4),(3,'x',5);",
    )
    .await
    .expect("setup");
    let mut req = request(&emu, "-", "t", "");
    let cursor = req.cursor.as_mut().expect("cursor");
    cursor.last_known_pk = Some(QueryResult {
        fields: vec![
            Field {
                name: "a".into(),
                ..Default::default()
            },
            Field {
                name: "b".into(),
                ..Default::default()
            },
        ],
        rows: vec![Row {
            lengths: vec![1, 1],
            values: b"2x".to_vec().into(),
        }],
        ..Default::default()
    });
    let resps = sync_until(&emu, req, |r| {
        r.iter()
            .any(|x| x.cursor.as_ref().is_some_and(|c| c.last_known_pk.is_none()))
    })
    .await;
    let rows: Vec<_> = resps.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(
        rows,
        vec![vec![s("2"), s("y"), s("4")], vec![s("3"), s("x"), s("5")]]
    );
    let lkp = resps[0]
        .cursor
        .as_ref()
        .and_then(|c| c.last_known_pk.clone())
        .expect("lkp");
    assert_eq!(
        lkp.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(rows_of(&[lkp])[0], vec![s("3"), s("x")]);
}

#[tokio::test]
async fn sharded_keyspace_has_positions_per_shard() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "sks").shards(&["-80", "80-"])).await;
    for (shard, ids) in [("-80", "(1),(2)"), ("80-", "(3)")] {
        db.execute(
            emu.shard_database(shard),
            &format!("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES {ids};"),
        )
        .await
        .expect("setup");
    }
    emu.refresh_capture().await.expect("refresh");
    let p1 = current(&emu, "-80", "t").await;
    let p2 = current(&emu, "80-", "t").await;
    let uuid = |p: &str| p.split(['/', ':']).nth(1).map(str::to_string);
    assert_ne!(uuid(&p1), uuid(&p2));
    for (shard, want) in [("-80", vec!["1", "2"]), ("80-", vec!["3"])] {
        let resps = sync_until(&emu, request(&emu, shard, "t", ""), |r| {
            r.iter()
                .any(|x| x.cursor.as_ref().is_some_and(|c| c.last_known_pk.is_none()))
        })
        .await;
        let got: Vec<String> = resps
            .iter()
            .flat_map(|r| rows_of(&r.result))
            .map(|r| r[0].clone().expect("id"))
            .collect();
        assert_eq!(got, want);
        assert!(resps
            .iter()
            .all(|r| r.cursor.as_ref().is_none_or(|c| c.shard == shard)));
    }
}

#[tokio::test]
async fn value_text_and_change_forms() {
    use psdb_emulator::ChangeText;
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks").change_text(ChangeText::ChangeForms)).await;
    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(5,2), f DOUBLE, e ENUM('a','b','c'), \
         st SET('x','y','z'), bt BIT(3), ts TIMESTAMP(3) NULL, dt DATETIME(6), tm TIME, yr YEAR, \
         bin BINARY(3), u BIGINT UNSIGNED, flag TINYINT(1));\
         SET time_zone = '+02:00';\
         INSERT INTO t VALUES (1, 0.5, 1.5, 'b', 'x,z', b'101', '2024-01-01 02:00:00.123', \
         '2024-02-03 04:05:06.000007', '-838:59:59', 2024, 'ab', 18446744073709551615, 1);",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let resps = sync_until(&emu, request(&emu, "-", "t", ""), |r| {
        r.iter()
            .any(|x| x.cursor.as_ref().is_some_and(|c| c.last_known_pk.is_none()))
    })
    .await;
    let copy = rows_of(&resps[0].result)[0].clone();
    assert_eq!(
        copy,
        vec![
            s("1"),
            s("0.50"),
            s("1.5"),
            s("b"),
            s("x,z"),
            s("\u{5}"),
            s("2024-01-01 00:00:00.123"),
            s("2024-02-03 04:05:06.000007"),
            s("-838:59:59"),
            s("2024"),
            s("ab\u{0}"),
            s("18446744073709551615"),
            s("1"),
        ]
    );
    let fields = &resps[0].result[0].fields;
    use psdb_emulator::wire::query::Type;
    let types: Vec<i32> = fields.iter().map(|f| f.r#type).collect();
    assert_eq!(
        types,
        [
            Type::Int32,
            Type::Decimal,
            Type::Float64,
            Type::Enum,
            Type::Set,
            Type::Bit,
            Type::Timestamp,
            Type::Datetime,
            Type::Time,
            Type::Year,
            Type::Binary,
            Type::Uint64,
            Type::Int8
        ]
        .map(|t| t as i32)
    );
    assert_eq!(fields[3].column_type, "enum('a','b','c')");
    assert_eq!(fields[12].column_type, "tinyint(1)");
    assert_eq!(fields[11].column_type, "bigint unsigned");
    let snapshot = resps
        .last()
        .and_then(|r| r.cursor.clone())
        .expect("cursor")
        .position;

    db.execute(
        emu.shard_database("-"),
        "INSERT INTO t (id, d, f, e, st, bt) VALUES (2, -0.25, 0.001, 'c', 'y,z', b'11');",
    )
    .await
    .expect("insert");
    let resps = sync_until(&emu, request(&emu, "-", "t", &snapshot), |r| {
        r.iter().any(|x| !x.result.is_empty())
    })
    .await;
    let row = rows_of(
        &resps
            .iter()
            .find(|r| !r.result.is_empty())
            .expect("insert")
            .result,
    )[0]
    .clone();
    assert_eq!(
        &row[..6],
        &[s("2"), s("-.25"), s("1E-03"), s("3"), s("6"), s("\u{3}")]
    );
}

#[tokio::test]
async fn legacy_flags_and_column_subset() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks")).await;
    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, b INT); INSERT INTO t VALUES (1,10,100);",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let pos = current(&emu, "-", "t").await;
    db.execute(
        emu.shard_database("-"),
        "UPDATE t SET a = 11 WHERE id = 1; DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (2,20,200);",
    )
    .await
    .expect("changes");
    // No include_* flags (singer-tap): inserts and update after-images in result, no deletes.
    let mut req = request(&emu, "-", "t", &pos);
    req.include_inserts = false;
    req.include_updates = false;
    req.include_deletes = false;
    req.columns = vec!["b".into()];
    let resps = sync_until(&emu, req, |r| {
        r.iter().map(|x| rows_of(&x.result).len()).sum::<usize>() >= 2
    })
    .await;
    let rows: Vec<_> = resps.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(rows, vec![vec![s("100")], vec![s("200")]]);
    assert!(resps
        .iter()
        .all(|r| r.deletes.is_empty() && r.updates.is_empty()));
    assert_eq!(resps[0].result[0].fields.len(), 1);
}

#[tokio::test]
async fn uuid_and_position_survive_restart() {
    let db = mariadb();
    let d = db.create_database("restart").await.expect("db");
    db.execute(&d, "CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .expect("setup");
    let p1 = {
        let emu = start(EmulatorConfig::new(db, "ks").shard_database("-", &d)).await;
        db.execute(&d, "INSERT INTO t VALUES (1)")
            .await
            .expect("insert");
        emu.settle().await.expect("settle");
        current(&emu, "-", "t").await
    };
    let emu = start(EmulatorConfig::new(db, "ks").shard_database("-", &d)).await;
    let p2 = current(&emu, "-", "t").await;
    assert_eq!(p1, p2);
    assert!(p1.ends_with(":1-2"), "{p1}");
}

#[tokio::test]
async fn commit_order_and_other_tables_advance_position() {
    use mysql_async::prelude::Queryable;
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks")).await;
    let d = emu.shard_database("-").to_string();
    db.execute(
        &d,
        "CREATE TABLE t (id INT PRIMARY KEY); CREATE TABLE u (id INT PRIMARY KEY);",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let start_pos = current(&emu, "-", "t").await;
    let n = |p: &str| {
        p.rsplit('-')
            .next()
            .and_then(|x| x.parse::<u64>().ok())
            .expect("n")
    };

    // A starts first but commits last: the stream follows commit order.
    let mut a = db.connect(Some(&d)).await.expect("a");
    let mut b = db.connect(Some(&d)).await.expect("b");
    a.query_drop("BEGIN").await.expect("begin");
    a.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("a insert");
    b.query_drop("INSERT INTO t VALUES (2)")
        .await
        .expect("b insert");
    a.query_drop("COMMIT").await.expect("commit");
    // A transaction on another table only moves the position.
    db.execute(&d, "INSERT INTO u VALUES (9)").await.expect("u");

    let target = n(&start_pos) + 3;
    let resps = sync_until(&emu, request(&emu, "-", "t", &start_pos), |r| {
        r.iter()
            .any(|x| x.cursor.as_ref().is_some_and(|c| n(&c.position) >= target))
    })
    .await;
    let rows: Vec<_> = resps.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(rows, vec![vec![s("2")], vec![s("1")]]);
    let last = resps.last().and_then(|r| r.cursor.clone()).expect("cursor");
    assert_eq!(n(&last.position), target);
}

/// A row change's result, which the server sends pre-encoded (see build.rs).
fn decoded(bytes: &[u8]) -> psdb_emulator::wire::query::QueryResult {
    use prost::Message;
    psdb_emulator::wire::query::QueryResult::decode(bytes).expect("a QueryResult")
}

/// The swap of an online schema change (gh-ost, pt-osc): the table is
/// renamed away and a new one takes its name. MariaDB moves triggers with
/// their table, so the old capture triggers must not stay on the renamed
/// table (logging its rows under the old name) nor keep the new table from
/// getting its own.
#[tokio::test]
async fn a_table_renamed_away_and_replaced_is_captured_under_each_name() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks")).await;
    let d = emu.shard_database("-").to_string();
    db.execute(&d, "CREATE TABLE sw (id INT PRIMARY KEY, v INT)")
        .await
        .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    db.execute(
        &d,
        "RENAME TABLE sw TO sw_old; CREATE TABLE sw (id INT PRIMARY KEY, v INT);",
    )
    .await
    .expect("swap");
    emu.refresh_capture().await.expect("refresh after the swap");
    let start_pos = current(&emu, "-", "sw").await;
    let n = |p: &str| {
        p.rsplit('-')
            .next()
            .and_then(|x| x.parse::<u64>().ok())
            .expect("n")
    };
    db.execute(
        &d,
        "INSERT INTO sw_old VALUES (2, 20); INSERT INTO sw VALUES (1, 10);",
    )
    .await
    .expect("changes");

    let target = n(&start_pos) + 2;
    for (table, want) in [
        ("sw", vec![s("1"), s("10")]),
        ("sw_old", vec![s("2"), s("20")]),
    ] {
        let resps = sync_until(&emu, request(&emu, "-", table, &start_pos), |r| {
            r.iter()
                .any(|x| x.cursor.as_ref().is_some_and(|c| n(&c.position) >= target))
        })
        .await;
        let rows: Vec<_> = resps.iter().flat_map(|r| rows_of(&r.result)).collect();
        assert_eq!(rows, vec![want], "changes of `{table}`");
    }
}
