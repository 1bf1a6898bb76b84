//! Vitess replication positions and the GTID-set comparisons the stop rule
//! needs. Two flavors exist on the wire:
//!
//! - `MySQL56/<uuid>:<intervals>,…`, from MySQL (and PlanetScale). Each
//!   server UUID has a list of transaction intervals.
//! - `MariaDB/<domain>-<server>-<sequence>,…`, from Vitess tablets over
//!   MariaDB. A MariaDB GTID set holds one GTID per replication domain: the
//!   last one applied, since a domain's sequence is ordered.
//!
//! The Go singer-tap compares positions as strings, which misses the stop
//! point whenever the server reports a superset (a failover adds a UUID, or
//! events are skipped). We follow Vitess's parsing and containment rules
//! instead. MySQL56: intervals are sorted by start but not merged, `N-M`
//! with `M < N` is dropped, a repeated UUID appends its intervals, and
//! `Contains` asks that each interval of the smaller set fits inside one
//! interval of the larger. MariaDB: a repeated domain keeps its last GTID,
//! and `Contains` asks that every domain of the smaller set is present in
//! the larger with a sequence at least as high. Positions of different
//! flavors never contain each other.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PositionError {
    #[error(
        "position \"{0}\" has no flavor; expected `MySQL56/<uuid>:<n>-<m>` or `MariaDB/<domain>-<server>-<sequence>`"
    )]
    NoFlavor(String),
    #[error("position flavor \"{0}\" is not supported; expected MySQL56 or MariaDB")]
    Flavor(String),
    #[error("position part \"{0}\" is not `<uuid>:<n>[-<m>]`")]
    Part(String),
    #[error("position part \"{0}\" is not a MariaDB GTID `<domain>-<server>-<sequence>`")]
    MariadbPart(String),
}

/// MySQL56 GTIDs: server UUID bytes → intervals (start, end), sorted by
/// start, not merged.
type Mysql56Set = BTreeMap<[u8; 16], Vec<(u64, u64)>>;

/// A parsed GTID set. The empty position (no `/`, empty string) is the
/// start of time, whatever the flavor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Position {
    #[default]
    Empty,
    Mysql56(Mysql56Set),
    /// domain → (server, sequence) of the domain's last GTID.
    Mariadb(BTreeMap<u32, (u32, u64)>),
}

impl Position {
    /// Parses a position string. `""` is the empty position.
    pub fn parse(text: &str) -> Result<Position, PositionError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Position::Empty);
        }
        let (flavor, set) = text
            .split_once('/')
            .ok_or_else(|| PositionError::NoFlavor(text.to_string()))?;
        let parsed = match flavor {
            "MySQL56" => Position::Mysql56(parse_mysql56(set)?),
            "MariaDB" => Position::Mariadb(parse_mariadb(set)?),
            _ => return Err(PositionError::Flavor(flavor.to_string())),
        };
        Ok(if parsed.is_empty() {
            Position::Empty
        } else {
            parsed
        })
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Position::Empty => true,
            Position::Mysql56(sets) => sets.is_empty(),
            Position::Mariadb(domains) => domains.is_empty(),
        }
    }

    /// Same flavor and the same GTIDs.
    pub fn equal(&self, other: &Position) -> bool {
        self == other
    }

    /// Every GTID of `other` is in `self`. The empty set is in every set.
    pub fn contains(&self, other: &Position) -> bool {
        match (self, other) {
            (_, Position::Empty) => true,
            (Position::Mysql56(mine), Position::Mysql56(theirs)) => {
                theirs.iter().all(|(sid, ivs)| match mine.get(sid) {
                    None => false,
                    Some(mine) => ivs
                        .iter()
                        .all(|(s, e)| mine.iter().any(|(ms, me)| ms <= s && e <= me)),
                })
            }
            (Position::Mariadb(mine), Position::Mariadb(theirs)) => {
                theirs.iter().all(|(domain, (_, seq))| {
                    mine.get(domain).is_some_and(|(_, my_seq)| my_seq >= seq)
                })
            }
            _ => false,
        }
    }

    /// `self` has reached `other`: true when `other` is empty, false when
    /// `self` is, else `contains`.
    pub fn at_least(&self, other: &Position) -> bool {
        if other.is_empty() {
            return true;
        }
        if self.is_empty() {
            return false;
        }
        self.contains(other)
    }

    /// Strictly newer: at least `other` and not equal to it.
    pub fn after(&self, other: &Position) -> bool {
        !self.equal(other) && self.at_least(other)
    }
}

