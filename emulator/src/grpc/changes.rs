//! The change phase: change log ranges read from the capture tables (see
//! [`crate::capture`]), cut at transaction boundaries; when idle the stream
//! waits on the capture's `watch` channel.
//!
//! A range is read in two steps, so that MariaDB streams its images without
//! sorting them: first the range's plan, the (GTID, sequence number,
//! operation) of each change to the table, small rows put in commit order
//! here; then the images, read from the shadow table in its key order and
//! merged with the plan. (One query joining the three tables, ordered by
//! GTID, made MariaDB build and sort a temporary table of every image before
//! sending the first: seconds for a few hundred thousand changes.)
//! Transactions that overlapped in time can commit in another order than
//! their sequence numbers; where the plan's numbers stop rising, a window of
//! it has its images read into memory first and handed out in plan order.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use tonic::Status;

use super::batch::{as_u64, Batch, ChangeFields, Kind};
use super::sender::{Out, Stop};
use super::stream::StreamCtx;
use super::{internal, CHANGE_BATCH_ROWS, GTID_CHUNK};
use crate::capture::{shadow_name, CHANGELOG, GTIDS};
use crate::faults::PURGED_MESSAGE;
use crate::values::quote_ident;

/// Most plan entries whose images one query streams.
const STREAMED_PIECE: usize = 65_536;
/// A run of rising sequence numbers shorter than this is read as part of a
/// window instead (one query per short run would cost a round trip each).
const MIN_STREAMED: usize = 256;
/// Most images a window reads into memory, and most sequence numbers in an
/// `IN` list (MariaDB turns an `IN` list of 1000 or more values into a
/// join, which loses the key order).
const WINDOW: usize = 512;

/// One change of a range's plan.
#[derive(Debug, Clone, Copy)]
struct Planned {
    gtid: u64,
    seq: u64,
    op: u8,
}

impl Planned {
    /// Whether the shadow table holds images of this change (a truncate
    /// marker has none).
    fn has_images(&self) -> bool {
        matches!(self.op, b'I' | b'U' | b'D')
    }
}

/// The sequence numbers of a piece's changes that have images, in plan
/// order: what the images query asks for.
fn image_seqs(piece: &[Planned]) -> Vec<u64> {
    piece
        .iter()
        .filter(|p| p.has_images())
        .map(|p| p.seq)
        .collect()
}

/// One image row as the text protocol gives it: `_psdb_seq`, `_psdb_img`,
/// then the selected cells.
type Cells = Vec<Option<mysql_async::Value>>;

/// The selected cells of an image row; none when it is missing.
fn selected(row: Option<&Cells>) -> &[Option<mysql_async::Value>] {
    row.and_then(|r| r.get(2..)).unwrap_or_default()
}

/// The images of one change; a missing one reads as all NULL.
#[derive(Default)]
struct Images {
    before: Option<Cells>,
    after: Option<Cells>,
}

impl Images {
    fn put(&mut self, img: u8, cells: Cells) {
        if img == b'B' {
            self.before = Some(cells);
        } else {
            self.after = Some(cells);
        }
    }
}

