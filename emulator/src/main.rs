//! `psdb-emulator`: runs the PlanetScale stand-in until SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use psdb_emulator::faults::parse_fault;
use psdb_emulator::mariadb::{MariaDb, StartOptions};
use psdb_emulator::{BackingSpec, ChangeText, Emulator, EmulatorConfig};

/// A local PlanetScale stand-in backed by a real MariaDB: a vtgate-like MySQL
/// front and the psdbconnect Sync gRPC API, with change capture, TLS and
/// faults on demand. The same gRPC port also serves vtgate's VStream
/// (/vtgateservice.Vitess/VStream) over the same data and faults, so a tap
/// config with "api": "vstream" works against grpc_addr unchanged.
///
/// READY FILE: with --ready-file PATH, once both fronts serve, the emulator
/// writes (atomically: temp file + rename) a JSON object:
/// {"grpc_addr": "127.0.0.1:P", "mysql_addr": "127.0.0.1:P", "ca_file": PATH|null,
///  "keyspace": KS, "shards": {SHARD: {"database": DB}, ...},
///  "mariadb_url": URL (only with --start-mariadb), "tap_config": {...}}.
/// tap_config is a complete tap-planetscale config: host, database, username,
/// password, mysql_host, grpc_host, tls, and tls_ca_file when TLS is on. Its
/// hosts are the listen addresses, with 127.0.0.1 for one that listens on
/// every address (0.0.0.0, the default).
///
/// PLANETSCALE'S GO CLIENTS (singer-tap, airbyte-source) dial MySQL on 3306
/// and gRPC on 443 of a host with no port, verify TLS, and compress gRPC with
/// snappy. Run as `--tls --mysql-listen IP:3306 --grpc-listen IP:443` and give
/// them SSL_CERT_FILE=<ca_file>: the certificate names localhost, 127.0.0.1,
/// the listen addresses and *.connect.psdb.cloud, and snappy calls are
/// answered in snappy, as grpc-go servers do.
///
/// COPY KEY: a copy is ordered and resumed (last_known_pk, the VGTID's
/// lastpk) by the primary key; without one, by vttablet's primary key
/// equivalent (the UNIQUE index of NOT NULL columns with the cheapest
/// column types, then the fewest columns, the last of ties), forced as
/// vttablet forces it; with neither, by every column. A delete over Connect
/// carries that key's columns.
///
/// CHANGE CAPTURE: triggers on each table of a backing database write into a
/// change log in the emulator's own database (see OWN OBJECTS; names over 64
/// characters or not plain ASCII are shortened with a hash). A table that cannot be captured (e.g. a column named
/// _psdb_...) is logged with the reason and served with its copy and no
/// changes. TRUNCATE TABLE through the MySQL front is recorded and sent over
/// VStream as vtgate sends it (VGTID, then a DDL event with the statement;
/// nothing over Connect, which has no place for it). Limits: a TRUNCATE made
/// straight on a backing database, and rows changed by foreign-key cascades,
/// fire no triggers in MariaDB, so they are not seen; writes within 0.5 s of a CREATE TABLE made
/// straight on a backing database are missed; the change log grows without
/// --retain-changes.
///
/// OWN OBJECTS: the change log, GTIDs, sequence, metadata, shadow tables and
/// the information_schema views live in the emulator's own database per
/// backing database (`_psdb_<db>`, hashed when long); only the capture
/// triggers (`_psdb_t{i,u,d}_<table>`) sit in the backing database, beside
/// their tables. Tables named _psdb_* in a backing database are not served.
///
/// The process runs until SIGTERM or SIGINT, then removes all of those
/// (triggers and own databases; with --start-mariadb the whole private
/// server goes) and exits 0: the user's databases are left as they were,
/// and positions handed out before answer as purged on the next start, as
/// the change log behind them is gone (rows written while no emulator ran
/// were never captured). --keep-objects leaves them instead, so a restarted
/// emulator resumes those positions. After a kill -9, `--cleanup` with the
/// same --mariadb-url, --keyspace, --shards and --shard-database removes
/// what was left.
#[derive(Debug, Parser)]
#[command(name = "psdb-emulator", version, verbatim_doc_comment)]
struct Args {
    /// URL of the backing MariaDB (mysql://user:pw@host:port). Required unless
    /// --start-mariadb is given.
    #[arg(long, env = "PSDB_EMULATOR_MARIADB_URL")]
    mariadb_url: Option<String>,
    /// Start a private MariaDB (temp datadir, free port) for the lifetime of
    /// the emulator; its URL goes into the ready file as `mariadb_url`.
    #[arg(long, conflicts_with = "mariadb_url")]
    start_mariadb: bool,
    /// InnoDB buffer pool of the private MariaDB (with --start-mariadb).
    #[arg(long, default_value = "256M")]
    mariadb_buffer_pool: String,
    /// Keyspace name (the `database` the tap is configured with).
    #[arg(long, default_value = "ks")]
    keyspace: String,
    /// Comma-separated shard names, e.g. `-` or `-80,80-` (values may start
    /// with `-`; `--shards=-80,80-` also works).
    #[arg(
        long,
        default_value = "-",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    shards: Vec<String>,
    /// Backing database of a shard, SHARD=DB (repeatable), created if
    /// missing. Default: `<keyspace>_<shard>`, where every character of the
    /// keyspace other than a letter, digit or `_`, and every character of the
    /// shard other than a letter or digit, becomes `_`, and a shard with no
    /// letter or digit (`-`) becomes `0`: keyspace `ks` stores shard `-` in
    /// `ks_0`, `-80` in `ks__80` and `80-` in `ks_80_`.
    #[arg(long = "shard-database", value_name = "SHARD=DB")]
    shard_database: Vec<String>,
    /// User name accepted by both fronts.
    #[arg(long, default_value = "emu")]
    username: String,
    /// Password accepted by both fronts.
    #[arg(long, default_value = "emu-secret")]
    password: String,
    /// gRPC listen address (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc_listen: SocketAddr,
    /// MySQL listen address (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    mysql_listen: SocketAddr,
    /// Serve TLS on both fronts with a generated CA (written to the cert dir).
    #[arg(long, overrides_with = "no_tls")]
    tls: bool,
    /// Serve plaintext (the default).
    #[arg(long, overrides_with = "tls")]
    no_tls: bool,
    /// Directory for the CA (`ca.pem`) and server certificate/key
    /// (`server.pem`, `server.key`). Existing files there are reused, so a
    /// restarted emulator keeps the CA its clients trust. Default: a temp dir
    /// removed on exit.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Change-phase cell text: `copy` (same as copy phase, Vitess v20+) or
    /// `change` (old Vitess: `.50`, `1.5E+00`, ENUM index, SET bitmask).
    #[arg(long, default_value = "copy", value_parser = ["copy", "change"])]
    change_text: String,
    /// Rows per copy-phase response (responses are also cut at 1 MiB of cells).
    #[arg(long, default_value_t = psdb_emulator::grpc::DEFAULT_COPY_BATCH_ROWS)]
    copy_batch_rows: usize,
    /// Arm a stream fault: `status:CODE:MESSAGE@N` (end with gRPC status CODE
    /// after N responses), `stall@N` (stop sending, keep the stream open),
    /// `drop@N` (reset the TCP connection), `malformed@N` (one response with a
    /// row whose lengths do not match its values). Append `!` to make it
    /// persistent (every stream) instead of one-shot (next stream only).
    /// `current` peeks are never affected.
    #[arg(long, value_name = "SPEC")]
    fault: Option<String>,
    /// Report start positions whose GTID number is below N as purged (gRPC
    /// UNKNOWN, "Cannot replicate because the master purged required binary logs").
    #[arg(long, value_name = "N")]
    purged_before: Option<u64>,
    /// Keep only the newest N transactions of each shard's change log;
    /// start positions older than that answer as purged, like
    /// --purged-before (default: keep every change).
    #[arg(long, value_name = "N")]
    retain_changes: Option<u64>,
    /// Remove the emulator's objects (see OWN OBJECTS above) for the backing
    /// databases named by --keyspace, --shards and --shard-database on
    /// --mariadb-url, then exit. No emulator may be serving them.
    #[arg(long, conflicts_with = "start_mariadb")]
    cleanup: bool,
    /// On exit, leave the emulator's objects in place, so that an emulator
    /// started again over the same databases resumes earlier positions.
    #[arg(long)]
    keep_objects: bool,
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
            // One line, once: not also as a log event.
            eprintln!("psdb-emulator: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let fault = args
        .fault
        .as_deref()
        .map(parse_fault)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if args.cleanup {
        let Some(url) = &args.mariadb_url else {
            anyhow::bail!("--cleanup needs --mariadb-url");
        };
        let dbs = config(&args, url.clone())?.backing_databases();
        let dbs: Vec<String> = dbs.into_values().collect();
        psdb_emulator::emulator::clean_up(url, &dbs).await?;
        return Ok(());
    }
    let mariadb = if args.start_mariadb {
        let opts = StartOptions {
            buffer_pool: args.mariadb_buffer_pool.clone(),
            ..Default::default()
        };
        Some(MariaDb::start_with(&opts).await?)
    } else {
        None
    };
    let url = match (&args.mariadb_url, &mariadb) {
        (Some(u), _) => u.clone(),
        (None, Some(m)) => m.url(),
        (None, None) => anyhow::bail!("give --mariadb-url or --start-mariadb"),
    };
    let emu = Emulator::start(config(&args, url.clone())?).await?;
    if let Some(f) = fault {
        emu.faults().set(f);
    }
    if let Some(n) = args.purged_before {
        emu.faults().set_purged_before(None, n);
    }
    let doc = emu.ready_document(mariadb.as_ref().map(|_| url.as_str()));
    if let Some(path) = &args.ready_file {
        psdb_emulator::ready::write(path, &doc)?;
    }
    eprintln!("{}", serde_json::to_string(&doc)?);

    psdb_emulator::ready::until_signal().await?;
    tracing::info!("shutting down");
    if args.keep_objects || mariadb.is_some() {
        emu.stop().await;
    } else {
        emu.stop_and_clean_up().await?;
    }
    drop(mariadb);
    Ok(())
}

/// The emulator's configuration from the flags, over the MariaDB at `url`.
fn config(args: &Args, url: String) -> anyhow::Result<EmulatorConfig> {
    let mut shard_databases = BTreeMap::new();
    for spec in &args.shard_database {
        let (shard, db) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--shard-database wants SHARD=DB, got {spec:?}"))?;
        if !args.shards.iter().any(|s| s == shard) {
            anyhow::bail!("--shard-database names unknown shard {shard:?}");
        }
        shard_databases.insert(shard.to_string(), db.to_string());
    }
    let cfg = EmulatorConfig {
        keyspace: args.keyspace.clone(),
        shards: args.shards.clone(),
        username: args.username.clone(),
        password: args.password.clone(),
        tls: args.tls && !args.no_tls,
        backing: BackingSpec {
            url,
            shard_databases,
            fresh_databases: false,
        },
        cdc_text: if args.change_text == "change" {
            ChangeText::ChangeForms
        } else {
            ChangeText::CopyForms
        },
        grpc_listen: args.grpc_listen,
        mysql_listen: args.mysql_listen,
        cert_dir: args.cert_dir.clone(),
        cell: "zone1".into(),
        copy_batch_rows: args.copy_batch_rows,
        retain_changes: args.retain_changes,
    };
    Ok(cfg)
}
