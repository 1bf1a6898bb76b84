//! The vtgate-like MySQL front (opensrv-mysql).
//!
//! - Login: a real `mysql_native_password` check against the configured
//!   user/password with a random scramble per connection; TLS when configured
//!   (plain connections are accepted too).
//! - Database names: `ks`, `ks@primary|replica|rdonly`, and `ks:shard[@type]`
//!   to target one shard. Anything else is `ER_BAD_DB_ERROR`.
//! - `SHOW VITESS_SHARDS [LIKE ...]` and `SHOW VITESS_TABLETS` are answered
//!   here (wire-protocol.md §7); `SHOW DATABASES` lists the keyspace.
//! - DDL (CREATE/ALTER/DROP/TRUNCATE/RENAME) goes to every shard unless the
//!   client targeted one shard, and change capture is refreshed right after
//!   it, so rows written next are captured.
//! - Everything else goes to the target shard's backing database (the first
//!   shard by default) on a dedicated backend connection, text queries and
//!   prepared statements alike, with the backend's column types and flags,
//!   NULLs and errors (code and message) passed through.
//! - So that the keyspace looks like the database: the keyspace name used as
//!   a schema qualifier is rewritten to the backing database, and
//!   `information_schema.{columns,tables,statistics,key_column_usage}` are
//!   rewritten to views (in a helper database `_psdb_v_<db>`) that show the
//!   backing database as the keyspace, MariaDB JSON columns as `json`, and
//!   hide the emulator's `_psdb_*` tables. `SHOW TABLES` output is filtered
//!   the same way.
//!
//! Limits: column charset/length/decimals on the wire are opensrv-mysql's
//! fixed values (utf8_general_ci, 1024, 0); negative TIME values and DATE/TIME
//! prepared-statement parameters are not supported; other information_schema
//! tables show the backing database name.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, InitWriter,
    IntermediaryOptions, OkResponse, ParamParser, QueryResultWriter, StatementMetaWriter,
    ValueInner,
};
use tokio::io::AsyncWrite;
use tokio::sync::watch;

use crate::values::quote_ident;

/// What the front needs to know.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    pub keyspace: String,
    /// Shard name → backing database.
    pub shards: BTreeMap<String, String>,
    pub username: String,
    pub password: String,
    pub backing: mysql_async::Opts,
    pub cell: String,
    pub grpc_addr: SocketAddr,
    /// Change capture of every shard, refreshed after DDL through the front
    /// so a table created here is captured before the next statement.
    pub captures: Vec<crate::capture::ShardCapture>,
}

pub struct MysqlFront {
    cfg: Arc<FrontConfig>,
}

/// information_schema tables served through mapping views.
const MAPPED_TABLES: [&str; 4] = ["columns", "tables", "statistics", "key_column_usage"];

impl MysqlFront {
    pub fn new(cfg: FrontConfig) -> MysqlFront {
        MysqlFront { cfg: Arc::new(cfg) }
    }

    /// Name of the helper database holding the information_schema views.
    pub fn views_database(cfg: &FrontConfig) -> String {
        let first = cfg.shards.values().next().cloned().unwrap_or_default();
        let name = format!("_psdb_v_{first}");
        name.chars().take(64).collect()
    }

    /// Creates the views, binds, and serves until shutdown.
    pub async fn serve(
        self,
        addr: SocketAddr,
        tls: Option<Arc<tokio_rustls_025::rustls::ServerConfig>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        if let Err(e) = create_views(&self.cfg).await {
            tracing::warn!(error = %e, "could not create information_schema views");
        }
        let listener = crate::emulator::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::AddrInUse, e.to_string()))?;
        let local = listener.local_addr()?;
        let cfg = self.cfg.clone();
        let task = tokio::spawn(async move {
            let mut conn_id: u32 = 1;
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.changed() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                conn_id = conn_id.wrapping_add(1);
                let shim = Shim::new(cfg.clone(), conn_id);
                let tls = tls.clone();
                let mut conn_shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let fut = run_connection(shim, stream, tls);
                    tokio::select! {
                        r = fut => {
                            if let Err(e) = r {
                                tracing::debug!(%peer, error = %e, "mysql front connection ended");
                            }
                        }
                        _ = conn_shutdown.changed() => {}
                    }
                });
            }
        });
        Ok((local, task))
    }
}

