//! The key a table is copied and resumed by, chosen as vttablet chooses it.
//!
//! The rowstreamer (`buildPKColumns`) orders a copy by the primary key; a
//! table without one is ordered by its "primary key equivalent" (PKE,
//! `mysqlctl.GetPrimaryKeyEquivalentColumns`): among the UNIQUE indexes
//! whose every column is NOT NULL, the lowest summed type cost
//! ([`type_cost`]), then the fewest columns, its columns in index order;
//! a copy of it forces that index. With neither, every column is the key.
//! The key's columns are the copy's `last_known_pk`/lastpk fields, and the
//! Connect front sends them as a deleted row.
//!
//! Vitess leaves ties to MySQL's `ORDER BY ... LIMIT 1`; MariaDB (this
//! emulator's server, and the real Vitess's in the test bed) answers the
//! last tied index in its index order, so [`pk_equivalent`] does too.

use mysql_async::prelude::Queryable;

/// One row of information_schema.statistics for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPart {
    pub index: String,
    pub column: Option<String>,
    pub seq: u64,
    pub non_unique: bool,
    pub nullable: bool,
}

/// A table's key as vttablet picks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    /// `PRIMARY` or the PKE's index name.
    pub name: String,
    /// Column names in index order.
    pub columns: Vec<String>,
}

/// The statistics rows of a table, in the server's index order (no ORDER
/// BY: that order settles ties).
pub async fn index_parts(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
) -> Result<Vec<IndexPart>, mysql_async::Error> {
    type StatRow = (String, Option<String>, u64, u64, String);
    let rows: Vec<StatRow> = conn
        .exec(
            "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR), seq_in_index, \
             non_unique, CAST(nullable AS CHAR) \
             FROM information_schema.statistics WHERE table_schema = ? AND table_name = ?",
            (database, table),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(index, column, seq, non_unique, nullable)| IndexPart {
            index,
            column,
            seq,
            non_unique: non_unique != 0,
            nullable: nullable.eq_ignore_ascii_case("YES"),
        })
        .collect())
}

/// The primary key, else the PKE, else `None` (every column is the key).
/// `data_type` gives a column's information_schema DATA_TYPE.
pub fn table_key<'a>(
    parts: &[IndexPart],
    data_type: impl Fn(&str) -> Option<&'a str>,
) -> Option<KeyIndex> {
    let mut names: Vec<&str> = Vec::new();
    for p in parts {
        if !names.contains(&p.index.as_str()) {
            names.push(&p.index);
        }
    }
    let index = |name: &str| {
        let mut mine: Vec<&IndexPart> = parts.iter().filter(|p| p.index == name).collect();
        mine.sort_by_key(|p| p.seq);
        mine
    };
    if names.contains(&"PRIMARY") {
        let columns = index("PRIMARY")
            .iter()
            .filter_map(|p| p.column.clone())
            .collect();
        return Some(KeyIndex {
            name: "PRIMARY".into(),
            columns,
        });
    }
    pk_equivalent(&names, index, data_type)
}

/// Vitess's PKE among the indexes `names` (server order).
fn pk_equivalent<'p, 'a>(
    names: &[&str],
    index: impl Fn(&str) -> Vec<&'p IndexPart>,
    data_type: impl Fn(&str) -> Option<&'a str>,
) -> Option<KeyIndex> {
    let mut best: Option<((u64, usize), KeyIndex)> = None;
    for name in names {
        let parts = index(name);
        let eligible = parts
            .iter()
            .all(|p| !p.non_unique && !p.nullable && p.column.is_some());
        if !eligible || parts.is_empty() {
            continue;
        }
        let columns: Vec<String> = parts.iter().filter_map(|p| p.column.clone()).collect();
        let cost: u64 = columns
            .iter()
            .map(|c| type_cost(data_type(c).unwrap_or_default()))
            .sum();
        let rank = (cost, columns.len());
        // `<=`: of equal ranks, the last in server order wins.
        if best.as_ref().is_none_or(|(r, _)| rank <= *r) {
            best = Some((
                rank,
                KeyIndex {
                    name: name.to_string(),
                    columns,
                },
            ));
        }
    }
    best.map(|(_, k)| k)
}

