//! One response's rows turned into finished RECORD lines and counts.
//!
//! A reader owns one [`Records`] for its (stream, shard). It caches a
//! conversion plan per field set (the server repeats the same fields with
//! every response), writes each row straight into a line buffer (no JSON
//! value per row), and returns the lines with the response's cursor as one
//! [`Batch`], which the checkpoint writes before it adopts the cursor.
//! Line buffers come from and go back to a [`LinePool`].
//!
//! Order within a response: inserted rows, then updates, then deletes,
//! which is the order of a transaction that creates, changes and removes
//! rows. Servers split transactions whose events do not follow that order
//! into several responses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tracing::warn;

use crate::catalog::ReplicationMethod;
use crate::convert::{write_json_str, ConvertError, PropertySpec, RecordPlan, Warnings};
use crate::pb::psdbconnect::v1alpha1::{SyncResponse, TableCursor};
use crate::pb::query::{Field, QueryResult};
use crate::psdb::Change;
use crate::singer::{encode_record, rfc3339_utc};

macro_rules! sequence_column {
    () => {
        "_sdc_source_sequence"
    };
}

/// The tap's record sequence with `include_metadata`. Not `_sdc_sequence`:
/// Meltano SDK targets write that column themselves and would overwrite ours.
pub const SEQUENCE_COLUMN: &str = sequence_column!();

/// `,"<SEQUENCE_COLUMN>":`, as written before each record's sequence: a
/// constant, so no row escapes the name again.
const SEQUENCE_KEY: &str = concat!(",\"", sequence_column!(), "\":");

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
    /// The version on every record: a FULL_TABLE copy's, or on a CDC
    /// stream the version of its re-copy after a TRUNCATE (see
    /// [`crate::state::State::recopy`]).
    pub version: Option<i64>,
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

/// Records of one response and the cursor that covers them.
pub struct Batch {
    pub lines: Vec<u8>,
    pub records: u64,
    pub counts: Counts,
    pub cursor: Option<TableCursor>,
    /// Whether the slot is in its copy phase after this batch.
    pub copying: bool,
    /// The batch's share of the lines in flight (see [`LinePool::hold`]),
    /// given back when the writer drops the batch.
    pub held: Option<OwnedSemaphorePermit>,
}

/// A column whose values needed a note, counted over a slot's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnWarning {
    pub column: String,
    pub reason: &'static str,
    pub count: u64,
}

/// Line buffers the writer hands back once it has written them, so readers
/// reuse their capacity: a fresh buffer per batch would grow by doubling
/// (copying everything each time) and, past glibc's mmap threshold, fault
/// in fresh zeroed pages for every response.
///
/// The pool also bounds the bytes of lines in flight between the readers
/// and the writer. A batch holds a share of [`Self::IN_FLIGHT`] from
/// before it is sent until the writer drops it, so a writer held up by a
/// slow stdout stalls the readers rather than letting finished lines pile
/// up: the channel alone counts batches, and a batch can be megabytes.
#[derive(Debug)]
pub struct LinePool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    in_flight: Arc<Semaphore>,
}

impl Default for LinePool {
    fn default() -> Self {
        LinePool {
            free: std::sync::Mutex::default(),
            in_flight: Arc::new(Semaphore::new(Self::IN_FLIGHT_KIB as usize)),
        }
    }
}

impl LinePool {
    /// More spare buffers than batches in flight would only hold memory.
    const KEEP: usize = 4;

    /// Bytes of lines that may wait for the writer, in KiB: a few batches
    /// of a megabyte's response, enough to keep the writer busy.
    const IN_FLIGHT_KIB: u32 = 4 * 1024;

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

    /// Waits until `bytes` more of lines may be in flight and returns their
    /// hold. A batch larger than the whole allowance waits for all of it,
    /// so it still goes, alone. `None` once the pool is closed (never).
    pub async fn hold(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes / 1024)
            .unwrap_or(u32::MAX)
            .clamp(1, Self::IN_FLIGHT_KIB);
        self.in_flight.clone().acquire_many_owned(kib).await.ok()
    }
}

/// What every record of one response shares.
struct Stamp<'a> {
    time_extracted: &'a str,
    /// `_sdc_position`: the response's position.
    position: &'a str,
    /// `_sdc_deleted_at` of its deletes.
    deleted_at: &'a str,
    enum_text: bool,
}

