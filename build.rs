//! Generates the gRPC clients for the Connect API and vtgate's VStream from
//! our own minimal protos.
//! `protoc-bin-vendored` supplies protoc, so a fresh machine needs none.
//!
//! The protos in `proto/` describe the wire as servers send it, and the
//! emulator serves every field of them. The tap needs only part of each
//! `query.Field`, yet prost would allocate a `String` for every string
//! member of every field of every row change (the Connect API repeats the
//! fields on each change). So the client is generated from a copy of the
//! protos without the string members it never reads: prost then skips them
//! on the wire without allocating; the same goes for an update's
//! before-image. Field numbers are untouched, so the wire is the same.

use std::path::Path;

/// `query.Field` members the tap keeps: the ones it reads, and the numeric
/// ones, which cost nothing to decode and travel back to the server in a
/// copy's `last_known_pk`. The strings (`table`, `org_table`, `database`,
/// `org_name`, `column_type`) are skipped on the wire.
const FIELD_MEMBERS_KEPT: &[&str] = &[
    "name",
    "type",
    "column_length",
    "charset",
    "decimals",
    "flags",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    let out = Path::new(&std::env::var("OUT_DIR")?).join("client-proto");
    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir("proto")? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("proto") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let text = match path.file_name().and_then(|n| n.to_str()) {
            Some("query.proto") => trim_message(&text, "Field", FIELD_MEMBERS_KEPT),
            // An update's before-image is never read (records carry the
            // after-image): skipped on the wire as one block, it costs no
            // decoding, which halves the work of every update.
            Some("psdbconnect.proto") => trim_message(&text, "UpdatedRow", &["after"]),
            _ => text,
        };
        if let Some(name) = path.file_name() {
            std::fs::write(out.join(name), text)?;
        }
    }
    tonic_prost_build::configure()
        .build_server(false)
        // Row cells as `Bytes`: decoding slices the receive buffer instead
        // of copying every row.
        .bytes(".query.Row.values")
        .compile_protos(
            &[
                out.join("psdbconnect.proto"),
                out.join("vtgateservice.proto"),
            ],
            &[out],
        )?;
    Ok(())
}

/// Drops the members of `message` not named in `keep`. Only simple
/// one-line members (`type name = N;`) are expected there.
fn trim_message(proto: &str, message: &str, keep: &[&str]) -> String {
    let mut out = String::with_capacity(proto.len());
    let mut inside = false;
    for line in proto.lines() {
        let t = line.trim();
        if t.starts_with(&format!("message {message} ")) {
            inside = true;
        } else if inside && t == "}" {
            inside = false;
        } else if inside && t.ends_with(';') && !t.starts_with("//") {
            let name = t.split_whitespace().nth(1).unwrap_or_default();
            if !keep.contains(&name) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
