//! PlanetScale's airbyte-source v2.12.0 (a VStream client), unmodified, as a
//! test peer: one scenario run against the emulator's VStream and against
//! the real vtgate (vtcombo) behind the harness's PlanetScale edge
//! (`psdb_emulator::vitess::edge`). See tests/support/peers.rs for how the
//! peer is built and reached: a `<name>.connect.psdb.cloud` host (the only
//! kind airbyte-source accepts) named in a private /etc/hosts, MySQL on
//! `IP:3306`, gRPC on `IP:443`, TLS verified against the test CA, Basic auth.
//!
//! The scenario, on a 2-shard keyspace and one table of ints, varchar,
//! decimal, datetime(6) and nullable columns:
//! 1. `check` succeeds; `discover` describes the table as MariaDB does
//!    (columns, nullability, types as airbyte-source maps them, primary key).
//! 2. `read` with no state copies every row once; each cell equals MariaDB's.
//!    Its last STATE has a position and no copy progress for both shards.
//! 3. Inserts, updates and deletes on the backing databases, then `read` from
//!    airbyte-source's own STATE: exactly the inserted and updated rows
//!    arrive, once each, as MariaDB now has them. Deletes arrive as nothing
//!    at all: airbyte-source v2 writes a record only for a row change with an
//!    after image (`change.After != nil`), so a deleted row stays at the
//!    destination. No unchanged row is copied again.
//! 4. `read` again with nothing changed: no record.
//! 5. One more update, `read` with `use_replica` (MySQL `db@replica`, a
//!    REPLICA tablet picked in the cells alias `planetscale_operator_default`):
//!    exactly that row arrives.
//!
//! Both configs name the shards (`"shards": "-80,80-"`), which
//! airbyte-source checks against `SHOW VITESS_SHARDS`: without it, on the
//! shared Vitess, its `show vitess_shards like "%vt%"` also matches keyspace
//! `vt1`, and it streams a shard `vt1/-` of keyspace `vt`, which vtgate
//! refuses (FAILED_PRECONDITION, logged as an ERROR, exit 0 all the same).
//!
//! How cells are compared: MariaDB's text of each column, NULL as null
//! (`CAST(… AS CHAR)` for numbers, `DATE_FORMAT(made, '%Y-%m-%dT%H:%i:%s.%f')`
//! for the DATETIME(6), which is airbyte-source's own ISO form), against the
//! record's JSON value: a string's text, a number's literal as written (read
//! as raw JSON, never through a float, so a BIGINT past 2^53 or a DECIMAL's
//! trailing zero must be exact), `null` as null.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use prost::Message;
use psdb_emulator::mariadb::MariaDb;
use psdb_emulator::vitess::edge::Edge;
use psdb_emulator::wire::psdbconnect::v1alpha1::TableCursor;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::support::peers::{
    loopback, messages, peer, peer_config, peer_emulator, peer_ip, PeerRun,
};
use crate::support::vitess::Vt;
use crate::support::{mariadb, Emu, Run, Scratch};

const TABLE: &str = "airbyte_items";
const SHARDS: [&str; 2] = ["-80", "80-"];

const CREATE: &str = "CREATE TABLE airbyte_items (\
     id INT NOT NULL PRIMARY KEY, qty BIGINT NOT NULL, tiny TINYINT UNSIGNED NOT NULL, \
     name VARCHAR(40) NOT NULL, price DECIMAL(12,2) NULL, made DATETIME(6) NULL, \
     note VARCHAR(20) NULL) DEFAULT CHARSET=utf8mb4;";

/// The first rows of each shard (`-80` gets ids below 100, `80-` the rest).
fn initial_rows(shard: &str) -> &'static str {
    match shard {
        "-80" => {
            "INSERT INTO airbyte_items VALUES \
             (1, 9007199254740993, 255, 'plain', 12.50, '2024-01-02 03:04:05', 'first'), \
             (2, -9223372036854775808, 0, 'né 🙂 \"quoted\" \\\\ back', -0.25, '2020-02-29 23:59:59.123456', NULL), \
             (3, 0, 7, '', 0.00, NULL, 'to delete'), \
             (4, 42, 1, 'four', NULL, '1999-12-31 00:00:00', '');"
        }
        _ => {
            "INSERT INTO airbyte_items VALUES \
             (101, 1, 2, 'hundred-one', 9999999999.99, '2038-01-19 03:14:08', 'x'), \
             (102, -1, 3, 'hundred-two', -9999999999.99, '1970-01-01 00:00:01.5', NULL), \
             (103, 5, 4, 'to delete', 1.00, '2000-01-01 00:00:00', 'y');"
        }
    }
}

