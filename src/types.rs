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

/// How DECIMAL columns, and integers wider than a signed 64-bit one
/// (BIGINT UNSIGNED, BIT(64)), are typed.
///
/// SQL targets size their columns from the schema: a JSON `number` becomes a
/// float in pipelinewise-target-postgres and target-duckdb (digits lost),
/// and an `integer` above 2^63-1 crashes meltanolabs-target-postgres, whose
/// `BIGINT` cannot hold it. A string with the Meltano SDK's
/// `x-singer.decimal` format, `precision` and `scale` becomes an exact
/// `numeric(p,s)` in SDK targets and exact text elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalEncoding {
    /// `number` / `integer`: the exact digits as a JSON number.
    Number,
    /// `string` with `format: x-singer.decimal`, `precision` and `scale`.
    #[default]
    String,
}

/// How binary and geometry columns are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinaryEncoding {
    /// `contentEncoding: base64`.
    #[default]
    Base64,
    /// `contentEncoding: base16` (lowercase hex), which SDK targets such as
    /// meltanolabs-target-postgres store as `bytea`.
    Base16,
}

/// How JSON columns are written.
///
/// A JSON column may hold a bare string. pipelinewise-target-postgres and
/// target-duckdb write such a value unquoted into their JSON column and the
/// load fails, losing the run; as text every target loads every document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonEncoding {
    /// The parsed JSON value, any JSON type (jsonb in
    /// meltanolabs-target-postgres).
    Value,
    /// The JSON document as a string.
    #[default]
    String,
}

/// Parses a setting's text; `None` names no known value.
pub trait Encoding: Sized + Copy + 'static {
    /// Every accepted value, in the order documented.
    const VALUES: &'static [(&'static str, Self)];

    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::VALUES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, v)| *v)
    }

    /// The accepted values, for an error message: `` `a` or `b` ``.
    fn expected() -> String {
        let names: Vec<String> = Self::VALUES.iter().map(|(n, _)| format!("`{n}`")).collect();
        names.join(" or ")
    }
}

impl Encoding for DecimalEncoding {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("string", DecimalEncoding::String),
        ("number", DecimalEncoding::Number),
    ];
}

impl Encoding for BinaryEncoding {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("base64", BinaryEncoding::Base64),
        ("base16", BinaryEncoding::Base16),
    ];
}

impl Encoding for JsonEncoding {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("value", JsonEncoding::Value),
        ("string", JsonEncoding::String),
    ];
}

/// The three encodings discovery applies, from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encodings {
    pub decimal: DecimalEncoding,
    pub binary: BinaryEncoding,
    pub json: JsonEncoding,
}

/// How discovery renders column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TypeOptions {
    pub tinyint_as_boolean: bool,
    pub encodings: Encodings,
}

/// The Meltano SDK's format for exact decimals carried as strings.
pub const DECIMAL_FORMAT: &str = "x-singer.decimal";

/// Precision and scale of `decimal(p[,s])`; MySQL's default is (10,0).
fn decimal_digits(ct: &ColumnType) -> (u64, u64) {
    let mut parts = ct.args.unwrap_or("").split(',').map(str::trim);
    let precision = parts.next().and_then(|p| p.parse().ok()).unwrap_or(10);
    let scale = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (precision, scale)
}

