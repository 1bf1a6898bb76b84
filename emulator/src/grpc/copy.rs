//! The copy phase: one streaming text-protocol SELECT in key order (the
//! primary key, else its equivalent, else every column: see
//! [`crate::row_key`]), cut into large batches (rows and bytes), each
//! carrying `last_known_pk` (the key's columns); a resumed copy starts
//! strictly after that key.

use mysql_async::prelude::Queryable;
use tonic::Status;

use super::sender::{Out, Stop};
use super::stream::StreamCtx;
use super::{internal, split_row, BATCH_BYTES};
use crate::values::{quote_ident, quote_literal_for};
use crate::wire::psdbconnect::v1alpha1::SyncResponse;
use crate::wire::query::{QueryResult, Row};

impl StreamCtx<'_> {
    pub(super) async fn copy(
        &self,
        out: &mut Out,
        snapshot: u64,
        last_pk: Option<&QueryResult>,
    ) -> Result<(), Stop> {
        let position = self.shard.capture.position(snapshot);
        let sql = match self.copy_sql(last_pk) {
            Ok(sql) => sql,
            Err(status) => return out.fail(status).await,
        };
        let meta = self.meta;
        let sel = self.sel;
        let out_fields = sel.fields(meta, &sel.out);
        let pk_fields = sel.fields(meta, &meta.pk);
        let n_out = sel.out.len();
        let mut conn = match self.shard.pool.get_conn().await {
            Ok(c) => c,
            Err(e) => return out.fail(internal(e)).await,
        };
        let mut result = match conn.query_iter(sql).await {
            Ok(r) => r,
            Err(e) => return out.fail(internal(e)).await,
        };
        let batch_rows = self.st.copy_batch_rows.max(1);
        let mut rows: Vec<(Vec<i64>, usize, usize)> = Vec::with_capacity(batch_rows.min(65_536));
        let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + (64 << 10));
        let mut bytes = 0usize;
        let mut last_pk_row: Option<Row> = None;
        loop {
            let next = match result.next().await {
                Ok(r) => r,
                Err(e) => return out.fail(internal(e)).await,
            };
            let done = next.is_none();
            if let Some(row) = next {
                let cells = row.unwrap_raw();
                // Cells of a whole batch go into one buffer; rows become
                // slices of it at flush time (one allocation per batch).
                let mut lengths = Vec::with_capacity(n_out);
                let start = buf.len();
                for cell in cells.iter().take(n_out) {
                    push_cell(cell.as_ref(), &mut lengths, &mut buf);
                }
                let mut pk_lengths = Vec::with_capacity(sel.pk_pos.len());
                let mut pk_values = Vec::new();
                for &p in &sel.pk_pos {
                    push_cell(
                        cells.get(p).and_then(|c| c.as_ref()),
                        &mut pk_lengths,
                        &mut pk_values,
                    );
                }
                last_pk_row = Some(Row {
                    lengths: pk_lengths,
                    values: pk_values.into(),
                });
                bytes += buf.len() - start;
                rows.push((lengths, start, buf.len()));
            }
            if !rows.is_empty() && (done || rows.len() >= batch_rows || bytes >= BATCH_BYTES) {
                let lkp = QueryResult {
                    fields: pk_fields.clone(),
                    rows: last_pk_row.take().into_iter().collect(),
                    ..Default::default()
                };
                let resp = SyncResponse {
                    result: vec![QueryResult {
                        fields: out_fields.clone(),
                        rows: {
                            let block = prost::bytes::Bytes::from(std::mem::replace(
                                &mut buf,
                                Vec::with_capacity(BATCH_BYTES + (64 << 10)),
                            ));
                            rows.drain(..)
                                .map(|(lengths, s, e)| Row {
                                    lengths,
                                    values: block.slice(s..e),
                                })
                                .collect()
                        },
                        ..Default::default()
                    }],
                    cursor: Some(self.cursor(position.clone(), Some(lkp))),
                    ..Default::default()
                };
                bytes = 0;
                out.send(resp).await?;
            }
            if done {
                break;
            }
        }
        drop(result);
        drop(conn);
        out.send(SyncResponse {
            cursor: Some(self.cursor(position, None)),
            ..Default::default()
        })
        .await
    }

    /// The copy's SELECT: the selected columns in key order, forcing the
    /// key's index as vttablet's rowstreamer does, strictly after `last_pk`
    /// when the copy resumes.
    fn copy_sql(&self, last_pk: Option<&QueryResult>) -> Result<String, Status> {
        let meta = self.meta;
        let sel = self.sel;
        let cols: Vec<String> = sel
            .select
            .iter()
            .map(|&i| quote_ident(&meta.columns[i].name))
            .collect();
        let order: Vec<String> = meta
            .pk
            .iter()
            .map(|&i| quote_ident(&meta.columns[i].name))
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {}.{}",
            cols.join(", "),
            quote_ident(&self.shard.database),
            quote_ident(&meta.name)
        );
        if let Some(index) = &meta.pk_index {
            sql.push_str(&format!(" FORCE INDEX ({})", quote_ident(index)));
        }
        if let Some(lp) = last_pk.and_then(|q| q.rows.first().map(|r| (q, r))) {
            if let Some(clause) = self.after_pk_clause(lp.0, lp.1)? {
                sql.push_str(" WHERE ");
                sql.push_str(&clause);
            }
        }
        sql.push_str(" ORDER BY ");
        sql.push_str(&order.join(", "));
        Ok(sql)
    }

    /// `WHERE` clause selecting rows strictly after a `last_known_pk` row.
    fn after_pk_clause(&self, q: &QueryResult, row: &Row) -> Result<Option<String>, Status> {
        let meta = self.meta;
        let values = split_row(row).ok_or_else(|| {
            Status::invalid_argument("last_known_pk row lengths do not match its values")
        })?;
        // Values are matched by position to the key columns; field names,
        // when present, must agree.
        let n = meta.pk.len().min(values.len());
        if n == 0 {
            return Ok(None);
        }
        for (i, f) in q.fields.iter().enumerate().take(n) {
            let col = &meta.columns[meta.pk[i]];
            if !f.name.is_empty() && !f.name.eq_ignore_ascii_case(&col.name) {
                return Err(Status::invalid_argument(format!(
                    "last_known_pk field {:?} is not key column {:?} of {:?}",
                    f.name, col.name, meta.name
                )));
            }
        }
        let mut ors = Vec::new();
        for k in 0..n {
            let mut ands = Vec::new();
            for (j, v) in values.iter().enumerate().take(k + 1) {
                let col = &meta.columns[meta.pk[j]];
                let ident = quote_ident(&col.name);
                let op = if j == k { ">" } else { "=" };
                match v {
                    Some(bytes) => {
                        ands.push(format!("{ident} {op} {}", quote_literal_for(col, bytes)))
                    }
                    None if j == k => ands.push(format!("{ident} IS NOT NULL")),
                    None => ands.push(format!("{ident} IS NULL")),
                }
            }
            ors.push(format!("({})", ands.join(" AND ")));
        }
        Ok(Some(ors.join(" OR ")))
    }
}

/// Appends one text-protocol cell to a Vitess row.
fn push_cell(cell: Option<&mysql_async::Value>, lengths: &mut Vec<i64>, values: &mut Vec<u8>) {
    match cell {
        Some(mysql_async::Value::Bytes(b)) => {
            lengths.push(b.len() as i64);
            values.extend_from_slice(b);
        }
        Some(mysql_async::Value::NULL) | None => lengths.push(-1),
        Some(other) => {
            let s = other.as_sql(true);
            let s = s.trim_matches('\'');
            lengths.push(s.len() as i64);
            values.extend_from_slice(s.as_bytes());
        }
    }
}