impl StreamCtx<'_> {
    pub(super) async fn changes(&self, out: &mut Out, from: u64) -> Result<(), Stop> {
        let mut rx = self.shard.capture.subscribe();
        let mut pos = from;
        loop {
            let head = *rx.borrow_and_update();
            while head > pos {
                let upto = head.min(pos + GTID_CHUNK);
                self.change_range(out, pos, upto).await?;
                pos = upto;
            }
            out.wait_change(&mut rx).await?;
        }
    }

    /// Streams the changes to this table in GTIDs (from, upto], ending with a
    /// cursor at `upto`.
    async fn change_range(&self, out: &mut Out, from: u64, upto: u64) -> Result<(), Stop> {
        self.check_retained(out, from).await?;
        let mut conn = match self.shard.pool.get_conn().await {
            Ok(c) => c,
            Err(e) => return out.fail(internal(e)).await,
        };
        let plan = if self.captured {
            match self.change_plan(&mut conn, from, upto).await {
                Ok(p) => p,
                Err(e) => return out.fail(internal(e)).await,
            }
        } else {
            Vec::new()
        };
        let mut writer = ChangeWriter::new(self, from);
        let mut rest = plan.as_slice();
        while !rest.is_empty() {
            let (len, streamed) = next_piece(rest);
            let (piece, later) = rest.split_at(len);
            if streamed {
                self.stream_piece(&mut conn, out, &mut writer, piece)
                    .await?;
            } else {
                self.window(&mut conn, out, &mut writer, piece).await?;
            }
            rest = later;
        }
        // Pruned while read: some images may be missing, so no cursor.
        self.check_retained(out, from).await?;
        writer.flush(self, out, Some(upto)).await
    }

    /// The plan of GTIDs (from, upto]: every change to this table, in
    /// commit order (GTID, then sequence number within a transaction).
    async fn change_plan(
        &self,
        conn: &mut mysql_async::Conn,
        from: u64,
        upto: u64,
    ) -> Result<Vec<Planned>, mysql_async::Error> {
        let db = quote_ident(&self.shard.capture.own);
        let sql = format!(
            "SELECT g.gtid, c.seq, ORD(c.op) FROM {db}.`{GTIDS}` g \
             JOIN {db}.`{CHANGELOG}` c ON c.trx_start = g.trx \
             WHERE c.tbl = ? AND g.gtid > ? AND g.gtid <= ?"
        );
        let mut result = conn
            .exec_iter(sql, (self.meta.name.as_str(), from, upto))
            .await?;
        let mut plan = Vec::new();
        while let Some(row) = result.next().await? {
            let cells = row.unwrap_raw();
            let num = |i: usize| {
                cells
                    .get(i)
                    .and_then(|c| c.as_ref())
                    .and_then(as_u64)
                    .unwrap_or(0)
            };
            plan.push(Planned {
                gtid: num(0),
                seq: num(1),
                op: u8::try_from(num(2)).unwrap_or(0),
            });
        }
        plan.sort_unstable_by_key(|p| (p.gtid, p.seq));
        Ok(plan)
    }

    /// Hands on a piece of the plan whose sequence numbers rise, merging
    /// its images as MariaDB streams them (skipping those of other
    /// transactions inside the range of numbers).
    async fn stream_piece(
        &self,
        conn: &mut mysql_async::Conn,
        out: &mut Out,
        writer: &mut ChangeWriter,
        piece: &[Planned],
    ) -> Result<(), Stop> {
        let seqs = image_seqs(piece);
        if seqs.is_empty() {
            for p in piece {
                writer.change(self, out, p, Images::default()).await?;
            }
            return Ok(());
        }
        let mut result = match conn.query_iter(self.images_sql(&seqs)).await {
            Ok(r) => r,
            Err(e) => return out.fail(internal(e)).await,
        };
        let mut next = next_image(&mut result, out).await?;
        for p in piece {
            let mut images = Images::default();
            if p.has_images() {
                while let Some((seq, img, cells)) = next.take() {
                    if seq > p.seq {
                        next = Some((seq, img, cells));
                        break;
                    }
                    if seq == p.seq {
                        images.put(img, cells);
                    }
                    next = next_image(&mut result, out).await?;
                }
            }
            writer.change(self, out, p, images).await?;
        }
        Ok(())
    }

    /// Hands on a window of the plan whose sequence numbers do not rise:
    /// its images are read first, then handed out in plan order.
    async fn window(
        &self,
        conn: &mut mysql_async::Conn,
        out: &mut Out,
        writer: &mut ChangeWriter,
        piece: &[Planned],
    ) -> Result<(), Stop> {
        let mut seqs = image_seqs(piece);
        seqs.sort_unstable();
        let mut found: HashMap<u64, Images> = HashMap::with_capacity(seqs.len());
        {
            let mut result = match conn.query_iter(self.images_sql(&seqs)).await {
                Ok(r) => r,
                Err(e) => return out.fail(internal(e)).await,
            };
            while let Some((seq, img, cells)) = next_image(&mut result, out).await? {
                if seqs.binary_search(&seq).is_ok() {
                    found.entry(seq).or_default().put(img, cells);
                }
            }
        }
        for p in piece {
            let images = if p.has_images() {
                found.remove(&p.seq).unwrap_or_default()
            } else {
                Images::default()
            };
            writer.change(self, out, p, images).await?;
        }
        Ok(())
    }

    /// The images of the changes numbered `seqs` (rising), in the shadow
    /// table's key order: `_psdb_seq`, `_psdb_img` (`A` before `B`), then
    /// the selected cells. Numbers close together are read as a range;
    /// scattered ones as a list.
    fn images_sql(&self, seqs: &[u64]) -> String {
        let meta = self.meta;
        let cols: Vec<String> = self
            .sel
            .select
            .iter()
            .map(|&i| quote_ident(&meta.columns[i].name))
            .collect();
        let (first, last) = match (seqs.first(), seqs.last()) {
            (Some(&f), Some(&l)) => (f, l),
            _ => (1, 0),
        };
        let span = last.saturating_sub(first);
        let filter = if span < 2 * seqs.len() as u64 + 1024 {
            format!("BETWEEN {first} AND {last}")
        } else {
            let list: Vec<String> = seqs.iter().map(u64::to_string).collect();
            format!("IN ({})", list.join(","))
        };
        format!(
            "SELECT _psdb_seq, _psdb_img, {} FROM {}.{} WHERE _psdb_seq {filter} \
             ORDER BY _psdb_seq, _psdb_img",
            cols.join(", "),
            quote_ident(&self.shard.capture.own),
            quote_ident(&shadow_name(&meta.name)),
        )
    }

    /// Fails the stream as purged when the changes after `from` have been
    /// pruned by the retention (a copy may outlast it).
    async fn check_retained(&self, out: &mut Out, from: u64) -> Result<(), Stop> {
        if from < self.shard.capture.purged() {
            return out.fail(Status::unknown(PURGED_MESSAGE)).await;
        }
        Ok(())
    }
}