/// Step 3's changes: per shard an insert, an update and a delete.
fn changes(shard: &str) -> &'static str {
    match shard {
        "-80" => {
            "INSERT INTO airbyte_items VALUES (5, 123, 9, 'five', 5.05, '2025-05-05 05:05:05.050505', NULL); \
             UPDATE airbyte_items SET name = 'two, updated', price = 2.20, note = 'now set', made = NULL WHERE id = 2; \
             DELETE FROM airbyte_items WHERE id = 3;"
        }
        _ => {
            "UPDATE airbyte_items SET qty = qty + 1000, note = NULL, price = .5 WHERE id = 101; \
             DELETE FROM airbyte_items WHERE id = 103; \
             INSERT INTO airbyte_items VALUES (104, 7, 8, 'hundred-four', NULL, NULL, NULL);"
        }
    }
}

/// What airbyte-source's `discover` must say of each column, by name:
/// JSON type, `format`, `airbyte_type` (its mapping of MySQL column types;
/// nullability comes from MariaDB).
fn expected_type(column: &str) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    match column {
        "id" | "qty" | "tiny" => ("number", None, Some("integer")),
        "price" => ("number", None, None),
        "made" => (
            "string",
            Some("date-time"),
            Some("timestamp_without_timezone"),
        ),
        "name" | "note" => ("string", None, None),
        other => panic!("column {other} has no expected type"),
    }
}

/// A server airbyte-source reads from: the emulator, or the real vtgate
/// behind the edge.
enum Server {
    Emulator(Box<Emu>),
    Vitess { vt: Vt<'static>, _edge: Edge },
}

struct Target {
    server: Server,
    /// `<name>.connect.psdb.cloud`, resolving to `ip` for the peer alone.
    host: String,
    ip: IpAddr,
    ca: PathBuf,
    keyspace: String,
    /// airbyte-source's config.
    config: Value,
    scratch: Scratch,
}

impl Target {
    /// The emulator (TLS, `IP:3306` and `IP:443`) with the table loaded.
    async fn emulator() -> Target {
        let fixtures: Vec<(&str, String)> = SHARDS
            .iter()
            .map(|s| (*s, format!("{CREATE}\n{}", initial_rows(s))))
            .collect();
        let emu = peer_emulator("abshop", &SHARDS, &fixtures).await;
        let host = "aws-emulator.connect.psdb.cloud".to_string();
        let mut config = peer_config(&emu, &host);
        config["shards"] = json!(SHARDS.join(","));
        Target {
            ip: peer_ip(&emu),
            ca: emu.emu.ca_file().expect("TLS is on").to_path_buf(),
            keyspace: emu.emu.keyspace().to_string(),
            host,
            config,
            scratch: Scratch::new(),
            server: Server::Emulator(Box::new(emu)),
        }
    }

    /// The shared real Vitess (keyspace `vt`, shards `-80`/`80-`) with the
    /// table loaded, behind an edge of this test on a loopback address.
    async fn vitess() -> Target {
        let vt = Vt::shared("vt");
        for shard in SHARDS {
            vt.sql(shard, &format!("{CREATE}\n{}", initial_rows(shard)))
                .await;
        }
        vt.schema_reloaded().await;
        let ip = IpAddr::V4(loopback());
        let edge = vt
            .vitess
            .edge(ip)
            .await
            .unwrap_or_else(|e| panic!("starting the edge on {ip}: {e}"));
        let host = "aws-vtgate.connect.psdb.cloud".to_string();
        let (username, password) = vt.vitess.login();
        let config = json!({
            "host": host,
            "database": vt.keyspace,
            "username": username,
            "password": password,
            "shards": SHARDS.join(","),
        });
        Target {
            ip,
            ca: vt
                .vitess
                .ca_file()
                .expect("the shared Vitess has TLS")
                .to_path_buf(),
            keyspace: vt.keyspace.clone(),
            host,
            config,
            scratch: Scratch::new(),
            server: Server::Vitess { vt, _edge: edge },
        }
    }

