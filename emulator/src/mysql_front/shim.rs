//! The opensrv-mysql shim: one per client connection, holding the shard it
//! targets, its backend connection and its prepared statements.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use opensrv_mysql::{
    AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, InitWriter, OkResponse,
    ParamParser, QueryResultWriter, StatementMetaWriter,
};
use tokio::io::AsyncWrite;

use super::results::{to_front_column, to_param, write_sets, ResultSet};
use super::rewrite::{
    first_is_hidden, hide_socket, is_ddl, is_show_tables, reads_columns, rewrite_sql,
    truncated_table,
};
use super::views::{refresh_json_columns_sql, views_database};
use super::FrontConfig;

/// The first id of a statement prepared in the front itself: MariaDB
/// numbers a connection's statements from 1, so the two never meet.
const LOCAL_IDS: u32 = 1 << 31;

pub(super) struct Shim {
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
    /// Prepared statements the front answers itself, as it answers them in
    /// text (the Vitess SHOW statements, DDL on every shard), by their ids
    /// (from [`LOCAL_IDS`] up, apart from the backend's).
    local: HashMap<u32, String>,
    next_local: u32,
    /// Whether each prepared statement reads the `columns` view.
    stmt_reads_columns: HashMap<u32, bool>,
    scratch: Vec<ResultSet>,
}

impl Shim {
    pub(super) fn new(cfg: Arc<FrontConfig>, id: u32) -> Shim {
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
            local: HashMap::new(),
            next_local: LOCAL_IDS,
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

    /// The result sets of a statement as the front serves it: the SHOW
    /// statements it answers itself, DDL on every shard (then change capture
    /// refreshed), anything else on the target shard. One path for text
    /// queries and prepared statements alike.
    async fn answer(&mut self, query: &str) -> Result<Vec<ResultSet>, mysql_async::Error> {
        let ddl = is_ddl(query);
        let sets = match super::show::answer(&self.cfg, query) {
            Some(set) => Ok(vec![set]),
            None if ddl && !self.explicit_shard => match self.ddl_other_shards(query).await {
                Ok(()) => self.run_text(query).await,
                Err(e) => Err(e),
            },
            None => self.run_text(query).await,
        };
        if let (Ok(_), Some(table)) = (&sets, truncated_table(query)) {
            self.record_truncate(&table).await;
        }
        if ddl {
            for c in &self.cfg.captures {
                if let Err(e) = c.refresh().await {
                    tracing::warn!(error = %e, "capture refresh after DDL failed");
                }
            }
        }
        sets
    }

    /// Whether a statement being prepared is one the front answers itself.
    fn answers_locally(&self, query: &str) -> Option<ResultSet> {
        if query.contains('?') {
            return None;
        }
        match super::show::answer(&self.cfg, query) {
            Some(set) => Some(set),
            None if is_ddl(query) => Some(ResultSet {
                columns: Vec::new(),
                rows: Vec::new(),
                ok: OkResponse::default(),
            }),
            None => None,
        }
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
            &views_database(&self.cfg),
        );
        hide_socket(&sql)
    }

    /// Brings the table of JSON columns up to date before a query reads
    /// the `columns` view.
    async fn refresh_json_columns(&mut self) {
        let sql = refresh_json_columns_sql(&self.cfg);
        if let Ok(conn) = self.backend().await {
            if let Err(e) = conn.query_drop(sql).await {
                tracing::warn!(error = %e, "could not refresh the JSON column list");
                let _ = conn.query_drop("ROLLBACK").await;
            }
        }
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

impl Shim {
    /// Runs a DDL statement on every shard except the current one (which
    /// runs it through the normal path, so its result goes to the client).
    async fn ddl_other_shards(&mut self, query: &str) -> Result<(), mysql_async::Error> {
        let views = views_database(&self.cfg);
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

impl Shim {
    /// Records a TRUNCATE of `table` in the change log of every shard it ran
    /// on (see [`crate::capture::truncate_marker_sql`]); a failure is
    /// logged, as the TRUNCATE itself has succeeded.
    async fn record_truncate(&self, table: &str) {
        let databases: Vec<String> = if self.explicit_shard {
            vec![self.database()]
        } else {
            self.cfg.shards.values().cloned().collect()
        };
        for db in databases {
            let sql = crate::capture::truncate_marker_sql(&db, table);
            let recorded = async {
                let mut conn = mysql_async::Conn::new(self.cfg.backing.clone()).await?;
                conn.query_drop(sql).await?;
                conn.disconnect().await
            };
            if let Err(e) = recorded.await {
                tracing::warn!(database = %db, table, error = %e, "could not record a TRUNCATE in the change log");
            }
        }
    }

    /// Backend error with the backing database name shown as the keyspace.
    /// Writes a statement's result sets (text or binary rows), or its
    /// error, to the client: one way for queries and prepared statements.
    async fn reply<'a, W: AsyncWrite + Send + Unpin>(
        &'a mut self,
        sets: Result<Vec<ResultSet>, mysql_async::Error>,
        results: QueryResultWriter<'a, W>,
        binary: bool,
    ) -> std::io::Result<()> {
        match sets {
            Ok(sets) => {
                self.scratch = sets;
                write_sets(&self.scratch, results, binary).await
            }
            Err(e) => {
                let (kind, msg) = self.error_text(&e);
                results.error(kind, msg.as_bytes()).await
            }
        }
    }

    fn error_text(&self, e: &mysql_async::Error) -> (ErrorKind, String) {
        let (kind, msg) = server_error(e);
        let db = self.database();
        if db.is_empty() {
            return (kind, msg);
        }
        (kind, msg.replace(&db, &self.cfg.keyspace))
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
        if let Some(set) = self.answers_locally(query) {
            let id = self.next_local;
            self.next_local = self.next_local.wrapping_add(1).max(LOCAL_IDS);
            self.local.insert(id, query.to_string());
            self.scratch = vec![
                ResultSet {
                    columns: Vec::new(),
                    rows: Vec::new(),
                    ok: OkResponse::default(),
                },
                set,
            ];
            let scratch: &'a Vec<ResultSet> = &self.scratch;
            return info
                .reply(id, &scratch[0].columns, &scratch[1].columns)
                .await;
        }
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
        if let Some(query) = self.local.get(&id).cloned() {
            let sets = self.answer(&query).await;
            return self.reply(sets, results, true).await;
        }
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
        let sets = run.await.map(|set| vec![set]);
        self.reply(sets, results, true).await
    }

    async fn on_close<'a>(&'a mut self, stmt: u32)
    where
        W: 'async_trait,
    {
        self.local.remove(&stmt);
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
        let sets = self.answer(query).await;
        self.reply(sets, results, false).await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
