//! The change phase: change log ranges read from the capture tables (see
//! [`crate::capture`]), cut at transaction boundaries; when idle the stream
//! waits on the capture's `watch` channel.

use mysql_async::prelude::Queryable;
use tonic::Status;

use super::batch::{as_bytes, as_u64, Batch, ChangeFields, Kind};
use super::sender::{Out, Stop};
use super::stream::StreamCtx;
use super::{internal, CHANGE_BATCH_ROWS, GTID_CHUNK};
use crate::capture::{shadow_name, CHANGELOG, GTIDS};
use crate::faults::PURGED_MESSAGE;
use crate::values::quote_ident;

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
        let meta = self.meta;
        let sel = self.sel;
        let sql = self.change_sql(from, upto);
        // Streamed, not collected: one transaction can hold millions of rows.
        let mut conn = match self.shard.pool.get_conn().await {
            Ok(c) => c,
            Err(e) => return out.fail(internal(e)).await,
        };
        let mut result = match conn.query_iter(sql).await {
            Ok(r) => r,
            Err(e) => return out.fail(internal(e)).await,
        };
        let legacy =
            !(self.req.include_inserts || self.req.include_updates || self.req.include_deletes);
        let out_fields = sel.fields(meta, &sel.out);
        // VStream deletes carry the whole before-image, as Vitess sends it.
        let (pk_fields, delete_positions) = if self.vstream {
            (out_fields.clone(), sel.out_positions())
        } else {
            (sel.fields(meta, &meta.pk), sel.pk_pos.clone())
        };
        let fields = ChangeFields::new(out_fields, &pk_fields);
        // A response cut inside a transaction: VStream ends the
        // transaction only at its last part, so earlier parts get no cursor.
        let part = |done: u64| (!self.vstream).then_some(done);
        let mut batch = Batch::default();
        let mut done_pos = from;
        let mut cur_gtid = 0u64;
        let mut before: Option<Vec<Option<Vec<u8>>>> = None;
        loop {
            let row = match result.next().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return out.fail(internal(e)).await,
            };
            let (gtid, op, img, values) = decode_change(row);
            if gtid != cur_gtid {
                if cur_gtid != 0 {
                    done_pos = cur_gtid;
                    if batch.rows() >= CHANGE_BATCH_ROWS || (self.vstream && batch.rows() > 0) {
                        out.send(batch.take(self, &fields, Some(done_pos))).await?;
                    }
                }
                cur_gtid = gtid;
            }
            let kind = match (op.as_slice(), img.as_slice()) {
                (b"I", _) => Kind::Insert,
                (b"U", b"B") => {
                    before = Some(values);
                    continue;
                }
                (b"U", _) => Kind::Update,
                (b"D", _) => Kind::Delete,
                (b"T", _) if self.vstream => {
                    let position = self.shard.capture.position(gtid);
                    out.ddl(truncate_statement(&meta.name), position).await?;
                    continue;
                }
                _ => continue,
            };
            let wanted = match kind {
                Kind::Insert => legacy || self.req.include_inserts,
                Kind::Update => legacy || self.req.include_updates,
                Kind::Delete => !legacy && self.req.include_deletes,
            };
            if !wanted {
                before = None;
                continue;
            }
            // Kinds land in separate response fields; cut the response when
            // the kind changes so the order of changes is kept.
            let kind_for_batch = if legacy && kind == Kind::Update {
                Kind::Insert
            } else {
                kind
            };
            if batch.kind.is_some_and(|k| k != kind_for_batch) {
                out.send(batch.take(self, &fields, part(done_pos))).await?;
            }
            batch.kind = Some(kind_for_batch);
            match kind_for_batch {
                Kind::Insert => batch
                    .inserts
                    .push(self.encode(&values, &sel.out_positions())),
                Kind::Update => {
                    let b = before.take().unwrap_or_default();
                    batch.updates.push((
                        self.encode(&b, &sel.out_positions()),
                        self.encode(&values, &sel.out_positions()),
                    ));
                }
                Kind::Delete => batch.deletes.push(self.encode(&values, &delete_positions)),
            }
            // A huge transaction is cut too; its responses carry the position
            // before it, so a resume replays it (at-least-once).
            if batch.rows() >= 20 * CHANGE_BATCH_ROWS {
                out.send(batch.take(self, &fields, part(done_pos))).await?;
            }
        }
        // Pruned while read: some images may be missing, so no cursor.
        self.check_retained(out, from).await?;
        out.send(batch.take(self, &fields, Some(upto))).await
    }

    /// The change query of GTIDs (from, upto]: one row per image, in commit
    /// order, the before-image of an update first; a truncate marker has no
    /// image (LEFT JOIN).
    fn change_sql(&self, from: u64, upto: u64) -> String {
        let meta = self.meta;
        let sel = self.sel;
        let db = quote_ident(&self.shard.capture.own);
        let cols: Vec<String> = sel
            .select
            .iter()
            .map(|&i| format!("s.{}", quote_ident(&meta.columns[i].name)))
            .collect();
        if !self.captured {
            return "SELECT 1 FROM DUAL WHERE FALSE".to_string();
        }
        format!(
            "SELECT g.gtid, c.op, s._psdb_img, {} FROM {db}.`{GTIDS}` g \
             JOIN {db}.`{CHANGELOG}` c ON c.trx_start = g.trx \
             LEFT JOIN {db}.{} s ON s._psdb_seq = c.seq \
             WHERE c.tbl = {} AND g.gtid > {from} AND g.gtid <= {upto} \
             ORDER BY g.gtid, c.seq, s._psdb_img DESC",
            cols.join(", "),
            quote_ident(&shadow_name(&meta.name)),
            crate::values::quote_literal(meta.name.as_bytes()),
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

/// One row of the change query: GTID number, operation (`I`, `U`, `D`),
/// image (`B` before, `A` after) and the selected cells.
type ChangeRow = (u64, Vec<u8>, Vec<u8>, Vec<Option<Vec<u8>>>);

fn decode_change(row: mysql_async::Row) -> ChangeRow {
    let cells = row.unwrap_raw();
    let gtid = cells
        .first()
        .and_then(|c| c.as_ref())
        .and_then(as_u64)
        .unwrap_or(0);
    let op = cells
        .get(1)
        .and_then(|c| c.as_ref())
        .and_then(as_bytes)
        .unwrap_or_default();
    let img = cells
        .get(2)
        .and_then(|c| c.as_ref())
        .and_then(as_bytes)
        .unwrap_or_default();
    let values = cells
        .into_iter()
        .skip(3)
        .map(|c| match c {
            Some(mysql_async::Value::Bytes(b)) => Some(b),
            Some(mysql_async::Value::NULL) | None => None,
            Some(other) => Some(other.as_sql(true).into_bytes()),
        })
        .collect();
    (gtid, op, img, values)
}
