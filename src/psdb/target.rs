//! The words both APIs share: what a reader reads ([`Target`]), where a
//! session resumes ([`Resume`]) and what a session yields ([`Unit`]).

use std::time::Duration;

use crate::config::TabletType;
use crate::convert::cells;
use crate::pb::psdbconnect::v1alpha1::{SyncResponse, TableCursor};
use crate::pb::query::{QueryResult, Row};

/// What one reader reads: a table on one shard, from tablets of one type.
#[derive(Debug, Clone)]
pub struct Target {
    pub keyspace: String,
    pub shard: String,
    pub table: String,
    pub tablet_type: TabletType,
    /// Cells to read from (empty: the server's choice).
    pub cells: Vec<String>,
}

/// Where and how a session resumes.
#[derive(Debug, Clone, Copy)]
pub struct Resume<'a> {
    pub cursor: &'a TableCursor,
    /// Columns to read (Connect); VStream always reads every column.
    pub columns: &'a [String],
    /// The table's key columns, in key order, for a copy's `last_known_pk`.
    pub keys: &'a [String],
    /// Whether the session starts in (or resumes) a copy.
    pub copying: bool,
    /// The session's server-side deadline.
    pub timeout: Duration,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new row, or a copied one.
    Insert,
    Update,
    Delete,
}

/// One response's worth of rows (and maybe a cursor), in the Sync shape.
#[derive(Debug, Default)]
pub struct Unit {
    pub resp: SyncResponse,
    /// The server sends ENUM and SET as member text (VStream FIELD's
    /// `enum_set_string_values`): never map digits to members.
    pub enum_text: bool,
    /// The statement of a `TRUNCATE` of the table, which the server sends
    /// as one DDL event, not as row deletes. A unit that carries it comes
    /// before any cursor past the TRUNCATE, so the reader can act on it
    /// before a STATE covers it.
    pub truncated: Option<String>,
}

/// Why a session's next unit is not available.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The server sent something that cannot be read.
    #[error("{0}")]
    Data(String),
}

impl From<tonic::Status> for SessionError {
    fn from(s: tonic::Status) -> Self {
        SessionError::Status(s)
    }
}

/// Keeps a copy's `last_known_pk` to the key columns, in key order (the
/// server may send every field; values are matched by position).
pub fn trim_last_known_pk(qr: &QueryResult, keys: &[String]) -> QueryResult {
    let Some(row) = qr.rows.first() else {
        return qr.clone();
    };
    let idx: Vec<usize> = keys
        .iter()
        .filter_map(|k| qr.fields.iter().position(|f| f.name == k))
        .collect();
    if idx.len() != keys.len()
        || idx.len() == qr.fields.len() && idx.iter().enumerate().all(|(i, j)| i == *j)
    {
        return qr.clone();
    }
    let Ok(all) = cells(row, qr.fields.len()) else {
        return qr.clone();
    };
    QueryResult {
        fields: idx.iter().map(|&i| qr.fields[i].clone()).collect(),
        rows: vec![Row::from_cells(idx.iter().map(|&i| all[i]))],
        ..Default::default()
    }
}

/// The cursor a request resumes from: a copy resumes by primary key with
/// an empty position (the key trimmed to the key columns), as every Go
/// client does; changes resume from the position.
pub(super) fn resume_cursor(target: &Target, resume: &Resume<'_>) -> TableCursor {
    let mut c = resume.cursor.clone();
    if let Some(pk) = &resume.cursor.last_known_pk {
        c.position = String::new();
        c.last_known_pk = Some(trim_last_known_pk(pk, resume.keys));
    }
    c.shard = target.shard.clone();
    c.keyspace = target.keyspace.clone();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::query::{Field, Type};

    fn f(name: &str) -> Field {
        Field {
            name: prost::bytes::Bytes::copy_from_slice(name.as_bytes()),
            r#type: Type::Int64 as i32,
            ..Default::default()
        }
    }

    #[test]
    fn last_known_pk_is_trimmed_to_keys_in_key_order() {
        let qr = QueryResult {
            fields: vec![f("a"), f("id"), f("b"), f("tenant")],
            rows: vec![Row::new(
                &[1, 2, -1, 1],
                prost::bytes::Bytes::from_static(b"x42y"),
            )],
            ..Default::default()
        };
        let t = trim_last_known_pk(&qr, &["tenant".to_string(), "id".to_string()]);
        assert_eq!(
            t.fields.iter().map(|f| &f.name[..]).collect::<Vec<_>>(),
            vec![&b"tenant"[..], b"id"]
        );
        assert_eq!(t.rows[0].lengths().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(t.rows[0].values(), b"y42");
        // already trimmed, or keys unknown: unchanged
        let same = trim_last_known_pk(&t, &["tenant".to_string(), "id".to_string()]);
        assert_eq!(same, t);
        assert_eq!(trim_last_known_pk(&qr, &["zzz".to_string()]), qr);
    }
}
