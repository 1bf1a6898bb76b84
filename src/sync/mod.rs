//! Sync: plan the (stream, shard) slots, run their readers in parallel, and
//! write everything through the one writer.
//!
//! The wiring is: MySQL once at the start (shards, tablets → cells, table
//! columns), then one gRPC channel shared by up to `max_parallel_readers`
//! readers. Readers send finished RECORD lines with the cursor that covers
//! them; this module's writer loop is the only place that touches stdout and
//! the state. It writes a batch's lines, then adopts its cursor (refusing
//! any that would move backward), and emits STATE every N records or T
//! seconds, at the end of each slot, and once at the very end, always after
//! flushing the records it covers. On a permanent error it stops the other
//! readers, writes what it already received, emits the last good STATE and
//! fails.

pub mod reader;
pub mod vstream;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::signal::unix::{signal as unix_signal, SignalKind};
use tokio::sync::{mpsc, OnceCell, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::app::SyncInputs;
use crate::catalog::{ReplicationMethod, SelectedStream};
use crate::config::Settings;
use crate::convert::{PropertySpec, Target};
use crate::error::TapError;
use crate::mysql::{self, RawTable};
use crate::pb::psdbconnect::v1alpha1::TableCursor;
use crate::progress;
use crate::psdb::PsdbClient;
use crate::singer::SingerWriter;
use crate::state;
use crate::types::ColumnType;
use reader::{Event, ReaderContext, Slot, StreamSpec};

/// The `_sdc_deleted_at` property CDC streams declare.
fn deleted_at_schema() -> Value {
    json!({"type": ["null", "string"], "format": "date-time"})
}

macro_rules! sequence_column {
    () => {
        "_sdc_source_sequence"
    };
}

/// The tap's record sequence with `include_metadata`. Not `_sdc_sequence`:
/// Meltano SDK targets write that column themselves and would overwrite ours.
pub(crate) const SEQUENCE_COLUMN: &str = sequence_column!();

/// `,"<SEQUENCE_COLUMN>":`, as written before each record's sequence: a
/// constant, so no row escapes the name again.
pub(crate) const SEQUENCE_KEY: &str = concat!(",\"", sequence_column!(), "\":");

/// Bookmark key of a FULL_TABLE copy's version.
const VERSION_KEY: &str = "version";
/// Bookmark key set once a FULL_TABLE copy has completed (ppw's name).
const COMPLETE_KEY: &str = "initial_full_table_complete";

/// The SCHEMA message's schema: the selected properties, plus what the tap
/// adds to records.
fn stream_schema(s: &SelectedStream, include_metadata: bool) -> Value {
    let mut props = Map::new();
    for p in &s.properties {
        props.insert(p.name.clone(), p.schema.clone());
    }
    if s.method.is_cdc() {
        props.insert("_sdc_deleted_at".into(), deleted_at_schema());
    }
    if include_metadata {
        props.insert("_sdc_shard".into(), json!({"type": ["null", "string"]}));
        props.insert("_sdc_position".into(), json!({"type": ["null", "string"]}));
        props.insert(SEQUENCE_COLUMN.into(), json!({"type": ["null", "integer"]}));
    }
    json!({"type": ["null", "object"], "additionalProperties": false, "properties": props})
}

/// Cells of the tablets of the chosen type in this keyspace.
pub(crate) fn cells_for(settings: &Settings, tablets: &[mysql::Tablet]) -> Vec<String> {
    let want = settings.tablet_type.as_str();
    let mut cells: Vec<String> = tablets
        .iter()
        .filter(|t| {
            t.tablet_type.eq_ignore_ascii_case(want)
                && (t.keyspace.is_empty() || t.keyspace == settings.database)
        })
        .map(|t| t.cell.clone())
        .collect();
    cells.sort();
    cells.dedup();
    cells
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type MySqlAnswers = (
    Result<Vec<String>, mysql::MySqlError>,
    Result<Vec<mysql::Tablet>, mysql::MySqlError>,
    Result<Vec<RawTable>, mysql::MySqlError>,
);

/// Why a round of the MySQL queries failed.
enum PhaseError {
    /// No connection at all: a wrong host, port, password or database, said
    /// at once rather than after a round of retries (see the exit-code rule
    /// in `error`).
    Connect(mysql::MySqlError),
    /// The connection broke during the queries: worth a retry.
    Lost(mysql::MySqlError),
}

/// One round of the MySQL queries a sync needs. A connection failure is the
/// outer error; a query's own failure is inside.
async fn mysql_phase(settings: &Settings, keyspace: &str) -> Result<MySqlAnswers, PhaseError> {
    let mut conn = mysql::connect(settings)
        .await
        .map_err(PhaseError::Connect)?;
    let shards = mysql::shards(&mut conn, keyspace).await;
    let tablets = mysql::tablets(&mut conn).await;
    let tables = mysql::describe_schema(&mut conn, keyspace).await;
    mysql::close(conn).await;
    for r in [
        shards.as_ref().err(),
        tablets.as_ref().err(),
        tables.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        if r.is_retryable() {
            let reason = match r {
                mysql::MySqlError::Query { source, .. } => crate::error::root_cause(&**source),
                other => other.to_string(),
            };
            return Err(PhaseError::Lost(mysql::MySqlError::Unreachable {
                endpoint: settings.mysql.to_string(),
                reason,
            }));
        }
    }
    Ok((shards, tablets, tables))
}

/// The method a stream is synced with this run: its catalog's, except that
/// a table without a primary key is copied in full (FULL_TABLE).
///
/// Why: its changes can only be sent as whole-row images with no key, which
/// no target can apply (an update would add a row, a delete would match
/// nothing or every duplicate), and a copy resumed after an interruption
/// cannot tell identical rows apart (so a keyless copy is never resumed
/// across runs: an interrupted one starts again). A full copy bracketed by
/// ACTIVATE_VERSION replaces the target's table with the source's, so
/// nothing wrong reaches it. Warned once per stream per run, also when the
/// catalog already says FULL_TABLE: the cost of a full copy every run should
/// not go unseen.
fn method_for(s: &SelectedStream, table: &RawTable) -> ReplicationMethod {
    if !table.primary_key.is_empty() {
        return s.method;
    }
    warn!(
        stream = %s.name,
        catalog_method = %s.method,
        "table has no primary key, so its changes cannot be keyed: copying it in full (FULL_TABLE) every run; add a primary key to follow its changes"
    );
    ReplicationMethod::FullTable
}

/// Runs a sync to completion, writing Singer messages to stdout.
pub async fn run(settings: &Settings, inputs: SyncInputs) -> Result<(), TapError> {
    run_into(settings, inputs, std::io::stdout()).await
}

/// Runs a sync to completion, writing Singer messages to `output` (stdout,
/// or in commit mode the pipe to the Import API writer). `output` is
/// dropped, and so closed, when the run ends.
pub async fn run_into<W: std::io::Write>(
    settings: &Settings,
    inputs: SyncInputs,
    output: W,
) -> Result<(), TapError> {
    let SyncInputs {
        catalog,
        state,
        state_path,
        ..
    } = inputs;
    let mut state = state;
    let selected = catalog.selected()?;
    let keyspace = settings.database.clone();

    // MySQL: shards, cells and the tables' real columns. A connection that
    // breaks during the queries is retried like any transient error.
    let mut attempt = 0;
    let (shards_res, tablets_res, tables_res) = loop {
        match mysql_phase(settings, &keyspace).await {
            Ok(answers) => break answers,
            Err(PhaseError::Lost(e)) if attempt < settings.max_retries => {
                attempt += 1;
                let wait = reader::backoff(attempt);
                warn!(attempt, error = %e, wait_ms = wait.as_millis() as u64, "MySQL failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(PhaseError::Connect(e) | PhaseError::Lost(e)) => return Err(e.into()),
        }
    };
    let available = shards_res?;
    if available.is_empty() {
        return Err(TapError::Usage(format!(
            "keyspace `{keyspace}` has no shards (SHOW VITESS_SHARDS lists none for it); check `database`"
        )));
    }
    let shards = state::select_shards(&keyspace, &available, settings.shards.as_deref())?;
    let cells = match &settings.cells {
        Some(given) => given.clone(),
        None => cells_for(settings, &tablets_res?),
    };
    if cells.is_empty() {
        return Err(TapError::Usage(format!(
            "keyspace `{keyspace}` has no {} tablets (SHOW VITESS_TABLETS); choose another tablet type (use_replica / use_rdonly)",
            settings.tablet_type.as_str().to_uppercase()
        )));
    }
    let tables: BTreeMap<String, RawTable> = tables_res?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    if let Some(p) = &state_path {
        // A selected stream's cursor for a shard that is gone cannot be
        // resumed: its rows now live in other shards.
        for sel in &selected {
            if let Some(sb) = state.bookmarks.get(&sel.name) {
                if let Some(shard) = sb.shards.keys().find(|s| !available.contains(s)) {
                    return Err(state::StateError::GoneShard {
                        path: p.display().to_string(),
                        stream: sel.name.clone(),
                        shard: shard.clone(),
                        keyspace: keyspace.clone(),
                        available: available.join(", "),
                    }
                    .into());
                }
            }
        }
    }

    // Plan the streams.
    let mut specs: Vec<Arc<StreamSpec>> = Vec::new();
    let mut schemas: Vec<(String, Value, Vec<String>)> = Vec::new();
    let mut activate_first: Vec<(String, i64)> = Vec::new();
    // Each planned stream's estimated rows, for progress.
    let mut row_counts: Vec<Option<u64>> = Vec::new();
    for s in &selected {
        let Some(table) = tables.get(&s.table) else {
            return Err(TapError::Usage(format!(
                "catalog stream `{}` selects table `{}`, which is not in keyspace `{keyspace}`; deselect it or rediscover",
                s.tap_stream_id, s.table
            )));
        };
        if table.is_view || s.is_view {
            warn!(stream = %s.name, "skipping a view: the Connect API streams tables only; select its base tables instead");
            continue;
        }
        let mut props = Vec::new();
        let mut columns = Vec::new();
        for p in &s.properties {
            let column_type = table
                .columns
                .iter()
                .find(|c| c.name == p.name)
                .map(|c| c.column_type.clone());
            let sql = p.sql_datatype.clone().or_else(|| column_type.clone());
            let members = sql
                .as_deref()
                .map(ColumnType::parse)
                .filter(|ct| ct.base == "enum" || ct.base == "set")
                .map(|ct| ct.members())
                .unwrap_or_default();
            if column_type.is_some() {
                columns.push(p.name.clone());
            } else {
                warn!(stream = %s.name, column = %p.name, "selected column is not in the table (dropped?); it will be null");
            }
            props.push(PropertySpec {
                name: p.name.clone(),
                target: Target::of(&p.schema),
                members,
            });
        }
        let method = method_for(s, table);
        let version = if method == ReplicationMethod::FullTable {
            let bm = state.bookmarks.entry(s.name.clone()).or_default();
            // A keyless copy is never resumed: it would resume after the
            // last row sent, by every column, which skips an identical row.
            let in_progress = bm.extra.get(COMPLETE_KEY).and_then(Value::as_bool) == Some(false)
                && !table.primary_key.is_empty();
            let old = bm.extra.get(VERSION_KEY).and_then(Value::as_i64);
            match (in_progress, old) {
                (true, Some(v)) => v,
                _ => {
                    let v = now_ms();
                    // First-ever copy: activate now so rows appear at once.
                    if old.is_none() {
                        activate_first.push((s.name.clone(), v));
                    }
                    bm.shards.clear();
                    bm.extra.insert(VERSION_KEY.into(), json!(v));
                    bm.extra.insert(COMPLETE_KEY.into(), json!(false));
                    v
                }
            }
            .into()
        } else {
            if let Some(bm) = state.bookmarks.get_mut(&s.name) {
                bm.extra.remove(VERSION_KEY);
                bm.extra.remove(COMPLETE_KEY);
            }
            None
        };
        let starting = settings.starting_gtids.get(&keyspace);
        state.initialize(
            &s.name,
            &keyspace,
            &shards,
            if method.is_cdc() { starting } else { None },
        );
        schemas.push((
            s.name.clone(),
            stream_schema(s, settings.include_metadata),
            s.key_properties.clone(),
        ));
        row_counts.push(s.row_count.or(table.row_count));
        specs.push(Arc::new(StreamSpec {
            name: s.name.clone(),
            name_json: serde_json::to_string(&s.name).unwrap_or_else(|_| "\"\"".into()),
            table: s.table.clone(),
            props,
            columns,
            key_properties: s.key_properties.clone(),
            method,
            version,
        }));
    }

    let client = PsdbClient::connect(settings).await?;

    // From here on SIGINT/SIGTERM stop the run cleanly: readers stop, and
    // a final STATE covers exactly what was written.
    let signal_err =
        |e: std::io::Error| TapError::Runtime(format!("cannot watch for signals: {e}"));
    let mut sigterm = unix_signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut sigint = unix_signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut out = SingerWriter::new(output);
    for (name, schema, keys) in &schemas {
        out.schema(name, schema, keys, None)?;
    }
    for (name, v) in &activate_first {
        out.activate_version(name, *v)?;
    }

    // Slots: every (stream, shard).
    let mut slots = Vec::new();
    let mut board_slots = Vec::new();
    // Which stream each slot reads.
    let mut slot_stream: Vec<usize> = Vec::new();
    for (si, spec) in specs.iter().enumerate() {
        for shard in &shards {
            let start = state.cursor(&spec.name, shard).unwrap_or(TableCursor {
                shard: shard.clone(),
                keyspace: keyspace.clone(),
                position: String::new(),
                last_known_pk: None,
            });
            let copying = start.last_known_pk.is_some() || start.position.is_empty();
            board_slots.push(progress::Slot::new(
                &spec.name,
                shard,
                progress::per_shard(row_counts[si], shards.len()),
                copying,
            ));
            slot_stream.push(si);
            slots.push(Slot {
                index: slots.len(),
                stream: spec.clone(),
                shard: shard.clone(),
                start,
                floor: state.copy_floor(&spec.name, shard),
            });
        }
    }

    let ctx = Arc::new(ReaderContext {
        client,
        settings: settings.clone(),
        keyspace: keyspace.clone(),
        tablet_type: settings.tablet_type,
        cells,
        timeout: settings.timeout,
        max_retries: settings.max_retries,
        retry_budget: settings.retry_budget,
        include_metadata: settings.include_metadata,
        resync_on_purged: settings.resync_on_purged,
        sequence: AtomicU64::new(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        ),
        stops: shards
            .iter()
            .map(|s| (s.clone(), OnceCell::new()))
            .collect(),
        lines: reader::LinePool::default(),
    });
    info!(
        api = %settings.api.as_str(),
        streams = specs.len(),
        shards = shards.len(),
        readers = settings.max_parallel_readers,
        "sync starting"
    );

    let (tx, mut rx) = mpsc::channel::<Event>(settings.max_parallel_readers * 2 + 2);
    let permits = Arc::new(Semaphore::new(settings.max_parallel_readers));
    let mut tasks = JoinSet::new();
    for slot in slots {
        let ctx = ctx.clone();
        let tx = tx.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            reader::run(ctx, slot, tx).await;
        });
    }
    drop(tx);

    // The writer loop.
    let mut board = progress::Board::new(board_slots, settings.progress_interval);
    let mut since_state: u64 = 0;
    let mut last_state = Instant::now();
    let mut failure: Option<TapError> = None;
    let mut ticker = tokio::time::interval(
        settings
            .state_interval
            .min(settings.progress_interval)
            .min(Duration::from_secs(5)),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        let event = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => ev, None => break },
            _ = sigterm.recv() => {
                failure = Some(TapError::Interrupted { signal: "SIGTERM", code: 143 });
                tasks.abort_all();
                break;
            }
            _ = sigint.recv() => {
                failure = Some(TapError::Interrupted { signal: "SIGINT", code: 130 });
                tasks.abort_all();
                break;
            }
            _ = ticker.tick() => {
                if dirty && last_state.elapsed() >= settings.state_interval {
                    out.state(&state.to_json())?;
                    since_state = 0;
                    last_state = Instant::now();
                    dirty = false;
                }
                board.tick();
                continue;
            }
        };
        match event {
            Event::Batch(b) => {
                let spec = &specs[slot_stream[b.slot]];
                let shard = board.slot(b.slot).shard.clone();
                if b.records > 0 {
                    out.records_raw(&b.lines, b.records)?;
                    since_state += b.records;
                    dirty = true;
                }
                if let Some(c) = &b.cursor {
                    match state.cursor(&spec.name, &shard) {
                        Some(old) if !state::advances(&old, c) => {
                            warn!(stream = %spec.name, shard = %shard, old = %old.position, new = %c.position, "server sent an older cursor; keeping the newer one");
                        }
                        _ => {
                            state.set_cursor(&spec.name, &shard, c);
                            if c.last_known_pk.is_none() && !c.position.is_empty() {
                                state.set_copy_floor(&spec.name, &shard, None);
                            }
                            dirty = true;
                        }
                    }
                }
                board.add(b.slot, &b.counts, b.copying);
                ctx.lines.give(b.lines);
                if since_state >= settings.state_interval_records
                    || last_state.elapsed() >= settings.state_interval
                {
                    out.state(&state.to_json())?;
                    since_state = 0;
                    last_state = Instant::now();
                    dirty = false;
                }
            }
            Event::CopyFloor { slot, floor } => {
                let shard = &board.slot(slot).shard;
                state.set_copy_floor(&specs[slot_stream[slot]].name, shard, Some(&floor));
                out.state(&state.to_json())?;
                last_state = Instant::now();
                since_state = 0;
            }
            Event::Reset { slot, cursor } => {
                let shard = &board.slot(slot).shard;
                state.set_cursor(&specs[slot_stream[slot]].name, shard, &cursor);
                out.state(&state.to_json())?;
                last_state = Instant::now();
                since_state = 0;
            }
            Event::Done { slot, warnings } => {
                board.done(slot, warnings);
                let si = slot_stream[slot];
                let spec = specs[si].clone();
                if spec.method == ReplicationMethod::FullTable
                    && slot_stream
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| **s == si)
                        .all(|(i, _)| board.slot(i).done)
                {
                    // The whole copy is in: activate it so older rows go.
                    if let Some(v) = spec.version {
                        out.activate_version(&spec.name, v)?;
                    }
                    if let Some(bm) = state.bookmarks.get_mut(&spec.name) {
                        bm.shards.clear();
                        bm.extra.insert(COMPLETE_KEY.into(), json!(true));
                    }
                }
                out.state(&state.to_json())?;
                since_state = 0;
                last_state = Instant::now();
                dirty = false;
            }
            Event::Failed { slot, error } => {
                let stream = &specs[slot_stream[slot]].name;
                let shard = &board.slot(slot).shard;
                if failure.is_none() {
                    // Its text is the run's final error line: said once.
                    warn!(stream = %stream, shard = %shard, "reader failed; stopping the others");
                    failure = Some(TapError::Read(error));
                } else {
                    warn!(stream = %stream, shard = %shard, error = %error, "another reader failed too");
                }
                tasks.abort_all();
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    out.state(&state.to_json())?;
    board.finish();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Endpoint, Secret, TabletType};

    fn settings(tablet_type: TabletType) -> Settings {
        Settings {
            database: "ks".into(),
            username: "u".into(),
            password: Secret::new("p"),
            mysql: Endpoint {
                host: "h".into(),
                port: 1,
            },
            grpc: Endpoint {
                host: "h".into(),
                port: 2,
            },
            tls: false,
            tls_ca_file: None,
            shards: None,
            tablet_type,
            starting_gtids: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_retries: 1,
            retry_budget: Duration::from_secs(1),
            include_metadata: false,
            do_not_treat_tiny_int_as_boolean: None,
            max_parallel_readers: 1,
            state_interval_records: 1,
            state_interval: Duration::from_secs(1),
            progress_interval: Duration::from_secs(1),
            resync_on_purged: false,
            api: crate::config::Api::Psdbconnect,
            grpc_auth: crate::config::GrpcAuth::Basic,
            cells: None,
            encodings: Default::default(),
        }
    }

    fn tablet(cell: &str, ks: &str, ty: &str) -> mysql::Tablet {
        mysql::Tablet {
            cell: cell.into(),
            keyspace: ks.into(),
            shard: "-".into(),
            tablet_type: ty.into(),
            state: "SERVING".into(),
        }
    }

    #[test]
    fn cells_follow_the_tablet_type_and_keyspace() {
        let tablets = vec![
            tablet("zone1", "ks", "PRIMARY"),
            tablet("zone2", "ks", "REPLICA"),
            tablet("zone1", "ks", "REPLICA"),
            tablet("zone3", "other", "RDONLY"),
            tablet("zone2", "ks", "REPLICA"),
        ];
        assert_eq!(
            cells_for(&settings(TabletType::Primary), &tablets),
            vec!["zone1"]
        );
        assert_eq!(
            cells_for(&settings(TabletType::Replica), &tablets),
            vec!["zone1", "zone2"]
        );
        // none of that type in this keyspace: empty, which sync reports as an error
        assert!(cells_for(&settings(TabletType::Rdonly), &tablets).is_empty());
    }
}
