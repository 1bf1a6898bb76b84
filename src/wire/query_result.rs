//! `query.QueryResult`, decoded by hand so that repeated field lists cost
//! a comparison instead of a decode.
//!
//! The Connect API sends every row change as its own result, each with the
//! table's whole field list: ten columns cost ten `query.Field` decodes
//! and a growing vector per change, about half of the tap's work on a
//! stream of changes. Field lists hardly ever change within a run, so each
//! decoding thread remembers the raw bytes of the fields it decoded last,
//! by position. A field whose bytes match is a clone of the remembered one
//! (its name is shared, not copied); any other is decoded as usual and
//! remembered. The result is the same as decoding every field, so the
//! type keeps the generated type's members and wire form (rows are
//! [`super::row::Row`]).

use std::cell::RefCell;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::pb::query::Field;
use crate::wire::row::Row;

const FIELDS: u32 = 1;
const ROWS_AFFECTED: u32 = 2;
const INSERT_ID: u32 = 3;
const ROWS: u32 = 4;

/// A query result: its fields and rows.
#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct QueryResult {
    pub fields: Vec<Field>,
    pub rows_affected: u64,
    pub insert_id: u64,
    pub rows: Vec<Row>,
}

/// Fields decoded last on this thread, by position, with their raw bytes.
#[derive(Default)]
struct FieldMemo {
    seen: Vec<(Bytes, Field)>,
}

impl FieldMemo {
    /// MySQL tables have at most 4096 columns; a longer list is not kept.
    const MAX: usize = 4096;

    fn field(&mut self, at: usize, raw: &[u8]) -> Result<Field, DecodeError> {
        if let Some(field) = self.same(at, raw) {
            return Ok(field);
        }
        // Decoded from an owned copy, so neither the memo nor the result
        // keeps the receive buffer alive.
        let owned = Bytes::copy_from_slice(raw);
        let field = Field::decode(owned.clone())?;
        if at < Self::MAX {
            self.seen.truncate(at);
            self.seen.push((owned, field.clone()));
        }
        Ok(field)
    }

    fn known(&self) -> usize {
        self.seen.len()
    }

    /// The field remembered at `at` if its raw bytes are `raw`.
    fn same(&self, at: usize, raw: &[u8]) -> Option<Field> {
        self.seen
            .get(at)
            .filter(|(bytes, _)| bytes[..] == *raw)
            .map(|(_, field)| field.clone())
    }
}

/// The common case without touching the buffer's bookkeeping: the field at
/// the front of `buf` (its length prefix, then its bytes, all in the
/// current chunk) is the one remembered at `at`; it is skipped and a clone
/// returned. Anything else (another field, a malformed prefix, a field
/// split across chunks) is left to the full path.
fn remembered(at: usize, buf: &mut impl Buf) -> Option<Field> {
    let chunk = buf.chunk();
    let mut body: &[u8] = chunk;
    let len = usize::try_from(encoding::decode_varint(&mut body).ok()?).ok()?;
    let raw = body.get(..len)?;
    let field = MEMO.with(|memo| memo.borrow().same(at, raw))?;
    buf.advance(chunk.len() - body.len() + len);
    Some(field)
}

thread_local! {
    static MEMO: RefCell<FieldMemo> = RefCell::new(FieldMemo::default());
}

impl Message for QueryResult {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for f in &self.fields {
            encoding::message::encode(FIELDS, f, buf);
        }
        if self.rows_affected != 0 {
            encoding::uint64::encode(ROWS_AFFECTED, &self.rows_affected, buf);
        }
        if self.insert_id != 0 {
            encoding::uint64::encode(INSERT_ID, &self.insert_id, buf);
        }
        for r in &self.rows {
            encoding::message::encode(ROWS, r, buf);
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
            FIELDS => {
                let at = self.fields.len();
                if at == 0 {
                    self.fields.reserve(MEMO.with(|m| m.borrow().known()));
                }
                if wire_type == WireType::LengthDelimited {
                    if let Some(field) = remembered(at, buf) {
                        self.fields.push(field);
                        return Ok(());
                    }
                }
                let mut raw = Bytes::new();
                encoding::bytes::merge(wire_type, &mut raw, buf, ctx)?;
                let field = MEMO.with(|memo| memo.borrow_mut().field(at, &raw))?;
                self.fields.push(field);
                Ok(())
            }
            ROWS_AFFECTED => encoding::uint64::merge(wire_type, &mut self.rows_affected, buf, ctx),
            INSERT_ID => encoding::uint64::merge(wire_type, &mut self.insert_id, buf, ctx),
            ROWS => {
                if wire_type == WireType::LengthDelimited {
                    if let Some(row) = super::row::take_plain(buf) {
                        self.rows.push(row);
                        return Ok(());
                    }
                }
                encoding::message::merge_repeated(wire_type, &mut self.rows, buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(FIELDS, &self.fields)
            + if self.rows_affected != 0 {
                encoding::uint64::encoded_len(ROWS_AFFECTED, &self.rows_affected)
            } else {
                0
            }
            + if self.insert_id != 0 {
                encoding::uint64::encoded_len(INSERT_ID, &self.insert_id)
            } else {
                0
            }
            + encoding::message::encoded_len_repeated(ROWS, &self.rows)
    }

    fn clear(&mut self) {
        *self = QueryResult::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::query::Type;

    /// prost's own encoding of `query.QueryResult` (fields and rows kept
    /// as raw messages), to hold ours to.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, repeated, tag = "1")]
        fields: Vec<Field>,
        #[prost(uint64, tag = "2")]
        rows_affected: u64,
        #[prost(uint64, tag = "3")]
        insert_id: u64,
        #[prost(message, repeated, tag = "4")]
        rows: Vec<Row>,
    }

    fn field(name: &'static str, ty: Type, flags: u32) -> Field {
        Field {
            name: Bytes::from_static(name.as_bytes()),
            r#type: ty as i32,
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn results_match_the_generated_encoding_and_repeated_fields_decode_the_same() {
        let a = Generated {
            fields: vec![field("id", Type::Int64, 1), field("v", Type::Varchar, 0)],
            rows_affected: 3,
            insert_id: 0,
            rows: vec![Row::from_cells([Some(&b"1"[..]), None])],
        };
        // Same names, another type and flags; then a shorter list.
        let b = Generated {
            fields: vec![field("id", Type::Int64, 1), field("v", Type::Blob, 128)],
            rows_affected: 0,
            insert_id: 9,
            rows: vec![],
        };
        let c = Generated {
            fields: vec![field("id", Type::Int32, 0)],
            ..b.clone()
        };
        for g in [&a, &a, &b, &c, &a] {
            let wire = g.encode_to_vec();
            let qr = QueryResult::decode(&wire[..]).expect("decodes");
            assert_eq!(qr.fields, g.fields);
            assert_eq!(qr.rows, g.rows);
            assert_eq!(
                (qr.rows_affected, qr.insert_id),
                (g.rows_affected, g.insert_id)
            );
            assert_eq!(qr.encode_to_vec(), wire);
            assert_eq!(qr.encoded_len(), wire.len());
        }
    }

    #[test]
    fn a_malformed_field_is_a_decode_error() {
        // field 1 holding a Field whose name runs past the message
        let wire = [0x0a, 0x03, 0x0a, 0x09, b'x'];
        assert!(QueryResult::decode(&wire[..]).is_err());
    }
}
