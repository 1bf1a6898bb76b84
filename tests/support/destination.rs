//! A table as MariaDB holds it and as a Singer target stored it, both in one
//! canonical form, so the end-to-end tests compare them column by column.
//!
//! Both sides are read as text (MariaDB with per-type SQL casts, PostgreSQL
//! with `::text`, DuckDB with `CAST(… AS VARCHAR)`) and turned into a
//! [`Cell`] by the column's MySQL type. What a target is known to change is a
//! [`Quirks`] flag, applied to the *expected* side, so every documented
//! exception is asserted to happen exactly where it should.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use mysql_async::prelude::Queryable;
use serde_json::Value;

use super::mariadb;

/// The family of a MySQL column, which decides how values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integer,
    /// BIT(1), a boolean in the schema.
    Bool,
    Decimal,
    Float,
    Date,
    DateTime,
    Time,
    Text,
    Binary,
    Json,
}

impl Kind {
    fn of(data_type: &str, column_type: &str) -> Kind {
        match data_type {
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "year" => Kind::Integer,
            "bit" if column_type == "bit(1)" => Kind::Bool,
            "bit" => Kind::Integer,
            "decimal" => Kind::Decimal,
            "float" | "double" => Kind::Float,
            "date" => Kind::Date,
            "datetime" | "timestamp" => Kind::DateTime,
            "time" => Kind::Time,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => Kind::Binary,
            "json" => Kind::Json,
            // MariaDB reports JSON columns as longtext with a json_valid check.
            _ if column_type == "json" => Kind::Json,
            _ => Kind::Text,
        }
    }

    /// MariaDB SQL giving the column's canonical text.
    fn source_expr(self, col: &str) -> String {
        let c = format!("`{}`", col.replace('`', "``"));
        match self {
            Kind::Integer => format!("CAST({c} + 0 AS CHAR)"),
            Kind::Bool => format!("CAST({c} + 0 AS CHAR)"),
            Kind::Decimal | Kind::Float | Kind::Date | Kind::Time => format!("CAST({c} AS CHAR)"),
            Kind::DateTime => format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')"),
            Kind::Binary => format!("HEX({c})"),
            Kind::Text | Kind::Json => c,
        }
    }
}

/// How a target stores binary columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// The base64 text the tap wrote (`binary_encoding: base64`).
    Base64Text,
    /// `bytea` (`binary_encoding: base16` with `interpret_content_encoding`).
    Bytea,
}

/// What a target is documented to change.
#[derive(Debug, Clone, Copy)]
pub struct Quirks {
    /// pipelinewise-target-postgres and target-duckdb write every falsy
    /// value as an empty CSV field, which their COPY reads as NULL: an empty
    /// string (or empty binary value) arrives as NULL.
    pub empty_string_is_null: bool,
    pub binary: Binary,
    /// meltanolabs-target-postgres stores a NULL of a `jsonb` column
    /// (`json_encoding: value`) as the JSON value `null`.
    pub json_null_is_json: bool,
}

/// One canonical value.
#[derive(Debug, Clone)]
pub enum Cell {
    Text(String),
    /// Compared to 12 significant digits: FLOAT's text is rounded by the
    /// server, and targets store a double.
    Float(f64),
    Json(Value),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::Json(a), Cell::Json(b)) => a == b,
            (Cell::Float(a), Cell::Float(b)) => {
                a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
            }
            _ => false,
        }
    }
}

/// A column of a source table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

pub type Row = Vec<Option<Cell>>;

/// A table's columns and rows in canonical form, keyed by primary key (or,
/// without one, by the row's own text with a running number for duplicates).
#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<Column>,
    pub keys: Vec<String>,
    pub rows: BTreeMap<String, Row>,
}

