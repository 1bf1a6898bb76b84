//! vtgate's `/vtgateservice.Vitess/VStream`, with its events turned into
//! the Sync API's response shape, so the read loop, the stop rules, the copy
//! floor, retries, conversion and checkpoints in [`crate::sync`] are the
//! same for both APIs, and so is the state.
//!
//! The mapping (wire-protocol.md §5, §6):
//! - the cursor is the shard's VGTID: `position` = its gtid and, during the
//!   copy, `last_known_pk` = its `table_p_ks` entry for the table (or the
//!   last LASTPK event). A copy resumes by sending that lastpk with an empty
//!   gtid, as the Sync API does (and airbyte's VStream reader), so the
//!   reader's copy floor works unchanged;
//! - FIELD events are kept per table (named `table` or `keyspace.table`),
//!   with their `enum_set_string_values`; DDL drops them until the next
//!   FIELD;
//! - ROW changes: after-only is an insert (or a copied row), before+after an
//!   update, before-only a delete, which keeps its whole before-image (Sync
//!   sends only the key columns of a deleted row);
//! - a cursor is emitted only at a transaction boundary: the VGTID of a
//!   transaction is adopted at its COMMIT, a VGTID outside one at the next
//!   event that is not a DDL, or at the end of its response; LASTPK with
//!   `completed` and COPY_COMPLETED end the copy;
//! - a `TRUNCATE` comes as one DDL event (not as row deletes) right after
//!   the VGTID that includes it, in the same response (seen on vtgate v24).
//!   It goes out as a unit's `truncated` before that VGTID's cursor, which
//!   is why a VGTID outside a transaction waits for the DDL that may follow:
//!   the reader must hear of the TRUNCATE before a STATE can cover it;
//! - BEGIN, HEARTBEAT, OTHER and the rest carry nothing the tap needs.
//!
//! Rows of different kinds, or under different fields, go out in separate
//! units (without a cursor until the transaction ends), which keeps their
//! order through the converter.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::TabletType;
use crate::pb::binlogdata::{
    Bitmap, Filter, RowChange, Rule, ShardGtid, TableLastPk, VEvent, VEventType, VGtid,
};
use crate::pb::psdbconnect::v1alpha1::{DeletedRow, SyncResponse, TableCursor, UpdatedRow};
use crate::pb::query::{Field, QueryResult, Row};
use crate::pb::vtgate::{VStreamFlags, VStreamRequest};
use crate::wire::vstream_batch::{Event, RowKind, Run, VStreamBatch};

use super::client::PsdbClient;
use super::target::{resume_cursor, Change, Resume, SessionError, Target, Unit};

/// Vitess numbering (topodata: PRIMARY 1, REPLICA 2, RDONLY 3).
pub fn tablet_type(t: TabletType) -> i32 {
    match t {
        TabletType::Primary => 1,
        TabletType::Replica => 2,
        TabletType::Rdonly => 3,
    }
}

/// Rows of one transaction held back waiting for its COMMIT; beyond this
/// they go out without a cursor, so a huge transaction does not grow memory
/// (its cursor still moves only at the COMMIT, and the checkpoint counts
/// such rows toward its next STATE only once that cursor covers them).
const MAX_PENDING_ROWS: usize = 4_000;

/// Seconds between heartbeats on an idle stream: often enough that a
/// session sees its position move well before its deadline.
fn heartbeat_seconds(timeout: Duration) -> u32 {
    (timeout.as_secs() / 4).clamp(1, 10) as u32
}

/// What makes a row change a partial image, if anything: columns left
/// out of it (`binlog_row_image` NOBLOB or MINIMAL), which vttablet sends
/// as NULL, or JSON columns sent as a diff (`binlog_row_value_options =
/// PARTIAL_JSON`). Either written as a record would overwrite the target's
/// values with nulls or with diff text.
fn partial_image(change: &RowChange) -> Option<&'static str> {
    let set = |bits: &Bitmap, i: usize| {
        bits.cols
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    };
    if let Some(bits) = &change.data_columns {
        let count = usize::try_from(bits.count).unwrap_or(0);
        if (0..count).any(|i| !set(bits, i)) {
            return Some("leaves out columns the change did not touch");
        }
    }
    if let Some(bits) = &change.json_partial_values {
        let count = usize::try_from(bits.count).unwrap_or(0);
        if (0..count).any(|i| set(bits, i)) {
            return Some("sends JSON columns as partial updates");
        }
    }
    None
}

