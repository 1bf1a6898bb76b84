//! A new user's first ten minutes (issue 16), asserted on what a person
//! reads: the README's first commands (`scripts/demo`, then the commands it
//! suggests), each subcommand's `--help`, and the one line an error gets.
//!
//! The demo runs with `--bin-dir` on the binaries this test build made, so
//! no release build happens here; everything else is the real script, the
//! real emulator binary, a real MariaDB and the real target-jsonl.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{summary_table, tap, venv_tool, Emu, Scratch, BIN};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The emulator binary beside the tap's. `cargo test --workspace` builds it
/// (the emulator's own tests use it); a missing one fails, never skips.
fn emulator_bin() -> PathBuf {
    let p = Path::new(BIN).with_file_name("psdb-emulator");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p psdb-emulator` (scripts/test builds it)",
        p.display()
    );
    p
}

/// Text that must never reach a person twice in a row, or at all.
fn assert_readable(what: &str, text: &str) {
    assert!(
        !text.contains('\u{1b}'),
        "{what}: ANSI codes off a terminal:\n{text:?}"
    );
    for line in text.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        for pair in parts.windows(2) {
            assert_ne!(pair[0], pair[1], "{what}: repeated text in `{line}`");
        }
    }
}

/// A running `scripts/demo`, its stderr read line by line.
struct Demo {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(out: &Path, serve: bool) -> Demo {
        let bin_dir = Path::new(BIN).parent().expect("bin dir");
        emulator_bin();
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/demo"))
            .args(["--out", out.to_str().expect("p")])
            .args(["--bin-dir", bin_dir.to_str().expect("p")])
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if serve {
            cmd.arg("--serve");
        }
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TAP_PLANETSCALE_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("run scripts/demo");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads stderr until a line contains `marker`, or the stream ends.
    fn read_until(&mut self, marker: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(marker);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn text(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM, as a person's Ctrl-C would: the script's trap stops the
        // emulator and its MariaDB.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
    }
}

/// The commands the demo prints under "Try": the lines that start with the
/// tap binary's path.
fn suggested_commands(text: &str, tap_bin: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with(tap_bin))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_a_clean_table_and_says_how_to_keep_going() {
    let tap_bin = Path::new(BIN)
        .parent()
        .expect("bin dir")
        .join("tap-planetscale");
    let tap_bin = tap_bin.to_str().expect("p").to_string();

    // GIVEN a person who runs `scripts/demo`
    let plain = Scratch::new();
    let out = plain.dir.path().join("demo-out");
    let mut demo = Demo::start(&out, false);
    let ended = tokio::task::block_in_place(|| {
        demo.read_until("A real PlanetScale", Duration::from_secs(300))
    });
    let text = demo.text();
    assert!(ended, "the demo did not finish:\n{text}");
    let status = tokio::task::block_in_place(|| demo.child.wait()).expect("wait");
    assert!(status.success(), "{status}:\n{text}");
    assert_readable("demo", &text);

    // THEN each sync's summary is a bare table: a row per (stream, shard),
    // every row as wide as the header (a trailing log field would make a
    // row wider, and it would not count)
    let rows = summary_table(&text);
    assert_eq!(
        rows.len(),
        2 * 3 * 2,
        "2 syncs x 3 streams x 2 shards:\n{text}"
    );
    assert_eq!(text.matches("sync finished in").count(), 2, "{text}");
    assert!(rows.iter().all(|r| r["phase"] == "done"), "{rows:?}");
    assert!(!text.contains("secs="), "{text}");
    assert!(
        !text.contains(" INFO "),
        "raw log lines in the demo:\n{text}"
    );
    // AND its warnings say what they are
    assert!(
        text.contains("orders -80 column `ship_date`:")
            && text.contains("zero or invalid dates written as null"),
        "{text}"
    );

    // AND a demo that has stopped says its config is dead and how to revive it
    assert!(text.contains("points at closed ports"), "{text}");
    assert!(text.contains("scripts/demo --serve"), "{text}");
    let config = out.join("config.json");
    let dead = tap(&["check", "--config", config.to_str().expect("p")], &[]).await;
    assert_eq!(dead.code, 2, "{}", dead.stderr);
    assert_eq!(dead.error_line().lines().count(), 1, "{}", dead.stderr);
    assert_eq!(
        dead.stderr.matches("Connection refused").count(),
        1,
        "{}",
        dead.stderr
    );
    assert_readable("dead check", &dead.stderr);

    // WHEN the person runs `scripts/demo --serve` instead
    let served = Scratch::new();
    let out = served.dir.path().join("demo-out");
    let mut demo = Demo::start(&out, true);
    let ready =
        tokio::task::block_in_place(|| demo.read_until("ready: serving", Duration::from_secs(300)));
    let text = demo.text();
    assert!(ready, "the demo did not start serving:\n{text}");
    assert!(
        text.contains("keep running until you press Ctrl-C"),
        "{text}"
    );

    // THEN every command it suggests works against the demo, as printed
    let commands = suggested_commands(&text, &tap_bin);
    let verbs: Vec<&str> = commands
        .iter()
        .filter_map(|c| c[tap_bin.len()..].split_whitespace().next())
        .collect();
    assert_eq!(verbs, ["check", "discover", "sync", "sync"], "{text}");
    assert!(commands[2].contains("| .venv/bin/target-jsonl"), "{text}");
    assert!(commands[3].contains("--state"), "{text}");
    venv_tool(".venv", "target-jsonl");
    for cmd in &commands {
        let run = tokio::task::block_in_place(|| {
            Command::new("bash")
                .args(["-o", "pipefail", "-c", cmd])
                .current_dir(repo())
                .stdin(Stdio::null())
                .output()
        })
        .expect("run a suggested command");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "`{cmd}`: {}\n{stderr}", run.status);
        assert_readable(cmd, &stderr);
        if cmd.contains(" check ") {
            let report: Value =
                serde_json::from_slice(&run.stdout).expect("check's JSON report on a pipe");
            assert_eq!(report["status"], json!("SUCCEEDED"), "{report}");
        }
    }
    let written = std::fs::read_dir(out.join("jsonl"))
        .expect("target-jsonl's directory")
        .count();
    assert!(written > 0, "target-jsonl wrote no file");

    // AND Ctrl-C (here SIGTERM) ends the demo and stops its servers
    let stopped = tokio::task::block_in_place(|| {
        Command::new("kill")
            .args(["-TERM", &demo.child.id().to_string()])
            .status()
            .and_then(|_| demo.child.wait())
    })
    .expect("stop the demo");
    assert!(stopped.success(), "{stopped}");
    let config = out.join("config.json");
    let after = tap(&["check", "--config", config.to_str().expect("p")], &[]).await;
    assert_eq!(after.code, 2, "the servers are down: {}", after.stderr);
}

#[tokio::test]
async fn each_subcommand_help_lists_only_its_own_flags() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "discover",
            &[
                "--config",
                "--auto-select",
                "--excluded-tables",
                "--tinyint-as-boolean",
                "--incremental",
            ],
            &[
                "--commit",
                "--singer-api-token",
                "--buffer-size",
                "--about",
                "--state",
                "--catalog",
            ],
        ),
        (
            "sync",
            &[
                "--config",
                "--catalog",
                "--state",
                "--use-replica",
                "--commit",
            ],
            &[
                "--buffer-size",
                "--about",
                "--auto-select",
                "--excluded-tables",
                "--discover",
            ],
        ),
        (
            "check",
            &["--config", "--catalog"],
            &["--state", "--commit", "--about", "--buffer-size"],
        ),
    ];
    for (command, has, lacks) in cases {
        let run = tap(&[command, "--help"], &[]).await;
        assert_eq!(run.code, 0, "{command}: {}", run.stderr);
        for flag in *has {
            assert!(
                run.stdout.contains(flag),
                "{command} --help lacks {flag}:\n{}",
                run.stdout
            );
        }
        for flag in *lacks {
            assert!(
                !run.stdout.contains(flag),
                "{command} --help shows {flag}:\n{}",
                run.stdout
            );
        }
    }
    // The Singer form keeps every flag, and says where the rest went.
    let run = tap(&["--help"], &[]).await;
    assert_eq!(run.code, 0);
    for flag in [
        "--discover",
        "--catalog",
        "--state",
        "--about",
        "--commit",
        "--properties",
    ] {
        assert!(
            run.stdout.contains(flag),
            "--help lacks {flag}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("COMMAND --help"), "{}", run.stdout);
    assert!(run.stdout.contains("2 change an input"), "{}", run.stdout);
}

/// One rule for every command: an unreachable host (a closed port, a name
/// that does not resolve) is the person's to fix, so exit 2, said once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_is_exit_2_for_every_command_in_one_line() {
    let emu = Emu::start(
        "nu_unreach",
        &["-"],
        false,
        &[("-", "CREATE TABLE t (id INT PRIMARY KEY);".into())],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let cases = [
        (
            "closed port",
            format!("127.0.0.1:{closed}"),
            "Connection refused",
        ),
        (
            "unknown name",
            "no-such-host.invalid:3306".to_string(),
            "no-such-host.invalid",
        ),
    ];
    for (name, host, cause) in cases {
        let config = emu.config_with(&format!("{}.json", name.replace(' ', "-")), |c| {
            c["mysql_host"] = json!(host);
            c["connect_timeout_seconds"] = json!(3);
        });
        let config = config.to_str().expect("p");
        let k = catalog.to_str().expect("p");
        for args in [
            vec!["check", "--config", config],
            vec!["discover", "--config", config],
            vec!["sync", "--config", config, "--catalog", k],
        ] {
            let started = Instant::now();
            let run = tap(&args, &[]).await;
            let what = format!("{name}: {}", args[0]);
            assert_eq!(run.code, 2, "{what}: {}", run.stderr);
            let line = run.error_line();
            assert_eq!(line.lines().count(), 1, "{what}: {}", run.stderr);
            assert!(line.contains(&host), "{what}: `{line}` lacks the host");
            assert!(line.contains(cause), "{what}: `{line}` lacks `{cause}`");
            assert!(
                !line.contains("Input/output error: Input/output"),
                "{what}: {line}"
            );
            // The cause is said once on stderr, not in a log line and again
            // in the error line.
            assert_eq!(
                run.stderr.matches("cannot reach MySQL").count(),
                1,
                "{what}: {}",
                run.stderr
            );
            assert_readable(&what, &run.stderr);
            // Said at once: no retries of a host that is not there.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: {:?}",
                started.elapsed()
            );
            assert!(!run.stderr.contains("retrying"), "{what}: {}", run.stderr);
        }
    }

    // The same for the gRPC endpoint (MySQL answers; gRPC does not): check
    // and sync agree (discover does not use gRPC).
    let grpc_closed = emu.config_with("grpc-closed.json", |c| {
        c["grpc_host"] = json!(format!("127.0.0.1:{closed}"));
        c["connect_timeout_seconds"] = json!(3);
    });
    let grpc_closed = grpc_closed.to_str().expect("p");
    let k = catalog.to_str().expect("p");
    for args in [
        vec!["check", "--config", grpc_closed],
        vec!["sync", "--config", grpc_closed, "--catalog", k],
    ] {
        let run = tap(&args, &[]).await;
        let what = format!("gRPC closed port: {}", args[0]);
        assert_eq!(run.code, 2, "{what}: {}", run.stderr);
        let line = run.error_line();
        assert_eq!(line.lines().count(), 1, "{what}: {}", run.stderr);
        assert!(
            line.contains(&format!(
                "cannot reach gRPC at 127.0.0.1:{closed}: Connection refused"
            )),
            "{what}: {line}"
        );
        assert_eq!(
            run.stderr.matches("Connection refused").count(),
            1,
            "{what}: {}",
            run.stderr
        );
        assert!(
            run.stdout.lines().all(|l| !l.contains("\"RECORD\"")),
            "{what}"
        );
        assert_readable(&what, &run.stderr);
    }

    // A config with only `host` names every missing key in one line.
    let s = Scratch::new();
    let only_host = s.write_json("only-host.json", &json!({"host": "127.0.0.1:1"}));
    for args in [["check", "--config"], ["discover", "--config"]] {
        let run = tap(&[args[0], args[1], only_host.to_str().expect("p")], &[]).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        let line = run.error_line();
        assert_eq!(line.lines().count(), 1, "{}", run.stderr);
        assert!(
            line.contains("config keys `database`, `username` and `password` are missing"),
            "{line}"
        );
    }
}

/// An empty keyspace is reported as that, not as a gRPC login problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_an_empty_keyspace_says_so() {
    let emu = Emu::start("nu_empty", &["-"], false, &[]).await;
    let run = tap(&["check", "--config", emu.config()], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("report");
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], "keyspace", "{report}");
    let line = run.error_line();
    assert!(line.contains("has no tables"), "{line}");
    assert!(!run.stderr.contains("grpc"), "{}", run.stderr);
    // once on stderr: the final line, not also an ERROR log line
    assert_eq!(
        run.stderr.matches("has no tables").count(),
        1,
        "{}",
        run.stderr
    );
}

/// A person at a terminal reads `check`'s failure once: the JSON report is
/// for pipes and files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_at_a_terminal_says_the_failure_once() {
    let emu = Emu::start("nu_tty", &["-"], false, &[]).await;
    let inner = format!("{BIN} check --config {}", emu.config());
    let screen = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qfec", &inner, "/dev/null"])
            .env_remove("TAP_PLANETSCALE_LOG_FORMAT")
            .output()
            .expect("run script(1)")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&screen.stdout);
    assert_eq!(screen.status.code(), Some(2), "{text}");
    assert_eq!(text.matches("has no tables").count(), 1, "{text}");
    assert!(
        !text.contains("\"status\""),
        "no JSON on a terminal: {text}"
    );
    assert!(text.contains("ok: "), "passed steps are shown: {text}");
}
