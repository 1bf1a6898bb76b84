//! `vtgate.VStreamResponse` as a VStream session reads it: the events in
//! order, with the rows of plain ROW events taken out of them.
//!
//! A copy over VStream sends each row as its own ROW event: a `VEvent`
//! holding a `RowEvent` holding a `RowChange` holding the row, four nested
//! messages and some twenty members a row, where the Connect API sends a
//! row as one message of two. Decoded into the generated shape, every row
//! built a 350-byte event, sliced the event's keyspace, shard and table
//! name off the buffer (an atomic reference count apiece, taken and
//! dropped), and moved the change out again. Here an event in the plain
//! form every server sends is read straight off the buffer: its row images
//! become [`Row`]s, sliced off the buffer as rows are everywhere, and the event
//! itself is only counted: the rows of consecutive ROW events of one table
//! and one kind of change gather in one [`Run`], whose vector the session
//! hands on whole as a query result (no row moved again). Any other event,
//! and any ROW event in another form (a
//! partial image's bitmaps, members repeated or out of order, another wire
//! type), is decoded by prost as before, so nothing a server may send is
//! read differently; the tests hold the two paths to each other.
//!
//! The full type, [`super::vstream_response::VStreamResponse`], stays for
//! the position peek and for tests that look at every event.

use std::cell::Cell;
use std::ops::Range;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use smallvec::SmallVec;

use crate::pb::binlogdata::{RowChange, VEvent, VEventType};
use crate::wire::row::{plain_parts, varint, Row};
use crate::wire::row_event::RowEvent;

const EVENTS: u32 = 1;
/// `VEvent` members.
const EVENT_TYPE: u32 = 1;
const ROW_EVENT: u32 = 5;
/// `RowEvent` members.
const TABLE_NAME: u32 = 1;
const ROW_CHANGES: u32 = 2;
/// `RowChange` members: the two images, then the bitmaps of a partial one.
const BEFORE: u32 = 1;
const AFTER: u32 = 2;
const DATA_COLUMNS: u32 = 3;
const JSON_PARTIAL_VALUES: u32 = 4;

/// A room no run needs, however large the last one was.
const MAX_RESERVE: usize = 4096;

thread_local! {
    /// The longest run this thread has read, to size the next: runs of a
    /// stream are alike, and a vector grown row by row copies its rows
    /// over and over.
    static LAST_RUN: Cell<usize> = const { Cell::new(0) };
}

/// What a row change did, told by which images it carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RowKind {
    /// An after-image only: a new row, or a copied one.
    Insert,
    /// Both images.
    Update,
    /// A before-image only.
    Delete,
}

/// The changes of consecutive plain ROW events of one table and one kind.
#[derive(Clone, PartialEq, Debug)]
pub struct Run {
    pub table: Bytes,
    pub kind: RowKind,
    /// The image the tap reads of each change: the after-image of an insert
    /// or an update, the before-image of a delete.
    pub rows: Vec<Row>,
    /// An update's before-images, in step with `rows` (empty for the other
    /// kinds).
    pub befores: Vec<Row>,
}

/// An event of a response, in order.
#[derive(Clone, PartialEq, Debug)]
pub enum Event {
    /// A run of plain ROW events.
    Rows(Run),
    /// Any other event, as prost decodes it (boxed: a few a transaction,
    /// where a run may stand for thousands of rows).
    Other(Box<VEvent>),
}

/// One response of a VStream.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct VStreamBatch {
    pub events: Vec<Event>,
}

impl From<Vec<VEvent>> for VStreamBatch {
    /// Events as they are, none taken apart.
    fn from(events: Vec<VEvent>) -> VStreamBatch {
        VStreamBatch {
            events: events
                .into_iter()
                .map(|e| Event::Other(Box::new(e)))
                .collect(),
        }
    }
}

/// A member of a message: its number and its value, for the two wire
/// types a plain event uses.
enum Member<'a> {
    Varint(u64),
    Delimited(&'a [u8]),
}

