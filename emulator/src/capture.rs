//! Change capture from ordinary SQL, with triggers into a change log.
//!
//! Why triggers and not the binlog: they are pure SQL, need no replication
//! protocol parser, and see exactly what any client commits to the backing
//! database, with the values MariaDB itself renders as text.
//!
//! Per backing database, in the emulator's own database ([`own_database`],
//! `_psdb_<db>`), so the user's database holds nothing of the emulator's
//! but the triggers, which MariaDB keeps with their table and which write
//! across databases; [`remove`] takes all of it away again:
//! - `_psdb_changelog(seq, tbl, op)`: one row per row change; `seq` comes
//!   from the sequence `_psdb_seq`. The table is system-versioned with
//!   transaction-precise history (`WITH SYSTEM VERSIONING`, `ROW START` as a
//!   BIGINT), so MariaDB itself stamps every row with the writing InnoDB
//!   transaction id and records the transaction's commit order in
//!   `mysql.transaction_registry`. (`information_schema.innodb_trx` looked
//!   like the obvious source of a transaction id, but it is a cache refreshed
//!   at most every 100 ms, so it merges quick successive transactions.)
//! - `_psdb_gtid(trx, gtid, commit_id)`: the GTID number given to each
//!   transaction.
//! - `_psdb_s_<table>`: a shadow of each captured table with the same column
//!   types plus `_psdb_seq` and `_psdb_img` (`B` before, `A` after), which
//!   are its primary key: a stream reads the images of a GTID range as
//!   ranges of that key, in key order, without a sort. The change log's
//!   `(trx_start, tbl, seq, op)` key covers the range's plan (which
//!   changes, in which transaction), read first (see
//!   `grpc::changes`).
//!   AFTER INSERT/UPDATE/DELETE triggers (`_psdb_t{i,u,d}_<table>`, in the
//!   backing database) write the change log row and the images in the
//!   writer's own transaction, so they commit or roll back with it.
//! - `_psdb_meta`: the shard's server UUID (stable across emulator restarts on
//!   the same database while the own database lives; a new one after
//!   [`remove`], so positions of the removed change log answer as purged).
//!
//! A poller per shard (READ COMMITTED, every 40 ms, and on demand before
//! a `current` peek or a copy snapshot) reads newly committed
//! transactions from `mysql.transaction_registry` in `commit_id` order, keeps
//! those that wrote to this shard's change log, and gives them consecutive
//! GTID numbers.
//! It publishes the highest number on a `watch` channel, which wakes idle Sync
//! streams. The position of a shard is `MySQL56/<uuid>:1-<head>`; a seed
//! `_psdb_gtid` row holds GTID 1 so the position is never empty. Readers
//! take a GTID range's plan from the change log and its images from the
//! shadow table, with the same text SELECT path as the copy phase.
//!
//! A re-scan (every 500 ms, and on demand) installs capture on new tables and
//! re-creates it when a table's columns change (a signature stored in the
//! shadow table's comment).
//!
//! Any legal table name is captured: the names of a table's shadow and
//! triggers are derived by [`bounded`] so they always fit MySQL's 64
//! characters and never collide. A table whose capture fails (whatever the
//! reason) is logged once per definition, its partial capture removed, and
//! it is served with its copy and no changes: one odd table must not stop
//! the emulator serving the others.
//!
//! Needs MariaDB 10.3+ (system versioning with transaction-precise history
//! and `mysql.transaction_registry`, sequences).
//!
//! Limits:
//! - Writes to a table before its capture is installed (up to half a second after
//!   a CREATE TABLE made directly on a backing database, unless
//!   `Emulator::refresh_capture` is called; DDL through the MySQL front
//!   refreshes at once) are not seen.
//! - After an ALTER TABLE made directly on a backing database, until the next
//!   scan (≤ 0.5 s, or `refresh_capture`), the old triggers still name the old
//!   columns: DML on a table that lost a column fails, and streams of a table
//!   that gained one fail. Re-creating capture carries the images not yet
//!   streamed into the new shape (see [`carry_images_sql`]): rows changed
//!   before an ALTER come in the new shape (vttablet sends them in the old
//!   one, then the new FIELD), a dropped column's values in them are gone.
//! - TRUNCATE and foreign-key cascades fire no triggers. A TRUNCATE through
//!   the MySQL front is recorded by the front ([`truncate_marker_sql`]); one
//!   made straight on a backing database, and cascades, are not seen.
//! - Column names starting with `_psdb_` clash with the shadow table's own.
//! - The change log is pruned only with a retention (`--retain-changes N`:
//!   the newest N transactions are kept, older start positions answer as
//!   purged).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::sync::{mpsc, oneshot, watch};

use crate::values::quote_ident;

/// Name of the change log table.
pub const CHANGELOG: &str = "_psdb_changelog";
/// Name of the transaction → GTID table.
pub const GTIDS: &str = "_psdb_gtid";
/// How far below the last seen commit id each poll looks again. (The seed
/// row starts the shard at the registry's newest commit, so a fresh shard on
/// a busy shared server does not scan old history.)
const COMMIT_WINDOW: u64 = 2_000;
/// Prefix of every emulator-owned object, hidden from the MySQL front.
pub const PREFIX: &str = "_psdb_";
/// A re-created capture's old shadow table, set aside while its images are
/// carried into the new one (see [`carry_images_sql`]).
const CARRIED: &str = "_psdb_carried";

