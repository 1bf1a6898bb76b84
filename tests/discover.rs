//! `discover` against a real MariaDB server holding every MySQL type.

use serde_json::{json, Value};

use crate::support::{self, database_with, direct_config, tap, Scratch};

/// Makes a discovered catalog comparable: the database name becomes `DB`,
/// and `row-count` (an InnoDB estimate) is checked for shape and removed.
fn normalize(catalog: &Value, db: &str) -> Value {
    let mut c = support::replace_strings(catalog, db, "DB");
    for stream in c["streams"].as_array_mut().expect("streams") {
        for entry in stream["metadata"].as_array_mut().expect("metadata") {
            if entry["breadcrumb"] == json!([]) {
                let md = entry["metadata"].as_object_mut().expect("metadata object");
                if let Some(n) = md.shift_remove("row-count") {
                    assert!(n.is_u64(), "row-count is a count: {n}");
                }
            }
        }
    }
    c
}

fn expected(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expected")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("expected file is JSON")
}

/// Writes the actual output next to the expected file when asked to, so a
/// deliberate change can be reviewed as a diff.
fn check_against(name: &str, actual: &Value) {
    if std::env::var("UPDATE_EXPECTED").is_ok() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/expected")
            .join(name);
        std::fs::write(
            &path,
            serde_json::to_string_pretty(actual).expect("json") + "\n",
        )
        .expect("write");
    }
    assert_eq!(
        actual,
        &expected(name),
        "catalog differs from tests/expected/{name}"
    );
}

#[tokio::test]
async fn every_type_catalog_is_complete_and_deterministic() {
    // GIVEN a database with every MySQL type, a view, a table without a key,
    // a composite key and names that need quoting
    let db = database_with("disc", "every_type.sql").await;
    let s = Scratch::new();
    let config = s.write_json("config.json", &direct_config(&db));
    let config = config.to_str().expect("utf8 path");

    // WHEN discovering twice, with --auto-select
    let first = tap(&["discover", "--config", config, "--auto-select"], &[]).await;
    let second = tap(&["--config", config, "--discover", "--auto-select"], &[]).await;

    // THEN the whole catalog matches, and the two runs are byte-identical
    assert_eq!(first.code, 0, "stderr: {}", first.stderr);
    check_against("every_type_catalog.json", &normalize(&first.json(), &db));
    assert_eq!(
        first.stdout, second.stdout,
        "discover output is not deterministic"
    );
}

