//! The Singer catalog: written by discovery, read back (from us, from the Go
//! tap, or rewritten by Meltano), and resolved into the streams to sync.
//!
//! Reading is lenient about shape and strict about meaning. Unknown keys on
//! the catalog, on streams and in metadata are kept, so a catalog survives a
//! round trip through us untouched. Selection follows the Singer rules with
//! the fallbacks real catalogs need: metadata first, then the legacy
//! stream-object keys Meltano also writes (`selected`, `replication_method`),
//! then `selected-by-default`. Anything that names a column or method we do
//! not know is an error that names the stream and the fix.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog file {path}: {source}; pass the file written by `discover` to --catalog")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("catalog file {path} is not a valid catalog ({source}); regenerate it with `tap-planetscale discover`")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("catalog file {path} has no streams; regenerate it with `tap-planetscale discover`")]
    NoStreams { path: String },
    #[error("catalog stream `{stream}` selects property `{property}`, which is not in its schema; remove that metadata entry or rediscover")]
    UnknownProperty { stream: String, property: String },
    #[error("catalog stream `{stream}` has replication method \"{method}\"; use FULL_TABLE, INCREMENTAL or LOG_BASED")]
    BadMethod { stream: String, method: String },
    #[error("catalog stream `{stream}` lists key property `{property}`, which is not in its schema; fix table-key-properties or rediscover")]
    UnknownKey { stream: String, property: String },
    #[error(
        "catalog stream number {index} has no tap_stream_id or stream name; regenerate the catalog"
    )]
    Unnamed { index: usize },
}

/// A whole catalog document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub streams: Vec<CatalogStream>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One stream of a catalog. Field order here is the output order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatalogStream {
    #[serde(default)]
    pub tap_stream_id: String,
    #[serde(default)]
    pub stream: String,
    /// The Go tap writes `table-name`; the Singer spec says `table_name`.
    #[serde(default, alias = "table-name", skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    #[serde(default)]
    pub schema: Value,
    #[serde(default)]
    pub metadata: Vec<MetadataEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_properties: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `{"breadcrumb": [...], "metadata": {...}}` entry. The Go tap puts the
/// breadcrumb inside `metadata` instead; both places are read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetadataEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breadcrumb: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MetadataEntry {
    pub fn new(breadcrumb: Vec<String>, metadata: Map<String, Value>) -> MetadataEntry {
        MetadataEntry {
            breadcrumb: Some(breadcrumb),
            metadata,
            extra: Map::new(),
        }
    }

    /// The breadcrumb, wherever it was written. `None` when there is none,
    /// which matches nothing.
    pub fn path(&self) -> Option<Vec<&str>> {
        if let Some(b) = &self.breadcrumb {
            return Some(b.iter().map(String::as_str).collect());
        }
        self.metadata
            .get("breadcrumb")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
    }

    /// The column name of a `["properties", name]` breadcrumb.
    pub fn property(&self) -> Option<String> {
        match self.path()?.as_slice() {
            ["properties", name] => Some((*name).to_string()),
            _ => None,
        }
    }

    pub fn is_stream_level(&self) -> bool {
        self.path().map(|p| p.is_empty()).unwrap_or(false)
    }
}

/// How a stream is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMethod {
    /// A fresh copy every run, bracketed by ACTIVATE_VERSION.
    FullTable,
    /// Change data capture with cursors in state (`INCREMENTAL` in the Go
    /// tap's catalogs, `LOG_BASED` in the Singer vocabulary).
    Incremental,
    LogBased,
}

impl ReplicationMethod {
    /// The method used when a catalog names none: FULL_TABLE, because a Go
    /// catalog without a method re-copied every table on every run.
    pub const DEFAULT: ReplicationMethod = ReplicationMethod::FullTable;

