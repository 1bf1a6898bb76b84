//! Table metadata and cell text: what a Vitess `Field` says about a column,
//! and how a MySQL text-protocol cell becomes the bytes Vitess would send.
//!
//! Cells are read with the MySQL *text* protocol from MariaDB (both in the copy
//! phase and from the change-capture shadow tables), so they already have the
//! copy-phase forms of wire-protocol.md §3.1: the session runs with
//! `time_zone = '+00:00'`, so TIMESTAMP text is UTC; BIT comes back as raw
//! bytes; ENUM/SET as member text. Only the MariaDB/MySQL 8 differences are
//! patched here (JSON detection), plus the optional change-phase forms older
//! Vitess produces from row events ([`ChangeText::ChangeForms`]).

use mysql_async::prelude::Queryable;

use crate::wire::query::{Field, Type};

/// Which text forms change-phase cells use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangeText {
    /// The same forms as the copy phase (what Vitess v20+ sends).
    #[default]
    CopyForms,
    /// Old Vitess row-event forms: `.50` decimals, `1.5E+00` floats, ENUM as
    /// 1-based index, SET as bitmask, BIT as raw bytes.
    ChangeForms,
}

/// One column as the emulator presents it.
#[derive(Debug, Clone)]
pub struct ColumnMeta {
    pub name: String,
    /// information_schema DATA_TYPE with MariaDB JSON shown as `json`.
    pub data_type: String,
    /// information_schema COLUMN_TYPE with MariaDB JSON shown as `json`.
    pub column_type: String,
    pub vtype: Type,
    /// ENUM/SET members, from `column_type`.
    pub members: Vec<String>,
    /// information_schema CHARACTER_SET_NAME (empty when not text): the
    /// charset the column's bytes are read and sent in, as vttablet does.
    pub charset: String,
    /// ENUM/SET members as the column's bytes (in its charset): what its
    /// cells hold. Empty for UTF-8 and ASCII columns (`members` are those).
    pub members_raw: Vec<Vec<u8>>,
    pub field: Field,
}

/// A captured or streamed table.
#[derive(Debug, Clone)]
pub struct TableMeta {
    pub name: String,
    pub columns: Vec<ColumnMeta>,
    /// Indexes into `columns` of the key a copy is ordered and resumed by,
    /// in key order: the primary key, else the primary key equivalent, else
    /// all columns (see [`crate::row_key`]).
    pub pk: Vec<usize>,
    /// The index behind `pk` (`PRIMARY` or the equivalent's), forced by
    /// the copy as vttablet does; `None` when `pk` is every column.
    pub pk_index: Option<String>,
}

impl TableMeta {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// Backtick-quotes an identifier.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes bytes as a MySQL literal for a column (for values sent back by
/// clients, such as `last_known_pk`, that must be compared in SQL). Binary
/// columns get a hex literal; text with non-ASCII bytes is converted from hex
/// so no escaping subtleties matter.
pub fn quote_literal_for(col: &ColumnMeta, bytes: &[u8]) -> String {
    let binary = matches!(
        col.vtype,
        Type::Binary | Type::Varbinary | Type::Blob | Type::Bit | Type::Geometry
    );
    if binary {
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        return if hex.is_empty() {
            "''".into()
        } else {
            format!("X'{hex}'")
        };
    }
    // Text comes from MariaDB in its column's own charset (the shard
    // connections read results as binary), so it goes back in it too.
    let plain = col.charset.bytes().all(|b| b.is_ascii_alphanumeric());
    let wide = matches!(col.charset.as_str(), "ucs2" | "utf16" | "utf16le" | "utf32");
    let foreign = wide || bytes.iter().any(|b| *b >= 0x80);
    if !col.charset.is_empty() && plain && !bytes.is_empty() && foreign {
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        return format!("CONVERT(X'{hex}' USING {})", col.charset);
    }
    quote_literal(bytes)
}

/// Quotes bytes as a MySQL string literal.
pub fn quote_literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('\'');
    for &b in bytes {
        match b {
            b'\'' => out.push_str("''"),
            b'\\' => out.push_str("\\\\"),
            0 => out.push_str("\\0"),
            _ => out.push(b as char),
        }
    }
    out.push('\'');
    // Non-ASCII bytes were pushed as Latin-1 chars above; re-encode exactly.
    if bytes.iter().any(|b| *b >= 0x80) {
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        return format!("CONVERT(X'{hex}' USING utf8mb4)");
    }
    out
}