/// vttablet's cost of a DATA_TYPE as a key part.
fn type_cost(data_type: &str) -> u64 {
    const COSTS: [(&str, u64); 21] = [
        ("enum", 0),
        ("tinyint", 1),
        ("year", 2),
        ("smallint", 3),
        ("date", 4),
        ("mediumint", 5),
        ("time", 6),
        ("int", 7),
        ("set", 8),
        ("timestamp", 9),
        ("bigint", 10),
        ("float", 11),
        ("double", 12),
        ("decimal", 13),
        ("datetime", 14),
        ("binary", 30),
        ("char", 31),
        ("varbinary", 60),
        ("varchar", 61),
        ("tinyblob", 80),
        ("tinytext", 81),
    ];
    COSTS
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(data_type))
        .map_or(1000, |(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(index: &str, column: &str, seq: u64, non_unique: bool, nullable: bool) -> IndexPart {
        IndexPart {
            index: index.into(),
            column: (!column.is_empty()).then(|| column.to_string()),
            seq,
            non_unique,
            nullable,
        }
    }

    #[test]
    fn the_key_is_vttablets() {
        let types = [
            ("id", "int"),
            ("s", "varchar"),
            ("n", "bigint"),
            ("m", "int"),
            ("e", "enum"),
            ("t", "tinyint"),
            ("j", "longtext"),
        ];
        let ty = |c: &str| types.iter().find(|(n, _)| *n == c).map(|(_, t)| *t);
        // (statistics rows in server order, expected key)
        type Want = Option<(&'static str, Vec<&'static str>)>;
        let cases: Vec<(Vec<IndexPart>, Want)> = vec![
            (vec![], None),
            (
                vec![
                    part("u", "m", 1, false, false),
                    part("PRIMARY", "n", 2, false, false),
                    part("PRIMARY", "id", 1, false, false),
                ],
                Some(("PRIMARY", vec!["id", "n"])),
            ),
            (
                vec![
                    part("zs", "s", 1, false, false),
                    part("yn", "n", 1, false, false),
                    part("xm", "m", 1, false, false),
                ],
                Some(("xm", vec!["m"])),
            ),
            // composite in seq order, cheaper by summed cost
            (
                vec![
                    part("one", "m", 1, false, false),
                    part("two", "t", 2, false, false),
                    part("two", "e", 1, false, false),
                ],
                Some(("two", vec!["e", "t"])),
            ),
            // nullable or non-unique parts, or an expression: no PKE
            (
                vec![
                    part("a", "m", 1, false, true),
                    part("b", "n", 1, true, false),
                    part("c", "m", 1, false, false),
                    part("c", "", 2, false, false),
                ],
                None,
            ),
            // ties: the last in server order
            (
                vec![
                    part("zz", "m", 1, false, false),
                    part("aa", "id", 1, false, false),
                ],
                Some(("aa", vec!["id"])),
            ),
            (
                vec![
                    part("aa", "m", 1, false, false),
                    part("zz", "id", 1, false, false),
                ],
                Some(("zz", vec!["id"])),
            ),
            // unknown types cost most
            (
                vec![
                    part("j", "j", 1, false, false),
                    part("s", "s", 1, false, false),
                ],
                Some(("s", vec!["s"])),
            ),
        ];
        for (parts, want) in cases {
            let got = table_key(&parts, ty);
            let want = want.map(|(name, cols)| KeyIndex {
                name: name.into(),
                columns: cols.iter().map(|c| c.to_string()).collect(),
            });
            assert_eq!(got, want, "{parts:?}");
        }
    }
}
