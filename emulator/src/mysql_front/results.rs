//! Result sets and cell values between the backend (mysql_async) and the
//! client (opensrv-mysql): column descriptions, text and binary rows, and
//! prepared-statement parameters.

use opensrv_mysql::{Column, ColumnFlags, ColumnType, OkResponse, QueryResultWriter, ValueInner};
use tokio::io::AsyncWrite;

/// One result set, buffered so its column slice can outlive the writer
/// borrow opensrv-mysql requires.
pub(super) struct ResultSet {
    pub(super) columns: Vec<Column>,
    pub(super) rows: Vec<Vec<mysql_async::Value>>,
    pub(super) ok: OkResponse,
}

pub(super) fn text_result(names: &[&str], rows: Vec<Vec<mysql_async::Value>>) -> ResultSet {
    ResultSet {
        columns: names
            .iter()
            .map(|n| Column {
                table: String::new(),
                column: n.to_string(),
                coltype: ColumnType::MYSQL_TYPE_VAR_STRING,
                colflags: ColumnFlags::empty(),
            })
            .collect(),
        rows,
        ok: OkResponse::default(),
    }
}

pub(super) fn to_front_column(c: &mysql_async::Column) -> Column {
    let ty = c.column_type() as u8;
    Column {
        table: c.table_str().to_string(),
        column: c.name_str().to_string(),
        coltype: ColumnType::try_from(ty).unwrap_or(ColumnType::MYSQL_TYPE_VAR_STRING),
        colflags: ColumnFlags::from_bits_truncate(c.flags().bits()),
    }
}

pub(super) fn to_param(v: ValueInner<'_>) -> mysql_async::Value {
    match v {
        ValueInner::NULL => mysql_async::Value::NULL,
        ValueInner::Bytes(b) => mysql_async::Value::Bytes(b.to_vec()),
        ValueInner::Int(i) => mysql_async::Value::Int(i),
        ValueInner::UInt(u) => mysql_async::Value::UInt(u),
        ValueInner::Double(d) => mysql_async::Value::Double(d),
        ValueInner::Date(_) | ValueInner::Time(_) | ValueInner::Datetime(_) => {
            tracing::warn!("DATE/TIME prepared-statement parameters are not supported; using NULL");
            mysql_async::Value::NULL
        }
    }
}

pub(super) async fn write_sets<'a, W: AsyncWrite + Send + Unpin>(
    sets: &'a [ResultSet],
    mut results: QueryResultWriter<'a, W>,
    binary: bool,
) -> std::io::Result<()> {
    for (i, set) in sets.iter().enumerate() {
        let last = i + 1 == sets.len();
        if set.columns.is_empty() {
            if last {
                return results.completed(set.ok.clone()).await;
            }
            results = results.complete_one(set.ok.clone()).await?;
            continue;
        }
        let mut rw = results.start(&set.columns).await?;
        for row in &set.rows {
            for (v, col) in row.iter().zip(&set.columns) {
                write_value(&mut rw, v, col, binary)?;
            }
            rw.end_row().await?;
        }
        if last {
            return rw.finish().await;
        }
        results = rw.finish_one().await?;
    }
    results.completed(OkResponse::default()).await
}

fn write_value<W: AsyncWrite + Unpin>(
    rw: &mut opensrv_mysql::RowWriter<'_, W>,
    v: &mysql_async::Value,
    col: &Column,
    binary: bool,
) -> std::io::Result<()> {
    use mysql_async::Value as V;
    match v {
        V::NULL => rw.write_col(None::<i64>),
        V::Bytes(b) => {
            if binary && !binary_bytes_ok(col.coltype) {
                // Text arrived for a typed binary column: send it as parsed.
                let s = String::from_utf8_lossy(b);
                if let Ok(i) = s.parse::<i128>() {
                    return write_int(rw, col, i);
                }
                if let Ok(f) = s.parse::<f64>() {
                    return rw.write_col(f);
                }
            }
            rw.write_col(&b[..])
        }
        // opensrv-mysql narrows isize/usize to the column's width; i64/u64
        // only fit BIGINT columns.
        V::Int(i) => write_int(rw, col, i128::from(*i)),
        V::UInt(u) => write_int(rw, col, i128::from(*u)),
        V::Float(f) if col.coltype == ColumnType::MYSQL_TYPE_DOUBLE => rw.write_col(f64::from(*f)),
        V::Float(f) => rw.write_col(*f),
        V::Double(d) if col.coltype == ColumnType::MYSQL_TYPE_FLOAT => rw.write_col(*d as f32),
        V::Double(d) => rw.write_col(*d),
        V::Date(y, mo, d, h, mi, s, us) => {
            let date =
                chrono::NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d));
            let Some(date) = date else {
                // Zero dates have no chrono form; NULL beats a dropped connection.
                return if binary {
                    rw.write_col(None::<i64>)
                } else {
                    rw.write_col(v.as_sql(true).trim_matches('\''))
                };
            };
            if col.coltype == ColumnType::MYSQL_TYPE_DATE {
                return rw.write_col(date);
            }
            match date.and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us) {
                Some(dt) => rw.write_col(dt),
                None => rw.write_col(None::<i64>),
            }
        }
        V::Time(neg, d, h, mi, s, us) => {
            if *neg {
                // opensrv-mysql cannot encode negative TIME values.
                return if binary {
                    rw.write_col(None::<i64>)
                } else {
                    rw.write_col(v.as_sql(true).trim_matches('\''))
                };
            }
            let dur = std::time::Duration::from_secs(
                u64::from(*d) * 86_400 + u64::from(*h) * 3600 + u64::from(*mi) * 60 + u64::from(*s),
            ) + std::time::Duration::from_micros(u64::from(*us));
            rw.write_col(dur)
        }
    }
}

/// Writes an integer as exactly the Rust type opensrv-mysql expects for the
/// column's type and signedness (it refuses or asserts on anything else).
fn write_int<W: AsyncWrite + Unpin>(
    rw: &mut opensrv_mysql::RowWriter<'_, W>,
    col: &Column,
    v: i128,
) -> std::io::Result<()> {
    let unsigned = col.colflags.contains(ColumnFlags::UNSIGNED_FLAG);
    let bad = || std::io::Error::other(format!("integer {v} does not fit column {}", col.column));
    match (col.coltype, unsigned) {
        (ColumnType::MYSQL_TYPE_TINY, false) => rw.write_col(i8::try_from(v).map_err(|_| bad())?),
        (ColumnType::MYSQL_TYPE_TINY, true) => rw.write_col(u8::try_from(v).map_err(|_| bad())?),
        (ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR, false) => {
            rw.write_col(i16::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR, true) => {
            rw.write_col(u16::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONG | ColumnType::MYSQL_TYPE_INT24, false) => {
            rw.write_col(i32::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONG | ColumnType::MYSQL_TYPE_INT24, true) => {
            rw.write_col(u32::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONGLONG, false) => {
            rw.write_col(i64::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONGLONG, true) => {
            rw.write_col(u64::try_from(v).map_err(|_| bad())?)
        }
        // Not an integer column (e.g. DECIMAL): send the text.
        _ => rw.write_col(v.to_string().as_bytes()),
    }
}

fn binary_bytes_ok(t: ColumnType) -> bool {
    !matches!(
        t,
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_YEAR
            | ColumnType::MYSQL_TYPE_FLOAT
            | ColumnType::MYSQL_TYPE_DOUBLE
    )
}
