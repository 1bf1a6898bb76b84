//! Minimal Sync client for the emulator's drain benchmark: streams the copy
//! phase of one table (until the cursor no longer carries `last_known_pk`)
//! and prints rows, bytes and rows per second. With `--from-position` it
//! drains the change phase instead, until `--expect-changes` row changes
//! have arrived.

use std::time::Instant;

use clap::Parser;
use psdb_emulator::wire::psdbconnect::v1alpha1::connect_client::ConnectClient;
use psdb_emulator::wire::psdbconnect::v1alpha1::{SyncRequest, TableCursor};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Drains the copy phase of a table over gRPC and reports throughput.
#[derive(Debug, Parser)]
struct Args {
    /// gRPC address, host:port.
    #[arg(long)]
    grpc: String,
    #[arg(long, default_value = "ks")]
    keyspace: String,
    #[arg(long, default_value = "-")]
    shard: String,
    #[arg(long)]
    table: String,
    #[arg(long, default_value = "emu")]
    username: String,
    #[arg(long, default_value = "emu-secret")]
    password: String,
    /// Start from this position (change phase) instead of copying.
    #[arg(long)]
    from_position: Option<String>,
    /// With --from-position: stop after this many row changes.
    #[arg(long, default_value_t = 0)]
    expect_changes: u64,
    /// CA file; enables TLS (server name `localhost`).
    #[arg(long)]
    tls_ca_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use base64::Engine;
    let args = Args::parse();
    let port = args
        .grpc
        .rsplit(':')
        .next()
        .ok_or_else(|| anyhow::anyhow!("--grpc wants host:port"))?;
    let mut ep = match &args.tls_ca_file {
        Some(ca) => Endpoint::from_shared(format!("https://localhost:{port}"))?.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
                .domain_name("localhost"),
        )?,
        None => Endpoint::from_shared(format!("http://{}", args.grpc))?,
    };
    ep = ep
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .tcp_nodelay(true);
    let channel = ep.connect().await?;
    let mut client = ConnectClient::new(channel).max_decoding_message_size(usize::MAX);
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", args.username, args.password));
    let mut req = tonic::Request::new(SyncRequest {
        table_name: args.table.clone(),
        cursor: Some(TableCursor {
            shard: args.shard.clone(),
            keyspace: args.keyspace.clone(),
            position: args.from_position.clone().unwrap_or_default(),
            last_known_pk: None,
        }),
        tablet_type: 1,
        include_inserts: true,
        include_updates: true,
        include_deletes: true,
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Basic {auth}").parse()?);
    let started = Instant::now();
    let mut stream = client.sync(req).await?.into_inner();
    let (mut rows, mut bytes, mut responses) = (0u64, 0u64, 0u64);
    while let Some(resp) = stream.message().await? {
        responses += 1;
        for r in &resp.result {
            rows += r.rows.len() as u64;
            bytes += r.rows.iter().map(|x| x.values.len() as u64).sum::<u64>();
        }
        rows += (resp.updates.len() + resp.deletes.len()) as u64;
        let copy_done = resp
            .cursor
            .as_ref()
            .is_some_and(|c| c.last_known_pk.is_none());
        let done = match args.from_position {
            Some(_) => rows >= args.expect_changes,
            None => copy_done,
        };
        if done {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"rows\": {rows}, \"cell_bytes\": {bytes}, \"responses\": {responses}, \"seconds\": {secs:.3}, \"rows_per_sec\": {:.0}}}",
        rows as f64 / secs
    );
    Ok(())
}
