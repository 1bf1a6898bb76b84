//! Singer messages and the one module that owns stdout.
//!
//! Nothing else in the process writes to stdout: logs go to stderr, every
//! Singer message passes through [`SingerWriter`], and the few outputs that
//! are not Singer messages (`--about`, the `check` report, commit mode's
//! state file path) go through [`print`]. [`SingerWriter`] buffers large writes
//! and flushes before each STATE so that a STATE line never reaches the
//! target ahead of the records it covers. Messages are serialized from
//! borrowed data; RECORD bodies can be written straight into the buffer by
//! the converter without building a `serde_json::Value` per row.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

/// Buffer size for stdout: large writes, few syscalls.
const BUFFER: usize = 256 * 1024;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
enum Message<'a> {
    Schema {
        stream: &'a str,
        schema: &'a Value,
        key_properties: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        bookmark_properties: Option<&'a [String]>,
    },
    State {
        value: &'a Value,
    },
    ActivateVersion {
        stream: &'a str,
        version: i64,
    },
}

/// Writes Singer messages, one compact JSON object per line.
pub struct SingerWriter<W: Write> {
    out: io::BufWriter<W>,
    line: Vec<u8>,
    records: u64,
}

impl SingerWriter<io::Stdout> {
    pub fn stdout() -> Self {
        SingerWriter::new(stdout())
    }
}

/// The process's stdout, for a [`SingerWriter`] made elsewhere (the sync
/// writes to stdout or, in commit mode, to a pipe).
pub fn stdout() -> io::Stdout {
    let out = io::stdout();
    widen_pipe(&out);
    out
}

/// Bytes a stdout pipe is asked to hold (Linux's default unprivileged
/// limit, `/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: usize = 1 << 20;

/// Widens stdout when it is a pipe. A target reads in bursts; with the
/// default 64 KiB pipe every 256 KiB write blocks several times, and each
/// wake-up is a context switch on both sides (a 1M-row copy into `grep`:
/// 9.3k voluntary switches, 2.4k after). Not a pipe, or a lower limit:
/// nothing changes.
fn widen_pipe(out: &io::Stdout) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(out, PIPE_BYTES) {
        tracing::debug!("stdout pipe keeps its size: {e}");
    }
}

/// Writes one whole output that is not a Singer message and flushes it.
pub fn print(text: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text)?;
    out.flush()
}

/// [`print`] of one line.
pub fn print_line(line: &str) -> io::Result<()> {
    let mut text = Vec::with_capacity(line.len() + 1);
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
    print(&text)
}

/// Whether stdout is a terminal (a person, not a program, reads it).
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
}

impl<W: Write> SingerWriter<W> {
    pub fn new(out: W) -> Self {
        SingerWriter {
            out: io::BufWriter::with_capacity(BUFFER, out),
            line: Vec::with_capacity(4096),
            records: 0,
        }
    }

    fn message(&mut self, m: &Message<'_>) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, m).map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    pub fn schema(
        &mut self,
        stream: &str,
        schema: &Value,
        key_properties: &[String],
        bookmark_properties: Option<&[String]>,
    ) -> io::Result<()> {
        self.message(&Message::Schema {
            stream,
            schema,
            key_properties,
            bookmark_properties,
        })
    }

    /// Writes a STATE only after every record before it has been flushed,
    /// then flushes the STATE itself.
    pub fn state(&mut self, value: &Value) -> io::Result<()> {
        self.out.flush()?;
        self.message(&Message::State { value })?;
        self.out.flush()
    }

    pub fn activate_version(&mut self, stream: &str, version: i64) -> io::Result<()> {
        self.message(&Message::ActivateVersion { stream, version })
    }

    /// Writes RECORD lines that readers encoded with [`encode_record`].
    pub fn records_raw(&mut self, lines: &[u8], count: u64) -> io::Result<()> {
        self.records += count;
        self.out.write_all(lines)
    }

    /// Writes one RECORD from a ready JSON value (for slow paths and tests).
    pub fn record(
        &mut self,
        stream: &str,
        record: &Value,
        version: Option<i64>,
        time_extracted: &str,
    ) -> io::Result<()> {
        let stream_json = serde_json::to_string(stream).map_err(io::Error::other)?;
        self.line.clear();
        encode_record(
            &mut self.line,
            &stream_json,
            version,
            time_extracted,
            |buf| serde_json::to_writer(buf, record).map_err(|e| e.to_string()),
        )
        .map_err(io::Error::other)?;
        self.records += 1;
        self.out.write_all(&self.line)
    }

