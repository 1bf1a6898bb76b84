//! MySQL access over `mysql_async`: connecting (TLS with a custom CA, the
//! Vitess target suffix, a connect timeout) and the few queries the tap runs.
//!
//! Errors are translated here, once, into messages a person can act on:
//! which host and port, which user, which database, and what to change.
//! Every query that takes a value uses bind parameters; identifiers are
//! quoted with [`quote_ident`].

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts};

use crate::config::{Endpoint, Settings, TabletType};
use crate::error::kind::Kind;
use crate::row_key::{self, IndexPart, RowKey, UniqueIndex};

#[derive(Debug, thiserror::Error)]
pub enum MySqlError {
    #[error("cannot reach MySQL at {endpoint}: {reason}; check `host`/`mysql_host` and that the server is up")]
    Unreachable { endpoint: String, reason: String },
    #[error("no answer from MySQL at {endpoint} within {secs}s; check `host`/`mysql_host`, firewalls, or raise `connect_timeout_seconds`")]
    Timeout { endpoint: String, secs: u64 },
    #[error("access denied for user {user} at {endpoint}; check `username` and `password` (PlanetScale passwords are per branch)")]
    AccessDenied { user: String, endpoint: String },
    #[error("unknown database `{database}` at {endpoint}; check `database` in the config")]
    UnknownDatabase { database: String, endpoint: String },
    #[error("TLS to MySQL at {endpoint} failed: {reason}; check `tls_ca_file`, or set `tls` to false for a plaintext server")]
    Tls { endpoint: String, reason: String },
    #[error("MySQL at {endpoint} rejected the connection: {reason}")]
    Server { endpoint: String, reason: String },
    #[error("query `{what}` failed: {source}")]
    Query {
        what: &'static str,
        source: Box<mysql_async::Error>,
    },
    #[error("query `{what}` returned an unexpected value in column {column}: {problem}")]
    Shape {
        what: &'static str,
        column: usize,
        problem: String,
    },
}

impl MySqlError {
    /// Retry and exit-code class (see `error`): a login, TLS, host or
    /// database problem is the person's to fix; a connection lost during a
    /// query may pass if tried again; any other failed query may pass on a
    /// rerun.
    pub fn kind(&self) -> Kind {
        match self {
            MySqlError::Query { source, .. }
                if matches!(
                    **source,
                    mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
                ) =>
            {
                Kind::Transient
            }
            MySqlError::Query { .. } | MySqlError::Shape { .. } => Kind::Failed,
            _ => Kind::Input,
        }
    }
}

/// The database name to send: `<db>@<tablet type>` under TLS (Vitess target
/// syntax, as the Go tap does), the bare name otherwise.
pub fn target_database(settings: &Settings) -> String {
    if settings.tls {
        format!("{}@{}", settings.database, settings.tablet_type.as_str())
    } else {
        settings.database.clone()
    }
}

/// Connects with the settings' endpoint, credentials, TLS and timeout.
pub async fn connect(settings: &Settings) -> Result<Conn, MySqlError> {
    connect_to(settings, &settings.mysql, settings.tablet_type).await
}

async fn connect_to(
    settings: &Settings,
    endpoint: &Endpoint,
    tablet_type: TabletType,
) -> Result<Conn, MySqlError> {
    let db = if settings.tls {
        format!("{}@{}", settings.database, tablet_type.as_str())
    } else {
        settings.database.clone()
    };
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(endpoint.host.clone())
        .tcp_port(endpoint.port)
        .user(Some(settings.username.clone()))
        .pass(Some(settings.password.expose().to_string()))
        .db_name(Some(db))
        .prefer_socket(false)
        .stmt_cache_size(0);
    if settings.tls {
        let mut ssl = SslOpts::default();
        if let Some(ca) = &settings.tls_ca_file {
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        opts = opts.ssl_opts(ssl);
    }
    let ep = endpoint.to_string();
    let secs = settings.connect_timeout.as_secs().max(1);
    match tokio::time::timeout(settings.connect_timeout, Conn::new(opts)).await {
        Err(_) => Err(MySqlError::Timeout { endpoint: ep, secs }),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify_connect(e, settings, ep)),
    }
}