/// Converts one (stream, shard)'s responses into batches.
pub struct Records {
    stream: Arc<StreamSpec>,
    shard: String,
    include_metadata: bool,
    /// `_sdc_source_sequence`, shared by every reader of the run.
    sequence: Arc<AtomicU64>,
    plans: Vec<(bool, RecordPlan)>,
    delete_plans: Vec<(bool, RecordPlan)>,
    /// The stream's properties without ENUM/SET members, for servers that
    /// send member text (VStream's `enum_set_string_values`).
    text_props: Option<Vec<PropertySpec>>,
    warnings: Warnings,
    buf: Vec<u8>,
    extra: Vec<u8>,
}

impl Records {
    pub fn new(
        stream: Arc<StreamSpec>,
        shard: &str,
        include_metadata: bool,
        sequence: Arc<AtomicU64>,
    ) -> Records {
        Records {
            stream,
            shard: shard.to_string(),
            include_metadata,
            sequence,
            plans: Vec::new(),
            delete_plans: Vec::new(),
            text_props: None,
            warnings: Warnings::default(),
            buf: Vec::with_capacity(64 * 1024),
            extra: Vec::with_capacity(256),
        }
    }

    /// Turns one response into a batch; the lines go out in the batch and
    /// `pool` gives the buffer for the next one.
    pub fn batch(
        &mut self,
        resp: &SyncResponse,
        copying_before: bool,
        enum_text: bool,
        pool: &LinePool,
    ) -> Result<Batch, ConvertError> {
        let ts = rfc3339_utc(SystemTime::now());
        let cursor = resp.cursor.as_ref().map(owned_cursor);
        let copying = cursor
            .as_ref()
            .map(|c| c.last_known_pk.is_some())
            .unwrap_or(copying_before);
        let deleted_at = ts.replace('Z', "+00:00");
        let stamp = Stamp {
            time_extracted: &ts,
            position: cursor.as_ref().map(|c| c.position.as_str()).unwrap_or(""),
            deleted_at: &deleted_at,
            enum_text,
        };
        let mut counts = Counts::default();
        self.buf.clear();
        for qr in &resp.result {
            let n = self.rows(qr, Change::Insert, &stamp)?;
            if copying || copying_before {
                counts.copied += n;
            } else {
                counts.inserted += n;
            }
        }
        for u in &resp.updates {
            let Some(after) = u.after.as_ref() else {
                continue;
            };
            // A row whose key changed is a new row to the target: the old
            // key goes first, as a delete carrying the before-image, or the
            // target would keep it for ever.
            if let Some(before) = u
                .before
                .as_ref()
                .filter(|b| key_moved(&self.stream.key_properties, b, after))
            {
                counts.deleted += self.rows_as(before, Image::Moved, &stamp)?;
            }
            counts.updated += self.rows(after, Change::Update, &stamp)?;
        }
        for gone in resp.deletes.iter().filter_map(|d| d.result.as_ref()) {
            counts.deleted += self.rows(gone, Change::Delete, &stamp)?;
        }
        Ok(Batch {
            lines: std::mem::replace(&mut self.buf, pool.take()),
            records: counts.total(),
            counts,
            cursor,
            copying,
            held: None,
        })
    }

    /// The plan for rows of `fields`, made once per field set. Rows that
    /// lack a key column of the stream, or match none of its properties,
    /// cannot be told apart or placed: they fail the stream rather than
    /// become records of nulls (a shape change under rows already sent,
    /// a server naming no fields).
    fn plan(
        &mut self,
        fields: &[Field],
        delete: bool,
        enum_text: bool,
    ) -> Result<usize, ConvertError> {
        let plans = if delete {
            &mut self.delete_plans
        } else {
            &mut self.plans
        };
        if let Some(i) = plans
            .iter()
            .position(|(text, p)| *text == enum_text && p.matches(fields))
        {
            return Ok(i);
        }
        unmapped(&self.stream, fields)?;
        let plan = if delete {
            RecordPlan::keys_only(fields, &self.stream.props)
        } else {
            let plan = RecordPlan::new(fields, &self.stream.props);
            let missing = plan.missing_names();
            if !missing.is_empty() {
                warn!(stream = %self.stream.name, columns = ?missing, "selected columns are not in the server's rows (dropped?); writing null");
            }
            plan
        };
        if plans.len() >= 8 {
            plans.remove(0);
        }
        plans.push((enum_text, plan));
        Ok(plans.len() - 1)
    }

