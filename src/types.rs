//! MySQL column type → JSON Schema for discovery. Pure and table-tested.
//!
//! The input is `information_schema.columns.column_type` (`int unsigned`,
//! `tinyint(1)`, `decimal(12,2)`, `enum('a','b')`), which MySQL 8 and
//! MariaDB both fill. Every property is nullable, key columns included:
//! delete records carry only keys, and a schema that forbids null breaks
//! targets. Integers carry exact bounds so SQL targets can size columns.

use serde_json::{json, Map, Value};

/// The parts of a column type that mapping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType<'a> {
    /// Lowercased base name: `int`, `decimal`, `enum`.
    pub base: String,
    /// Text inside the first parentheses, if any: `1`, `12,2`, `'a','b'`.
    pub args: Option<&'a str>,
    pub unsigned: bool,
}

impl<'a> ColumnType<'a> {
    pub fn parse(text: &'a str) -> ColumnType<'a> {
        let trimmed = text.trim();
        let (head, args, tail) = match (trimmed.find('('), trimmed.rfind(')')) {
            (Some(open), Some(close)) if close > open => (
                &trimmed[..open],
                Some(&trimmed[open + 1..close]),
                &trimmed[close + 1..],
            ),
            _ => {
                let (h, t) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
                (h, None, t)
            }
        };
        let unsigned = tail.to_ascii_lowercase().contains("unsigned")
            || head.to_ascii_lowercase().contains(" unsigned");
        let base = head
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        ColumnType {
            base,
            args,
            unsigned,
        }
    }

    /// The first numeric argument (`varchar(64)` → 64, `bit(5)` → 5).
    pub fn length(&self) -> Option<u64> {
        self.args?.split(',').next()?.trim().parse().ok()
    }

    /// Members of an `enum(...)`/`set(...)` list, unquoted (`''` → `'`).
    pub fn members(&self) -> Vec<String> {
        let Some(args) = self.args else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut chars = args.chars().peekable();
        let mut in_quote = false;
        while let Some(c) = chars.next() {
            match (in_quote, c) {
                (false, '\'') => in_quote = true,
                (true, '\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    cur.push('\'');
                }
                (true, '\'') => {
                    in_quote = false;
                    out.push(std::mem::take(&mut cur));
                }
                (true, '\\') => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                (true, c) => cur.push(c),
                (false, _) => {}
            }
        }
        out
    }
}

/// How discovery renders tinyint(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeOptions {
    pub tinyint_as_boolean: bool,
}

