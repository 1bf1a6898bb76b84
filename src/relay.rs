//! Singer lines in, [`Committer`] calls out.
//!
//! The one reader of Singer messages in the tap: `relay` runs it on stdin
//! (any tap's output, like the Go project's `http-tap`) and `sync --commit`
//! runs it on the tap's own output through an in-process pipe, so both push
//! with the same writer. Lines are read with a length limit, so one
//! runaway line cannot take all memory, and every input error names its
//! line number.

use std::borrow::Cow;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::commit::{CommitError, Committer, Totals};
use crate::error::kind::Kind;

/// Default longest line of `relay`, in KiB (`--buffer-size`). Twice and more
/// the largest request body, so any record that could be sent fits.
pub const DEFAULT_BUFFER_KIB: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{origin} line {line}: {problem}")]
    Input {
        origin: &'static str,
        line: u64,
        problem: String,
    },
    #[error("{origin} line {line}: {source}")]
    Commit {
        origin: &'static str,
        line: u64,
        source: CommitError,
    },
    #[error("cannot read {origin}: {source}")]
    Read {
        origin: &'static str,
        source: std::io::Error,
    },
    #[error("at the end of {origin}: {source}")]
    Finish {
        origin: &'static str,
        source: CommitError,
    },
}

impl RelayError {
    /// Bad input exits 2; the server, the network or the disk exit 1.
    pub fn kind(&self) -> Kind {
        match self {
            RelayError::Input { .. } => Kind::Input,
            RelayError::Commit { source, .. } | RelayError::Finish { source, .. } => source.kind(),
            RelayError::Read { .. } => Kind::Failed,
        }
    }
}

/// The fields of any Singer message that the relay uses; the rest
/// (`time_extracted`, `version`, `bookmark_properties` …) is skipped.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(default)]
    key_properties: Option<Vec<String>>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

/// One parsed line.
#[derive(Debug)]
enum Line<'a> {
    Schema {
        stream: Cow<'a, str>,
        schema: &'a RawValue,
        key_properties: Vec<String>,
    },
    Record {
        stream: Cow<'a, str>,
        record: &'a RawValue,
    },
    State {
        value: &'a RawValue,
    },
    ActivateVersion,
}

/// Parses one line, or says what is wrong with it.
fn parse(text: &str) -> Result<Line<'_>, String> {
    let m: Message<'_> = serde_json::from_str(text)
        .map_err(|e| format!("is not a Singer message (a JSON object on one line): {e}"))?;
    let kind = m
        .kind
        .ok_or("has no `type`; expected SCHEMA, RECORD, STATE or ACTIVATE_VERSION")?;
    let need = |what: &str| format!("{kind} has no `{what}`");
    match kind.as_ref() {
        "SCHEMA" => Ok(Line::Schema {
            stream: m.stream.ok_or_else(|| need("stream"))?,
            schema: m.schema.ok_or_else(|| need("schema"))?,
            key_properties: m.key_properties.unwrap_or_default(),
        }),
        "RECORD" => Ok(Line::Record {
            stream: m.stream.ok_or_else(|| need("stream"))?,
            record: m.record.ok_or_else(|| need("record"))?,
        }),
        "STATE" => Ok(Line::State {
            value: m.value.ok_or_else(|| need("value"))?,
        }),
        "ACTIVATE_VERSION" => Ok(Line::ActivateVersion),
        other => Err(format!(
            "unknown message type `{other}`; expected SCHEMA, RECORD, STATE or ACTIVATE_VERSION"
        )),
    }
}

enum Read {
    Line,
    Eof,
    TooLong,
}

/// Reads one line into `buf` (without its end of line), stopping early
/// when it grows past `limit` bytes.
async fn next_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Read> {
    buf.clear();
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Read::Eof
            } else {
                Read::Line
            });
        }
        let (take, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let content = if end { take - 1 } else { take };
        if buf.len().saturating_add(content) > limit {
            return Ok(Read::TooLong);
        }
        buf.extend_from_slice(&available[..content]);
        input.consume(take);
        if end {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Read::Line);
        }
    }
}

