//! Generates the gRPC server (and a client for the drain benchmark) from the
//! same protos the tap uses.
//!
//! One change, wire-identical: a row change's `QueryResult` (`UpdatedRow`'s
//! `before`/`after`, `DeletedRow`'s `result`) is generated as `bytes`. A
//! length-delimited message and a length-delimited byte string look the
//! same on the wire, and the Connect API repeats every field description on
//! every row change; as bytes, the emulator encodes the field descriptions
//! once per stream and appends each row, instead of cloning and re-encoding
//! ten `Field`s per change. Clients, the tap included, decode messages.

use std::path::Path;

/// (message, member) pairs served as pre-encoded bytes.
const PRE_ENCODED: &[(&str, &str)] = &[
    ("UpdatedRow", "before"),
    ("UpdatedRow", "after"),
    ("DeletedRow", "result"),
];

/// VStream members served as `bytes` (the same wire as `string`): a copy
/// sends every row as its own ROW event naming its keyspace, shard and
/// table again, and as `String`s that was five allocations and copies per
/// row; as `Bytes` each is a shared slice of one the stream holds.
const VSTREAM_BYTES: &[(&str, &str)] = &[
    ("VEvent", "keyspace"),
    ("VEvent", "shard"),
    ("RowEvent", "table_name"),
    ("RowEvent", "keyspace"),
    ("RowEvent", "shard"),
];

/// A VStream response's events, served pre-encoded: a copy sends one ROW
/// event per row, four messages deep, and prost measures each nested
/// message again at every level it is written at; `vstream::copy_rows`
/// writes a copied row's event in one pass instead (a quarter of the
/// emulator's CPU in a VStream copy went to building and encoding them).
const VSTREAM_PRE_ENCODED: &[(&str, &str)] = &[("VStreamResponse", "events")];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../proto");
    let out = Path::new(&std::env::var("OUT_DIR")?).join("server-proto");
    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir("../proto")? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("proto") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path)?;
        match path.file_name().and_then(|n| n.to_str()) {
            Some("psdbconnect.proto") => text = as_bytes(&text, PRE_ENCODED),
            Some("binlogdata.proto") => text = as_bytes(&text, VSTREAM_BYTES),
            Some("vtgate.proto") => text = as_bytes(&text, VSTREAM_PRE_ENCODED),
            _ => {}
        }
        if let Some(name) = path.file_name() {
            std::fs::write(out.join(name), text)?;
        }
    }
    let mut config = tonic_prost_build::configure();
    // Row cells as `Bytes`: decoding then slices the receive buffer instead
    // of copying every row (the drain benchmark's client is this code).
    config = config.bytes(".query.Row.values");
    for (message, member) in PRE_ENCODED {
        config = config.bytes(format!(".psdbconnect.v1alpha1.{message}.{member}"));
    }
    for (message, member) in VSTREAM_BYTES {
        config = config.bytes(format!(".binlogdata.{message}.{member}"));
    }
    for (message, member) in VSTREAM_PRE_ENCODED {
        config = config.bytes(format!(".vtgate.{message}.{member}"));
    }
    config.compile_protos(
        &[
            out.join("psdbconnect.proto"),
            out.join("vtgateservice.proto"),
        ],
        &[out],
    )?;
    Ok(())
}

/// Retypes the named message members (`query.QueryResult x = N;`, or
/// `repeated binlogdata.VEvent x = N;`) as bytes.
fn as_bytes(proto: &str, members: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(proto.len());
    let mut message = "";
    for line in proto.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("message ") {
            message = rest.split_whitespace().next().unwrap_or_default();
        } else if t == "}" {
            message = "";
        }
        let mut words = t.split_whitespace().skip_while(|w| *w == "repeated");
        let (ty, name) = (words.next(), words.next());
        match (ty, name) {
            (Some(ty), Some(name)) if ty != "message" && members.contains(&(message, name)) => {
                out.push_str(&line.replacen(ty, "bytes", 1));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
