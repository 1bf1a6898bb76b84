//! Signals, a closed pipe and a slow consumer, against the emulator.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{numbers_sql, Emu, BIN};

pub fn spawn_sync(emu: &Emu, catalog: &std::path::Path, state: Option<&std::path::Path>) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "sync",
        "--config",
        emu.config(),
        "--catalog",
        catalog.to_str().expect("p"),
    ]);
    if let Some(s) = state {
        cmd.args(["--state", s.to_str().expect("p")]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tap")
}

fn ids_of(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["type"] == "RECORD")
        .filter_map(|m| m["record"]["id"].as_u64())
        .collect()
}

pub fn last_state(lines: &[String]) -> Value {
    lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|m| m["type"] == "STATE")
        .map(|m| m["value"].clone())
        .expect("a STATE line")
}

async fn signal_stops_promptly(signal: &str, code: i32) {
    // GIVEN a sync copying a large table
    let emu = Emu::start(
        &format!("sig{}", signal.to_lowercase()),
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 300_000))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let mut child = spawn_sync(&emu, &catalog, None);
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read");
        assert!(n > 0, "tap ended before its first record");
        let is_record = line.contains("\"type\":\"RECORD\"");
        lines.push(line.trim_end().to_string());
        if is_record {
            break;
        }
    }

    // WHEN it gets the signal mid-copy
    let sent = Instant::now();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("read rest");
    let exit = child.wait().expect("wait");
    let took = sent.elapsed();
    lines.extend(rest.lines().map(str::to_string));

    // THEN it exits promptly with 128+signal, ending with a STATE that
    // covers exactly what it wrote: resuming from it loses nothing
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(exit.code(), Some(code), "{stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    assert!(
        lines.last().expect("lines").contains("\"type\":\"STATE\""),
        "last line is a STATE"
    );
    assert!(!stderr.contains("panicked"));
    let partial = ids_of(&lines);
    assert!(partial.len() < 300_000, "the signal came mid-copy");
    let state = last_state(&lines);
    let resumed = emu.sync(&catalog, Some(&state)).await.ok();
    let mut all: Vec<u64> = partial
        .into_iter()
        .chain(
            resumed
                .records("items")
                .iter()
                .map(|r| r["id"].as_u64().expect("id")),
        )
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 300_000, "no row lost across the signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_with_a_final_state() {
    signal_stops_promptly("TERM", 143).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_with_a_final_state() {
    signal_stops_promptly("INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pipe_ends_quietly() {
    // GIVEN `tap-planetscale sync … | head -n 5`
    let emu = Emu::start(
        "pipe",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 100_000))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let mut child = spawn_sync(&emu, &catalog, None);
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    for _ in 0..5 {
        line.clear();
        reader.read_line(&mut line).expect("read");
    }
    // WHEN the reader goes away
    drop(reader);
    let started = Instant::now();
    let exit = child.wait().expect("wait");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    // THEN the tap exits by itself, quietly: no panic, no error spew
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_every_row() {
    // GIVEN a consumer that reads far slower than the tap produces
    let emu = Emu::start(
        "slow",
        &["-"],
        false,
        &[("-", numbers_sql("items", 1, 30_000))],
    )
    .await;
    let catalog = emu.catalog(&[]).await;
    let mut child = spawn_sync(&emu, &catalog, None);
    let stdout = child.stdout.take().expect("stdout");
    let reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    for (i, l) in reader.lines().enumerate() {
        lines.push(l.expect("line"));
        if i % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let exit = child.wait().expect("wait");
    // THEN backpressure slows the tap down and nothing is lost
    assert_eq!(exit.code(), Some(0));
    let mut ids = ids_of(&lines);
    ids.sort();
    assert_eq!(ids, (1..=30_000).collect::<Vec<_>>());
}
