//! `query.Row`, decoded by hand: a row of a query result as it travels.
//!
//! Every copied row and every row change arrives as one `query.Row`: a
//! packed list of cell lengths (zigzag varints, -1 for NULL) and the cells'
//! bytes run together. prost's generated type decodes the lengths into a
//! fresh `Vec<i64>`, which grows three times for a ten-column row: about a
//! tenth of the copy's instructions went to that allocation alone. This
//! type keeps both members as slices of the receive buffer (no allocation,
//! no copy) and reads the lengths when the row is converted.
//!
//! The lengths are read once, by [`Cells`], which checks them as it goes:
//! well-formed varints, one per field, and exactly the row's bytes. The
//! converter writes a record while reading its cells and drops what it
//! wrote when the row turns out malformed, so a bad row is still an error
//! with no half-written output. (A separate pass over the lengths while
//! decoding, to check them up front, was a twentieth of a copy's
//! instructions.) [`Row::problem`] says what is wrong, for the error.
//!
//! prost uses this type for `query.Row` wherever the protos name it
//! (`extern_path` in `build.rs`), so the wire is unchanged both ways: rows
//! re-encode (a copy's `last_known_pk` goes back to the server) exactly as
//! the generated type would write them.

use std::ops::Range;

use prost::bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

const LENGTHS: u32 = 1;
const VALUES: u32 = 2;

/// One row: cell lengths (packed zigzag varints) and cell bytes, as two
/// ranges of one buffer: a decoded row's whole body, sliced off the receive
/// buffer once (each slice is a reference count taken and dropped).
#[derive(Clone, Default)]
pub struct Row {
    buf: Bytes,
    lengths: Range<usize>,
    values: Range<usize>,
}

impl PartialEq for Row {
    fn eq(&self, other: &Row) -> bool {
        self.packed() == other.packed() && self.values() == other.values()
    }
}

impl Eq for Row {}

impl std::hash::Hash for Row {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.packed().hash(state);
        self.values().hash(state);
    }
}

impl Row {
    /// A row of these cells (`None` for NULL).
    pub fn from_cells<'a>(cells: impl IntoIterator<Item = Option<&'a [u8]>>) -> Row {
        let mut lengths = Vec::new();
        let mut values = Vec::new();
        for cell in cells {
            match cell {
                None => lengths.push(-1),
                Some(b) => {
                    lengths.push(b.len() as i64);
                    values.extend_from_slice(b);
                }
            }
        }
        Row::new(&lengths, values.into())
    }

    /// A row of raw parts, as a server might send them, even inconsistent
    /// ones (tests of malformed rows need those).
    pub fn new(lengths: &[i64], values: Bytes) -> Row {
        let mut packed = Vec::with_capacity(lengths.len());
        for &l in lengths {
            encoding::encode_varint(zigzag(l), &mut packed);
        }
        Row::joined(&packed, &values)
    }

    /// A row that owns its members, copied into one buffer.
    fn joined(packed: &[u8], values: &[u8]) -> Row {
        let mut buf = BytesMut::with_capacity(packed.len() + values.len());
        buf.extend_from_slice(packed);
        buf.extend_from_slice(values);
        Row {
            buf: buf.freeze(),
            lengths: 0..packed.len(),
            values: packed.len()..packed.len() + values.len(),
        }
    }

    /// The packed lengths.
    fn packed(&self) -> &[u8] {
        self.buf.get(self.lengths.clone()).unwrap_or_default()
    }

    /// A copy that owns its bytes: the decoded row's slices would keep the
    /// whole receive buffer alive for as long as the row lives.
    pub fn owned(&self) -> Row {
        Row::joined(self.packed(), self.values())
    }

    /// The cells' bytes, run together.
    pub fn values(&self) -> &[u8] {
        self.buf.get(self.values.clone()).unwrap_or_default()
    }

    /// The cells, read off the lengths with every check (see the module
    /// doc).
    #[inline(always)]
    pub fn cells(&self) -> Cells<'_> {
        Cells {
            packed: self.packed(),
            values: self.values(),
            offset: 0,
        }
    }

    /// The cell lengths, -1 (or any negative) for NULL, up to the first
    /// malformed one.
    pub fn lengths(&self) -> Lengths<'_> {
        Lengths {
            packed: self.packed(),
        }
    }

    /// What keeps this row from being read as `width` cells, if anything:
    /// for the error that names a malformed row.
    #[cold]
    pub fn problem(&self, width: usize) -> Option<String> {
        let mut rest: &[u8] = self.packed();
        let (mut count, mut claimed) = (0usize, 0u64);
        while let Some(l) = next_length(&mut rest) {
            let Ok(l) = l else {
                return Some(format!(
                    "cell length {} is not a well-formed varint",
                    count + 1
                ));
            };
            count += 1;
            if l > 0 {
                claimed = claimed.saturating_add(l as u64);
            }
        }
        if count != width {
            return Some(format!("{count} lengths for {width} fields"));
        }
        let held = self.values().len() as u64;
        if claimed != held {
            let claimed = if claimed == u64::MAX {
                "overflow".to_string()
            } else {
                claimed.to_string()
            };
            return Some(format!(
                "lengths add up to {claimed} bytes but the row holds {held}"
            ));
        }
        None
    }

    /// Appends packed lengths: proto3 concatenates repeated members that
    /// arrive in several pieces. (Rare: copies the row.)
    fn add_lengths(&mut self, more: &[u8]) {
        let packed = [self.packed(), more].concat();
        *self = Row::joined(&packed, self.values());
    }

    /// Replaces the values: the last of a bytes member that arrives more
    /// than once is the one that counts. (Rare: copies the row.)
    fn set_values(&mut self, values: &[u8]) {
        *self = Row::joined(self.packed(), values);
    }
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("lengths", &self.lengths().collect::<Vec<_>>())
            .field("values", &Bytes::copy_from_slice(self.values()))
            .finish()
    }
}