const POLL_INTERVAL: Duration = Duration::from_millis(40);
const SCAN_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("mysql error in change capture: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("change capture task stopped")]
    Stopped,
    #[error("{0}")]
    Refresh(String),
    #[error("column `{0}` starts with the emulator's reserved prefix `{PREFIX}`")]
    ReservedColumn(String),
}

/// Handle to one shard's capture.
#[derive(Clone, Debug)]
pub struct ShardCapture {
    pub database: String,
    /// The emulator's own database for this shard ([`own_database`]).
    pub own: String,
    pub uuid: String,
    head: watch::Receiver<u64>,
    /// GTIDs up to this number are pruned from the change log
    /// (`--retain-changes`); 0 when nothing is.
    purged: Arc<AtomicU64>,
    requests: mpsc::Sender<Request>,
}

/// A request to the capture task, answered after its next poll.
#[derive(Debug)]
struct Request {
    /// Re-scan tables before polling.
    scan: bool,
    reply: oneshot::Sender<Result<u64, String>>,
}

impl ShardCapture {
    /// Highest GTID number handed out so far.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever new transactions are numbered.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// Start positions below this GTID number can no longer be served: the
    /// changes after them are pruned.
    pub fn purged(&self) -> u64 {
        self.purged.load(Ordering::Acquire)
    }

    pub fn position(&self, n: u64) -> String {
        format!("MySQL56/{}:1-{}", self.uuid, n.max(1))
    }

    /// Re-scans tables and installs capture now, then numbers every
    /// transaction committed so far; waits until done.
    pub async fn refresh(&self) -> Result<(), CaptureError> {
        self.request(true).await.map(|_| ())
    }

    /// Numbers every transaction committed before this call and returns the
    /// new head (so a `current` peek includes a commit made just before it,
    /// as on a real server).
    pub async fn sync_now(&self) -> Result<u64, CaptureError> {
        self.request(false).await
    }

    async fn request(&self, scan: bool) -> Result<u64, CaptureError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request { scan, reply })
            .await
            .map_err(|_| CaptureError::Stopped)?;
        rx.await
            .map_err(|_| CaptureError::Stopped)?
            .map_err(CaptureError::Refresh)
    }
}

/// MySQL's limit on an identifier, in characters.
const NAME_LEN: usize = 64;
/// Hex digits of the hash that ends a shortened name.
const HASH_LEN: usize = 16;

/// The emulator's own database for backing database `backing`: it holds
/// the change log, the GTID table, the sequence, the shard's metadata and
/// every shadow table, so the backing database keeps only the triggers
/// (MariaDB keeps a trigger with its table). Derived by [`bounded`], so it
/// fits 64 characters and two backing databases never share it.
pub fn own_database(backing: &str) -> String {
    bounded(PREFIX, backing)
}

/// Shadow table name for a captured table.
pub fn shadow_name(table: &str) -> String {
    bounded("_psdb_s_", table)
}

fn trigger_name(kind: &str, table: &str) -> String {
    bounded(&format!("_psdb_t{kind}_"), table)
}

