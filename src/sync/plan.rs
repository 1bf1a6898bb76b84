//! What a sync will read, decided before anything is written to stdout.
//!
//! One round of MySQL queries (retried like any transient error) gives the
//! keyspace's shards, the cells of the chosen tablet type and the tables'
//! real columns. The catalog's selected streams are then checked against
//! them and turned into [`StreamSpec`]s: the properties to convert, the
//! columns to request, the replication method this run (a table without a
//! primary key or a UNIQUE NOT NULL key is copied in full, see
//! [`method_for`]) and the version its records carry: a FULL_TABLE copy's,
//! or a truncated CDC stream's re-copy's (see [`State::recopy`]), which
//! [`State`] keeps. Every (stream, shard) becomes a [`Slot`] with its
//! starting cursor. A bad catalog, state or keyspace ends the run here,
//! with nothing written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tracing::{info, warn};

use super::error::SyncError;
use super::records::{StreamSpec, SEQUENCE_COLUMN};
use crate::catalog::{Catalog, ReplicationMethod, SelectedStream};
use crate::charset::Charset;
use crate::config::Settings;
use crate::convert::{PropertySpec, Target};
use crate::mysql::{self, MySqlError, RawTable, Tablet};
use crate::pb::psdbconnect::v1alpha1::TableCursor;
use crate::retry::{Policy, Retries};
use crate::row_key::KeySource;
use crate::state::{self, State};
use crate::types::ColumnType;

/// The validated inputs of a sync: catalog and state, read before any output.
#[derive(Debug)]
pub struct Inputs {
    pub catalog: Catalog,
    pub state: State,
    pub state_path: Option<PathBuf>,
}

impl Inputs {
    /// Reads the catalog and the state. A state path that does not exist
    /// yet is a first run (schedulers pass it before a first run wrote it).
    pub fn load(
        catalog_path: &std::path::Path,
        state_path: Option<PathBuf>,
        keyspace: &str,
    ) -> Result<Inputs, SyncError> {
        let catalog = Catalog::from_path(catalog_path)?;
        catalog.selected()?;
        let state = match &state_path {
            Some(p) if !p.exists() => {
                warn!(state = %p.display(), "state file does not exist yet; starting from scratch");
                State::default()
            }
            Some(p) => {
                let s = State::from_path(p)?;
                s.check_keyspace(&p.display().to_string(), keyspace)?;
                s
            }
            None => State::default(),
        };
        Ok(Inputs {
            catalog,
            state,
            state_path,
        })
    }
}

/// One planned stream and what the writer says of it before any record.
pub struct Stream {
    pub spec: Arc<StreamSpec>,
    /// The SCHEMA message's schema.
    pub schema: Value,
    /// A first-ever FULL_TABLE copy's version, activated at once.
    pub activate_now: Option<i64>,
    /// Estimated rows, for progress.
    pub row_count: Option<u64>,
}

/// One (stream, shard) to read.
pub struct Slot {
    pub index: usize,
    /// Its stream's index in the plan.
    pub stream_index: usize,
    pub stream: Arc<StreamSpec>,
    pub shard: String,
    pub start: TableCursor,
    /// Where an interrupted copy began, from the state, if known.
    pub floor: Option<String>,
}

/// The whole plan of a run.
pub struct Plan {
    pub keyspace: String,
    pub shards: Vec<String>,
    pub cells: Vec<String>,
    pub streams: Vec<Stream>,
    /// The run reads every shard of the keyspace: only then may it activate
    /// a re-copy's version, which would drop the rows of shards it skipped.
    pub every_shard: bool,
    /// The state with every planned (stream, shard) given a start.
    pub state: State,
}