/// The lengths of a row, read from its checked packed varints.
pub struct Lengths<'a> {
    packed: &'a [u8],
}

impl Iterator for Lengths<'_> {
    type Item = i64;

    #[inline(always)]
    fn next(&mut self) -> Option<i64> {
        next_length(&mut self.packed)?.ok()
    }
}

/// A row's cells in order, each checked as it is read: a length that is
/// not a well-formed varint, or that runs past the row's bytes, is an
/// error, and so are lengths or bytes left over at the end ([`Cells::end`]).
pub struct Cells<'a> {
    packed: &'a [u8],
    values: &'a [u8],
    offset: usize,
}

/// A row whose lengths do not fit it; [`Row::problem`] says how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl<'a> Cells<'a> {
    /// The next cell, `None` for NULL.
    #[inline(always)]
    pub fn next_cell(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        let len = match next_length(&mut self.packed) {
            Some(Ok(len)) => len,
            _ => return Err(Malformed),
        };
        if len < 0 {
            return Ok(None);
        }
        // No overflow: `offset` is at most the row's length and `len`
        // below 2^63.
        let end = self.offset + len as usize;
        let cell = self.values.get(self.offset..end).ok_or(Malformed)?;
        self.offset = end;
        Ok(Some(cell))
    }

    /// Whether every length and every byte was read.
    #[inline(always)]
    pub fn end(&self) -> Result<(), Malformed> {
        if self.packed.is_empty() && self.offset == self.values.len() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }
}

/// Reads one length off packed zigzag varints; `None` at their end.
/// Inlined into the loops over a row's lengths (one call per cell cost
/// more than the decoding).
#[inline(always)]
fn next_length(packed: &mut &[u8]) -> Option<Result<i64, DecodeError>> {
    let bytes: &[u8] = packed;
    match bytes {
        [] => None,
        // One byte covers every length up to 63 and NULL; two up to 8191.
        [a, rest @ ..] if *a < 0x80 => {
            *packed = rest;
            Some(Ok(unzigzag(u64::from(*a))))
        }
        [a, b, rest @ ..] if *b < 0x80 => {
            *packed = rest;
            Some(Ok(unzigzag(u64::from(a & 0x7f) | u64::from(*b) << 7)))
        }
        _ => Some(encoding::decode_varint(packed).map(unzigzag)),
    }
}

/// Where a row's two members lie in its encoded body, when it is in the
/// plain form every server sends: the packed lengths (if any), then the
/// values (if any), each once.
struct Shape {
    /// Bytes before the lengths, the lengths, bytes between them and the
    /// values, the values.
    steps: [usize; 4],
}

