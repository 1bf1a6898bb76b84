//! The real Vitess of the test process (vtcombo over its own MariaDB, see
//! `psdb_emulator::vitess`), and what a test needs around it: a config per
//! keyspace, SQL on a shard's backing database, and the tap run against it.
//!
//! One vtcombo serves the whole test binary (keyspace `vt` with shards
//! `-80`/`80-`, keyspace `vt1` unsharded). Tests share it, so each works on
//! tables of its own and selects only its own streams.

use std::path::{Path, PathBuf};

use psdb_emulator::vitess::Vitess;
use serde_json::Value;

use super::{run_sync, tap, Scratch, Singer};

/// The shared Vitess. A missing vtcombo fails the test with the command
/// that builds it: the suite never skips for lack of a peer.
pub fn vitess() -> &'static Vitess {
    Vitess::shared().unwrap_or_else(|e| panic!("the real Vitess did not start: {e}"))
}

/// A test's view of one keyspace of a Vitess.
pub struct Vt<'a> {
    pub vitess: &'a Vitess,
    pub keyspace: String,
    pub scratch: Scratch,
    pub config: PathBuf,
}

impl<'a> Vt<'a> {
    /// A keyspace of the shared Vitess.
    pub fn shared(keyspace: &str) -> Vt<'static> {
        Vt::on(vitess(), keyspace)
    }

    pub fn on(vitess: &'a Vitess, keyspace: &str) -> Vt<'a> {
        let scratch = Scratch::new();
        let config = scratch.write_json("config.json", &vitess.tap_config_for(keyspace));
        Vt {
            vitess,
            keyspace: keyspace.to_string(),
            scratch,
            config,
        }
    }

    pub fn config(&self) -> &str {
        self.config.to_str().expect("utf8 path")
    }

    /// The tap config with some keys changed, in its own file.
    pub fn config_with(&self, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut cfg = self.vitess.tap_config_for(&self.keyspace);
        edit(&mut cfg);
        self.scratch.write_json(name, &cfg)
    }

    /// The backing database of one shard.
    pub fn database(&self, shard: &str) -> String {
        Vitess::backing_database(&self.keyspace, shard)
    }

    /// Runs SQL on one shard's backing database, as an application would.
    pub async fn sql(&self, shard: &str, sql: &str) {
        self.vitess
            .mariadb()
            .execute(&self.database(shard), sql)
            .await
            .unwrap_or_else(|e| panic!("SQL on {}/{shard}: {e}", self.keyspace));
    }

    /// Waits until vttablet's schema engine knows tables created straight
    /// in MariaDB: it reloads every second (`--queryserver-config-schema-
    /// reload-time 1s`), and a VStream of a table it does not know yet
    /// streams nothing. A fixed wait, not a condition: nothing the test
    /// bed reaches (vtgate's MySQL front, which reads MariaDB's own
    /// information_schema, or a VStream, which would copy the table) shows
    /// what the schema engine knows without side effects.
    pub async fn schema_reloaded(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    }

    /// Discovers with --auto-select and writes a catalog selecting only
    /// `streams`.
    pub async fn catalog(&self, streams: &[&str]) -> PathBuf {
        let run = tap(
            &["discover", "--config", self.config(), "--auto-select"],
            &[],
        )
        .await;
        assert_eq!(run.code, 0, "discover failed: {}", run.stderr);
        let mut c: Value = serde_json::from_str(&run.stdout).expect("catalog json");
        let all = c["streams"].as_array_mut().expect("streams");
        all.retain(|s| streams.contains(&s["stream"].as_str().unwrap_or("")));
        assert_eq!(all.len(), streams.len(), "streams {streams:?} discovered");
        self.scratch.write_json("catalog.json", &c)
    }

    pub async fn sync(&self, catalog: &Path, state: Option<&Value>) -> Singer {
        self.sync_using(&self.config, catalog, state).await
    }

    pub async fn sync_using(&self, config: &Path, catalog: &Path, state: Option<&Value>) -> Singer {
        run_sync(&self.scratch, config, catalog, state).await
    }
}