/// JSON Schema for one column. Unknown types become nullable strings, which
/// is what the server sends for them anyway (text).
pub fn json_schema(column_type: &str, opts: TypeOptions) -> Value {
    let ct = ColumnType::parse(column_type);
    let mut m = Map::new();
    let ty = |t: &str| json!(["null", t]);
    let decimal_string = |m: &mut Map<String, Value>, precision: u64, scale: u64| {
        m.insert("type".into(), ty("string"));
        m.insert("format".into(), json!(DECIMAL_FORMAT));
        m.insert("precision".into(), json!(precision));
        m.insert("scale".into(), json!(scale));
    };
    let as_strings = opts.encodings.decimal == DecimalEncoding::String;
    let int_range = |m: &mut Map<String, Value>, min: i128, max: i128| {
        if as_strings && max > i128::from(i64::MAX) {
            // Wider than a signed BIGINT: its decimal digits, exactly.
            let digits = max.to_string().len() as u64;
            decimal_string(m, digits, 0);
            return;
        }
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
        "decimal" | "numeric" | "dec" | "fixed" if as_strings => {
            let (precision, scale) = decimal_digits(&ct);
            decimal_string(&mut m, precision, scale);
        }
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
            let encoding = match opts.encodings.binary {
                BinaryEncoding::Base64 => "base64",
                BinaryEncoding::Base16 => "base16",
            };
            m.insert("type".into(), ty("string"));
            m.insert("contentEncoding".into(), json!(encoding));
        }
        "json" => match opts.encodings.json {
            JsonEncoding::Value => {
                m.insert(
                    "type".into(),
                    json!(["null", "object", "array", "string", "number", "boolean"]),
                );
            }
            JsonEncoding::String => {
                m.insert("type".into(), ty("string"));
            }
        },
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

    /// Numbers for decimals, base64, JSON values: the encodings the
    /// mapping table below was written for.
    const NUMBERS: Encodings = Encodings {
        decimal: DecimalEncoding::Number,
        binary: BinaryEncoding::Base64,
        json: JsonEncoding::Value,
    };
    const PLAIN: TypeOptions = TypeOptions {
        tinyint_as_boolean: false,
        encodings: NUMBERS,
    };
    const BOOL: TypeOptions = TypeOptions {
        tinyint_as_boolean: true,
        encodings: NUMBERS,
    };

    /// (column type, options, the JSON schema written)
    const MAPPING: &[(&str, TypeOptions, &str)] = &[
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

    #[test]
    fn mapping_table() {
        let cases = MAPPING;
        for (ct, opts, want) in cases {
            let got = serde_json::to_string(&json_schema(ct, *opts)).expect("serialize");
            assert_eq!(got, *want, "{ct}");
        }
    }

    #[test]
    fn encodings_table() {
        let strings = TypeOptions {
            tinyint_as_boolean: false,
            encodings: Encodings {
                decimal: DecimalEncoding::String,
                binary: BinaryEncoding::Base16,
                json: JsonEncoding::String,
            },
        };
        let cases: &[(&str, TypeOptions, &str)] = &[
            (
                "decimal(12,2)",
                strings,
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":12,"scale":2}"#,
            ),
            (
                "decimal(65,30) unsigned",
                strings,
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":65,"scale":30}"#,
            ),
            (
                "decimal(5)",
                strings,
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":5,"scale":0}"#,
            ),
            (
                "decimal",
                strings,
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":10,"scale":0}"#,
            ),
            (
                "numeric(8,3)",
                strings,
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":8,"scale":3}"#,
            ),
            (
                "bigint(20) unsigned",
                strings,
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":20,"scale":0}"#,
            ),
            (
                "bit(64)",
                strings,
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":20,"scale":0}"#,
            ),
            // What a signed BIGINT holds stays an integer.
            (
                "bigint",
                strings,
                r#"{"type":["null","integer"],"minimum":-9223372036854775808,"maximum":9223372036854775807}"#,
            ),
            (
                "bit(63)",
                strings,
                r#"{"type":["null","integer"],"minimum":0,"maximum":9223372036854775807}"#,
            ),
            (
                "int unsigned",
                strings,
                r#"{"type":["null","integer"],"minimum":0,"maximum":4294967295}"#,
            ),
            // Floats are approximate: numbers under every encoding.
            ("double", strings, r#"{"type":["null","number"]}"#),
            ("float", strings, r#"{"type":["null","number"]}"#),
            (
                "varbinary(16)",
                strings,
                r#"{"type":["null","string"],"contentEncoding":"base16"}"#,
            ),
            (
                "point",
                strings,
                r#"{"type":["null","string"],"contentEncoding":"base16"}"#,
            ),
            ("json", strings, r#"{"type":["null","string"]}"#),
            // The defaults: decimal strings, base64, JSON values.
            (
                "decimal(12,2)",
                TypeOptions::default(),
                r#"{"type":["null","string"],"format":"x-singer.decimal","precision":12,"scale":2}"#,
            ),
            (
                "blob",
                TypeOptions::default(),
                r#"{"type":["null","string"],"contentEncoding":"base64"}"#,
            ),
            (
                "json",
                TypeOptions::default(),
                r#"{"type":["null","string"]}"#,
            ),
        ];
        for (ct, opts, want) in cases {
            let got = serde_json::to_string(&json_schema(ct, *opts)).expect("serialize");
            assert_eq!(got, *want, "{ct} {opts:?}");
        }
    }

    #[test]
    fn encoding_names() {
        assert_eq!(
            DecimalEncoding::parse(" Number "),
            Some(DecimalEncoding::Number)
        );
        assert_eq!(
            DecimalEncoding::parse("string"),
            Some(DecimalEncoding::String)
        );
        assert_eq!(DecimalEncoding::parse("float"), None);
        assert_eq!(
            BinaryEncoding::parse("base16"),
            Some(BinaryEncoding::Base16)
        );
        assert_eq!(BinaryEncoding::parse("hex"), None);
        assert_eq!(JsonEncoding::parse("value"), Some(JsonEncoding::Value));
        assert_eq!(JsonEncoding::expected(), "`value` or `string`");
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
