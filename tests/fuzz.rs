//! Property-based fuzzing of everything that decodes outside input: saved
//! cursors and states, Vitess rows, cell conversion, catalogs and configs.
//! None of them may panic, whatever the bytes.
//!
//! Bounded in CI (`FUZZ_CASES`, default 2,000 per target); run longer by
//! hand, e.g. `FUZZ_CASES=1000000 cargo test --test integration fuzz::`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

use tap_planetscale::catalog::Catalog;
use tap_planetscale::config::{Origin, RawConfig};
use tap_planetscale::convert::{write_cell, PropertySpec, RecordPlan, Target, Warnings};
use tap_planetscale::pb::query::{Field, Row, Type};
use tap_planetscale::position::Position;
use tap_planetscale::state::{decode_cursor, State};

fn runner() -> TestRunner {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

const TYPES: &[Type] = &[
    Type::Int8,
    Type::Uint8,
    Type::Int16,
    Type::Uint16,
    Type::Int24,
    Type::Uint24,
    Type::Int32,
    Type::Uint32,
    Type::Int64,
    Type::Uint64,
    Type::Float32,
    Type::Float64,
    Type::Timestamp,
    Type::Date,
    Type::Time,
    Type::Datetime,
    Type::Year,
    Type::Decimal,
    Type::Text,
    Type::Blob,
    Type::Varchar,
    Type::Varbinary,
    Type::Char,
    Type::Binary,
    Type::Bit,
    Type::Enum,
    Type::Set,
    Type::Geometry,
    Type::Json,
];
const TARGETS: &[Target] = &[
    Target::Integer,
    Target::Number,
    Target::Boolean,
    Target::Text,
    Target::Date,
    Target::DateTime,
    Target::Base64,
    Target::Json,
];

/// Bytes that look like cell text often enough to reach deep paths.
fn cell_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,3})?".prop_map(String::into_bytes),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?)?"
            .prop_map(String::into_bytes),
        "[\\[\\]{}\",:a-z0-9 \\n]{0,40}".prop_map(String::into_bytes),
    ]
}

#[test]
fn fuzz_cell_conversion() {
    let members = vec!["a".to_string(), "b".to_string(), "1".to_string()];
    runner()
        .run(
            &(0..TYPES.len(), 0..TARGETS.len(), cell_text(), any::<bool>()),
            |(t, g, text, with_members)| {
                let mut out = Vec::new();
                let m: &[String] = if with_members { &members } else { &[] };
                if write_cell(&mut out, TYPES[t], TARGETS[g], m, &text).is_ok() {
                    // whatever was written must be one syntactically valid JSON
                    // value (numbers beyond f64 are valid JSON, if unusual)
                    let parsed: Result<serde::de::IgnoredAny, _> = serde_json::from_slice(&out);
                    prop_assert!(
                        parsed.is_ok(),
                        "invalid JSON {:?} for {:?}",
                        String::from_utf8_lossy(&out),
                        text
                    );
                } else {
                    prop_assert!(out.is_empty());
                }
                Ok(())
            },
        )
        .expect("cell conversion never panics and writes valid JSON");
}

#[test]
fn fuzz_row_decoding() {
    let fields: Vec<Field> = ["a", "b", "c"]
        .iter()
        .zip([Type::Int64, Type::Varchar, Type::Json])
        .map(|(n, t)| Field {
            name: n.to_string().into(),
            r#type: t as i32,
            ..Default::default()
        })
        .collect();
    let props = vec![
        PropertySpec {
            name: "a".into(),
            target: Target::Integer,
            members: vec![],
            charset: None,
        },
        PropertySpec {
            name: "b".into(),
            target: Target::Text,
            members: vec![],
            charset: None,
        },
        PropertySpec {
            name: "c".into(),
            target: Target::Json,
            members: vec![],
            charset: None,
        },
    ];
    let plan = RecordPlan::new(&fields, &props);
    runner()
        .run(
            &(
                proptest::collection::vec(any::<i64>(), 0..5),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            |(lengths, values)| {
                let row = Row::new(&lengths, values.into());
                check_record(&plan, &props, &row)
            },
        )
        .expect("row decoding never panics");
    // Packed lengths of any bytes, well-formed varints or not: the lengths
    // are checked only as the cells are read.
    runner()
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..12),
                proptest::collection::vec(any::<u8>(), 0..16),
            ),
            |(packed, values)| {
                let mut wire = vec![0x0a, packed.len() as u8];
                wire.extend_from_slice(&packed);
                wire.extend_from_slice(&[0x12, values.len() as u8]);
                wire.extend_from_slice(&values);
                let row = Row::decode(&wire[..]).expect("a whole message decodes");
                check_record(&plan, &props, &row)
            },
        )
        .expect("rows of any packed lengths never panic");
}