impl Shape {
    /// The shape of `body`, a row's encoded members; `None` for any other
    /// form (members out of order, repeated, unknown or of another wire
    /// type), which prost's field loop then decodes.
    fn of(body: &[u8]) -> Option<Shape> {
        let mut rest = body;
        let mut steps = [0; 4];
        for (tag, at) in [(LENGTHS, 0), (VALUES, 2)] {
            let key = (tag << 3) | WireType::LengthDelimited as u32;
            let Some(after_key) = rest.strip_prefix(&[key as u8]) else {
                continue;
            };
            let mut data = after_key;
            let len = usize::try_from(varint(&mut data)?).ok()?;
            data.get(..len)?;
            // The key and the length prefix, then the member itself.
            steps[at] = rest.len() - data.len();
            steps[at + 1] = len;
            rest = &data[len..];
        }
        rest.is_empty().then_some(Shape { steps })
    }

    /// Takes the row off `buf`, which starts at the body this shape was
    /// read from: one slice of `buf` where it is a `Bytes` (no copy).
    fn take(&self, buf: &mut impl Buf) -> Row {
        let [to_lengths, lengths, to_values, values] = self.steps;
        let values_at = to_lengths + lengths + to_values;
        Row::from_body(
            buf.copy_to_bytes(values_at + values),
            to_lengths..to_lengths + lengths,
            values_at..values_at + values,
        )
    }
}

/// A varint off the front of `bytes`, the one- and two-byte cases inline
/// (every key, and the length of anything under 16 KiB).
#[inline(always)]
pub(crate) fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let all: &[u8] = bytes;
    match all {
        [a, rest @ ..] if *a < 0x80 => {
            *bytes = rest;
            Some(u64::from(*a))
        }
        [a, b, rest @ ..] if *b < 0x80 => {
            *bytes = rest;
            Some(u64::from(a & 0x7f) | u64::from(*b) << 7)
        }
        _ => encoding::decode_varint(bytes).ok(),
    }
}

/// Where the packed lengths and the values lie in `body`, a row's encoded
/// members, when it is in the plain form (see [`Shape`]); `None` for any
/// other form.
pub(crate) fn plain_parts(body: &[u8]) -> Option<(Range<usize>, Range<usize>)> {
    let [to_lengths, lengths, to_values, values] = Shape::of(body)?.steps;
    let values_at = to_lengths + lengths + to_values;
    Some((
        to_lengths..to_lengths + lengths,
        values_at..values_at + values,
    ))
}

impl Row {
    /// A row of its encoded body as it was sliced off the wire, and where
    /// its two members lie in it (as [`plain_parts`] found them).
    pub(crate) fn from_body(buf: Bytes, lengths: Range<usize>, values: Range<usize>) -> Row {
        Row {
            buf,
            lengths,
            values,
        }
    }
}

