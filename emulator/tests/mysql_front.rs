//! The MySQL front: auth, target suffixes, Vitess SHOW statements, forwarding
//! (text and prepared), information_schema mapping, errors, TLS.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use psdb_emulator::{Emulator, EmulatorConfig};

fn opts(emu: &Emulator, db: &str, password: &str) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(emu.mysql_addr().port())
        .user(Some(emu.config().username.clone()))
        .pass(Some(password.to_string()))
        .db_name(Some(db.to_string()))
        .prefer_socket(false)
}

#[tokio::test]
async fn vitess_statements_and_forwarding() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks").shards(&["-80", "80-"])).await;
    db.execute(
        emu.shard_database("-80"),
        "CREATE TABLE t (id INT PRIMARY KEY, flag TINYINT(1), j JSON, name VARCHAR(10), \
         big BIGINT(20) UNSIGNED); INSERT INTO t VALUES (1, 1, '{\"a\": 1}', NULL, 7);",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let pw = emu.config().password.clone();
    let mut conn = mysql_async::Conn::new(opts(&emu, "ks@primary", &pw))
        .await
        .expect("login");

    let shards: Vec<String> = conn
        .query("show vitess_shards like \"%ks%\";")
        .await
        .expect("shards");
    assert_eq!(shards, vec!["ks/-80", "ks/80-"]);
    let tablets: Vec<mysql_async::Row> = conn.query("Show vitess_tablets").await.expect("tablets");
    assert_eq!(tablets.len(), 6);
    assert_eq!(tablets[0].columns_ref().len(), 8);
    let types: Vec<String> = tablets
        .iter()
        .map(|r| r.get::<String, _>(3).expect("type"))
        .collect();
    assert_eq!(&types[..3], &["PRIMARY", "REPLICA", "RDONLY"]);
    assert_eq!(tablets[1].get::<String, _>(7).expect("term"), "");

    let tables: Vec<String> = conn.query("show tables from `ks`;").await.expect("tables");
    assert_eq!(tables, vec!["t"]);

    // Prepared, like the tap's discovery queries.
    let cols: Vec<(String, String, String)> = conn
        .exec(
            "select column_name, column_type, is_nullable from information_schema.columns \
             where table_name=? AND table_schema=? order by ordinal_position",
            ("t", "ks"),
        )
        .await
        .expect("columns");
    assert_eq!(
        cols.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(),
        vec![
            "int",
            "tinyint(1)",
            "json",
            "varchar(10)",
            "bigint unsigned"
        ]
    );
    let pk: Vec<String> = conn
        .exec(
            "select column_name from information_schema.columns where table_schema=? \
             AND table_name=? AND column_key='PRI'",
            ("ks", "t"),
        )
        .await
        .expect("pk");
    assert_eq!(pk, vec!["id"]);
    let data_type: Option<String> = conn
        .exec_first(
            "select data_type from information_schema.columns where table_schema=? and column_name=?",
            ("ks", "j"),
        )
        .await
        .expect("json");
    assert_eq!(data_type.as_deref(), Some("json"));
    let hidden: Option<i64> = conn
        .query_first("select count(*) from information_schema.tables where table_schema = 'ks'")
        .await
        .expect("tables count");
    assert_eq!(hidden, Some(1));

    // Values, NULLs, typed binary-protocol results.
    let row: (i64, Option<String>, Option<String>, u64) = conn
        .exec_first("select id, name, j, big from t where id = ?", (1,))
        .await
        .expect("row")
        .expect("one row");
    assert_eq!(row, (1, None, Some("{\"a\": 1}".into()), 7));

    let typed: mysql_async::Row = conn
        .exec_first(
            "select cast('2024-01-02' as date), cast('2024-01-02 03:04:05.5' as datetime(1)), \
             cast('01:02:03' as time), 1.5e0, cast(2.25 as decimal(5,2)), ?",
            ("x",),
        )
        .await
        .expect("typed")
        .expect("row");
    use mysql_async::Value as V;
    let vals: Vec<V> = (0..6)
        .map(|i| typed.as_ref(i).cloned().expect("cell"))
        .collect();
    assert_eq!(vals[0], V::Date(2024, 1, 2, 0, 0, 0, 0));
    assert_eq!(vals[1], V::Date(2024, 1, 2, 3, 4, 5, 500_000));
    assert_eq!(vals[2], V::Time(false, 0, 1, 2, 3, 0));
    assert_eq!(vals[3], V::Double(1.5));
    assert_eq!(vals[4], V::Bytes(b"2.25".to_vec()));
    assert_eq!(vals[5], V::Bytes(b"x".to_vec()));

    let err = conn
        .query_drop("select * from nosuch")
        .await
        .expect_err("missing table");
    match err {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1146),
        other => panic!("unexpected {other:?}"),
    }

    let kcu: Vec<String> = conn
        .exec(
            "select column_name from information_schema.key_column_usage where table_schema = ? \
             and table_name = ? and constraint_name = 'PRIMARY' order by ordinal_position",
            ("ks", "t"),
        )
        .await
        .expect("key_column_usage");
    assert_eq!(kcu, vec!["id"]);

    // DDL through the front reaches every shard and is captured at once.
    conn.query_drop("CREATE TABLE made_here (id INT PRIMARY KEY)")
        .await
        .expect("ddl");
    current(&emu, "80-", "made_here").await; // exists on the other shard too
    let pos = current(&emu, "-80", "made_here").await;
    conn.query_drop("INSERT INTO made_here VALUES (1)")
        .await
        .expect("insert");
    let resps = sync_until(&emu, request(&emu, "-80", "made_here", &pos), |r| {
        r.iter().any(|x| !x.result.is_empty())
    })
    .await;
    assert!(!resps.is_empty());

    // Shard targeting: the 80- shard has only the table made through the front.
    let mut c80 = mysql_async::Conn::new(opts(&emu, "ks:80-@replica", &pw))
        .await
        .expect("shard target");
    let t80: Vec<String> = c80.query("show tables").await.expect("tables");
    assert_eq!(t80, vec!["made_here"]);

    // Default client options (prefer_socket on) must stay on the front.
    let url = format!(
        "mysql://emu:{pw}@127.0.0.1:{}/ks%40primary",
        emu.mysql_addr().port()
    );
    let mut by_url = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).expect("url"))
        .await
        .expect("url login");
    let again: Vec<String> = by_url.query("show vitess_shards").await.expect("via front");
    assert_eq!(again.len(), 2);

    let bad = mysql_async::Conn::new(opts(&emu, "ks@primary", "wrong")).await;
    assert!(bad.is_err(), "wrong password must fail");
    let bad_db = mysql_async::Conn::new(opts(&emu, "other", &pw)).await;
    assert!(bad_db.is_err(), "unknown keyspace must fail");
}