    /// Writes a whole document (the discovered catalog) and flushes.
    pub fn document(&mut self, doc: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut self.out, doc).map_err(io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn into_inner(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Appends one RECORD line to `buf`. `body` writes the record object
/// (`{...}`); `stream_json` is the stream name as a JSON string literal
/// (quoted and escaped once per stream, not per row). If `body` fails,
/// `buf` is left as it was.
pub fn encode_record<F, E>(
    buf: &mut Vec<u8>,
    stream_json: &str,
    version: Option<i64>,
    time_extracted: &str,
    body: F,
) -> Result<(), E>
where
    F: FnOnce(&mut Vec<u8>) -> Result<(), E>,
{
    let start = buf.len();
    buf.extend_from_slice(b"{\"type\":\"RECORD\",\"stream\":");
    buf.extend_from_slice(stream_json.as_bytes());
    buf.extend_from_slice(b",\"record\":");
    if let Err(e) = body(buf) {
        buf.truncate(start);
        return Err(e);
    }
    if let Some(v) = version {
        buf.extend_from_slice(b",\"version\":");
        crate::json::write_int(buf, v);
    }
    buf.extend_from_slice(b",\"time_extracted\":\"");
    buf.extend_from_slice(time_extracted.as_bytes());
    buf.extend_from_slice(b"\"}\n");
    Ok(())
}

/// RFC 3339 in UTC with microseconds (`2024-06-01T00:00:01.000000Z`), the
/// form singer-python writes for `time_extracted`.
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether an error (or anything in its chain) is a closed stdout.
pub fn is_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(w: SingerWriter<Vec<u8>>) -> Vec<Value> {
        let bytes = w.into_inner().expect("flush");
        String::from_utf8(bytes)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn messages_have_singer_shape() {
        let mut w = SingerWriter::new(Vec::new());
        let schema = json!({"type": "object", "properties": {"id": {"type": ["null", "integer"]}}});
        w.schema("users", &schema, &["id".to_string()], None)
            .expect("schema");
        w.activate_version("users", 1700000000000).expect("av");
        w.record(
            "users",
            &json!({"id": 1}),
            Some(1700000000000),
            "2024-01-01T00:00:00.000000Z",
        )
        .expect("record");
        w.record(
            "us\"ers",
            &json!({"id": 2}),
            None,
            "2024-01-01T00:00:00.000000Z",
        )
        .expect("record");
        w.state(&json!({"bookmarks": {}})).expect("state");
        assert_eq!(w.records(), 2);
        let got = lines(w);
        assert_eq!(
            got,
            vec![
                json!({"type": "SCHEMA", "stream": "users", "schema": schema, "key_properties": ["id"]}),
                json!({"type": "ACTIVATE_VERSION", "stream": "users", "version": 1700000000000i64}),
                json!({"type": "RECORD", "stream": "users", "record": {"id": 1}, "version": 1700000000000i64, "time_extracted": "2024-01-01T00:00:00.000000Z"}),
                json!({"type": "RECORD", "stream": "us\"ers", "record": {"id": 2}, "time_extracted": "2024-01-01T00:00:00.000000Z"}),
                json!({"type": "STATE", "value": {"bookmarks": {}}}),
            ]
        );
    }

    /// A writer whose sink has gone away reports a broken pipe.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn timestamps() {
        use std::time::{Duration, UNIX_EPOCH};
        let cases = [
            (0u64, 0u32, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 0, "2000-02-29T00:00:00.000000Z"),
            (1_709_164_800, 123_456_000, "2024-02-29T00:00:00.123456Z"),
            (4_102_444_799, 999_999_000, "2099-12-31T23:59:59.999999Z"),
        ];
        for (secs, nanos, want) in cases {
            assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::new(secs, nanos)), want);
        }
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let mut w = SingerWriter::new(Closed);
        let err = w.state(&json!({})).expect_err("closed");
        assert!(is_broken_pipe(&err));
        let wrapped = anyhow::Error::new(err).context("writing state");
        assert!(is_broken_pipe(wrapped.as_ref()));
    }
}
