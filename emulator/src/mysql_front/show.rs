//! The Vitess-only statements, answered by the front itself from its
//! configuration as vtgate answers them from its topology
//! (wire-protocol.md §7): `SHOW VITESS_SHARDS [LIKE ...]`,
//! `SHOW VITESS_TABLETS` (a primary, a replica and an rdonly tablet per
//! shard, all serving) and `SHOW DATABASES` (the keyspace alone).

use super::results::{text_result, ResultSet};
use super::rewrite::{like_match, like_pattern};
use super::FrontConfig;

/// Answers the Vitess-only statements; `None` means forward it.
pub(super) fn answer(cfg: &FrontConfig, query: &str) -> Option<ResultSet> {
    let q = query.trim().trim_end_matches(';').trim();
    let lower = q.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    if words.len() >= 2 && words[0] == "show" && words[1] == "vitess_shards" {
        let pattern = like_pattern(q);
        let rows = cfg
            .shards
            .keys()
            .map(|s| format!("{}/{}", cfg.keyspace, s))
            .filter(|v| pattern.as_deref().is_none_or(|p| like_match(p, v)))
            .map(|v| vec![mysql_async::Value::Bytes(v.into_bytes())])
            .collect();
        return Some(text_result(&["Shards"], rows));
    }
    if words.len() >= 2 && words[0] == "show" && words[1] == "vitess_tablets" {
        let mut rows = Vec::new();
        let mut uid = 100u32;
        for shard in cfg.shards.keys() {
            for ty in ["PRIMARY", "REPLICA", "RDONLY"] {
                uid += 1;
                let start = if ty == "PRIMARY" {
                    "2024-01-01T00:00:00Z"
                } else {
                    ""
                };
                let vals = [
                    cfg.cell.as_str(),
                    cfg.keyspace.as_str(),
                    shard.as_str(),
                    ty,
                    "SERVING",
                    &format!("{}-{:010}", cfg.cell, uid),
                    "127.0.0.1",
                    start,
                ];
                rows.push(
                    vals.iter()
                        .map(|v| mysql_async::Value::Bytes(v.as_bytes().to_vec()))
                        .collect(),
                );
            }
        }
        return Some(text_result(
            &[
                "Cell",
                "Keyspace",
                "Shard",
                "TabletType",
                "State",
                "Alias",
                "Hostname",
                "PrimaryTermStartTime",
            ],
            rows,
        ));
    }
    if words.len() == 2 && words[0] == "show" && words[1] == "databases" {
        return Some(text_result(
            &["Database"],
            vec![vec![mysql_async::Value::Bytes(
                cfg.keyspace.clone().into_bytes(),
            )]],
        ));
    }
    None
}
