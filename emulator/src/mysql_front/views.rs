//! The information_schema views, so the keyspace looks like the database.
//!
//! `information_schema.{columns,tables,statistics,key_column_usage}` are
//! served by views over the real ones (in a helper database, see
//! [`views_database`]) that show the first shard's backing database as the
//! keyspace, MariaDB JSON columns (LONGTEXT with a `json_valid` check) as
//! `json`, MariaDB column types in MySQL 8's spelling, and hide the
//! emulator's `_psdb_*` objects. [`super::rewrite`] points queries at them.
//!
//! The JSON columns come from a small indexed table the shim refreshes before
//! each read of the `columns` view, not from a correlated lookup in
//! check_constraints per column (minutes over a thousand tables).

use mysql_async::prelude::Queryable;

use super::FrontConfig;
use crate::values::quote_ident;

/// information_schema tables served through mapping views.
pub(super) const MAPPED_TABLES: [&str; 4] = ["columns", "tables", "statistics", "key_column_usage"];

/// The database holding the information_schema views: the first shard's
/// own database (see [`crate::capture::own_database`]), removed with it.
pub fn views_database(cfg: &FrontConfig) -> String {
    let first = cfg.shards.values().next().cloned().unwrap_or_default();
    crate::capture::own_database(&first)
}

/// Creates the mapping views over information_schema for the first shard.
pub(super) async fn create_views(cfg: &FrontConfig) -> Result<(), mysql_async::Error> {
    let db = cfg.shards.values().next().cloned().unwrap_or_default();
    let views = views_database(cfg);
    let mut conn = mysql_async::Conn::new(cfg.backing.clone()).await?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        quote_ident(&views)
    ))
    .await?;
    let db_lit = crate::values::quote_literal(db.as_bytes());
    let ks_lit = crate::values::quote_literal(cfg.keyspace.as_bytes());
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {}.`json_columns` (table_name VARCHAR(64) NOT NULL, \
         column_name VARCHAR(64) NOT NULL, PRIMARY KEY (table_name, column_name)) \
         DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        quote_ident(&views)
    ))
    .await?;
    for table in MAPPED_TABLES {
        let cols: Vec<String> = conn
            .exec(
                "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                 WHERE table_schema = 'information_schema' AND table_name = ? \
                 ORDER BY ordinal_position",
                (table.to_ascii_uppercase(),),
            )
            .await?;
        // JSON columns come from a small indexed table the front refreshes
        // before each read of this view; a correlated lookup in
        // check_constraints per column took minutes over a thousand tables.
        let json = "j.table_name IS NOT NULL";
        let select: Vec<String> = cols
            .iter()
            .map(|c| {
                let q = quote_ident(c);
                let upper = c.to_ascii_uppercase();
                if upper.ends_with("_SCHEMA") {
                    format!("CASE WHEN x.{q} = {db_lit} THEN {ks_lit} ELSE x.{q} END AS {q}")
                } else if table == "columns" && upper == "DATA_TYPE" {
                    format!("CASE WHEN {json} THEN 'json' ELSE x.{q} END AS {q}")
                } else if table == "columns" && upper == "COLUMN_TYPE" {
                    let fixed = crate::values::mysql8_column_type_sql(&format!("x.{q}"));
                    format!("CASE WHEN {json} THEN 'json' ELSE {fixed} END AS {q}")
                } else {
                    format!("x.{q}")
                }
            })
            .collect();
        let join = if table == "columns" {
            format!(
                " LEFT JOIN {}.`json_columns` j ON j.table_name = x.table_name \
                 AND j.column_name = x.column_name",
                quote_ident(&views)
            )
        } else {
            String::new()
        };
        conn.query_drop(format!(
            "CREATE OR REPLACE SQL SECURITY INVOKER VIEW {}.{} AS SELECT {} \
             FROM information_schema.{} x{join} WHERE x.table_schema = {db_lit} \
             AND x.table_name NOT LIKE '\\_psdb\\_%'",
            quote_ident(&views),
            quote_ident(table),
            select.join(", "),
            table
        ))
        .await?;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

/// Brings the table of JSON columns up to date before a query reads the
/// `columns` view: one pass over check_constraints, as one transaction so
/// concurrent readers see the old or the new list.
pub(super) fn refresh_json_columns_sql(cfg: &FrontConfig) -> String {
    let views = quote_ident(&views_database(cfg));
    let first = cfg.shards.values().next().cloned().unwrap_or_default();
    let db_lit = crate::values::quote_literal(first.as_bytes());
    format!(
        "START TRANSACTION; DELETE FROM {views}.`json_columns`; \
         INSERT IGNORE INTO {views}.`json_columns` (table_name, column_name) \
         SELECT table_name, SUBSTRING(check_clause, 13, CHAR_LENGTH(check_clause) - 14) \
         FROM information_schema.check_constraints \
         WHERE constraint_schema = {db_lit} AND check_clause LIKE 'json\\_valid(`%`)'; COMMIT"
    )
}