impl Plan {
    /// Every (stream, shard), streams in catalog order.
    pub fn slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        for (stream_index, stream) in self.streams.iter().enumerate() {
            let spec = &stream.spec;
            for shard in &self.shards {
                let start = self.state.cursor(&spec.name, shard).unwrap_or(TableCursor {
                    shard: shard.clone(),
                    keyspace: self.keyspace.clone(),
                    position: String::new(),
                    last_known_pk: None,
                });
                slots.push(Slot {
                    index: slots.len(),
                    stream_index,
                    stream: spec.clone(),
                    shard: shard.clone(),
                    start,
                    floor: self.state.copy_floor(&spec.name, shard),
                });
            }
        }
        slots
    }
}

/// Plans a run: MySQL, then every selected stream.
pub async fn make(settings: &Settings, inputs: Inputs) -> Result<Plan, SyncError> {
    let Inputs {
        catalog,
        mut state,
        state_path,
        ..
    } = inputs;
    let selected = catalog.selected()?;
    let keyspace = settings.database.clone();
    let server = ask_mysql(settings, &keyspace).await?;
    let available = server.shards?;
    if available.is_empty() {
        return Err(SyncError::NoShards { keyspace });
    }
    let shards = state::select_shards(&keyspace, &available, settings.shards.as_deref())?;
    let every_shard = available.iter().all(|s| shards.contains(s));
    let cells = match &settings.cells {
        Some(given) => given.clone(),
        None => cells_for(settings, &server.tablets?),
    };
    if cells.is_empty() {
        return Err(SyncError::NoTablets {
            keyspace,
            tablet_type: settings.tablet_type.as_str().to_uppercase(),
        });
    }
    let tables: BTreeMap<String, RawTable> = server
        .tables?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    if let Some(p) = &state_path {
        refuse_gone_shards(
            &state,
            &p.display().to_string(),
            &selected,
            &available,
            &keyspace,
        )?;
    }
    check_recopies(&settings.recopy, &selected)?;
    let mut streams = Vec::new();
    for s in &selected {
        let Some(table) = tables.get(&s.table) else {
            return Err(SyncError::UnknownTable {
                stream: s.tap_stream_id.clone(),
                table: s.table.clone(),
                keyspace,
            });
        };
        if table.is_view || s.is_view {
            warn!(stream = %s.name, "skipping a view: the Connect API streams tables only; select its base tables instead");
            continue;
        }
        let stream = plan_stream(settings, &mut state, &shards, s, table);
        if stream.spec.method.is_cdc() && stream.spec.version.is_some() && !every_shard {
            warn!(stream = %s.name, shards = %shards.join(","), keyspace_shards = %available.join(","), "this run reads only some shards: the re-copy's records carry its version, but ACTIVATE_VERSION waits for a run over every shard (it would drop the rows of the others)");
        }
        streams.push(stream);
    }
    Ok(Plan {
        keyspace,
        shards,
        cells,
        streams,
        every_shard,
        state,
    })
}

/// Every stream `recopy` names must be one this run reads.
fn check_recopies(names: &[String], selected: &[SelectedStream]) -> Result<(), SyncError> {
    for name in names {
        if !selected
            .iter()
            .any(|s| recopy_names(std::slice::from_ref(name), s))
        {
            let list: Vec<&str> = selected.iter().map(|s| s.name.as_str()).collect();
            return Err(SyncError::UnknownRecopy {
                stream: name.clone(),
                selected: list.join(", "),
            });
        }
    }
    Ok(())
}

/// Whether `recopy` names a stream (by name or tap_stream_id).
fn recopy_names(names: &[String], s: &SelectedStream) -> bool {
    names.iter().any(|n| n == &s.name || n == &s.tap_stream_id)
}

/// Asks for a stream's re-copy this run (`recopy`). A CDC stream is marked
/// as a TRUNCATE under `on_truncate: recopy` marks one, so one mechanism
/// copies, resumes and activates both; a re-copy already under way resumes
/// instead (a request repeated after an interrupted run does not start it
/// over). A FULL_TABLE stream starts a copy from scratch under a new
/// version, its bookmark dropped.
fn request_recopy(state: &mut State, stream: &str, full_table: bool) {
    if full_table {
        state.bookmarks.remove(stream);
    } else if state.recopy_under_way(stream) {
        info!(stream = %stream, "recopy names a stream whose re-copy is under way: resuming it");
    } else {
        state.mark_recopy(stream);
    }
}

