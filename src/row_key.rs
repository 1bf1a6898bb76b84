//! The key that identifies a row of a table: its primary key, or else the
//! index Vitess uses in its place, its "primary key equivalent" (PKE).
//!
//! Vitess's vstreamer copies a table in key order and resumes a copy after
//! the last key sent. For a table without a primary key it asks MySQL for a
//! PKE (`mysqlctl.GetPrimaryKeyEquivalentColumns`, used by the rowstreamer's
//! `buildPKColumns` through `Engine.mapPKEquivalentCols`): among the UNIQUE
//! indexes whose every column is NOT NULL, the one with the lowest summed
//! type cost ([`type_cost`]: small fixed-size types first, long strings and
//! anything unknown last), then the fewest columns; its columns in index
//! order. Such an index identifies a row as well as a primary key does, so
//! the tap keys the table by it and follows its changes; only a table with
//! neither stays keyless (copied in full, see `sync::plan::method_for`).
//!
//! Vitess leaves a tie (equal cost and column count) to the server's answer
//! to its `ORDER BY ... LIMIT 1`. MariaDB 10.11, the server under this
//! project's real Vitess, answers the last of the tied indexes in its index
//! order (measured); [`equivalent`] picks the same. Any candidate is a valid
//! key for a target, so a different pick by another server only changes
//! which unique key is declared, never the data.
//!
//! Everything here is pure: `mysql::describe_schema` reads the indexes.

use crate::types::ColumnType;

/// A UNIQUE index whose columns are all NOT NULL: a candidate PKE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    pub name: String,
    /// Columns in index order (`seq_in_index`).
    pub columns: Vec<String>,
}

/// Where a table's row key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// The primary key.
    Primary,
    /// No primary key; this UNIQUE NOT NULL index stands in for it.
    Equivalent { index: &'a str },
    /// Neither: rows cannot be told apart by any key.
    None,
}

/// A table's row key: its columns in key order (empty when keyless) and
/// where they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKey<'a> {
    pub columns: &'a [String],
    pub source: KeySource<'a>,
}

impl RowKey<'_> {
    /// The primary key if there is one, else the PKE among `unique`
    /// (candidates in the server's index order), else none.
    pub fn of<'a>(
        primary_key: &'a [String],
        unique: &'a [UniqueIndex],
        column_type: impl Fn(&str) -> Option<&'a str>,
    ) -> RowKey<'a> {
        if !primary_key.is_empty() {
            return RowKey {
                columns: primary_key,
                source: KeySource::Primary,
            };
        }
        match equivalent(unique, column_type) {
            Some(ix) => RowKey {
                columns: &ix.columns,
                source: KeySource::Equivalent { index: &ix.name },
            },
            None => RowKey {
                columns: &[],
                source: KeySource::None,
            },
        }
    }

    pub fn is_keyless(&self) -> bool {
        self.source == KeySource::None
    }
}

/// Vitess's choice of PKE among the candidates: lowest summed
/// [`type_cost`], then fewest columns, then the last in server order (see
/// the module docs). `column_type` gives a column's `column_type`.
pub fn equivalent<'a>(
    unique: &'a [UniqueIndex],
    column_type: impl Fn(&str) -> Option<&'a str>,
) -> Option<&'a UniqueIndex> {
    let cost = |ix: &UniqueIndex| -> u64 {
        ix.columns
            .iter()
            .map(|c| type_cost(&column_type(c).map(base_type).unwrap_or_default()))
            .sum()
    };
    // `min_by_key` keeps the first of equal minima; reversed, the last.
    unique
        .iter()
        .filter(|ix| !ix.columns.is_empty())
        .rev()
        .min_by_key(|ix| (cost(ix), ix.columns.len()))
}

/// information_schema's DATA_TYPE of a COLUMN_TYPE: its lowercased base name.
fn base_type(column_type: &str) -> String {
    ColumnType::parse(column_type).base
}

/// Vitess's cost of a column type as a key part: fixed-size and small
/// types are cheap, strings dear, anything else (text, blob, json, bit,
/// geometry) dearest.
pub fn type_cost(data_type: &str) -> u64 {
    match data_type {
        "enum" => 0,
        "tinyint" => 1,
        "year" => 2,
        "smallint" => 3,
        "date" => 4,
        "mediumint" => 5,
        "time" => 6,
        "int" => 7,
        "set" => 8,
        "timestamp" => 9,
        "bigint" => 10,
        "float" => 11,
        "double" => 12,
        "decimal" => 13,
        "datetime" => 14,
        "binary" => 30,
        "char" => 31,
        "varbinary" => 60,
        "varchar" => 61,
        "tinyblob" => 80,
        "tinytext" => 81,
        _ => 1000,
    }
}

/// One row of information_schema.statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPart {
    pub index: String,
    /// Empty for an expression part (MySQL 8 functional index).
    pub column: String,
    pub seq: u64,
    pub non_unique: bool,
    pub nullable: bool,
}