    fn mariadb(&self) -> &MariaDb {
        match &self.server {
            Server::Emulator(_) => mariadb(),
            Server::Vitess { vt, .. } => vt.vitess.mariadb(),
        }
    }

    fn database(&self, shard: &str) -> String {
        match &self.server {
            Server::Emulator(emu) => emu.emu.shard_database(shard).to_string(),
            Server::Vitess { vt, .. } => vt.database(shard),
        }
    }

    /// SQL on one shard's backing database, as an application would write.
    async fn sql(&self, shard: &str, sql: &str) {
        match &self.server {
            Server::Emulator(emu) => emu.sql(shard, sql).await,
            Server::Vitess { vt, .. } => vt.sql(shard, sql).await,
        }
    }

    /// Runs airbyte-source with `args` and a config changed by `edit`.
    async fn airbyte(&self, args: &[&str], edit: impl FnOnce(&mut Value)) -> Run {
        let mut config = self.config.clone();
        edit(&mut config);
        let config = self.scratch.write_json("airbyte-config.json", &config);
        let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        argv.push("--config".into());
        argv.push(config.display().to_string());
        PeerRun::new(peer("airbyte-source"), &self.scratch)
            .args(&argv)
            .ca(&self.ca)
            .hosts(&self.host, self.ip)
            .run()
            .await
    }

    /// `read` from `state` (none: a first sync), with the config edited.
    async fn read(
        &self,
        catalog: &Path,
        state: Option<&Value>,
        edit: impl FnOnce(&mut Value),
    ) -> Read {
        let catalog = catalog.display().to_string();
        let mut args = vec!["read", "--catalog", catalog.as_str()];
        let state_file = state.map(|s| self.scratch.write_json("airbyte-state.json", s));
        let state_arg = state_file.as_ref().map(|p| p.display().to_string());
        if let Some(s) = &state_arg {
            args.push("--state");
            args.push(s);
        }
        Read::parse(self.airbyte(&args, edit).await)
    }

    /// MariaDB's rows of the table over every shard, in the comparison's
    /// text forms (see the module doc), by id.
    async fn rows(&self) -> BTreeMap<i64, Cells> {
        let mut out = BTreeMap::new();
        for shard in SHARDS {
            let db = self.database(shard);
            let mut conn = self.mariadb().connect(Some(&db)).await.expect("connect");
            let rows: Vec<mysql_async::Row> = conn
                .query(
                    "SELECT id, CAST(id AS CHAR), CAST(qty AS CHAR), CAST(tiny AS CHAR), name, \
                     CAST(price AS CHAR), DATE_FORMAT(made, '%Y-%m-%dT%H:%i:%s.%f'), note \
                     FROM airbyte_items",
                )
                .await
                .expect("select airbyte_items");
            let _ = conn.disconnect().await;
            for row in rows {
                let id: i64 = row.get(0).expect("id");
                let cells = COLUMNS
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let v: Option<String> = row.get(i + 1).expect("cell");
                        (c.to_string(), v)
                    })
                    .collect();
                assert!(out.insert(id, cells).is_none(), "id {id} on two shards");
            }
        }
        out
    }
}

/// The columns in the order `Target::rows` selects them.
const COLUMNS: [&str; 7] = ["id", "qty", "tiny", "name", "price", "made", "note"];

/// A row as column → text (None: NULL).
type Cells = BTreeMap<String, Option<String>>;

/// One `read`'s output.
struct Read {
    run: Run,
    messages: Vec<Value>,
    /// The table's records in order, each with its namespace and cells.
    records: Vec<(String, Cells)>,
}

