//! SQL rewriting, so the keyspace looks like the database: keyspace
//! qualifiers become the backing database, mapped information_schema tables
//! become the views of [`super::views`], `@@socket` is hidden; and the small
//! classifiers the shim routes statements by.

use super::views::MAPPED_TABLES;
use crate::values::quote_ident;

/// Replaces `@@socket` (any case) with `NULL`.
pub(super) fn hide_socket(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("@@socket") {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    let mut rest_lower = lower.as_str();
    while let Some(i) = rest_lower.find("@@socket") {
        out.push_str(&rest[..i]);
        out.push_str("NULL");
        rest = &rest[i + 8..];
        rest_lower = &rest_lower[i + 8..];
    }
    out.push_str(rest);
    out
}

/// Statements vtgate applies to every shard of the keyspace.
pub(super) fn is_ddl(q: &str) -> bool {
    let first = q
        .trim_start()
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        first.as_str(),
        "create" | "alter" | "drop" | "truncate" | "rename"
    )
}

pub(super) fn first_is_hidden(vals: &[mysql_async::Value]) -> bool {
    matches!(vals.first(), Some(mysql_async::Value::Bytes(b)) if b.starts_with(crate::capture::PREFIX.as_bytes()))
}

pub(super) fn is_show_tables(q: &str) -> bool {
    let lower = q.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().take(3).collect();
    matches!(
        words.as_slice(),
        ["show", "tables", ..] | ["show", "full", "tables"]
    )
}

/// Extracts the pattern of `... LIKE '<p>'` / `LIKE "<p>"`.
pub(super) fn like_pattern(q: &str) -> Option<String> {
    let lower = q.to_ascii_lowercase();
    let i = lower.find(" like ")?;
    let rest = q[i + 6..].trim();
    let quote = rest.chars().next()?;
    if quote != '\'' && quote != '"' {
        return None;
    }
    let inner = &rest[1..];
    let end = inner.find(quote)?;
    Some(inner[..end].to_string())
}

/// SQL LIKE (case-insensitive, `%` and `_`, backslash escapes).
pub(super) fn like_match(pattern: &str, value: &str) -> bool {
    fn go(p: &[char], v: &[char]) -> bool {
        match p.first() {
            None => v.is_empty(),
            Some('%') => (0..=v.len()).any(|i| go(&p[1..], &v[i..])),
            Some('_') => !v.is_empty() && go(&p[1..], &v[1..]),
            Some('\\') if p.len() > 1 => {
                !v.is_empty() && v[0].eq_ignore_ascii_case(&p[1]) && go(&p[2..], &v[1..])
            }
            Some(c) => !v.is_empty() && v[0].eq_ignore_ascii_case(c) && go(&p[1..], &v[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    go(&p, &v)
}

/// Rewrites, outside string literals and comments: `information_schema.<mapped>`
/// to the views database, and the keyspace used as a schema qualifier (or
/// after FROM/IN) to the backing database.
pub fn rewrite_sql(sql: &str, keyspace: &str, database: &str, views: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() + 32);
    let mut i = 0;
    let mut prev_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() {
                if chars[i] == '\\' {
                    i += 2;
                    continue;
                }
                if chars[i] == c {
                    if i + 1 < chars.len() && chars[i + 1] == c {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            out.extend(&chars[start..i]);
            prev_word.clear();
            continue;
        }
        if c == '`' || c.is_alphanumeric() || c == '_' || c == '$' {
            let (ident, next) = read_ident(&chars, i);
            // Qualified name?
            let mut j = next;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let qualified = j < chars.len() && chars[j] == '.';
            if qualified && ident.eq_ignore_ascii_case("information_schema") {
                let mut k = j + 1;
                while k < chars.len() && chars[k] == ' ' {
                    k += 1;
                }
                let (table, after) = read_ident(&chars, k);
                let lt = table.to_ascii_lowercase();
                if MAPPED_TABLES.contains(&lt.as_str()) {
                    out.push_str(&format!("{}.{}", quote_ident(views), quote_ident(&lt)));
                    i = after;
                    prev_word.clear();
                    continue;
                }
            }
            let after_from = matches!(prev_word.as_str(), "from" | "in");
            if ident == keyspace && (qualified || after_from) {
                out.push_str(&quote_ident(database));
            } else {
                out.extend(&chars[i..next]);
            }
            prev_word = ident.to_ascii_lowercase();
            i = next;
            continue;
        }
        if !c.is_whitespace() {
            prev_word.clear();
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Reads an identifier (bare or backticked) at `i`; returns it and the index after.
fn read_ident(chars: &[char], i: usize) -> (String, usize) {
    if chars.get(i) == Some(&'`') {
        let mut s = String::new();
        let mut k = i + 1;
        while k < chars.len() {
            if chars[k] == '`' {
                if chars.get(k + 1) == Some(&'`') {
                    s.push('`');
                    k += 2;
                    continue;
                }
                return (s, k + 1);
            }
            s.push(chars[k]);
            k += 1;
        }
        return (s, k);
    }
    let mut k = i;
    while k < chars.len() && (chars[k].is_alphanumeric() || chars[k] == '_' || chars[k] == '$') {
        k += 1;
    }
    (chars[i..k].iter().collect(), k)
}

/// Whether a query reads `information_schema.columns`, whose view needs the
/// JSON column list.
pub(super) fn reads_columns(query: &str) -> bool {
    let lower = query.to_ascii_lowercase();
    lower.contains("information_schema") && lower.contains("columns")
}

/// The table a `TRUNCATE [TABLE] [schema.]name` statement empties.
pub(super) fn truncated_table(q: &str) -> Option<String> {
    let chars: Vec<char> = q.trim().trim_end_matches(';').chars().collect();
    let mut i = 0;
    let word = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
        let (w, next) = read_ident(&chars, *i);
        *i = next;
        w
    };
    if !word(&mut i).eq_ignore_ascii_case("truncate") {
        return None;
    }
    let mut name = word(&mut i);
    if name.eq_ignore_ascii_case("table") {
        name = word(&mut i);
    }
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    if chars.get(i) == Some(&'.') {
        i += 1;
        name = word(&mut i);
    }
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites() {
        let r = rewrite_sql(
            "select column_name from information_schema.columns where table_schema = 'ks'",
            "ks",
            "ks_db",
            "_psdb_v_ks_db",
        );
        assert_eq!(
            r,
            "select column_name from `_psdb_v_ks_db`.`columns` where table_schema = 'ks'"
        );
        assert_eq!(
            rewrite_sql("show tables from `ks`", "ks", "d", "v"),
            "show tables from `d`"
        );
        assert_eq!(
            rewrite_sql("select * from ks.t", "ks", "d", "v"),
            "select * from `d`.t"
        );
        assert_eq!(
            rewrite_sql("select ks from t", "ks", "d", "v"),
            "select ks from t"
        );
    }

    #[test]
    fn truncates() {
        for (q, want) in [
            ("TRUNCATE TABLE t", Some("t")),
            ("truncate t;", Some("t")),
            ("TRUNCATE TABLE `odd name`", Some("odd name")),
            ("TRUNCATE TABLE ks.`t`", Some("t")),
            ("TRUNCATE TABLE `ks` . t2", Some("t2")),
            ("TRUNCATEX t", None),
            ("DELETE FROM t", None),
        ] {
            assert_eq!(truncated_table(q).as_deref(), want, "{q}");
        }
    }

    #[test]
    fn like() {
        assert!(like_match("%ks%", "ks/-80"));
        assert!(!like_match("%zz%", "ks/-80"));
        assert!(like_match("ks/_80", "ks/-80"));
    }
}