/// The error for a partial row image: names the table, the server setting
/// and the fix. Not retried: the same events come back on every attempt,
/// and a resumed run would meet them again.
fn partial_image_error(table: &[u8], what: &str) -> String {
    format!(
        "a change to `{}` {what} (a partial row image), which would write nulls over \
         the target's values; set binlog_row_image=FULL (and binlog_row_value_options='') \
         on the tablets' MySQL, then copy the stream again, since the changes already \
         logged stay partial: remove its bookmark from the state file, or sync it once \
         as FULL_TABLE",
        String::from_utf8_lossy(table)
    )
}

/// Backtick-quotes an identifier for the filter's SELECT.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The filter streaming one table: every column, always. The selected
/// columns are picked from each FIELD event by name. A column list would
/// be checked against the table as it is now, so after a `DROP COLUMN` the
/// server cannot stream the rows written before it (with the old column
/// still in them), and a list pruned to today's columns loses their
/// values (seen on vtgate v24 with schema tracking).
fn filter(table: &str) -> Filter {
    Filter {
        rules: vec![Rule {
            r#match: table.to_string(),
            filter: format!("SELECT * FROM {}", quote(table)),
        }],
        ..Default::default()
    }
}

fn flags(target: &Target, heartbeat_interval: u32) -> VStreamFlags {
    VStreamFlags {
        heartbeat_interval,
        cells: target.cells.join(","),
        ..Default::default()
    }
}

/// The request that resumes `target` from `resume`: a copy resumes by
/// primary key with an empty gtid, changes from the position.
pub fn request(target: &Target, resume: &Resume<'_>) -> VStreamRequest {
    let cursor = resume_cursor(target, resume);
    let table_p_ks = match cursor.last_known_pk {
        Some(lastpk) => vec![TableLastPk {
            table_name: target.table.clone(),
            lastpk: Some(lastpk),
        }],
        None => Vec::new(),
    };
    VStreamRequest {
        tablet_type: tablet_type(target.tablet_type),
        vgtid: Some(VGtid {
            shard_gtids: vec![ShardGtid {
                keyspace: target.keyspace.clone(),
                shard: target.shard.clone(),
                gtid: cursor.position,
                table_p_ks,
            }],
        }),
        filter: Some(filter(&target.table)),
        flags: Some(flags(target, heartbeat_seconds(resume.timeout))),
        ..Default::default()
    }
}

/// The shard's current position: a VStream from `current`, read until the
/// first VGTID, then cancelled.
pub(super) async fn current(
    client: &PsdbClient,
    target: &Target,
    timeout: Duration,
) -> Result<String, tonic::Status> {
    let req = VStreamRequest {
        tablet_type: tablet_type(target.tablet_type),
        vgtid: Some(VGtid {
            shard_gtids: vec![ShardGtid {
                keyspace: target.keyspace.clone(),
                shard: target.shard.clone(),
                gtid: "current".into(),
                table_p_ks: Vec::new(),
            }],
        }),
        filter: Some(filter(&target.table)),
        flags: Some(flags(target, 0)),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = client.vstream(req, timeout).await?;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => {
                return Err(tonic::Status::deadline_exceeded(
                    "no VGTID before the deadline",
                ))
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(tonic::Status::unavailable(
                    "the server ended the `current` VStream without a VGTID",
                ))
            }
            Ok(Ok(Some(resp))) => {
                let found = resp
                    .events
                    .iter()
                    .filter_map(|e| e.vgtid.as_ref())
                    .find_map(|v| shard_gtid(v, &target.keyspace, &target.shard));
                if let Some(sg) = found {
                    return Ok(sg.gtid.clone());
                }
            }
        }
    }
}

/// Whether a DDL statement empties its table: vtgate sends `TRUNCATE TABLE`
/// as a DDL event (the binlog holds it as a statement, not as row deletes).
/// vtgate sends only the DDL of the streamed table, so the name is not read.
fn is_truncate(statement: &str) -> bool {
    let mut words = statement
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split_whitespace();
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("truncate"))
}

/// This shard's entry of a VGTID (vtgate may list several shards).
fn shard_gtid<'a>(v: &'a VGtid, keyspace: &str, shard: &str) -> Option<&'a ShardGtid> {
    v.shard_gtids
        .iter()
        .find(|s| s.shard == shard && (s.keyspace == keyspace || s.keyspace.is_empty()))
}

