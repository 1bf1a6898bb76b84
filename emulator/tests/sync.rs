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
    assert_eq!(
        rows_of(&[upd.before.clone().expect("before")])[0][1],
        s("b")
    );
    assert_eq!(rows_of(&[upd.after.clone().expect("after")])[0][1], s("bb"));
    let del = &resps
        .iter()
        .flat_map(|r| r.deletes.clone())
        .collect::<Vec<_>>()[0];
    let key = del.result.clone().expect("key");
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
