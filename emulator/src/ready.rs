//! The binary's ready-file contract: JSON written atomically (temp file +
//! rename) once both fronts serve, so scripts can poll for the file and then
//! read every address from it.
//!
//! ```json
//! {"grpc_addr": "127.0.0.1:PORT", "mysql_addr": "127.0.0.1:PORT",
//!  "ca_file": "/path/ca.pem" | null, "keyspace": "ks",
//!  "shards": {"-80": {"database": "ks__80"}, "80-": {"database": "ks_80_"}},
//!  "mariadb_url": "mysql://..." (only with --start-mariadb),
//!  "tap_config": {...}}
//! ```

use std::path::Path;

use crate::emulator::Emulator;

/// The ready-file document for a running emulator.
pub fn document(emu: &Emulator, mariadb_url: Option<&str>) -> serde_json::Value {
    let mut shards = serde_json::Map::new();
    for (shard, db) in emu.shard_databases() {
        shards.insert(shard.clone(), serde_json::json!({ "database": db }));
    }
    let mut doc = serde_json::json!({
        "grpc_addr": emu.grpc_addr().to_string(),
        "mysql_addr": emu.mysql_addr().to_string(),
        "ca_file": emu.ca_file().map(|p| p.display().to_string()),
        "keyspace": emu.keyspace(),
        "shards": shards,
        "tap_config": emu.tap_config(),
    });
    if let (Some(url), Some(obj)) = (mariadb_url, doc.as_object_mut()) {
        obj.insert(
            "mariadb_url".into(),
            serde_json::Value::String(url.to_string()),
        );
    }
    doc
}

/// Writes `doc` to `path` atomically.
pub fn write(path: &Path, doc: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
