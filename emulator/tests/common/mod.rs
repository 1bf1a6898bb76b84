//! Helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use psdb_emulator::mariadb::MariaDb;
use psdb_emulator::wire::psdbconnect::v1alpha1::connect_client::ConnectClient;
use psdb_emulator::wire::psdbconnect::v1alpha1::{SyncRequest, SyncResponse, TableCursor};
use psdb_emulator::wire::query::{QueryResult, Row};
use psdb_emulator::{Emulator, EmulatorConfig};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

pub fn mariadb() -> &'static MariaDb {
    MariaDb::shared().expect("shared MariaDB")
}

pub async fn start(cfg: EmulatorConfig) -> Emulator {
    Emulator::start(cfg).await.expect("emulator starts")
}

pub async fn channel(emu: &Emulator) -> Channel {
    let tls = emu.ca_file().is_some();
    let uri = if tls {
        format!("https://localhost:{}", emu.grpc_addr().port())
    } else {
        format!("http://{}", emu.grpc_addr())
    };
    let mut ep = Endpoint::from_shared(uri).expect("uri");
    if let Some(ca) = emu.ca_file() {
        let pem = std::fs::read_to_string(ca).expect("ca");
        ep = ep
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name("localhost"),
            )
            .expect("tls");
    }
    ep.connect().await.expect("connect")
}

pub fn client(ch: Channel) -> ConnectClient<Channel> {
    ConnectClient::new(ch).max_decoding_message_size(usize::MAX)
}

pub fn auth<T>(mut req: tonic::Request<T>, user: &str, pw: &str) -> tonic::Request<T> {
    use base64::Engine;
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    req.metadata_mut().insert(
        "authorization",
        format!("Basic {v}").parse().expect("header"),
    );
    req
}

pub fn request(emu: &Emulator, shard: &str, table: &str, position: &str) -> SyncRequest {
    SyncRequest {
        table_name: table.into(),
        cursor: Some(TableCursor {
            shard: shard.into(),
            keyspace: emu.keyspace().into(),
            position: position.into(),
            last_known_pk: None,
        }),
        tablet_type: 1,
        include_inserts: true,
        include_updates: true,
        include_deletes: true,
        columns: vec![],
        cells: vec![],
    }
}

/// Runs a Sync with a deadline and collects responses until the stream ends
/// (returns the final status, OK if it ended cleanly). Like a real client, it
/// also enforces the deadline itself (300 ms after it, status message
/// "client deadline"), because tonic only sends it as `grpc-timeout`.
pub async fn sync_collect(
    emu: &Emulator,
    req: SyncRequest,
    timeout: Duration,
) -> (Vec<SyncResponse>, tonic::Status) {
    let mut c = client(channel(emu).await);
    let mut r = tonic::Request::new(req);
    r.set_timeout(timeout);
    let r = auth(r, &emu.config().username, &emu.config().password);
    let mut out = Vec::new();
    let mut stream = match c.sync(r).await {
        Ok(s) => s.into_inner(),
        Err(st) => return (out, st),
    };
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_millis(300);
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(m))) => out.push(m),
            Ok(Ok(None)) => return (out, tonic::Status::ok("")),
            Ok(Err(st)) => return (out, st),
            Err(_) => return (out, tonic::Status::deadline_exceeded("client deadline")),
        }
    }
}

/// Reads responses until `pred` holds on the collected ones, then drops the stream.
pub async fn sync_until(
    emu: &Emulator,
    req: SyncRequest,
    pred: impl Fn(&[SyncResponse]) -> bool,
) -> Vec<SyncResponse> {
    let mut c = client(channel(emu).await);
    let mut r = tonic::Request::new(req);
    r.set_timeout(Duration::from_secs(20));
    let r = auth(r, &emu.config().username, &emu.config().password);
    let mut stream = c.sync(r).await.expect("sync starts").into_inner();
    let mut out = Vec::new();
    while !pred(&out) {
        match stream.message().await {
            Ok(Some(m)) => out.push(m),
            other => panic!("stream ended before condition: {other:?}; got {out:#?}"),
        }
    }
    out
}

pub async fn current(emu: &Emulator, shard: &str, table: &str) -> String {
    let (resps, _) = sync_collect(
        emu,
        request(emu, shard, table, "current"),
        Duration::from_secs(10),
    )
    .await;
    resps
        .iter()
        .find_map(|r| r.cursor.as_ref().map(|c| c.position.clone()))
        .expect("current position")
}

/// Cells of a row as optional strings.
pub fn cells(row: &Row) -> Vec<Option<String>> {
    let mut off = 0usize;
    row.lengths
        .iter()
        .map(|&l| {
            if l < 0 {
                None
            } else {
                let s = String::from_utf8_lossy(&row.values[off..off + l as usize]).to_string();
                off += l as usize;
                Some(s)
            }
        })
        .collect()
}

pub fn rows_of(results: &[QueryResult]) -> Vec<Vec<Option<String>>> {
    results
        .iter()
        .flat_map(|q| q.rows.iter().map(cells))
        .collect()
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}