/// MySQL 8 drops integer display widths from COLUMN_TYPE (except the
/// `tinyint(1)` boolean convention) and YEAR's `(4)`; MariaDB keeps them.
pub fn mysql8_column_type(column_type: &str) -> String {
    for ty in ["bigint", "mediumint", "smallint", "int", "year", "tinyint"] {
        if let Some(rest) = column_type.strip_prefix(ty) {
            if let Some(inner) = rest.strip_prefix('(') {
                if let Some((width, tail)) = inner.split_once(')') {
                    if ty == "tinyint" && width == "1" {
                        return column_type.to_string();
                    }
                    if width.chars().all(|c| c.is_ascii_digit()) {
                        return format!("{ty}{tail}");
                    }
                }
            }
            return column_type.to_string();
        }
    }
    column_type.to_string()
}

/// SQL expression doing [`mysql8_column_type`] on `expr` (for the
/// information_schema views of the MySQL front).
pub fn mysql8_column_type_sql(expr: &str) -> String {
    format!(
        "REGEXP_REPLACE(REGEXP_REPLACE({expr}, '^(bigint|mediumint|smallint|int|year)\\\\([0-9]+\\\\)', '\\\\1'), \
         '^tinyint\\\\(([02-9]|[0-9][0-9]+)\\\\)', 'tinyint')"
    )
}

/// Maps information_schema DATA_TYPE (+ unsignedness) to the Vitess type.
pub fn vitess_type(data_type: &str, column_type: &str) -> Type {
    let unsigned = column_type.contains("unsigned");
    match data_type {
        "tinyint" if unsigned => Type::Uint8,
        "tinyint" => Type::Int8,
        "smallint" if unsigned => Type::Uint16,
        "smallint" => Type::Int16,
        "mediumint" if unsigned => Type::Uint24,
        "mediumint" => Type::Int24,
        "int" | "integer" if unsigned => Type::Uint32,
        "int" | "integer" => Type::Int32,
        "bigint" if unsigned => Type::Uint64,
        "bigint" => Type::Int64,
        "year" => Type::Year,
        "float" => Type::Float32,
        "double" | "real" => Type::Float64,
        "decimal" | "numeric" => Type::Decimal,
        "date" => Type::Date,
        "datetime" => Type::Datetime,
        "timestamp" => Type::Timestamp,
        "time" => Type::Time,
        "char" => Type::Char,
        "varchar" => Type::Varchar,
        "binary" => Type::Binary,
        "varbinary" => Type::Varbinary,
        "tinytext" | "text" | "mediumtext" | "longtext" => Type::Text,
        "tinyblob" | "blob" | "mediumblob" | "longblob" => Type::Blob,
        "bit" => Type::Bit,
        "enum" => Type::Enum,
        "set" => Type::Set,
        "json" => Type::Json,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" => Type::Geometry,
        "uuid" | "inet4" | "inet6" => Type::Varchar,
        _ => Type::Varbinary,
    }
}

/// MySQL's `NUM_FLAG`: not sent by the server, but added by the MySQL
/// client library, and by Vitess, whose fields (vtgate's FIELD events
/// included) carry it on every numeric column.
pub const NUM_FLAG: u32 = 32768;

