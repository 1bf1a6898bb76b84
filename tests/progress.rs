//! What a person or a scheduler sees on stderr: progress lines with the
//! share of a copy done, live bars on a terminal, the summary table, and
//! the Singer SDK's structured log lines that Meltano keeps the level of.

use std::process::Command;

use psdb_emulator::{Fault, FaultKind};
use serde_json::{json, Value};

use crate::support::{numbers_sql, tap, Emu, BIN};

/// An emulator whose one table stalls after its first copy response until
/// the tap's 3-second deadline, so the copy is visibly in progress for a
/// while; the catalog says the table holds 4000 rows.
async fn stalled_copy(name: &str) -> (Emu, std::path::PathBuf, std::path::PathBuf) {
    let emu = Emu::start(name, &["-"], false, &[("-", numbers_sql("items", 1, 4000))]).await;
    let catalog = emu.catalog(&[]).await;
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&catalog).expect("read"))
        .expect("catalog json");
    for m in c["streams"][0]["metadata"]
        .as_array_mut()
        .expect("metadata")
    {
        if m["breadcrumb"] == json!([]) {
            m["metadata"]["row-count"] = json!(4000);
        }
    }
    let catalog = emu.scratch.write_json("catalog-counted.json", &c);
    let config = emu.config_with("progress-config.json", |c| {
        c["timeout_seconds"] = json!(3);
        c["progress_interval_seconds"] = json!(1);
    });
    emu.emu.faults().set(Fault::new(FaultKind::Stall, 1));
    (emu, config, catalog)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_show_phase_rate_and_percent_then_a_summary_table() {
    let (_emu, config, catalog) = stalled_copy("prog_lines").await;
    let run = tap(
        &[
            "sync",
            "--config",
            config.to_str().expect("p"),
            "--catalog",
            catalog.to_str().expect("p"),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("progress: items - copy") && l.contains("% of ~4000"))
        .unwrap_or_else(|| panic!("no copy progress line:\n{}", run.stderr));
    assert!(line.contains("rows/s"), "{line}");
    // "… copy N rows (P% of ~4000) …": P is N against the estimate.
    let after = &line[line.find("copy ").expect("copy") + 5..];
    let rows: f64 = after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("rows");
    let pct: f64 = after[after.find('(').expect("(") + 1..after.find('%').expect("%")]
        .parse()
        .expect("percent");
    assert!(rows > 0.0, "{line}");
    assert!(
        (pct - (rows * 100.0 / 4000.0).min(100.0)).abs() < 0.06,
        "{line}"
    );
    let header = run
        .stderr
        .lines()
        .position(|l| l.starts_with("stream") && l.contains("copied") && l.contains("rows/s"))
        .unwrap_or_else(|| panic!("no summary table:\n{}", run.stderr));
    let row = run.stderr.lines().nth(header + 1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["items", "-", "done", "4000"], "{row}");
    // The table is plain text: no log field trails its last row (issue 16).
    let header_cells = run
        .stderr
        .lines()
        .nth(header)
        .unwrap_or_default()
        .split_whitespace()
        .count();
    assert_eq!(cells.len(), header_cells, "{row}");
    assert!(!row.contains('='), "{row}");
    // Logs never reach stdout.
    for l in run.stdout.lines() {
        let m: Value = serde_json::from_str(l).expect("stdout is Singer JSON");
        assert!(m["type"].is_string(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_live_bars_and_the_summary_table() {
    let (_emu, config, catalog) = stalled_copy("prog_tty").await;
    // `script` gives the tap a pseudo-terminal for stdin/stdout/stderr;
    // stdout is sent to a file so only stderr is drawn on the terminal.
    let scratch = tempfile::tempdir().expect("tempdir");
    let out_path = scratch.path().join("out.jsonl");
    let inner = format!(
        "{BIN} sync --config {} --catalog {} > {}",
        config.display(),
        catalog.display(),
        out_path.display()
    );
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
    assert!(screen.status.success(), "{text}");
    // A bar for the copy: its frame and the estimate as its length.
    assert!(text.contains("items -"), "{text}");
    assert!(
        text.contains("/4000"),
        "no bar against the estimate:\n{text}"
    );
    assert!(text.contains("%"), "{text}");
    // No plain progress lines when bars are drawn, but the table is there.
    assert!(!text.contains("progress: items"), "{text}");
    assert!(text.contains("copied"), "no summary table:\n{text}");
    let records = std::fs::read_to_string(&out_path)
        .expect("stdout file")
        .lines()
        .filter(|l| l.contains("\"RECORD\""))
        .count();
    assert_eq!(records, 4000);
}

/// The fields Meltano's Singer SDK log parser requires on a line.
const SDK_FIELDS: [&str; 7] = [
    "level",
    "pid",
    "logger_name",
    "ts",
    "thread_name",
    "app_name",
    "message",
];

fn sdk_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("tap-planetscale: error:"))
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l}"));
            for f in SDK_FIELDS {
                assert!(v.get(f).is_some(), "`{f}` missing in {l}");
            }
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_the_sdk_shape_with_python_level_names() {
    let emu = Emu::start(
        "prog_json",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 50))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let args = [
        "sync",
        "--config",
        emu.config(),
        "--catalog",
        catalog.to_str().expect("p"),
    ];
    // By flag, and by the environment as a Meltano project would set it.
    let by_flag = {
        let mut a = args.to_vec();
        a.extend(["--log-format", "json"]);
        tap(&a, &[]).await
    };
    let by_env = tap(&args, &[("TAP_PLANETSCALE_LOG_FORMAT", "json")]).await;
    for run in [by_flag, by_env] {
        assert_eq!(run.code, 0, "{}", run.stderr);
        let lines = sdk_lines(&run.stderr);
        let summary = lines
            .iter()
            .find(|l| l["message"] == "summary")
            .unwrap_or_else(|| panic!("no summary line:\n{}", run.stderr));
        assert_eq!(summary["level"], "info");
        assert_eq!(summary["extra"]["copied"], json!(50), "{summary}");
        assert_eq!(summary["extra"]["stream"], "items");
        assert_eq!(summary["app_name"], "tap-planetscale");
        assert!(
            summary["logger_name"]
                .as_str()
                .is_some_and(|n| n.starts_with("tap-planetscale")),
            "{summary}"
        );
        assert!(
            summary["ts"].as_f64().is_some_and(|t| t > 1.7e9),
            "{summary}"
        );
    }

    // A warning keeps its level: an unknown config key is warned about.
    let cfg = emu.config_with("odd.json", |c| c["no_such_key"] = json!(1));
    let run = tap(
        &[
            "sync",
            "--config",
            cfg.to_str().expect("p"),
            "--catalog",
            catalog.to_str().expect("p"),
            "--log-format",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = sdk_lines(&run.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "warning" && l.to_string().contains("no_such_key")),
        "{}",
        run.stderr
    );
}
