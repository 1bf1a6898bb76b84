//! Discovery: information_schema → Singer catalog.
//!
//! The MySQL side is three batched queries (`mysql::describe_schema`); the
//! catalog is then built by a pure function, so the output depends only on
//! what the server said. Tables are ordered by name in byte order and columns
//! by ordinal position, which makes the catalog byte-identical between runs.
//!
//! `discover` writes the catalog stream by stream ([`Discovered`]): each
//! stream is built from its table as it is serialized and dropped after,
//! so the process holds the schema's tables but never the whole catalog
//! (built whole, the catalog of 10,000 tables × 20 columns was most of
//! discover's 360 MiB).

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::catalog::{CatalogStream, MetadataEntry};
use crate::config::Settings;
use crate::mysql::{self, MySqlError, RawTable};
use crate::row_key::KeySource;
use crate::types::{json_schema, Encodings, TypeOptions};

/// What the discover flags ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverOptions {
    pub auto_select: bool,
    /// Exact table names to leave out.
    pub excluded: Vec<String>,
    /// Mark every stream INCREMENTAL (the Go tap's default).
    pub incremental: bool,
    pub tinyint_as_boolean: bool,
}

/// The Singer stream id, `<keyspace>:<table>`, as the Go tap builds it.
pub fn stream_id(keyspace: &str, table: &str) -> String {
    format!("{keyspace}:{table}")
}

/// Vitess creates tables of its own: garbage-collection tables (`_vt_…`,
/// or `_<8>_<4>_<4>_…` in the newer naming) and online-DDL shadow tables
/// (`_…_vrepl`). None of them is user data.
pub fn is_internal_table(name: &str) -> bool {
    if name.starts_with("_vt_") || (name.starts_with('_') && name.ends_with("_vrepl")) {
        return true;
    }
    let Some(rest) = name.strip_prefix('_') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    parts.len() >= 4
        && [8, 4, 4]
            .iter()
            .zip(&parts)
            .all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Runs discovery against the server. Returns what it found, to be written
/// as the catalog, and the excluded names that matched no table, for a
/// warning.
pub async fn discover(
    settings: &Settings,
    opts: &DiscoverOptions,
) -> Result<(Discovered, Vec<String>), MySqlError> {
    let mut conn = mysql::connect(settings).await?;
    let tables = mysql::describe_schema(&mut conn, &settings.database).await;
    mysql::close(conn).await;
    Ok(Discovered::new(
        &settings.database,
        tables?,
        opts,
        settings.encodings,
    ))
}

/// The tables of a catalog, each made a stream only when it is written
/// (see the module docs). Serializes exactly as a `catalog::Catalog` of the
/// same streams would.
pub struct Discovered {
    keyspace: String,
    /// The tables that become streams, in catalog order.
    tables: Vec<RawTable>,
    opts: DiscoverOptions,
    type_opts: TypeOptions,
}

impl Discovered {
    /// Leaves out Vitess's internal tables and the excluded ones; also
    /// returns the excluded names that matched no table.
    pub fn new(
        keyspace: &str,
        mut tables: Vec<RawTable>,
        opts: &DiscoverOptions,
        encodings: Encodings,
    ) -> (Discovered, Vec<String>) {
        let unknown_excluded: Vec<String> = opts
            .excluded
            .iter()
            .filter(|x| !tables.iter().any(|t| &t.name == *x))
            .cloned()
            .collect();
        tables.retain(|t| !is_internal_table(&t.name) && !opts.excluded.contains(&t.name));
        let found = Discovered {
            keyspace: keyspace.to_string(),
            tables,
            opts: opts.clone(),
            type_opts: TypeOptions {
                tinyint_as_boolean: opts.tinyint_as_boolean,
                encodings,
            },
        };
        (found, unknown_excluded)
    }

    pub fn stream_count(&self) -> usize {
        self.tables.len()
    }

    /// The catalog's streams, each built as it is asked for.
    pub fn streams(&self) -> impl Iterator<Item = CatalogStream> + '_ {
        self.tables
            .iter()
            .map(|t| build_stream(&self.keyspace, t, &self.opts, self.type_opts))
    }
}