async fn run_connection(
    mut shim: Shim,
    stream: tokio::net::TcpStream,
    tls: Option<Arc<tokio_rustls_025::rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let opts = IntermediaryOptions::default();
    let (is_ssl, init) =
        AsyncMysqlIntermediary::init_before_ssl(&mut shim, r, &mut w, &tls).await?;
    match (is_ssl, tls) {
        (true, Some(cfg)) => opensrv_mysql::secure_run_with_options(shim, w, opts, cfg, init).await,
        _ => opensrv_mysql::plain_run_with_options(shim, w, opts, init).await,
    }
}

/// One result set, buffered so its column slice can outlive the writer
/// borrow opensrv-mysql requires.
struct ResultSet {
    columns: Vec<Column>,
    rows: Vec<Vec<mysql_async::Value>>,
    ok: OkResponse,
}

struct Shim {
    cfg: Arc<FrontConfig>,
    id: u32,
    salt: [u8; 20],
    /// Shard whose database receives forwarded statements.
    shard: String,
    /// Whether the client named the shard (`ks:shard`); otherwise DDL goes
    /// to every shard, as vtgate does.
    explicit_shard: bool,
    backend: Option<mysql_async::Conn>,
    stmts: HashMap<u32, mysql_async::Statement>,
    /// Whether each prepared statement reads the `columns` view.
    stmt_reads_columns: HashMap<u32, bool>,
    scratch: Vec<ResultSet>,
}

impl Shim {
    fn new(cfg: Arc<FrontConfig>, id: u32) -> Shim {
        let mut salt = [0u8; 20];
        let rnd = uuid::Uuid::new_v4();
        let rnd2 = uuid::Uuid::new_v4();
        for (i, b) in rnd
            .as_bytes()
            .iter()
            .chain(rnd2.as_bytes())
            .take(20)
            .enumerate()
        {
            // Printable ASCII without '$', like MySQL's own scrambles.
            let c = 0x21 + (b % 0x5d);
            salt[i] = if c == b'$' { b'%' } else { c };
        }
        let shard = cfg.shards.keys().next().cloned().unwrap_or_default();
        Shim {
            cfg,
            id,
            salt,
            shard,
            explicit_shard: false,
            backend: None,
            stmts: HashMap::new(),
            stmt_reads_columns: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    fn database(&self) -> String {
        self.cfg
            .shards
            .get(&self.shard)
            .cloned()
            .unwrap_or_default()
    }

    async fn backend(&mut self) -> Result<&mut mysql_async::Conn, mysql_async::Error> {
        if self.backend.is_none() {
            let opts: mysql_async::Opts =
                mysql_async::OptsBuilder::from_opts(self.cfg.backing.clone())
                    .db_name(Some(self.database()))
                    .init(vec!["SET time_zone = '+00:00'".to_string()])
                    .into();
            self.backend = Some(mysql_async::Conn::new(opts).await?);
        }
        match self.backend.as_mut() {
            Some(c) => Ok(c),
            None => Err(mysql_async::Error::Other("no backend connection".into())),
        }
    }

    /// Parses `ks`, `ks@type`, `ks:shard@type`; returns the shard.
    fn target(&self, db: &str) -> Option<String> {
        let db = db.trim().trim_matches('`');
        let (base, tablet) = match db.split_once('@') {
            Some((b, t)) => (b, Some(t)),
            None => (db, None),
        };
        if let Some(t) = tablet {
            if !["primary", "replica", "rdonly"].contains(&t.to_ascii_lowercase().as_str()) {
                return None;
            }
        }
        let (ks, shard) = match base.split_once(':') {
            Some((k, s)) => (k, Some(s)),
            None => (base, None),
        };
        if ks != self.cfg.keyspace {
            return None;
        }
        match shard {
            Some(s) if self.cfg.shards.contains_key(s) => Some(s.to_string()),
            Some(_) => None,
            None => self.cfg.shards.keys().next().cloned(),
        }
    }

    /// Answers the Vitess-only statements; `None` means forward it.
    fn vitess_answer(&self, query: &str) -> Option<ResultSet> {
        let q = query.trim().trim_end_matches(';').trim();
        let lower = q.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        if words.len() >= 2 && words[0] == "show" && words[1] == "vitess_shards" {
            let pattern = like_pattern(q);
            let rows = self
                .cfg
                .shards
                .keys()
                .map(|s| format!("{}/{}", self.cfg.keyspace, s))
                .filter(|v| pattern.as_deref().is_none_or(|p| like_match(p, v)))
                .map(|v| vec![mysql_async::Value::Bytes(v.into_bytes())])
                .collect();
            return Some(text_result(&["Shards"], rows));
        }
        if words.len() >= 2 && words[0] == "show" && words[1] == "vitess_tablets" {
            let mut rows = Vec::new();
            let mut uid = 100u32;
            for shard in self.cfg.shards.keys() {
                for ty in ["PRIMARY", "REPLICA", "RDONLY"] {
                    uid += 1;
                    let start = if ty == "PRIMARY" {
                        "2024-01-01T00:00:00Z"
                    } else {
                        ""
                    };
                    let vals = [
                        self.cfg.cell.as_str(),
                        self.cfg.keyspace.as_str(),
                        shard.as_str(),
                        ty,
                        "SERVING",
                        &format!("{}-{:010}", self.cfg.cell, uid),
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
                    self.cfg.keyspace.clone().into_bytes(),
                )]],
            ));
        }
        None
    }

