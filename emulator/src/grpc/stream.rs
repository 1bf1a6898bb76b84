//! One stream: which columns it reads and returns, and its run (a
//! `current` peek, or a copy then changes from the copy's snapshot).

use std::borrow::Cow;

use mysql_async::prelude::Queryable;
use tonic::Status;

use super::sender::{Out, Stop};
use super::{internal, ShardBackend, SyncState};
use crate::capture::shadow_name;
use crate::values::{push_change_form, push_member_text, ChangeText, TableMeta};
use crate::wire::psdbconnect::v1alpha1::{SyncRequest, SyncResponse, TableCursor};
use crate::wire::query::{Field, QueryResult};

/// Which columns a stream reads and returns.
pub(super) struct Selection {
    /// Table column indexes returned to the client, in table order.
    pub(super) out: Vec<usize>,
    /// Table column indexes SELECTed: `out` then missing PK columns.
    pub(super) select: Vec<usize>,
    /// Positions in `select` of the PK columns, in key order.
    pub(super) pk_pos: Vec<usize>,
}

impl Selection {
    pub(super) fn new(meta: &TableMeta, columns: &[String]) -> Result<Selection, Status> {
        let out: Vec<usize> = if columns.is_empty() {
            (0..meta.columns.len()).collect()
        } else {
            let mut idx = Vec::new();
            for c in columns {
                let i = meta.column_index(c).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown column {c:?} in table {:?}",
                        meta.name
                    ))
                })?;
                if !idx.contains(&i) {
                    idx.push(i);
                }
            }
            idx.sort_unstable();
            idx
        };
        let mut select = out.clone();
        for &p in &meta.pk {
            if !select.contains(&p) {
                select.push(p);
            }
        }
        let pk_pos = meta
            .pk
            .iter()
            .filter_map(|p| select.iter().position(|s| s == p))
            .collect();
        Ok(Selection {
            out,
            select,
            pk_pos,
        })
    }

    pub(super) fn fields(&self, meta: &TableMeta, idx: &[usize]) -> Vec<Field> {
        idx.iter().map(|&i| meta.columns[i].field.clone()).collect()
    }
}

impl Selection {
    /// Positions in `select` of the returned columns (always the prefix).
    pub(super) fn out_positions(&self) -> Vec<usize> {
        (0..self.out.len()).collect()
    }
}

/// Whether `table`'s shadow table (its change capture) exists in the
/// shard's own database `own`.
pub(super) async fn has_shadow(
    conn: &mut mysql_async::Conn,
    own: &str,
    table: &str,
) -> Result<bool, Status> {
    let shadow: Option<String> = conn
        .exec_first(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = ? AND table_name = ?",
            (own, shadow_name(table)),
        )
        .await
        .map_err(internal)?;
    Ok(shadow.is_some())
}

pub(super) struct StreamCtx<'a> {
    pub(super) st: &'a SyncState,
    pub(super) shard: &'a ShardBackend,
    pub(super) meta: &'a TableMeta,
    pub(super) sel: &'a Selection,
    pub(super) req: &'a SyncRequest,
    /// Shape the change phase for the VStream front (see [`open_stream`]).
    pub(super) vstream: bool,
    /// The table has change capture; without it the change phase sends
    /// positions and no rows.
    pub(super) captured: bool,
}

impl StreamCtx<'_> {
    pub(super) fn cursor(
        &self,
        position: String,
        last_known_pk: Option<QueryResult>,
    ) -> TableCursor {
        TableCursor {
            shard: self.shard.name.clone(),
            keyspace: self.st.keyspace.clone(),
            position,
            last_known_pk,
        }
    }

    pub(super) async fn run(
        &self,
        out: &mut Out,
        is_peek: bool,
        start_gtid: Option<u64>,
        cursor: TableCursor,
    ) -> Result<(), Stop> {
        let capture = &self.shard.capture;
        if is_peek {
            let head = capture.sync_now().await.unwrap_or_else(|_| capture.head());
            let pos = capture.position(head);
            return out
                .send(SyncResponse {
                    cursor: Some(self.cursor(pos, None)),
                    ..Default::default()
                })
                .await;
        }
        let from = match start_gtid {
            Some(n) => n,
            None => {
                let snapshot = capture.sync_now().await.unwrap_or_else(|_| capture.head());
                self.copy(out, snapshot, cursor.last_known_pk.as_ref())
                    .await?;
                snapshot
            }
        };
        self.changes(out, from).await
    }

    /// Appends the selected cells at `positions` of a change image to a
    /// Vitess row's `lengths` and `values` (a missing cell is NULL).
    pub(super) fn push_cells(
        &self,
        cells: &[Option<mysql_async::Value>],
        positions: &[usize],
        lengths: &mut Vec<i64>,
        values: &mut Vec<u8>,
    ) {
        for &p in positions {
            let text: Cow<'_, [u8]> = match cells.get(p) {
                Some(Some(mysql_async::Value::Bytes(b))) => Cow::Borrowed(b),
                Some(Some(mysql_async::Value::NULL) | None) | None => {
                    lengths.push(-1);
                    continue;
                }
                // The text protocol sends bytes; kept for completeness.
                Some(Some(other)) => Cow::Owned(other.as_sql(true).into_bytes()),
            };
            let start = values.len();
            let col = &self.meta.columns[self.sel.select[p]];
            if self.st.change_text == ChangeText::ChangeForms {
                push_change_form(col, &text, values);
            } else if col.members_raw.is_empty() {
                values.extend_from_slice(&text);
            } else {
                push_member_text(col, &text, values);
            }
            lengths.push((values.len() - start) as i64);
        }
    }
}