/// The member at the front of `rest`; `None` for another wire type or a
/// malformed one, which the plain path leaves to prost.
#[inline(always)]
fn member<'a>(rest: &mut &'a [u8]) -> Option<(u32, Member<'a>)> {
    let key = varint(rest)?;
    let tag = u32::try_from(key >> 3).ok().filter(|t| *t != 0)?;
    match key & 7 {
        0 => Some((tag, Member::Varint(varint(rest)?))),
        2 => {
            let len = usize::try_from(varint(rest)?).ok()?;
            let (body, tail) = rest.split_at_checked(len)?;
            *rest = tail;
            Some((tag, Member::Delimited(body)))
        }
        _ => None,
    }
}

/// Where `part`, a slice of `base`, starts in it.
fn offset(base: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - base.as_ptr() as usize
}

/// A row image's two members, as ranges of the chunk.
type Parts = (Range<usize>, Range<usize>);

/// A plain ROW event found at the front of a chunk: where its pieces lie,
/// in the order they come.
struct Plain {
    /// The event's bytes, its length prefix included.
    len: usize,
    table: Range<usize>,
    /// Each change's before- and after-image, at least one of them.
    changes: SmallVec<[[Option<Parts>; 2]; 1]>,
}

impl Plain {
    /// Reads the event at the front of `chunk` if it is a plain ROW event:
    /// its type ROW, one row event whose table name comes before its
    /// changes, each change's images in order, unrepeated and in the plain
    /// row form, with no bitmap. Members the tap does not read (the
    /// event's keyspace, shard and times, the row event's flags) may come
    /// anywhere and are skipped.
    fn read(chunk: &[u8]) -> Option<Plain> {
        let mut rest = chunk;
        let len = usize::try_from(varint(&mut rest)?).ok()?;
        let mut body = rest.get(..len)?;
        let len = offset(chunk, body) + len;
        let (mut is_row, mut row_event) = (false, None);
        while !body.is_empty() {
            match member(&mut body)? {
                (EVENT_TYPE, Member::Varint(t)) if t == VEventType::Row as u64 => is_row = true,
                (EVENT_TYPE, _) => return None,
                (ROW_EVENT, Member::Delimited(re)) if row_event.is_none() => row_event = Some(re),
                (ROW_EVENT, _) => return None,
                _ => {}
            }
        }
        let mut re = row_event.filter(|_| is_row)?;
        let (mut table, mut changes) = (None, SmallVec::new());
        while !re.is_empty() {
            match member(&mut re)? {
                (TABLE_NAME, Member::Delimited(name)) if table.is_none() && changes.is_empty() => {
                    let at = offset(chunk, name);
                    table = Some(at..at + name.len());
                }
                (ROW_CHANGES, Member::Delimited(change)) if table.is_some() => {
                    changes.push(Self::change(chunk, change)?)
                }
                (TABLE_NAME | ROW_CHANGES, _) => return None,
                _ => {}
            }
        }
        Some(Plain {
            len,
            table: table?,
            changes,
        })
    }

    /// A change's images, before then after, each at most once, and not
    /// neither (a change of no image, which no server sends, is left to
    /// the generic path).
    fn change(chunk: &[u8], mut change: &[u8]) -> Option<[Option<Parts>; 2]> {
        let mut images: [Option<Parts>; 2] = [None, None];
        while !change.is_empty() {
            match member(&mut change)? {
                (tag @ (BEFORE | AFTER), Member::Delimited(row)) => {
                    let i = (tag - BEFORE) as usize;
                    if images[i..].iter().any(Option::is_some) {
                        return None;
                    }
                    let (lengths, values) = plain_parts(row)?;
                    let at = offset(chunk, row);
                    images[i] = Some((
                        at + lengths.start..at + lengths.end,
                        at + values.start..at + values.end,
                    ));
                }
                (BEFORE | AFTER | DATA_COLUMNS | JSON_PARTIAL_VALUES, _) => return None,
                _ => {}
            }
        }
        images.iter().any(Option::is_some).then_some(images)
    }
}