    /// Writes the RECORD lines of one result's rows.
    fn rows(
        &mut self,
        qr: &QueryResult,
        change: Change,
        stamp: &Stamp,
    ) -> Result<u64, ConvertError> {
        let image = match change {
            Change::Insert | Change::Update => Image::Row,
            Change::Delete => Image::Gone,
        };
        self.rows_as(qr, image, stamp)
    }

    /// Writes the RECORD lines of one result's rows as `image`.
    fn rows_as(
        &mut self,
        qr: &QueryResult,
        image: Image,
        stamp: &Stamp,
    ) -> Result<u64, ConvertError> {
        let keys_only = image == Image::Gone;
        let delete = image != Image::Row;
        let pi = self.plan(&qr.fields, keys_only, stamp.enum_text)?;
        if stamp.enum_text && self.text_props.is_none() {
            let mut props = self.stream.props.clone();
            for p in &mut props {
                p.members.clear();
            }
            self.text_props = Some(props);
        }
        let props: &[PropertySpec] = match (&self.text_props, stamp.enum_text) {
            (Some(text), true) => text,
            _ => &self.stream.props,
        };
        let plan = if keys_only {
            &self.delete_plans[pi].1
        } else {
            &self.plans[pi].1
        };
        let stream = &self.stream;
        // What the tap adds is the same for every row of the result but
        // the sequence, which goes last.
        let shard = self.include_metadata.then_some(&self.shard);
        metadata(
            &mut self.extra,
            stream.method.is_cdc(),
            delete,
            shard,
            stamp,
        );
        let fixed = self.extra.len();
        let key_positions = key_positions(&stream.key_properties, qr);
        for row in &qr.rows {
            null_key(stream, &key_positions, row)?;
            if self.include_metadata {
                self.extra.truncate(fixed);
                let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
                self.extra
                    .extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
            }
            let members: [&[u8]; 1] = [&self.extra];
            let extra: &[&[u8]] = if self.extra.is_empty() { &[] } else { &members };
            let warnings = &mut self.warnings;
            encode_record(
                &mut self.buf,
                &stream.name_json,
                stream.version,
                stamp.time_extracted,
                |out| plan.write_record(out, row, props, extra, warnings),
            )?;
        }
        Ok(qr.rows.len() as u64)
    }

    /// The notes of this slot's run, per column.
    pub fn warnings(&self) -> Vec<ColumnWarning> {
        let mut out = Vec::new();
        for (i, p) in self.stream.props.iter().enumerate() {
            let counted = [
                (&self.warnings.zero_dates, "zero or invalid dates written as null (MySQL's `0000-00-00` and the like name no calendar day, so JSON has no form for them)"),
                (&self.warnings.fallbacks, "values written as text (not the catalog type)"),
                (&self.warnings.bad_text, "text not valid in its column's character set, written with U+FFFD for the bad bytes"),
            ];
            for (counts, reason) in counted {
                if let Some(n) = counts.get(i).filter(|n| **n > 0) {
                    out.push(ColumnWarning {
                        column: p.name.clone(),
                        reason,
                        count: *n,
                    });
                }
            }
        }
        out
    }
}

/// Refuses rows whose fields lack a key column of the stream or name none
/// of its properties (see [`Records::plan`]).
fn unmapped(stream: &StreamSpec, fields: &[Field]) -> Result<(), ConvertError> {
    let has = |name: &str| fields.iter().any(|f| f.name == name.as_bytes());
    let lacking: Vec<&str> = stream
        .key_properties
        .iter()
        .map(String::as_str)
        .filter(|k| !has(k))
        .collect();
    let none = !stream.props.iter().any(|p| has(&p.name));
    if lacking.is_empty() && !none {
        return Ok(());
    }
    let names: Vec<String> = fields
        .iter()
        .map(|f| String::from_utf8_lossy(&f.name).into_owned())
        .collect();
    Err(ConvertError::Malformed(format!(
        "the server sent rows of table `{}` whose fields ({}) {}; they cannot be written as records of the stream (the table's shape changed under them?), so the run stops before them",
        stream.table,
        if names.is_empty() { "none".to_string() } else { names.join(", ") },
        if lacking.is_empty() {
            "name none of the stream's columns".to_string()
        } else {
            format!("lack its key column(s) {}", lacking.join(", "))
        }
    )))
}