/// A selected stream's cursor for a shard that is gone cannot be resumed:
/// its rows now live in other shards.
fn refuse_gone_shards(
    state: &State,
    path: &str,
    selected: &[SelectedStream],
    available: &[String],
    keyspace: &str,
) -> Result<(), SyncError> {
    for sel in selected {
        let Some(sb) = state.bookmarks.get(&sel.name) else {
            continue;
        };
        if let Some(shard) = sb.shards.keys().find(|s| !available.contains(s)) {
            return Err(state::StateError::GoneShard {
                path: path.to_string(),
                stream: sel.name.clone(),
                shard: shard.clone(),
                keyspace: keyspace.to_string(),
                available: available.join(", "),
            }
            .into());
        }
    }
    Ok(())
}

/// One stream's spec and schema; the state gets its start cursors and, for
/// a FULL_TABLE copy or a re-copy, its version.
fn plan_stream(
    settings: &Settings,
    state: &mut State,
    shards: &[String],
    s: &SelectedStream,
    table: &RawTable,
) -> Stream {
    let (props, columns) = properties(s, table);
    let method = method_for(s, table);
    if recopy_names(&settings.recopy, s) {
        request_recopy(state, &s.name, method == ReplicationMethod::FullTable);
    }
    let mut activate_now = None;
    let version = if method == ReplicationMethod::FullTable {
        state.forget_recopy(&s.name);
        // A keyless copy is never resumed: it would resume after the last
        // row sent, by every column, which skips an identical row. A copy
        // by a primary key or its equivalent resumes after that key.
        let copy = state.full_table_copy(&s.name, !table.key().is_keyless(), now_ms());
        if copy.first {
            activate_now = Some(copy.version);
        }
        Some(copy.version)
    } else {
        state.forget_full_table(&s.name);
        recopy_version(state, &s.name)
    };
    // A versioned copy covers every row: no shard of it may start from
    // `starting_gtids`, past its rows.
    let starting = settings
        .starting_gtids
        .get(&settings.database)
        .filter(|_| version.is_none());
    state.initialize(&s.name, &settings.database, shards, starting);
    Stream {
        spec: Arc::new(StreamSpec {
            name: s.name.clone(),
            name_json: serde_json::to_string(&s.name).unwrap_or_else(|_| "\"\"".into()),
            table: s.table.clone(),
            props,
            columns,
            key_properties: s.key_properties.clone(),
            method,
            version,
        }),
        schema: stream_schema(s, settings.include_metadata),
        activate_now,
        row_count: s.row_count.or(table.row_count),
    }
}

/// The version of a CDC stream's re-copy, if it has one this run,
/// said once in the log.
fn recopy_version(state: &mut State, stream: &str) -> Option<i64> {
    let recopy = state.recopy(stream, now_ms())?;
    if recopy.begun {
        warn!(stream = %stream, version = recopy.version, "copying the stream again (recopy, or on_truncate: recopy after a TRUNCATE) on every shard under a new version; ACTIVATE_VERSION follows once every shard's copy is done, so the target drops the rows that vanished, and change capture goes on from the copy's end");
    } else {
        info!(stream = %stream, version = recopy.version, "resuming the interrupted re-copy of the stream under its version");
    }
    Some(recopy.version)
}