fn parse_mysql56(set: &str) -> Result<Mysql56Set, PositionError> {
    let mut sets = Mysql56Set::new();
    for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || PositionError::Part(part.to_string());
        let mut pieces = part.split(':');
        let sid = parse_uuid(pieces.next().ok_or_else(bad)?).ok_or_else(bad)?;
        let mut any = false;
        let entry = sets.entry(sid).or_default();
        for iv in pieces {
            any = true;
            let (start, end) = match iv.split_once('-') {
                Some((a, b)) => (parse_gno(a).ok_or_else(bad)?, parse_gno(b).ok_or_else(bad)?),
                None => {
                    let n = parse_gno(iv).ok_or_else(bad)?;
                    (n, n)
                }
            };
            if end >= start {
                entry.push((start, end));
            }
        }
        if !any {
            return Err(bad());
        }
    }
    for ivs in sets.values_mut() {
        ivs.sort_by_key(|iv| iv.0);
    }
    sets.retain(|_, ivs| !ivs.is_empty());
    Ok(sets)
}

/// Vitess keeps the last GTID it reads for a domain, so a repeated domain
/// overrides the earlier one rather than merging.
fn parse_mariadb(set: &str) -> Result<BTreeMap<u32, (u32, u64)>, PositionError> {
    let mut domains = BTreeMap::new();
    for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || PositionError::MariadbPart(part.to_string());
        let mut pieces = part.split('-');
        let (Some(d), Some(s), Some(q), None) =
            (pieces.next(), pieces.next(), pieces.next(), pieces.next())
        else {
            return Err(bad());
        };
        let domain: u32 = d.parse().map_err(|_| bad())?;
        let server: u32 = s.parse().map_err(|_| bad())?;
        let sequence: u64 = q.parse().map_err(|_| bad())?;
        domains.insert(domain, (server, sequence));
    }
    Ok(domains)
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Empty => Ok(()),
            Position::Mysql56(sets) => write_mysql56(f, sets),
            Position::Mariadb(domains) => {
                f.write_str("MariaDB/")?;
                for (i, (domain, (server, seq))) in domains.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{domain}-{server}-{seq}")?;
                }
                Ok(())
            }
        }
    }
}

fn write_mysql56(f: &mut fmt::Formatter<'_>, sets: &Mysql56Set) -> fmt::Result {
    f.write_str("MySQL56/")?;
    for (i, (sid, ivs)) in sets.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write_uuid(f, sid)?;
        for (s, e) in ivs {
            if s == e {
                write!(f, ":{s}")?;
            } else {
                write!(f, ":{s}-{e}")?;
            }
        }
    }
    Ok(())
}

/// String-level helpers with the Go semantics: false when either side is
/// empty or does not parse.
pub fn at_least(a: &str, b: &str) -> bool {
    match (Position::parse(a), Position::parse(b)) {
        (Ok(a), Ok(b)) if !a.is_empty() && !b.is_empty() => a.at_least(&b),
        _ => false,
    }
}