/// The length of the plan's next piece, and whether it is streamed: the
/// run of rising sequence numbers at its start (fewer when they are
/// scattered, to keep their list short), or when that run is short, a
/// window.
fn next_piece(plan: &[Planned]) -> (usize, bool) {
    let mut len = 0;
    let mut imaged = 0usize;
    let mut first = 0u64;
    let mut last = 0u64;
    for p in plan.iter().take(STREAMED_PIECE) {
        if p.has_images() {
            if imaged > 0 && p.seq <= last {
                break;
            }
            if imaged == 0 {
                first = p.seq;
            }
            last = p.seq;
            imaged += 1;
        }
        len += 1;
    }
    if len < plan.len() && imaged > 0 && imaged < MIN_STREAMED {
        return (window_len(plan), false);
    }
    if imaged > WINDOW && last - first >= 2 * imaged as u64 + 1024 {
        // Scattered: a list, so at most WINDOW of them.
        return (window_len(plan), true);
    }
    (len, true)
}

/// The plan entries that hold the first [`WINDOW`] images.
fn window_len(plan: &[Planned]) -> usize {
    let mut imaged = 0;
    for (i, p) in plan.iter().enumerate() {
        if p.has_images() {
            if imaged == WINDOW {
                return i;
            }
            imaged += 1;
        }
    }
    plan.len()
}