/// Relays every message of `input` and finishes the committer. `origin`
/// names the input in errors ("stdin"). Returns the newest state file.
pub async fn run<R: AsyncBufRead + Unpin>(
    mut input: R,
    mut committer: Committer,
    max_line: usize,
    origin: &'static str,
) -> Result<(Option<PathBuf>, Totals), RelayError> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut line: u64 = 0;
    loop {
        line += 1;
        match next_line(&mut input, &mut buf, max_line)
            .await
            .map_err(|source| RelayError::Read { origin, source })?
        {
            Read::Eof => break,
            Read::TooLong => {
                return Err(RelayError::Input {
                    origin,
                    line,
                    problem: format!(
                        "is longer than {max_line} bytes; raise --buffer-size (KiB) if the line is meant to be that long"
                    ),
                })
            }
            Read::Line => {}
        }
        let text = std::str::from_utf8(&buf).map_err(|e| RelayError::Input {
            origin,
            line,
            problem: format!("is not UTF-8 ({e})"),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let parsed = parse(text).map_err(|problem| RelayError::Input {
            origin,
            line,
            problem,
        })?;
        let done = match parsed {
            Line::Schema {
                stream,
                schema,
                key_properties,
            } => committer.schema(&stream, schema, &key_properties).await,
            Line::Record { stream, record } => committer.record(&stream, record).await,
            Line::State { value } => committer.state(value).await.map(|_| ()),
            Line::ActivateVersion => Ok(()),
        };
        done.map_err(|source| RelayError::Commit {
            origin,
            line,
            source,
        })?;
    }
    committer
        .finish()
        .await
        .map_err(|source| RelayError::Finish { origin, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_or_say_why_not() {
        let ok = [
            r#"{"type":"SCHEMA","stream":"t","schema":{"type":"object"},"key_properties":["id"],"bookmark_properties":[]}"#,
            r#"{"type":"RECORD","stream":"t","record":{"id":1},"version":3,"time_extracted":"2024-01-01T00:00:00Z"}"#,
            r#"{"type":"STATE","value":{"bookmarks":{}}}"#,
            r#"{"type":"ACTIVATE_VERSION","stream":"t","version":3}"#,
            r#"{"type":"SCHEMA","stream":"t\u0041","schema":{},"key_properties":[]}"#,
        ];
        for text in ok {
            assert!(parse(text).is_ok(), "{text}: {:?}", parse(text).err());
        }
        match parse(ok[0]) {
            Ok(Line::Schema {
                stream,
                schema,
                key_properties,
            }) => {
                assert_eq!(stream, "t");
                assert_eq!(schema.get(), r#"{"type":"object"}"#);
                assert_eq!(key_properties, vec!["id".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        let bad = [
            ("not json", "is not a Singer message"),
            ("[1,2]", "is not a Singer message"),
            (r#"{"stream":"t"}"#, "has no `type`"),
            (
                r#"{"type":"BATCH","stream":"t"}"#,
                "unknown message type `BATCH`",
            ),
            (r#"{"type":"RECORD","record":{}}"#, "RECORD has no `stream`"),
            (
                r#"{"type":"RECORD","stream":"t"}"#,
                "RECORD has no `record`",
            ),
            (
                r#"{"type":"SCHEMA","stream":"t"}"#,
                "SCHEMA has no `schema`",
            ),
            (r#"{"type":"STATE"}"#, "STATE has no `value`"),
        ];
        for (text, want) in bad {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[tokio::test]
    async fn lines_are_split_and_limited() {
        let input = b"ab\r\n\ncdef\nghijklmnop\nlast".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(3, &input[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match next_line(&mut r, &mut buf, 6).await.expect("read") {
                Read::Eof => break,
                Read::TooLong => {
                    got.push("<too long>".to_string());
                    break;
                }
                Read::Line => got.push(String::from_utf8(buf.clone()).expect("utf8")),
            }
        }
        assert_eq!(got, vec!["ab", "", "cdef", "<too long>"]);
        let mut r = tokio::io::BufReader::new(&b"123456\nx"[..]);
        assert!(matches!(
            next_line(&mut r, &mut buf, 6).await,
            Ok(Read::Line)
        ));
        assert_eq!(buf, b"123456");
        assert!(matches!(
            next_line(&mut r, &mut buf, 6).await,
            Ok(Read::Line)
        ));
        assert_eq!(buf, b"x");
        assert!(matches!(
            next_line(&mut r, &mut buf, 6).await,
            Ok(Read::Eof)
        ));
    }
}
