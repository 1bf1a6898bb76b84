//! Config: one or more JSON files plus `TAP_PLANETSCALE_*` environment
//! overrides, turned into validated [`Settings`].
//!
//! The raw layer is a flat map of key → (JSON value, where it came from), so
//! every error can name the file or variable that supplied the bad value.
//! Later `--config` files override earlier ones key by key, and the
//! environment overrides them all, which is Meltano's convention. Numbers and
//! booleans are accepted as strings because Meltano sends settings without a
//! `kind` as strings. Unknown keys are warned about, not rejected: Meltano and
//! older configs may carry extra keys, and a misspelt required key still fails
//! as missing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::types::{BinaryEncoding, DecimalEncoding, Encoding, Encodings, JsonEncoding};

/// Prefix of the environment overrides (Meltano's convention).
pub const ENV_PREFIX: &str = "TAP_PLANETSCALE_";

/// Whether the tap understands a key. The dotted one is also accepted nested
/// (`{"options": {"do_not_treat_tiny_int_as_boolean": true}}`), as airbyte
/// writes it.
fn is_key(key: &str) -> bool {
    SETTINGS.iter().any(|s| s.name == key)
}

/// Documentation of one setting, for `--about` and the README.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    pub name: &'static str,
    /// JSON Schema type: string, boolean, integer, object.
    pub kind: &'static str,
    pub required: bool,
    pub secret: bool,
    pub default: Option<&'static str>,
    pub description: &'static str,
}