/// The next image row: its sequence number, `B` or `A`, and its cells.
async fn next_image(
    result: &mut mysql_async::QueryResult<'_, 'static, mysql_async::TextProtocol>,
    out: &mut Out,
) -> Result<Option<(u64, u8, Cells)>, Stop> {
    let row = match result.next().await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => return out.fail(internal(e)).await.map(|()| None),
    };
    let cells = row.unwrap_raw();
    let cell = |i: usize| cells.get(i).and_then(|c| c.as_ref());
    let seq = cell(0).and_then(as_u64).unwrap_or(0);
    let img = match cell(1) {
        Some(mysql_async::Value::Bytes(b)) => b.first().copied().unwrap_or(0),
        _ => 0,
    };
    Ok(Some((seq, img, cells)))
}

/// Turns a range's changes into responses: one kind of change per
/// response, cut at transaction boundaries (every transaction for the
/// VStream front), each response cut inside a transaction carrying no
/// cursor.
struct ChangeWriter {
    fields: ChangeFields,
    /// No `include_*` flag set: inserts and update after-images only.
    legacy: bool,
    /// Shaped for the VStream front (see [`super::open_stream`]).
    vstream: bool,
    /// Positions in the selected cells of the returned columns.
    out_positions: Vec<usize>,
    /// Positions of the cells a delete sends: the key for Connect, the
    /// whole before-image (as Vitess sends it) for VStream.
    delete_positions: Vec<usize>,
    batch: Batch,
    /// The last GTID whose changes are all in responses or in the batch.
    done_pos: u64,
    cur_gtid: u64,
}

impl ChangeWriter {
    fn new(ctx: &StreamCtx<'_>, from: u64) -> ChangeWriter {
        let (meta, sel) = (ctx.meta, ctx.sel);
        let out_fields = sel.fields(meta, &sel.out);
        let (pk_fields, delete_positions) = if ctx.vstream {
            (out_fields.clone(), sel.out_positions())
        } else {
            (sel.fields(meta, &meta.pk), sel.pk_pos.clone())
        };
        let req = ctx.req;
        ChangeWriter {
            fields: ChangeFields::new(out_fields, &pk_fields),
            legacy: !(req.include_inserts || req.include_updates || req.include_deletes),
            vstream: ctx.vstream,
            out_positions: sel.out_positions(),
            delete_positions,
            batch: Batch::default(),
            done_pos: from,
            cur_gtid: 0,
        }
    }

    /// Adds one change of the plan.
    async fn change(
        &mut self,
        ctx: &StreamCtx<'_>,
        out: &mut Out,
        p: &Planned,
        images: Images,
    ) -> Result<(), Stop> {
        if p.gtid != self.cur_gtid {
            if self.cur_gtid != 0 {
                self.done_pos = self.cur_gtid;
                let rows = self.batch.rows();
                if rows >= CHANGE_BATCH_ROWS || (ctx.vstream && rows > 0) {
                    self.flush(ctx, out, Some(self.done_pos)).await?;
                }
            }
            self.cur_gtid = p.gtid;
        }
        let kind = match p.op {
            b'I' => Kind::Insert,
            b'U' => Kind::Update,
            b'D' => Kind::Delete,
            b'T' if ctx.vstream => {
                let position = ctx.shard.capture.position(p.gtid);
                return out.ddl(truncate_statement(&ctx.meta.name), position).await;
            }
            _ => return Ok(()),
        };
        let req = ctx.req;
        let wanted = match kind {
            Kind::Insert => self.legacy || req.include_inserts,
            Kind::Update => self.legacy || req.include_updates,
            Kind::Delete => !self.legacy && req.include_deletes,
        };
        if !wanted {
            return Ok(());
        }
        // Kinds land in separate response fields; cut the response when
        // the kind changes so the order of changes is kept.
        let kind = if self.legacy && kind == Kind::Update {
            Kind::Insert
        } else {
            kind
        };
        if self.batch.kind.is_some_and(|k| k != kind) {
            self.flush(ctx, out, self.part()).await?;
        }
        self.batch.kind = Some(kind);
        let before = selected(images.before.as_ref());
        let after = selected(images.after.as_ref());
        let (b, a) = (&mut self.batch, &self.fields);
        match (kind, ctx.vstream) {
            (Kind::Insert, _) => {
                let row = b.row(ctx, after, &self.out_positions);
                b.push(None, Some(row));
            }
            (Kind::Update, true) => {
                let old = b.row(ctx, before, &self.out_positions);
                let new = b.row(ctx, after, &self.out_positions);
                b.push(Some(old), Some(new));
            }
            (Kind::Update, false) => {
                let old = b.result(ctx, a.out_encoded(), before, &self.out_positions);
                let new = b.result(ctx, a.out_encoded(), after, &self.out_positions);
                b.push(Some(old), Some(new));
            }
            (Kind::Delete, true) => {
                let old = b.row(ctx, before, &self.delete_positions);
                b.push(Some(old), None);
            }
            (Kind::Delete, false) => {
                let old = b.result(ctx, a.pk_encoded(), before, &self.delete_positions);
                b.push(Some(old), None);
            }
        }
        // A huge transaction is cut too; its responses carry the position
        // before it, so a resume replays it (at-least-once).
        if self.batch.rows() >= 20 * CHANGE_BATCH_ROWS {
            self.flush(ctx, out, self.part()).await?;
        }
        Ok(())
    }