fn classify_connect(e: mysql_async::Error, settings: &Settings, endpoint: String) -> MySqlError {
    match e {
        mysql_async::Error::Server(se) => match se.code {
            1044 | 1045 | 1698 => MySqlError::AccessDenied {
                user: settings.username.clone(),
                endpoint,
            },
            1049 => MySqlError::UnknownDatabase {
                database: settings.database.clone(),
                endpoint,
            },
            _ => MySqlError::Server {
                endpoint,
                reason: format!("{} (error {})", se.message, se.code),
            },
        },
        other => {
            // TLS failures arrive as I/O or driver errors; tell them apart by
            // their text, since mysql_async gives no kind for them. The
            // reason is the innermost cause: mysql_async's own message
            // repeats `Input/output error: ` once per layer.
            let text = crate::error::kind::root_cause(&other);
            let lower = other.to_string().to_ascii_lowercase();
            if lower.contains("tls") || lower.contains("certificate") || lower.contains("ssl") {
                MySqlError::Tls {
                    endpoint,
                    reason: text,
                }
            } else {
                MySqlError::Unreachable {
                    endpoint,
                    reason: text,
                }
            }
        }
    }
}

/// Backtick-quotes an identifier, doubling backticks inside it.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn text(row: &Row, i: usize, what: &'static str) -> Result<String, MySqlError> {
    match row.get_opt::<Option<Vec<u8>>, usize>(i) {
        Some(Ok(Some(bytes))) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Some(Ok(None)) => Ok(String::new()),
        Some(Err(e)) => Err(MySqlError::Shape {
            what,
            column: i,
            problem: e.to_string(),
        }),
        None => Err(MySqlError::Shape {
            what,
            column: i,
            problem: "missing".to_string(),
        }),
    }
}

fn number(row: &Row, i: usize, what: &'static str) -> Result<Option<u64>, MySqlError> {
    match row.get_opt::<Option<u64>, usize>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(_)) => {
            // Text protocol answers carry digits as bytes.
            let t = text(row, i, what)?;
            if t.is_empty() {
                return Ok(None);
            }
            t.trim().parse().map(Some).map_err(|_| MySqlError::Shape {
                what,
                column: i,
                problem: format!("`{t}` is not a number"),
            })
        }
        None => Err(MySqlError::Shape {
            what,
            column: i,
            problem: "missing".to_string(),
        }),
    }
}

/// One table or view as information_schema describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTable {
    pub name: String,
    pub is_view: bool,
    pub row_count: Option<u64>,
    pub columns: Vec<RawColumn>,
    /// Primary key columns in key order.
    pub primary_key: Vec<String>,
    /// UNIQUE indexes with only NOT NULL columns, in the server's index
    /// order: the candidates for Vitess's primary key equivalent.
    pub unique_keys: Vec<UniqueIndex>,
}

