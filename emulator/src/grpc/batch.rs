//! Change-phase responses: a batch of one kind of change at a time (the
//! kinds land in separate response fields, so a kind change cuts the
//! response to keep the order), and the encoding of Vitess rows and
//! one-row results, pre-encoded where the same fields repeat.

use super::stream::StreamCtx;
use crate::wire::psdbconnect::v1alpha1::{DeletedRow, SyncResponse, UpdatedRow};
use crate::wire::query::{Field, QueryResult, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Insert,
    Update,
    Delete,
}

#[derive(Default)]
pub(super) struct Batch {
    pub(super) kind: Option<Kind>,
    pub(super) inserts: Vec<Row>,
    pub(super) updates: Vec<(Row, Row)>,
    pub(super) deletes: Vec<Row>,
}

impl Batch {
    pub(super) fn rows(&self) -> usize {
        self.inserts.len() + self.updates.len() + self.deletes.len()
    }

    pub(super) fn take(
        &mut self,
        ctx: &StreamCtx<'_>,
        fields: &ChangeFields,
        pos: Option<u64>,
    ) -> SyncResponse {
        let b = std::mem::take(self);
        let mut resp = SyncResponse {
            cursor: pos.map(|p| ctx.cursor(ctx.shard.capture.position(p), None)),
            ..Default::default()
        };
        if !b.inserts.is_empty() {
            resp.result.push(QueryResult {
                fields: fields.out.clone(),
                rows: b.inserts,
                ..Default::default()
            });
        }
        for (before, after) in b.updates {
            resp.updates.push(UpdatedRow {
                before: one_row_result(&fields.out_encoded, &before),
                after: one_row_result(&fields.out_encoded, &after),
            });
        }
        for key in b.deletes {
            resp.deletes.push(DeletedRow {
                result: one_row_result(&fields.pk_encoded, &key),
            });
        }
        resp
    }
}

/// The field descriptions of a change stream, plain for insert results and
/// pre-encoded for the one-row results of updates and deletes.
pub(super) struct ChangeFields {
    out: Vec<Field>,
    out_encoded: Vec<u8>,
    pk_encoded: Vec<u8>,
}

impl ChangeFields {
    pub(super) fn new(out: Vec<Field>, pk: &[Field]) -> ChangeFields {
        ChangeFields {
            out_encoded: encode_fields(&out),
            pk_encoded: encode_fields(pk),
            out,
        }
    }
}

/// `QueryResult.fields` (field 1) as it goes on the wire.
fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in fields {
        prost::encoding::message::encode(1, f, &mut buf);
    }
    buf
}

/// A `QueryResult` of pre-encoded fields and one row (`rows` is field 4),
/// byte for byte what prost would encode for the message.
fn one_row_result(fields: &[u8], row: &Row) -> prost::bytes::Bytes {
    let mut buf = Vec::with_capacity(fields.len() + row.values.len() + 4 * row.lengths.len() + 16);
    buf.extend_from_slice(fields);
    prost::encoding::message::encode(4, row, &mut buf);
    buf.into()
}

pub(super) fn as_u64(v: &mysql_async::Value) -> Option<u64> {
    match v {
        mysql_async::Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        mysql_async::Value::Int(i) => u64::try_from(*i).ok(),
        mysql_async::Value::UInt(u) => Some(*u),
        _ => None,
    }
}

pub(super) fn as_bytes(v: &mysql_async::Value) -> Option<Vec<u8>> {
    match v {
        mysql_async::Value::Bytes(b) => Some(b.clone()),
        _ => None,
    }
}

/// Splits a Vitess row into cells; `None` if lengths and values disagree.
pub fn split_row(row: &Row) -> Option<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(row.lengths.len());
    let mut off = 0usize;
    for &l in &row.lengths {
        if l < 0 {
            out.push(None);
        } else {
            let l = usize::try_from(l).ok()?;
            let end = off.checked_add(l)?;
            out.push(Some(row.values.get(off..end)?.to_vec()));
            off = end;
        }
    }
    (off == row.values.len()).then_some(out)
}