/// Turns VStream events of one (table, shard) into [`Unit`]s.
pub struct Events {
    keyspace: String,
    shard: String,
    table: String,
    qualified: String,
    /// The table's fields from its last FIELD event.
    fields: Option<Vec<Field>>,
    /// Whether ENUM/SET come as text (that FIELD event's flag).
    enum_text: bool,
    in_tx: bool,
    /// A VGTID outside a transaction waits to be adopted (see the module
    /// doc).
    idle: bool,
    /// A TRUNCATE's statement, for the next unit.
    truncated: Option<String>,
    /// This shard's VGTID within the open transaction.
    vgtid: Option<ShardGtid>,
    /// The copy is still running.
    copying: bool,
    /// The last copy progress from a LASTPK event.
    lastpk: Option<QueryResult>,
    /// The last position seen, for the cursor that ends the copy.
    position: Option<String>,
    /// Rows of one kind waiting for their unit, as results under the
    /// fields they came with: a run of a response is one result, its rows
    /// handed on as they were decoded.
    /// The pending unit: its kind, its results and, for updates, the
    /// before-images of their rows in results of the same shapes (the
    /// records compare keys across them: a changed key is a delete first).
    pending: Option<(Change, Vec<QueryResult>, Vec<QueryResult>)>,
    /// How many rows `pending` holds.
    pending_rows: usize,
    ready: VecDeque<Unit>,
}

impl Events {
    /// Events of `table` on one shard; `copying` says whether the session
    /// starts in (or resumes) a copy.
    pub fn new(keyspace: &str, shard: &str, table: &str, copying: bool) -> Events {
        Events {
            keyspace: keyspace.to_string(),
            shard: shard.to_string(),
            table: table.to_string(),
            qualified: format!("{keyspace}.{table}"),
            fields: None,
            enum_text: false,
            in_tx: false,
            idle: false,
            truncated: None,
            vgtid: None,
            copying,
            lastpk: None,
            position: None,
            pending: None,
            pending_rows: 0,
            ready: VecDeque::new(),
        }
    }

    fn ours(&self, table: &[u8]) -> bool {
        table == self.table.as_bytes() || table == self.qualified.as_bytes()
    }

    /// The next finished unit, if any.
    pub fn next_unit(&mut self) -> Option<Unit> {
        self.ready.pop_front()
    }

    /// Applies the events of one response.
    pub fn apply(&mut self, mut batch: VStreamBatch) -> Result<(), String> {
        // Events are taken apart in place: moving each out of the vector
        // was a `memcpy` call apiece.
        for ev in &mut batch.events {
            match ev {
                Event::Rows(run) => self.rows(run)?,
                Event::Other(ev) => self.event(ev)?,
            }
        }
        if std::mem::take(&mut self.idle) {
            self.commit();
        }
        Ok(())
    }

    /// A run of plain ROW events.
    fn rows(&mut self, run: &mut Run) -> Result<(), String> {
        if std::mem::take(&mut self.idle) {
            self.commit();
        }
        if !self.ours(&run.table) {
            return Ok(());
        }
        let fields = self.row_fields(&run.table)?;
        let kind = match run.kind {
            RowKind::Insert => Change::Insert,
            RowKind::Update => Change::Update,
            RowKind::Delete => Change::Delete,
        };
        let mut rows = std::mem::take(&mut run.rows);
        let befores = std::mem::take(&mut run.befores);
        // A run is sized for the longest before it; a short one (a small
        // transaction's, after a copy) gives the rest back, in place,
        // rather than hold it while it waits for its COMMIT.
        if rows.capacity() > 2 * rows.len() {
            rows.shrink_to_fit();
        }
        self.add_rows(&fields, kind, rows, befores);
        self.fields = Some(fields);
        Ok(())
    }

    /// The fields rows of `table` come under, taken out for the loop over
    /// them (put back after it) rather than cloned for every event.
    fn row_fields(&mut self, table: &[u8]) -> Result<Vec<Field>, String> {
        self.fields.take().ok_or_else(|| {
            format!(
                "a ROW event for `{}` came before its FIELD event",
                String::from_utf8_lossy(table)
            )
        })
    }