/// Every setting, in the order people read them.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc { name: "host", kind: "string", required: true, secret: false, default: None,
        description: "Database host, `name[:port]`. MySQL is reached on 3306 and gRPC on 443 of this host unless a port is given or mysql_host/grpc_host override it." },
    SettingDoc { name: "database", kind: "string", required: true, secret: false, default: None,
        description: "Database (Vitess keyspace) to read." },
    SettingDoc { name: "username", kind: "string", required: true, secret: false, default: None,
        description: "User name of a PlanetScale password (or a vtgate user)." },
    SettingDoc { name: "password", kind: "string", required: true, secret: true, default: None,
        description: "The password. Never logged." },
    SettingDoc { name: "shards", kind: "string", required: false, secret: false, default: None,
        description: "Comma-separated subset of shards to read, e.g. `-80,80-`. Each must exist. Default: every shard." },
    SettingDoc { name: "recopy", kind: "string", required: false, secret: false, default: None,
        description: "Comma-separated streams to copy again on this run, on every shard, under a new table version, with ACTIVATE_VERSION after the copy (as `on_truncate: recopy` does); every other stream carries on from its cursor. An interrupted re-copy resumes on the next run, with or without this key; while it is unfinished, naming the stream again resumes it rather than starting over. Remove the key once the run is done, or every run copies again. Flag: `--recopy`." },
    SettingDoc { name: "use_replica", kind: "boolean", required: false, secret: false, default: Some("false"),
        description: "Read from REPLICA tablets." },
    SettingDoc { name: "use_rdonly", kind: "boolean", required: false, secret: false, default: Some("false"),
        description: "Read from RDONLY tablets. At most one of use_replica and use_rdonly." },
    SettingDoc { name: "starting_gtids", kind: "object", required: false, secret: false, default: None,
        description: "JSON object keyspace -> shard -> position (`MySQL56/<uuid>:1-N`) to start from when a shard has no state, skipping the initial copy." },
    SettingDoc { name: "timeout_seconds", kind: "integer", required: false, secret: false, default: Some("90"),
        description: "Length of one Sync session; when it ends the tap peeks at the position again and continues." },
    SettingDoc { name: "max_retries", kind: "integer", required: false, secret: false, default: Some("5"),
        description: "Retries of a transient error before the run fails." },
    SettingDoc { name: "retry_budget_seconds", kind: "integer", required: false, secret: false, default: Some("300"),
        description: "Longest time one (stream, shard) keeps retrying a transient error before the run fails." },
    SettingDoc { name: "include_metadata", kind: "boolean", required: false, secret: false, default: Some("false"),
        description: "Add `_sdc_shard`, `_sdc_position` and `_sdc_source_sequence` to every record." },
    SettingDoc { name: "decimal_encoding", kind: "string", required: false, secret: false, default: Some("string"),
        description: "(discovery) How DECIMAL and BIGINT UNSIGNED columns are typed: `string` (exact digits as strings with `format: x-singer.decimal`, `precision` and `scale`, which SDK targets store as numeric(p,s)) or `number` (JSON numbers, which most SQL targets store as a float)." },
    SettingDoc { name: "binary_encoding", kind: "string", required: false, secret: false, default: Some("base64"),
        description: "(discovery) How binary, blob and geometry columns are written: `base64` or `base16` (hex, which meltanolabs-target-postgres stores as bytea with `interpret_content_encoding: true`)." },
    SettingDoc { name: "json_encoding", kind: "string", required: false, secret: false, default: Some("string"),
        description: "(discovery) How JSON columns are written: `string` (the JSON document as text, which every target loads) or `value` (the parsed value, stored as jsonb by meltanolabs-target-postgres; pipelinewise-target-postgres and target-duckdb fail on a document that is a bare string)." },
    SettingDoc { name: "options.do_not_treat_tiny_int_as_boolean", kind: "boolean", required: false, secret: false, default: None,
        description: "Airbyte's option. Explicitly false makes discovery type tinyint(1) as boolean; true or unset keeps integers (the Go tap's default)." },
    SettingDoc { name: "mysql_host", kind: "string", required: false, secret: false, default: None,
        description: "MySQL endpoint `name:port`, overriding host." },
    SettingDoc { name: "grpc_host", kind: "string", required: false, secret: false, default: None,
        description: "gRPC endpoint `name:port`, overriding host." },
    SettingDoc { name: "tls", kind: "boolean", required: false, secret: false, default: Some("true"),
        description: "Use TLS for MySQL and gRPC. Under TLS the MySQL database name carries the tablet type (`db@primary`)." },
    SettingDoc { name: "tls_ca_file", kind: "string", required: false, secret: false, default: None,
        description: "PEM file of a private CA to trust instead of the system roots." },
    SettingDoc { name: "max_parallel_readers", kind: "integer", required: false, secret: false, default: Some("4"),
        description: "How many (table, shard) readers run at once." },
    SettingDoc { name: "connect_timeout_seconds", kind: "integer", required: false, secret: false, default: Some("10"),
        description: "How long to wait for a connection before failing." },
    SettingDoc { name: "resync_on_purged", kind: "boolean", required: false, secret: false, default: Some("false"),
        description: "When a saved position has been purged from the server's binary logs, restart that stream from a full copy instead of failing." },
    SettingDoc { name: "on_truncate", kind: "string", required: false, secret: false, default: Some("warn"),
        description: "What a `TRUNCATE TABLE` of a followed table does (vtgate sends it as one DDL event, not as row deletes, so a target keeps every row it had; seen over `api: vstream`): `warn` logs a warning naming the stream and the fix; `recopy` also marks the stream in its bookmark, and the next run copies it again on every shard under a new version and sends ACTIVATE_VERSION once every shard's copy is done, so a target that honours it drops the rows that vanished. Change capture goes on from the copy's end." },
    SettingDoc { name: "api", kind: "string", required: false, secret: false, default: Some("psdbconnect"),
        description: "gRPC API that streams the rows: `psdbconnect` (PlanetScale's Connect Sync) or `vstream` (vtgate's VStream, which every Vitess cluster serves, PlanetScale included). The state is the same for both, so a run may switch." },
    SettingDoc { name: "grpc_auth", kind: "string", required: false, secret: false, default: Some("basic"),
        description: "How gRPC calls carry the credentials: `basic` (an `authorization: Basic` header, PlanetScale), `static` (`username`/`password` metadata, vtgate's `--grpc_auth_mode static`) or `none`." },
    SettingDoc { name: "cells", kind: "string", required: false, secret: false, default: None,
        description: "Comma-separated cells to stream from. Default: the cells of the chosen tablet type in SHOW VITESS_TABLETS." },
    SettingDoc { name: "state_interval_records", kind: "integer", required: false, secret: false, default: Some("10000"),
        description: "Emit STATE at least every this many records." },
    SettingDoc { name: "state_interval_seconds", kind: "integer", required: false, secret: false, default: Some("5"),
        description: "Emit STATE at least every this many seconds." },
    SettingDoc { name: "progress_interval_seconds", kind: "integer", required: false, secret: false, default: Some("5"),
        description: "Log a progress line per active (stream, shard) this often, when stderr is not a terminal (a terminal gets live bars)." },
    SettingDoc { name: "commit", kind: "boolean", required: false, secret: false, default: Some("false"),
        description: "Commit mode: push records to the Stitch Import API instead of writing Singer messages to stdout (the Go tap's `--commit`)." },
    SettingDoc { name: "singer_api_url", kind: "string", required: false, secret: false, default: Some("https://api.stitchdata.com"),
        description: "(commit mode) Import API base URL, `http://` or `https://`; batches go to `<url>/v2/import/batch`." },
    SettingDoc { name: "singer_api_token", kind: "string", required: false, secret: true, default: None,
        description: "(commit mode, required there) Import API token, sent as `Authorization: Bearer`. Never logged." },
    SettingDoc { name: "batch_size", kind: "integer", required: false, secret: false, default: Some("9000"),
        description: "(commit mode) Records per request, as in the Go tap; a request never holds more than 1000 records or 2 MiB, so values above 1000 mean 1000." },
    SettingDoc { name: "state_directory", kind: "string", required: false, secret: false, default: None,
        description: "(commit mode, required there) Directory for `state-<epoch ms>.json` files; created if missing." },
    SettingDoc { name: "singer_api_max_retries", kind: "integer", required: false, secret: false, default: Some("8"),
        description: "(commit mode) Retries of one request after HTTP 408, 429, 5xx or a connection error before the run fails." },
    SettingDoc { name: "singer_api_backoff_ms", kind: "integer", required: false, secret: false, default: Some("1000"),
        description: "(commit mode) First retry delay; it doubles per attempt, with jitter." },
    SettingDoc { name: "singer_api_backoff_max_ms", kind: "integer", required: false, secret: false, default: Some("60000"),
        description: "(commit mode) Longest retry delay." },
    SettingDoc { name: "singer_api_timeout_seconds", kind: "integer", required: false, secret: false, default: Some("120"),
        description: "(commit mode) Longest wait for one request, connection included; a request that times out is retried." },
];

const DEFAULT_MYSQL_PORT: u16 = 3306;
const DEFAULT_GRPC_PORT: u16 = 443;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass an existing, readable JSON file to --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "config file {path} is not valid JSON ({source}); fix the syntax at that line and column"
    )]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config file {path} must hold a JSON object, like {{\"host\": \"...\", \"database\": \"...\"}}")]
    NotObject { path: PathBuf },
    #[error("no config given: pass --config FILE (a JSON object with host, database, username and password)")]
    NoConfig,
    /// Every required key that is absent, in one message, so a first
    /// config is fixed in one edit rather than one run per key.
    #[error("{}", missing_text(keys))]
    Missing { keys: Vec<&'static str> },
    #[error("config key `{key}` from {origin} {problem}")]
    Invalid {
        key: String,
        origin: Origin,
        problem: String,
    },
    #[error(
        "config keys `use_replica` and `use_rdonly` are both true; pick at most one tablet type"
    )]
    TabletConflict,
    #[error("commit mode needs {what}: pass {flag}, or set `{key}` in the config or TAP_PLANETSCALE_{}", .key.to_uppercase())]
    CommitNeeds {
        what: &'static str,
        flag: &'static str,
        key: &'static str,
    },
}

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(String),
    /// A command-line flag, the last layer.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "config file {}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A password that never shows up in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to read the secret: named so that every use is greppable.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

