//! `check` against the emulator: every failure mode gets its own message.

use serde_json::{json, Value};

use crate::support::{tap, Emu, Scratch};

fn report(run: &crate::support::Run) -> Value {
    let line = run.stdout.lines().next().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("one JSON line on stdout ({e}): {}", run.stdout))
}

fn failed_step(r: &Value) -> (String, String, String) {
    let s = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["status"] == "failed")
        .expect("a failed step");
    (
        s["name"].as_str().unwrap_or_default().to_string(),
        s["message"].as_str().unwrap_or_default().to_string(),
        s["hint"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_step_and_each_failure() {
    let emu = Emu::start(
        "chk",
        &["-80", "80-"],
        true,
        &[
            (
                "-80",
                "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(10));".into(),
            ),
            (
                "80-",
                "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(10));".into(),
            ),
        ],
    )
    .await;

    // all good, with a catalog
    let catalog = emu.catalog(&[]).await;
    let run = tap(
        &[
            "check",
            "--config",
            emu.config(),
            "--catalog",
            catalog.to_str().expect("p"),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = report(&run);
    assert_eq!(r["status"], json!("SUCCEEDED"));
    let names: Vec<&str> = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        vec![
            "config",
            "mysql_login",
            "tls",
            "keyspace",
            "tablets",
            "grpc_login",
            "catalog"
        ]
    );
    assert_eq!(run.stdout.lines().count(), 1);

    let s = Scratch::new();
    let other_ca = psdb_emulator::tls::Certificates::generate(s.dir.path()).expect("CA");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // (config edit, failing step, text in the message or hint)
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "wrong password",
            Box::new(|c: &mut Value| c["password"] = json!("nope")),
            "mysql_login",
            "access denied for user emu",
        ),
        (
            "wrong host",
            Box::new(move |c: &mut Value| c["mysql_host"] = json!(format!("127.0.0.1:{closed}"))),
            "mysql_login",
            "cannot reach MySQL",
        ),
        (
            "untrusted CA",
            Box::new(move |c: &mut Value| {
                c["tls_ca_file"] = json!(other_ca.ca_file.to_str().expect("p"))
            }),
            "tls",
            "not signed by `tls_ca_file`",
        ),
        (
            "unknown shard",
            Box::new(|c: &mut Value| c["shards"] = json!("c0-")),
            "keyspace",
            "shard `c0-` is not in keyspace",
        ),
        (
            "bad config",
            Box::new(|c: &mut Value| c["timeout_seconds"] = json!("soon")),
            "config",
            "`timeout_seconds`",
        ),
    ];
    for (name, edit, step, text) in cases {
        let cfg = emu.config_with(&format!("check-{}.json", name.replace(' ', "-")), |c| {
            edit(c)
        });
        let run = tap(&["check", "--config", cfg.to_str().expect("p")], &[]).await;
        // each is an input to change: exit 2 (README, Exit codes)
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        // the failure is said once on stderr: the final error line
        assert_eq!(
            run.stderr.matches("FAILED").count() + run.error_line().lines().count(),
            1,
            "{name}: {}",
            run.stderr
        );
        let r = report(&run);
        assert_eq!(r["status"], json!("FAILED"), "{name}");
        let (got_step, message, hint) = failed_step(&r);
        assert_eq!(got_step, step, "{name}: {r}");
        assert!(
            message.contains(text) || hint.contains(text),
            "{name}: `{message}` / `{hint}` lacks `{text}`"
        );
        assert!(!hint.is_empty(), "{name}: a fix hint");
    }

    // a password that works for MySQL but not for the Connect API
    emu.emu.faults().set(
        psdb_emulator::Fault::new(
            psdb_emulator::FaultKind::Status {
                code: tonic::Code::PermissionDenied as i32,
                message: "not allowed to use Connect".into(),
            },
            0,
        )
        .persistent()
        .include_peeks(),
    );
    let run = tap(&["check", "--config", emu.config()], &[]).await;
    emu.emu.faults().clear();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let (step, _, hint) = failed_step(&report(&run));
    assert_eq!(step, "grpc_login");
    assert!(hint.contains("not for the Connect API"), "{hint}");

    // a catalog naming a column that is gone
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog).expect("c")).expect("json");
    c["streams"][0]["schema"]["properties"]["ghost"] = json!({"type": ["null", "string"]});
    c["streams"][0]["metadata"]
        .as_array_mut()
        .expect("metadata")
        .push(json!({"breadcrumb": ["properties", "ghost"], "metadata": {"selected": true}}));
    let k = emu.scratch.write_json("catalog-ghost.json", &c);
    let run = tap(
        &[
            "check",
            "--config",
            emu.config(),
            "--catalog",
            k.to_str().expect("p"),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let (step, message, _) = failed_step(&report(&run));
    assert_eq!(step, "catalog");
    assert!(
        message.contains("column `items`.`ghost` does not exist"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_hosted_vitess_settings_work_over_vstream() {
    let table = "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO items VALUES (1, 'a'), (2, 'b');";
    // GIVEN a TLS server: check probes the VStream API when `api` says so
    let tls = Emu::start("chk_vs_tls", &["-"], true, &[("-", table.into())]).await;
    let cfg = tls.config_with("vstream.json", |c| c["api"] = json!("vstream"));
    let run = tap(&["check", "--config", cfg.to_str().expect("p")], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = report(&run);
    let grpc = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "grpc_login")
        .expect("grpc_login");
    assert!(
        grpc["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("VStream answered with position MySQL56/"),
        "{grpc}"
    );

    // GIVEN a plaintext vtgate with static gRPC auth and explicit cells
    let plain = Emu::start("chk_vs_plain", &["-"], false, &[("-", table.into())]).await;
    let catalog = plain.catalog(&[]).await;
    let fixed = plain.config_with("static.json", |c| {
        c["api"] = json!("vstream");
        c["grpc_auth"] = json!("static");
        c["cells"] = json!("zone1");
        c["tls"] = json!(false);
    });
    // WHEN syncing
    let out = plain.sync_using(&fixed, &catalog, None).await.ok();
    // THEN the rows arrive
    assert_eq!(out.records("items").len(), 2);

    // AND without credentials the server's refusal is a clear error
    let none = plain.config_with("none.json", |c| {
        c["api"] = json!("vstream");
        c["grpc_auth"] = json!("none");
    });
    let refused = plain.sync_using(&none, &catalog, None).await;
    assert_eq!(refused.run.code, 2, "{}", refused.run.stderr);
    assert!(
        refused.run.error_line().contains("refused the credentials"),
        "{}",
        refused.run.stderr
    );

    // AND check says which setting to fix
    let run = tap(&["check", "--config", none.to_str().expect("p")], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let (step, _, hint) = failed_step(&report(&run));
    assert_eq!(step, "grpc_login");
    assert!(hint.contains("grpc_auth"), "{hint}");

    // AND a bad `api` value is a usage error naming the key
    let bad = plain.config_with("bad.json", |c| c["api"] = json!("grpc"));
    let run = tap(
        &[
            "sync",
            "--config",
            bad.to_str().expect("p"),
            "--catalog",
            catalog.to_str().expect("p"),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("`api`"), "{}", run.stderr);
    // and the flag overrides the config
    let run = tap(
        &[
            "sync",
            "--config",
            none.to_str().expect("p"),
            "--catalog",
            catalog.to_str().expect("p"),
            "--api",
            "psdbconnect",
        ],
        &[],
    )
    .await;
    assert!(run.stderr.contains("api=psdbconnect"), "{}", run.stderr);
}