/// Takes pieces off a buffer by their ranges in its first chunk, in order:
/// each a slice of the buffer where it is a `Bytes` (no copy).
struct Taker<'b, B> {
    buf: &'b mut B,
    at: usize,
}

impl<B: Buf> Taker<'_, B> {
    fn take(&mut self, range: Range<usize>) -> Bytes {
        self.buf.advance(range.start - self.at);
        self.at = range.end;
        self.buf.copy_to_bytes(range.len())
    }

    /// A row image's body, from its lengths to the end of its values, as
    /// one slice.
    fn row(&mut self, parts: Option<Parts>) -> Option<Row> {
        let (lengths, values) = parts?;
        let start = lengths.start;
        let body = self.take(start..values.end);
        Some(Row::from_body(
            body,
            0..lengths.len(),
            values.start - start..values.end - start,
        ))
    }
}

impl VStreamBatch {
    /// Takes the event at the front of `buf` if it is a plain ROW event
    /// (see [`Plain::read`]); `false` leaves `buf` untouched.
    fn take_plain(&mut self, buf: &mut impl Buf) -> bool {
        let chunk = buf.chunk();
        let Some(plain) = Plain::read(chunk) else {
            return false;
        };
        let same_table = matches!(
            self.events.last(),
            Some(Event::Rows(run)) if run.table[..] == chunk[plain.table.clone()]
        );
        let mut taker = Taker { buf, at: 0 };
        // `None`: the table of the last run, not sliced again.
        let table = (!same_table).then(|| taker.take(plain.table));
        for [before, after] in plain.changes {
            let change = (taker.row(before), taker.row(after));
            let (kind, kept, before) = match change {
                (None, Some(a)) => (RowKind::Insert, a, None),
                (Some(b), Some(a)) => (RowKind::Update, a, Some(b)),
                (Some(b), None) => (RowKind::Delete, b, None),
                // Not a plain change (`Plain::change`).
                (None, None) => continue,
            };
            self.push_row(table.as_ref(), kind, kept, before);
        }
        let rest = plain.len - taker.at;
        taker.buf.advance(rest);
        true
    }

    /// Adds a change to the last run if it is of its table (`None`: it
    /// is) and kind, else to a new run.
    fn push_row(&mut self, table: Option<&Bytes>, kind: RowKind, kept: Row, before: Option<Row>) {
        if let Some(Event::Rows(run)) = self.events.last_mut() {
            if run.kind == kind && table.is_none_or(|t| *t == run.table) {
                run.rows.push(kept);
                run.befores.extend(before);
                return;
            }
        }
        let table = match (table, self.events.last()) {
            (Some(t), _) => t.clone(),
            (None, Some(Event::Rows(run))) => run.table.clone(),
            // `None` only follows a run.
            (None, _) => Bytes::new(),
        };
        let mut rows = Vec::with_capacity(LAST_RUN.with(Cell::get));
        rows.push(kept);
        self.events.push(Event::Rows(Run {
            table,
            kind,
            rows,
            befores: before.into_iter().collect(),
        }));
    }

    /// The events in the generated shape, each run of rows one ROW event a
    /// change again (the members skipped on the way in left out).
    pub fn to_events(&self) -> Vec<VEvent> {
        let mut out = Vec::with_capacity(self.events.len());
        for ev in &self.events {
            let run = match ev {
                Event::Other(ev) => {
                    out.push(VEvent::clone(ev));
                    continue;
                }
                Event::Rows(run) => run,
            };
            let mut befores = run.befores.iter();
            for row in &run.rows {
                let (before, after) = match run.kind {
                    RowKind::Insert => (None, Some(row.clone())),
                    RowKind::Update => (befores.next().cloned(), Some(row.clone())),
                    RowKind::Delete => (Some(row.clone()), None),
                };
                out.push(VEvent {
                    r#type: VEventType::Row as i32,
                    row_event: Some(RowEvent {
                        table_name: run.table.clone(),
                        row_changes: [RowChange {
                            before,
                            after,
                            ..RowChange::default()
                        }]
                        .into_iter()
                        .collect(),
                        flags: 0,
                    }),
                    ..VEvent::default()
                });
            }
        }
        out
    }
}