impl RawTable {
    /// The columns that identify a row: the primary key, else Vitess's
    /// primary key equivalent (see [`crate::row_key`]), else none.
    pub fn key(&self) -> RowKey<'_> {
        RowKey::of(&self.primary_key, &self.unique_keys, |name| {
            self.columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.column_type.as_str())
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawColumn {
    pub name: String,
    pub column_type: String,
    /// `column_key = 'PRI'`, used to cross-check the key. Without a
    /// primary key the server marks a UNIQUE NOT NULL index's columns so.
    pub in_primary_key: bool,
    /// `character_set_name`: the text's charset (empty when not text).
    pub charset: String,
}

/// Reads every table, column and key (primary, and the UNIQUE NOT NULL
/// indexes that can stand in for it) of a schema in three queries, whatever
/// the number of tables.
///
/// The three answers are not one snapshot: DDL running meanwhile (an online
/// schema change, Vitess's own table management) can make them disagree,
/// and information_schema silently skips tables it cannot open. So the
/// answers are cross-checked (every `PRI` column is in the primary key or,
/// without one, in a UNIQUE NOT NULL index; every key column exists; every
/// base table has columns) and read again when they disagree.
pub async fn describe_schema(conn: &mut Conn, schema: &str) -> Result<Vec<RawTable>, MySqlError> {
    let mut attempt = 0;
    loop {
        let tables = describe_once(conn, schema).await?;
        match inconsistency(&tables) {
            None => return Ok(tables),
            Some(problem) if attempt >= 4 => {
                return Err(MySqlError::Shape {
                    what: "information_schema",
                    column: 0,
                    problem: format!(
                        "answers stayed inconsistent ({problem}); is DDL running? try again"
                    ),
                })
            }
            Some(problem) => {
                tracing::debug!(%problem, attempt, "information_schema answers disagree; reading again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
}

/// What is wrong with one reading of the schema, if anything.
fn inconsistency(tables: &[RawTable]) -> Option<String> {
    for t in tables {
        if t.columns.is_empty() && !t.is_view {
            return Some(format!("table `{}` has no columns", t.name));
        }
        let key_columns = t
            .primary_key
            .iter()
            .chain(t.unique_keys.iter().flat_map(|k| &k.columns));
        for k in key_columns {
            if !t.columns.iter().any(|c| &c.name == k) {
                return Some(format!(
                    "key column `{}` of `{}` is not among its columns",
                    k, t.name
                ));
            }
        }
        // Without a primary key, the server shows the columns of one
        // UNIQUE NOT NULL index as PRI (MariaDB all of them, MySQL maybe
        // only some): they must all lie in one such index.
        let marked: Vec<&String> = t
            .columns
            .iter()
            .filter(|c| c.in_primary_key)
            .map(|c| &c.name)
            .collect();
        let explained = if t.primary_key.is_empty() {
            marked.is_empty()
                || t.unique_keys
                    .iter()
                    .any(|k| marked.iter().all(|m| k.columns.contains(m)))
        } else {
            marked.iter().all(|m| t.primary_key.contains(m))
        };
        if !explained {
            return Some(format!(
                "columns {marked:?} of `{}` are marked PRI but no key has them all",
                t.name
            ));
        }
    }
    None
}

async fn describe_once(conn: &mut Conn, schema: &str) -> Result<Vec<RawTable>, MySqlError> {
    const TABLES: &str =
        "SELECT table_name, table_type, table_rows FROM information_schema.tables \
                          WHERE table_schema = ? ORDER BY table_name";
    const COLUMNS: &str =
        "SELECT table_name, column_name, column_type, column_key, character_set_name FROM information_schema.columns \
                           WHERE table_schema = ? ORDER BY table_name, ordinal_position";
    // No ORDER BY: the server lists a table's indexes in its own index
    // order, which settles a tie between PKE candidates (see `row_key`).
    const KEYS: &str =
        "SELECT table_name, index_name, column_name, seq_in_index, non_unique, nullable \
                        FROM information_schema.statistics WHERE table_schema = ?";

    let mut tables: Vec<RawTable> = Vec::new();
    const INFO_TABLES: &str = "information_schema.tables";
    each_row(conn, TABLES, schema, INFO_TABLES, |row| {
        let name = text(row, 0, INFO_TABLES)?;
        let kind = text(row, 1, INFO_TABLES)?;
        tables.push(RawTable {
            name,
            is_view: kind.eq_ignore_ascii_case("VIEW"),
            row_count: number(row, 2, INFO_TABLES)?,
            columns: Vec::new(),
            primary_key: Vec::new(),
            unique_keys: Vec::new(),
        });
        Ok(())
    })
    .await?;
    // Byte order, not the server's collation, so output never depends on it.
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let index = |tables: &[RawTable], name: &str| {
        tables.binary_search_by(|t| t.name.as_str().cmp(name)).ok()
    };

    const INFO_COLUMNS: &str = "information_schema.columns";
    each_row(conn, COLUMNS, schema, INFO_COLUMNS, |row| {
        let table = text(row, 0, INFO_COLUMNS)?;
        if let Some(i) = index(&tables, &table) {
            tables[i].columns.push(RawColumn {
                name: text(row, 1, INFO_COLUMNS)?,
                column_type: text(row, 2, INFO_COLUMNS)?,
                in_primary_key: text(row, 3, INFO_COLUMNS)? == "PRI",
                charset: text(row, 4, INFO_COLUMNS)?,
            });
        }
        Ok(())
    })
    .await?;

    const STATS: &str = "information_schema.statistics";
    let mut parts: Vec<Vec<IndexPart>> = vec![Vec::new(); tables.len()];
    each_row(conn, KEYS, schema, STATS, |row| {
        let table = text(row, 0, STATS)?;
        if let Some(i) = index(&tables, &table) {
            parts[i].push(IndexPart {
                index: text(row, 1, STATS)?,
                column: text(row, 2, STATS)?,
                seq: number(row, 3, STATS)?.unwrap_or(0),
                non_unique: number(row, 4, STATS)? != Some(0),
                nullable: text(row, 5, STATS)?.eq_ignore_ascii_case("YES"),
            });
        }
        Ok(())
    })
    .await?;
    for (table, parts) in tables.iter_mut().zip(&parts) {
        (table.primary_key, table.unique_keys) = row_key::indexes(parts);
    }
    Ok(tables)
}

/// Runs `sql` with the schema name bound and hands each row to `read` as
/// it arrives, so a schema's 200,000 column rows are never all held at
/// once; the first error `read` returns ends the reading.
async fn each_row(
    conn: &mut Conn,
    sql: &'static str,
    schema: &str,
    what: &'static str,
    mut read: impl FnMut(&Row) -> Result<(), MySqlError>,
) -> Result<(), MySqlError> {
    let failed = |source| MySqlError::Query {
        what,
        source: Box::new(source),
    };
    let mut result = conn.exec_iter(sql, (schema,)).await.map_err(failed)?;
    let mut problem = None;
    result
        .for_each(|row| {
            if problem.is_none() {
                problem = read(&row).err();
            }
        })
        .await
        .map_err(failed)?;
    problem.map_or(Ok(()), Err)
}

/// `SHOW VITESS_SHARDS`, filtered to the exact `<keyspace>/` prefix (the Go
/// tap's LIKE also matched other keyspaces containing the name).
pub async fn shards(conn: &mut Conn, keyspace: &str) -> Result<Vec<String>, MySqlError> {
    let rows: Vec<Row> =
        conn.query("SHOW VITESS_SHARDS")
            .await
            .map_err(|source| MySqlError::Query {
                what: "SHOW VITESS_SHARDS",
                source: Box::new(source),
            })?;
    let prefix = format!("{keyspace}/");
    let mut out = Vec::new();
    for row in &rows {
        let full = text(row, 0, "SHOW VITESS_SHARDS")?;
        if let Some(shard) = full.strip_prefix(&prefix) {
            out.push(shard.to_string());
        }
    }
    Ok(out)
}

/// One row of `SHOW VITESS_TABLETS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablet {
    pub cell: String,
    pub keyspace: String,
    pub shard: String,
    pub tablet_type: String,
    pub state: String,
}

pub async fn tablets(conn: &mut Conn) -> Result<Vec<Tablet>, MySqlError> {
    let rows: Vec<Row> =
        conn.query("SHOW VITESS_TABLETS")
            .await
            .map_err(|source| MySqlError::Query {
                what: "SHOW VITESS_TABLETS",
                source: Box::new(source),
            })?;
    let mut out = Vec::new();
    for row in &rows {
        out.push(Tablet {
            cell: text(row, 0, "SHOW VITESS_TABLETS")?,
            keyspace: text(row, 1, "SHOW VITESS_TABLETS")?,
            shard: text(row, 2, "SHOW VITESS_TABLETS")?,
            tablet_type: text(row, 3, "SHOW VITESS_TABLETS")?,
            state: text(row, 4, "SHOW VITESS_TABLETS")?,
        });
    }
    Ok(out)
}

/// Closes a connection politely, ignoring errors: the work is done.
pub async fn close(conn: Conn) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inconsistent_answers_are_caught() {
        let col = |n: &str, pri: bool| RawColumn {
            name: n.into(),
            column_type: "int".into(),
            in_primary_key: pri,
            charset: String::new(),
        };
        let t = |cols: Vec<RawColumn>, pk: &[&str], uk: &[&[&str]], view: bool| RawTable {
            name: "t".into(),
            is_view: view,
            row_count: None,
            columns: cols,
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            unique_keys: uk
                .iter()
                .enumerate()
                .map(|(i, cols)| UniqueIndex {
                    name: format!("k{i}"),
                    columns: cols.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        };
        // (one reading, consistent?)
        let cases = [
            (
                t(vec![col("id", true), col("v", false)], &["id"], &[], false),
                true,
            ),
            (t(vec![col("a", false)], &[], &[], false), true),
            (t(vec![col("v", false)], &["id"], &[], false), false),
            (t(vec![col("id", true)], &[], &[], false), false),
            (t(vec![], &[], &[], false), false),
            (t(vec![], &[], &[], true), true),
            // no primary key: the server marks a UNIQUE NOT NULL key PRI
            (
                t(
                    vec![col("a", true), col("b", true)],
                    &[],
                    &[&["a", "b"]],
                    false,
                ),
                true,
            ),
            (
                t(
                    vec![col("a", true), col("b", false)],
                    &[],
                    &[&["b"], &["a", "b"]],
                    false,
                ),
                true,
            ),
            (
                t(
                    vec![col("a", true), col("b", true)],
                    &[],
                    &[&["a"], &["b"]],
                    false,
                ),
                false,
            ),
            (t(vec![col("a", false)], &[], &[&["gone"]], false), false),
            // a primary key and a unique key: PRI means the primary key
            (
                t(
                    vec![col("id", true), col("u", true)],
                    &["id"],
                    &[&["u"]],
                    false,
                ),
                false,
            ),
        ];
        for (table, consistent) in cases {
            assert_eq!(
                inconsistency(std::slice::from_ref(&table)).is_none(),
                consistent,
                "{table:?}"
            );
        }
    }

    #[test]
    fn quoting() {
        let cases = [
            ("t", "`t`"),
            ("a`b", "`a``b`"),
            ("with space", "`with space`"),
            ("ü", "`ü`"),
        ];
        for (name, want) in cases {
            assert_eq!(quote_ident(name), want);
        }
    }
}