/// The selected properties as the converter needs them, and the columns to
/// request: those the table still has.
fn properties(s: &SelectedStream, table: &RawTable) -> (Vec<PropertySpec>, Vec<String>) {
    let mut props = Vec::new();
    let mut columns = Vec::new();
    for p in &s.properties {
        let column = table.columns.iter().find(|c| c.name == p.name);
        let column_type = column.map(|c| c.column_type.clone());
        let charset = column
            .filter(|c| !c.charset.is_empty())
            .map(|c| Charset::named(&c.charset));
        let sql = p.sql_datatype.clone().or_else(|| column_type.clone());
        let members = sql
            .as_deref()
            .map(ColumnType::parse)
            .filter(|ct| ct.base == "enum" || ct.base == "set")
            .map(|ct| ct.members())
            .unwrap_or_default();
        if column_type.is_some() {
            columns.push(p.name.clone());
        } else {
            warn!(stream = %s.name, column = %p.name, "selected column is not in the table (dropped?); it will be null");
        }
        props.push(PropertySpec {
            name: p.name.clone(),
            target: Target::of(&p.schema),
            members,
            charset,
        });
    }
    (props, columns)
}

/// The method a stream is synced with this run: its catalog's, except that
/// a table without a key is copied in full (FULL_TABLE). Its key is the
/// primary key or, without one, the UNIQUE NOT NULL index Vitess streams it
/// by (see [`crate::row_key`]): changes of such a table carry that key, so
/// it is followed like any keyed table.
///
/// Why a keyless table is copied: its changes can only be sent as
/// whole-row images with no key, which no target can apply (an update would
/// add a row, a delete would match nothing or every duplicate), and a copy
/// resumed after an interruption cannot tell identical rows apart (so a
/// keyless copy is never resumed across runs: an interrupted one starts
/// again). A full copy bracketed by ACTIVATE_VERSION replaces the target's
/// table with the source's, so nothing wrong reaches it. Warned once per
/// stream per run, also when the catalog already says FULL_TABLE: the cost
/// of a full copy every run should not go unseen.
///
/// A table keyed only by its equivalent whose catalog declares no key (a
/// catalog discovered before the tap knew equivalents) is copied in full
/// too, with a warning to discover again: its SCHEMA would declare no key
/// for the changes it carries.
fn method_for(s: &SelectedStream, table: &RawTable) -> ReplicationMethod {
    match table.key().source {
        KeySource::Primary => s.method,
        KeySource::Equivalent { index } if s.key_properties.is_empty() && s.method.is_cdc() => {
            warn!(
                stream = %s.name,
                index,
                catalog_method = %s.method,
                "table has no primary key but unique index `{index}` keys it, and the catalog declares no key properties: copying it in full (FULL_TABLE) this run; run discover again to follow its changes by that index"
            );
            ReplicationMethod::FullTable
        }
        KeySource::Equivalent { .. } => s.method,
        KeySource::None => {
            warn!(
                stream = %s.name,
                catalog_method = %s.method,
                "table has no primary key and no unique key of NOT NULL columns, so its changes cannot be keyed: copying it in full (FULL_TABLE) every run; add a primary key to follow its changes"
            );
            ReplicationMethod::FullTable
        }
    }
}

/// The `_sdc_deleted_at` property CDC streams declare.
fn deleted_at_schema() -> Value {
    json!({"type": ["null", "string"], "format": "date-time"})
}

/// The SCHEMA message's schema: the selected properties, plus what the tap
/// adds to records.
fn stream_schema(s: &SelectedStream, include_metadata: bool) -> Value {
    let mut props = Map::new();
    for p in &s.properties {
        props.insert(p.name.clone(), p.schema.clone());
    }
    if s.method.is_cdc() {
        props.insert("_sdc_deleted_at".into(), deleted_at_schema());
    }
    if include_metadata {
        props.insert("_sdc_shard".into(), json!({"type": ["null", "string"]}));
        props.insert("_sdc_position".into(), json!({"type": ["null", "string"]}));
        props.insert(SEQUENCE_COLUMN.into(), json!({"type": ["null", "integer"]}));
    }
    json!({"type": ["null", "object"], "additionalProperties": false, "properties": props})
}