/// A record written from `row` is valid JSON; a refused one leaves the
/// output as it was.
fn check_record(
    plan: &RecordPlan,
    props: &[PropertySpec],
    row: &Row,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut out = b"before".to_vec();
    match plan.write_record(&mut out, row, props, &[], &mut Warnings::default()) {
        Ok(()) => {
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&out[6..]).is_ok());
        }
        Err(_) => prop_assert_eq!(&out[..], b"before"),
    }
    Ok(())
}

#[test]
fn fuzz_cursor_and_state_decoding() {
    runner()
        .run(&proptest::collection::vec(any::<u8>(), 0..80), |bytes| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let _ = decode_cursor(&b64);
            let _ = decode_cursor(&String::from_utf8_lossy(&bytes));
            let text = format!(
                "{{\"bookmarks\":{{\"t\":{{\"shards\":{{\"-\":{{\"cursor\":\"{b64}\"}}}}}}}}}}"
            );
            let _ = State::from_text(&text, "fuzz");
            let _ = State::from_text(&String::from_utf8_lossy(&bytes), "fuzz");
            Ok(())
        })
        .expect("state decoding never panics");
}

#[test]
fn fuzz_positions() {
    runner()
        .run(
            &"(MySQL56/)?([0-9a-fA-F-]{0,40}(:[0-9]{0,22}(-[0-9]{0,22})?){0,3},?){0,3}",
            |text| {
                if let Ok(p) = Position::parse(&text) {
                    // printing and parsing again gives the same set
                    let again = Position::parse(&p.to_string()).expect("a printed position parses");
                    prop_assert!(again.equal(&p));
                    prop_assert!(p.at_least(&p));
                }
                Ok(())
            },
        )
        .expect("position parsing never panics");
}

#[test]
fn fuzz_catalog_and_config() {
    let json_ish = "[\\[\\]{}\",:a-z0-9_ -]{0,80}";
    runner()
        .run(&json_ish, |text| {
            if let Ok(c) = Catalog::from_text(&text, "fuzz") {
                let _ = c.selected();
            }
            let mut raw = RawConfig::default();
            if raw.merge_text(&text, Origin::File("fuzz".into())).is_ok() {
                let _ = raw.into_settings();
            }
            Ok(())
        })
        .expect("catalog and config parsing never panic");
    // structured catalogs with random metadata
    runner()
        .run(&(any::<bool>(), any::<bool>(), "[A-Z_]{0,12}", "[a-z]{0,3}"), |(sel, pin, method, prop)| {
            let text = serde_json::json!({"streams": [{"tap_stream_id": "k:t", "stream": "t", "schema": {"properties": {"id": {"type": "integer"}}},
                "metadata": [{"breadcrumb": [], "metadata": {"selected": sel, "replication-method": method, "table-key-properties": if pin { vec!["id"] } else { vec![] }}},
                             {"breadcrumb": ["properties", prop], "metadata": {"selected": true}}]}]})
            .to_string();
            if let Ok(c) = Catalog::from_text(&text, "fuzz") {
                let _ = c.selected();
            }
            Ok(())
        })
        .expect("structured catalogs never panic");
}
