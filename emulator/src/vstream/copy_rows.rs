//! The ROW events of a copy, written by hand.
//!
//! A copy sends every row as its own event, `VEvent { ROW, row_event:
//! RowEvent { row_changes: [RowChange { after: Row }] } }`, which names the
//! keyspace, shard and table again. Built as prost structs, that is a
//! vector and five shared names per row, and encoding measures each nested
//! message again at every level above it: a quarter of the emulator's CPU
//! in a VStream copy. Here each event's lengths are worked out once, inside
//! out, and the event is written into one buffer shared by the batch; the
//! response carries events pre-encoded (see build.rs), so anything that is
//! not a plain row still goes through prost with the same bytes as result.
//!
//! Members are written in field order, zero values left out, as prost
//! writes them; the tests hold the bytes to prost's encoding.

use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, sint64, WireType};

use crate::wire::binlogdata::{RowChange, VEventType};
use crate::wire::query::Row;

/// What every ROW event of a batch shares.
pub(super) struct Names<'a> {
    pub keyspace: &'a [u8],
    pub shard: &'a [u8],
    /// `keyspace.table`.
    pub table: &'a [u8],
    pub timestamp: i64,
}

/// Field numbers.
const EVENT_TYPE: u32 = 1;
const EVENT_TIMESTAMP: u32 = 2;
const EVENT_ROW_EVENT: u32 = 5;
const EVENT_KEYSPACE: u32 = 22;
const EVENT_SHARD: u32 = 23;
const ROW_EVENT_TABLE: u32 = 1;
const ROW_EVENT_CHANGES: u32 = 2;
const ROW_EVENT_KEYSPACE: u32 = 3;
const ROW_EVENT_SHARD: u32 = 4;
const CHANGE_BEFORE: u32 = 1;
const CHANGE_AFTER: u32 = 2;
const ROW_LENGTHS: u32 = 1;
const ROW_VALUES: u32 = 2;

/// Appends one encoded ROW event (`flags: 0`) per change, or `None` when a
/// change carries bitmaps (partial images), which only prost writes here.
pub(super) fn encode(names: &Names, changes: &[RowChange], events: &mut Vec<Bytes>) -> Option<()> {
    if changes
        .iter()
        .any(|c| c.data_columns.is_some() || c.json_partial_values.is_some())
    {
        return None;
    }
    let mut buf = BytesMut::with_capacity(changes.iter().map(estimate).sum());
    events.reserve(changes.len());
    for change in changes {
        write_event(names, change, &mut buf);
        events.push(buf.split().freeze());
    }
    Some(())
}

/// About an event's size, so that the batch's buffer is allocated once.
fn estimate(change: &RowChange) -> usize {
    let row = |r: &Option<Row>| {
        r.as_ref()
            .map_or(0, |r| r.values.len() + 2 * r.lengths.len())
    };
    160 + row(&change.before) + row(&change.after)
}

fn write_event(names: &Names, change: &RowChange, buf: &mut BytesMut) {
    let before = change.before.as_ref().map(row_len);
    let after = change.after.as_ref().map(row_len);
    let change_len = member_len(CHANGE_BEFORE, before) + member_len(CHANGE_AFTER, after);
    let row_event_len = text_len(ROW_EVENT_TABLE, names.table)
        + member_len(ROW_EVENT_CHANGES, Some(change_len))
        + text_len(ROW_EVENT_KEYSPACE, names.keyspace)
        + text_len(ROW_EVENT_SHARD, names.shard);

    encode_key(EVENT_TYPE, WireType::Varint, buf);
    encode_varint(VEventType::Row as u64, buf);
    if names.timestamp != 0 {
        encode_key(EVENT_TIMESTAMP, WireType::Varint, buf);
        encode_varint(names.timestamp as u64, buf);
    }
    open(EVENT_ROW_EVENT, row_event_len, buf);
    write_text(ROW_EVENT_TABLE, names.table, buf);
    open(ROW_EVENT_CHANGES, change_len, buf);
    if let (Some(row), Some(len)) = (&change.before, before) {
        write_row(CHANGE_BEFORE, row, len, buf);
    }
    if let (Some(row), Some(len)) = (&change.after, after) {
        write_row(CHANGE_AFTER, row, len, buf);
    }
    write_text(ROW_EVENT_KEYSPACE, names.keyspace, buf);
    write_text(ROW_EVENT_SHARD, names.shard, buf);
    write_text(EVENT_KEYSPACE, names.keyspace, buf);
    write_text(EVENT_SHARD, names.shard, buf);
}