/// JSON Schema for one column. Unknown types become nullable strings, which
/// is what the server sends for them anyway (text).
pub fn json_schema(column_type: &str, opts: TypeOptions) -> Value {
    let ct = ColumnType::parse(column_type);
    let mut m = Map::new();
    let ty = |t: &str| json!(["null", t]);
    let int_range = |m: &mut Map<String, Value>, min: i128, max: i128| {
        m.insert("type".into(), json!(["null", "integer"]));
        m.insert("minimum".into(), int_value(min));
        m.insert("maximum".into(), int_value(max));
    };
    match ct.base.as_str() {
        "tinyint" if ct.args == Some("1") && !ct.unsigned && opts.tinyint_as_boolean => {
            m.insert("type".into(), ty("boolean"));
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
            let bits = match ct.base.as_str() {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                "int" | "integer" => 32,
                _ => 64,
            };
            if ct.unsigned {
                int_range(&mut m, 0, (1i128 << bits) - 1);
            } else {
                int_range(&mut m, -(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
            }
        }
        "year" => int_range(&mut m, 0, 2155),
        "bit" => match ct.length().unwrap_or(1) {
            1 => {
                m.insert("type".into(), ty("boolean"));
            }
            n => int_range(&mut m, 0, (1i128 << n.min(64)) - 1),
        },
        "decimal" | "numeric" | "dec" | "fixed" | "float" | "double" | "real" => {
            m.insert("type".into(), ty("number"));
        }
        "date" => {
            m.insert("type".into(), ty("string"));
            m.insert("format".into(), json!("date"));
        }
        "datetime" | "timestamp" => {
            m.insert("type".into(), ty("string"));
            m.insert("format".into(), json!("date-time"));
        }
        "char" | "varchar" => {
            m.insert("type".into(), ty("string"));
            if let Some(n) = ct.length() {
                m.insert("maxLength".into(), json!(n));
            }
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "geometry"
        | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => {
            m.insert("type".into(), ty("string"));
            m.insert("contentEncoding".into(), json!("base64"));
        }
        "json" => {
            m.insert(
                "type".into(),
                json!(["null", "object", "array", "string", "number", "boolean"]),
            );
        }
        // time, text types, enum, set and anything new: text.
        _ => {
            m.insert("type".into(), ty("string"));
        }
    }
    Value::Object(m)
}

fn int_value(n: i128) -> Value {
    if let Ok(i) = i64::try_from(n) {
        json!(i)
    } else if let Ok(u) = u64::try_from(n) {
        json!(u)
    } else {
        json!(n.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: TypeOptions = TypeOptions {
        tinyint_as_boolean: false,
    };
    const BOOL: TypeOptions = TypeOptions {
        tinyint_as_boolean: true,
    };

    #[test]
    fn mapping_table() {
        let cases: &[(&str, TypeOptions, &str)] = &[
            (
                "tinyint(1)",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":-128,"maximum":127}"#,
            ),
            ("tinyint(1)", BOOL, r#"{"type":["null","boolean"]}"#),
            (
                "tinyint(1) unsigned",
                BOOL,
                r#"{"type":["null","integer"],"minimum":0,"maximum":255}"#,
            ),
            (
                "tinyint(4)",
                BOOL,
                r#"{"type":["null","integer"],"minimum":-128,"maximum":127}"#,
            ),
            (
                "tinyint unsigned",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":255}"#,
            ),
            (
                "smallint(6)",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":-32768,"maximum":32767}"#,
            ),
            (
                "smallint unsigned",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":65535}"#,
            ),
            (
                "mediumint",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":-8388608,"maximum":8388607}"#,
            ),
            (
                "mediumint(8) unsigned",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":16777215}"#,
            ),
            (
                "int(11)",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":-2147483648,"maximum":2147483647}"#,
            ),
            (
                "int unsigned",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":4294967295}"#,
            ),
            (
                "int(10) unsigned zerofill",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":4294967295}"#,
            ),
            (
                "bigint(20)",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":-9223372036854775808,"maximum":9223372036854775807}"#,
            ),
            (
                "bigint unsigned",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":18446744073709551615}"#,
            ),
            (
                "year",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":2155}"#,
            ),
            (
                "year(4)",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":2155}"#,
            ),
            ("bit(1)", PLAIN, r#"{"type":["null","boolean"]}"#),
            (
                "bit(12)",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":4095}"#,
            ),
            (
                "bit(64)",
                PLAIN,
                r#"{"type":["null","integer"],"minimum":0,"maximum":18446744073709551615}"#,
            ),
            ("decimal(12,2)", PLAIN, r#"{"type":["null","number"]}"#),
            (
                "decimal(65,30) unsigned",
                PLAIN,
                r#"{"type":["null","number"]}"#,
            ),
            ("float", PLAIN, r#"{"type":["null","number"]}"#),
            ("double", PLAIN, r#"{"type":["null","number"]}"#),
            (
                "date",
                PLAIN,
                r#"{"type":["null","string"],"format":"date"}"#,
            ),
            (
                "datetime",
                PLAIN,
                r#"{"type":["null","string"],"format":"date-time"}"#,
            ),
            (
                "datetime(6)",
                PLAIN,
                r#"{"type":["null","string"],"format":"date-time"}"#,
            ),
            (
                "timestamp(3)",
                PLAIN,
                r#"{"type":["null","string"],"format":"date-time"}"#,
            ),
            ("time(6)", PLAIN, r#"{"type":["null","string"]}"#),
            (
                "char(3)",
                PLAIN,
                r#"{"type":["null","string"],"maxLength":3}"#,
            ),
            (
                "varchar(64)",
                PLAIN,
                r#"{"type":["null","string"],"maxLength":64}"#,
            ),
            ("text", PLAIN, r#"{"type":["null","string"]}"#),
            ("longtext", PLAIN, r#"{"type":["null","string"]}"#),
            ("enum('a','b')", PLAIN, r#"{"type":["null","string"]}"#),
            ("set('x','y')", PLAIN, r#"{"type":["null","string"]}"#),
            (
                "binary(4)",
                PLAIN,
                r#"{"type":["null","string"],"contentEncoding":"base64"}"#,
            ),
            (
                "varbinary(16)",
                PLAIN,
                r#"{"type":["null","string"],"contentEncoding":"base64"}"#,
            ),
            (
                "blob",
                PLAIN,
                r#"{"type":["null","string"],"contentEncoding":"base64"}"#,
            ),
            (
                "longblob",
                PLAIN,
                r#"{"type":["null","string"],"contentEncoding":"base64"}"#,
            ),
            (
                "geometry",
                PLAIN,
                r#"{"type":["null","string"],"contentEncoding":"base64"}"#,
            ),
            (
                "point",
                PLAIN,
                r#"{"type":["null","string"],"contentEncoding":"base64"}"#,
            ),
            (
                "json",
                PLAIN,
                r#"{"type":["null","object","array","string","number","boolean"]}"#,
            ),
            ("uuid", PLAIN, r#"{"type":["null","string"]}"#),
            ("vector(3)", PLAIN, r#"{"type":["null","string"]}"#),
        ];
        for (ct, opts, want) in cases {
            let got = serde_json::to_string(&json_schema(ct, *opts)).expect("serialize");
            assert_eq!(got, *want, "{ct}");
        }
    }

    #[test]
    fn enum_members() {
        let cases: &[(&str, &[&str])] = &[
            ("enum('a','b')", &["a", "b"]),
            ("set('x','y,z')", &["x", "y,z"]),
            ("enum('it''s','')", &["it's", ""]),
            ("enum('a(b)','c')", &["a(b)", "c"]),
            ("int", &[]),
        ];
        for (ct, want) in cases {
            assert_eq!(ColumnType::parse(ct).members(), *want, "{ct}");
        }
    }
}