/// A table's primary key and candidate PKEs from its statistics rows, in
/// the order the server listed them. An index is a candidate when every
/// part is unique, NOT NULL and a plain column (Vitess's query keeps
/// expression parts out of its cost but then cannot map them to a column;
/// the tap does not offer such an index).
pub fn indexes(parts: &[IndexPart]) -> (Vec<String>, Vec<UniqueIndex>) {
    let mut order: Vec<&str> = Vec::new();
    for p in parts {
        if !order.contains(&p.index.as_str()) {
            order.push(&p.index);
        }
    }
    let mut primary = Vec::new();
    let mut unique = Vec::new();
    for name in order {
        let mut mine: Vec<&IndexPart> = parts.iter().filter(|p| p.index == name).collect();
        mine.sort_by_key(|p| p.seq);
        let columns: Vec<String> = mine.iter().map(|p| p.column.clone()).collect();
        if name == "PRIMARY" {
            primary = columns;
        } else if mine
            .iter()
            .all(|p| !p.non_unique && !p.nullable && !p.column.is_empty())
        {
            unique.push(UniqueIndex {
                name: name.to_string(),
                columns,
            });
        }
    }
    (primary, unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(index: &str, column: &str, seq: u64, non_unique: bool, nullable: bool) -> IndexPart {
        IndexPart {
            index: index.into(),
            column: column.into(),
            seq,
            non_unique,
            nullable,
        }
    }

    fn ix(name: &str, cols: &[&str]) -> UniqueIndex {
        UniqueIndex {
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn indexes_split_primary_and_candidates() {
        // (statistics rows, primary key, candidates)
        let cases: &[(Vec<IndexPart>, &[&str], Vec<UniqueIndex>)] = &[
            (
                vec![
                    part("PRIMARY", "b", 2, false, false),
                    part("PRIMARY", "a", 1, false, false),
                ],
                &["a", "b"],
                vec![],
            ),
            (
                vec![
                    part("k_ab", "b", 2, false, false),
                    part("k_n", "n", 1, false, true),
                    part("k_ab", "a", 1, false, false),
                    part("ix", "v", 1, true, false),
                    part("k_c", "c", 1, false, false),
                ],
                &[],
                vec![ix("k_ab", &["a", "b"]), ix("k_c", &["c"])],
            ),
            // one nullable part disqualifies a composite unique key
            (
                vec![
                    part("k", "a", 1, false, false),
                    part("k", "b", 2, false, true),
                ],
                &[],
                vec![],
            ),
            // an expression part has no column name
            (vec![part("k", "", 1, false, false)], &[], vec![]),
        ];
        for (parts, pk, unique) in cases {
            let (p, u) = indexes(parts);
            assert_eq!(p, pk.to_vec(), "{parts:?}");
            assert_eq!(&u, unique, "{parts:?}");
        }
    }

    #[test]
    fn vitess_picks_the_cheapest_then_narrowest_then_last() {
        let types = [
            ("s", "varchar(10)"),
            ("n", "bigint(20)"),
            ("m", "int(11)"),
            ("e", "enum('a','b')"),
            ("t", "tinyint(1)"),
            ("d", "datetime(6)"),
            ("j", "longtext"),
            ("u", "int unsigned"),
        ];
        let ty = |c: &str| types.iter().find(|(n, _)| *n == c).map(|(_, t)| *t);
        // (candidates in server order, expected pick)
        let cases: &[(Vec<UniqueIndex>, Option<&str>)] = &[
            (vec![], None),
            (vec![ix("k", &["s"])], Some("k")),
            // int (7) beats bigint (10) beats varchar (61), whatever the order
            (
                vec![ix("zs", &["s"]), ix("yn", &["n"]), ix("xm", &["m"])],
                Some("xm"),
            ),
            // summed cost: enum+tinyint (1) beats int (7) despite two columns
            (vec![ix("one", &["m"]), ix("two", &["e", "t"])], Some("two")),
            // equal cost: fewer columns (int+enum = 7 = int alone)
            (vec![ix("two", &["m", "e"]), ix("one", &["u"])], Some("one")),
            // ties: the last in server order, not the first by name
            (vec![ix("zz", &["m"]), ix("aa", &["u"])], Some("aa")),
            (vec![ix("aa", &["m"]), ix("zz", &["u"])], Some("zz")),
            // unknown types cost 1000: datetime wins over longtext
            (vec![ix("j", &["j"]), ix("d", &["d"])], Some("d")),
        ];
        for (unique, want) in cases {
            let got = equivalent(unique, ty).map(|i| i.name.as_str());
            assert_eq!(got, *want, "{unique:?}");
        }
    }

    #[test]
    fn the_row_key_prefers_the_primary_key() {
        let pk = vec!["id".to_string()];
        let unique = vec![ix("k", &["code"])];
        let ty = |_: &str| Some("int");
        let key = RowKey::of(&pk, &unique, ty);
        assert_eq!((key.columns, key.source), (&pk[..], KeySource::Primary));
        let key = RowKey::of(&[], &unique, ty);
        assert_eq!(key.columns, ["code".to_string()]);
        assert_eq!(key.source, KeySource::Equivalent { index: "k" });
        let key = RowKey::of(&[], &[], ty);
        assert!(key.is_keyless() && key.columns.is_empty());
    }

    #[test]
    fn type_costs_follow_vitess() {
        let cases = [
            ("enum", 0),
            ("tinyint", 1),
            ("int", 7),
            ("bigint", 10),
            ("datetime", 14),
            ("char", 31),
            ("varchar", 61),
            ("tinytext", 81),
            ("text", 1000),
            ("json", 1000),
        ];
        for (t, want) in cases {
            assert_eq!(type_cost(t), want, "{t}");
        }
    }
}