/// `prefix` + `table` when that is shorter than MySQL's 64 characters and
/// the table name is plain (ASCII letters, digits, `_`); otherwise exactly
/// 64 plain characters: the prefix, the table name's start with every other
/// character as `_` (readable in `SHOW TRIGGERS`), `_` and a 64-bit FNV-1a
/// hash of the whole name.
///
/// Plain names only, because MariaDB keeps tables and triggers in files
/// whose names spell other characters as `@xxxx`: a table name that fits
/// the file system can overflow it once a prefix is added.
///
/// Why this never collides: two tables have the same direct name only if
/// they have the same name. A shortened name is always exactly 64
/// characters and a direct one always shorter, so the two forms never meet;
/// two shortened names meet only if the hashes of two names collide (and
/// [`scan`] refuses that case rather than mixing two tables' changes).
fn bounded(prefix: &str, table: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let full = format!("{prefix}{table}");
    if full.chars().count() < NAME_LEN && table.chars().all(plain) {
        return full;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let room = NAME_LEN - prefix.len() - 1 - HASH_LEN;
    let head: String = table
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .chain(std::iter::repeat('_'))
        .take(room)
        .collect();
    format!("{prefix}{head}_{h:016x}")
}

/// Installs the change log in `database` and starts the poller task.
pub async fn start(
    pool: mysql_async::Pool,
    database: String,
    retain: Option<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(ShardCapture, tokio::task::JoinHandle<()>), CaptureError> {
    let mut conn = pool.get_conn().await?;
    install(&mut conn, &database).await?;
    let uuid: Option<String> = conn
        .exec_first(
            format!(
                "SELECT v FROM {}.`_psdb_meta` WHERE k = 'uuid'",
                quote_ident(&own_database(&database))
            ),
            (),
        )
        .await?;
    let uuid = uuid.unwrap_or_default();
    let mut refused = Refused::new();
    scan(&mut conn, &database, &mut refused).await?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    let head = poll(&mut conn, &database, 0).await?;
    let purged = Arc::new(AtomicU64::new(purged_mark(&mut conn, &database).await?));
    let purged_task = purged.clone();
    let (head_tx, head_rx) = watch::channel(head);
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(64);
    let db = database.clone();
    let mut ddl_seen = ddl_count(&mut conn).await.ok();
    let task = tokio::spawn(async move {
        let mut last_scan = tokio::time::Instant::now();
        let mut head = head;
        loop {
            let mut waiters = Vec::new();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                r = req_rx.recv() => waiters.extend(r),
            }
            if *shutdown.borrow() {
                return;
            }
            // Serve every queued request with this one cycle.
            while let Ok(r) = req_rx.try_recv() {
                waiters.push(r);
            }
            let mut want_scan = waiters.iter().any(|w| w.scan);
            if !want_scan && last_scan.elapsed() >= SCAN_INTERVAL {
                // A scan reads every table definition of the schema; look
                // first whether the server has run any DDL since the last
                // look (its own shadow tables included, which costs one
                // extra scan after each change).
                last_scan = tokio::time::Instant::now();
                let now = ddl_count(&mut conn).await.ok();
                want_scan = now.is_none() || now != ddl_seen;
                ddl_seen = now;
            }
            let mut failure = None;
            // A broken connection (MariaDB restarted) gets one fresh
            // connection and one more try before the waiters hear of it.
            for attempt in 0..2 {
                failure = None;
                if want_scan {
                    last_scan = tokio::time::Instant::now();
                    if let Err(e) = scan(&mut conn, &db, &mut refused).await {
                        tracing::warn!(database = %db, error = %e, "capture scan failed");
                        failure = Some(e.to_string());
                    }
                }
                if failure.is_none() {
                    match poll(&mut conn, &db, head).await {
                        Ok(h) => {
                            if h != head {
                                head = h;
                                let _ = head_tx.send(h);
                            }
                            if let Some(keep) = retain {
                                if let Err(e) =
                                    prune(&mut conn, &db, head, keep, &purged_task).await
                                {
                                    tracing::warn!(database = %db, error = %e, "change log pruning failed");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(database = %db, error = %e, "capture poll failed");
                            failure = Some(e.to_string());
                        }
                    }
                }
                if failure.is_none() || attempt == 1 {
                    break;
                }
                match pool.get_conn().await {
                    Ok(mut c) => {
                        if c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .await
                            .is_ok()
                        {
                            conn = c;
                        }
                    }
                    Err(_) => break,
                }
            }
            for w in waiters {
                let answer = match &failure {
                    Some(e) => Err(e.clone()),
                    None => Ok(head),
                };
                let _ = w.reply.send(answer);
            }
            if failure.is_some() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok((
        ShardCapture {
            own: own_database(&database),
            database,
            uuid,
            head: head_rx,
            purged,
            requests: req_tx,
        },
        task,
    ))
}

async fn install(conn: &mut mysql_async::Conn, database: &str) -> Result<(), CaptureError> {
    let db = quote_ident(&own_database(database));
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4;\
         CREATE TABLE IF NOT EXISTS {db}.`_psdb_meta` (k VARCHAR(64) NOT NULL PRIMARY KEY, \
         v VARCHAR(255) NOT NULL) ENGINE=InnoDB;\
         CREATE SEQUENCE IF NOT EXISTS {db}.`_psdb_seq` START WITH 1 CACHE 1000;\
         CREATE TABLE IF NOT EXISTS {db}.`{CHANGELOG}` (seq BIGINT NOT NULL PRIMARY KEY, \
         tbl VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, op CHAR(1) NOT NULL, \
         trx_start BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE, \
         trx_end BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE, \
         PERIOD FOR SYSTEM_TIME(trx_start, trx_end), KEY trx_k (trx_start, tbl, seq, op)) \
         ENGINE=InnoDB WITH SYSTEM VERSIONING;\
         CREATE TABLE IF NOT EXISTS {db}.`{GTIDS}` (trx BIGINT UNSIGNED NOT NULL PRIMARY KEY, \
         gtid BIGINT NOT NULL, commit_id BIGINT UNSIGNED NOT NULL, UNIQUE KEY gtid_k (gtid), \
         KEY commit_k (commit_id)) ENGINE=InnoDB;\
         INSERT IGNORE INTO {db}.`_psdb_meta` (k, v) VALUES ('uuid', UUID());\
         INSERT IGNORE INTO {db}.`{GTIDS}` (trx, gtid, commit_id) \
         SELECT 0, 1, COALESCE(MAX(commit_id), 0) FROM mysql.transaction_registry;"
    ))
    .await?;
    Ok(())
}

/// The names of the capture triggers in `database`.
///
/// By `event_object_schema`, the column MariaDB looks tables up by: a
/// condition on `trigger_schema` (always the same value) makes it open and
/// parse the triggers of every table of every database on the server.
async fn own_triggers(
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<Vec<OwnTrigger>, mysql_async::Error> {
    conn.exec(
        "SELECT CAST(trigger_name AS CHAR), CAST(event_object_table AS CHAR) \
         FROM information_schema.triggers \
         WHERE event_object_schema = ? AND trigger_name LIKE '\\_psdb\\_t%'",
        (database,),
    )
    .await
}

/// A capture trigger's name and the table it is on now.
type OwnTrigger = (String, String);

/// Whether a capture trigger is on the table its name was made for.
/// MariaDB moves triggers with a renamed table: there they would log the
/// renamed table's rows under its old name, and hold the names the
/// triggers of a new table of the old name need (the swap of an online
/// schema change).
fn on_its_table((name, table): &OwnTrigger) -> bool {
    TRIGGERS
        .iter()
        .any(|(k, _)| trigger_name(k, table) == *name)
}

/// Drops the capture triggers that a rename carried to another table, and
/// returns the names of the others.
async fn settled_triggers(
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<HashSet<String>, mysql_async::Error> {
    let (kept, moved): (Vec<OwnTrigger>, Vec<OwnTrigger>) = own_triggers(conn, database)
        .await?
        .into_iter()
        .partition(on_its_table);
    for (name, table) in &moved {
        tracing::debug!(
            database,
            trigger = name,
            table,
            "dropping a capture trigger a rename moved"
        );
        conn.query_drop(format!(
            "DROP TRIGGER IF EXISTS {}.{}",
            quote_ident(database),
            quote_ident(name)
        ))
        .await?;
    }
    Ok(kept.into_iter().map(|(name, _)| name).collect())
}

/// The server's count of statements that can change a table's columns or
/// keys, cheap to read: the periodic scan runs only when it moves.
async fn ddl_count(conn: &mut mysql_async::Conn) -> Result<u64, mysql_async::Error> {
    let n: Option<Option<u64>> = conn
        .query_first(
            "SELECT CAST(SUM(variable_value) AS UNSIGNED) FROM information_schema.global_status \
             WHERE variable_name IN ('COM_CREATE_TABLE', 'COM_ALTER_TABLE', 'COM_DROP_TABLE', \
             'COM_RENAME_TABLE', 'COM_CREATE_INDEX', 'COM_DROP_INDEX', 'COM_CREATE_TRIGGER', \
             'COM_DROP_TRIGGER')",
        )
        .await?;
    Ok(n.flatten().unwrap_or(0))
}

/// A base table of a backing database, as one scan read it.
#[derive(Debug)]
struct TableDef {
    name: String,
    /// Column names in ordinal order.
    columns: Vec<String>,
    /// MD5 of the columns' names and types (kept as the shadow table's
    /// comment, so a restarted emulator recognises capture it installed).
    sig: String,
}

/// Every base table of `database` with its columns and signature, in two
/// flat per-schema queries whatever the number of tables: neither reads a
/// table's statistics or comment, so MariaDB needs only the table
/// definitions (a correlated subquery, or a column MariaDB must open the
/// table for, costs seconds over thousands of tables). The column names
/// travel hex-encoded, so no name can break the list apart.
async fn read_tables(
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<Vec<TableDef>, CaptureError> {
    conn.query_drop("SET SESSION group_concat_max_len = 16777216")
        .await?;
    let names: Vec<String> = conn
        .exec(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = ? AND table_type = 'BASE TABLE'",
            (database,),
        )
        .await?;
    let columns: Vec<(String, Option<String>, Option<String>)> = conn
        .exec(
            "SELECT CAST(table_name AS CHAR), \
             CAST(GROUP_CONCAT(HEX(column_name) ORDER BY ordinal_position SEPARATOR ',') AS CHAR), \
             MD5(GROUP_CONCAT(CONCAT(column_name, ' ', column_type) ORDER BY ordinal_position \
             SEPARATOR ',')) FROM information_schema.columns WHERE table_schema = ? \
             GROUP BY table_name",
            (database,),
        )
        .await?;
    let mut by_name: HashMap<String, (Vec<String>, String)> = HashMap::new();
    for (table, hex, sig) in columns {
        let (Some(hex), Some(sig)) = (hex, sig) else {
            continue;
        };
        if let Some(cols) = decode_names(&hex) {
            by_name.insert(table, (cols, sig));
        }
    }
    // A table listed without columns was dropped between the two reads:
    // the next scan sees it as it is then.
    Ok(names
        .into_iter()
        .filter(|n| !n.starts_with(PREFIX))
        .filter_map(|name| {
            let (columns, sig) = by_name.remove(&name)?;
            Some(TableDef { name, columns, sig })
        })
        .collect())
}

/// Decodes a comma-separated list of hex-encoded UTF-8 names.
fn decode_names(list: &str) -> Option<Vec<String>> {
    list.split(',')
        .map(|h| {
            let bytes = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()
        })
        .collect()
}

/// Installs or re-creates capture for every base table whose columns changed.
async fn scan(
    conn: &mut mysql_async::Conn,
    database: &str,
    refused: &mut Refused,
) -> Result<(), CaptureError> {
    let tables = read_tables(conn, database).await?;
    let shadows: HashMap<String, String> = conn
        .exec(
            "SELECT CAST(table_name AS CHAR), CAST(table_comment AS CHAR) \
             FROM information_schema.tables WHERE table_schema = ? AND table_name LIKE '\\_psdb\\_s\\_%'",
            (own_database(database),),
        )
        .await?
        .into_iter()
        .collect();
    let triggers = settled_triggers(conn, database).await?;
    // Which table each shadow name belongs to: a second table on the same
    // name (a hash collision) is refused rather than mixed with the first.
    let mut owners: HashMap<String, &str> = HashMap::new();
    for table in &tables {
        let (name, sig) = (table.name.as_str(), table.sig.as_str());
        let shadow = shadow_name(name);
        if let Some(first) = owners.get(&shadow) {
            let reason = format!("its capture objects would share names with `{first}`'s");
            // Its objects are the first table's: nothing to remove.
            refuse(database, name, sig, &reason, refused);
            continue;
        }
        let current = shadows.get(&shadow).map(String::as_str);
        owners.insert(shadow, name);
        if refused.get(name).map(String::as_str) == Some(sig) {
            continue;
        }
        let present = TRIGGERS.map(|(k, _)| triggers.contains(&trigger_name(k, name)));
        if current == Some(sig) && present.iter().all(|p| *p) {
            continue;
        }
        tracing::debug!(database, table = name, "installing change capture");
        let existing = Existing {
            shadow: current.is_some(),
            triggers: present,
        };
        match install_table(conn, database, table, existing).await {
            Ok(()) => {
                refused.remove(name);
            }
            Err(e) => {
                refuse(database, name, sig, &e.to_string(), refused);
                uninstall(conn, database, name).await;
            }
        }
    }
    Ok(())
}

/// Tables the emulator could not capture, each with the column signature it
/// failed for: the warning is logged once per table definition, and an
/// ALTER TABLE gets a new try.
type Refused = BTreeMap<String, String>;

/// Leaves `table` without capture, and logs why (once per definition).
fn refuse(database: &str, table: &str, sig: &str, reason: &str, refused: &mut Refused) {
    if refused.get(table).map(String::as_str) != Some(sig) {
        tracing::warn!(
            database,
            table,
            reason,
            "table served without change capture: its copy streams, its changes are not seen"
        );
    }
    refused.insert(table.to_string(), sig.to_string());
}

/// Removes whatever part of a table's capture was installed, so its writes
/// succeed and its streams serve the copy and no changes, never half of
/// them.
async fn uninstall(conn: &mut mysql_async::Conn, database: &str, table: &str) {
    let all = Existing {
        shadow: true,
        triggers: [true; 3],
    };
    if let Err(e) = conn
        .query_drop(drop_capture_sql(database, table, all))
        .await
    {
        tracing::warn!(database, table, error = %e, "removing partial change capture failed");
    }
}

/// The capture triggers: name kind and the event each follows.
const TRIGGERS: [(&str, &str); 3] = [("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")];

/// Which of a table's capture objects a scan saw, in [`TRIGGERS`] order.
#[derive(Debug, Clone, Copy)]
struct Existing {
    shadow: bool,
    triggers: [bool; 3],
}

/// Drops those of a table's triggers and shadow table that `existing`
/// names. Each drop is DDL with its own syncs, as dear as a create, so a
/// new table's install drops nothing.
fn drop_capture_sql(database: &str, table: &str, existing: Existing) -> String {
    let db = quote_ident(database);
    let own = quote_ident(&own_database(database));
    let mut sql = String::new();
    for ((k, _), there) in TRIGGERS.iter().zip(existing.triggers) {
        if there {
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {db}.{};",
                quote_ident(&trigger_name(k, table))
            ));
        }
    }
    if existing.shadow {
        sql.push_str(&format!(
            "DROP TABLE IF EXISTS {own}.{};",
            quote_ident(&shadow_name(table))
        ));
    }
    sql
}

/// Installs a table's capture in one round trip: drops what the scan saw of
/// an older capture, creates the shadow table and the three triggers. If
/// that fails (the scan's view was stale, say), everything is dropped and
/// tried once more before the table is refused.
async fn install_table(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &TableDef,
    existing: Existing,
) -> Result<(), CaptureError> {
    // The shadow table adds its own `_psdb_` columns; a user column of that
    // name would merge with one of them (CREATE … SELECT does not refuse it)
    // and fail the user's writes at run time.
    if let Some(c) = table
        .columns
        .iter()
        .find(|c| c.to_ascii_lowercase().starts_with(PREFIX))
    {
        return Err(CaptureError::ReservedColumn(c.clone()));
    }
    let create = create_capture_sql(database, table);
    let (keep, carry) = if existing.shadow {
        carry_images_sql(conn, database, table).await
    } else {
        (String::new(), String::new())
    };
    let first = format!(
        "{keep}{}{create}{carry}",
        drop_capture_sql(database, &table.name, existing)
    );
    if conn.query_drop(first).await.is_ok() {
        return Ok(());
    }
    let all = Existing {
        shadow: true,
        triggers: [true; 3],
    };
    let again = format!("{}{create}", drop_capture_sql(database, &table.name, all));
    conn.query_drop(again).await?;
    Ok(())
}

/// Where a table's capture is re-created (its columns changed), the images
/// captured before and not yet streamed must not go with the old shadow:
/// they are the changes made before the ALTER. The old shadow is set aside
/// (`keep`, run before the drop) and its images carried into the new one
/// (`carry`, after the create), column by column for the columns both
/// shapes have: a column added since reads NULL in them, a dropped one is
/// gone, a retyped one is converted by MariaDB. (vttablet sends such rows
/// in the shape they were written in, then a FIELD of the new shape; the
/// emulator sends them in the new shape, with their values.)
async fn carry_images_sql(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &TableDef,
) -> (String, String) {
    let own_name = own_database(database);
    let shadow_name = shadow_name(&table.name);
    let old: Vec<String> = match conn
        .exec(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            (&own_name, &shadow_name),
        )
        .await
    {
        Ok(old) => old,
        Err(e) => {
            tracing::warn!(table = %table.name, error = %e, "could not read the old shadow's columns: changes not yet streamed are dropped with it");
            return (String::new(), String::new());
        }
    };
    let common: Vec<String> = table
        .columns
        .iter()
        .filter(|c| old.iter().any(|o| o == *c))
        .map(|c| quote_ident(c))
        .collect();
    // Images with no column in common would carry nothing but their keys'
    // absence: rows of NULLs. They go with the old shadow instead.
    if common.is_empty() {
        return (String::new(), String::new());
    }
    let own = quote_ident(&own_name);
    let shadow = quote_ident(&shadow_name);
    let aside = quote_ident(CARRIED);
    let cols = common.iter().map(|c| format!(", {c}")).collect::<String>();
    let keep = format!(
        "DROP TABLE IF EXISTS {own}.{aside}; RENAME TABLE {own}.{shadow} TO {own}.{aside};"
    );
    let carry = format!(
        "INSERT IGNORE INTO {own}.{shadow} (_psdb_seq, _psdb_img{cols}) \
         SELECT _psdb_seq, _psdb_img{cols} FROM {own}.{aside}; DROP TABLE {own}.{aside};"
    );
    (keep, carry)
}

/// The shadow table and the three triggers of a table's capture (after
/// its older capture, if any, is dropped), as one multi-statement text.
fn create_capture_sql(database: &str, table: &TableDef) -> String {
    let db = quote_ident(database);
    let own = quote_ident(&own_database(database));
    let t = quote_ident(&table.name);
    let shadow = quote_ident(&shadow_name(&table.name));
    let columns = &table.columns;
    let col_list: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let col_list = col_list.join(", ");
    let new_vals: Vec<String> = columns
        .iter()
        .map(|c| format!("NEW.{}", quote_ident(c)))
        .collect();
    let old_vals: Vec<String> = columns
        .iter()
        .map(|c| format!("OLD.{}", quote_ident(c)))
        .collect();
    let tbl_lit = crate::values::quote_literal(table.name.as_bytes());
    let sig_lit = crate::values::quote_literal(table.sig.as_bytes());
    let mut sql = format!(
        "CREATE TABLE {own}.{shadow} (_psdb_seq BIGINT NOT NULL DEFAULT 0, _psdb_img CHAR(1) NOT NULL DEFAULT 'A', \
         PRIMARY KEY (_psdb_seq, _psdb_img)) ENGINE=InnoDB COMMENT={sig_lit} \
         AS SELECT * FROM {db}.{t} LIMIT 0;"
    );
    let log = |op: &str| {
        format!(
            "SET _psdb_s = NEXTVAL({own}.`_psdb_seq`); \
             INSERT INTO {own}.`{CHANGELOG}` (seq, tbl, op) VALUES (_psdb_s, {tbl_lit}, '{op}');"
        )
    };
    let image = |img: &str, vals: &[String]| {
        format!(
            "INSERT INTO {own}.{shadow} (_psdb_seq, _psdb_img, {col_list}) \
             VALUES (_psdb_s, '{img}', {});",
            vals.join(", ")
        )
    };
    let bodies = [
        format!("{} {}", log("I"), image("A", &new_vals)),
        format!(
            "{} {} {}",
            log("U"),
            image("B", &old_vals),
            image("A", &new_vals)
        ),
        format!("{} {}", log("D"), image("B", &old_vals)),
    ];
    for ((k, event), body) in TRIGGERS.iter().zip(bodies) {
        sql.push_str(&format!(
            "CREATE TRIGGER {db}.{} AFTER {event} ON {db}.{t} FOR EACH ROW BEGIN DECLARE _psdb_s BIGINT; {body} END;",
            quote_ident(&trigger_name(k, &table.name))
        ));
    }
    sql
}

/// Removes every object the emulator made for backing database `database`:
/// its capture triggers there and its own database (change log, shadows,
/// views). Also what emulators before the own database left in the backing
/// database itself (`_psdb_changelog`, `_psdb_gtid`, `_psdb_meta`,
/// `_psdb_seq`, `_psdb_s_*`, and the `_psdb_v_<db>` views database).
/// The user's tables and rows are not touched. Run it only when no
/// emulator serves `database`: a running one installs capture again.
pub async fn remove(conn: &mut mysql_async::Conn, database: &str) -> Result<(), CaptureError> {
    let db = quote_ident(database);
    let triggers: Vec<String> = own_triggers(conn, database)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let legacy_shadows: Vec<String> = conn
        .exec(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = ? AND table_name LIKE '\\_psdb\\_s\\_%'",
            (database,),
        )
        .await?;
    // Triggers first: a trigger whose change log is gone fails the user's
    // writes.
    let mut sql = String::new();
    for t in &triggers {
        sql.push_str(&format!("DROP TRIGGER IF EXISTS {db}.{};", quote_ident(t)));
    }
    for t in legacy_shadows
        .iter()
        .map(String::as_str)
        .chain([CHANGELOG, GTIDS, "_psdb_meta"])
    {
        sql.push_str(&format!("DROP TABLE IF EXISTS {db}.{};", quote_ident(t)));
    }
    let legacy_views: String = format!("{PREFIX}v_{database}")
        .chars()
        .take(NAME_LEN)
        .collect();
    sql.push_str(&format!(
        "DROP SEQUENCE IF EXISTS {db}.`_psdb_seq`; DROP DATABASE IF EXISTS {}; \
         DROP DATABASE IF EXISTS {};",
        quote_ident(&own_database(database)),
        quote_ident(&legacy_views)
    ));
    conn.query_drop(sql).await?;
    Ok(())
}

/// Records that `table` of backing database `database` was truncated: a
/// change log row with op `T` and no image, in a transaction of its own (a
/// TRUNCATE commits by itself), so it gets a GTID like the binlog event of
/// a real server's TRUNCATE. No trigger fires for a TRUNCATE, so the MySQL
/// front calls this after running one.
pub fn truncate_marker_sql(database: &str, table: &str) -> String {
    let own = quote_ident(&own_database(database));
    format!(
        "INSERT INTO {own}.`{CHANGELOG}` (seq, tbl, op) \
         VALUES (NEXTVAL({own}.`_psdb_seq`), {}, 'T')",
        crate::values::quote_literal(table.as_bytes())
    )
}

/// The pruning mark kept in `_psdb_meta` (0 when nothing was pruned), so a
/// restarted emulator still answers pruned positions as purged.
async fn purged_mark(conn: &mut mysql_async::Conn, database: &str) -> Result<u64, CaptureError> {
    let v: Option<String> = conn
        .query_first(format!(
            "SELECT v FROM {}.`_psdb_meta` WHERE k = 'purged'",
            quote_ident(&own_database(database))
        ))
        .await?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Retention (`--retain-changes keep`): deletes the change log rows, images
/// and GTID rows of every transaction but the newest `keep`, then records
/// the new mark, so positions before it answer as purged, as a server
/// whose binlogs expired does. The change log is system-versioned, so its
/// deleted rows are removed from history too.
async fn prune(
    conn: &mut mysql_async::Conn,
    database: &str,
    head: u64,
    keep: u64,
    purged: &AtomicU64,
) -> Result<(), CaptureError> {
    let mark = head.saturating_sub(keep);
    if mark <= purged.load(Ordering::Acquire) {
        return Ok(());
    }
    let own = own_database(database);
    let db = quote_ident(&own);
    let shadows: Vec<String> = conn
        .exec(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = ? AND table_name LIKE '\\_psdb\\_s\\_%'",
            (&own,),
        )
        .await?;
    let mut sql = String::from("START TRANSACTION;");
    for shadow in &shadows {
        sql.push_str(&format!(
            "DELETE s FROM {db}.{} s JOIN {db}.`{CHANGELOG}` c ON c.seq = s._psdb_seq \
             JOIN {db}.`{GTIDS}` g ON g.trx = c.trx_start WHERE g.gtid <= {mark};",
            quote_ident(shadow)
        ));
    }
    sql.push_str(&format!(
        "DELETE c FROM {db}.`{CHANGELOG}` c JOIN {db}.`{GTIDS}` g ON g.trx = c.trx_start \
         WHERE g.gtid <= {mark};\
         DELETE FROM {db}.`{GTIDS}` WHERE gtid <= {mark} AND gtid < {head};\
         REPLACE INTO {db}.`_psdb_meta` (k, v) VALUES ('purged', '{mark}');\
         COMMIT;\
         DELETE HISTORY FROM {db}.`{CHANGELOG}`;"
    ));
    conn.query_drop(sql).await?;
    purged.store(mark, Ordering::Release);
    Ok(())
}

/// Numbers newly committed transactions; returns the new head.
///
/// The change log is system-versioned with transaction-precise history, so
/// each row's invisible `trx_start` is the writing InnoDB transaction id and
/// `mysql.transaction_registry` gives every such transaction a `commit_id` in
/// real commit order. New transactions are those with change log rows and no
/// GTID yet; a window below the last seen `commit_id` guards against commit
/// records that become visible slightly out of order.
async fn poll(
    conn: &mut mysql_async::Conn,
    database: &str,
    head: u64,
) -> Result<u64, CaptureError> {
    let db = quote_ident(&own_database(database));
    let row: Option<(Option<u64>, Option<u64>)> = conn
        .query_first(format!(
            "SELECT MAX(gtid), MAX(commit_id) FROM {db}.`{GTIDS}`"
        ))
        .await?;
    let (max_gtid, max_commit) = row.unwrap_or((None, None));
    let mut next = max_gtid.unwrap_or(1).max(head);
    let low = max_commit.unwrap_or(0).saturating_sub(COMMIT_WINDOW);
    let pending: Vec<(u64, u64)> = conn
        .query(format!(
            "SELECT r.transaction_id, r.commit_id FROM mysql.transaction_registry r \
             WHERE r.commit_id > {low} \
               AND EXISTS (SELECT 1 FROM {db}.`{CHANGELOG}` c WHERE c.trx_start = r.transaction_id) \
               AND NOT EXISTS (SELECT 1 FROM {db}.`{GTIDS}` g WHERE g.trx = r.transaction_id) \
             ORDER BY r.commit_id"
        ))
        .await?;
    for chunk in pending.chunks(500) {
        let mut values = Vec::with_capacity(chunk.len());
        for (trx, commit) in chunk {
            next += 1;
            values.push(format!("({trx}, {next}, {commit})"));
        }
        conn.query_drop(format!(
            "INSERT INTO {db}.`{GTIDS}` (trx, gtid, commit_id) VALUES {}",
            values.join(", ")
        ))
        .await?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_a_rename_moved_are_told_from_the_others() {
        let own = |name: &str, table: &str| (name.to_string(), table.to_string());
        let cases = [
            (own(&trigger_name("i", "t"), "t"), true),
            (own(&trigger_name("d", "t"), "t"), true),
            (own(&trigger_name("u", "t"), "t_old"), false),
            (own(&trigger_name("i", "t_old"), "t"), false),
            (own("_psdb_tx_t", "t"), false),
        ];
        for (trigger, settled) in cases {
            assert_eq!(on_its_table(&trigger), settled, "{trigger:?}");
        }
    }

    #[test]
    fn plain_short_names_stay_readable() {
        assert_eq!(shadow_name("items"), "_psdb_s_items");
        assert_eq!(trigger_name("u", "items"), "_psdb_tu_items");
    }

    #[test]
    fn the_longest_and_oddest_names_fit_in_64_plain_characters() {
        let long = "t".repeat(64);
        let odd = "é".repeat(64);
        for table in [
            long.as_str(),
            odd.as_str(),
            "a b.c-d`e",
            "select",
            "Bücher €",
        ] {
            for name in [
                shadow_name(table),
                trigger_name("i", table),
                trigger_name("u", table),
                trigger_name("d", table),
            ] {
                assert!(name.len() <= NAME_LEN, "{name} is too long");
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{name} is not plain"
                );
            }
        }
        assert!(shadow_name(&long).starts_with("_psdb_s_tttt"));
    }

    #[test]
    fn long_names_sharing_a_prefix_do_not_collide() {
        let base = "x".repeat(63);
        let names: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| format!("{base}{s}"))
            .chain([base.clone(), "x".repeat(62)])
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for n in &names {
            assert!(seen.insert(shadow_name(n)), "shadow of {n} collides");
            assert!(seen.insert(trigger_name("i", n)), "trigger of {n} collides");
        }
        // A plain name that looks like a shortened one is not one: shortened
        // names are exactly 64 characters, direct ones shorter.
        let lookalike = &shadow_name(&names[0])["_psdb_s_".len()..];
        assert_ne!(shadow_name(lookalike), shadow_name(&names[0]));
    }

    #[test]
    fn hex_encoded_column_lists_decode_to_the_names() {
        let cases: [(&str, Option<Vec<&str>>); 5] = [
            ("6964", Some(vec!["id"])),
            ("6964,2C20E282AC", Some(vec!["id", ", €"])),
            ("", Some(vec![""])),
            ("6", None),
            ("FF", None),
        ];
        for (hex, want) in cases {
            let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(decode_names(hex), want, "{hex}");
        }
    }

    #[test]
    fn a_new_table_drops_nothing_and_creates_all_four_objects() {
        let table = TableDef {
            name: "t".into(),
            columns: vec!["id".into(), "v".into()],
            sig: "abc".into(),
        };
        let none = Existing {
            shadow: false,
            triggers: [false; 3],
        };
        assert_eq!(drop_capture_sql("db", "t", none), "");
        let some = Existing {
            shadow: true,
            triggers: [false, true, false],
        };
        assert_eq!(
            drop_capture_sql("db", "t", some),
            "DROP TRIGGER IF EXISTS `db`.`_psdb_tu_t`;DROP TABLE IF EXISTS `_psdb_db`.`_psdb_s_t`;"
        );
        let create = create_capture_sql("db", &table);
        assert_eq!(
            create
                .matches("CREATE TABLE `_psdb_db`.`_psdb_s_t`")
                .count(),
            1
        );
        for (k, event) in TRIGGERS {
            assert!(
                create.contains(&format!(
                    "CREATE TRIGGER `db`.`_psdb_t{k}_t` AFTER {event} ON `db`.`t`"
                )),
                "{k}: {create}"
            );
        }
    }

    #[test]
    fn odd_names_that_flatten_alike_stay_apart() {
        assert_ne!(shadow_name("a b"), shadow_name("a-b"));
        assert_ne!(shadow_name("a b"), shadow_name("a_b"));
    }
}
