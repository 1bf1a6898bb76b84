//! Command-line behaviour that needs no server: usage errors, bad config
//! files, --about.

use serde_json::json;

use crate::support::{tap, Scratch};

#[tokio::test]
async fn bad_input_exits_2_with_one_clear_line() {
    let s = Scratch::new();
    let invalid = s.write("invalid.json", "{\"host\": ");
    let array = s.write("array.json", "[1]");
    let missing_key = s.write_json(
        "missing.json",
        &json!({"host": "h", "username": "u", "password": "p"}),
    );
    let wrong_type = s.write_json("wrong.json", &json!({"host": "h", "database": "d", "username": "u", "password": "p", "tls": "sometimes"}));
    let both = s.write_json("both.json", &json!({"host": "h", "database": "d", "username": "u", "password": "p", "use_replica": true, "use_rdonly": "true"}));
    let good = s.write_json("good.json", &json!({"host": "127.0.0.1:1", "database": "d", "username": "u", "password": "p", "tls": false}));
    let bad_catalog = s.write("catalog.json", "not json");
    let p = |p: &std::path::Path| p.to_str().expect("utf8").to_string();

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "discover".into(),
                "--config".into(),
                "/nonexistent/config.json".into(),
            ],
            "cannot read config file /nonexistent/config.json",
        ),
        (
            vec!["discover".into(), "--config".into(), p(&invalid)],
            "invalid.json is not valid JSON",
        ),
        (
            vec!["discover".into(), "--config".into(), p(&array)],
            "array.json must hold a JSON object",
        ),
        (
            vec!["discover".into(), "--config".into(), p(&missing_key)],
            "config key `database` is missing",
        ),
        (
            vec!["discover".into(), "--config".into(), p(&wrong_type)],
            "`tls` from config file",
        ),
        (
            vec!["discover".into(), "--config".into(), p(&both)],
            "`use_replica` and `use_rdonly`",
        ),
        (vec!["discover".into()], "no config given"),
        (vec!["--config".into(), p(&good)], "nothing to do"),
        (
            vec![
                "--config".into(),
                p(&good),
                "--catalog".into(),
                p(&bad_catalog),
            ],
            "catalog.json is not a valid catalog",
        ),
        (
            vec!["sync".into(), "--config".into(), p(&good)],
            "sync needs --catalog",
        ),
        (
            vec![
                "--config".into(),
                p(&good),
                "--discover".into(),
                "--use-replica".into(),
                "--use-rdonly".into(),
            ],
            "pick at most one",
        ),
    ];
    for (args, want) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = tap(&argv, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: stdout: {}", run.stdout);
        let line = run.error_line();
        assert_eq!(line.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(line.contains(want), "{args:?}: `{line}` lacks `{want}`");
    }

    // clap's own usage errors also exit 2
    for args in [
        &["--bogus"][..],
        &["--about", "--format", "yaml"],
        &["--incremental", "x", "--discover"],
    ] {
        let run = tap(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
        assert!(!run.stderr.contains("panicked"));
    }
}

#[tokio::test]
async fn about_in_each_format() {
    let run = tap(&["--about", "--format=json"], &[]).await;
    assert_eq!(run.code, 0);
    let doc = run.json();
    assert_eq!(doc["name"], "tap-planetscale");
    assert!(doc["capabilities"]
        .as_array()
        .expect("caps")
        .contains(&json!("discover")));
    assert_eq!(
        doc["settings"]["properties"]["password"]["secret"],
        json!(true)
    );
    // Both gRPC APIs are described, not only Connect (issue 16).
    let description = doc["description"].as_str().expect("description");
    assert!(description.contains("Connect"), "{description}");
    assert!(description.contains("VStream"), "{description}");

    // Meltano passes --config and --catalog along with --about
    let s = Scratch::new();
    let c = s.write("c.json", "{}");
    let run = tap(
        &[
            "--config",
            c.to_str().expect("p"),
            "--catalog",
            "/nonexistent",
            "--about",
            "--format",
            "markdown",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("# `tap-planetscale`"));
    assert!(run
        .stdout
        .contains("| Setting | Required | Default | Description |"));

    let run = tap(&["--about"], &[]).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Name: tap-planetscale"));

    let run = tap(&["--help"], &[]).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("--excluded-tables"));
}

#[tokio::test]
async fn password_never_logged() {
    let s = Scratch::new();
    let c = s.write_json("c.json", &json!({"host": "127.0.0.1:1", "database": "d", "username": "u", "password": "sup3r-s3cret-pw", "tls": false, "connect_timeout_seconds": 1}));
    let run = tap(
        &[
            "discover",
            "--config",
            c.to_str().expect("p"),
            "--log-level",
            "trace",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(!run.stderr.contains("sup3r-s3cret-pw"), "{}", run.stderr);
}
