//! What a sync is doing, for the person or scheduler watching stderr.
//!
//! One [`Board`] holds a row per (stream, shard): its phase, its counts and
//! the share of its copy done, measured against the catalog's `row-count`
//! estimate split evenly over the stream's shards (Vitess spreads rows by
//! keyspace id, so an even split is the best guess there is without asking
//! every shard).
//!
//! Two ways to show it, chosen once at start-up by [`crate::log::init`]:
//! live bars when stderr is a terminal and logs are text, otherwise a plain
//! log line per active slot every few seconds. The summary table at the end
//! is printed either way. The writer loop owns the board, so no locking is
//! needed beyond what the bars do themselves.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::{info, warn};

use crate::sync::records::{ColumnWarning, Counts};

/// One (stream, shard) as the board sees it.
pub struct Entry {
    pub stream: String,
    pub shard: String,
    /// Estimated rows of this shard's copy, if the catalog had a count.
    pub estimate: Option<u64>,
    pub counts: Counts,
    pub copying: bool,
    pub done: bool,
    started: Instant,
    finished: Option<Duration>,
    pub warnings: Vec<ColumnWarning>,
    /// Rows at the last progress line, for the rate since then.
    rows_then: u64,
}

impl Entry {
    pub fn new(stream: &str, shard: &str, estimate: Option<u64>, copying: bool) -> Entry {
        Entry {
            stream: stream.to_string(),
            shard: shard.to_string(),
            estimate,
            counts: Counts::default(),
            copying,
            done: false,
            started: Instant::now(),
            finished: None,
            warnings: Vec::new(),
            rows_then: 0,
        }
    }

    fn phase(&self) -> &'static str {
        match (self.done, self.copying) {
            (true, _) => "done",
            (false, true) => "copy",
            (false, false) => "changes",
        }
    }

    fn secs(&self) -> f64 {
        self.finished
            .unwrap_or_else(|| self.started.elapsed())
            .as_secs_f64()
    }
}

/// Share of a copy done, in percent, capped at 100: the estimate may be
/// stale, and a copy that overshoots it is still a copy in progress.
pub fn percent(copied: u64, estimate: Option<u64>) -> Option<f64> {
    match estimate {
        Some(e) if e > 0 => Some((copied as f64 * 100.0 / e as f64).min(100.0)),
        _ => None,
    }
}

/// Each shard's share of a stream's estimated row count.
pub fn per_shard(row_count: Option<u64>, shards: usize) -> Option<u64> {
    row_count.map(|n| n.div_ceil(shards.max(1) as u64))
}

pub struct Board {
    slots: Vec<Entry>,
    bars: Vec<ProgressBar>,
    started: Instant,
    last_log: Instant,
    /// How often plain progress lines are logged.
    every: Duration,
}

impl Board {
    pub fn new(slots: Vec<Entry>, every: Duration) -> Board {
        let bars = match crate::log::terminal() {
            Some(term) => slots.iter().map(|s| term.add(bar_for(s))).collect(),
            None => Vec::new(),
        };
        Board {
            slots,
            bars,
            started: Instant::now(),
            last_log: Instant::now(),
            every,
        }
    }

    /// Adds a batch's counts.
    pub fn add(&mut self, i: usize, counts: &Counts, copying: bool) {
        let s = &mut self.slots[i];
        s.counts.copied += counts.copied;
        s.counts.inserted += counts.inserted;
        s.counts.updated += counts.updated;
        s.counts.deleted += counts.deleted;
        let phase_changed = s.copying != copying;
        s.copying = copying;
        if let Some(bar) = self.bars.get(i) {
            if phase_changed {
                bar.set_style(style_for(s));
            }
            bar.set_position(if s.copying {
                s.counts.copied
            } else {
                s.counts.total()
            });
            bar.set_message(s.phase());
        }
    }

    /// Marks a slot finished.
    pub fn done(&mut self, i: usize, warnings: Vec<ColumnWarning>) {
        let s = &mut self.slots[i];
        s.done = true;
        s.finished = Some(s.started.elapsed());
        s.warnings = warnings;
        if let Some(bar) = self.bars.get(i) {
            bar.set_message("done");
            bar.finish();
        }
    }

    /// Called on every writer tick: the plain progress lines, when no bars
    /// are drawn.
    pub fn tick(&mut self) {
        if !self.bars.is_empty() || self.last_log.elapsed() < self.every {
            return;
        }
        let dt = self.last_log.elapsed().as_secs_f64().max(0.001);
        self.last_log = Instant::now();
        for s in self.slots.iter_mut().filter(|s| !s.done) {
            let rows = s.counts.total();
            let rate = ((rows - s.rows_then.min(rows)) as f64 / dt) as u64;
            s.rows_then = rows;
            let pct = if s.copying {
                percent(s.counts.copied, s.estimate)
            } else {
                None
            };
            match pct {
                Some(p) => info!(
                    stream = %s.stream, shard = %s.shard, phase = s.phase(), rows,
                    rows_per_sec = rate, percent = (p * 10.0).round() / 10.0,
                    "progress: {} {} copy {rows} rows ({p:.1}% of ~{}), {rate} rows/s",
                    s.stream, s.shard, s.estimate.unwrap_or(0)
                ),
                None => info!(
                    stream = %s.stream, shard = %s.shard, phase = s.phase(), rows,
                    rows_per_sec = rate,
                    "progress: {} {} {} {rows} rows, {rate} rows/s",
                    s.stream, s.shard, s.phase()
                ),
            }
        }
    }