impl Message for VStreamBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for ev in self.to_events() {
            encoding::message::encode(EVENTS, &ev, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != EVENTS {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        if wire_type == WireType::LengthDelimited && self.take_plain(buf) {
            if let Some(Event::Rows(run)) = self.events.last() {
                LAST_RUN.with(|c| c.set(c.get().max(run.rows.len()).min(MAX_RESERVE)));
            }
            return Ok(());
        }
        let mut ev = VEvent::default();
        encoding::message::merge(wire_type, &mut ev, buf, ctx)?;
        self.events.push(Event::Other(Box::new(ev)));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(EVENTS, &self.to_events())
    }

    fn clear(&mut self) {
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::binlogdata::{Bitmap, FieldEvent};
    use crate::wire::vstream_response::VStreamResponse;

    fn row(cells: &[&str]) -> Row {
        Row::from_cells(cells.iter().map(|c| Some(c.as_bytes())))
    }

    fn row_event(table: &str, changes: Vec<RowChange>) -> VEvent {
        VEvent {
            r#type: VEventType::Row as i32,
            row_event: Some(RowEvent {
                table_name: Bytes::copy_from_slice(table.as_bytes()),
                row_changes: changes.into_iter().collect(),
                flags: 0,
            }),
            ..VEvent::default()
        }
    }

    fn change(before: Option<&[&str]>, after: Option<&[&str]>) -> RowChange {
        RowChange {
            before: before.map(row),
            after: after.map(row),
            ..RowChange::default()
        }
    }

    fn other(kind: VEventType) -> VEvent {
        VEvent {
            r#type: kind as i32,
            ..VEvent::default()
        }
    }

    /// The events with each ROW event of several changes split into one a
    /// change (none for none), the form [`VStreamBatch::to_events`] gives.
    fn one_change_each(events: Vec<VEvent>) -> Vec<VEvent> {
        let mut out = Vec::new();
        for ev in events {
            match (&ev.row_event, ev.r#type == VEventType::Row as i32) {
                (Some(re), true) if re.row_changes.iter().all(|c| c.data_columns.is_none()) => {
                    for c in &re.row_changes {
                        out.push(row_event(
                            std::str::from_utf8(&re.table_name).expect("utf8"),
                            vec![c.clone()],
                        ));
                    }
                }
                _ => out.push(ev),
            }
        }
        out
    }

    /// Decodes `events` sent as one response both ways.
    fn both_ways(events: &[VEvent]) -> (VStreamBatch, Vec<VEvent>) {
        let wire = VStreamResponse {
            events: events.to_vec(),
        }
        .encode_to_vec();
        let batch = VStreamBatch::decode(&wire[..]).expect("batch decodes");
        let full = VStreamResponse::decode(&wire[..]).expect("full decode");
        (batch, full.events)
    }

    #[test]
    fn plain_rows_are_taken_out_and_every_event_reads_as_prost_reads_it() {
        let insert = change(None, Some(&["1", "a"]));
        let update = change(Some(&["1", "a"]), Some(&["1", "b"]));
        let delete = change(Some(&["1", "b"]), None);
        let partial = RowChange {
            data_columns: Some(Box::new(Bitmap {
                count: 2,
                cols: vec![1],
            })),
            ..insert.clone()
        };
        let field = VEvent {
            field_event: Some(Box::new(FieldEvent {
                table_name: "t".into(),
                ..FieldEvent::default()
            })),
            ..other(VEventType::Field)
        };
        let events = vec![
            other(VEventType::Begin),
            field,
            row_event("t", vec![insert.clone()]),
            row_event("t", vec![update.clone(), delete.clone()]),
            row_event("u", vec![insert.clone()]),
            row_event("u", vec![change(None, None)]),
            // a partial image goes the generic way, and ends the run
            row_event("u", vec![partial]),
            row_event("u", vec![insert.clone()]),
            row_event("t", vec![]),
            other(VEventType::Commit),
        ];
        let (batch, full) = both_ways(&events);
        assert_eq!(
            batch.to_events(),
            one_change_each(full),
            "the same events, in order"
        );
        let runs: Vec<(&[u8], RowKind, usize)> = batch
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Rows(run) => Some((&run.table[..], run.kind, run.rows.len())),
                Event::Other(_) => None,
            })
            .collect();
        use RowKind::*;
        assert_eq!(
            runs,
            vec![
                (&b"t"[..], Insert, 1),
                (b"t", Update, 1),
                (b"t", Delete, 1),
                (b"u", Insert, 1),
                (b"u", Insert, 1)
            ],
            "runs of one table and kind"
        );
        // BEGIN, FIELD, the change of no image, the partial one, COMMIT
        assert_eq!(batch.events.len(), 5 + 5);
    }

