//! One reader per (stream, shard): the read loop of design.md §7.
//!
//! The reader owns its Sync sessions and its copy of the cursor. For every
//! response it converts the rows into finished RECORD lines and hands them,
//! together with the response's cursor, to the writer in one [`Batch`]: the
//! writer writes the lines first and only then adopts the cursor, so a STATE
//! can never run ahead of its records.
//!
//! The API is either PlanetScale's Connect Sync or vtgate's VStream: a
//! [`Session`] hides which, and [`super::vstream`] turns VStream events
//! into the Sync response shape, so everything below is shared.
//!
//! Stop rule: peek at `current` once per shard (shared by every stream of
//! that shard), then read until the cursor is past its copy and its position
//! contains the stop position (GTID-set `AtLeast`, not string equality). A
//! session that ends (deadline or end of stream) before that peeks again and
//! continues; a transient error retries from the last cursor with backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, OnceCell};
use tracing::{debug, info, warn};

use crate::catalog::ReplicationMethod;
use crate::config::{Api, TabletType};
use crate::convert::{cells, write_json_str, PropertySpec, RecordPlan, Warnings};
use crate::pb::psdbconnect::v1alpha1::{SyncRequest, SyncResponse, TableCursor};
use crate::pb::query::{Field, QueryResult, Row};
use crate::position::Position;
use crate::psdb::{classify, tablet_type_number, PsdbClient, StatusClass};
use crate::singer::{encode_record, rfc3339_utc};
use crate::sync::vstream::{self, SessionError, Unit};

/// Everything about one selected stream that readers need.
#[derive(Debug)]
pub struct StreamSpec {
    pub name: String,
    /// The name as a JSON string literal, escaped once.
    pub name_json: String,
    pub table: String,
    pub props: Vec<PropertySpec>,
    /// Columns to request (selected and present in the table).
    pub columns: Vec<String>,
    pub key_properties: Vec<String>,
    pub method: ReplicationMethod,
    /// FULL_TABLE version, on every record.
    pub version: Option<i64>,
}

/// Settings shared by every reader.
pub struct ReaderContext {
    pub client: PsdbClient,
    /// For re-reading a table's columns after DDL during the run.
    pub settings: crate::config::Settings,
    pub keyspace: String,
    pub tablet_type: TabletType,
    pub cells: Vec<String>,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Longest streak of retries before giving up.
    pub retry_budget: Duration,
    pub include_metadata: bool,
    pub resync_on_purged: bool,
    /// `_sdc_source_sequence`: rises across the run (and across runs, being seeded
    /// from the clock).
    pub sequence: AtomicU64,
    /// The stop position of each shard, peeked once per run.
    pub stops: Vec<(String, OnceCell<String>)>,
    pub lines: LinePool,
}

/// One (stream, shard) to read.
pub struct Slot {
    pub index: usize,
    pub stream: Arc<StreamSpec>,
    pub shard: String,
    pub start: TableCursor,
    /// Where an interrupted copy began, from the state, if known.
    pub floor: Option<String>,
}

/// Row counts of one (stream, shard).
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub copied: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.copied + self.inserted + self.updated + self.deleted
    }
}

/// Line buffers the writer hands back once it has written them, so readers
/// reuse their capacity: a fresh buffer per batch would grow by doubling
/// (copying everything each time) and, past glibc's mmap threshold, fault
/// in fresh zeroed pages for every response.
#[derive(Debug, Default)]
pub struct LinePool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl LinePool {
    /// More spare buffers than batches in flight would only hold memory.
    const KEEP: usize = 16;

    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_else(|| Vec::with_capacity(64 * 1024))
    }

    pub fn give(&self, mut lines: Vec<u8>) {
        lines.clear();
        if let Ok(mut free) = self.free.lock() {
            if free.len() < Self::KEEP {
                free.push(lines);
            }
        }
    }
}

/// Records of one response and the cursor that covers them.
pub struct Batch {
    pub slot: usize,
    pub lines: Vec<u8>,
    pub records: u64,
    pub counts: Counts,
    pub cursor: Option<TableCursor>,
    /// Whether the slot is in its copy phase after this batch.
    pub copying: bool,
}