/// The types Vitess's client marks with [`NUM_FLAG`]: integers (YEAR too),
/// floats and decimals (`IsNum` in vitess go/mysql).
fn is_num(t: Type) -> bool {
    use Type::*;
    matches!(
        t,
        Int8 | Uint8
            | Int16
            | Uint16
            | Int24
            | Uint24
            | Int32
            | Uint32
            | Int64
            | Uint64
            | Float32
            | Float64
            | Decimal
            | Year
    )
}

/// Parses the members of `enum('a','b')` / `set('a','b')`.
pub fn parse_members(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[start + 1..];
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut cur = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    cur.push('\'');
                } else {
                    break;
                }
            } else if c == '\\' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else {
                cur.push(c);
            }
        }
        out.push(cur);
    }
    out
}

/// Loads a table's metadata. `database` is the backing database; `keyspace`
/// goes into `Field.database`. Returns `None` when the table does not exist.
pub async fn load_table(
    conn: &mut mysql_async::Conn,
    database: &str,
    keyspace: &str,
    table: &str,
) -> Result<Option<TableMeta>, mysql_async::Error> {
    type InfoRow = (String, String, String, String, String);
    let info: Vec<InfoRow> = conn
        .exec(
            "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(column_type AS CHAR), \
             CAST(table_name AS CHAR), CAST(IFNULL(character_set_name, '') AS CHAR) \
             FROM information_schema.columns WHERE table_schema = ? AND table_name = ? \
             ORDER BY ordinal_position",
            (database, table),
        )
        .await?;
    if info.is_empty() {
        return Ok(None);
    }
    let real_name = info[0].3.clone();
    let json_cols = json_columns(conn, database, &real_name).await?;
    let index_parts = crate::row_key::index_parts(conn, database, &real_name).await?;
    // Protocol metadata (length, charset, decimals, flags) from a zero-row read.
    let select = format!(
        "SELECT * FROM {}.{} LIMIT 0",
        quote_ident(database),
        quote_ident(&real_name)
    );
    // Read twice: with binary results each column names its own collation
    // (vttablet sends the column's own bytes and charset id), while its
    // length is the one a utf8mb4 result gives (vttablet's connection is
    // utf8mb4: a latin1 VARCHAR(32) is 128 long there).
    conn.query_drop("SET @psdb_csr = @@character_set_results, character_set_results = NULL")
        .await?;
    let proto_cols = zero_row_columns(conn, &select).await?;
    conn.query_drop("SET character_set_results = utf8mb4")
        .await?;
    let utf8_cols = zero_row_columns(conn, &select).await?;
    conn.query_drop("SET character_set_results = @psdb_csr")
        .await?;

    let mut columns = Vec::with_capacity(info.len());
    for (i, (name, data_type, column_type, _, charset)) in info.into_iter().enumerate() {
        let is_json = json_cols.iter().any(|j| j.eq_ignore_ascii_case(&name));
        let (data_type, column_type) = if is_json {
            ("json".to_string(), "json".to_string())
        } else {
            (
                data_type.to_ascii_lowercase(),
                mysql8_column_type(&column_type),
            )
        };
        let vtype = vitess_type(&data_type, &column_type);
        let members = if matches!(vtype, Type::Enum | Type::Set) {
            parse_members(&column_type)
        } else {
            Vec::new()
        };
        let members_raw = members_in(conn, &members, &charset).await?;
        let mut field = Field {
            name: name.clone(),
            r#type: vtype as i32,
            table: real_name.clone(),
            org_table: real_name.clone(),
            database: keyspace.to_string(),
            org_name: name.clone(),
            column_type: column_type.clone(),
            ..Default::default()
        };
        if let Some(pc) = proto_cols.get(i) {
            field.column_length = utf8_cols
                .get(i)
                .map_or(pc.column_length(), |c| c.column_length());
            field.charset = u32::from(pc.character_set());
            field.decimals = u32::from(pc.decimals());
            field.flags = u32::from(pc.flags().bits());
            if is_num(vtype) {
                field.flags |= NUM_FLAG;
            }
        }
        if matches!(charset.as_str(), "gbk" | "big5") {
            // vttablet v0.24.4 (over MariaDB) sends collation id 0 for gbk
            // and big5 columns, whose collations Vitess does not know; the
            // bytes are still the column's own.
            field.charset = 0;
        }
        if is_json {
            // MySQL 8 reports JSON as binary-charset BLOB-flagged columns.
            field.charset = 63;
            field.column_length = 4_294_967_295;
            field.flags |= 16 | 128;
        }
        columns.push(ColumnMeta {
            name,
            data_type,
            column_type,
            vtype,
            members,
            charset,
            members_raw,
            field,
        });
    }
    let key = crate::row_key::table_key(&index_parts, |name| {
        columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .map(|c| c.data_type.as_str())
    });
    let mut pk: Vec<usize> = key
        .iter()
        .flat_map(|k| &k.columns)
        .filter_map(|n| columns.iter().position(|c| c.name.eq_ignore_ascii_case(n)))
        .collect();
    let mut pk_index = key.map(|k| k.name);
    if pk.is_empty() {
        pk = (0..columns.len()).collect();
        pk_index = None;
    }
    Ok(Some(TableMeta {
        name: real_name,
        columns,
        pk,
        pk_index,
    }))
}

