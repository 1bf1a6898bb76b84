//! Change-phase responses: a batch of one kind of change at a time (the
//! kinds land in separate response fields, so a kind change cuts the
//! response to keep the order), built straight from the change log's cells.
//!
//! Every cell of a batch goes into one buffer, and rows are slices of it: a
//! response costs a few allocations, not a few per change. The Connect
//! front's update and delete images are one-row `QueryResult`s the client
//! decodes as messages; the emulator sends them as bytes (see build.rs),
//! written here once: the stream's field descriptions, encoded once, then
//! the row.

use std::ops::Range;
use std::sync::Arc;

use prost::bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, sint64, WireType};

use super::stream::StreamCtx;
use crate::wire::binlogdata::RowChange;
use crate::wire::psdbconnect::v1alpha1::{DeletedRow, SyncResponse, UpdatedRow};
use crate::wire::query::{Field, QueryResult, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Insert,
    Update,
    Delete,
}

/// A change's (before, after) images.
type Images = (Option<Image>, Option<Image>);

/// One image in a batch's buffer: a Vitess row's cells (with its lengths),
/// or an encoded one-row `QueryResult` (no lengths).
pub(super) struct Image {
    lengths: Vec<i64>,
    at: Range<usize>,
}

#[derive(Default)]
pub(super) struct Batch {
    pub(super) kind: Option<Kind>,
    /// The images' bytes.
    block: Vec<u8>,
    /// (before, after) of each change.
    changes: Vec<Images>,
    /// A row being encoded as a one-row result (its length goes first).
    scratch: Vec<u8>,
    scratch_lengths: Vec<i64>,
}

impl Batch {
    pub(super) fn rows(&self) -> usize {
        self.changes.len()
    }

    pub(super) fn push(&mut self, before: Option<Image>, after: Option<Image>) {
        self.changes.push((before, after));
    }

    /// Appends the cells at `positions` as a Vitess row.
    pub(super) fn row(
        &mut self,
        ctx: &StreamCtx<'_>,
        cells: &[Option<mysql_async::Value>],
        positions: &[usize],
    ) -> Image {
        let start = self.block.len();
        let mut lengths = Vec::with_capacity(positions.len());
        ctx.push_cells(cells, positions, &mut lengths, &mut self.block);
        Image {
            lengths,
            at: start..self.block.len(),
        }
    }

    /// Appends the cells at `positions` as a one-row `QueryResult` of the
    /// pre-encoded `fields`.
    pub(super) fn result(
        &mut self,
        ctx: &StreamCtx<'_>,
        fields: &[u8],
        cells: &[Option<mysql_async::Value>],
        positions: &[usize],
    ) -> Image {
        self.scratch.clear();
        self.scratch_lengths.clear();
        ctx.push_cells(
            cells,
            positions,
            &mut self.scratch_lengths,
            &mut self.scratch,
        );
        let start = self.block.len();
        one_row_result(
            fields,
            &self.scratch_lengths,
            &self.scratch,
            &mut self.block,
        );
        Image {
            lengths: Vec::new(),
            at: start..self.block.len(),
        }
    }

    /// Empties the batch, keeping room for the next one of the same size.
    fn take_parts(&mut self) -> (Option<Kind>, Bytes, Vec<Images>) {
        let size = self.block.len();
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(size));
        let n = self.changes.len();
        let changes = std::mem::replace(&mut self.changes, Vec::with_capacity(n));
        (self.kind.take(), Bytes::from(block), changes)
    }

    /// The batch as a Connect response, with a cursor at `pos` if given.
    pub(super) fn take_response(
        &mut self,
        ctx: &StreamCtx<'_>,
        fields: &ChangeFields,
        pos: Option<u64>,
    ) -> SyncResponse {
        let (kind, block, changes) = self.take_parts();
        let mut resp = SyncResponse {
            cursor: pos.map(|p| ctx.cursor(ctx.shard.capture.position(p), None)),
            ..Default::default()
        };
        let slice = |img: Option<Image>| img.map_or_else(Bytes::new, |i| block.slice(i.at));
        match kind {
            Some(Kind::Insert) if !changes.is_empty() => resp.result.push(QueryResult {
                fields: fields.out.to_vec(),
                rows: changes
                    .into_iter()
                    .filter_map(|(_, after)| after.map(|i| as_row(&block, i)))
                    .collect(),
                ..Default::default()
            }),
            Some(Kind::Update) => {
                resp.updates = changes
                    .into_iter()
                    .map(|(before, after)| UpdatedRow {
                        before: slice(before),
                        after: slice(after),
                    })
                    .collect();
            }
            Some(Kind::Delete) => {
                resp.deletes = changes
                    .into_iter()
                    .map(|(before, _)| DeletedRow {
                        result: slice(before),
                    })
                    .collect();
            }
            _ => {}
        }
        resp
    }

    /// The batch as VStream row changes.
    pub(super) fn take_changes(&mut self) -> Vec<RowChange> {
        let (_, block, changes) = self.take_parts();
        changes
            .into_iter()
            .map(|(before, after)| RowChange {
                before: before.map(|i| as_row(&block, i)),
                after: after.map(|i| as_row(&block, i)),
                ..Default::default()
            })
            .collect()
    }
}

