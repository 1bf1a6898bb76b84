//! `psdb-vitess`: runs a real Vitess (vtcombo over a private MariaDB) until
//! SIGTERM/SIGINT, for the demo and for trying the tap against the real
//! vtgate by hand. `scripts/vitess` runs it.

use std::path::PathBuf;

use clap::Parser;
use psdb_emulator::vitess::{Vitess, VitessConfig};

/// A real Vitess v0.24 (vtcombo: vtgate, a PRIMARY, REPLICA and RDONLY
/// vttablet per shard, in-memory topology) over a private MariaDB with a
/// row-based binary log. vtcombo is built by `scripts/peers vitess`, or
/// named by $VTCOMBO.
///
/// READY FILE: with --ready-file PATH, once every tablet serves, it writes
/// (atomically) the emulator's keys:
/// {"grpc_addr": "127.0.0.1:P", "mysql_addr": "127.0.0.1:P", "ca_file": PATH|null,
///  "keyspace": KS, "shards": {SHARD: {"database": "vt_<ks>_<shard>"}, ...},
///  "mariadb_url": URL, "tap_config": {... "api": "vstream", "grpc_auth": "static"}}.
/// Write rows into the shard databases through mariadb_url, or through
/// vtgate's MySQL front (mysql_addr) on an unsharded keyspace.
/// With --edge IP the document also has
/// "edge": {"mysql_addr": "IP:3306", "grpc_addr": "IP:443"}.
///
/// The process runs until SIGTERM or SIGINT and then exits 0.
#[derive(Debug, Parser)]
#[command(name = "psdb-vitess", version, verbatim_doc_comment)]
struct Args {
    /// Keyspace name (the `database` the tap is configured with).
    #[arg(long, default_value = "ks")]
    keyspace: String,
    /// Comma-separated shard names: `-`, or `-80,80-` (`--shards=-80,80-`).
    #[arg(
        long,
        default_value = "-",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    shards: Vec<String>,
    /// Serve TLS on vtgate's MySQL and gRPC fronts with a generated CA.
    #[arg(long)]
    tls: bool,
    /// Also serve as PlanetScale's edge, for its own Go clients
    /// (airbyte-source): MySQL on IP:3306, gRPC on IP:443 with Basic auth,
    /// TLS for `*.connect.psdb.cloud` names (point one at IP in /etc/hosts).
    /// Needs --tls; ports below 1024 need root.
    #[arg(long, value_name = "IP", requires = "tls")]
    edge: Option<std::net::IpAddr>,
    /// Write the ready file (JSON, see above) here once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    psdb_emulator::ready::init_logs();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psdb-vitess: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shards: Vec<&str> = args.shards.iter().map(String::as_str).collect();
    let cfg = VitessConfig::new(&args.keyspace)
        .shards(&shards)
        .tls(args.tls);
    let vitess = Vitess::start(cfg).await?;
    let mut doc = vitess.ready_document();
    let edge = match args.edge {
        Some(ip) => Some(vitess.edge(ip).await?),
        None => None,
    };
    if let Some(edge) = &edge {
        doc["edge"] = serde_json::json!({
            "mysql_addr": edge.mysql_addr().to_string(),
            "grpc_addr": edge.grpc_addr().to_string(),
        });
    }
    if let Some(path) = &args.ready_file {
        psdb_emulator::ready::write(path, &doc)?;
    }
    eprintln!("{}", serde_json::to_string(&doc)?);
    psdb_emulator::ready::until_signal().await?;
    tracing::info!("shutting down");
    drop(edge);
    drop(vitess);
    Ok(())
}