/// Where the stream's key columns are among a result's fields (every one
/// is there: [`unmapped`] has seen to it).
fn key_positions(keys: &[String], qr: &QueryResult) -> Vec<usize> {
    keys.iter()
        .filter_map(|k| qr.fields.iter().position(|f| f.name == *k))
        .collect()
}

/// A key column is never NULL (a primary key, or its NOT NULL unique
/// equivalent): a row with one is a row the server could not fill (an
/// image of another shape), and fails the stream rather than become a
/// record of nulls.
fn null_key(
    stream: &StreamSpec,
    positions: &[usize],
    row: &crate::pb::query::Row,
) -> Result<(), ConvertError> {
    let Some(cells) = key_cells(row, positions) else {
        return Ok(());
    };
    match cells.iter().position(Option::is_none) {
        None => Ok(()),
        Some(i) => Err(ConvertError::Malformed(format!(
            "the server sent a row of table `{}` whose key column `{}` is NULL, which a key never is (its values did not fit the fields it came with: a shape change under rows already captured?); the run stops before it",
            stream.table,
            stream.key_properties.get(i).map_or("?", String::as_str),
        ))),
    }
}

/// How a result's rows become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    /// A row as it is now (copied, inserted, updated).
    Row,
    /// A deleted row, as the server sends it (Connect: its key columns).
    Gone,
    /// The before-image of a row whose key an update changed: a delete of
    /// the old key, with every column the image carries.
    Moved,
}

/// Whether an update moved its rows to other keys: a key column's cell
/// differs between the before and after images. A stream with no key, or
/// images that lack a key column, are taken as updates in place.
fn key_moved(keys: &[String], before: &QueryResult, after: &QueryResult) -> bool {
    if keys.is_empty() {
        return false;
    }
    let positions = |qr: &QueryResult| -> Option<Vec<usize>> {
        keys.iter()
            .map(|k| qr.fields.iter().position(|f| f.name == *k))
            .collect()
    };
    let (Some(bp), Some(ap)) = (positions(before), positions(after)) else {
        return false;
    };
    before
        .rows
        .iter()
        .zip(&after.rows)
        .any(|(b, a)| key_cells(b, &bp) != key_cells(a, &ap))
}

/// The cells at `positions` of a row, read in one pass over its cells
/// (`None` for a malformed row, which the record's own conversion then
/// reports; `Some` of nothing for no positions).
fn key_cells<'a>(
    row: &'a crate::pb::query::Row,
    positions: &[usize],
) -> Option<Vec<Option<&'a [u8]>>> {
    let Some(last) = positions.iter().copied().max() else {
        return Some(Vec::new());
    };
    let mut cells = row.cells();
    let mut seen = Vec::with_capacity(last + 1);
    for _ in 0..=last {
        seen.push(cells.next_cell().ok()?);
    }
    Some(positions.iter().map(|&p| seen[p]).collect())
}