    pub fn parse(s: &str) -> Option<ReplicationMethod> {
        match s
            .trim()
            .to_ascii_uppercase()
            .replace([' ', '-'], "_")
            .as_str()
        {
            "FULL_TABLE" => Some(ReplicationMethod::FullTable),
            "INCREMENTAL" => Some(ReplicationMethod::Incremental),
            "LOG_BASED" => Some(ReplicationMethod::LogBased),
            _ => None,
        }
    }

    /// Whether the stream follows changes with cursors kept in state.
    pub fn is_cdc(self) -> bool {
        !matches!(self, ReplicationMethod::FullTable)
    }
}

impl fmt::Display for ReplicationMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicationMethod::FullTable => "FULL_TABLE",
            ReplicationMethod::Incremental => "INCREMENTAL",
            ReplicationMethod::LogBased => "LOG_BASED",
        })
    }
}

/// A selected column, in schema order.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedProperty {
    pub name: String,
    /// The catalog's JSON Schema for it: the contract for value conversion.
    pub schema: Value,
    pub sql_datatype: Option<String>,
}

/// A stream to sync, resolved from the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedStream {
    pub tap_stream_id: String,
    /// Stream name: what SCHEMA/RECORD carry and what state bookmarks key on
    /// (the Go tap keys bookmarks by stream name).
    pub name: String,
    pub table: String,
    pub key_properties: Vec<String>,
    pub properties: Vec<SelectedProperty>,
    pub method: ReplicationMethod,
    pub is_view: bool,
    pub row_count: Option<u64>,
}

impl Catalog {
    pub fn from_path(path: &Path) -> Result<Catalog, CatalogError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: display.clone(),
            source,
        })?;
        Catalog::from_text(&text, &display)
    }

    pub fn from_text(text: &str, path: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = serde_json::from_str(text).map_err(|source| CatalogError::Json {
            path: path.to_string(),
            source,
        })?;
        if catalog.streams.is_empty() {
            return Err(CatalogError::NoStreams {
                path: path.to_string(),
            });
        }
        Ok(catalog)
    }

    /// Resolves every selected stream, validating what it names.
    pub fn selected(&self) -> Result<Vec<SelectedStream>, CatalogError> {
        let mut out = Vec::new();
        for (index, stream) in self.streams.iter().enumerate() {
            if let Some(sel) = stream.resolve(index)? {
                out.push(sel);
            }
        }
        Ok(out)
    }
}

impl CatalogStream {
    /// The stream-level (`[]` breadcrumb) metadata, if any.
    pub fn stream_metadata(&self) -> Option<&Map<String, Value>> {
        self.metadata
            .iter()
            .find(|m| m.is_stream_level())
            .map(|m| &m.metadata)
    }

    fn property_metadata(&self, name: &str) -> Option<&Map<String, Value>> {
        self.metadata
            .iter()
            .find(|m| m.property().as_deref() == Some(name))
            .map(|m| &m.metadata)
    }

    fn display_id(&self) -> &str {
        if self.tap_stream_id.is_empty() {
            &self.stream
        } else {
            &self.tap_stream_id
        }
    }

    /// Whether the user selected this stream.
    pub fn is_selected(&self) -> bool {
        let md = self.stream_metadata();
        md.and_then(|m| m.get("selected"))
            .and_then(Value::as_bool)
            .or_else(|| self.extra.get("selected").and_then(Value::as_bool))
            .or_else(|| {
                md.and_then(|m| m.get("selected-by-default"))
                    .and_then(Value::as_bool)
            })
            .unwrap_or(false)
    }

