//! The bad-input corpus: every case must exit 2 with one clear error line
//! naming the problem, print nothing on stdout, and never panic.

use serde_json::{json, Value};

use crate::support::{tap, Emu, Scratch};

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Text the error line must contain.
    want: String,
}

fn case(name: &'static str, args: &[&str], want: &str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        want: want.to_string(),
    }
}

#[tokio::test]
async fn bad_input_corpus() {
    // A live keyspace for the cases that only a server can judge.
    let emu = Emu::start(
        "corpus",
        &["-80", "80-"],
        false,
        &[
            ("-80", "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO items VALUES (1, 'a');".into()),
            ("80-", "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO items VALUES (2, 'b');".into()),
        ],
    )
    .await;
    let s = Scratch::new();
    let good_config = emu.config().to_string();
    let catalog_path = emu.catalog(&[]).await;
    let good_catalog = catalog_path.to_str().expect("p").to_string();
    let catalog: Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog_path).expect("c")).expect("json");
    let base: Value = emu.emu.tap_config();
    let cfg = |name: &str, edit: &dyn Fn(&mut Value)| -> String {
        let mut c = base.clone();
        edit(&mut c);
        s.write_json(name, &c).to_str().expect("p").to_string()
    };
    let raw =
        |name: &str, text: &str| -> String { s.write(name, text).to_str().expect("p").to_string() };
    let cat = |name: &str, edit: &dyn Fn(&mut Value)| -> String {
        let mut c = catalog.clone();
        edit(&mut c);
        s.write_json(name, &c).to_str().expect("p").to_string()
    };
    let first = emu.sync(&catalog_path, None).await.ok();
    let state = first.last_state();
    let cursor = state["bookmarks"]["items"]["shards"]["-80"]["cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let st = |name: &str, v: Value| -> String {
        s.write_json(name, &v).to_str().expect("p").to_string()
    };
    let sync = |config: &str, catalog: &str, state: Option<&str>| -> Vec<String> {
        let mut a = vec![
            "sync".to_string(),
            "--config".into(),
            config.into(),
            "--catalog".into(),
            catalog.into(),
        ];
        if let Some(p) = state {
            a.push("--state".into());
            a.push(p.into());
        }
        a
    };
    let disc =
        |config: &str| -> Vec<String> { vec!["discover".into(), "--config".into(), config.into()] };
    let c = |name: &'static str, args: Vec<String>, want: &str| Case {
        name,
        args,
        env: Vec::new(),
        want: want.into(),
    };

    let mut cases: Vec<Case> = vec![
        // --- configs
        c(
            "config missing file",
            disc("/nonexistent/cfg.json"),
            "cannot read config file /nonexistent/cfg.json",
        ),
        c(
            "config not JSON",
            disc(&raw("c1.json", "{host:")),
            "c1.json is not valid JSON",
        ),
        c(
            "config truncated",
            disc(&raw("c2.json", "{\"host\": \"h\",")),
            "c2.json is not valid JSON",
        ),
        c(
            "config is an array",
            disc(&raw("c3.json", "[]")),
            "must hold a JSON object",
        ),
        c(
            "config is a string",
            disc(&raw("c4.json", "\"host\"")),
            "must hold a JSON object",
        ),
        c(
            "config missing host",
            disc(&cfg("c5.json", &|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("host");
                    o.remove("mysql_host");
                }
            })),
            "`host` is missing",
        ),
        c(
            "config missing database",
            disc(&cfg("c6.json", &|c| {
                c.as_object_mut().map(|o| o.remove("database"));
            })),
            "`database` is missing",
        ),
        c(
            "config missing username",
            disc(&cfg("c7.json", &|c| {
                c.as_object_mut().map(|o| o.remove("username"));
            })),
            "`username` is missing",
        ),
        c(
            "config missing password",
            disc(&cfg("c8.json", &|c| {
                c.as_object_mut().map(|o| o.remove("password"));
            })),
            "`password` is missing",
        ),
        c(
            "config empty database",
            disc(&cfg("c9.json", &|c| c["database"] = json!(""))),
            "`database` from config file",
        ),
        c(
            "config database wrong type",
            disc(&cfg("c10.json", &|c| c["database"] = json!({"a": 1}))),
            "must be a string, got an object",
        ),
        c(
            "config tls not boolean",
            disc(&cfg("c11.json", &|c| c["tls"] = json!("perhaps"))),
            "`tls` from config file",
        ),
        c(
            "config timeout negative",
            disc(&cfg("c12.json", &|c| c["timeout_seconds"] = json!(-5))),
            "`timeout_seconds`",
        ),
        c(
            "config timeout text",
            disc(&cfg("c13.json", &|c| c["timeout_seconds"] = json!("ten"))),
            "`timeout_seconds`",
        ),
        c(
            "config max_retries float",
            disc(&cfg("c14.json", &|c| c["max_retries"] = json!(1.5))),
            "`max_retries`",
        ),
        c(
            "config bad host",
            disc(&cfg("c15.json", &|c| c["mysql_host"] = json!("h:notaport"))),
            "`mysql_host`",
        ),
        c(
            "config both tablet types",
            disc(&cfg("c16.json", &|c| {
                c["use_replica"] = json!(true);
                c["use_rdonly"] = json!("true");
            })),
            "use_rdonly",
        ),
        c(
            "config bad starting_gtids JSON",
            disc(&cfg("c17.json", &|c| {
                c["starting_gtids"] = json!("{not json")
            })),
            "`starting_gtids`",
        ),
        c(
            "config bad starting_gtids shape",
            disc(&cfg("c18.json", &|c| {
                c["starting_gtids"] = json!({"corpus": "MySQL56/x"})
            })),
            "`starting_gtids`",
        ),
        c(
            "config bad starting_gtids position",
            disc(&cfg("c19.json", &|c| {
                c["starting_gtids"] = json!({"corpus": {"-80": "MySQL56/nope:1-2"}})
            })),
            "invalid position for corpus/-80",
        ),
        c(
            "config unreadable CA",
            disc(&cfg("c20.json", &|c| {
                c["tls_ca_file"] = json!("/nonexistent/ca.pem")
            })),
            "`tls_ca_file`",
        ),
        c(
            "config shards wrong type",
            disc(&cfg("c21.json", &|c| c["shards"] = json!(80))),
            "`shards`",
        ),
        c(
            "config unknown shard",
            sync(
                &cfg("c22.json", &|c| c["shards"] = json!("-80,c0-")),
                &good_catalog,
                None,
            ),
            "shard `c0-` is not in keyspace `corpus`",
        ),
        c(
            "config wrong password",
            disc(&cfg("c23.json", &|c| c["password"] = json!("nope"))),
            "access denied for user emu",
        ),
        c(
            "config unknown database",
            disc(&cfg("c24.json", &|c| c["database"] = json!("nosuchks"))),
            "nosuchks",
        ),
        // --- catalogs
        c(
            "catalog missing file",
            sync(&good_config, "/nonexistent/k.json", None),
            "cannot read catalog file /nonexistent/k.json",
        ),
        c(
            "catalog not JSON",
            sync(&good_config, &raw("k1.json", "streams: []"), None),
            "k1.json is not a valid catalog",
        ),
        c(
            "catalog empty",
            sync(&good_config, &raw("k2.json", ""), None),
            "k2.json is not a valid catalog",
        ),
        c(
            "catalog no streams key",
            sync(&good_config, &raw("k3.json", "{}"), None),
            "k3.json is not a valid catalog",
        ),
        c(
            "catalog no streams",
            sync(&good_config, &raw("k4.json", "{\"streams\": []}"), None),
            "k4.json has no streams",
        ),
        c(
            "catalog streams not a list",
            sync(&good_config, &raw("k5.json", "{\"streams\": {}}"), None),
            "k5.json is not a valid catalog",
        ),
        c(
            "catalog selected stream missing",
            sync(
                &good_config,
                &cat("k6.json", &|c| {
                    c["streams"][0]["table_name"] = json!("ghost");
                    c["streams"][0]["stream"] = json!("ghost");
                }),
                None,
            ),
            "selects table `ghost`, which is not in keyspace `corpus`",
        ),
        c(
            "catalog selected property missing",
            sync(
                &good_config,
                &cat("k7.json", &|c| {
                    c["streams"][0]["metadata"].as_array_mut().expect("md").push(json!({"breadcrumb": ["properties", "ghost"], "metadata": {"selected": true}}));
                }),
                None,
            ),
            "selects property `ghost`",
        ),
        c(
            "catalog bad replication method",
            sync(
                &good_config,
                &cat("k8.json", &|c| {
                    c["streams"][0]["metadata"][0]["metadata"]["replication-method"] = json!("CDC");
                }),
                None,
            ),
            "replication method \"CDC\"",
        ),
        c(
            "catalog bad key property",
            sync(
                &good_config,
                &cat("k9.json", &|c| {
                    c["streams"][0]["metadata"][0]["metadata"]["table-key-properties"] =
                        json!(["ghost"]);
                }),
                None,
            ),
            "key property `ghost`",
        ),
        c(
            "catalog metadata not a list",
            sync(
                &good_config,
                &cat("k10.json", &|c| {
                    c["streams"][0]["metadata"] = json!({"a": 1});
                }),
                None,
            ),
            "is not a valid catalog",
        ),
        // --- states
        c(
            "state is a directory",
            sync(&good_config, &good_catalog, Some("/tmp")),
            "cannot read state file /tmp",
        ),
        c(
            "state not JSON",
            sync(
                &good_config,
                &good_catalog,
                Some(&raw("s1.json", "{bookmarks")),
            ),
            "s1.json is not valid JSON",
        ),
        c(
            "state wrong shape",
            sync(
                &good_config,
                &good_catalog,
                Some(&raw("s2.json", "{\"streams\": 1}")),
            ),
            "no `bookmarks` object",
        ),
        c(
            "state bookmarks a list",
            sync(
                &good_config,
                &good_catalog,
                Some(&raw("s3.json", "{\"bookmarks\": []}")),
            ),
            "no `bookmarks` object",
        ),
        c(
            "state bad base64",
            sync(
                &good_config,
                &good_catalog,
                Some(&st(
                    "s4.json",
                    json!({"bookmarks": {"items": {"shards": {"-80": {"cursor": "%%%not-base64"}}}}}),
                )),
            ),
            "cursor that is not base64",
        ),
        c(
            "state not a TableCursor",
            sync(
                &good_config,
                &good_catalog,
                Some(&st(
                    "s5.json",
                    json!({"bookmarks": {"items": {"shards": {"-80": {"cursor": "//////////8="}}}}}),
                )),
            ),
            "not a protobuf TableCursor",
        ),
        c(
            "state cursor not a string",
            sync(
                &good_config,
                &good_catalog,
                Some(&st(
                    "s6.json",
                    json!({"bookmarks": {"items": {"shards": {"-80": {"cursor": 5}}}}}),
                )),
            ),
            "s6.json is not valid JSON",
        ),
        c(
            "state other keyspace",
            sync(
                &good_config,
                &good_catalog,
                Some(&st(
                    "s7.json",
                    json!({"bookmarks": {"items": {"shards": {"-80": {"cursor": "CgEtEhBpbXBvcnQtb24tc2NhbGVy"}}}}}),
                )),
            ),
            "belongs to keyspace `import-on-scaler`, not `corpus`",
        ),
        c(
            "state shard gone",
            sync(
                &good_config,
                &good_catalog,
                Some(&st(
                    "s8.json",
                    json!({"bookmarks": {"items": {"shards": {"-80": {"cursor": cursor}, "-40": {"cursor": cursor}}}}}),
                )),
            ),
            "shard `-40`, which keyspace `corpus` no longer has",
        ),
        // --- CLI misuse
        c(
            "cli nothing to do",
            vec!["--config".into(), good_config.clone()],
            "nothing to do",
        ),
        c(
            "cli sync without catalog",
            vec!["sync".into(), "--config".into(), good_config.clone()],
            "sync needs --catalog",
        ),
        c("cli no config", vec!["discover".into()], "no config given"),
        c(
            "cli both tablet flags",
            vec![
                "--config".into(),
                good_config.clone(),
                "--discover".into(),
                "--use-replica".into(),
                "--use-rdonly".into(),
            ],
            "pick at most one",
        ),
    ];
    // clap's own misuse errors: one line naming the flag
    for (name, args, want) in [
        ("cli unknown flag", vec!["--frobnicate"], "--frobnicate"),
        (
            "cli flag without value",
            vec!["discover", "--config"],
            "--config",
        ),
        (
            "cli bad about format",
            vec!["--about", "--format", "yaml"],
            "yaml",
        ),
        (
            "cli bad boolean",
            vec!["discover", "--incremental=maybe"],
            "maybe",
        ),
        ("cli unknown subcommand", vec!["upload"], "upload"),
        (
            "cli commit mode without a token",
            vec![
                "--config",
                good_config.as_str(),
                "--catalog",
                "/nonexistent.json",
                "--commit",
            ],
            "--singer-api-token",
        ),
        (
            "cli commit mode without a state directory",
            vec![
                "--config",
                good_config.as_str(),
                "--catalog",
                "/nonexistent.json",
                "--commit",
                "--singer-api-token",
                "t",
            ],
            "--state-directory",
        ),
        (
            "cli relay with a bad URL",
            vec![
                "relay",
                "--singer-api-token",
                "t",
                "--state-directory",
                "/nonexistent/st",
                "--singer-api-url",
                "api.stitchdata.com",
            ],
            "must start with http:// or https://",
        ),
    ] {
        cases.push(case(name, &args, want));
    }
    // an environment override with a bad value names the variable
    cases.push(Case {
        name: "env bad batch size",
        args: [
            "relay",
            "--singer-api-token",
            "t",
            "--state-directory",
            "/nonexistent/st",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: vec![("TAP_PLANETSCALE_BATCH_SIZE", "0".into())],
        want: "environment variable TAP_PLANETSCALE_BATCH_SIZE".into(),
    });
    cases.push(Case {
        name: "env bad timeout",
        args: disc(&good_config),
        env: vec![("TAP_PLANETSCALE_TIMEOUT_SECONDS", "soon".into())],
        want: "environment variable TAP_PLANETSCALE_TIMEOUT_SECONDS".into(),
    });

    assert!(cases.len() >= 40, "corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = case.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = tap(&args, &env).await;
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("tap-planetscale: error:") || l.starts_with("error:"))
            .collect();
        let problem = if run.code != 2 {
            Some(format!("exit {} (want 2)", run.code))
        } else if !run.stdout.is_empty() {
            Some(format!(
                "stdout not empty: {}",
                &run.stdout[..run.stdout.len().min(200)]
            ))
        } else if run.stderr.contains("panicked") {
            Some("panicked".into())
        } else if errors.len() != 1 {
            Some(format!("{} error lines", errors.len()))
        } else if !errors[0].contains(&case.want) {
            Some(format!("error line lacks `{}`", case.want))
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{}: {p}\n  stderr: {}",
                case.name,
                run.stderr.trim()
            ));
        }
    }
    println!("bad-input corpus: {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