/// What a reader tells the writer.
pub enum Event {
    Batch(Batch),
    /// The cursor must go back to this one (a purged position restarted as
    /// a full copy, by the user's choice).
    Reset {
        slot: usize,
        cursor: TableCursor,
    },
    /// A copy is about to begin at or after this position: saved (and a
    /// STATE emitted) before the copy's first record.
    CopyFloor {
        slot: usize,
        floor: String,
    },
    Done {
        slot: usize,
        warnings: Vec<(String, String, u64)>,
    },
    Failed {
        slot: usize,
        error: ReadError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("stream `{stream}` shard `{shard}`: the saved position is no longer on the server (its binary logs were purged): {message}. Rerun this stream from a fresh state (remove its bookmark from the state file), or set `resync_on_purged` to true to restart it from a full copy automatically")]
    Purged {
        stream: String,
        shard: String,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: the server refused the credentials ({code:?}: {message}); check `username`/`password` (and `grpc_auth` for a self-hosted vtgate), and that the password may use the gRPC API (PlanetScale Connect)")]
    Auth {
        stream: String,
        shard: String,
        code: tonic::Code,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: the server failed the sync ({code:?}: {message})")]
    Server {
        stream: String,
        shard: String,
        code: tonic::Code,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: gave up after {attempts} attempts; last error {code:?}: {message}")]
    Exhausted {
        stream: String,
        shard: String,
        attempts: u32,
        code: tonic::Code,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: bad data from the server: {problem}")]
    Data {
        stream: String,
        shard: String,
        problem: String,
    },
}

impl ReadError {
    /// Exit-code class (see `error`): refused credentials and a purged
    /// position need the person to change the config or the state; the
    /// rest may pass on a rerun.
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            ReadError::Auth { .. } | ReadError::Purged { .. } => crate::error::Kind::Input,
            ReadError::Server { .. } | ReadError::Exhausted { .. } | ReadError::Data { .. } => {
                crate::error::Kind::Failed
            }
        }
    }

    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Keeps the last_known_pk to the key columns, in key order (the server may
/// send every field; values are matched by position).
pub fn trim_last_known_pk(qr: &QueryResult, keys: &[String]) -> QueryResult {
    let Some(row) = qr.rows.first() else {
        return qr.clone();
    };
    let idx: Vec<usize> = keys
        .iter()
        .filter_map(|k| qr.fields.iter().position(|f| &f.name == k))
        .collect();
    if idx.len() != keys.len()
        || idx.len() == qr.fields.len() && idx.iter().enumerate().all(|(i, j)| i == *j)
    {
        return qr.clone();
    }
    let Ok(cell_iter) = cells(row, qr.fields.len()) else {
        return qr.clone();
    };
    let all: Vec<Option<&[u8]>> = cell_iter.collect();
    let mut lengths = Vec::with_capacity(idx.len());
    let mut values = Vec::new();
    for &i in &idx {
        match all[i] {
            None => lengths.push(-1),
            Some(b) => {
                lengths.push(b.len() as i64);
                values.extend_from_slice(b);
            }
        }
    }
    QueryResult {
        fields: idx.iter().map(|&i| qr.fields[i].clone()).collect(),
        rows: vec![Row {
            lengths,
            values: values.into(),
        }],
        ..Default::default()
    }
}

/// A copy of a response's cursor that owns its bytes. Its `last_known_pk`
/// row is otherwise a slice of the response's whole receive buffer (rows
/// are decoded without copying) and would keep that buffer alive for as
/// long as the cursor lives: in the writer's channel and in the state.
fn owned_cursor(c: &TableCursor) -> TableCursor {
    let mut c = c.clone();
    if let Some(pk) = c.last_known_pk.as_mut() {
        for row in &mut pk.rows {
            row.values = prost::bytes::Bytes::copy_from_slice(&row.values);
        }
    }
    c
}

/// The request that resumes from `cursor`: a copy resumes by primary key
/// with an empty position, as every Go client does.
fn request(
    ctx: &ReaderContext,
    slot: &Slot,
    cursor: &TableCursor,
    columns: &[String],
) -> SyncRequest {
    let mut c = cursor.clone();
    if let Some(pk) = &cursor.last_known_pk {
        c.position = String::new();
        c.last_known_pk = Some(trim_last_known_pk(pk, &slot.stream.key_properties));
    }
    c.shard = slot.shard.clone();
    c.keyspace = ctx.keyspace.clone();
    SyncRequest {
        table_name: slot.stream.table.clone(),
        cursor: Some(c),
        tablet_type: tablet_type_number(ctx.tablet_type),
        include_inserts: true,
        include_updates: true,
        include_deletes: true,
        columns: columns.to_vec(),
        cells: ctx.cells.clone(),
    }
}

/// Whether the cursor has reached the stop position with its copy done.
fn reached(cursor: &TableCursor, stop: &Position) -> bool {
    if cursor.last_known_pk.is_some() || cursor.position.is_empty() {
        return false;
    }
    match Position::parse(&cursor.position) {
        Ok(p) => p.at_least(stop),
        Err(_) => false,
    }
}

/// Keeps a copy's floor in its cursors. During a copy the saved position is
/// the floor (the server ignores it on resume anyway). When a copy that was
/// restarted ends past the floor, the cursor goes back to the floor and
/// `true` says to restart the session from there.
fn apply_floor(floor: &mut Option<String>, c: &mut TableCursor, resumed: bool) -> bool {
    if c.last_known_pk.is_some() {
        match floor {
            Some(f) => c.position = f.clone(),
            None if !c.position.is_empty() => *floor = Some(c.position.clone()),
            None => {}
        }
        return false;
    }
    let Some(f) = floor.take() else {
        return false;
    };
    let newer = resumed
        && match (Position::parse(&c.position), Position::parse(&f)) {
            (Ok(now), Ok(start)) => now.after(&start),
            _ => false,
        };
    if newer {
        c.position = f;
    }
    newer
}

/// Counts one streak of retries; progress ends the streak.
struct Retries {
    attempts: u32,
    since: Option<Instant>,
}

impl Retries {
    fn new() -> Retries {
        Retries {
            attempts: 0,
            since: None,
        }
    }

    /// The wait before the next attempt, or `None` when the attempts or the
    /// time budget are used up.
    fn next(&mut self, max: u32, budget: Duration) -> Option<Duration> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.attempts >= max || since.elapsed() >= budget {
            return None;
        }
        self.attempts += 1;
        Some(backoff(self.attempts))
    }

    fn progress(&mut self) {
        self.attempts = 0;
        self.since = None;
    }
}

/// The error that ends a slot after `status`.
fn read_error(slot: &Slot, status: &tonic::Status, attempts: u32) -> ReadError {
    let (stream, shard) = (slot.stream.name.clone(), slot.shard.clone());
    let (code, message) = (status.code(), status.message().to_string());
    match classify(status) {
        StatusClass::Purged => ReadError::Purged {
            stream,
            shard,
            message,
        },
        StatusClass::Auth => ReadError::Auth {
            stream,
            shard,
            code,
            message,
        },
        StatusClass::Retryable | StatusClass::SessionEnd => ReadError::Exhausted {
            stream,
            shard,
            attempts,
            code,
            message,
        },
        StatusClass::Permanent => ReadError::Server {
            stream,
            shard,
            code,
            message,
        },
    }
}

/// Where a session left the slot's reading, kept across sessions.
struct Progress {
    cursor: TableCursor,
    copying: bool,
    columns: Vec<String>,
    retries: Retries,
}

/// Deals with a session that failed, whether opening it or while it ran:
/// waits out a transient error, restarts a purged position as a full copy
/// (by choice), or re-reads the table's columns after DDL. `Ok` means
/// start a new session; `Err` ends the slot.
async fn recover(
    ctx: &ReaderContext,
    slot: &Slot,
    tx: &mpsc::Sender<Event>,
    status: &tonic::Status,
    what: &str,
    p: &mut Progress,
) -> Result<(), ReadError> {
    let fail = |attempts: u32| read_error(slot, status, attempts);
    if tx.is_closed() {
        // The writer has stopped (a closed pipe, a signal, another reader's
        // failure) and the connection is being torn down with the process:
        // nothing to retry, and nothing worth a warning.
        return Err(fail(p.retries.attempts));
    }
    match classify(status) {
        StatusClass::SessionEnd => Ok(()),
        StatusClass::Retryable => wait_to_retry(ctx, slot, &mut p.retries, status, what)
            .await
            .map_err(fail),
        StatusClass::Purged if ctx.resync_on_purged => {
            p.cursor = restart(ctx, slot, tx).await;
            p.copying = true;
            Ok(())
        }
        _ if names_a_column(status) => {
            wait_to_retry(
                ctx,
                slot,
                &mut p.retries,
                status,
                "a requested column is gone",
            )
            .await
            .map_err(fail)?;
            if let Some(now) = current_columns(ctx, slot).await {
                p.columns = now;
            }
            Ok(())
        }
        _ => Err(fail(p.retries.attempts)),
    }
}

/// Whether a refusal is about a column (dropped or renamed by DDL).
fn names_a_column(status: &tonic::Status) -> bool {
    let msg = status.message().to_ascii_lowercase();
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => msg.contains("column"),
        // A server whose own metadata lagged the DDL fails in its SQL.
        tonic::Code::Internal | tonic::Code::Unknown => msg.contains("unknown column"),
        _ => false,
    }
}

/// The selected columns the table still has, read again over MySQL after
/// the server refused one. Dropped columns are then written as null.
async fn current_columns(ctx: &ReaderContext, slot: &Slot) -> Option<Vec<String>> {
    let mut conn = crate::mysql::connect(&ctx.settings).await.ok()?;
    let tables = crate::mysql::describe_schema(&mut conn, &ctx.keyspace).await;
    crate::mysql::close(conn).await;
    let table = tables
        .ok()?
        .into_iter()
        .find(|t| t.name == slot.stream.table)?;
    let now: Vec<String> = slot
        .stream
        .props
        .iter()
        .filter(|p| table.columns.iter().any(|c| c.name == p.name))
        .map(|p| p.name.clone())
        .collect();
    warn!(stream = %slot.stream.name, shard = %slot.shard, columns = ?now, "re-read the table's columns after DDL");
    Some(now)
}

/// Logs a retry with its reason and waits for it; `Err(attempts)` when the
/// attempts or the time budget are used up.
async fn wait_to_retry(
    ctx: &ReaderContext,
    slot: &Slot,
    retries: &mut Retries,
    status: &tonic::Status,
    what: &str,
) -> Result<(), u32> {
    let wait = retries
        .next(ctx.max_retries, ctx.retry_budget)
        .ok_or(retries.attempts)?;
    warn!(stream = %slot.stream.name, shard = %slot.shard, attempt = retries.attempts, code = ?status.code(), error = %status.message(), wait_ms = wait.as_millis() as u64, "{what}; retrying");
    tokio::time::sleep(wait).await;
    Ok(())
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    backoff_between(attempt, Duration::from_millis(500), Duration::from_secs(30))
}

/// Exponential backoff with jitter: `first × 2^attempt`, capped at `max`,
/// and then a random point between half of that and all of it, so that
/// clients failing together do not retry together.
pub(crate) fn backoff_between(attempt: u32, first: Duration, max: Duration) -> Duration {
    let first = first.as_millis().max(1) as u64;
    let base = first
        .saturating_mul(1u64 << attempt.min(32))
        .min(max.as_millis() as u64)
        .max(1);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    Duration::from_millis(base - base / 2 + nanos % (base / 2 + 1))
}

/// Converts responses into batches, caching a plan per field set.
struct Converter {
    plans: Vec<(bool, RecordPlan)>,
    delete_plans: Vec<(bool, RecordPlan)>,
    /// The stream's properties without ENUM/SET members, for servers that
    /// send member text (VStream's `enum_set_string_values`).
    text_props: Option<Vec<PropertySpec>>,
    warnings: Warnings,
    buf: Vec<u8>,
    extra: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Row,
    Update,
    Delete,
}

impl Converter {
    fn new() -> Converter {
        Converter {
            plans: Vec::new(),
            delete_plans: Vec::new(),
            text_props: None,
            warnings: Warnings::default(),
            buf: Vec::with_capacity(64 * 1024),
            extra: Vec::with_capacity(256),
        }
    }

    fn plan(
        &mut self,
        fields: &[Field],
        stream: &StreamSpec,
        delete: bool,
        enum_text: bool,
    ) -> usize {
        let plans = if delete {
            &mut self.delete_plans
        } else {
            &mut self.plans
        };
        if let Some(i) = plans
            .iter()
            .position(|(text, p)| *text == enum_text && p.matches(fields))
        {
            return i;
        }
        let plan = if delete {
            RecordPlan::keys_only(fields, &stream.props)
        } else {
            let plan = RecordPlan::new(fields, &stream.props);
            let missing = plan.missing_names();
            if !missing.is_empty() {
                warn!(stream = %stream.name, columns = ?missing, "selected columns are not in the server's rows (dropped?); writing null");
            }
            plan
        };
        if plans.len() >= 8 {
            plans.remove(0);
        }
        plans.push((enum_text, plan));
        plans.len() - 1
    }

    #[allow(clippy::too_many_arguments)]
    fn rows(
        &mut self,
        ctx: &ReaderContext,
        slot: &Slot,
        qr: &QueryResult,
        kind: Kind,
        rows: &mut dyn Iterator<Item = &Row>,
        time_extracted: &str,
        position: &str,
        deleted_at: &str,
        enum_text: bool,
    ) -> Result<u64, String> {
        let stream = &slot.stream;
        let delete = kind == Kind::Delete;
        let pi = self.plan(&qr.fields, stream, delete, enum_text);
        if enum_text && self.text_props.is_none() {
            let mut props = stream.props.clone();
            for p in &mut props {
                p.members.clear();
            }
            self.text_props = Some(props);
        }
        let props: &[PropertySpec] = match (&self.text_props, enum_text) {
            (Some(text), true) => text,
            _ => &stream.props,
        };
        let plan = if delete {
            &self.delete_plans[pi].1
        } else {
            &self.plans[pi].1
        };
        let cdc = stream.method.is_cdc();
        let mut n = 0;
        for row in rows {
            self.extra.clear();
            let mut members: [&[u8]; 1] = [&[]];
            if cdc || ctx.include_metadata {
                if cdc {
                    self.extra.extend_from_slice(b"\"_sdc_deleted_at\":");
                    if delete {
                        write_json_str(&mut self.extra, deleted_at);
                    } else {
                        self.extra.extend_from_slice(b"null");
                    }
                }
                if ctx.include_metadata {
                    if !self.extra.is_empty() {
                        self.extra.push(b',');
                    }
                    self.extra.extend_from_slice(b"\"_sdc_shard\":");
                    write_json_str(&mut self.extra, &slot.shard);
                    self.extra.extend_from_slice(b",\"_sdc_position\":");
                    write_json_str(&mut self.extra, position);
                    let seq = ctx.sequence.fetch_add(1, Ordering::Relaxed);
                    self.extra.extend_from_slice(super::SEQUENCE_KEY.as_bytes());
                    let _ = std::io::Write::write_fmt(&mut self.extra, format_args!("{seq}"));
                }
                members[0] = &self.extra;
            }
            let extra: &[&[u8]] = if self.extra.is_empty() { &[] } else { &members };
            let warnings = &mut self.warnings;
            encode_record(
                &mut self.buf,
                &stream.name_json,
                stream.version,
                time_extracted,
                |out| {
                    plan.write_record(out, row, props, extra, warnings)
                        .map_err(|e| e.to_string())
                },
            )?;
            n += 1;
        }
        Ok(n)
    }

    /// Turns one response into a batch.
    fn batch(
        &mut self,
        ctx: &ReaderContext,
        slot: &Slot,
        resp: &SyncResponse,
        copying_before: bool,
        enum_text: bool,
    ) -> Result<Batch, String> {
        let now = SystemTime::now();
        let ts = rfc3339_utc(now);
        let cursor = resp.cursor.as_ref().map(owned_cursor);
        let copying = cursor
            .as_ref()
            .map(|c| c.last_known_pk.is_some())
            .unwrap_or(copying_before);
        let position = cursor.as_ref().map(|c| c.position.as_str()).unwrap_or("");
        let deleted_at = ts.replace('Z', "+00:00");
        let mut counts = Counts::default();
        self.buf.clear();
        // Order within a response: inserted rows, then updates, then
        // deletes, which is the order of a transaction that creates,
        // changes and removes rows. The server splits transactions whose
        // events do not follow that order into several responses.
        for qr in &resp.result {
            let n = self.rows(
                ctx,
                slot,
                qr,
                Kind::Row,
                &mut qr.rows.iter(),
                &ts,
                position,
                &deleted_at,
                enum_text,
            )?;
            if copying || copying_before {
                counts.copied += n;
            } else {
                counts.inserted += n;
            }
        }
        for up in &resp.updates {
            if let Some(after) = &up.after {
                counts.updated += self.rows(
                    ctx,
                    slot,
                    after,
                    Kind::Update,
                    &mut after.rows.iter(),
                    &ts,
                    position,
                    &deleted_at,
                    enum_text,
                )?;
            }
        }
        for del in &resp.deletes {
            if let Some(r) = &del.result {
                counts.deleted += self.rows(
                    ctx,
                    slot,
                    r,
                    Kind::Delete,
                    &mut r.rows.iter(),
                    &ts,
                    position,
                    &deleted_at,
                    enum_text,
                )?;
            }
        }
        Ok(Batch {
            slot: slot.index,
            lines: std::mem::replace(&mut self.buf, ctx.lines.take()),
            records: counts.total(),
            counts,
            cursor,
            copying,
        })
    }

    fn warnings(&self, stream: &StreamSpec) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for (i, p) in stream.props.iter().enumerate() {
            if let Some(n) = self.warnings.zero_dates.get(i).filter(|n| **n > 0) {
                out.push((
                    p.name.clone(),
                    "zero or invalid dates written as null (MySQL's `0000-00-00` and the like name no calendar day, so JSON has no form for them)".into(),
                    *n,
                ));
            }
            if let Some(n) = self.warnings.fallbacks.get(i).filter(|n| **n > 0) {
                out.push((
                    p.name.clone(),
                    "values written as text (not the catalog type)".into(),
                    *n,
                ));
            }
        }
        out
    }
}

/// Runs one slot to completion and reports to the writer.
pub async fn run(ctx: Arc<ReaderContext>, slot: Slot, tx: mpsc::Sender<Event>) {
    let index = slot.index;
    let mut conv = Converter::new();
    let result = read(&ctx, &slot, &tx, &mut conv).await;
    let event = match result {
        Ok(()) => Event::Done {
            slot: index,
            warnings: conv.warnings(&slot.stream),
        },
        Err(error) => Event::Failed { slot: index, error },
    };
    let _ = tx.send(event).await;
}

fn stop_cell<'a>(ctx: &'a ReaderContext, shard: &str) -> Option<&'a OnceCell<String>> {
    ctx.stops.iter().find(|(s, _)| s == shard).map(|(_, c)| c)
}