/// Which tablets to read from. The psdb wire numbering lives in `psdb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TabletType {
    #[default]
    Primary,
    Replica,
    Rdonly,
}

impl TabletType {
    /// Vitess target suffix for the MySQL database name, and the
    /// `TabletType` column of `SHOW VITESS_TABLETS`, lowercased.
    pub fn as_str(self) -> &'static str {
        match self {
            TabletType::Primary => "primary",
            TabletType::Replica => "replica",
            TabletType::Rdonly => "rdonly",
        }
    }
}

/// Which gRPC API streams the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// `/psdbconnect.v1alpha1.Connect/Sync`, PlanetScale only.
    #[default]
    Psdbconnect,
    /// `/vtgateservice.Vitess/VStream`, any vtgate.
    Vstream,
}

impl Api {
    pub fn parse(text: &str) -> Option<Api> {
        match text.trim().to_ascii_lowercase().as_str() {
            "psdbconnect" | "connect" | "sync" => Some(Api::Psdbconnect),
            "vstream" => Some(Api::Vstream),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Psdbconnect => "psdbconnect",
            Api::Vstream => "vstream",
        }
    }
}

/// What a TRUNCATE of a followed table does (see `crate::sync::reader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTruncate {
    /// A warning with the fix; the target keeps the rows that vanished.
    #[default]
    Warn,
    /// The warning, and the stream is copied again by the next run under a
    /// new version, activated once every shard's copy is done.
    Recopy,
}

/// How gRPC calls carry the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrpcAuth {
    /// `authorization: Basic <base64 user:password>` (PlanetScale).
    #[default]
    Basic,
    /// `username` and `password` metadata (Vitess static auth).
    Static,
    /// Nothing (a vtgate without gRPC auth).
    None,
}

/// `name:port` of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Validated settings. Built once at the CLI edge and passed by reference.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: String,
    pub username: String,
    pub password: Secret,
    pub mysql: Endpoint,
    pub grpc: Endpoint,
    pub tls: bool,
    pub tls_ca_file: Option<PathBuf>,
    /// The `shards` subset, in the order given; `None` means every shard.
    pub shards: Option<Vec<String>>,
    /// Streams to copy again on this run (`recopy`).
    pub recopy: Vec<String>,
    pub tablet_type: TabletType,
    /// keyspace → shard → position to start from when a shard has no state.
    pub starting_gtids: BTreeMap<String, BTreeMap<String, String>>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_retries: u32,
    pub retry_budget: Duration,
    pub include_metadata: bool,
    /// `Some(false)` when `options.do_not_treat_tiny_int_as_boolean` is
    /// explicitly false: then tinyint(1) is discovered as boolean.
    pub do_not_treat_tiny_int_as_boolean: Option<bool>,
    pub max_parallel_readers: usize,
    pub state_interval_records: u64,
    pub state_interval: Duration,
    pub progress_interval: Duration,
    pub resync_on_purged: bool,
    pub on_truncate: OnTruncate,
    pub api: Api,
    pub grpc_auth: GrpcAuth,
    /// The `cells` setting; `None` derives cells from the tablets.
    pub cells: Option<Vec<String>>,
    /// How discovery types decimals, binary and JSON columns.
    pub encodings: Encodings,
}

/// The Go tap's default Import API.
pub const DEFAULT_SINGER_API_URL: &str = "https://api.stitchdata.com";

/// Commit-mode settings from config files and the environment, before the
/// command-line flags are applied.
#[derive(Debug, Clone)]
pub struct CommitConfig {
    pub enabled: bool,
    pub api_url: String,
    pub api_token: Option<Secret>,
    pub batch_size: usize,
    pub state_directory: Option<PathBuf>,
    pub max_retries: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
}

/// One raw value and its origin.
#[derive(Debug, Clone)]
struct RawValue {
    value: Value,
    origin: Origin,
}

/// Raw key/value pairs merged from files and environment, before validation.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    values: BTreeMap<String, RawValue>,
    /// Keys nobody understands, with their origin, for a warning.
    pub unknown: Vec<(String, Origin)>,
}