    /// Rewrites keyspace qualifiers and mapped information_schema tables, and
    /// hides the backend's Unix socket: mysql_async (`prefer_socket`, on by
    /// default) reads `@@socket` after connecting to a loopback address and
    /// would reconnect straight to MariaDB's socket, bypassing the front.
    fn rewrite(&self, query: &str) -> String {
        let sql = rewrite_sql(
            query,
            &self.cfg.keyspace,
            &self.database(),
            &MysqlFront::views_database(&self.cfg),
        );
        hide_socket(&sql)
    }

    /// Brings the table of JSON columns up to date before a query reads
    /// the `columns` view. One pass over check_constraints, committed as one
    /// transaction so concurrent readers see the old or the new list.
    async fn refresh_json_columns(&mut self) {
        let views = quote_ident(&MysqlFront::views_database(&self.cfg));
        let db_lit = crate::values::quote_literal(self.first_shard_database().as_bytes());
        let sql = format!(
            "START TRANSACTION; DELETE FROM {views}.`json_columns`; \
             INSERT IGNORE INTO {views}.`json_columns` (table_name, column_name) \
             SELECT table_name, SUBSTRING(check_clause, 13, CHAR_LENGTH(check_clause) - 14) \
             FROM information_schema.check_constraints \
             WHERE constraint_schema = {db_lit} AND check_clause LIKE 'json\\_valid(`%`)'; COMMIT"
        );
        if let Ok(conn) = self.backend().await {
            if let Err(e) = conn.query_drop(sql).await {
                tracing::warn!(error = %e, "could not refresh the JSON column list");
                let _ = conn.query_drop("ROLLBACK").await;
            }
        }
    }

    fn first_shard_database(&self) -> String {
        self.cfg.shards.values().next().cloned().unwrap_or_default()
    }

    async fn run_text(&mut self, query: &str) -> Result<Vec<ResultSet>, mysql_async::Error> {
        if reads_columns(query) {
            self.refresh_json_columns().await;
        }
        let sql = self.rewrite(query);
        let hide = is_show_tables(query);
        let db_name = self.database();
        let keyspace = self.cfg.keyspace.clone();
        let conn = self.backend().await?;
        let mut result = conn.query_iter(sql).await?;
        let mut sets = Vec::new();
        loop {
            let mut columns: Vec<Column> = result
                .columns()
                .map(|c| c.iter().map(to_front_column).collect())
                .unwrap_or_default();
            if hide {
                // `Tables_in_<backing db>` reads `Tables_in_<keyspace>`.
                for c in &mut columns {
                    if let Some(rest) = c.column.strip_prefix("Tables_in_") {
                        if rest == db_name {
                            c.column = format!("Tables_in_{keyspace}");
                        }
                    }
                }
            }
            let mut rows: Vec<Vec<mysql_async::Value>> = Vec::new();
            while let Some(row) = result.next().await? {
                let vals: Vec<mysql_async::Value> = row
                    .unwrap_raw()
                    .into_iter()
                    .map(|v| v.unwrap_or(mysql_async::Value::NULL))
                    .collect();
                if hide && first_is_hidden(&vals) {
                    continue;
                }
                rows.push(vals);
            }
            let ok = OkResponse {
                affected_rows: result.affected_rows(),
                last_insert_id: result.last_insert_id().unwrap_or(0),
                warnings: result.warnings(),
                info: result.info().to_string(),
                ..Default::default()
            };
            sets.push(ResultSet { columns, rows, ok });
            if result.is_empty() {
                break;
            }
        }
        Ok(sets)
    }
}