#[tokio::test]
async fn flags_shape_the_catalog() {
    let db = database_with("flags", "every_type.sql").await;
    let s = Scratch::new();
    let config = s.write_json("config.json", &direct_config(&db));
    let config = config.to_str().expect("utf8 path");

    // Go-style single-dash flags, exact-name exclusion, tinyint as boolean,
    // incremental off.
    let run = tap(
        &[
            "-config",
            config,
            "-discover",
            "-tinyint-as-boolean",
            "-incremental=false",
            "-excluded-tables",
            "no_pk,every_type_view,does_not_exist,every",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let c = run.json();
    let ids: Vec<&str> = c["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["stream"].as_str().expect("name"))
        .collect();
    assert_eq!(
        ids,
        vec!["composite_key", "every_type", "odd name `quoted`"]
    );
    let every = &c["streams"][1];
    assert_eq!(
        every["schema"]["properties"]["t_bool"],
        json!({"type": ["null", "boolean"]})
    );
    let top = &every["metadata"][0]["metadata"];
    assert!(top.get("replication-method").is_none(), "{top}");
    assert!(top.get("selected").is_none(), "{top}");
    // the unknown exclusion is a warning naming the table, not an error
    assert!(run.stderr.contains("does_not_exist"), "{}", run.stderr);
    assert!(run.stderr.contains("WARN"), "{}", run.stderr);
}

#[tokio::test]
async fn config_files_merge_and_env_overrides() {
    let db = database_with("merge", "every_type.sql").await;
    let s = Scratch::new();
    let mut base = direct_config(&db);
    base["password"] = json!("wrong");
    base["database"] = json!("nope");
    let a = s.write_json("a.json", &base);
    // Meltano style: numbers and booleans as strings, a later file wins
    let b = s.write_json("b.json", &json!({"password": support::mariadb().password(), "tls": "false", "timeout_seconds": "30"}));
    let run = tap(
        &[
            "--config",
            a.to_str().expect("p"),
            "--config",
            b.to_str().expect("p"),
            "--discover",
        ],
        &[
            ("TAP_PLANETSCALE_DATABASE", &db),
            (
                "TAP_PLANETSCALE_OPTIONS_DO_NOT_TREAT_TINY_INT_AS_BOOLEAN",
                "false",
            ),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let c = run.json();
    let every = c["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream"] == "every_type")
        .expect("every_type")
        .clone();
    assert_eq!(every["tap_stream_id"], json!(format!("{db}:every_type")));
    // airbyte's option, explicitly false, types tinyint(1) as boolean
    assert_eq!(
        every["schema"]["properties"]["t_bool"],
        json!({"type": ["null", "boolean"]})
    );
}

#[tokio::test]
async fn connection_failures_are_clear() {
    let db = database_with("conn", "every_type.sql").await;
    let s = Scratch::new();
    let maria = support::mariadb();

    // a port nobody listens on
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    // a port that accepts but never speaks
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();

    let mut refused = direct_config(&db);
    refused["host"] = json!(format!("127.0.0.1:{closed_port}"));
    let mut mute = direct_config(&db);
    mute["host"] = json!(format!("127.0.0.1:{silent_port}"));
    mute["connect_timeout_seconds"] = json!(1);
    let mut bad_pw = direct_config(&db);
    bad_pw["password"] = json!("definitely-wrong");
    let mut bad_db = direct_config(&db);
    bad_db["database"] = json!("no_such_database_here");

    let cases: Vec<(&str, serde_json::Value, Vec<String>)> = vec![
        (
            "refused",
            refused,
            vec![
                format!("127.0.0.1:{closed_port}"),
                "cannot reach MySQL".into(),
            ],
        ),
        (
            "silent",
            mute,
            vec![format!("127.0.0.1:{silent_port}"), "within 1s".into()],
        ),
        (
            "password",
            bad_pw,
            vec![format!("access denied for user {}", maria.user())],
        ),
        (
            "database",
            bad_db,
            vec!["unknown database `no_such_database_here`".into()],
        ),
    ];
    for (name, config, wants) in cases {
        let path = s.write_json(&format!("{name}.json"), &config);
        let started = std::time::Instant::now();
        let run = tap(&["discover", "--config", path.to_str().expect("p")], &[]).await;
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        assert!(
            run.stdout.is_empty(),
            "{name}: stdout must stay empty: {}",
            run.stdout
        );
        let line = run.error_line();
        assert_eq!(
            line.lines().count(),
            1,
            "{name}: one error line: {}",
            run.stderr
        );
        for want in wants {
            assert!(line.contains(&want), "{name}: `{line}` lacks `{want}`");
        }
        assert!(!run.stderr.contains("panicked"), "{name}: {}", run.stderr);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

#[tokio::test]
async fn discover_through_the_vitess_front_over_tls() {
    // GIVEN the emulator's vtgate-like MySQL front with TLS and a private CA
    let emu = crate::support::Emu::start(
        "tlsdisc",
        &["-80", "80-"],
        true,
        &[
            ("-80", support::fixture("every_type.sql")),
            ("80-", String::new()),
        ],
    )
    .await;

    // WHEN discovering through it (database `tlsdisc@primary` under TLS)
    let run = tap(
        &["discover", "--config", emu.config(), "--auto-select"],
        &[],
    )
    .await;

    // THEN the whole catalog matches: MySQL 8 column types (no display
    // widths) and the JSON column typed `json`, as PlanetScale reports them
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = normalize(&run.json(), "tlsdisc");
    check_against("every_type_catalog_vitess.json", &got);
    let every = got["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream"] == "every_type")
        .expect("every_type");
    // The vitess front reports JSON columns as `json` (MariaDB itself says
    // longtext): the default json_encoding makes them text.
    assert_eq!(
        every["metadata"]
            .as_array()
            .expect("metadata")
            .iter()
            .find(|m| m["breadcrumb"] == json!(["properties", "t_json"]))
            .map(|m| &m["metadata"]["sql-datatype"]),
        Some(&json!("json"))
    );
    assert_eq!(
        every["schema"]["properties"]["t_json"]["type"],
        json!(["null", "string"])
    );

    // AND a CA that did not sign the server's certificate fails clearly
    let s = Scratch::new();
    let other = psdb_emulator::tls::Certificates::generate(s.dir.path()).expect("another CA");
    let ca = other.ca_file;
    let mut cfg = emu.emu.tap_config();
    cfg["tls_ca_file"] = json!(ca.to_str().expect("p"));
    let path = s.write_json("bad-ca.json", &cfg);
    let run = tap(&["discover", "--config", path.to_str().expect("p")], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.error_line().contains("TLS to MySQL"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}