    /// Clears the bars and prints the summary. Text logs get a bare table
    /// (no log prefix, no fields) and a plain line per warning that says
    /// what was written instead; JSON logs get one structured line per slot
    /// for log collectors.
    pub fn finish(&mut self) {
        for bar in &self.bars {
            bar.finish_and_clear();
        }
        if let Some(term) = crate::log::terminal() {
            let _ = term.clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        if crate::log::is_text() {
            let mut block = format!(
                "sync finished in {secs:.2} s\n{}",
                summary_table(&self.slots)
            );
            let notes = warning_lines(&self.slots);
            if !notes.is_empty() {
                block.push_str("\nwarnings:");
                for n in notes {
                    block.push_str("\n  ");
                    block.push_str(&n);
                }
            }
            crate::log::print_block(&block);
            return;
        }
        for s in &self.slots {
            let warnings: u64 = s.warnings.iter().map(|w| w.count).sum();
            info!(
                stream = %s.stream, shard = %s.shard, copied = s.counts.copied,
                inserted = s.counts.inserted, updated = s.counts.updated,
                deleted = s.counts.deleted, warnings, secs = s.secs(), complete = s.done,
                "summary"
            );
            for w in &s.warnings {
                warn!(stream = %s.stream, shard = %s.shard, column = %w.column, count = w.count, "{}", w.reason);
            }
        }
        info!(secs, "sync finished");
    }
}

/// One line per (stream, shard, column) with warnings: how many values,
/// and what happened to them.
pub fn warning_lines(slots: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    for s in slots {
        for w in &s.warnings {
            out.push(format!(
                "{} {} column `{}`: {} {}",
                s.stream, s.shard, w.column, w.count, w.reason
            ));
        }
    }
    out
}

fn style_for(s: &Entry) -> ProgressStyle {
    let template = if s.copying && s.estimate.is_some() {
        "{prefix:30} {msg:8} [{bar:30}] {pos:>10}/{len} {percent:>3}% {per_sec:>12}"
    } else {
        "{prefix:30} {msg:8} {spinner} {pos:>10} rows {per_sec:>12}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn bar_for(s: &Entry) -> ProgressBar {
    let bar = ProgressBar::new(s.estimate.unwrap_or(0)).with_style(style_for(s));
    bar.set_prefix(format!("{} {}", s.stream, s.shard));
    bar.set_message(s.phase());
    bar
}

/// The end-of-run table, one row per (stream, shard).
pub fn summary_table(slots: &[Entry]) -> String {
    let header = [
        "stream", "shard", "phase", "copied", "inserted", "updated", "deleted", "warnings", "secs",
        "rows/s",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for s in slots {
        let secs = s.secs();
        let rows_total = s.counts.total();
        rows.push(vec![
            s.stream.clone(),
            s.shard.clone(),
            if s.done { "done" } else { "stopped" }.to_string(),
            s.counts.copied.to_string(),
            s.counts.inserted.to_string(),
            s.counts.updated.to_string(),
            s.counts.deleted.to_string(),
            s.warnings.iter().map(|w| w.count).sum::<u64>().to_string(),
            format!("{secs:.2}"),
            ((rows_total as f64 / secs.max(0.001)) as u64).to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                // Names left-aligned, numbers right-aligned.
                if c < 3 {
                    format!("{v:<w$}", w = widths[c])
                } else {
                    format!("{v:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_of_an_estimate() {
        let cases = [
            (0, Some(100), Some(0.0)),
            (50, Some(200), Some(25.0)),
            (300, Some(200), Some(100.0)),
            (5, Some(0), None),
            (5, None, None),
        ];
        for (copied, est, want) in cases {
            assert_eq!(percent(copied, est), want, "{copied} of {est:?}");
        }
    }

    #[test]
    fn estimates_split_over_shards() {
        let cases = [
            (Some(1000), 2, Some(500)),
            (Some(1001), 2, Some(501)),
            (Some(7), 0, Some(7)),
            (None, 2, None),
        ];
        for (n, shards, want) in cases {
            assert_eq!(per_shard(n, shards), want, "{n:?} over {shards}");
        }
    }

    #[test]
    fn warnings_say_column_count_and_outcome() {
        let mut a = Entry::new("orders", "-80", None, false);
        a.warnings = vec![ColumnWarning {
            column: "ship_date".into(),
            reason: "zero or invalid dates written as null",
            count: 227,
        }];
        assert_eq!(
            warning_lines(&[a, Entry::new("t", "-", None, false)]),
            vec!["orders -80 column `ship_date`: 227 zero or invalid dates written as null"]
        );
    }

    #[test]
    fn summary_table_aligns_columns() {
        let mut a = Entry::new("shop-orders", "-80", Some(10), true);
        a.counts.copied = 1234;
        a.done = true;
        let b = Entry::new("t", "80-", None, false);
        let table = summary_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("stream       shard  phase"), "{table}");
        assert!(lines[1].starts_with("shop-orders  -80    done"), "{table}");
        assert!(
            lines[2].starts_with("t            80-    stopped"),
            "{table}"
        );
        // Right-aligned numbers end in the same column.
        assert!(!table.contains('='), "no log fields in the table: {table}");
        let copied_end = lines[0].find("copied").map(|i| i + "copied".len());
        assert_eq!(lines[1].find("1234").map(|i| i + 4), copied_end, "{table}");
    }
}