async fn peek(ctx: &ReaderContext, slot: &Slot) -> Result<String, tonic::Status> {
    let timeout = ctx.timeout.min(Duration::from_secs(45));
    match ctx.settings.api {
        Api::Psdbconnect => {
            ctx.client
                .current_position(
                    &slot.stream.table,
                    &ctx.keyspace,
                    &slot.shard,
                    ctx.tablet_type,
                    &ctx.cells,
                    timeout,
                )
                .await
        }
        Api::Vstream => {
            vstream::current_position(
                &ctx.client,
                &ctx.keyspace,
                &slot.shard,
                &slot.stream.table,
                ctx.tablet_type,
                &ctx.cells,
                timeout,
            )
            .await
        }
    }
}

/// One streaming call, whichever the API.
enum Session {
    Sync(tonic::Streaming<SyncResponse>),
    VStream(vstream::Session),
}

impl Session {
    async fn open(
        ctx: &ReaderContext,
        slot: &Slot,
        p: &Progress,
    ) -> Result<Session, tonic::Status> {
        match ctx.settings.api {
            Api::Psdbconnect => {
                let req = request(ctx, slot, &p.cursor, &p.columns);
                Ok(Session::Sync(ctx.client.sync(req, ctx.timeout).await?))
            }
            Api::Vstream => {
                let s = vstream::Session::open(ctx, slot, &p.cursor, p.copying).await?;
                Ok(Session::VStream(s))
            }
        }
    }