/// The members the tap adds to a record (`"key":value`, comma-separated,
/// into `extra`, cleared first): `_sdc_deleted_at` on change streams, and
/// with `include_metadata` (`shard` given) the shard, the position and the
/// sequence's key, whose value each row appends.
fn metadata(extra: &mut Vec<u8>, cdc: bool, delete: bool, shard: Option<&String>, stamp: &Stamp) {
    extra.clear();
    if cdc {
        extra.extend_from_slice(b"\"_sdc_deleted_at\":");
        if delete {
            write_json_str(extra, stamp.deleted_at);
        } else {
            extra.extend_from_slice(b"null");
        }
    }
    if let Some(shard) = shard {
        if !extra.is_empty() {
            extra.push(b',');
        }
        extra.extend_from_slice(b"\"_sdc_shard\":");
        write_json_str(extra, shard);
        extra.extend_from_slice(b",\"_sdc_position\":");
        write_json_str(extra, stamp.position);
        extra.extend_from_slice(SEQUENCE_KEY.as_bytes());
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
            *row = row.owned();
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::query::Row;

    /// A stream of table `t` with columns id (its key) and name.
    fn spec() -> StreamSpec {
        let prop = |name: &str| PropertySpec {
            name: name.into(),
            target: crate::convert::Target::Text,
            members: Vec::new(),
            charset: None,
        };
        StreamSpec {
            name: "t".into(),
            name_json: "\"t\"".into(),
            table: "t".into(),
            props: vec![prop("id"), prop("name")],
            columns: vec!["id".into(), "name".into()],
            key_properties: vec!["id".into()],
            method: ReplicationMethod::LogBased,
            version: None,
        }
    }

    fn result(names: &[&str], rows: &[&[Option<&str>]]) -> QueryResult {
        QueryResult {
            fields: names
                .iter()
                .map(|n| Field {
                    name: n.to_string().into(),
                    ..Field::default()
                })
                .collect(),
            rows: rows
                .iter()
                .map(|r| Row::from_cells(r.iter().map(|c| c.map(str::as_bytes))))
                .collect(),
            ..QueryResult::default()
        }
    }

    #[test]
    fn rows_that_cannot_be_placed_fail_instead_of_becoming_nulls() {
        let spec = spec();
        // (fields, a row, whether it is refused)
        type Case<'a> = (&'a [&'a str], &'a [Option<&'a str>], bool);
        let cases: [Case; 6] = [
            (&["id", "name"], &[Some("1"), Some("a")], false),
            (&["id", "name"], &[Some("1"), None], false),
            (&["id", "name", "new"], &[Some("1"), Some("a"), None], false),
            (&["id", "name"], &[None, None], true),
            (&["name"], &[Some("a")], true),
            (&[], &[], true),
        ];
        for (names, cells, refused) in cases {
            let qr = result(names, &[cells]);
            let got = unmapped(&spec, &qr.fields).and_then(|()| {
                let at = key_positions(&spec.key_properties, &qr);
                null_key(&spec, &at, &qr.rows[0])
            });
            assert_eq!(got.is_err(), refused, "{names:?} {cells:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("table `t`"), "{e}");
            }
        }
    }

    #[test]
    fn an_update_moves_its_row_when_a_key_cell_changes() {
        let keys = vec!["id".to_string()];
        let before = result(&["id", "name"], &[&[Some("1"), Some("a")]]);
        let cases: [(&[Option<&str>], bool); 3] = [
            (&[Some("1"), Some("b")], false),
            (&[Some("2"), Some("a")], true),
            (&[Some("10"), Some("a")], true),
        ];
        for (after, moved) in cases {
            let after = result(&["id", "name"], &[after]);
            assert_eq!(key_moved(&keys, &before, &after), moved, "{after:?}");
        }
        // no key, or a key column missing from an image: in place
        let after = result(&["id", "name"], &[&[Some("2"), Some("a")]]);
        assert!(!key_moved(&[], &before, &after));
        let keyless_image = result(&["name"], &[&[Some("a")]]);
        assert!(!key_moved(&keys, &keyless_image, &after));
    }

    fn stamp<'a>() -> Stamp<'a> {
        Stamp {
            time_extracted: "2026-01-02T03:04:05.000000Z",
            position: "MySQL56/x:1-5",
            deleted_at: "2026-01-02T03:04:05.000000+00:00",
            enum_text: false,
        }
    }

    #[test]
    fn metadata_members() {
        let shard = "-80".to_string();
        let cases: [(bool, bool, bool, &str); 5] = [
            (false, false, false, ""),
            (true, false, false, r#""_sdc_deleted_at":null"#),
            (
                true,
                true,
                false,
                r#""_sdc_deleted_at":"2026-01-02T03:04:05.000000+00:00""#,
            ),
            (
                false,
                false,
                true,
                r#""_sdc_shard":"-80","_sdc_position":"MySQL56/x:1-5","_sdc_source_sequence":"#,
            ),
            (
                true,
                false,
                true,
                r#""_sdc_deleted_at":null,"_sdc_shard":"-80","_sdc_position":"MySQL56/x:1-5","_sdc_source_sequence":"#,
            ),
        ];
        for (cdc, delete, include, want) in cases {
            let mut extra = b"left over".to_vec();
            metadata(&mut extra, cdc, delete, include.then_some(&shard), &stamp());
            assert_eq!(String::from_utf8_lossy(&extra), want, "{cdc} {delete}");
        }
    }
}