fn as_row(block: &Bytes, image: Image) -> Row {
    Row {
        values: block.slice(image.at),
        lengths: image.lengths,
    }
}

/// The field descriptions of a change stream, plain for insert results and
/// VStream, pre-encoded for the one-row results of updates and deletes.
pub(super) struct ChangeFields {
    out: Arc<[Field]>,
    out_encoded: Vec<u8>,
    pk_encoded: Vec<u8>,
}

impl ChangeFields {
    pub(super) fn new(out: Vec<Field>, pk: &[Field]) -> ChangeFields {
        ChangeFields {
            out_encoded: encode_fields(&out),
            pk_encoded: encode_fields(pk),
            out: out.into(),
        }
    }

    pub(super) fn out(&self) -> &Arc<[Field]> {
        &self.out
    }

    pub(super) fn out_encoded(&self) -> &[u8] {
        &self.out_encoded
    }

    pub(super) fn pk_encoded(&self) -> &[u8] {
        &self.pk_encoded
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

/// Appends a `QueryResult` of pre-encoded `fields` and one row (`rows` is
/// field 4), byte for byte what prost encodes for the message.
fn one_row_result(fields: &[u8], lengths: &[i64], values: &[u8], buf: &mut Vec<u8>) {
    buf.extend_from_slice(fields);
    encode_key(4, WireType::LengthDelimited, buf);
    encode_varint(row_encoded_len(lengths, values) as u64, buf);
    // `Row`: lengths (1, packed sint64), values (2, bytes); proto3 leaves
    // out empty members.
    sint64::encode_packed(1, lengths, buf);
    if !values.is_empty() {
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(values.len() as u64, buf);
        buf.extend_from_slice(values);
    }
}

fn row_encoded_len(lengths: &[i64], values: &[u8]) -> usize {
    let values_len = if values.is_empty() {
        0
    } else {
        1 + encoded_len_varint(values.len() as u64) + values.len()
    };
    sint64::encoded_len_packed(1, lengths) + values_len
}

pub(super) fn as_u64(v: &mysql_async::Value) -> Option<u64> {
    match v {
        mysql_async::Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        mysql_async::Value::Int(i) => u64::try_from(*i).ok(),
        mysql_async::Value::UInt(u) => Some(*u),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::query::Type;
    use prost::Message;

    /// The hand-written one-row result is what prost encodes for the same
    /// message, whatever the row: empty, all NULL, empty strings, long
    /// cells whose lengths take several varint bytes, negative lengths.
    #[test]
    fn one_row_results_match_prost() {
        let fields = [
            Field {
                name: "id".into(),
                r#type: Type::Int64 as i32,
                ..Default::default()
            },
            Field {
                name: "t".into(),
                r#type: Type::Text as i32,
                charset: 255,
                ..Default::default()
            },
        ];
        let long = vec![b'x'; 70_000];
        let cases: Vec<(Vec<i64>, Vec<u8>)> = vec![
            (vec![], vec![]),
            (vec![-1, -1], vec![]),
            (vec![0, 0], vec![]),
            (vec![1, -1], b"7".to_vec()),
            (vec![3, 70_000], [b"123".as_slice(), &long].concat()),
            (vec![-1, 64], vec![b'y'; 64]),
        ];
        for field_set in [&fields[..], &fields[..1], &[]] {
            let encoded = encode_fields(field_set);
            for (lengths, values) in &cases {
                let want = QueryResult {
                    fields: field_set.to_vec(),
                    rows: vec![Row {
                        lengths: lengths.clone(),
                        values: values.clone().into(),
                    }],
                    ..Default::default()
                }
                .encode_to_vec();
                let mut got = vec![0xAA];
                one_row_result(&encoded, lengths, values, &mut got);
                assert_eq!(&got[1..], &want[..], "lengths {lengths:?}");
            }
        }
    }
}