fn parse_gno(s: &str) -> Option<u64> {
    let n: u64 = s.trim().parse().ok()?;
    (1..=i64::MAX as u64).contains(&n).then_some(n)
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.trim().bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || s.trim().len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn write_uuid(f: &mut fmt::Formatter<'_>, b: &[u8; 16]) -> fmt::Result {
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_str("-")?;
        }
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "e42292e8-e28f-11ec-9c5b-d680f5d655b3";
    const B: &str = "e4e20f06-e28f-11ec-8d20-8e7ac09cb64c";

    fn p(s: &str) -> Position {
        Position::parse(s).expect(s)
    }

    #[test]
    fn parse_and_print() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("MySQL56/", ""),
            (&format!("MySQL56/{A}:1-5"), &format!("MySQL56/{A}:1-5")),
            (&format!("MySQL56/{A}:3-3"), &format!("MySQL56/{A}:3")),
            (
                &format!("MySQL56/ {B}:1-2 , {A}:7:1-3 "),
                &format!("MySQL56/{A}:1-3:7,{B}:1-2"),
            ),
            (&format!("MySQL56/{A}:5-2:1-2"), &format!("MySQL56/{A}:1-2")),
            (
                &format!("MySQL56/{A}:1-2,{A}:4-6"),
                &format!("MySQL56/{A}:1-2:4-6"),
            ),
            (
                &format!("MySQL56/{}:1", A.to_uppercase()),
                &format!("MySQL56/{A}:1"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).to_string(), *want, "{input}");
        }
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "garbage",
            "current",
            "FilePos/x:1",
            "MariaDB/0-1",
            "MariaDB/0-1-2-3",
            "MariaDB/x-1-2",
            "MariaDB/0-1-",
            "MariaDB/4294967296-1-2",
            "MariaDB/0-1-18446744073709551616",
            "MariaDB/-1-1",
            &format!("MySQL56/{A}"),
            &format!("MySQL56/{A}:x"),
            &format!("MySQL56/{A}:0-3"),
            "MySQL56/not-a-uuid:1-2",
            &format!("MySQL56/{A}:1-99999999999999999999"),
        ] {
            assert!(Position::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn comparisons() {
        // (a, b, equal, contains, at_least, after)
        let cases: Vec<(String, String, bool, bool, bool, bool)> = vec![
            (
                format!("MySQL56/{A}:1-5"),
                format!("MySQL56/{A}:1-5"),
                true,
                true,
                true,
                false,
            ),
            (
                format!("MySQL56/{A}:1-6"),
                format!("MySQL56/{A}:1-5"),
                false,
                true,
                true,
                true,
            ),
            (
                format!("MySQL56/{A}:1-5"),
                format!("MySQL56/{A}:1-6"),
                false,
                false,
                false,
                false,
            ),
            (
                format!("MySQL56/{A}:1-5,{B}:1-2"),
                format!("MySQL56/{A}:1-5"),
                false,
                true,
                true,
                true,
            ),
            (
                format!("MySQL56/{A}:1-5"),
                format!("MySQL56/{A}:1-5,{B}:1"),
                false,
                false,
                false,
                false,
            ),
            // not merged: 1-3 and 4-6 do not hold 2-5 in one interval
            (
                format!("MySQL56/{A}:1-3:4-6"),
                format!("MySQL56/{A}:2-5"),
                false,
                false,
                false,
                false,
            ),
            (
                format!("MySQL56/{A}:1-3:5-6"),
                format!("MySQL56/{A}:2-3:5"),
                false,
                true,
                true,
                true,
            ),
            (
                format!("MySQL56/{A}:1-5"),
                String::new(),
                false,
                true,
                true,
                true,
            ),
            (
                String::new(),
                format!("MySQL56/{A}:1-5"),
                false,
                false,
                false,
                false,
            ),
            (String::new(), String::new(), true, true, true, false),
        ];
        for (a, b, eq, con, al, aft) in cases {
            let (pa, pb) = (p(&a), p(&b));
            assert_eq!(pa.equal(&pb), eq, "equal {a} {b}");
            assert_eq!(pa.contains(&pb), con, "contains {a} {b}");
            assert_eq!(pa.at_least(&pb), al, "at_least {a} {b}");
            assert_eq!(pa.after(&pb), aft, "after {a} {b}");
        }
    }

    #[test]
    fn string_helper_has_go_semantics() {
        let a = format!("MySQL56/{A}:1-5");
        assert!(at_least(&a, &a));
        assert!(!at_least("", &a));
        assert!(!at_least(&a, ""));
        assert!(!at_least(&a, "junk"));
    }

    #[test]
    fn mariadb_parse_and_print() {
        let cases: &[(&str, &str)] = &[
            ("MariaDB/", ""),
            ("MariaDB/0-1-123", "MariaDB/0-1-123"),
            (" MariaDB/ 1-2-5 , 0-1-123 ", "MariaDB/0-1-123,1-2-5"),
            // a repeated domain keeps the last GTID, as Vitess does
            ("MariaDB/0-1-9,0-2-7", "MariaDB/0-2-7"),
            (
                "MariaDB/0-1-18446744073709551615",
                "MariaDB/0-1-18446744073709551615",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).to_string(), *want, "{input}");
        }
    }

    #[test]
    fn mariadb_comparisons() {
        // (a, b, equal, contains, at_least, after)
        let cases: &[(&str, &str, bool, bool, bool, bool)] = &[
            ("MariaDB/0-1-5", "MariaDB/0-1-5", true, true, true, false),
            ("MariaDB/0-1-6", "MariaDB/0-1-5", false, true, true, true),
            ("MariaDB/0-1-5", "MariaDB/0-1-6", false, false, false, false),
            // containment is per domain, by sequence; the server id does not matter
            ("MariaDB/0-2-6", "MariaDB/0-1-5", false, true, true, true),
            (
                "MariaDB/0-1-5,1-1-3",
                "MariaDB/0-1-5",
                false,
                true,
                true,
                true,
            ),
            (
                "MariaDB/0-1-5",
                "MariaDB/0-1-5,1-1-1",
                false,
                false,
                false,
                false,
            ),
            (
                "MariaDB/0-1-9,1-1-2",
                "MariaDB/0-1-5,1-1-3",
                false,
                false,
                false,
                false,
            ),
            ("MariaDB/0-1-5", "", false, true, true, true),
            ("", "MariaDB/0-1-5", false, false, false, false),
            // flavors never contain each other
            ("MariaDB/0-1-5", MYSQL_A, false, false, false, false),
            (MYSQL_A, "MariaDB/0-1-5", false, false, false, false),
        ];
        for (a, b, eq, con, al, aft) in cases {
            let (pa, pb) = (p(a), p(b));
            assert_eq!(pa.equal(&pb), *eq, "equal {a} {b}");
            assert_eq!(pa.contains(&pb), *con, "contains {a} {b}");
            assert_eq!(pa.at_least(&pb), *al, "at_least {a} {b}");
            assert_eq!(pa.after(&pb), *aft, "after {a} {b}");
        }
    }

    const MYSQL_A: &str = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5";
}