#[tokio::test]
async fn tls_on_both_fronts() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "ks").tls(true)).await;
    let ca = emu.ca_file().expect("ca file").to_path_buf();
    assert_eq!(emu.tap_config()["tls_ca_file"], ca.display().to_string());
    let ssl = mysql_async::SslOpts::default().with_root_certs(vec![ca.clone().into()]);
    let mut conn = mysql_async::Conn::new(
        opts(&emu, "ks@primary", &emu.config().password.clone()).ssl_opts(Some(ssl)),
    )
    .await
    .expect("TLS login");
    let one: Option<i64> = conn.query_first("select 1").await.expect("query");
    assert_eq!(one, Some(1));

    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (id INT PRIMARY KEY)",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let pos = current(&emu, "-", "t").await;
    assert!(pos.starts_with("MySQL56/"));

    // The tap dials the configured host, an IP address: its SAN must verify.
    let pem = std::fs::read_to_string(&ca).expect("ca");
    let ch = tonic::transport::Endpoint::from_shared(format!(
        "https://127.0.0.1:{}",
        emu.grpc_addr().port()
    ))
    .expect("uri")
    .tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            .domain_name("127.0.0.1"),
    )
    .expect("tls")
    .connect()
    .await
    .expect("TLS by IP");
    let mut c = client(ch);
    let r = auth(
        tonic::Request::new(request(&emu, "-", "t", "current")),
        "emu",
        "emu-secret",
    );
    let mut stream = c.sync(r).await.expect("sync").into_inner();
    let first = stream.message().await.expect("message").expect("one");
    assert_eq!(first.cursor.expect("cursor").position, pos);
}
