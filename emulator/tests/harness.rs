//! The MariaDB harness: start, create databases, run SQL, stop.

use mysql_async::prelude::Queryable;
use psdb_emulator::mariadb::MariaDb;

#[tokio::test]
async fn shared_server_runs_sql() {
    let db = MariaDb::shared().expect("shared mariadb");
    let name = db.create_database("harness").await.expect("create db");
    db.execute(
        &name,
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1),(2);",
    )
    .await
    .expect("execute");
    let mut conn = mysql_async::Conn::new(
        mysql_async::Opts::from_url(&format!("{}/{}", db.url(), name)).expect("url"),
    )
    .await
    .expect("connect by url");
    let n: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .expect("count");
    assert_eq!(n, Some(2));
}

#[tokio::test]
async fn private_server_stops_on_drop() {
    let db = MariaDb::start().await.expect("start");
    let port = db.port();
    let log = db.log_file().expect("log").to_path_buf();
    drop(db);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!log.exists(), "datadir removed");
}