    /// The cursor of a response cut inside a transaction: VStream ends the
    /// transaction only at its last part, so earlier parts get none.
    fn part(&self) -> Option<u64> {
        (!self.vstream).then_some(self.done_pos)
    }

    /// Sends the batch as one response, with a cursor at `pos` if given.
    async fn flush(
        &mut self,
        ctx: &StreamCtx<'_>,
        out: &mut Out,
        pos: Option<u64>,
    ) -> Result<(), Stop> {
        if ctx.vstream {
            let changes = self.batch.take_changes();
            let position = pos.map(|p| ctx.shard.capture.position(p));
            out.send_changes(Arc::clone(self.fields.out()), changes, position)
                .await
        } else {
            let resp = self.batch.take_response(ctx, &self.fields, pos);
            out.send(resp).await
        }
    }
}

/// The statement of a truncate marker ([`crate::capture::truncate_marker_sql`])
/// as vtgate sends it for a `TRUNCATE` it ran: lower-case keywords, the
/// name quoted only when it must be.
fn truncate_statement(table: &str) -> String {
    let plain = table
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("truncate table {table}")
    } else {
        format!("truncate table {}", quote_ident(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seqs: &[u64]) -> Vec<Planned> {
        seqs.iter()
            .map(|&seq| Planned {
                gtid: 2,
                seq,
                op: if seq == 0 { b'T' } else { b'I' },
            })
            .collect()
    }

    /// How the plan is cut into pieces: (sequence numbers, 0 for a
    /// truncate marker; expected length; streamed).
    #[test]
    fn pieces() {
        let rising: Vec<u64> = (1..=1000).collect();
        let long_then_drop: Vec<u64> = (10..=400).chain([5, 6]).collect();
        let short_then_drop: Vec<u64> = [11, 12, 3, 4, 20, 1].to_vec();
        let scattered: Vec<u64> = (1..=600).map(|i| i * 10).collect();
        let interleaved: Vec<u64> = (0..1000).map(|i| 2000 - i).collect();
        let cases: Vec<(&[u64], usize, bool)> = vec![
            (&rising, 1000, true),
            (&[7], 1, true),
            // A truncate marker has no image and breaks no run.
            (&[5, 0, 6, 0], 4, true),
            (&[0, 0], 2, true),
            (&long_then_drop, 391, true),
            (&short_then_drop, 6, false),
            // Scattered numbers go in a list, so at most WINDOW at a time.
            (&scattered, WINDOW, true),
            (&interleaved, WINDOW, false),
        ];
        for (seqs, len, streamed) in cases {
            assert_eq!(
                next_piece(&plan(seqs)),
                (len, streamed),
                "{:?}",
                &seqs[..seqs.len().min(8)]
            );
        }
    }
}
