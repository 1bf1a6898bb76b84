//! Faults on demand, auth and request errors.

mod common;

use std::time::Duration;

use common::*;
use psdb_emulator::{Emulator, EmulatorConfig, Fault, FaultKind};

async fn table_emulator() -> Emulator {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks")).await;
    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1,'a'),(2,'b');",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    emu
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn status_fault_one_shot_and_persistent() {
    let emu = table_emulator().await;
    emu.faults().set(Fault::new(
        FaultKind::Status {
            code: tonic::Code::Unavailable as i32,
            message: "injected".into(),
        },
        1,
    ));
    let (resps, st) = sync_collect(&emu, request(&emu, "-", "t", ""), T).await;
    assert_eq!(resps.len(), 1);
    assert_eq!(st.code(), tonic::Code::Unavailable);
    assert_eq!(st.message(), "injected");
    // One-shot: the next stream is healthy (ends at its deadline).
    let (resps, st) = sync_collect(&emu, request(&emu, "-", "t", ""), T).await;
    assert_eq!(st.code(), tonic::Code::DeadlineExceeded);
    assert!(resps.len() >= 2);

    emu.faults().set(
        Fault::new(
            FaultKind::Status {
                code: tonic::Code::Internal as i32,
                message: "again".into(),
            },
            0,
        )
        .persistent(),
    );
    for _ in 0..2 {
        let (resps, st) = sync_collect(&emu, request(&emu, "-", "t", ""), T).await;
        assert!(resps.is_empty());
        assert_eq!(st.code(), tonic::Code::Internal);
    }
    // Peeks are not affected.
    assert!(current(&emu, "-", "t").await.starts_with("MySQL56/"));
    emu.faults().clear();
}

#[tokio::test]
async fn stall_outlives_the_deadline() {
    let emu = table_emulator().await;
    emu.faults().set(Fault::new(FaultKind::Stall, 0));
    let started = std::time::Instant::now();
    let (resps, st) = sync_collect(&emu, request(&emu, "-", "t", ""), Duration::from_secs(1)).await;
    assert!(resps.is_empty());
    assert_eq!(st.code(), tonic::Code::DeadlineExceeded, "{st:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn drop_connection_mid_stream() {
    let emu = table_emulator().await;
    emu.faults().set(Fault::new(FaultKind::DropConnection, 1));
    let (resps, st) = sync_collect(&emu, request(&emu, "-", "t", ""), T).await;
    assert_eq!(resps.len(), 1);
    assert!(
        !matches!(st.code(), tonic::Code::Ok | tonic::Code::DeadlineExceeded),
        "expected a transport error, got {st:?}"
    );
}

#[tokio::test]
async fn interrupted_copy_resumes_with_small_batches() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks").copy_batch_rows(3)).await;
    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_10;",
    )
    .await
    .expect("setup");
    emu.faults().set(Fault::new(FaultKind::DropConnection, 2));
    let (first, st) = sync_collect(&emu, request(&emu, "-", "t", ""), T).await;
    assert_eq!(first.len(), 2, "{st:?}");
    let ids: Vec<_> = first.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(ids.len(), 6);
    let mut req = request(&emu, "-", "t", "");
    req.cursor = first.last().and_then(|r| r.cursor.clone());
    req.cursor.as_mut().expect("cursor").position.clear();
    let rest = sync_until(&emu, req, |r| {
        r.iter()
            .any(|x| x.cursor.as_ref().is_some_and(|c| c.last_known_pk.is_none()))
    })
    .await;
    let more: Vec<_> = rest.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(
        more,
        (7..=10)
            .map(|i| vec![s(&i.to_string())])
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn malformed_row() {
    let emu = table_emulator().await;
    emu.faults().set(Fault::new(FaultKind::MalformedRow, 0));
    let (resps, _) = sync_collect(&emu, request(&emu, "-", "t", ""), T).await;
    let bad = resps[0].result[0]
        .rows
        .iter()
        .any(|r| r.lengths.iter().filter(|l| **l > 0).sum::<i64>() != r.values.len() as i64);
    assert!(bad, "first response carries a malformed row");
}

#[tokio::test]
async fn purged_positions() {
    let emu = table_emulator().await;
    let pos = current(&emu, "-", "t").await;
    emu.faults().set_purged_before(None, 1_000_000);
    let (_, st) = sync_collect(&emu, request(&emu, "-", "t", &pos), T).await;
    assert_eq!(st.code(), tonic::Code::Unknown);
    assert!(st
        .message()
        .contains("Cannot replicate because the master purged required binary logs"));

    emu.faults().clear();
    let old = current(&emu, "-", "t").await;
    mariadb()
        .execute(emu.shard_database("-"), "INSERT INTO t VALUES (3, 'c')")
        .await
        .expect("insert");
    emu.purge_positions_before_now().await.expect("purge");
    let (_, st) = sync_collect(&emu, request(&emu, "-", "t", &old), T).await;
    assert_eq!(st.code(), tonic::Code::Unknown);
    let now = current(&emu, "-", "t").await;
    let (_, st) = sync_collect(
        &emu,
        request(&emu, "-", "t", &now),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        st.code(),
        tonic::Code::DeadlineExceeded,
        "current position still works"
    );
}

#[tokio::test]
async fn auth_and_request_errors() {
    let emu = table_emulator().await;
    let mut c = client(channel(&emu).await);
    let r = auth(
        tonic::Request::new(request(&emu, "-", "t", "")),
        "emu",
        "wrong",
    );
    let st = c.sync(r).await.expect_err("bad password");
    assert_eq!(st.code(), tonic::Code::Unauthenticated);
    let st = c
        .sync(tonic::Request::new(request(&emu, "-", "t", "")))
        .await
        .expect_err("no auth");
    assert_eq!(st.code(), tonic::Code::Unauthenticated);

    let (_, st) = sync_collect(&emu, request(&emu, "-", "nosuch", ""), T).await;
    assert_eq!(st.code(), tonic::Code::NotFound);
    assert!(st.message().contains("nosuch"));
    let mut req = request(&emu, "-", "t", "");
    req.columns = vec!["id".into(), "zzz".into()];
    let (_, st) = sync_collect(&emu, req, T).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(st.message().contains("zzz"));
    let (_, st) = sync_collect(&emu, request(&emu, "80-", "t", ""), T).await;
    assert_eq!(st.code(), tonic::Code::NotFound);
    let (_, st) = sync_collect(&emu, request(&emu, "-", "t", "MySQL56/bogus"), T).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
}