/// The encoded size of a row's members.
fn row_len(row: &Row) -> usize {
    sint64::encoded_len_packed(ROW_LENGTHS, &row.lengths) + text_len(ROW_VALUES, &row.values)
}

fn write_row(tag: u32, row: &Row, len: usize, buf: &mut BytesMut) {
    open(tag, len, buf);
    sint64::encode_packed(ROW_LENGTHS, &row.lengths, buf);
    write_text(ROW_VALUES, &row.values, buf);
}

/// The encoded size of a length-delimited member of `len` bytes, if present.
fn member_len(tag: u32, len: Option<usize>) -> usize {
    len.map_or(0, |len| key_len(tag) + encoded_len_varint(len as u64) + len)
}

/// The encoded size of a string or bytes member (left out when empty).
fn text_len(tag: u32, text: &[u8]) -> usize {
    if text.is_empty() {
        0
    } else {
        member_len(tag, Some(text.len()))
    }
}

fn open(tag: u32, len: usize, buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn write_text(tag: u32, text: &[u8], buf: &mut BytesMut) {
    if !text.is_empty() {
        open(tag, text.len(), buf);
        buf.put_slice(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::binlogdata::{Bitmap, RowEvent, VEvent};
    use prost::Message;

    fn prost_event(names: &Names, change: &RowChange) -> Vec<u8> {
        VEvent {
            r#type: VEventType::Row as i32,
            timestamp: names.timestamp,
            row_event: Some(RowEvent {
                table_name: Bytes::copy_from_slice(names.table),
                row_changes: vec![change.clone()],
                keyspace: Bytes::copy_from_slice(names.keyspace),
                shard: Bytes::copy_from_slice(names.shard),
                ..Default::default()
            }),
            keyspace: Bytes::copy_from_slice(names.keyspace),
            shard: Bytes::copy_from_slice(names.shard),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn row(cells: &[Option<&[u8]>]) -> Row {
        Row {
            lengths: cells
                .iter()
                .map(|c| c.map_or(-1, |c| c.len() as i64))
                .collect(),
            values: cells
                .iter()
                .flatten()
                .flat_map(|c| c.iter().copied())
                .collect(),
        }
    }

    #[test]
    fn rows_are_written_as_prost_writes_them() {
        let long = vec![b'x'; 300];
        let rows = [
            row(&[Some(b"1"), Some(b"abc"), None]),
            row(&[None, None]),
            row(&[Some(b""), Some(&long), Some(b"-7")]),
            row(&[]),
        ];
        let names = [
            Names {
                keyspace: b"ks",
                shard: b"-",
                table: b"ks.t",
                timestamp: 1_764_000_000,
            },
            Names {
                keyspace: b"",
                shard: b"",
                table: b"",
                timestamp: 0,
            },
            Names {
                keyspace: &long,
                shard: b"80-",
                table: &long,
                timestamp: -1,
            },
        ];
        let mut changes: Vec<RowChange> = rows
            .iter()
            .map(|r| RowChange {
                after: Some(r.clone()),
                ..Default::default()
            })
            .collect();
        changes.push(RowChange {
            before: Some(rows[0].clone()),
            after: Some(rows[2].clone()),
            ..Default::default()
        });
        changes.push(RowChange {
            before: Some(rows[1].clone()),
            ..Default::default()
        });
        changes.push(RowChange::default());
        for n in &names {
            let mut events = Vec::new();
            encode(n, &changes, &mut events).expect("no bitmaps");
            assert_eq!(events.len(), changes.len());
            for (event, change) in events.iter().zip(&changes) {
                assert_eq!(&event[..], &prost_event(n, change)[..], "{change:?}");
            }
        }
    }

    #[test]
    fn partial_images_are_left_to_prost() {
        let names = Names {
            keyspace: b"ks",
            shard: b"-",
            table: b"ks.t",
            timestamp: 1,
        };
        let change = RowChange {
            after: Some(row(&[Some(b"1")])),
            data_columns: Some(Bitmap::default()),
            ..Default::default()
        };
        let mut events = Vec::new();
        assert!(encode(&names, &[change], &mut events).is_none());
        assert!(events.is_empty());
    }
}
