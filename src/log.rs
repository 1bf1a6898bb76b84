//! Log lines on stderr, in the two shapes people read them in.
//!
//! `text` is for a person at a terminal or a cron mail. `json` is the Singer
//! SDK's structured shape, which Meltano recognises line by line: a line
//! holding `level`, `pid`, `logger_name`, `ts`, `thread_name`, `app_name` and
//! `message` keeps its level in Meltano's own log instead of being logged as
//! INFO. The event's other fields go under `extra`, where Meltano keeps them.
//!
//! When live progress bars are drawn on a terminal, every log line is
//! written through [`print_above`] so a line never tears a
//! bar in half.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressDrawTarget};
use serde_json::{json, Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// What Meltano shows as the plugin's logger, and the SDK's `app_name`.
const APP: &str = "tap-planetscale";

/// The log format chosen at start-up, for output that is not a log line.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether logs are text lines for people (not the JSON shape). Unset (as in
/// unit tests) counts as text.
pub fn is_text() -> bool {
    FORMAT.get().copied().unwrap_or_default() == LogFormat::Text
}

/// Writes a block of text for people (a table) to stderr as it is, with no
/// log prefix and no fields, when text logs at INFO are on.
pub fn print_block(text: &str) {
    if is_text() && tracing::enabled!(Level::INFO) {
        let mut block = text.trim_end().to_string();
        block.push('\n');
        print_above(block.as_bytes());
    }
}

/// The terminal's progress bars, when there is a terminal to draw them on.
static TERMINAL: OnceLock<MultiProgress> = OnceLock::new();

/// Turns live bars on: stderr is a terminal and logs are text.
fn attach_terminal() {
    let _ = TERMINAL.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
}

/// The progress bars' terminal, if bars are drawn.
pub fn terminal() -> Option<&'static MultiProgress> {
    TERMINAL.get()
}

/// Writes a finished line to stderr, lifting the bars out of its way.
pub fn print_above(line: &[u8]) {
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line);
        let _ = err.flush();
    };
    match TERMINAL.get() {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// Installs the global subscriber. `level` is a filter such as `info` or
/// `tap_planetscale=debug`; without it `RUST_LOG`, then `info`.
pub fn init(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let _ = FORMAT.set(format);
    let terminal = std::io::stderr().is_terminal();
    if format == LogFormat::Text && terminal {
        attach_terminal();
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LineWriter::make)
        .with_target(false);
    match format {
        // Colour only for a person at a terminal: a file, a pipe or a
        // scheduler's log would keep the escape codes as noise.
        LogFormat::Text => builder.with_ansi(terminal).init(),
        LogFormat::Json => builder.event_format(SdkJson).init(),
    }
}

/// Python's level names, which Meltano maps back to its own levels.
pub fn python_level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        // Python has no TRACE; DEBUG is the nearest that Meltano knows.
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// `tap_planetscale::sync::reader` → `tap-planetscale.sync.reader`, the
/// dotted logger names Python tools print.
pub fn logger_name(target: &str) -> String {
    let mut parts = target.split("::");
    let first = parts.next().unwrap_or_default();
    let head = if first == "tap_planetscale" {
        APP
    } else {
        first
    };
    std::iter::once(head)
        .chain(parts)
        .collect::<Vec<_>>()
        .join(".")
}

/// The Singer SDK's structured log line.
struct SdkJson;

impl<S, N> FormatEvent<S, N> for SdkJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let message = match fields.0.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let line = json!({
            "level": python_level(meta.level()),
            "message": message,
            "ts": ts,
            "logger_name": logger_name(meta.target()),
            "pid": std::process::id(),
            "thread_name": std::thread::current().name().unwrap_or("main"),
            "app_name": APP,
            "extra": Value::Object(fields.0),
        });
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields as JSON values, numbers kept as numbers.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), json!(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), json!(value));
    }
}

/// Buffers one formatted event and writes it to stderr in one piece when
/// dropped, above the progress bars if they are drawn.
pub struct LineWriter(Vec<u8>);

impl LineWriter {
    fn make() -> LineWriter {
        LineWriter(Vec::with_capacity(256))
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            print_above(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_use_python_names() {
        let cases = [
            (Level::ERROR, "error"),
            (Level::WARN, "warning"),
            (Level::INFO, "info"),
            (Level::DEBUG, "debug"),
            (Level::TRACE, "debug"),
        ];
        for (level, want) in cases {
            assert_eq!(python_level(&level), want, "{level}");
        }
    }

    #[test]
    fn logger_names_are_dotted() {
        let cases = [
            ("tap_planetscale", "tap-planetscale"),
            (
                "tap_planetscale::sync::reader",
                "tap-planetscale.sync.reader",
            ),
            ("mysql_async::conn", "mysql_async.conn"),
        ];
        for (target, want) in cases {
            assert_eq!(logger_name(target), want, "{target}");
        }
    }
}