    #[test]
    fn runs_gather_the_rows_of_one_table_and_kind() {
        let events: Vec<VEvent> = (0..5)
            .map(|i| row_event("t", vec![change(None, Some(&[&i.to_string()]))]))
            .chain([row_event(
                "t",
                vec![
                    change(Some(&["1"]), Some(&["2"])),
                    change(Some(&["3"]), Some(&["4"])),
                ],
            )])
            .collect();
        let (batch, full) = both_ways(&events);
        let [Event::Rows(inserts), Event::Rows(updates)] = &batch.events[..] else {
            panic!("two runs: {batch:?}");
        };
        assert_eq!((inserts.kind, inserts.rows.len()), (RowKind::Insert, 5));
        assert!(inserts.befores.is_empty());
        assert_eq!(updates.rows, vec![row(&["2"]), row(&["4"])]);
        assert_eq!(updates.befores, vec![row(&["1"]), row(&["3"])]);
        assert_eq!(batch.to_events(), one_change_each(full));
    }

    #[test]
    fn rows_in_other_forms_are_left_to_prost() {
        // A ROW event whose change repeats its after-image: proto3 merges
        // the two, which the plain path does not do. Written by hand.
        let image = row(&["2"]).encode_to_vec();
        let mut change_body = Vec::new();
        for _ in 0..2 {
            change_body.extend_from_slice(&[0x12, image.len() as u8]);
            change_body.extend_from_slice(&image);
        }
        let mut re = vec![0x0a, 1, b't', 0x12, change_body.len() as u8];
        re.extend_from_slice(&change_body);
        let mut ev = vec![0x08, VEventType::Row as u8, 0x2a, re.len() as u8];
        ev.extend_from_slice(&re);
        let mut wire = vec![0x0a, ev.len() as u8];
        wire.extend_from_slice(&ev);
        let batch = VStreamBatch::decode(&wire[..]).expect("decodes");
        let full = VStreamResponse::decode(&wire[..]).expect("decodes");
        assert!(matches!(batch.events[..], [Event::Other(_)]), "{batch:?}");
        assert_eq!(batch.to_events(), full.events);
    }

    #[test]
    fn cut_responses_are_decode_errors() {
        let wire = VStreamResponse {
            events: vec![
                row_event("t", vec![change(None, Some(&["1", "abc"]))]),
                other(VEventType::Commit),
            ],
        }
        .encode_to_vec();
        let whole_event = 2 + wire[1] as usize;
        for end in (1..wire.len()).filter(|e| *e != whole_event) {
            assert!(VStreamBatch::decode(&wire[..end]).is_err(), "cut at {end}");
        }
    }

    #[test]
    fn batches_encode_as_the_events_they_hold() {
        let events = vec![
            other(VEventType::Begin),
            row_event("t", vec![change(None, Some(&["1"]))]),
            row_event("t", vec![change(Some(&["1"]), Some(&["2"]))]),
            other(VEventType::Commit),
        ];
        let (batch, full) = both_ways(&events);
        let again = VStreamBatch::decode(&batch.encode_to_vec()[..]).expect("decodes");
        assert_eq!(again, batch);
        assert_eq!(batch.encoded_len(), batch.encode_to_vec().len());
        assert_eq!(batch.to_events(), one_change_each(full));
    }
}