impl Read {
    fn parse(run: Run) -> Read {
        let messages = messages(&run.stdout);
        let mut records = Vec::new();
        for line in run.stdout.lines().filter(|l| l.contains("\"RECORD\"")) {
            let top: BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(line).expect("a JSON line");
            if top.get("type").map(|t| t.get()) != Some("\"RECORD\"") {
                continue;
            }
            let record: BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(top["record"].get()).expect("record object");
            let stream: String = serde_json::from_str(record["stream"].get()).expect("stream");
            if stream != TABLE {
                continue;
            }
            let namespace: String =
                serde_json::from_str(record["namespace"].get()).expect("namespace");
            let data: BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(record["data"].get()).expect("data object");
            let cells = data
                .iter()
                .map(|(k, v)| (k.clone(), cell_text(v)))
                .collect();
            records.push((namespace, cells));
        }
        Read {
            run,
            messages,
            records,
        }
    }

    /// airbyte-source's last STATE (`state.data`), to resume from.
    fn last_state(&self) -> Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m["type"] == "STATE")
            .map(|m| m["state"]["data"].clone())
            .unwrap_or_else(|| panic!("no STATE message:\n{}", self.diagnostics()))
    }

    /// The records by id; an id sent twice fails.
    fn by_id(&self, keyspace: &str) -> BTreeMap<i64, Cells> {
        let mut out = BTreeMap::new();
        for (namespace, cells) in &self.records {
            assert_eq!(namespace, keyspace, "a record's namespace");
            let id: i64 = cells["id"]
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("a record without an integer id: {cells:?}"));
            assert!(
                out.insert(id, cells.clone()).is_none(),
                "id {id} was sent twice in one read:\n{}",
                self.diagnostics()
            );
        }
        out
    }

    /// ERROR logs and stderr, for failure messages.
    fn diagnostics(&self) -> String {
        let errors: Vec<String> = self
            .messages
            .iter()
            .filter(|m| m["type"] == "LOG" && m["log"]["level"] == "ERROR")
            .map(|m| m["log"]["message"].to_string())
            .collect();
        format!(
            "exit {}; ERROR logs: {errors:#?}\nstderr: {}",
            self.run.code, self.run.stderr
        )
    }
}

/// A record value as text: a string's content, a number's literal as
/// written, `null` as None.
fn cell_text(v: &RawValue) -> Option<String> {
    let raw = v.get();
    if raw == "null" {
        None
    } else if raw.starts_with('"') {
        Some(serde_json::from_str::<String>(raw).expect("a JSON string"))
    } else {
        Some(raw.to_string())
    }
}

/// Every expected row arrived, cell by cell as MariaDB has it, and nothing
/// else.
fn assert_rows(got: &BTreeMap<i64, Cells>, want: &BTreeMap<i64, Cells>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the ids of the records"
    );
    for (id, row) in want {
        assert_eq!(
            got[id].keys().collect::<Vec<_>>(),
            row.keys().collect::<Vec<_>>(),
            "{what}: row {id}'s columns"
        );
        for (col, w) in row {
            assert_eq!(
                &got[id][col], w,
                "{what}: row {id} column {col}: airbyte-source sent {:?}, MariaDB has {w:?}",
                got[id][col]
            );
        }
    }
}

/// The state's cursor of each shard for the table, decoded.
fn cursors(state: &Value, keyspace: &str) -> BTreeMap<String, TableCursor> {
    use base64::Engine;
    let key = format!("{keyspace}:{TABLE}");
    let shards = state["streams"][&key]["shards"]
        .as_object()
        .unwrap_or_else(|| panic!("no shards of {key} in the state {state}"));
    shards
        .iter()
        .map(|(shard, c)| {
            let text = c["cursor"].as_str().expect("a cursor string");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("a base64 cursor");
            let cursor = TableCursor::decode(bytes.as_slice()).expect("a TableCursor");
            (shard.clone(), cursor)
        })
        .collect()
}