/// Decimal text without redundant zeros: `1.50` → `1.5`, `-0.00` → `0`.
fn decimal(text: &str) -> String {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let mut d = digits.to_string();
    if d.contains('.') {
        while d.ends_with('0') {
            d.pop();
        }
        if d.ends_with('.') {
            d.pop();
        }
    }
    let d = d.trim_start_matches('0').to_string();
    let d = if d.is_empty() || d.starts_with('.') {
        format!("0{d}")
    } else {
        d
    };
    if neg && d != "0" {
        format!("-{d}")
    } else {
        d
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` from any of the forms targets print.
fn datetime(text: &str) -> String {
    let t = text.trim().replace('T', " ");
    // Drop a UTC offset (`+00`, `+00:00`, `Z`).
    let t = t.trim_end_matches('Z');
    let t = match t.rfind(['+', '-']) {
        Some(i) if i > 10 => &t[..i],
        _ => t,
    };
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{whole}.{frac:0<6}")
}

fn is_zero_date(text: &str) -> bool {
    text.starts_with("0000") || text.get(5..7) == Some("00") || text.get(8..10) == Some("00")
}

/// The value a faithful target holds for a source value.
fn expected(kind: Kind, source: Option<&str>, q: Quirks) -> Option<Cell> {
    if source.is_none() && kind == Kind::Json && q.json_null_is_json {
        return Some(Cell::Json(Value::Null));
    }
    let s = source?;
    if q.empty_string_is_null && s.is_empty() && matches!(kind, Kind::Text | Kind::Binary) {
        return None;
    }
    Some(match kind {
        Kind::Integer | Kind::Time | Kind::Text | Kind::Binary => Cell::Text(s.to_string()),
        Kind::Bool => Cell::Text((s != "0").to_string()),
        Kind::Decimal => Cell::Text(decimal(s)),
        Kind::Float => Cell::Float(s.parse().unwrap_or(f64::NAN)),
        // Zero dates are written as null (README, Type mapping).
        Kind::Date if is_zero_date(s) => return None,
        Kind::Date => Cell::Text(s.to_string()),
        Kind::DateTime if is_zero_date(s) => return None,
        Kind::DateTime => Cell::Text(datetime(s)),
        Kind::Json => Cell::Json(serde_json::from_str(s).unwrap_or(Value::Null)),
    })
}

/// A destination's text for a column, canonical.
fn stored(kind: Kind, text: Option<&str>, q: Quirks) -> Option<Cell> {
    let t = text?;
    Some(match kind {
        Kind::Integer | Kind::Time | Kind::Text => Cell::Text(t.to_string()),
        Kind::Bool => Cell::Text(
            match t {
                "t" | "true" | "True" | "1" => "true",
                "f" | "false" | "False" | "0" => "false",
                other => other,
            }
            .to_string(),
        ),
        Kind::Decimal => Cell::Text(decimal(t)),
        Kind::Float => Cell::Float(t.parse().unwrap_or(f64::NAN)),
        Kind::Date => Cell::Text(t.get(..10).unwrap_or(t).to_string()),
        Kind::DateTime => Cell::Text(datetime(t)),
        Kind::Binary => match q.binary {
            Binary::Bytea => Cell::Text(t.trim_start_matches("\\x").to_ascii_uppercase()),
            Binary::Base64Text => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .unwrap_or_else(|e| panic!("stored binary `{t}` is not base64: {e}"));
                Cell::Text(bytes.iter().map(|b| format!("{b:02X}")).collect())
            }
        },
        Kind::Json => {
            Cell::Json(serde_json::from_str(t).unwrap_or_else(|e| panic!("stored JSON `{t}`: {e}")))
        }
    })
}

fn key_of(table_keys: &[String], columns: &[Column], row: &[Option<String>]) -> String {
    if table_keys.is_empty() {
        return format!("{row:?}");
    }
    let parts: Vec<String> = table_keys
        .iter()
        .map(|k| {
            let i = columns
                .iter()
                .position(|c| &c.name == k)
                .unwrap_or_else(|| panic!("key column {k}"));
            // Zero-padded so keys sort numerically.
            format!("{:>24}", row[i].clone().unwrap_or_default())
        })
        .collect();
    parts.join("|")
}

/// Inserts a keyless row under its text plus a running number.
fn insert(rows: &mut BTreeMap<String, Row>, key: String, keyless: bool, row: Row) {
    if !keyless {
        rows.insert(key, row);
        return;
    }
    let mut n = 0;
    while rows.contains_key(&format!("{key}#{n}")) {
        n += 1;
    }
    rows.insert(format!("{key}#{n}"), row);
}

/// The table in every shard's backing database, as a faithful target would
/// hold it under `q`.
pub async fn source(databases: &[&str], table: &str, keys: &[&str], q: Quirks) -> Table {
    let mut columns = Vec::new();
    let mut rows = BTreeMap::new();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    for db in databases {
        let mut conn = mariadb().connect(Some(db)).await.expect("connect");
        conn.query_drop("SET SESSION time_zone = '+00:00'")
            .await
            .expect("time zone");
        // MariaDB's JSON is LONGTEXT with a json_valid() check.
        let cols: Vec<(String, String, String)> = conn
            .exec(
                "SELECT c.column_name, c.data_type, \
                 IF(EXISTS(SELECT 1 FROM information_schema.check_constraints k \
                   WHERE k.constraint_schema = c.table_schema AND k.table_name = c.table_name \
                   AND k.check_clause LIKE CONCAT('%json_valid(`', c.column_name, '`)%')), \
                   'json', c.column_type) \
                 FROM information_schema.columns c \
                 WHERE c.table_schema = ? AND c.table_name = ? ORDER BY c.ordinal_position",
                (db, table),
            )
            .await
            .expect("columns");
        columns = cols
            .iter()
            .map(|(name, dt, ct)| Column {
                name: name.clone(),
                kind: Kind::of(dt, ct),
            })
            .collect();
        let exprs: Vec<String> = columns
            .iter()
            .map(|c| c.kind.source_expr(&c.name))
            .collect();
        let got: Vec<mysql_async::Row> = conn
            .query(format!("SELECT {} FROM `{table}`", exprs.join(", ")))
            .await
            .expect("select");
        for r in got {
            let text: Vec<Option<String>> = (0..columns.len())
                .map(|i| {
                    r.get::<Option<Vec<u8>>, _>(i)
                        .flatten()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .collect();
            let key = key_of(&keys, &columns, &text);
            let row = columns
                .iter()
                .zip(&text)
                .map(|(c, t)| expected(c.kind, t.as_deref(), q))
                .collect();
            insert(&mut rows, key, keys.is_empty(), row);
        }
        let _ = conn.disconnect().await;
    }
    Table {
        columns,
        keys,
        rows,
    }
}

/// What a destination holds, as rows of text by column name (`None` for
/// NULL), plus each row's `_sdc_deleted_at` text when `deleted` is asked.
pub type StoredRows = Vec<BTreeMap<String, Option<String>>>;

/// Reads a destination table's rows into the shape of `like`; returns the
/// live rows and the soft-deleted ones (`_sdc_deleted_at` set).
pub fn split_stored(like: &Table, stored_rows: &StoredRows, q: Quirks) -> (Table, Table) {
    let mut live = BTreeMap::new();
    let mut gone = BTreeMap::new();
    for r in stored_rows {
        let text: Vec<Option<String>> = like
            .columns
            .iter()
            .map(|c| {
                r.get(&c.name)
                    .unwrap_or_else(|| panic!("the destination has no column {}", c.name))
                    .clone()
            })
            .collect();
        let key = key_of(&like.keys, &like.columns, &text);
        let row: Row = like
            .columns
            .iter()
            .zip(&text)
            .map(|(c, t)| stored(c.kind, t.as_deref(), q))
            .collect();
        let deleted = r.get("_sdc_deleted_at").cloned().flatten().is_some();
        let into = if deleted { &mut gone } else { &mut live };
        insert(into, key, like.keys.is_empty(), row);
    }
    let table = |rows| Table {
        columns: like.columns.clone(),
        keys: like.keys.clone(),
        rows,
    };
    (table(live), table(gone))
}

/// The differences between what MariaDB holds (`want`) and what a target
/// stored (`got`): missing and unexpected rows, and the first differing
/// column of each row. Empty when they are the same.
pub fn differences(want: &Table, got: &Table, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    let missing: Vec<&String> = want
        .rows
        .keys()
        .filter(|k| !got.rows.contains_key(*k))
        .collect();
    let extra: Vec<&String> = got
        .rows
        .keys()
        .filter(|k| !want.rows.contains_key(*k))
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        out.push(format!(
            "{what}: {} of {} rows missing (first {:?}), {} unexpected (first {:?})",
            missing.len(),
            want.rows.len(),
            missing.first().map(|k| k.trim()),
            extra.len(),
            extra.first().map(|k| k.trim())
        ));
    }
    for (key, w) in &want.rows {
        let Some(g) = got.rows.get(key) else { continue };
        for (i, c) in want.columns.iter().enumerate() {
            if g[i] != w[i] {
                out.push(format!(
                    "{what}: row {} column {} ({:?}): stored {:?}, MariaDB {:?}",
                    key.trim(),
                    c.name,
                    c.kind,
                    g[i],
                    w[i]
                ));
                break;
            }
        }
    }
    out
}

/// `SELECT` list casting every column (and `_sdc_deleted_at`) to text.
pub fn text_select(like: &Table, cast: impl Fn(&str) -> String, from: &str) -> String {
    let mut cols: Vec<String> = like.columns.iter().map(|c| cast(&c.name)).collect();
    cols.push(cast("_sdc_deleted_at"));
    format!("SELECT {} FROM {from}", cols.join(", "))
}

/// Rows of a query over a DuckDB file, every value as text, through the
/// duckdb module of the target's venv.
pub fn duckdb_rows(python: &Path, file: &Path, sql: &str) -> StoredRows {
    let script = "import duckdb, json, sys\n\
        con = duckdb.connect(sys.argv[1], read_only=True)\n\
        cur = con.execute(sys.argv[2])\n\
        names = [d[0] for d in cur.description]\n\
        print(json.dumps([dict(zip(names, r)) for r in cur.fetchall()]))\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(file)
        .arg(sql)
        .output()
        .expect("run python with duckdb");
    assert!(
        out.status.success(),
        "duckdb query failed: {sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("duckdb rows as JSON")
}

/// Rows of a PostgreSQL query as text maps.
pub fn postgres_rows(pg: &super::postgres::Postgres, sql: &str) -> StoredRows {
    pg.rows(sql)
        .into_iter()
        .map(|r| serde_json::from_value(r).expect("text row"))
        .collect()
}