/// Columns of a table carrying MariaDB's JSON marker, `CHECK (json_valid(col))`.
/// ENUM/SET members in the column's charset, as MariaDB converts them.
async fn members_in(
    conn: &mut mysql_async::Conn,
    members: &[String],
    charset: &str,
) -> Result<Vec<Vec<u8>>, mysql_async::Error> {
    let utf8 = matches!(charset, "" | "utf8mb4" | "utf8mb3" | "utf8" | "ascii");
    let plain = charset.bytes().all(|b| b.is_ascii_alphanumeric());
    if utf8 || !plain || members.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let hex: Option<String> = conn
            .exec_first(
                format!(
                    "SELECT HEX(CONVERT(CAST(? AS CHAR CHARACTER SET utf8mb4) USING {charset}))"
                ),
                (m.as_str(),),
            )
            .await?;
        let hex = hex.unwrap_or_default();
        let bytes = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        out.push(bytes);
    }
    Ok(out)
}

/// Appends an ENUM/SET change cell as vttablet sends it: its members as
/// the UTF-8 text of the schema, where a copy sends the column's own bytes.
pub fn push_member_text(col: &ColumnMeta, raw: &[u8], out: &mut Vec<u8>) {
    let text = |part: &[u8]| {
        col.members_raw
            .iter()
            .position(|m| m.as_slice() == part)
            .and_then(|i| col.members.get(i))
    };
    match col.vtype {
        Type::Enum => match text(raw) {
            Some(m) => out.extend_from_slice(m.as_bytes()),
            None => out.extend_from_slice(raw),
        },
        Type::Set if !raw.is_empty() => {
            for (i, part) in raw.split(|b| *b == b',').enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match text(part) {
                    Some(m) => out.extend_from_slice(m.as_bytes()),
                    None => out.extend_from_slice(part),
                }
            }
        }
        _ => out.extend_from_slice(raw),
    }
}

/// The column definitions of a zero-row read.
async fn zero_row_columns(
    conn: &mut mysql_async::Conn,
    select: &str,
) -> Result<Vec<mysql_async::Column>, mysql_async::Error> {
    let result = conn.query_iter(select).await?;
    let cols = result
        .columns()
        .map(|c| c.iter().cloned().collect())
        .unwrap_or_default();
    result.drop_result().await?;
    Ok(cols)
}

pub async fn json_columns(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
) -> Result<Vec<String>, mysql_async::Error> {
    let clauses: Vec<String> = conn
        .exec(
            "SELECT CAST(check_clause AS CHAR) FROM information_schema.check_constraints \
             WHERE constraint_schema = ? AND table_name = ?",
            (database, table),
        )
        .await?;
    Ok(clauses
        .iter()
        .filter_map(|c| {
            let c = c.trim();
            let inner = c.strip_prefix("json_valid(`")?.strip_suffix("`)")?;
            Some(inner.replace("``", "`"))
        })
        .collect())
}