/// Both shards' cursors have finished their copy: a position, no lastpk.
fn assert_copied(state: &Value, keyspace: &str, when: &str) {
    let cursors = cursors(state, keyspace);
    assert_eq!(
        cursors.keys().collect::<Vec<_>>(),
        SHARDS.iter().collect::<Vec<_>>(),
        "{when}: the state's shards"
    );
    for (shard, c) in &cursors {
        assert_eq!(&c.shard, shard, "{when}: cursor shard");
        assert_eq!(c.keyspace, keyspace, "{when}: cursor keyspace of {shard}");
        assert!(
            !c.position.is_empty(),
            "{when}: {shard} has no position: {c:?}"
        );
        assert!(
            c.last_known_pk.is_none(),
            "{when}: {shard} is still copying: {c:?}"
        );
    }
}

async fn scenario(t: Target) {
    let started = Instant::now();
    let step = |what: &str, since: &mut Instant| {
        eprintln!("airbyte/{}: {what} in {:.2?}", t.host, since.elapsed());
        *since = Instant::now();
    };
    let mut since = Instant::now();

    // 1. check and discover
    let run = t.airbyte(&["check"], |_| {}).await;
    let msgs = messages(&run.stdout);
    let status = msgs
        .iter()
        .find(|m| m["type"] == "CONNECTION_STATUS")
        .unwrap_or_else(|| panic!("check printed no status: {}\n{}", run.stdout, run.stderr));
    assert_eq!(
        status["connectionStatus"]["status"], "SUCCEEDED",
        "check: {status}"
    );
    step("check", &mut since);

    let run = t.airbyte(&["discover"], |_| {}).await;
    let msgs = messages(&run.stdout);
    let catalog = msgs
        .iter()
        .find(|m| m["type"] == "CATALOG")
        .unwrap_or_else(|| {
            panic!(
                "discover printed no catalog: {}\n{}",
                run.stdout, run.stderr
            )
        });
    let stream = catalog["catalog"]["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["name"] == TABLE)
        .unwrap_or_else(|| panic!("no stream {TABLE} in {catalog}"))
        .clone();
    let mut conn = t
        .mariadb()
        .connect(Some(&t.database("-80")))
        .await
        .expect("connect");
    let columns: Vec<(String, String, String)> = conn
        .exec(
            "SELECT column_name, is_nullable, column_key FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
            (TABLE,),
        )
        .await
        .expect("columns");
    let _ = conn.disconnect().await;
    let mut properties = serde_json::Map::new();
    for (name, nullable, _) in &columns {
        let (ty, format, airbyte_type) = expected_type(name);
        let mut p =
            json!({"type": if nullable == "YES" { json!(["null", ty]) } else { json!([ty]) }});
        if let Some(f) = format {
            p["format"] = json!(f);
        }
        if let Some(a) = airbyte_type {
            p["airbyte_type"] = json!(a);
        }
        properties.insert(name.clone(), p);
    }
    let keys: Vec<Value> = columns
        .iter()
        .filter(|(_, _, key)| key == "PRI")
        .map(|(name, _, _)| json!([name]))
        .collect();
    assert_eq!(keys, vec![json!(["id"])], "MariaDB's primary key");
    assert_eq!(
        stream["json_schema"],
        json!({"type": "object", "properties": properties}),
        "discover: the columns and their types"
    );
    assert_eq!(
        stream["namespace"],
        json!(t.keyspace),
        "discover: namespace"
    );
    assert_eq!(
        stream["source_defined_primary_key"],
        json!(keys),
        "discover: key"
    );
    assert_eq!(
        stream["default_cursor_field"],
        json!(["id"]),
        "discover: cursor"
    );
    assert_eq!(
        stream["supported_sync_modes"],
        json!(["full_refresh", "incremental"]),
        "discover: sync modes"
    );
    let catalog = t.scratch.write_json(
        "airbyte-catalog.json",
        &json!({"streams": [{"stream": stream, "sync_mode": "incremental"}]}),
    );
    step("discover", &mut since);

    // 2. the full read: every row once, as MariaDB has it
    let full = t.read(&catalog, None, |_| {}).await;
    let want = t.rows().await;
    assert_eq!(want.len(), 7, "the fixture's rows");
    assert_rows(&full.by_id(&t.keyspace), &want, "full read");
    let state = full.last_state();
    assert_copied(&state, &t.keyspace, "after the full read");
    step("full read", &mut since);

    // 3. inserts, updates and deletes, then a read from airbyte's own state
    for shard in SHARDS {
        t.sql(shard, changes(shard)).await;
    }
    let incremental = t.read(&catalog, Some(&state), |_| {}).await;
    let now = t.rows().await;
    let changed: BTreeMap<i64, Cells> = [2, 5, 101, 104]
        .iter()
        .map(|id| (*id, now[id].clone()))
        .collect();
    // Deletes (3, 103) send nothing; unchanged rows (1, 4, 102) are not
    // sent again.
    assert_rows(
        &incremental.by_id(&t.keyspace),
        &changed,
        "incremental read",
    );
    let positions = |s: &Value| -> Vec<String> {
        cursors(s, &t.keyspace)
            .into_values()
            .map(|c| c.position)
            .collect()
    };
    let state2 = incremental.last_state();
    assert_copied(&state2, &t.keyspace, "after the incremental read");
    assert_ne!(
        positions(&state2),
        positions(&state),
        "the incremental read moved no position"
    );
    // What a destination holds after both reads: MariaDB's rows, and the
    // deleted ones, which airbyte-source v2 never reports.
    let mut replayed = full.by_id(&t.keyspace);
    replayed.extend(incremental.by_id(&t.keyspace));
    let mut expected = now.clone();
    for id in [3, 103] {
        assert!(!now.contains_key(&id), "row {id} was deleted");
        expected.insert(id, want[&id].clone());
    }
    assert_rows(&replayed, &expected, "full then incremental, replayed");
    step("changes and incremental read", &mut since);

    // 4. nothing changed: nothing read
    let idle = t.read(&catalog, Some(&state2), |_| {}).await;
    assert!(
        idle.records.is_empty(),
        "an idle read sent {} records: {:?}",
        idle.records.len(),
        idle.records
    );
    let state3 = idle.last_state();
    assert_copied(&state3, &t.keyspace, "after the idle read");
    step("idle read", &mut since);

    // 5. one more change, read from a REPLICA (db@replica; the cells alias)
    t.sql(
        "-80",
        "UPDATE airbyte_items SET tiny = 200, note = 'from a replica' WHERE id = 1",
    )
    .await;
    let replica = t
        .read(&catalog, Some(&state3), |c| c["use_replica"] = json!(true))
        .await;
    let now = t.rows().await;
    assert_rows(
        &replica.by_id(&t.keyspace),
        &[(1, now[&1].clone())].into_iter().collect(),
        "read from a replica",
    );
    assert!(
        replica.messages.iter().any(|m| m["log"]["message"]
            .as_str()
            .is_some_and(|l| l.contains(":replica:"))),
        "the read did not use a replica:\n{}",
        replica.run.stdout
    );
    step("replica read", &mut since);

    if let Server::Vitess { .. } = &t.server {
        // The edge's Basic auth is what lets airbyte-source in: with a wrong
        // password vtgate's static auth refuses the VStream. (vtcombo's
        // MySQL front takes any login, so `check` still passes, and
        // airbyte-source then ends with exit 0 and its state unchanged.)
        let refused = t
            .read(&catalog, Some(&state3), |c| c["password"] = json!("wrong"))
            .await;
        assert!(refused.records.is_empty(), "records with a wrong password");
        assert!(
            refused.run.stdout.contains("PermissionDenied")
                && refused.run.stdout.contains("invalid credentials"),
            "no refusal with a wrong password:\n{}",
            refused.run.stdout
        );
        assert_eq!(
            positions(&refused.last_state()),
            positions(&state3),
            "a refused read moved a position"
        );
        step("wrong password refused", &mut since);
    }
    eprintln!(
        "airbyte/{}: the whole scenario in {:.2?}",
        t.host,
        started.elapsed()
    );
}

#[tokio::test]
async fn airbyte_source_discovers_and_reads_the_emulator() {
    scenario(Target::emulator().await).await;
}

#[tokio::test]
async fn airbyte_source_discovers_and_reads_the_real_vtgate() {
    scenario(Target::vitess().await).await;
}