impl RawConfig {
    /// Reads and merges config files in order (later wins).
    pub fn from_files(paths: &[PathBuf]) -> Result<RawConfig, ConfigError> {
        if paths.is_empty() {
            return Err(ConfigError::NoConfig);
        }
        let mut raw = RawConfig::default();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            raw.merge_text(&text, Origin::File(path.clone()))?;
        }
        Ok(raw)
    }

    /// Merges one JSON document. Empty files count as `{}`.
    pub fn merge_text(&mut self, text: &str, origin: Origin) -> Result<(), ConfigError> {
        let path = match &origin {
            Origin::File(p) => p.clone(),
            Origin::Env(v) => PathBuf::from(v),
            Origin::Flag(f) => PathBuf::from(f),
        };
        if text.trim().is_empty() {
            return Ok(());
        }
        let value: Value = serde_json::from_str(text).map_err(|source| ConfigError::Json {
            path: path.clone(),
            source,
        })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::NotObject { path });
        };
        self.merge_object(map, "", &origin);
        Ok(())
    }

    fn merge_object(&mut self, map: Map<String, Value>, prefix: &str, origin: &Origin) {
        for (k, v) in map {
            let key = format!("{prefix}{k}");
            // `options` is the only nested group; flatten it to dotted keys.
            if key == "options" {
                if let Value::Object(inner) = v {
                    self.merge_object(inner, "options.", origin);
                    continue;
                }
            }
            self.set(key, v, origin.clone());
        }
    }

    fn set(&mut self, key: String, value: Value, origin: Origin) {
        if is_key(&key) {
            self.values.insert(key, RawValue { value, origin });
        } else if !self.unknown.iter().any(|(k, _)| *k == key) {
            self.unknown.push((key, origin));
        }
    }

    /// Applies `TAP_PLANETSCALE_<KEY>` overrides from the given variables.
    /// Values are JSON when they parse as JSON, strings otherwise, which is
    /// how Meltano exports them.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) {
        let by_env: BTreeMap<String, &'static str> = SETTINGS
            .iter()
            .map(|s| (env_name(s.name), s.name))
            .collect();
        for (name, text) in vars {
            let Some(key) = by_env.get(&name) else {
                continue;
            };
            let value = match serde_json::from_str::<Value>(&text) {
                Ok(
                    v @ (Value::Object(_) | Value::Array(_) | Value::Bool(_) | Value::Number(_)),
                ) => v,
                _ => Value::String(text),
            };
            self.values.insert(
                (*key).to_string(),
                RawValue {
                    value,
                    origin: Origin::Env(name),
                },
            );
        }
    }

    /// Applies the command line's values, the last layer: flags win over
    /// the environment and the files, and are validated with them.
    pub fn apply_flags(&mut self, flags: &Flags) {
        for (key, flag, value) in &flags.values {
            self.values.insert(
                (*key).to_string(),
                RawValue {
                    value: value.clone(),
                    origin: Origin::Flag(flag),
                },
            );
        }
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.values.get(key).filter(|r| !r.value.is_null())
    }

    fn required_string(&self, key: &'static str) -> Result<String, ConfigError> {
        match self.optional_string(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(self.invalid(key, "is empty; give a non-empty value")),
            None => Err(ConfigError::Missing { keys: vec![key] }),
        }
    }

    /// Whether a required string key is absent (null counts as absent).
    fn is_missing(&self, key: &str) -> bool {
        self.get(key).is_none()
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        match &raw.value {
            Value::String(s) => Ok(Some(s.trim().to_string())),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(self.invalid(key, &format!("must be a string, got {}", json_kind(other)))),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.optional_bool(key)?.unwrap_or(default))
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        match &raw.value {
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) => match parse_bool(s) {
                Some(b) => Ok(Some(b)),
                None => Err(self.invalid(key, &format!("must be true or false, got \"{s}\""))),
            },
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Some(false)),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(Some(true)),
            other => Err(self.invalid(
                key,
                &format!("must be true or false, got {}", json_kind(other)),
            )),
        }
    }

    fn u64(&self, key: &str, default: u64, min: u64) -> Result<u64, ConfigError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let n = match &raw.value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= min => Ok(n),
            _ => Err(self.invalid(
                key,
                &format!(
                    "must be a whole number of at least {min}, got {}",
                    raw.value
                ),
            )),
        }
    }

    fn invalid(&self, key: &str, problem: &str) -> ConfigError {
        let origin = self
            .get(key)
            .or_else(|| self.values.get(key))
            .map(|r| r.origin.clone())
            .unwrap_or(Origin::Env(env_name(key)));
        ConfigError::Invalid {
            key: key.to_string(),
            origin,
            problem: problem.to_string(),
        }
    }

    /// Validates everything and builds [`Settings`].
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        self.require_connection_keys()?;
        let database = self.required_string("database")?;
        let username = self.required_string("username")?;
        let password = Secret::new(self.required_string("password")?);
        let (mysql, grpc) = self.endpoints()?;
        let encodings = Encodings {
            decimal: self.encoding("decimal_encoding", DecimalEncoding::default())?,
            binary: self.encoding("binary_encoding", BinaryEncoding::default())?,
            json: self.encoding("json_encoding", JsonEncoding::default())?,
        };
        Ok(Settings {
            database,
            username,
            password,
            mysql,
            grpc,
            tls: self.bool("tls", true)?,
            tls_ca_file: self.tls_ca_file()?,
            shards: self.list("shards", "\"-80,80-\"")?,
            recopy: self
                .list("recopy", "\"orders,customers\"")?
                .unwrap_or_default(),
            tablet_type: self.tablet_type()?,
            starting_gtids: self.starting_gtids()?,
            timeout: Duration::from_secs(self.u64("timeout_seconds", 90, 1)?),
            connect_timeout: Duration::from_secs(self.u64("connect_timeout_seconds", 10, 1)?),
            max_retries: u32::try_from(self.u64("max_retries", 5, 0)?)
                .map_err(|_| self.invalid("max_retries", "is too large"))?,
            retry_budget: Duration::from_secs(self.u64("retry_budget_seconds", 300, 1)?),
            include_metadata: self.bool("include_metadata", false)?,
            do_not_treat_tiny_int_as_boolean: self
                .optional_bool("options.do_not_treat_tiny_int_as_boolean")?,
            max_parallel_readers: usize::try_from(self.u64("max_parallel_readers", 4, 1)?)
                .map_err(|_| self.invalid("max_parallel_readers", "is too large"))?,
            state_interval_records: self.u64("state_interval_records", 10_000, 1)?,
            state_interval: Duration::from_secs(self.u64("state_interval_seconds", 5, 1)?),
            progress_interval: Duration::from_secs(self.u64("progress_interval_seconds", 5, 1)?),
            resync_on_purged: self.bool("resync_on_purged", false)?,
            on_truncate: self.on_truncate()?,
            api: self.api()?,
            grpc_auth: self.grpc_auth()?,
            cells: self.cells()?,
            encodings,
        })
    }

    /// Every missing connection key at once, so one run names them all.
    fn require_connection_keys(&self) -> Result<(), ConfigError> {
        let host_missing = self.is_missing("host")
            && (self.is_missing("mysql_host") || self.is_missing("grpc_host"));
        let missing: Vec<&'static str> = [
            ("host", host_missing),
            ("database", self.is_missing("database")),
            ("username", self.is_missing("username")),
            ("password", self.is_missing("password")),
        ]
        .into_iter()
        .filter_map(|(key, missing)| missing.then_some(key))
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Missing { keys: missing })
        }
    }

    /// MySQL and gRPC endpoints: `mysql_host` / `grpc_host`, else `host`.
    fn endpoints(&self) -> Result<(Endpoint, Endpoint), ConfigError> {
        let host = self.optional_string("host")?.filter(|s| !s.is_empty());
        let mysql_host = self
            .optional_string("mysql_host")?
            .filter(|s| !s.is_empty());
        let grpc_host = self.optional_string("grpc_host")?.filter(|s| !s.is_empty());
        let endpoint = |own: (&str, &Option<String>), default_port: u16| {
            let (key, text) = match (own.1, &host) {
                (Some(text), _) => (own.0, text),
                (None, Some(h)) => ("host", h),
                (None, None) => return Err(ConfigError::Missing { keys: vec!["host"] }),
            };
            parse_endpoint(text, default_port).map_err(|p| self.invalid(key, &p))
        };
        let mysql = endpoint(("mysql_host", &mysql_host), DEFAULT_MYSQL_PORT)?;
        let grpc = endpoint(("grpc_host", &grpc_host), DEFAULT_GRPC_PORT)?;
        Ok((mysql, grpc))
    }

    fn tls_ca_file(&self) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = self
            .optional_string("tls_ca_file")?
            .filter(|p| !p.is_empty())
        else {
            return Ok(None);
        };
        let path = PathBuf::from(p);
        if let Err(e) = std::fs::File::open(&path) {
            return Err(self.invalid(
                "tls_ca_file",
                &format!(
                    "names {} which cannot be read ({e}); give the path of a PEM CA file",
                    path.display()
                ),
            ));
        }
        Ok(Some(path))
    }

    /// A list of names (`shards`, `recopy`): a comma-separated string, or a
    /// JSON list of strings; `example` shows the string form.
    fn list(&self, key: &str, example: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let shape = format!("must be a comma-separated string like {example}");
        let shape = shape.as_str();
        let list: Vec<String> = match &raw.value {
            Value::String(s) => s
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                        _ => return Err(self.invalid(key, shape)),
                    }
                }
                out
            }
            other => {
                let problem = format!("{shape}, got {}", json_kind(other));
                return Err(self.invalid(key, &problem));
            }
        };
        Ok(Some(list).filter(|l| !l.is_empty()))
    }

    fn tablet_type(&self) -> Result<TabletType, ConfigError> {
        let use_replica = self.bool("use_replica", false)?;
        let use_rdonly = self.bool("use_rdonly", false)?;
        match (use_replica, use_rdonly) {
            (true, true) => Err(ConfigError::TabletConflict),
            (true, false) => Ok(TabletType::Replica),
            (false, true) => Ok(TabletType::Rdonly),
            (false, false) => Ok(TabletType::Primary),
        }
    }

    fn api(&self) -> Result<Api, ConfigError> {
        match self.optional_string("api")? {
            None => Ok(Api::default()),
            Some(text) => Api::parse(&text)
                .ok_or_else(|| self.invalid("api", "must be `psdbconnect` or `vstream`")),
        }
    }

    fn on_truncate(&self) -> Result<OnTruncate, ConfigError> {
        match self
            .optional_string("on_truncate")?
            .as_deref()
            .map(str::trim)
        {
            None | Some("warn") => Ok(OnTruncate::Warn),
            Some("recopy") => Ok(OnTruncate::Recopy),
            Some(_) => Err(self.invalid("on_truncate", "must be `warn` or `recopy`")),
        }
    }

    fn grpc_auth(&self) -> Result<GrpcAuth, ConfigError> {
        match self.optional_string("grpc_auth")?.as_deref().map(str::trim) {
            None | Some("basic") => Ok(GrpcAuth::Basic),
            Some("static") => Ok(GrpcAuth::Static),
            Some("none") => Ok(GrpcAuth::None),
            Some(_) => Err(self.invalid("grpc_auth", "must be `basic`, `static` or `none`")),
        }
    }

    fn cells(&self) -> Result<Option<Vec<String>>, ConfigError> {
        Ok(self
            .optional_string("cells")?
            .map(|text| {
                text.split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|list| !list.is_empty()))
    }

    /// One of the `*_encoding` settings; an unknown value names the ones
    /// accepted.
    fn encoding<E: Encoding>(&self, key: &str, default: E) -> Result<E, ConfigError> {
        match self.optional_string(key)? {
            None => Ok(default),
            Some(text) => E::parse(&text)
                .ok_or_else(|| self.invalid(key, &format!("must be {}", E::expected()))),
        }
    }

    /// The commit-mode settings. None of them is required here: whether
    /// token and directory are needed depends on the mode, which `app`
    /// decides after applying the flags.
    pub fn commit_config(&self) -> Result<CommitConfig, ConfigError> {
        let non_empty = |key: &str| -> Result<Option<String>, ConfigError> {
            Ok(self.optional_string(key)?.filter(|s| !s.is_empty()))
        };
        let backoff = Duration::from_millis(self.u64("singer_api_backoff_ms", 1000, 1)?);
        let backoff_max =
            Duration::from_millis(self.u64("singer_api_backoff_max_ms", 60_000, 1)?);
        if backoff_max < backoff {
            return Err(self.invalid(
                "singer_api_backoff_max_ms",
                "must be at least singer_api_backoff_ms",
            ));
        }
        Ok(CommitConfig {
            enabled: self.bool("commit", false)?,
            api_url: non_empty("singer_api_url")?.unwrap_or_else(|| DEFAULT_SINGER_API_URL.into()),
            api_token: non_empty("singer_api_token")?.map(Secret::new),
            batch_size: usize::try_from(self.u64("batch_size", 9000, 1)?)
                .map_err(|_| self.invalid("batch_size", "is too large"))?,
            state_directory: non_empty("state_directory")?.map(PathBuf::from),
            max_retries: u32::try_from(self.u64("singer_api_max_retries", 8, 0)?)
                .map_err(|_| self.invalid("singer_api_max_retries", "is too large"))?,
            backoff,
            backoff_max,
            timeout: Duration::from_secs(self.u64("singer_api_timeout_seconds", 120, 1)?),
        })
    }

    fn starting_gtids(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, ConfigError> {
        let Some(raw) = self.get("starting_gtids") else {
            return Ok(BTreeMap::new());
        };
        let shape = "must be a JSON object mapping keyspace to shard to position, like {\"ks\": {\"-\": \"MySQL56/uuid:1-5\"}}";
        let value = match &raw.value {
            Value::String(s) if s.trim().is_empty() => return Ok(BTreeMap::new()),
            Value::String(s) => serde_json::from_str::<Value>(s)
                .map_err(|e| self.invalid("starting_gtids", &format!("{shape} ({e})")))?,
            v => v.clone(),
        };
        let parsed: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_value(value)
            .map_err(|e| self.invalid("starting_gtids", &format!("{shape} ({e})")))?;
        for (ks, shards) in &parsed {
            for (shard, pos) in shards {
                if let Err(e) = crate::position::Position::parse(pos) {
                    return Err(self.invalid(
                        "starting_gtids",
                        &format!("has an invalid position for {ks}/{shard}: {e}"),
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

/// `config key `a` is missing; …` or `config keys `a`, `b` and `c` are
/// missing; …`, naming each key's environment variable too.
fn missing_text(keys: &[&str]) -> String {
    fn and_list(items: &[String]) -> String {
        match items {
            [] => String::new(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    }
    let names: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    let envs: Vec<String> = keys.iter().map(|k| env_name(k)).collect();
    if keys.len() == 1 {
        format!(
            "config key {} is missing; add it to the config file or set {}",
            names[0], envs[0]
        )
    } else {
        format!(
            "config keys {} are missing; add them to the config file or set {}",
            and_list(&names),
            and_list(&envs)
        )
    }
}

/// `TAP_PLANETSCALE_<KEY>` with dots and dashes as underscores.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "off" | "" => Some(false),
        _ => None,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses `name[:port]` or `[v6]:port`.
pub fn parse_endpoint(text: &str, default_port: u16) -> Result<Endpoint, String> {
    let text = text.trim();
    let bad = || format!("must be `name` or `name:port`, got \"{text}\"");
    if text.is_empty() || text.contains('/') || text.contains(char::is_whitespace) {
        return Err(bad());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok(Endpoint {
            host: host.to_string(),
            port,
        });
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port.parse::<u16>().map_err(|_| bad())?;
            if host.is_empty() || port == 0 {
                return Err(bad());
            }
            Ok(Endpoint {
                host: host.to_string(),
                port,
            })
        }
        Some(_) => Err(bad()),
        None => Ok(Endpoint {
            host: text.to_string(),
            port: default_port,
        }),
    }
}

/// Loads settings from files and the process environment.
pub fn load(
    paths: &[PathBuf],
    flags: &Flags,
) -> Result<(Settings, Vec<(String, Origin)>), ConfigError> {
    let mut raw = RawConfig::from_files(paths)?;
    raw.apply_env(std::env::vars());
    raw.apply_flags(flags);
    let unknown = raw.unknown.clone();
    Ok((raw.into_settings()?, unknown))
}

/// Loads the commit-mode settings. Config files are optional here: the
/// stdin relay needs no database, so it may run on flags and environment
/// alone.
pub fn load_commit(paths: &[PathBuf], flags: &Flags) -> Result<CommitConfig, ConfigError> {
    let mut raw = if paths.is_empty() {
        RawConfig::default()
    } else {
        RawConfig::from_files(paths)?
    };
    raw.apply_env(std::env::vars());
    raw.apply_flags(flags);
    raw.commit_config()
}

/// The command line's values for config keys, each with the flag that
/// gave it (for error messages).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    values: Vec<(&'static str, &'static str, Value)>,
}

impl Flags {
    /// Sets config key `key` from flag `flag`.
    pub fn set(&mut self, key: &'static str, flag: &'static str, value: impl Into<Value>) {
        self.values.push((key, flag, value.into()));
    }
}

/// For error messages that must name the file a setting came from.
pub fn describe_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawConfig {
        let mut r = RawConfig::default();
        r.merge_text(text, Origin::File(PathBuf::from("c.json")))
            .expect("valid json");
        r
    }

    const BASE: &str =
        r#"{"host":"db.example.com","database":"shop","username":"u","password":"p"}"#;

    #[test]
    fn minimal_config_defaults() {
        let s = raw(BASE).into_settings().expect("valid");
        assert_eq!(
            s.mysql,
            Endpoint {
                host: "db.example.com".into(),
                port: 3306
            }
        );
        assert_eq!(
            s.grpc,
            Endpoint {
                host: "db.example.com".into(),
                port: 443
            }
        );
        assert!(s.tls);
        assert_eq!(s.tablet_type, TabletType::Primary);
        assert_eq!(s.timeout, Duration::from_secs(90));
        assert_eq!(s.shards, None);
    }

    #[test]
    fn password_is_never_in_debug() {
        let s = raw(r#"{"host":"h","database":"d","username":"u","password":"hunter2-secret"}"#)
            .into_settings()
            .expect("valid");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn strings_for_numbers_and_booleans() {
        let mut r = raw(BASE);
        r.merge_text(
            r#"{"tls":"false","timeout_seconds":"30","use_replica":"true","max_retries":"0","include_metadata":"1","options":{"do_not_treat_tiny_int_as_boolean":"false"}}"#,
            Origin::File("m.json".into()),
        )
        .expect("json");
        let s = r.into_settings().expect("valid");
        assert!(!s.tls);
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.tablet_type, TabletType::Replica);
        assert_eq!(s.max_retries, 0);
        assert!(s.include_metadata);
        assert_eq!(s.do_not_treat_tiny_int_as_boolean, Some(false));
    }

    #[test]
    fn env_overrides_files() {
        let mut r = raw(BASE);
        r.apply_env(vec![
            ("TAP_PLANETSCALE_DATABASE".to_string(), "other".to_string()),
            ("TAP_PLANETSCALE_TLS".to_string(), "false".to_string()),
            (
                "TAP_PLANETSCALE_OPTIONS_DO_NOT_TREAT_TINY_INT_AS_BOOLEAN".to_string(),
                "true".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ]);
        let s = r.into_settings().expect("valid");
        assert_eq!(s.database, "other");
        assert!(!s.tls);
        assert_eq!(s.do_not_treat_tiny_int_as_boolean, Some(true));
    }

    #[test]
    fn endpoints_override_host() {
        let s = raw(r#"{"host":"h:1","mysql_host":"m:2","grpc_host":"[::1]:3","database":"d","username":"u","password":"p"}"#)
            .into_settings()
            .expect("valid");
        assert_eq!(
            s.mysql,
            Endpoint {
                host: "m".into(),
                port: 2
            }
        );
        assert_eq!(
            s.grpc,
            Endpoint {
                host: "::1".into(),
                port: 3
            }
        );
        let s = raw(r#"{"mysql_host":"m:2","grpc_host":"g:3","database":"d","username":"u","password":"p"}"#)
            .into_settings()
            .expect("host may be left out when both endpoints are given");
        assert_eq!(s.grpc.port, 3);
    }

    #[test]
    fn shards_subset_and_gtids() {
        let s = raw(r#"{"host":"h","database":"d","username":"u","password":"p","shards":" -80, 80- ,","starting_gtids":"{\"d\":{\"-80\":\"MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-7\"}}"}"#)
            .into_settings()
            .expect("valid");
        assert_eq!(s.shards, Some(vec!["-80".to_string(), "80-".to_string()]));
        assert_eq!(
            s.starting_gtids["d"]["-80"],
            "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-7"
        );
    }

    /// Each bad config names the key and where it came from.
    #[test]
    fn errors_name_key_and_origin() {
        let cases: &[(&str, &str)] = &[
            (r#"{"database":"d","username":"u","password":"p"}"#, "`host` is missing"),
            (r#"{"host":"h","username":"u","password":"p"}"#, "`database` is missing"),
            (r#"{"host":"h","database":"d","password":"p"}"#, "`username` is missing"),
            (r#"{"host":"h","database":"d","username":"u"}"#, "`password` is missing"),
            // Every missing key at once (issue 16): a config with only `host`.
            (r#"{"host":"h"}"#, "config keys `database`, `username` and `password` are missing; add them to the config file or set TAP_PLANETSCALE_DATABASE, TAP_PLANETSCALE_USERNAME and TAP_PLANETSCALE_PASSWORD"),
            (r#"{}"#, "config keys `host`, `database`, `username` and `password` are missing"),
            (r#"{"mysql_host":"m:1","database":"d"}"#, "config keys `host`, `username` and `password` are missing"),
            (r#"{"host":"h","database":"","username":"u","password":"p"}"#, "`database` from config file c.json is empty"),
            (r#"{"host":"h","database":["d"],"username":"u","password":"p"}"#, "`database` from config file c.json must be a string, got an array"),
            (r#"{"host":"h:notaport","database":"d","username":"u","password":"p"}"#, "`host` from config file c.json must be `name` or `name:port`"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","tls":"maybe"}"#, "`tls` from config file c.json must be true or false"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","timeout_seconds":0}"#, "`timeout_seconds` from config file c.json must be a whole number of at least 1"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","timeout_seconds":"soon"}"#, "`timeout_seconds`"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","use_replica":true,"use_rdonly":true}"#, "both true"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","shards":5}"#, "`shards` from config file c.json must be a comma-separated string"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","starting_gtids":"nope"}"#, "`starting_gtids` from config file c.json must be a JSON object"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","starting_gtids":{"d":{"-":"garbage"}}}"#, "invalid position for d/-"),
            (r#"{"host":"h","database":"d","username":"u","password":"p","tls_ca_file":"/nonexistent/ca.pem"}"#, "`tls_ca_file` from config file c.json names /nonexistent/ca.pem which cannot be read"),
        ];
        for (text, want) in cases {
            let err = raw(text).into_settings().expect_err(text).to_string();
            assert!(err.contains(want), "{text}: got `{err}`, want `{want}`");
        }
    }

    #[test]
    fn file_errors() {
        let mut r = RawConfig::default();
        let err = r
            .merge_text("{not json", Origin::File("bad.json".into()))
            .expect_err("invalid");
        assert!(err.to_string().contains("bad.json is not valid JSON"));
        let err = r
            .merge_text("[1]", Origin::File("arr.json".into()))
            .expect_err("not object");
        assert!(err.to_string().contains("must hold a JSON object"));
        let err =
            RawConfig::from_files(&[PathBuf::from("/nonexistent.json")]).expect_err("missing");
        assert!(err
            .to_string()
            .contains("cannot read config file /nonexistent.json"));
        assert!(matches!(
            RawConfig::from_files(&[]),
            Err(ConfigError::NoConfig)
        ));
    }

    #[test]
    fn commit_settings_from_files_and_env() {
        let c = RawConfig::default().commit_config().expect("defaults");
        assert!(!c.enabled);
        assert_eq!(c.api_url, "https://api.stitchdata.com");
        assert!(c.api_token.is_none() && c.state_directory.is_none());
        assert_eq!(c.batch_size, 9000);
        assert_eq!(c.max_retries, 8);
        assert_eq!(
            (c.backoff, c.backoff_max),
            (Duration::from_secs(1), Duration::from_secs(60))
        );

        let mut r = raw(
            r#"{"commit":"true","singer_api_token":"tok-secret","batch_size":"250","state_directory":"/s","singer_api_url":"http://h:1"}"#,
        );
        r.apply_env(vec![
            (
                "TAP_PLANETSCALE_SINGER_API_BACKOFF_MS".to_string(),
                "10".to_string(),
            ),
            (
                "TAP_PLANETSCALE_SINGER_API_BACKOFF_MAX_MS".to_string(),
                "20".to_string(),
            ),
            (
                "TAP_PLANETSCALE_STATE_DIRECTORY".to_string(),
                "/env".to_string(),
            ),
        ]);
        let c = r.commit_config().expect("valid");
        assert!(c.enabled);
        assert_eq!(c.api_url, "http://h:1");
        assert_eq!(c.batch_size, 250);
        assert_eq!(c.state_directory, Some(PathBuf::from("/env")));
        assert_eq!(c.backoff_max, Duration::from_millis(20));
        assert!(!format!("{c:?}").contains("tok-secret"));

        for (text, want) in [
            (
                r#"{"batch_size":0}"#,
                "`batch_size` from config file c.json must be a whole number of at least 1",
            ),
            (
                r#"{"commit":"perhaps"}"#,
                "`commit` from config file c.json must be true or false",
            ),
            (
                r#"{"singer_api_backoff_ms":500,"singer_api_backoff_max_ms":100}"#,
                "must be at least singer_api_backoff_ms",
            ),
            (
                r#"{"singer_api_token":["x"]}"#,
                "`singer_api_token` from config file c.json must be a string",
            ),
        ] {
            let err = raw(text).commit_config().expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn encodings() {
        // Defaults: what loads into every target without a crash.
        let s = raw(BASE).into_settings().expect("valid");
        assert_eq!(s.encodings, Encodings::default());
        assert_eq!(s.encodings.decimal, DecimalEncoding::String);
        assert_eq!(s.encodings.binary, BinaryEncoding::Base64);
        assert_eq!(s.encodings.json, JsonEncoding::String);

        let mut r = raw(
            r#"{"host":"h","database":"d","username":"u","password":"p","decimal_encoding":"number","binary_encoding":"BASE16"}"#,
        );
        r.apply_env(vec![(
            "TAP_PLANETSCALE_JSON_ENCODING".to_string(),
            "value".to_string(),
        )]);
        let s = r.into_settings().expect("valid");
        assert_eq!(
            s.encodings,
            Encodings {
                decimal: DecimalEncoding::Number,
                binary: BinaryEncoding::Base16,
                json: JsonEncoding::Value,
            }
        );

        for (key, value, want) in [
            (
                "decimal_encoding",
                "\"float\"",
                "must be `string` or `number`",
            ),
            ("binary_encoding", "\"hex\"", "must be `base64` or `base16`"),
            ("json_encoding", "\"jsonb\"", "must be `value` or `string`"),
            ("json_encoding", "[\"value\"]", "must be a string"),
        ] {
            let text = format!(
                r#"{{"host":"h","database":"d","username":"u","password":"p","{key}":{value}}}"#
            );
            let err = raw(&text).into_settings().expect_err(&text).to_string();
            assert!(
                err.contains(&format!("`{key}` from config file c.json")) && err.contains(want),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn on_truncate_values() {
        // (value, the setting or a piece of the error)
        let cases: &[(&str, Result<OnTruncate, &str>)] = &[
            ("null", Ok(OnTruncate::Warn)),
            ("\"warn\"", Ok(OnTruncate::Warn)),
            ("\" recopy \"", Ok(OnTruncate::Recopy)),
            ("\"drop\"", Err("must be `warn` or `recopy`")),
            ("true", Err("must be a string")),
        ];
        for (value, want) in cases {
            let text = format!(
                r#"{{"host":"h","database":"d","username":"u","password":"p","on_truncate":{value}}}"#
            );
            match (raw(&text).into_settings(), want) {
                (Ok(s), Ok(w)) => assert_eq!(s.on_truncate, *w, "{value}"),
                (Err(e), Err(w)) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("`on_truncate` from config file c.json") && e.contains(w),
                        "{value}: {e}"
                    );
                }
                (got, _) => panic!("{value}: {got:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_collected() {
        let r = raw(r#"{"host":"h","database":"d","username":"u","password":"p","pasword":"x"}"#);
        assert_eq!(r.unknown.len(), 1);
        assert_eq!(r.unknown[0].0, "pasword");
    }

    #[test]
    fn endpoint_parsing() {
        type Case<'a> = (&'a str, Result<(&'a str, u16), ()>);
        let cases: &[Case] = &[
            ("h", Ok(("h", 9))),
            ("h:1", Ok(("h", 1))),
            ("[::1]", Ok(("::1", 9))),
            ("[::1]:5", Ok(("::1", 5))),
            ("aws.connect.psdb.cloud", Ok(("aws.connect.psdb.cloud", 9))),
            ("h:", Err(())),
            (":5", Err(())),
            ("h:0", Err(())),
            ("h:99999", Err(())),
            ("::1", Err(())),
            ("http://h", Err(())),
            ("", Err(())),
        ];
        for (text, want) in cases {
            let got = parse_endpoint(text, 9)
                .map(|e| (e.host, e.port))
                .map_err(|_| ());
            let want = want.map(|(h, p)| (h.to_string(), p));
            assert_eq!(got, want, "{text}");
        }
    }

    /// The README is what people follow: its config table and its
    /// `meltano.yml` must name every setting there is.
    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../README.md");
        for st in SETTINGS {
            assert!(
                readme.contains(&format!("| `{}` |", st.name)),
                "README config table lacks `{}`",
                st.name
            );
            assert!(
                readme.contains(&format!("- {{name: {}", st.name)),
                "README meltano.yml lacks `{}`",
                st.name
            );
        }
    }
}