/// Replaces `@@socket` (any case) with `NULL`.
fn hide_socket(sql: &str) -> String {
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
fn is_ddl(q: &str) -> bool {
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

impl Shim {
    /// Runs a DDL statement on every shard except the current one (which
    /// runs it through the normal path, so its result goes to the client).
    async fn ddl_other_shards(&mut self, query: &str) -> Result<(), mysql_async::Error> {
        let views = MysqlFront::views_database(&self.cfg);
        let others: Vec<String> = self
            .cfg
            .shards
            .iter()
            .filter(|(s, _)| **s != self.shard)
            .map(|(_, db)| db.clone())
            .collect();
        for db in others {
            let sql = rewrite_sql(query, &self.cfg.keyspace, &db, &views);
            let opts: mysql_async::Opts =
                mysql_async::OptsBuilder::from_opts(self.cfg.backing.clone())
                    .db_name(Some(db.clone()))
                    .into();
            let mut conn = mysql_async::Conn::new(opts).await?;
            conn.query_drop(sql).await?;
            let _ = conn.disconnect().await;
        }
        Ok(())
    }
}

fn first_is_hidden(vals: &[mysql_async::Value]) -> bool {
    matches!(vals.first(), Some(mysql_async::Value::Bytes(b)) if b.starts_with(crate::capture::PREFIX.as_bytes()))
}

fn is_show_tables(q: &str) -> bool {
    let lower = q.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().take(3).collect();
    matches!(
        words.as_slice(),
        ["show", "tables", ..] | ["show", "full", "tables"]
    )
}

fn text_result(names: &[&str], rows: Vec<Vec<mysql_async::Value>>) -> ResultSet {
    ResultSet {
        columns: names
            .iter()
            .map(|n| Column {
                table: String::new(),
                column: n.to_string(),
                coltype: ColumnType::MYSQL_TYPE_VAR_STRING,
                colflags: ColumnFlags::empty(),
            })
            .collect(),
        rows,
        ok: OkResponse::default(),
    }
}

fn to_front_column(c: &mysql_async::Column) -> Column {
    let ty = c.column_type() as u8;
    Column {
        table: c.table_str().to_string(),
        column: c.name_str().to_string(),
        coltype: ColumnType::try_from(ty).unwrap_or(ColumnType::MYSQL_TYPE_VAR_STRING),
        colflags: ColumnFlags::from_bits_truncate(c.flags().bits()),
    }
}

/// Extracts the pattern of `... LIKE '<p>'` / `LIKE "<p>"`.
fn like_pattern(q: &str) -> Option<String> {
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
fn like_match(pattern: &str, value: &str) -> bool {
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
fn reads_columns(query: &str) -> bool {
    let lower = query.to_ascii_lowercase();
    lower.contains("information_schema") && lower.contains("columns")
}

/// Creates the mapping views over information_schema for the first shard.
async fn create_views(cfg: &FrontConfig) -> Result<(), mysql_async::Error> {
    let db = cfg.shards.values().next().cloned().unwrap_or_default();
    let views = MysqlFront::views_database(cfg);
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

/// `mysql_native_password`: the client sends SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw))).
fn native_password_ok(password: &str, salt: &[u8], auth: &[u8]) -> bool {
    use sha1::{Digest, Sha1};
    if password.is_empty() {
        return auth.is_empty();
    }
    let h1 = Sha1::digest(password.as_bytes());
    let h2 = Sha1::digest(h1);
    let mut hasher = Sha1::new();
    hasher.update(salt);
    hasher.update(h2);
    let h3 = hasher.finalize();
    let expected: Vec<u8> = h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
    expected.as_slice() == auth
}

fn server_error(e: &mysql_async::Error) -> (ErrorKind, String) {
    match e {
        mysql_async::Error::Server(se) => (ErrorKind::from(se.code), se.message.clone()),
        other => (ErrorKind::ER_UNKNOWN_ERROR, other.to_string()),
    }
}

impl Shim {
    /// Backend error with the backing database name shown as the keyspace.
    fn error_text(&self, e: &mysql_async::Error) -> (ErrorKind, String) {
        let (kind, msg) = server_error(e);
        let db = self.database();
        if db.is_empty() {
            return (kind, msg);
        }
        (kind, msg.replace(&db, &self.cfg.keyspace))
    }
}

fn to_param(v: ValueInner<'_>) -> mysql_async::Value {
    match v {
        ValueInner::NULL => mysql_async::Value::NULL,
        ValueInner::Bytes(b) => mysql_async::Value::Bytes(b.to_vec()),
        ValueInner::Int(i) => mysql_async::Value::Int(i),
        ValueInner::UInt(u) => mysql_async::Value::UInt(u),
        ValueInner::Double(d) => mysql_async::Value::Double(d),
        ValueInner::Date(_) | ValueInner::Time(_) | ValueInner::Datetime(_) => {
            tracing::warn!("DATE/TIME prepared-statement parameters are not supported; using NULL");
            mysql_async::Value::NULL
        }
    }
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for Shim {
    type Error = std::io::Error;

    fn version(&self) -> String {
        "8.0.34-Vitess".to_string()
    }

    fn connect_id(&self) -> u32 {
        self.id
    }

    fn salt(&self) -> [u8; 20] {
        self.salt
    }

    async fn authenticate(
        &self,
        _auth_plugin: &str,
        username: &[u8],
        salt: &[u8],
        auth_data: &[u8],
    ) -> bool {
        username == self.cfg.username.as_bytes()
            && native_password_ok(&self.cfg.password, salt, auth_data)
    }

    async fn on_init<'a>(&'a mut self, db: &'a str, w: InitWriter<'a, W>) -> std::io::Result<()> {
        match self.target(db) {
            Some(shard) => {
                self.explicit_shard = db.contains(':');
                if shard != self.shard {
                    self.shard = shard;
                    self.backend = None;
                    self.stmts.clear();
                }
                w.ok().await
            }
            None => {
                w.error(
                    ErrorKind::ER_BAD_DB_ERROR,
                    format!("Unknown database '{db}'").as_bytes(),
                )
                .await
            }
        }
    }

    async fn on_prepare<'a>(
        &'a mut self,
        query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> std::io::Result<()> {
        let sql = self.rewrite(query);
        let prepared = match self.backend().await {
            Ok(conn) => conn.prep(sql).await,
            Err(e) => Err(e),
        };
        match prepared {
            Ok(stmt) => {
                let id = stmt.id();
                let params: Vec<Column> = (0..stmt.num_params())
                    .map(|_| Column {
                        table: String::new(),
                        column: "?".into(),
                        coltype: ColumnType::MYSQL_TYPE_VAR_STRING,
                        colflags: ColumnFlags::empty(),
                    })
                    .collect();
                let columns: Vec<Column> = stmt.columns().iter().map(to_front_column).collect();
                self.stmts.insert(id, stmt);
                self.stmt_reads_columns.insert(id, reads_columns(query));
                self.scratch = vec![
                    ResultSet {
                        columns: params,
                        rows: Vec::new(),
                        ok: OkResponse::default(),
                    },
                    ResultSet {
                        columns,
                        rows: Vec::new(),
                        ok: OkResponse::default(),
                    },
                ];
                let scratch: &'a Vec<ResultSet> = &self.scratch;
                info.reply(id, &scratch[0].columns, &scratch[1].columns)
                    .await
            }
            Err(e) => {
                let (kind, msg) = self.error_text(&e);
                info.error(kind, msg.as_bytes()).await
            }
        }
    }

    async fn on_execute<'a>(
        &'a mut self,
        id: u32,
        params: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> std::io::Result<()> {
        if self.stmt_reads_columns.get(&id).copied().unwrap_or(false) {
            self.refresh_json_columns().await;
        }
        let Some(stmt) = self.stmts.get(&id).cloned() else {
            return results
                .error(ErrorKind::ER_UNKNOWN_STMT_HANDLER, b"unknown statement")
                .await;
        };
        let values: Vec<mysql_async::Value> = params
            .into_iter()
            .map(|p| to_param(p.value.into_inner()))
            .collect();
        let run = async {
            let conn = self.backend().await?;
            let mut result = conn
                .exec_iter(&stmt, mysql_async::Params::Positional(values))
                .await?;
            let columns: Vec<Column> = result
                .columns()
                .map(|c| c.iter().map(to_front_column).collect())
                .unwrap_or_default();
            let mut rows = Vec::new();
            while let Some(row) = result.next().await? {
                rows.push(
                    row.unwrap_raw()
                        .into_iter()
                        .map(|v| v.unwrap_or(mysql_async::Value::NULL))
                        .collect(),
                );
            }
            let ok = OkResponse {
                affected_rows: result.affected_rows(),
                last_insert_id: result.last_insert_id().unwrap_or(0),
                ..Default::default()
            };
            result.drop_result().await?;
            Ok::<_, mysql_async::Error>(ResultSet { columns, rows, ok })
        };
        match run.await {
            Ok(set) => {
                self.scratch = vec![set];
                let scratch: &'a Vec<ResultSet> = &self.scratch;
                write_sets(scratch, results, true).await
            }
            Err(e) => {
                let (kind, msg) = self.error_text(&e);
                results.error(kind, msg.as_bytes()).await
            }
        }
    }

    async fn on_close<'a>(&'a mut self, stmt: u32)
    where
        W: 'async_trait,
    {
        if let Some(s) = self.stmts.remove(&stmt) {
            if let Some(conn) = self.backend.as_mut() {
                let _ = conn.close(s).await;
            }
        }
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> std::io::Result<()> {
        let ddl = is_ddl(query);
        let sets = match self.vitess_answer(query) {
            Some(set) => Ok(vec![set]),
            None if ddl && !self.explicit_shard => match self.ddl_other_shards(query).await {
                Ok(()) => self.run_text(query).await,
                Err(e) => Err(e),
            },
            None => self.run_text(query).await,
        };
        if ddl {
            for c in &self.cfg.captures {
                if let Err(e) = c.refresh().await {
                    tracing::warn!(error = %e, "capture refresh after DDL failed");
                }
            }
        }
        match sets {
            Ok(sets) => {
                self.scratch = sets;
                let scratch: &'a Vec<ResultSet> = &self.scratch;
                write_sets(scratch, results, false).await
            }
            Err(e) => {
                let (kind, msg) = self.error_text(&e);
                results.error(kind, msg.as_bytes()).await
            }
        }
    }
}

async fn write_sets<'a, W: AsyncWrite + Send + Unpin>(
    sets: &'a [ResultSet],
    mut results: QueryResultWriter<'a, W>,
    binary: bool,
) -> std::io::Result<()> {
    for (i, set) in sets.iter().enumerate() {
        let last = i + 1 == sets.len();
        if set.columns.is_empty() {
            if last {
                return results.completed(set.ok.clone()).await;
            }
            results = results.complete_one(set.ok.clone()).await?;
            continue;
        }
        let mut rw = results.start(&set.columns).await?;
        for row in &set.rows {
            for (v, col) in row.iter().zip(&set.columns) {
                write_value(&mut rw, v, col, binary)?;
            }
            rw.end_row().await?;
        }
        if last {
            return rw.finish().await;
        }
        results = rw.finish_one().await?;
    }
    results.completed(OkResponse::default()).await
}

fn write_value<W: AsyncWrite + Unpin>(
    rw: &mut opensrv_mysql::RowWriter<'_, W>,
    v: &mysql_async::Value,
    col: &Column,
    binary: bool,
) -> std::io::Result<()> {
    use mysql_async::Value as V;
    match v {
        V::NULL => rw.write_col(None::<i64>),
        V::Bytes(b) => {
            if binary && !binary_bytes_ok(col.coltype) {
                // Text arrived for a typed binary column: send it as parsed.
                let s = String::from_utf8_lossy(b);
                if let Ok(i) = s.parse::<i128>() {
                    return write_int(rw, col, i);
                }
                if let Ok(f) = s.parse::<f64>() {
                    return rw.write_col(f);
                }
            }
            rw.write_col(&b[..])
        }
        // opensrv-mysql narrows isize/usize to the column's width; i64/u64
        // only fit BIGINT columns.
        V::Int(i) => write_int(rw, col, i128::from(*i)),
        V::UInt(u) => write_int(rw, col, i128::from(*u)),
        V::Float(f) if col.coltype == ColumnType::MYSQL_TYPE_DOUBLE => rw.write_col(f64::from(*f)),
        V::Float(f) => rw.write_col(*f),
        V::Double(d) if col.coltype == ColumnType::MYSQL_TYPE_FLOAT => rw.write_col(*d as f32),
        V::Double(d) => rw.write_col(*d),
        V::Date(y, mo, d, h, mi, s, us) => {
            let date =
                chrono::NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d));
            let Some(date) = date else {
                // Zero dates have no chrono form; NULL beats a dropped connection.
                return if binary {
                    rw.write_col(None::<i64>)
                } else {
                    rw.write_col(v.as_sql(true).trim_matches('\''))
                };
            };
            if col.coltype == ColumnType::MYSQL_TYPE_DATE {
                return rw.write_col(date);
            }
            match date.and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us) {
                Some(dt) => rw.write_col(dt),
                None => rw.write_col(None::<i64>),
            }
        }
        V::Time(neg, d, h, mi, s, us) => {
            if *neg {
                // opensrv-mysql cannot encode negative TIME values.
                return if binary {
                    rw.write_col(None::<i64>)
                } else {
                    rw.write_col(v.as_sql(true).trim_matches('\''))
                };
            }
            let dur = std::time::Duration::from_secs(
                u64::from(*d) * 86_400 + u64::from(*h) * 3600 + u64::from(*mi) * 60 + u64::from(*s),
            ) + std::time::Duration::from_micros(u64::from(*us));
            rw.write_col(dur)
        }
    }
}

/// Writes an integer as exactly the Rust type opensrv-mysql expects for the
/// column's type and signedness (it refuses or asserts on anything else).
fn write_int<W: AsyncWrite + Unpin>(
    rw: &mut opensrv_mysql::RowWriter<'_, W>,
    col: &Column,
    v: i128,
) -> std::io::Result<()> {
    let unsigned = col.colflags.contains(ColumnFlags::UNSIGNED_FLAG);
    let bad = || std::io::Error::other(format!("integer {v} does not fit column {}", col.column));
    match (col.coltype, unsigned) {
        (ColumnType::MYSQL_TYPE_TINY, false) => rw.write_col(i8::try_from(v).map_err(|_| bad())?),
        (ColumnType::MYSQL_TYPE_TINY, true) => rw.write_col(u8::try_from(v).map_err(|_| bad())?),
        (ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR, false) => {
            rw.write_col(i16::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR, true) => {
            rw.write_col(u16::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONG | ColumnType::MYSQL_TYPE_INT24, false) => {
            rw.write_col(i32::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONG | ColumnType::MYSQL_TYPE_INT24, true) => {
            rw.write_col(u32::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONGLONG, false) => {
            rw.write_col(i64::try_from(v).map_err(|_| bad())?)
        }
        (ColumnType::MYSQL_TYPE_LONGLONG, true) => {
            rw.write_col(u64::try_from(v).map_err(|_| bad())?)
        }
        // Not an integer column (e.g. DECIMAL): send the text.
        _ => rw.write_col(v.to_string().as_bytes()),
    }
}

fn binary_bytes_ok(t: ColumnType) -> bool {
    !matches!(
        t,
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_YEAR
            | ColumnType::MYSQL_TYPE_FLOAT
            | ColumnType::MYSQL_TYPE_DOUBLE
    )
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
    fn like() {
        assert!(like_match("%ks%", "ks/-80"));
        assert!(!like_match("%zz%", "ks/-80"));
        assert!(like_match("ks/_80", "ks/-80"));
    }

    #[test]
    fn native_password() {
        use sha1::{Digest, Sha1};
        let salt = b"12345678901234567890";
        let h1 = Sha1::digest(b"pw");
        let h2 = Sha1::digest(h1);
        let mut h = Sha1::new();
        h.update(salt);
        h.update(h2);
        let h3 = h.finalize();
        let auth: Vec<u8> = h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
        assert!(native_password_ok("pw", salt, &auth));
        assert!(!native_password_ok("other", salt, &auth));
    }
}