/// Cells of the tablets of the chosen type in this keyspace.
pub fn cells_for(settings: &Settings, tablets: &[Tablet]) -> Vec<String> {
    let want = settings.tablet_type.as_str();
    let mut cells: Vec<String> = tablets
        .iter()
        .filter(|t| {
            t.tablet_type.eq_ignore_ascii_case(want)
                && (t.keyspace.is_empty() || t.keyspace == settings.database)
        })
        .map(|t| t.cell.clone())
        .collect();
    cells.sort();
    cells.dedup();
    cells
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What MySQL said. Each answer keeps its own error: tablets only matter
/// when `cells` is not configured.
struct Answers {
    shards: Result<Vec<String>, MySqlError>,
    tablets: Result<Vec<Tablet>, MySqlError>,
    tables: Result<Vec<RawTable>, MySqlError>,
}

/// The MySQL round a sync needs, retried while the connection breaks
/// during the queries. A connection that cannot be made at all is said at
/// once (a wrong host, port, password or database: see `error`).
async fn ask_mysql(settings: &Settings, keyspace: &str) -> Result<Answers, MySqlError> {
    let mut retries = Retries::new(Policy::reading(settings.max_retries, settings.retry_budget));
    loop {
        let err = match mysql_round(settings, keyspace).await {
            Ok(answers) => return Ok(answers),
            Err(e) if e.kind().is_retryable() => e,
            Err(e) => return Err(e),
        };
        let Some(wait) = retries.next_wait() else {
            return Err(err);
        };
        warn!(attempt = retries.attempts(), error = %err, wait_ms = wait.as_millis() as u64, "MySQL failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// One round of the queries; a query that lost its connection fails the
/// round, so that it is tried again.
async fn mysql_round(settings: &Settings, keyspace: &str) -> Result<Answers, MySqlError> {
    let mut conn = mysql::connect(settings).await?;
    let shards = mysql::shards(&mut conn, keyspace).await;
    let tablets = mysql::tablets(&mut conn).await;
    let tables = mysql::describe_schema(&mut conn, keyspace).await;
    mysql::close(conn).await;
    Answers {
        shards,
        tablets,
        tables,
    }
    .or_lost()
}

impl Answers {
    /// The round's result: failed when a query lost its connection.
    fn or_lost(self) -> Result<Answers, MySqlError> {
        match self {
            Answers { shards: Err(e), .. } if e.kind().is_retryable() => Err(e),
            Answers {
                tablets: Err(e), ..
            } if e.kind().is_retryable() => Err(e),
            Answers { tables: Err(e), .. } if e.kind().is_retryable() => Err(e),
            answers => Ok(answers),
        }
    }
}

/// Re-reads a table's columns after the server refused one mid-run (DDL):
/// the readers' only way to MySQL.
pub async fn table_columns(settings: &Settings, table: &str) -> Option<Vec<String>> {
    let mut conn = mysql::connect(settings).await.ok()?;
    let tables = mysql::describe_schema(&mut conn, &settings.database).await;
    mysql::close(conn).await;
    let table = tables.ok()?.into_iter().find(|t| t.name == table)?;
    Some(table.columns.into_iter().map(|c| c.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Endpoint, Secret, TabletType};
    use std::time::Duration;

    fn settings(tablet_type: TabletType) -> Settings {
        Settings {
            database: "ks".into(),
            username: "u".into(),
            password: Secret::new("p"),
            mysql: Endpoint {
                host: "h".into(),
                port: 1,
            },
            grpc: Endpoint {
                host: "h".into(),
                port: 2,
            },
            tls: false,
            tls_ca_file: None,
            shards: None,
            recopy: Vec::new(),
            tablet_type,
            starting_gtids: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_retries: 1,
            retry_budget: Duration::from_secs(1),
            include_metadata: false,
            do_not_treat_tiny_int_as_boolean: None,
            max_parallel_readers: 1,
            state_interval_records: 1,
            state_interval: Duration::from_secs(1),
            progress_interval: Duration::from_secs(1),
            resync_on_purged: false,
            on_truncate: crate::config::OnTruncate::Warn,
            api: crate::config::Api::Psdbconnect,
            grpc_auth: crate::config::GrpcAuth::Basic,
            cells: None,
            encodings: Default::default(),
        }
    }

    fn tablet(cell: &str, ks: &str, ty: &str) -> Tablet {
        Tablet {
            cell: cell.into(),
            keyspace: ks.into(),
            shard: "-".into(),
            tablet_type: ty.into(),
            state: "SERVING".into(),
        }
    }

    #[test]
    fn only_a_table_without_any_key_is_forced_to_full_table() {
        use crate::mysql::RawColumn;
        use crate::row_key::UniqueIndex;
        use ReplicationMethod::{FullTable, Incremental, LogBased};
        let table = |pk: &[&str], unique: &[&str]| RawTable {
            name: "t".into(),
            is_view: false,
            row_count: None,
            columns: ["id", "code"]
                .iter()
                .map(|c| RawColumn {
                    name: c.to_string(),
                    column_type: "int".into(),
                    in_primary_key: false,
                    charset: String::new(),
                })
                .collect(),
            primary_key: pk.iter().map(|c| c.to_string()).collect(),
            unique_keys: unique
                .iter()
                .map(|c| UniqueIndex {
                    name: format!("u_{c}"),
                    columns: vec![c.to_string()],
                })
                .collect(),
        };
        let stream = |method: ReplicationMethod, keys: &[&str]| SelectedStream {
            tap_stream_id: "ks:t".into(),
            name: "t".into(),
            table: "t".into(),
            key_properties: keys.iter().map(|c| c.to_string()).collect(),
            properties: Vec::new(),
            method,
            is_view: false,
            row_count: None,
        };
        // (primary key, UNIQUE NOT NULL keys, catalog method, catalog key, method)
        type Keys = &'static [&'static str];
        let cases: &[(Keys, Keys, ReplicationMethod, Keys, ReplicationMethod)] = &[
            (&["id"], &[], Incremental, &["id"], Incremental),
            (&["id"], &[], LogBased, &["id"], LogBased),
            (&["id"], &[], FullTable, &["id"], FullTable),
            // keyed by a unique key: followed like a primary key
            (&[], &["code"], Incremental, &["code"], Incremental),
            (&[], &["code"], FullTable, &["code"], FullTable),
            // ... unless the catalog declares no key (discovered before)
            (&[], &["code"], Incremental, &[], FullTable),
            (&[], &["code"], FullTable, &[], FullTable),
            // no key at all
            (&[], &[], Incremental, &[], FullTable),
            (&[], &[], LogBased, &["id"], FullTable),
        ];
        for (pk, unique, method, keys, want) in cases {
            let got = method_for(&stream(*method, keys), &table(pk, unique));
            assert_eq!(
                got, *want,
                "pk {pk:?}, unique {unique:?}, {method:?}, keys {keys:?}"
            );
        }
    }

    #[test]
    fn cells_follow_the_tablet_type_and_keyspace() {
        let tablets = vec![
            tablet("zone1", "ks", "PRIMARY"),
            tablet("zone2", "ks", "REPLICA"),
            tablet("zone1", "ks", "REPLICA"),
            tablet("zone3", "other", "RDONLY"),
            tablet("zone2", "ks", "REPLICA"),
        ];
        assert_eq!(
            cells_for(&settings(TabletType::Primary), &tablets),
            vec!["zone1"]
        );
        assert_eq!(
            cells_for(&settings(TabletType::Replica), &tablets),
            vec!["zone1", "zone2"]
        );
        // none of that type in this keyspace: empty, which sync reports as an error
        assert!(cells_for(&settings(TabletType::Rdonly), &tablets).is_empty());
    }
}