    async fn message(&mut self) -> Result<Option<Unit>, SessionError> {
        match self {
            Session::Sync(s) => Ok(s.message().await?.map(|resp| Unit {
                resp,
                enum_text: false,
            })),
            Session::VStream(s) => s.message().await,
        }
    }
}

async fn read(
    ctx: &ReaderContext,
    slot: &Slot,
    tx: &mpsc::Sender<Event>,
    conv: &mut Converter,
) -> Result<(), ReadError> {
    let start = slot.start.clone();
    // The copy's floor: the position where this copy began. A copy resumed
    // by primary key gets a new snapshot from the server, so changes made
    // between the first snapshot and the new one to rows already copied
    // would be lost; the floor is kept in the saved copy cursor and, once
    // the copy ends, changes are read again from it.
    let mut floor: Option<String> = start
        .last_known_pk
        .as_ref()
        .and(Some(start.position.clone()))
        .filter(|p| !p.is_empty())
        .or_else(|| slot.floor.clone());
    // Whether this copy has been restarted (here or in an earlier run); only
    // then can rows already emitted be older than the copy's snapshot.
    let mut resumed = floor.is_some();
    let mut p = Progress {
        copying: start.last_known_pk.is_some() || start.position.is_empty(),
        cursor: start,
        // The columns to request; re-read if the table loses one mid-run.
        columns: slot.stream.columns.clone(),
        retries: Retries::new(),
    };
    let mut first_stop = true;
    let started = Instant::now();
    loop {
        // The stop position: peeked once per shard for the whole run, and
        // again for this slot after a session ends early.
        let stop_text = match (first_stop, stop_cell(ctx, &slot.shard)) {
            (true, Some(cell)) => cell.get_or_try_init(|| peek(ctx, slot)).await.cloned(),
            _ => peek(ctx, slot).await,
        };
        let stop_text = match stop_text {
            Ok(s) => s,
            Err(status) => match classify(&status) {
                StatusClass::Retryable | StatusClass::SessionEnd => {
                    wait_to_retry(ctx, slot, &mut p.retries, &status, "peek failed")
                        .await
                        .map_err(|attempts| read_error(slot, &status, attempts))?;
                    continue;
                }
                _ => return Err(read_error(slot, &status, p.retries.attempts)),
            },
        };
        first_stop = false;
        let stop = Position::parse(&stop_text).map_err(|e| ReadError::Data {
            stream: slot.stream.name.clone(),
            shard: slot.shard.clone(),
            problem: format!("the current position is unreadable: {e}"),
        })?;
        if reached(&p.cursor, &stop) {
            debug!(stream = %slot.stream.name, shard = %slot.shard, "nothing new");
            return Ok(());
        }

        if p.cursor.position.is_empty() && p.cursor.last_known_pk.is_none() && floor.is_none() {
            // A fresh copy: its floor is the stop position just peeked, at or
            // before the copy's own snapshot. It reaches the state before
            // the copy's first record.
            floor = Some(stop_text.clone());
            let event = Event::CopyFloor {
                slot: slot.index,
                floor: stop_text.clone(),
            };
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
        if p.cursor.last_known_pk.is_some() {
            resumed = true;
        }
        let deadline = tokio::time::Instant::now() + ctx.timeout;
        let mut sync = match Session::open(ctx, slot, &p).await {
            Ok(s) => s,
            Err(status) => {
                recover(ctx, slot, tx, &status, "sync failed to open", &mut p).await?;
                continue;
            }
        };
        let mut progressed = false;
        loop {
            let msg = match tokio::time::timeout_at(deadline, sync.message()).await {
                Err(_) => break, // our deadline: a normal end of session
                Ok(m) => m,
            };
            match msg {
                Ok(None) => {
                    // The server ended the stream before the stop position.
                    // Normal once in a while; a server that keeps doing it
                    // without any progress must not make us spin.
                    if !progressed {
                        let status =
                            tonic::Status::unavailable("the stream ended before the stop position");
                        recover(ctx, slot, tx, &status, "stream ended early", &mut p).await?;
                    }
                    break;
                }
                Err(SessionError::Data(problem)) => {
                    return Err(ReadError::Data {
                        stream: slot.stream.name.clone(),
                        shard: slot.shard.clone(),
                        problem,
                    })
                }
                Ok(Some(unit)) => {
                    let mut batch = conv
                        .batch(ctx, slot, &unit.resp, p.copying, unit.enum_text)
                        .map_err(|problem| ReadError::Data {
                            stream: slot.stream.name.clone(),
                            shard: slot.shard.clone(),
                            problem,
                        })?;
                    p.copying = batch.copying;
                    let had_cursor = batch.cursor.is_some();
                    let mut rewind = false;
                    if let Some(c) = batch.cursor.as_mut() {
                        rewind = apply_floor(&mut floor, c, resumed);
                        p.cursor = c.clone();
                    }
                    if (batch.records > 0 || had_cursor)
                        && tx.send(Event::Batch(batch)).await.is_err()
                    {
                        return Ok(()); // the writer is gone: shutting down
                    }
                    if rewind {
                        debug!(stream = %slot.stream.name, shard = %slot.shard, from = %p.cursor.position, "copy was resumed; reading changes again from where it began");
                        break;
                    }
                    if had_cursor {
                        progressed = true;
                        p.retries.progress();
                        if reached(&p.cursor, &stop) {
                            info!(stream = %slot.stream.name, shard = %slot.shard, secs = started.elapsed().as_secs_f64(), "caught up");
                            return Ok(());
                        }
                    }
                }
                Err(SessionError::Status(status)) => {
                    recover(
                        ctx,
                        slot,
                        tx,
                        &status,
                        "stream failed; resuming from the last cursor",
                        &mut p,
                    )
                    .await?;
                    break;
                }
            }
        }
    }
}

/// Restarts a slot from a full copy after a purged position, telling the
/// writer to reset its cursor.
async fn restart(ctx: &ReaderContext, slot: &Slot, tx: &mpsc::Sender<Event>) -> TableCursor {
    warn!(stream = %slot.stream.name, shard = %slot.shard, "saved position was purged; restarting this stream from a full copy (resync_on_purged)");
    let cursor = TableCursor {
        shard: slot.shard.clone(),
        keyspace: ctx.keyspace.clone(),
        position: String::new(),
        last_known_pk: None,
    };
    let _ = tx
        .send(Event::Reset {
            slot: slot.index,
            cursor: cursor.clone(),
        })
        .await;
    cursor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::query::Type;

    fn f(name: &str) -> Field {
        Field {
            name: name.into(),
            r#type: Type::Int64 as i32,
            ..Default::default()
        }
    }

    #[test]
    fn last_known_pk_is_trimmed_to_keys_in_key_order() {
        let qr = QueryResult {
            fields: vec![f("a"), f("id"), f("b"), f("tenant")],
            rows: vec![Row {
                lengths: vec![1, 2, -1, 1],
                values: prost::bytes::Bytes::from_static(b"x42y"),
            }],
            ..Default::default()
        };
        let t = trim_last_known_pk(&qr, &["tenant".to_string(), "id".to_string()]);
        assert_eq!(
            t.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            vec!["tenant", "id"]
        );
        assert_eq!(t.rows[0].lengths, vec![1, 2]);
        assert_eq!(&t.rows[0].values[..], b"y42");
        // already trimmed, or keys unknown: unchanged
        let same = trim_last_known_pk(&t, &["tenant".to_string(), "id".to_string()]);
        assert_eq!(same, t);
        assert_eq!(trim_last_known_pk(&qr, &["zzz".to_string()]), qr);
    }

    #[test]
    fn stop_rule() {
        let p5 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5";
        let p9 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-9";
        let stop = Position::parse(p5).expect("pos");
        let c = |pos: &str, copy: bool| TableCursor {
            position: pos.into(),
            last_known_pk: copy.then(QueryResult::default),
            ..Default::default()
        };
        assert!(reached(&c(p5, false), &stop));
        assert!(reached(&c(p9, false), &stop));
        assert!(!reached(&c(p9, true), &stop), "copy not done");
        assert!(!reached(&c("", false), &stop));
        assert!(!reached(
            &c("MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-4", false),
            &stop
        ));
    }

    #[test]
    fn a_resumed_copy_rewinds_to_its_floor() {
        let p1 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5";
        let p2 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-9";
        let c = |pos: &str, copy: bool| TableCursor {
            position: pos.into(),
            last_known_pk: copy.then(QueryResult::default),
            ..Default::default()
        };
        // a fresh copy: floor from the first cursor, no rewind at the end
        let mut floor = None;
        let mut x = c(p1, true);
        assert!(!apply_floor(&mut floor, &mut x, false));
        assert_eq!(floor.as_deref(), Some(p1));
        let mut end = c(p2, false);
        assert!(!apply_floor(&mut floor, &mut end, false));
        assert_eq!(end.position, p2, "an uninterrupted copy needs no rewind");
        // a resumed copy: the server's new snapshot is replaced by the floor,
        // and the end of the copy rewinds to it
        let mut floor = Some(p1.to_string());
        let mut mid = c(p2, true);
        assert!(!apply_floor(&mut floor, &mut mid, true));
        assert_eq!(mid.position, p1, "saved copy cursors keep the floor");
        let mut end = c(p2, false);
        assert!(apply_floor(&mut floor, &mut end, true));
        assert_eq!(end.position, p1);
        assert!(floor.is_none());
        // afterwards, changes move on normally
        let mut next = c(p2, false);
        assert!(!apply_floor(&mut floor, &mut next, true));
        assert_eq!(next.position, p2);
    }

    #[test]
    fn column_refusals_are_recognised() {
        use tonic::Status;
        assert!(names_a_column(&Status::invalid_argument(
            "unknown column \"v\" in table \"items\""
        )));
        assert!(names_a_column(&Status::internal(
            "Server error: `ERROR 1054 (42S22): Unknown column 'v' in 'SELECT'"
        )));
        assert!(!names_a_column(&Status::internal("connection reset")));
        assert!(!names_a_column(&Status::unavailable("unknown column")));
    }

    #[test]
    fn retries_are_bounded_by_count_and_time() {
        let mut r = Retries::new();
        assert!(r.next(2, Duration::from_secs(60)).is_some());
        assert!(r.next(2, Duration::from_secs(60)).is_some());
        assert!(r.next(2, Duration::from_secs(60)).is_none(), "count");
        r.progress();
        assert!(
            r.next(2, Duration::from_secs(60)).is_some(),
            "progress resets"
        );
        let mut r = Retries::new();
        r.since = Some(Instant::now() - Duration::from_secs(10));
        assert!(r.next(100, Duration::from_secs(5)).is_none(), "budget");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(30), "{attempt}: {d:?}");
            assert!(d >= Duration::from_millis(250), "{attempt}: {d:?}");
        }
        assert!(backoff(6) >= Duration::from_secs(15));
        let (first, max) = (Duration::from_millis(10), Duration::from_millis(80));
        for (attempt, low, high) in [
            (0, 5, 10),
            (1, 10, 20),
            (2, 20, 40),
            (3, 40, 80),
            (9, 40, 80),
        ] {
            let d = backoff_between(attempt, first, max);
            assert!(
                d >= Duration::from_millis(low) && d <= Duration::from_millis(high),
                "{attempt}: {d:?}"
            );
        }
    }
}
