//! Restarting the emulator on the same databases, ports and CA: positions
//! carry on, open streams are reset like a crashed server's.

mod common;

use std::time::Duration;

use common::*;
use psdb_emulator::{Emulator, EmulatorConfig};

#[tokio::test]
async fn restart_keeps_addresses_ca_and_positions() {
    let db = mariadb();
    let emu = start(
        EmulatorConfig::new(db, "ks")
            .tls(true)
            .shards(&["-80", "80-"]),
    )
    .await;
    for shard in ["-80", "80-"] {
        db.execute(
            emu.shard_database(shard),
            "CREATE TABLE t (id INT PRIMARY KEY)",
        )
        .await
        .expect("setup");
    }
    emu.refresh_capture().await.expect("refresh");
    db.execute(emu.shard_database("-80"), "INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let pos = current(&emu, "-80", "t").await;
    let tap_config = emu.tap_config();
    let ca = std::fs::read(emu.ca_file().expect("ca")).expect("ca bytes");

    // An idle change stream on the old emulator.
    let mut c = client(channel(&emu).await);
    let r = auth(
        tonic::Request::new(request(&emu, "-80", "t", &pos)),
        "emu",
        "emu-secret",
    );
    let mut idle = c.sync(r).await.expect("sync").into_inner();

    let cfg = emu.restart_config().expect("restart config");
    emu.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), idle.message())
        .await
        .expect("stream ends when the emulator stops");
    assert!(ended.is_err(), "stream must fail, got {ended:?}");

    db.execute(
        cfg.backing.shard_databases["-80"].as_str(),
        "INSERT INTO t VALUES (2)",
    )
    .await
    .expect("insert while down");
    let emu = Emulator::start(cfg).await.expect("restart");
    assert_eq!(emu.tap_config(), tap_config);
    assert_eq!(
        std::fs::read(emu.ca_file().expect("ca")).expect("ca bytes"),
        ca
    );
    let resps = sync_until(&emu, request(&emu, "-80", "t", &pos), |r| {
        r.iter().any(|x| !x.result.is_empty())
    })
    .await;
    let rows: Vec<_> = resps.iter().flat_map(|r| rows_of(&r.result)).collect();
    assert_eq!(rows, vec![vec![s("2")]]);

    // The kept certificate directory is the test's to remove.
    let dir = emu.config().cert_dir.clone().expect("kept cert dir");
    emu.stop().await;
    std::fs::remove_dir_all(dir).expect("remove cert dir");
}
