//! `binlogdata.RowEvent`, with its row changes held inline.
//!
//! A copy over VStream sends each row as its own ROW event holding one row
//! change. prost's generated type put that change in a fresh `Vec`: an
//! allocation and a free per copied row, with the allocator some 8% of a
//! VStream copy's instructions. Here one change lives inline in the event
//! (a [`SmallVec`]); a transaction's event of several changes spills to
//! the heap as before. The members the tap does not read (the event's own
//! keyspace and shard, which repeat the VEvent's) are skipped on the wire.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use smallvec::SmallVec;

use crate::pb::binlogdata::RowChange;

const TABLE_NAME: u32 = 1;
const ROW_CHANGES: u32 = 2;
const FLAGS: u32 = 5;

/// A ROW event's changes: one inline, more on the heap.
pub type RowChanges = SmallVec<[RowChange; 1]>;

/// The rows one statement changed in one table.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct RowEvent {
    pub table_name: Bytes,
    pub row_changes: RowChanges,
    pub flags: u32,
}

impl Message for RowEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.table_name.is_empty() {
            encoding::bytes::encode(TABLE_NAME, &self.table_name, buf);
        }
        for change in &self.row_changes {
            encoding::message::encode(ROW_CHANGES, change, buf);
        }
        if self.flags != 0 {
            encoding::uint32::encode(FLAGS, &self.flags, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            TABLE_NAME => encoding::bytes::merge(wire_type, &mut self.table_name, buf, ctx),
            ROW_CHANGES => {
                let mut change = RowChange::default();
                encoding::message::merge(wire_type, &mut change, buf, ctx)?;
                self.row_changes.push(change);
                Ok(())
            }
            FLAGS => encoding::uint32::merge(wire_type, &mut self.flags, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let name = if self.table_name.is_empty() {
            0
        } else {
            encoding::bytes::encoded_len(TABLE_NAME, &self.table_name)
        };
        let flags = if self.flags == 0 {
            0
        } else {
            encoding::uint32::encoded_len(FLAGS, &self.flags)
        };
        let changes: usize = self
            .row_changes
            .iter()
            .map(|c| encoding::message::encoded_len(ROW_CHANGES, c))
            .sum();
        name + changes + flags
    }

    fn clear(&mut self) {
        *self = RowEvent::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::binlogdata::Bitmap;
    use crate::wire::row::Row;

    /// The generated form of the message as vttablet sends it, members the
    /// tap skips included.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(string, tag = "1")]
        table_name: String,
        #[prost(message, repeated, tag = "2")]
        row_changes: Vec<RowChange>,
        #[prost(string, tag = "3")]
        keyspace: String,
        #[prost(string, tag = "4")]
        shard: String,
        #[prost(uint32, tag = "5")]
        flags: u32,
        #[prost(bool, tag = "6")]
        is_internal_table: bool,
    }

    fn change(cells: &[&str], partial: bool) -> RowChange {
        RowChange {
            after: Some(Row::from_cells(cells.iter().map(|c| Some(c.as_bytes())))),
            data_columns: partial.then(|| {
                Box::new(Bitmap {
                    count: 2,
                    cols: vec![1],
                })
            }),
            ..RowChange::default()
        }
    }

    #[test]
    fn events_decode_as_the_generated_type_and_skip_what_the_tap_does_not_read() {
        let cases = [
            (vec![], 0),
            (vec![change(&["1", "a"], false)], 0),
            (
                vec![change(&["1", "a"], false), change(&["2", "b"], true)],
                7,
            ),
            (
                (0..5).map(|i| change(&[&i.to_string()], false)).collect(),
                1,
            ),
        ];
        for (changes, flags) in cases {
            let generated = Generated {
                table_name: "ks.t".into(),
                row_changes: changes.clone(),
                keyspace: "ks".into(),
                shard: "-80".into(),
                flags,
                is_internal_table: true,
            };
            let ev = RowEvent::decode(&generated.encode_to_vec()[..]).expect("decodes");
            assert_eq!(&ev.table_name[..], b"ks.t");
            assert_eq!(ev.row_changes.to_vec(), changes);
            assert_eq!(ev.flags, flags);
            // Without the skipped members, the wire form is the generated one.
            let kept = Generated {
                keyspace: String::new(),
                shard: String::new(),
                is_internal_table: false,
                ..generated
            };
            assert_eq!(ev.encode_to_vec(), kept.encode_to_vec());
            assert_eq!(ev.encoded_len(), kept.encoded_len());
        }
    }

    #[test]
    fn a_cut_event_is_a_decode_error() {
        let wire = Generated {
            table_name: "t".into(),
            row_changes: vec![change(&["1"], false)],
            ..Generated::default()
        }
        .encode_to_vec();
        // Cut after the table name the message is whole (and shorter).
        let boundary = 3;
        for end in (1..wire.len()).filter(|e| *e != boundary) {
            assert!(RowEvent::decode(&wire[..end]).is_err(), "cut at {end}");
        }
        assert!(RowEvent::decode(&wire[..boundary]).is_ok());
    }
}
