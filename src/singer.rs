//! Singer messages and the one writer that owns stdout.
//!
//! Nothing else in the process writes to stdout: logs go to stderr, and
//! every message passes through [`SingerWriter`], which buffers large writes
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
        SingerWriter::new(io::stdout())
    }
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

    /// Writes a STATE after flushing every record before it.
    pub fn state(&mut self, value: &Value) -> io::Result<()> {
        self.message(&Message::State { value })?;
        self.out.flush()
    }

    pub fn activate_version(&mut self, stream: &str, version: i64) -> io::Result<()> {
        self.message(&Message::ActivateVersion { stream, version })
    }

    /// Writes one RECORD. `body` writes the record object (`{...}`) into the
    /// buffer it is given; `stream` must already be a JSON string literal
    /// (quoted and escaped), so hot loops escape it once per stream.
    pub fn record_with<F>(
        &mut self,
        stream_json: &str,
        version: Option<i64>,
        time_extracted: &str,
        body: F,
    ) -> io::Result<()>
    where
        F: FnOnce(&mut Vec<u8>) -> io::Result<()>,
    {
        self.line.clear();
        self.line
            .extend_from_slice(b"{\"type\":\"RECORD\",\"stream\":");
        self.line.extend_from_slice(stream_json.as_bytes());
        self.line.extend_from_slice(b",\"record\":");
        body(&mut self.line)?;
        if let Some(v) = version {
            self.line.extend_from_slice(b",\"version\":");
            self.line.extend_from_slice(v.to_string().as_bytes());
        }
        self.line.extend_from_slice(b",\"time_extracted\":\"");
        self.line.extend_from_slice(time_extracted.as_bytes());
        self.line.extend_from_slice(b"\"}\n");
        self.records += 1;
        self.out.write_all(&self.line)
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
        self.record_with(&stream_json, version, time_extracted, |buf| {
            serde_json::to_writer(buf, record).map_err(io::Error::other)
        })
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
    fn broken_pipe_is_recognised() {
        let mut w = SingerWriter::new(Closed);
        let err = w.state(&json!({})).expect_err("closed");
        assert!(is_broken_pipe(&err));
        let wrapped = anyhow::Error::new(err).context("writing state");
        assert!(is_broken_pipe(wrapped.as_ref()));
    }
}