impl Serialize for Discovered {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Streams<'a>(&'a Discovered);
        impl Serialize for Streams<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.stream_count()))?;
                for stream in self.0.streams() {
                    seq.serialize_element(&stream)?;
                }
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("streams", &Streams(self))?;
        map.end()
    }
}

fn build_stream(
    keyspace: &str,
    table: &RawTable,
    opts: &DiscoverOptions,
    type_opts: TypeOptions,
) -> CatalogStream {
    let mut properties = Map::new();
    for col in &table.columns {
        properties.insert(col.name.clone(), json_schema(&col.column_type, type_opts));
    }
    let schema = json!({
        "type": ["null", "object"],
        "additionalProperties": false,
        "properties": properties,
    });

    // The row key: the primary key, else the UNIQUE NOT NULL index Vitess
    // streams the table by (its "primary key equivalent", named in the
    // metadata so the choice is visible), else none.
    let key = table.key();
    let mut top = Map::new();
    top.insert("table-key-properties".into(), json!(key.columns));
    top.insert("valid-replication-keys".into(), json!(key.columns));
    if let KeySource::Equivalent { index } = key.source {
        top.insert("primary-key-equivalent".into(), json!(index));
    }
    // A table without any key has no key a target could apply its changes
    // by: it is marked for full copies (see `sync::method_for`).
    let keyless = key.is_keyless() && !table.is_view;
    if keyless {
        top.insert("forced-replication-method".into(), json!("FULL_TABLE"));
    }
    if opts.incremental && !keyless {
        top.insert("replication-method".into(), json!("INCREMENTAL"));
    }
    top.insert("database-name".into(), json!(keyspace));
    top.insert("is-view".into(), json!(table.is_view));
    if let Some(n) = table.row_count {
        top.insert("row-count".into(), json!(n));
    }
    top.insert("selected-by-default".into(), json!(false));
    if opts.auto_select {
        top.insert("selected".into(), json!(true));
    }
    let mut metadata = vec![MetadataEntry::new(Vec::new(), top)];
    for col in &table.columns {
        let mut m = Map::new();
        let inclusion = if key.columns.contains(&col.name) {
            "automatic"
        } else {
            "available"
        };
        m.insert("inclusion".into(), json!(inclusion));
        m.insert("sql-datatype".into(), json!(col.column_type));
        if opts.auto_select {
            m.insert("selected".into(), json!(true));
        }
        metadata.push(MetadataEntry::new(
            vec!["properties".to_string(), col.name.clone()],
            m,
        ));
    }

    CatalogStream {
        tap_stream_id: stream_id(keyspace, &table.name),
        stream: table.name.clone(),
        table_name: Some(table.name.clone()),
        schema,
        metadata,
        key_properties: Some(key.columns.to_vec()),
        extra: Map::<String, Value>::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::mysql::RawColumn;

    #[test]
    fn internal_tables() {
        let cases = [
            ("users", false),
            ("_users", false),
            (
                "_vt_HOLD_6ace8bcef73211ea87e9f875a4d24e90_20200915120410",
                true,
            ),
            (
                "_vt_hld_6ace8bcef73211ea87e9f875a4d24e90_20200915120410_",
                true,
            ),
            (
                "_4e5dcf80_354b_11eb_82cd_f875a4d24e90_20201203114014_vrepl",
                true,
            ),
            (
                "_750a3e1f_e6f9_4b6e_9e1b_2b2b2b2b2b2b_20240101000000_",
                true,
            ),
            ("_orders_20240101_vrepl", true),
            ("_ab_cd_ef_gh", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_internal_table(name), want, "{name}");
        }
    }

    /// The whole catalog of `tables`, as discovery once built it: what
    /// [`Discovered`] must serialize as.
    fn build_catalog(
        keyspace: &str,
        tables: Vec<RawTable>,
        opts: &DiscoverOptions,
        encodings: Encodings,
    ) -> (Catalog, Vec<String>) {
        let (found, unknown_excluded) = Discovered::new(keyspace, tables, opts, encodings);
        let catalog = Catalog {
            streams: found.streams().collect(),
            extra: Map::new(),
        };
        (catalog, unknown_excluded)
    }

    fn table(name: &str) -> RawTable {
        RawTable {
            name: name.into(),
            is_view: false,
            row_count: Some(3),
            columns: vec![
                RawColumn {
                    name: "id".into(),
                    column_type: "bigint unsigned".into(),
                    in_primary_key: true,
                    charset: String::new(),
                },
                RawColumn {
                    name: "flag".into(),
                    column_type: "tinyint(1)".into(),
                    in_primary_key: false,
                    charset: String::new(),
                },
            ],
            primary_key: vec!["id".into()],
            unique_keys: Vec::new(),
        }
    }

    /// What `discover` writes stream by stream is byte for byte the whole
    /// catalog, pretty or compact, with or without streams.
    #[test]
    fn discovered_writes_what_the_built_catalog_writes() {
        let opts = DiscoverOptions {
            excluded: vec!["skip".into()],
            ..DiscoverOptions::default()
        };
        let sets = [
            vec![],
            vec![table("a")],
            vec![table("a"), table("_vt_gc"), table("skip"), table("b")],
        ];
        for tables in sets {
            let (found, _) = Discovered::new("ks", tables.clone(), &opts, Encodings::default());
            let (catalog, _) = build_catalog("ks", tables, &opts, Encodings::default());
            assert_eq!(found.stream_count(), catalog.streams.len());
            assert_eq!(
                serde_json::to_string_pretty(&found).expect("json"),
                serde_json::to_string_pretty(&catalog).expect("json")
            );
            assert_eq!(
                serde_json::to_string(&found).expect("json"),
                serde_json::to_string(&catalog).expect("json")
            );
        }
    }

    #[test]
    fn catalog_shape() {
        let opts = DiscoverOptions {
            auto_select: true,
            excluded: vec!["skip".into(), "missing".into()],
            incremental: true,
            tinyint_as_boolean: true,
        };
        let (c, unknown) = build_catalog(
            "ks",
            vec![
                table("a"),
                table("skip"),
                table("_vt_drop_x"),
                table("skipped"),
            ],
            &opts,
            Encodings {
                decimal: crate::types::DecimalEncoding::Number,
                ..Encodings::default()
            },
        );
        assert_eq!(unknown, vec!["missing".to_string()]);
        let ids: Vec<&str> = c.streams.iter().map(|s| s.tap_stream_id.as_str()).collect();
        // exact-name exclusion: `skipped` stays although it contains `skip`
        assert_eq!(ids, vec!["ks:a", "ks:skipped"]);
        let s = serde_json::to_value(&c.streams[0]).expect("json");
        assert_eq!(
            s,
            json!({
                "tap_stream_id": "ks:a", "stream": "a", "table_name": "a",
                "schema": {"type": ["null", "object"], "additionalProperties": false, "properties": {
                    "id": {"type": ["null", "integer"], "minimum": 0, "maximum": 18446744073709551615u64},
                    "flag": {"type": ["null", "boolean"]}}},
                "metadata": [
                    {"breadcrumb": [], "metadata": {"table-key-properties": ["id"], "valid-replication-keys": ["id"],
                     "replication-method": "INCREMENTAL", "database-name": "ks", "is-view": false, "row-count": 3,
                     "selected-by-default": false, "selected": true}},
                    {"breadcrumb": ["properties", "id"], "metadata": {"inclusion": "automatic", "sql-datatype": "bigint unsigned", "selected": true}},
                    {"breadcrumb": ["properties", "flag"], "metadata": {"inclusion": "available", "sql-datatype": "tinyint(1)", "selected": true}}
                ],
                "key_properties": ["id"]
            })
        );
        // the discovered catalog reads back and selects every column
        let text = serde_json::to_string(&c).expect("json");
        let back = Catalog::from_text(&text, "k").expect("reads");
        let sel = back.selected().expect("resolves");
        assert_eq!(sel.len(), 2);
        assert_eq!(sel[0].properties.len(), 2);
    }

    #[test]
    fn the_key_is_the_primary_key_else_vitess_equivalent_else_none() {
        use crate::row_key::UniqueIndex;
        let ix = |name: &str, cols: &[&str]| UniqueIndex {
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
        };
        // (primary key, UNIQUE NOT NULL indexes, key, PKE hint, keyless)
        type Case = (
            Vec<&'static str>,
            Vec<UniqueIndex>,
            Vec<&'static str>,
            Option<&'static str>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                vec!["id"],
                vec![ix("u", &["flag"])],
                vec!["id"],
                None,
                false,
            ),
            (
                vec![],
                vec![ix("u_id", &["id"])],
                vec!["id"],
                Some("u_id"),
                false,
            ),
            // the cheaper index: tinyint(1) costs less than bigint
            (
                vec![],
                vec![ix("u_id", &["id"]), ix("u_flag", &["flag"])],
                vec!["flag"],
                Some("u_flag"),
                false,
            ),
            (
                vec![],
                vec![ix("u_both", &["flag", "id"])],
                vec!["flag", "id"],
                Some("u_both"),
                false,
            ),
            (vec![], vec![], vec![], None, true),
        ];
        let opts = DiscoverOptions {
            incremental: true,
            ..DiscoverOptions::default()
        };
        for (pk, unique, key, hint, keyless) in cases {
            let mut t = table("k");
            t.primary_key = pk.iter().map(|c| c.to_string()).collect();
            t.unique_keys = unique;
            let (c, _) = build_catalog("ks", vec![t], &opts, Encodings::default());
            let s = &c.streams[0];
            let md = s.stream_metadata().expect("stream metadata");
            let why = format!("{key:?}: {md:?}");
            assert_eq!(md["table-key-properties"], json!(key), "{why}");
            assert_eq!(md["valid-replication-keys"], json!(key), "{why}");
            assert_eq!(
                md.get("primary-key-equivalent"),
                hint.map(|h| json!(h)).as_ref(),
                "{why}"
            );
            assert_eq!(
                s.key_properties,
                Some(key.iter().map(|c| c.to_string()).collect())
            );
            if keyless {
                assert_eq!(
                    md["forced-replication-method"],
                    json!("FULL_TABLE"),
                    "{why}"
                );
                assert!(md.get("replication-method").is_none(), "{why}");
            } else {
                assert!(md.get("forced-replication-method").is_none(), "{why}");
                assert_eq!(md["replication-method"], json!("INCREMENTAL"), "{why}");
            }
            for col in ["id", "flag"] {
                let m = s
                    .metadata
                    .iter()
                    .find(|m| m.breadcrumb == Some(vec!["properties".to_string(), col.to_string()]))
                    .expect("column metadata");
                let want = if key.contains(&col) {
                    "automatic"
                } else {
                    "available"
                };
                assert_eq!(m.metadata["inclusion"], json!(want), "{why} {col}");
            }
        }
    }

    #[test]
    fn without_flags_nothing_is_selected_and_no_method() {
        let (c, _) = build_catalog(
            "ks",
            vec![table("a")],
            &DiscoverOptions::default(),
            Encodings::default(),
        );
        let md = c.streams[0].stream_metadata().expect("stream metadata");
        assert!(md.get("selected").is_none());
        assert!(md.get("replication-method").is_none());
        assert!(c.selected().expect("resolves").is_empty());
    }
}