/// The index of the member whose bytes `raw` are.
fn member_index(col: &ColumnMeta, raw: &[u8]) -> Option<usize> {
    if col.members_raw.is_empty() {
        col.members.iter().position(|m| m.as_bytes() == raw)
    } else {
        col.members_raw.iter().position(|m| m.as_slice() == raw)
    }
}

/// Appends one cell in change-phase form (see [`ChangeText::ChangeForms`]).
pub fn push_change_form(col: &ColumnMeta, raw: &[u8], out: &mut Vec<u8>) {
    match col.vtype {
        Type::Decimal => {
            if let Some(rest) = raw.strip_prefix(b"0.") {
                out.push(b'.');
                out.extend_from_slice(rest);
            } else if let Some(rest) = raw.strip_prefix(b"-0.") {
                out.extend_from_slice(b"-.");
                out.extend_from_slice(rest);
            } else {
                out.extend_from_slice(raw);
            }
        }
        Type::Float32 | Type::Float64 => {
            let text = std::str::from_utf8(raw).ok();
            let formatted = if col.vtype == Type::Float32 {
                text.and_then(|t| t.parse::<f32>().ok())
                    .map(|f| go_exp(&format!("{f:E}")))
            } else {
                text.and_then(|t| t.parse::<f64>().ok())
                    .map(|f| go_exp(&format!("{f:E}")))
            };
            match formatted {
                Some(f) => out.extend_from_slice(f.as_bytes()),
                None => out.extend_from_slice(raw),
            }
        }
        Type::Enum => {
            let idx = member_index(col, raw).map_or(0, |i| i + 1);
            out.extend_from_slice(idx.to_string().as_bytes());
        }
        Type::Set => {
            let mut mask: u64 = 0;
            if !raw.is_empty() {
                for part in raw.split(|b| *b == b',') {
                    if let Some(i) = member_index(col, part) {
                        if i < 64 {
                            mask |= 1 << i;
                        }
                    }
                }
            }
            out.extend_from_slice(mask.to_string().as_bytes());
        }
        _ => out.extend_from_slice(raw),
    }
}

/// Turns Rust's `1.5E0` into Go's `1.5E+00` (`strconv.FormatFloat(f, 'E', -1, …)`).
fn go_exp(rust: &str) -> String {
    let Some((mant, exp)) = rust.split_once('E') else {
        return rust.to_string();
    };
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    if digits.len() < 2 {
        format!("{mant}E{sign}0{digits}")
    } else {
        format!("{mant}E{sign}{digits}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_exponent_form() {
        assert_eq!(go_exp(&format!("{:E}", 1.5f64)), "1.5E+00");
        assert_eq!(go_exp(&format!("{:E}", -0.000123f64)), "-1.23E-04");
        assert_eq!(go_exp(&format!("{:E}", 1e100f64)), "1E+100");
    }

    #[test]
    fn mysql8_types() {
        assert_eq!(mysql8_column_type("int(11)"), "int");
        assert_eq!(mysql8_column_type("int(10) unsigned"), "int unsigned");
        assert_eq!(mysql8_column_type("tinyint(1)"), "tinyint(1)");
        assert_eq!(mysql8_column_type("tinyint(4)"), "tinyint");
        assert_eq!(
            mysql8_column_type("bigint(20) unsigned zerofill"),
            "bigint unsigned zerofill"
        );
        assert_eq!(mysql8_column_type("decimal(8,2)"), "decimal(8,2)");
        assert_eq!(mysql8_column_type("year(4)"), "year");
    }

    #[test]
    fn members() {
        assert_eq!(parse_members("enum('a','b''c','')"), vec!["a", "b'c", ""]);
        assert_eq!(parse_members("set('x','y')"), vec!["x", "y"]);
    }
}