/// The row at the front of `buf` (its length prefix, then its body, all in
/// the current chunk) in the plain form, taken without prost's field loop:
/// a tenth of the instructions of a copied row went to that loop. `None`
/// leaves `buf` untouched for the generic decode.
pub(crate) fn take_plain(buf: &mut impl Buf) -> Option<Row> {
    let chunk = buf.chunk();
    let mut body = chunk;
    let len = usize::try_from(varint(&mut body)?).ok()?;
    let shape = Shape::of(body.get(..len)?)?;
    buf.advance(chunk.len() - body.len());
    Some(shape.take(buf))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl prost::Message for Row {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (tag, member) in [(LENGTHS, self.packed()), (VALUES, self.values())] {
            if !member.is_empty() {
                encoding::encode_key(tag, WireType::LengthDelimited, buf);
                encoding::encode_varint(member.len() as u64, buf);
                buf.put_slice(member);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match (tag, wire_type) {
            // An unpacked element: legal, if no server here sends it.
            (LENGTHS, WireType::Varint) => {
                let mut one = Vec::with_capacity(10);
                encoding::encode_varint(encoding::decode_varint(buf)?, &mut one);
                self.add_lengths(&one);
                Ok(())
            }
            (LENGTHS, _) => {
                let mut packed = Bytes::new();
                encoding::bytes::merge(wire_type, &mut packed, buf, ctx)?;
                self.add_lengths(&packed);
                Ok(())
            }
            (VALUES, _) => {
                let mut values = Bytes::new();
                encoding::bytes::merge(wire_type, &mut values, buf, ctx)?;
                self.set_values(&values);
                Ok(())
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let member = |tag: u32, len: usize| {
            if len == 0 {
                0
            } else {
                encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
            }
        };
        member(LENGTHS, self.packed().len()) + member(VALUES, self.values().len())
    }

    fn clear(&mut self) {
        *self = Row::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// prost's own encoding of `query.Row`, to hold ours to.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(sint64, repeated, tag = "1")]
        lengths: Vec<i64>,
        #[prost(bytes = "vec", tag = "2")]
        values: Vec<u8>,
    }

    #[test]
    fn rows_round_trip_against_the_generated_encoding() {
        let cases: &[(&[i64], &[u8])] = &[
            (&[], b""),
            (&[-1], b""),
            (&[1, -1, 2], b"abc"),
            (&[0, 0], b""),
            (&[300, -1], &[b'x'; 300]),
            (&[i64::MAX, i64::MIN, -2], b""),
            // the one- and two-byte fast paths' edges
            (&[63, 64, 8191, 8192, -64, -65, -4096, -4097, 1 << 20], b""),
        ];
        for (lengths, values) in cases {
            let generated = Generated {
                lengths: lengths.to_vec(),
                values: values.to_vec(),
            };
            let wire = generated.encode_to_vec();
            let row = Row::decode(&wire[..]).expect("decodes");
            assert_eq!(row.lengths().collect::<Vec<_>>(), *lengths, "{lengths:?}");
            assert_eq!(row.values(), *values);
            assert_eq!(row.encode_to_vec(), wire, "re-encodes the same");
            assert_eq!(row.encoded_len(), wire.len());
            assert_eq!(Row::new(lengths, Bytes::copy_from_slice(values)), row);
        }
    }

    type CellsRead = Vec<Option<Vec<u8>>>;

    /// Reads every cell of `row` as the converter does, as `width` cells.
    fn read(row: &Row, width: usize) -> Result<CellsRead, Malformed> {
        let mut cells = row.cells();
        let got = (0..width)
            .map(|_| cells.next_cell().map(|c| c.map(<[u8]>::to_vec)))
            .collect::<Result<Vec<_>, _>>()?;
        cells.end()?;
        Ok(got)
    }

    #[test]
    fn cells_are_read_with_every_check_and_problems_named() {
        let b = |s: &[u8]| Some(s.to_vec());
        type Case<'a> = (&'a [i64], &'a [u8], usize, Result<CellsRead, &'a str>);
        let cases: &[Case] = &[
            (&[], b"", 0, Ok(vec![])),
            (
                &[2, -1, 3, 0],
                b"abcde",
                4,
                Ok(vec![b(b"ab"), None, b(b"cde"), b(b"")]),
            ),
            (&[1], b"x", 2, Err("1 lengths for 2 fields")),
            (&[1, 1], b"xy", 1, Err("2 lengths for 1 fields")),
            (
                &[5, 1],
                b"abc",
                2,
                Err("lengths add up to 6 bytes but the row holds 3"),
            ),
            (
                &[1, 1],
                b"abcdef",
                2,
                Err("lengths add up to 2 bytes but the row holds 6"),
            ),
            (
                &[i64::MAX, i64::MAX, 2],
                b"ab",
                3,
                Err("lengths add up to overflow bytes"),
            ),
        ];
        for (lengths, values, width, want) in cases {
            let row = Row::new(lengths, Bytes::copy_from_slice(values));
            match want {
                Ok(cells) => {
                    assert_eq!(read(&row, *width).as_ref(), Ok(cells), "{lengths:?}");
                    assert_eq!(row.problem(*width), None);
                }
                Err(text) => {
                    assert_eq!(read(&row, *width), Err(Malformed), "{lengths:?}");
                    let problem = row.problem(*width).expect("a problem");
                    assert!(problem.starts_with(text), "{problem}");
                }
            }
        }
    }

    #[test]
    fn unpacked_and_split_lengths_concatenate() {
        // lengths 1 and 2 as two unpacked elements, then packed [-1].
        let wire = [
            0x08, 0x02, 0x08, 0x04, 0x0a, 0x01, 0x01, 0x12, 0x03, b'a', b'b', b'c',
        ];
        let row = Row::decode(&wire[..]).expect("decodes");
        assert_eq!(row.lengths().collect::<Vec<_>>(), vec![1, 2, -1]);
        assert_eq!(row.values(), b"abc");
        assert_eq!(row.problem(3), None);
    }

    #[test]
    fn malformed_messages_are_decode_errors() {
        let cases: &[&[u8]] = &[
            // values longer than the message
            &[0x12, 0x05, b'a'],
            // values as a varint
            &[0x10, 0x01],
        ];
        for wire in cases {
            assert!(Row::decode(*wire).is_err(), "{wire:?}");
        }
    }

    #[test]
    fn malformed_lengths_are_found_when_the_cells_are_read() {
        let cases: &[&[u8]] = &[
            // packed lengths cut inside a varint
            &[0x0a, 0x01, 0x80],
            // an eleven-byte varint
            &[
                0x0a, 0x0b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            // a tenth byte past 64 bits
            &[
                0x0a, 0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            // one good length (1), then a cut one
            &[0x0a, 0x02, 0x02, 0x80, 0x12, 0x01, b'a'],
        ];
        for wire in cases {
            let row = Row::decode(*wire).expect("the message itself is whole");
            for width in 0..3 {
                assert_eq!(read(&row, width), Err(Malformed), "{wire:?} as {width}");
                let problem = row.problem(width).expect("a problem");
                assert!(problem.contains("not a well-formed varint"), "{problem}");
            }
        }
    }

    #[test]
    fn varints_read_as_prost_reads_them() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 35, u64::MAX] {
            let mut wire = Vec::new();
            encoding::encode_varint(v, &mut wire);
            wire.push(0x55);
            let mut rest = &wire[..];
            assert_eq!(varint(&mut rest), Some(v));
            assert_eq!(rest, [0x55], "{v}: takes exactly the varint");
            // Cut anywhere inside, it is no varint.
            for end in 0..wire.len() - 1 {
                assert_eq!(varint(&mut &wire[..end]), None, "{v} cut at {end}");
            }
        }
    }

    #[test]
    fn unknown_members_are_skipped() {
        let wire = [0x18, 0x07, 0x0a, 0x01, 0x02, 0x12, 0x01, b'z'];
        let row = Row::decode(&wire[..]).expect("decodes");
        assert_eq!(row.lengths().collect::<Vec<_>>(), vec![1]);
        assert_eq!(row.values(), b"z");
    }

    /// A row's body behind its length prefix, as a result carries it.
    fn prefixed(body: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        encoding::encode_varint(body.len() as u64, &mut buf);
        buf.extend_from_slice(body);
        buf.extend_from_slice(b"next");
        buf.freeze()
    }

    #[test]
    fn the_plain_path_decodes_as_prost_does_and_leaves_other_forms_to_it() {
        let plain: Vec<Vec<u8>> = [
            (&[][..], &b""[..]),
            (&[-1], b""),
            (&[1, -1, 2], b"abc"),
            (&[300, -1], &[b'x'; 300]),
        ]
        .iter()
        .map(|(l, v)| {
            Generated {
                lengths: l.to_vec(),
                values: v.to_vec(),
            }
            .encode_to_vec()
        })
        .chain([
            // values alone, lengths alone
            vec![0x12, 0x01, b'z'],
            vec![0x0a, 0x01, 0x02],
        ])
        .collect();
        for body in &plain {
            let mut buf = prefixed(body);
            let row = take_plain(&mut buf).expect("plain form");
            assert_eq!(
                row,
                Row::decode(&body[..]).expect("prost decodes"),
                "{body:?}"
            );
            assert_eq!(&buf[..], b"next", "takes exactly the row");
        }
        let other: &[&[u8]] = &[
            // values before lengths, repeated lengths, an unknown member,
            // unpacked lengths
            &[0x12, 0x01, b'z', 0x0a, 0x01, 0x02],
            &[0x0a, 0x01, 0x02, 0x0a, 0x01, 0x02],
            &[0x18, 0x07, 0x0a, 0x01, 0x02],
            &[0x08, 0x02],
            // a member longer than the row
            &[0x12, 0x05, b'a'],
        ];
        for body in other {
            let mut buf = prefixed(body);
            assert!(take_plain(&mut buf).is_none(), "{body:?}");
            assert_eq!(buf, prefixed(body), "left untouched");
        }
        // Malformed lengths in the plain form are kept as prost's decode
        // keeps them, for the reading of the cells to refuse.
        let mut buf = prefixed(&[0x0a, 0x01, 0x80]);
        let row = take_plain(&mut buf).expect("plain form");
        assert_eq!(row, Row::decode(&[0x0a, 0x01, 0x80][..]).expect("decodes"));
    }

    #[test]
    fn owned_rows_equal_their_source() {
        let row = Row::from_cells([Some(&b"ab"[..]), None, Some(b"")]);
        assert_eq!(row.owned(), row);
        assert_eq!(row.lengths().collect::<Vec<_>>(), vec![2, -1, 0]);
    }
}