    fn event(&mut self, ev: &mut VEvent) -> Result<(), String> {
        let kind = VEventType::try_from(ev.r#type).unwrap_or(VEventType::Unknown);
        if kind != VEventType::Ddl && std::mem::take(&mut self.idle) {
            self.commit();
        }
        match kind {
            VEventType::Begin => self.in_tx = true,
            VEventType::Field => {
                let Some(fe) = ev.field_event.take() else {
                    return Err("a FIELD event without its fields".into());
                };
                if self.ours(fe.table_name.as_bytes()) {
                    self.flush(None);
                    self.fields = Some(fe.fields);
                    self.enum_text = fe.enum_set_string_values;
                }
            }
            VEventType::Row => {
                let Some(re) = ev.row_event.as_mut() else {
                    return Err("a ROW event without its rows".into());
                };
                if !self.ours(&re.table_name) {
                    return Ok(());
                }
                let fields = self.row_fields(&re.table_name)?;
                for change in re.row_changes.iter_mut() {
                    if let Some(what) = partial_image(change) {
                        self.fields = Some(fields);
                        return Err(partial_image_error(&re.table_name, what));
                    }
                    self.row(&fields, change.before.take(), change.after.take());
                }
                self.fields = Some(fields);
            }
            VEventType::Vgtid => {
                let Some(v) = ev.vgtid.take() else {
                    return Err("a VGTID event without its VGTID".into());
                };
                if let Some(sg) = shard_gtid(&v, &self.keyspace, &self.shard) {
                    self.position = Some(sg.gtid.clone());
                    self.vgtid = Some(sg.clone());
                    self.idle = !self.in_tx;
                }
            }
            VEventType::Commit => {
                self.in_tx = false;
                self.commit();
            }
            VEventType::Lastpk => {
                let Some(last) = ev.last_p_k_event.take() else {
                    return Ok(());
                };
                let Some(t) = last.table_last_p_k else {
                    return Ok(());
                };
                if !self.ours(t.table_name.as_bytes()) {
                    return Ok(());
                }
                if last.completed {
                    self.copy_completed();
                } else if t.lastpk.is_some() {
                    self.lastpk = t.lastpk;
                }
            }
            VEventType::CopyCompleted => {
                let shard_matches = (ev.keyspace.is_empty() || ev.keyspace == self.keyspace)
                    && (ev.shard.is_empty() || ev.shard == self.shard);
                if shard_matches {
                    self.copy_completed();
                }
            }
            VEventType::Ddl => {
                if is_truncate(&ev.statement) {
                    self.truncated = Some(std::mem::take(&mut ev.statement));
                }
                // The table may have changed: rows need the next FIELD.
                self.flush(None);
                self.fields = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Adds one row change to the pending unit. An update's after-image is
    /// what the converter writes, and its before-image goes beside it. A
    /// delete keeps VStream's whole before-image (binlog_row_image FULL),
    /// so a delete record carries the row's last values and soft-deleting
    /// targets keep what was deleted (Connect Sync sends the key columns
    /// only).
    fn row(&mut self, fields: &[Field], before: Option<Row>, after: Option<Row>) {
        let (kind, row, before) = match (before, after) {
            (None, Some(a)) => (Change::Insert, a, None),
            (Some(b), Some(a)) => (Change::Update, a, Some(b)),
            (Some(b), None) => (Change::Delete, b, None),
            (None, None) => return,
        };
        match &mut self.pending {
            Some((k, results, befores)) if *k == kind && self.pending_rows < MAX_PENDING_ROWS => {
                if let Some(last) = results.last_mut() {
                    last.rows.push(row);
                    if let (Some(b), Some(last)) = (before, befores.last_mut()) {
                        last.rows.push(b);
                    }
                    self.pending_rows += 1;
                    if self.pending_rows >= MAX_PENDING_ROWS {
                        self.flush(None);
                    }
                    return;
                }
            }
            _ => {}
        }
        self.add_rows(fields, kind, vec![row], before.into_iter().collect());
    }

    /// Adds rows of one kind (and an update's before-images, one a row) to
    /// the pending unit as a result of their own, a unit going out (without
    /// a cursor) each time it holds [`MAX_PENDING_ROWS`].
    fn add_rows(
        &mut self,
        fields: &[Field],
        kind: Change,
        mut rows: Vec<Row>,
        mut befores: Vec<Row>,
    ) {
        if self.pending.as_ref().is_some_and(|(k, _, _)| *k != kind) {
            self.flush(None);
        }
        while !rows.is_empty() {
            let room = MAX_PENDING_ROWS.saturating_sub(self.pending_rows).max(1);
            let (rest, rest_befores) = if rows.len() > room {
                let rb = if befores.len() > room {
                    befores.split_off(room)
                } else {
                    Vec::new()
                };
                (rows.split_off(room), rb)
            } else {
                (Vec::new(), Vec::new())
            };
            self.pending_rows += rows.len();
            let result = |rows: Vec<Row>| QueryResult {
                fields: fields.to_vec(),
                rows,
                ..Default::default()
            };
            let (_, results, before_results) = self
                .pending
                .get_or_insert_with(|| (kind, Vec::new(), Vec::new()));
            if kind == Change::Update {
                before_results.push(result(std::mem::take(&mut befores)));
            }
            results.push(result(rows));
            if self.pending_rows >= MAX_PENDING_ROWS {
                self.flush(None);
            }
            rows = rest;
            befores = rest_befores;
        }
    }

    /// Ends the transaction: its rows go out with the cursor of its VGTID.
    fn commit(&mut self) {
        let Some(sg) = self.vgtid.take() else {
            self.flush(None);
            return;
        };
        if !self.copying {
            let cursor = self.cursor(sg.gtid, None);
            self.flush(Some(cursor));
            return;
        }
        let pk = sg
            .table_p_ks
            .iter()
            .find(|t| self.ours(t.table_name.as_bytes()))
            .and_then(|t| t.lastpk.clone())
            .or_else(|| self.lastpk.clone());
        match pk {
            Some(pk) => {
                let cursor = self.cursor(sg.gtid, Some(pk));
                self.flush(Some(cursor));
            }
            // A copy with no progress yet has nothing to save.
            None => self.flush(None),
        }
    }

    fn copy_completed(&mut self) {
        if !self.copying {
            return;
        }
        self.copying = false;
        self.lastpk = None;
        match self.position.clone() {
            Some(position) => {
                let cursor = self.cursor(position, None);
                self.flush(Some(cursor));
            }
            None => self.flush(None),
        }
    }

    fn cursor(&self, position: String, last_known_pk: Option<QueryResult>) -> TableCursor {
        TableCursor {
            shard: self.shard.clone(),
            keyspace: self.keyspace.clone(),
            position,
            last_known_pk,
        }
    }

    /// Sends the pending rows, with a cursor when one ends them.
    fn flush(&mut self, cursor: Option<TableCursor>) {
        let mut resp = SyncResponse::default();
        self.pending_rows = 0;
        match self.pending.take() {
            Some((Change::Insert, results, _)) => resp.result = results,
            Some((Change::Update, results, befores)) => {
                let mut befores = befores.into_iter();
                resp.updates = results
                    .into_iter()
                    .map(|qr| UpdatedRow {
                        before: befores.next(),
                        after: Some(qr),
                    })
                    .collect()
            }
            Some((Change::Delete, results, _)) => {
                resp.deletes = results
                    .into_iter()
                    .map(|qr| DeletedRow { result: Some(qr) })
                    .collect()
            }
            None if cursor.is_none() && self.truncated.is_none() => return,
            None => {}
        }
        resp.cursor = cursor;
        self.ready.push_back(Unit {
            resp,
            enum_text: self.enum_text,
            truncated: self.truncated.take(),
        });
    }
}

/// A VStream session of one reader.
pub struct Session {
    stream: tonic::Streaming<VStreamBatch>,
    events: Box<Events>,
}

impl Session {
    pub(super) async fn open(
        client: &PsdbClient,
        target: &Target,
        resume: &Resume<'_>,
    ) -> Result<Session, tonic::Status> {
        let req = request(target, resume);
        let stream = client.vstream_batches(req, resume.timeout).await?;
        Ok(Session {
            stream,
            events: Box::new(Events::new(
                &target.keyspace,
                &target.shard,
                &target.table,
                resume.copying,
            )),
        })
    }

    /// The next unit; `None` when the server ended the stream.
    pub(super) async fn next(&mut self) -> Result<Option<Unit>, SessionError> {
        loop {
            if let Some(unit) = self.events.next_unit() {
                return Ok(Some(unit));
            }
            match self.stream.message().await? {
                None => return Ok(None),
                Some(resp) => self.events.apply(resp).map_err(SessionError::Data)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::binlogdata::{FieldEvent, LastPkEvent};
    use crate::pb::query::Type;
    use crate::wire::row_event::RowEvent;
    use crate::wire::vstream_response::VStreamResponse;
    use prost::Message;

    const P1: &str = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5";
    const P2: &str = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-6";

    fn field(name: &str) -> Field {
        Field {
            name: prost::bytes::Bytes::copy_from_slice(name.as_bytes()),
            r#type: Type::Int64 as i32,
            ..Default::default()
        }
    }

    fn row(cells: &[&str]) -> Row {
        Row::from_cells(cells.iter().map(|c| Some(c.as_bytes())))
    }

    fn ev(kind: VEventType) -> VEvent {
        VEvent {
            r#type: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn truncate_is_told_from_other_ddl() {
        assert!(is_truncate("truncate table kl"));
        assert!(is_truncate("  TRUNCATE `kl`"));
        assert!(!is_truncate("alter table kl add column c int"));
        assert!(!is_truncate("create table truncate_log (id int)"));
        assert!(!is_truncate(""));
    }

    fn fields(table: &str, text: bool) -> VEvent {
        VEvent {
            field_event: Some(Box::new(FieldEvent {
                table_name: table.into(),
                fields: vec![field("id"), field("n")],
                enum_set_string_values: text,
                ..Default::default()
            })),
            ..ev(VEventType::Field)
        }
    }

    fn rows(table: &str, changes: Vec<(Option<Row>, Option<Row>)>) -> VEvent {
        VEvent {
            row_event: Some(RowEvent {
                table_name: prost::bytes::Bytes::copy_from_slice(table.as_bytes()),
                row_changes: changes
                    .into_iter()
                    .map(|(before, after)| RowChange {
                        before,
                        after,
                        ..RowChange::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..ev(VEventType::Row)
        }
    }

    fn vgtid(shard: &str, gtid: &str, pk: Option<&str>) -> VEvent {
        VEvent {
            vgtid: Some(Box::new(VGtid {
                shard_gtids: vec![ShardGtid {
                    keyspace: "ks".into(),
                    shard: shard.into(),
                    gtid: gtid.into(),
                    table_p_ks: pk
                        .map(|pk| TableLastPk {
                            table_name: "t".into(),
                            lastpk: Some(QueryResult {
                                fields: vec![field("id")],
                                rows: vec![row(&[pk])],
                                ..Default::default()
                            }),
                        })
                        .into_iter()
                        .collect(),
                }],
            })),
            ..ev(VEventType::Vgtid)
        }
    }

    /// The events as a session gets them: sent as one response and read
    /// back as a batch (so plain ROW events take the plain path).
    fn batch(events: Vec<VEvent>) -> VStreamBatch {
        let wire = VStreamResponse { events }.encode_to_vec();
        VStreamBatch::decode(&wire[..]).expect("decodes")
    }

    fn apply(e: &mut Events, events: Vec<VEvent>) -> Vec<Unit> {
        e.apply(batch(events)).expect("apply");
        std::iter::from_fn(|| e.next_unit()).collect()
    }

    fn events() -> Events {
        Events::new("ks", "-", "t", false)
    }

    #[test]
    fn the_cursor_moves_only_at_commit() {
        let mut e = events();
        let units = apply(
            &mut e,
            vec![
                ev(VEventType::Begin),
                fields("ks.t", true),
                rows("ks.t", vec![(None, Some(row(&["1", "10"])))]),
                vgtid("-", P1, None),
            ],
        );
        assert!(units.is_empty(), "nothing before COMMIT");
        let units = apply(&mut e, vec![ev(VEventType::Commit)]);
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].resp.result[0].rows.len(), 1);
        assert_eq!(
            units[0].resp.cursor.as_ref().map(|c| c.position.as_str()),
            Some(P1)
        );
        assert!(units[0].enum_text);
        // a VGTID outside a transaction (an idle stream) moves it at once;
        // heartbeats and other shards' VGTIDs do not
        let units = apply(
            &mut e,
            vec![
                ev(VEventType::Heartbeat),
                vgtid("80-", P2, None),
                vgtid("-", P2, None),
            ],
        );
        assert_eq!(units.len(), 1);
        assert_eq!(
            units[0].resp.cursor.as_ref().map(|c| c.position.as_str()),
            Some(P2)
        );
    }

    #[test]
    fn kinds_keep_their_order_and_deletes_keep_their_before_image() {
        let mut e = events();
        let units = apply(
            &mut e,
            vec![
                fields("t", false),
                ev(VEventType::Begin),
                rows(
                    "t",
                    vec![
                        (None, Some(row(&["1", "10"]))),
                        (Some(row(&["2", "20"])), Some(row(&["2", "21"]))),
                        (Some(row(&["3", "30"])), None),
                        (None, Some(row(&["4", "40"]))),
                    ],
                ),
                rows("other", vec![(None, Some(row(&["9", "90"])))]),
                vgtid("-", P1, None),
                ev(VEventType::Commit),
            ],
        );
        let shape: Vec<(usize, usize, usize, bool)> = units
            .iter()
            .map(|u| {
                (
                    u.resp.result.iter().map(|q| q.rows.len()).sum(),
                    u.resp.updates.len(),
                    u.resp.deletes.len(),
                    u.resp.cursor.is_some(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (1, 0, 0, false),
                (0, 1, 0, false),
                (0, 0, 1, false),
                (1, 0, 0, true)
            ]
        );
        let gone = units[2].resp.deletes[0].result.as_ref().expect("image");
        assert_eq!(gone.fields.len(), 2, "the whole before-image");
        assert_eq!(gone.rows[0].values(), b"330");
        assert!(!units[0].enum_text);
    }

    #[test]
    fn a_copy_saves_table_pks_and_ends_at_copy_completed() {
        let mut e = Events::new("ks", "-", "t", true);
        let units = apply(
            &mut e,
            vec![
                ev(VEventType::Begin),
                fields("ks.t", true),
                rows("ks.t", vec![(None, Some(row(&["1", "10"])))]),
                VEvent {
                    last_p_k_event: Some(Box::new(LastPkEvent {
                        table_last_p_k: Some(TableLastPk {
                            table_name: "t".into(),
                            lastpk: None,
                        }),
                        completed: false,
                    })),
                    ..ev(VEventType::Lastpk)
                },
                vgtid("-", P1, Some("1")),
                ev(VEventType::Commit),
            ],
        );
        let c = units[0].resp.cursor.as_ref().expect("cursor");
        assert_eq!(c.position, P1);
        let pk = c.last_known_pk.as_ref().expect("copy progress");
        assert_eq!(pk.rows[0].values(), b"1");
        // the end of the copy: a VGTID without table_p_ks keeps the last pk
        // until COPY_COMPLETED (of another shard: ignored; of ours: done)
        let units = apply(
            &mut e,
            vec![
                ev(VEventType::Begin),
                vgtid("-", P2, None),
                ev(VEventType::Commit),
                VEvent {
                    keyspace: "ks".into(),
                    shard: "80-".into(),
                    ..ev(VEventType::CopyCompleted)
                },
            ],
        );
        assert!(units.iter().all(|u| u
            .resp
            .cursor
            .as_ref()
            .is_some_and(|c| c.last_known_pk.is_some())));
        let units = apply(
            &mut e,
            vec![ev(VEventType::CopyCompleted), ev(VEventType::CopyCompleted)],
        );
        assert_eq!(units.len(), 1, "once");
        let c = units[0].resp.cursor.as_ref().expect("cursor");
        assert_eq!((c.position.as_str(), c.last_known_pk.is_none()), (P2, true));
    }

    #[test]
    fn a_huge_transaction_is_not_held_in_memory() {
        let mut e = events();
        let many: Vec<(Option<Row>, Option<Row>)> = (0..MAX_PENDING_ROWS + 5)
            .map(|i| (None, Some(row(&[&i.to_string(), "1"]))))
            .collect();
        let units = apply(
            &mut e,
            vec![
                ev(VEventType::Begin),
                fields("ks.t", true),
                rows("ks.t", many),
            ],
        );
        assert_eq!(units.len(), 1, "the first part goes out before COMMIT");
        assert!(units[0].resp.cursor.is_none(), "without moving the cursor");
        let units = apply(&mut e, vec![vgtid("-", P1, None), ev(VEventType::Commit)]);
        assert_eq!(units[0].resp.result[0].rows.len(), 5);
        assert!(units[0].resp.cursor.is_some());
    }

    fn ddl(statement: &str) -> VEvent {
        VEvent {
            statement: statement.into(),
            ..ev(VEventType::Ddl)
        }
    }

    /// A unit in short: `T` for a TRUNCATE, `R<n>` for rows, `@<gtid>` for
    /// its cursor's position.
    fn shape(u: &Unit) -> String {
        let mut parts = Vec::new();
        if u.truncated.is_some() {
            parts.push("T".to_string());
        }
        let rows: usize = u.resp.result.iter().map(|q| q.rows.len()).sum();
        if rows > 0 {
            parts.push(format!("R{rows}"));
        }
        if let Some(c) = &u.resp.cursor {
            parts.push(format!("@{}", &c.position[c.position.len() - 1..]));
        }
        parts.join(" ")
    }

    #[test]
    fn a_truncate_goes_out_before_the_cursor_that_covers_it() {
        let insert = || rows("ks.t", vec![(None, Some(row(&["1", "10"])))]);
        // (events, in one response, and the units they give)
        let cases: Vec<(Vec<VEvent>, Vec<&str>)> = vec![
            // vtgate's order: the VGTID that includes the TRUNCATE, then it
            (
                vec![vgtid("-", P1, None), ddl("TRUNCATE TABLE t")],
                vec!["T", "@5"],
            ),
            (
                vec![vgtid("-", P1, None), ddl("alter table t add c int")],
                vec!["@5"],
            ),
            (
                vec![vgtid("-", P1, None), ev(VEventType::Heartbeat)],
                vec!["@5"],
            ),
            (
                vec![
                    ev(VEventType::Begin),
                    insert(),
                    vgtid("-", P1, None),
                    ev(VEventType::Commit),
                    vgtid("-", P2, None),
                    ddl("truncate table t"),
                    fields("ks.t", true),
                    ev(VEventType::Begin),
                    insert(),
                ],
                vec!["R1 @5", "T", "@6"],
            ),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            let mut e = events();
            apply(&mut e, vec![fields("ks.t", true)]);
            let got: Vec<String> = apply(&mut e, input).iter().map(shape).collect();
            assert_eq!(got, want, "case {i}");
        }
        let mut e = events();
        let units = apply(&mut e, vec![vgtid("-", P1, None), ddl("TRUNCATE TABLE t")]);
        assert_eq!(units[0].truncated.as_deref(), Some("TRUNCATE TABLE t"));
    }

    #[test]
    fn rows_need_fields_again_after_ddl() {
        let mut e = events();
        apply(&mut e, vec![fields("ks.t", true), ev(VEventType::Ddl)]);
        let err = e
            .apply(batch(vec![rows(
                "ks.t",
                vec![(None, Some(row(&["1", "1"])))],
            )]))
            .expect_err("no fields");
        assert!(err.contains("before its FIELD"), "{err}");
    }

    #[test]
    fn partial_row_images_are_found_by_their_bitmaps() {
        let bits = |count: i64, cols: &[u8]| {
            Some(Box::new(Bitmap {
                count,
                cols: cols.to_vec(),
            }))
        };
        let cases = [
            (None, None, false),
            (bits(3, &[0b111]), None, false),
            (bits(3, &[0b101]), None, true),
            (bits(10, &[0xff, 0b11]), None, false),
            (bits(10, &[0xff, 0b01]), None, true),
            // bits past the end of `cols` are unset
            (bits(10, &[0xff]), None, true),
            (None, bits(2, &[0]), false),
            (None, bits(2, &[0b10]), true),
            (bits(0, &[]), bits(0, &[]), false),
        ];
        for (data_columns, json_partial_values, partial) in cases {
            let change = RowChange {
                data_columns: data_columns.clone(),
                json_partial_values: json_partial_values.clone(),
                ..RowChange::default()
            };
            assert_eq!(
                partial_image(&change).is_some(),
                partial,
                "{data_columns:?} {json_partial_values:?}"
            );
        }
    }

    #[test]
    fn a_partial_row_image_is_an_error_naming_the_table_and_the_fix() {
        let mut e = events();
        apply(&mut e, vec![fields("ks.t", true)]);
        let mut update = rows(
            "ks.t",
            vec![(Some(row(&["1", "a"])), Some(row(&["1", "b"])))],
        );
        if let Some(re) = update.row_event.as_mut() {
            re.row_changes[0].data_columns = Some(Box::new(Bitmap {
                count: 2,
                cols: vec![0b01],
            }));
        }
        let err = e.apply(batch(vec![update])).expect_err("partial image");
        for needle in ["`ks.t`", "binlog_row_image=FULL", "bookmark"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(e.next_unit().is_none(), "nothing of the change went out");
    }

    #[test]
    fn filters_quote_names_and_heartbeats_beat_within_a_session() {
        let f = filter("we`ird");
        assert_eq!(f.rules[0].r#match, "we`ird");
        assert_eq!(f.rules[0].filter, "SELECT * FROM `we``ird`");
        assert_eq!(heartbeat_seconds(Duration::from_secs(90)), 10);
        assert_eq!(heartbeat_seconds(Duration::from_secs(2)), 1);
    }
}