    fn resolve(&self, index: usize) -> Result<Option<SelectedStream>, CatalogError> {
        if !self.is_selected() {
            return Ok(None);
        }
        let id = self.display_id().to_string();
        let name = if self.stream.is_empty() {
            // `keyspace:table` ids carry the table after the colon.
            id.rsplit(':').next().unwrap_or(&id).to_string()
        } else {
            self.stream.clone()
        };
        if name.is_empty() {
            return Err(CatalogError::Unnamed { index });
        }
        let md = self.stream_metadata();
        let schema_props = self
            .schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let key_properties = self.key_properties(&id, &schema_props)?;
        self.check_selected_properties(&id, &schema_props)?;
        Ok(Some(SelectedStream {
            table: self.table_name.clone().unwrap_or_else(|| name.clone()),
            method: self.method(&id)?,
            properties: self.selected_properties(&schema_props, &key_properties),
            key_properties,
            is_view: md
                .and_then(|m| m.get("is-view"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            row_count: md.and_then(|m| m.get("row-count")).and_then(Value::as_u64),
            tap_stream_id: id,
            name,
        }))
    }

    /// The replication method: metadata, the Go tap's top-level key, or the
    /// forced one, in that order.
    fn method(&self, id: &str) -> Result<ReplicationMethod, CatalogError> {
        let md = self.stream_metadata();
        let method_text = md
            .and_then(|m| m.get("replication-method"))
            .and_then(Value::as_str)
            .or_else(|| self.extra.get("replication_method").and_then(Value::as_str))
            .or_else(|| {
                md.and_then(|m| m.get("forced-replication-method"))
                    .and_then(Value::as_str)
            })
            .filter(|s| !s.trim().is_empty());
        match method_text {
            None => Ok(ReplicationMethod::DEFAULT),
            Some(text) => ReplicationMethod::parse(text).ok_or_else(|| CatalogError::BadMethod {
                stream: id.to_string(),
                method: text.to_string(),
            }),
        }
    }

    /// The key: table, then view key properties from metadata, else the
    /// stream's own `key_properties`; each must be in the schema.
    fn key_properties(
        &self,
        id: &str,
        schema_props: &Map<String, Value>,
    ) -> Result<Vec<String>, CatalogError> {
        let md = self.stream_metadata();
        let key_list = |v: Option<&Value>| -> Option<Vec<String>> {
            v.and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
        };
        let mut key_properties = key_list(md.and_then(|m| m.get("table-key-properties")))
            .filter(|k| !k.is_empty())
            .or_else(|| key_list(md.and_then(|m| m.get("view-key-properties"))))
            .or_else(|| self.key_properties.clone())
            .unwrap_or_default();
        key_properties.dedup();
        if let Some(k) = key_properties
            .iter()
            .find(|k| !schema_props.contains_key(*k))
        {
            return Err(CatalogError::UnknownKey {
                stream: id.to_string(),
                property: k.clone(),
            });
        }
        Ok(key_properties)
    }

    /// Property metadata that names a column the schema lacks is a mistake
    /// worth stopping for when it selects that column.
    fn check_selected_properties(
        &self,
        id: &str,
        schema_props: &Map<String, Value>,
    ) -> Result<(), CatalogError> {
        for m in &self.metadata {
            if let Some(prop) = m.property() {
                let selected = m.metadata.get("selected").and_then(Value::as_bool) == Some(true);
                if selected && !schema_props.contains_key(&prop) {
                    return Err(CatalogError::UnknownProperty {
                        stream: id.to_string(),
                        property: prop,
                    });
                }
            }
        }
        Ok(())
    }

    /// The properties to sync: keys and `automatic` ones always, then the
    /// property's own choice. A stream selected with no column-level choice
    /// at all means every column, which is what a hand-written catalog
    /// intends.
    fn selected_properties(
        &self,
        schema_props: &Map<String, Value>,
        key_properties: &[String],
    ) -> Vec<SelectedProperty> {
        let any_choice = schema_props.keys().any(|p| {
            self.property_metadata(p)
                .map(|m| m.contains_key("selected") || m.contains_key("selected-by-default"))
                .unwrap_or(false)
        });
        let keys: BTreeSet<&str> = key_properties.iter().map(String::as_str).collect();
        let mut properties = Vec::new();
        for (prop, schema) in schema_props {
            let pm = self.property_metadata(prop);
            let get = |k: &str| pm.and_then(|m| m.get(k));
            let inclusion = get("inclusion")
                .and_then(Value::as_str)
                .unwrap_or("available");
            let include = if keys.contains(prop.as_str()) || inclusion == "automatic" {
                true
            } else if inclusion == "unsupported" {
                false
            } else if let Some(sel) = get("selected").and_then(Value::as_bool) {
                sel
            } else if let Some(d) = get("selected-by-default").and_then(Value::as_bool) {
                d
            } else {
                !any_choice
            };
            if include {
                properties.push(SelectedProperty {
                    name: prop.clone(),
                    schema: schema.clone(),
                    sql_datatype: get("sql-datatype")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog(v: Value) -> Catalog {
        Catalog::from_text(&v.to_string(), "k.json").expect("valid catalog")
    }

    fn stream(md: Value, extra: Value) -> Value {
        let mut s = json!({
            "tap_stream_id": "ks:t", "stream": "t", "table_name": "t",
            "schema": {"type": ["null","object"], "properties": {
                "id": {"type": ["null","integer"]}, "a": {"type": ["null","string"]}, "b": {"type": ["null","string"]}}},
            "metadata": md,
        });
        if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        s
    }

    fn names(s: &SelectedStream) -> Vec<&str> {
        s.properties.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn selection_table() {
        // (metadata, stream-object extras, expected: None = not selected, Some(props, method))
        type Case<'a> = (Value, Value, Option<(Vec<&'a str>, ReplicationMethod)>);
        let cases: Vec<Case> = vec![
            // nothing selected
            (
                json!([{"breadcrumb": [], "metadata": {"table-key-properties": ["id"]}}]),
                json!({}),
                None,
            ),
            // stream selected, no column choices: every column
            (
                json!([{"breadcrumb": [], "metadata": {"selected": true, "table-key-properties": ["id"]}}]),
                json!({}),
                Some((vec!["id", "a", "b"], ReplicationMethod::FullTable)),
            ),
            // explicit column choices; key always included
            (
                json!([
                {"breadcrumb": [], "metadata": {"selected": true, "replication-method": "LOG_BASED", "table-key-properties": ["id"]}},
                {"breadcrumb": ["properties","id"], "metadata": {"inclusion": "automatic", "selected": false}},
                {"breadcrumb": ["properties","a"], "metadata": {"inclusion": "available", "selected": true}},
                {"breadcrumb": ["properties","b"], "metadata": {"inclusion": "available", "selected": false}}]),
                json!({}),
                Some((vec!["id", "a"], ReplicationMethod::LogBased)),
            ),
            // selected-by-default on stream and properties
            (
                json!([
                {"breadcrumb": [], "metadata": {"selected-by-default": true, "replication-method": "incremental"}},
                {"breadcrumb": ["properties","a"], "metadata": {"selected-by-default": true}},
                {"breadcrumb": ["properties","b"], "metadata": {"selected-by-default": false}}]),
                json!({}),
                Some((vec!["a"], ReplicationMethod::Incremental)),
            ),
            // explicit false beats selected-by-default
            (
                json!([{"breadcrumb": [], "metadata": {"selected": false, "selected-by-default": true}}]),
                json!({}),
                None,
            ),
            // unsupported never, even when selected
            (
                json!([
                {"breadcrumb": [], "metadata": {"selected": true}},
                {"breadcrumb": ["properties","a"], "metadata": {"inclusion": "unsupported", "selected": true}},
                {"breadcrumb": ["properties","b"], "metadata": {"selected": true}}]),
                json!({}),
                Some((vec!["b"], ReplicationMethod::FullTable)),
            ),
            // legacy stream-object keys (Meltano writes both forms)
            (
                json!([]),
                json!({"selected": true, "replication_method": "INCREMENTAL", "key_properties": ["id"]}),
                Some((vec!["id", "a", "b"], ReplicationMethod::Incremental)),
            ),
            // metadata wins over stream-object keys
            (
                json!([{"breadcrumb": [], "metadata": {"selected": false}}]),
                json!({"selected": true}),
                None,
            ),
            // forced method as a fallback
            (
                json!([{"breadcrumb": [], "metadata": {"selected": true, "forced-replication-method": "FULL_TABLE"}}]),
                json!({"replication_method": ""}),
                Some((vec!["id", "a", "b"], ReplicationMethod::FullTable)),
            ),
        ];
        for (i, (md, extra, want)) in cases.into_iter().enumerate() {
            let c = catalog(json!({"streams": [stream(md, extra)]}));
            let got = c.selected().expect("resolves");
            match want {
                None => assert!(got.is_empty(), "case {i}: {got:?}"),
                Some((props, method)) => {
                    assert_eq!(got.len(), 1, "case {i}");
                    assert_eq!(names(&got[0]), props, "case {i}");
                    assert_eq!(got[0].method, method, "case {i}");
                }
            }
        }
    }

    #[test]
    fn go_catalog_reads() {
        // The Go tap writes `table-name`, `selected` on every entry and
        // `key_properties`/`bookmark_properties` on the stream.
        let text = r#"{"streams":[{"type":"","stream":"users","tap_stream_id":"db:users","schema":{"type":["null","object"],"additionalProperties":false,"properties":{"id":{"type":["null","integer"]},"name":{"type":["null","string"]}}},"table-name":"users","metadata":[{"metadata":{"selected":true,"replication-method":"INCREMENTAL","table-key-properties":["id"],"valid-replication-keys":["id"],"breadcrumb":[]}},{"metadata":{"selected":true,"inclusion":"automatic","breadcrumb":["properties","id"]}},{"metadata":{"selected":false,"inclusion":"available","breadcrumb":["properties","name"]}}],"key_properties":["id"],"bookmark_properties":["id"]}]}"#;
        let c = Catalog::from_text(text, "go.json").expect("go catalog");
        let s = c.selected().expect("resolves");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].table, "users");
        assert_eq!(s[0].name, "users");
        assert_eq!(names(&s[0]), vec!["id"]);
        assert_eq!(s[0].method, ReplicationMethod::Incremental);
        // unknown keys survive a round trip
        let back = serde_json::to_value(&c).expect("serialize");
        assert_eq!(back["streams"][0]["bookmark_properties"], json!(["id"]));
        assert_eq!(back["streams"][0]["type"], json!(""));
        assert_eq!(
            back["streams"][0]["metadata"][0]["metadata"]["breadcrumb"],
            json!([])
        );
    }

    #[test]
    fn catalog_errors() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".to_string(), "k.json is not a valid catalog"),
            ("{}".to_string(), "is not a valid catalog"),
            (json!({"streams": []}).to_string(), "has no streams"),
            (json!({"streams": [stream(json!([{"breadcrumb": [], "metadata": {"selected": true, "replication-method": "SNAPSHOT"}}]), json!({}))]}).to_string(),
             "`ks:t` has replication method \"SNAPSHOT\""),
            (json!({"streams": [stream(json!([{"breadcrumb": [], "metadata": {"selected": true}}, {"breadcrumb": ["properties", "zzz"], "metadata": {"selected": true}}]), json!({}))]}).to_string(),
             "selects property `zzz`"),
            (json!({"streams": [stream(json!([{"breadcrumb": [], "metadata": {"selected": true, "table-key-properties": ["nope"]}}]), json!({}))]}).to_string(),
             "key property `nope`"),
        ];
        for (text, want) in cases {
            let err = Catalog::from_text(&text, "k.json").and_then(|c| c.selected().map(|_| c));
            let msg = err.expect_err(&text).to_string();
            assert!(msg.contains(want), "{text}: `{msg}` lacks `{want}`");
        }
    }
}
