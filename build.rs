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
//! on the wire without allocating. Field numbers are untouched, so the wire
//! is the same.

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

/// A copy over VStream sends every row as its own ROW event (vttablet's
/// `sendEventsForRows`), each naming its keyspace, shard and table again:
/// as `String`s that is five allocations and UTF-8 checks per row. These
/// members are read as `bytes` (the same wire: both are length-delimited),
/// sliced from the receive buffer.
const BYTES_NOT_TEXT: &[&str] = &[
    ".binlogdata.VEvent.keyspace",
    ".binlogdata.VEvent.shard",
    // The Connect API repeats every column's field with every row change:
    // a name as `String` was an allocation per column per change.
    ".query.Field.name",
];

/// The VStream event members the tap reads; the rest are skipped on the
/// wire. Journals (resharding) are not followed. A `RowChange`'s bitmaps
/// stay: they mark a partial row image, which the tap must refuse.
/// (`RowEvent` is decoded by hand, `src/wire/row_event.rs`, and skips its
/// own keyspace and shard there.)
fn vstream_events(proto: &str) -> String {
    let text = trim_message(
        proto,
        "RowChange",
        &["before", "after", "data_columns", "json_partial_values"],
    );
    let text = trim_message(
        &text,
        "VEvent",
        &[
            "type",
            "statement",
            "row_event",
            "field_event",
            "vgtid",
            "last_p_k_event",
            "keyspace",
            "shard",
        ],
    );
    as_bytes(&text, "VEvent", &["keyspace", "shard"])
}

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
            Some("query.proto") => as_bytes(
                &trim_message(&text, "Field", FIELD_MEMBERS_KEPT),
                "Field",
                &["name"],
            ),
            // An update's before-image is read: its key, compared with the
            // after-image's, tells an update in place from a row moved to a
            // new key (a delete of the old key first).
            Some("binlogdata.proto") => vstream_events(&text),
            _ => text,
        };
        if let Some(name) = path.file_name() {
            std::fs::write(out.join(name), text)?;
        }
    }
    let builder = tonic_prost_build::configure()
        .build_server(false)
        // Messages decode from one slice (see `src/psdb/codec.rs`).
        .codec_path("crate::psdb::codec::Codec")
        // Rows are decoded by hand (see `src/wire/row.rs`): no allocation
        // per row, cells left as slices of the receive buffer.
        .extern_path(".query.Row", "crate::wire::row::Row")
        // Field lists that repeat are compared, not decoded (see
        // `src/wire/query_result.rs`).
        .extern_path(
            ".query.QueryResult",
            "crate::wire::query_result::QueryResult",
        )
        // The event vector sized once (see `src/wire/vstream_response.rs`).
        .extern_path(
            ".vtgate.VStreamResponse",
            "crate::wire::vstream_response::VStreamResponse",
        )
        // A ROW event's row change held inline (see `src/wire/row_event.rs`).
        .extern_path(".binlogdata.RowEvent", "crate::wire::row_event::RowEvent")
        // Rare members boxed: a response holds a vector of events, mostly
        // ROW events, which then take a third of the room; a row change
        // held inline carries its rare partial-image bitmaps the same way.
        .boxed(".binlogdata.RowChange.data_columns")
        .boxed(".binlogdata.RowChange.json_partial_values")
        .boxed(".binlogdata.VEvent.field_event")
        .boxed(".binlogdata.VEvent.last_p_k_event")
        .boxed(".binlogdata.VEvent.vgtid");
    BYTES_NOT_TEXT
        .iter()
        .fold(builder, |b, path| b.bytes(path))
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
/// one-line members (`[repeated] type name = N;`) are expected there.
fn trim_message(proto: &str, message: &str, keep: &[&str]) -> String {
    edit_members(proto, message, |member| {
        keep.contains(&member_name(member))
            .then(|| member.to_string())
    })
}

/// Declares the `string` members of `message` named in `members` as
/// `bytes` (see [`BYTES_NOT_TEXT`]).
fn as_bytes(proto: &str, message: &str, members: &[&str]) -> String {
    edit_members(proto, message, |member| {
        Some(
            if member.starts_with("string ") && members.contains(&member_name(member)) {
                member.replacen("string ", "bytes ", 1)
            } else {
                member.to_string()
            },
        )
    })
}

/// Rewrites each member line of `message` (trimmed) with `edit`, which
/// returns the new line or `None` to drop it; other lines stay as they are.
fn edit_members(proto: &str, message: &str, edit: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(proto.len());
    let mut inside = false;
    for line in proto.lines() {
        let t = line.trim();
        if t.starts_with(&format!("message {message} ")) {
            inside = true;
        } else if inside && t == "}" {
            inside = false;
        } else if inside && t.ends_with(';') && !t.starts_with("//") {
            match edit(t) {
                Some(member) => out.push_str(&format!("  {member}")),
                None => continue,
            }
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The name of a one-line member (`[repeated] type name = N;`).
fn member_name(line: &str) -> &str {
    let before_number = line.split('=').next().unwrap_or_default();
    before_number.split_whitespace().last().unwrap_or_default()
}
