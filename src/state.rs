//! Singer state: one cursor per (stream, shard), byte-compatible with the Go
//! tap in both directions.
//!
//! `{"bookmarks": {<stream>: {"shards": {<shard>: {"cursor": <b64>}}}}}`,
//! where the cursor is standard base64 of a protobuf `TableCursor`. Maps are
//! `BTreeMap`s so keys come out sorted, as Go's encoder sorts them. Anything
//! else found in a state (other top-level keys, extra stream keys such as our
//! FULL_TABLE `version`) is kept as it was, so streams and shards that this run
//! does not touch pass through every STATE message unchanged.
//!
//! Every rule about bookmarks lives here: cursors never move backward
//! ([`State::advance`]), a copy's floor, a FULL_TABLE copy's version, and a
//! truncated stream's re-copy ([`State::recopy`]). Our own keys are ones the
//! Go tap ignores, so a state passes between the two taps either way.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::pb::psdbconnect::v1alpha1::TableCursor;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}; pass the last STATE value written by the tap, or leave out --state to start over")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid JSON ({source}); pass the last STATE value written by the tap")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("state file {path} has no `bookmarks` object; expected {{\"bookmarks\": {{<stream>: {{\"shards\": ...}}}}}}")]
    Shape { path: String },
    #[error("state file {path}: stream `{stream}` shard `{shard}` has a cursor that is {problem}; remove that shard's entry to restart it from a full copy")]
    Cursor {
        path: String,
        stream: String,
        shard: String,
        problem: CursorProblem,
    },
    #[error("state file {path}: stream `{stream}` shard `{shard}` belongs to keyspace `{found}`, not `{expected}`; this state is for another database")]
    Keyspace {
        path: String,
        stream: String,
        shard: String,
        found: String,
        expected: String,
    },
    #[error("state file {path}: stream `{stream}` has a cursor for shard `{shard}`, which keyspace `{keyspace}` no longer has (it has {available}); after a reshard, remove that stream's bookmark to copy it afresh")]
    GoneShard {
        path: String,
        stream: String,
        shard: String,
        keyspace: String,
        available: String,
    },
    #[error("shard `{shard}` is not in keyspace `{keyspace}` (it has {available}); fix the `shards` setting")]
    UnknownShard {
        shard: String,
        keyspace: String,
        available: String,
    },
}

/// Shard bookmark key holding a copy's floor (see [`State::copy_floor`]).
const COPY_FLOOR: &str = "copy_floor";
/// Stream bookmark key of a FULL_TABLE copy's version.
const VERSION_KEY: &str = "version";
/// Stream bookmark key set once a FULL_TABLE copy has completed (ppw's name).
const COMPLETE_KEY: &str = "initial_full_table_complete";

/// Stream bookmark key set when the stream's table was truncated (under
/// `on_truncate: recopy`): its next run copies it again.
const RECOPY_KEY: &str = "recopy";
/// Stream bookmark key of the version of a re-copy that has begun.
const RECOPY_VERSION_KEY: &str = "recopy_version";

/// The re-copy of a stream this run, after a TRUNCATE or asked for (see [`State::recopy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recopy {
    pub version: i64,
    /// Begun this run (else an interrupted one resumed).
    pub begun: bool,
}

/// The version a FULL_TABLE stream's records carry this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullTableCopy {
    pub version: i64,
    /// The stream's first copy ever: activate the version at once, so its
    /// rows appear while the copy runs.
    pub first: bool,
}

/// One shard's saved cursor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardBookmark {
    pub cursor: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One stream's bookmarks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamBookmark {
    #[serde(default)]
    pub shards: BTreeMap<String, ShardBookmark>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The whole state value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    #[serde(default)]
    pub bookmarks: BTreeMap<String, StreamBookmark>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl State {
    /// Reads `--state`. A missing path is an error (the user named it); an
    /// empty file or `{}` is an empty state.
    pub fn from_path(path: &Path) -> Result<State, StateError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
            path: display.clone(),
            source,
        })?;
        State::from_text(&text, &display)
    }

    /// Accepts the bare value, the Go tap's wrapped `{"value": …}`, and
    /// Meltano's stored `{"singer_state": …}`.
    pub fn from_text(text: &str, path: &str) -> Result<State, StateError> {
        if text.trim().is_empty() {
            return Ok(State::default());
        }
        let value: Value = serde_json::from_str(text).map_err(|source| StateError::Json {
            path: path.to_string(),
            source,
        })?;
        let shape = || StateError::Shape {
            path: path.to_string(),
        };
        let Value::Object(obj) = value else {
            return Err(shape());
        };
        let inner = if obj.contains_key("bookmarks") {
            Value::Object(obj)
        } else if let Some(v @ Value::Object(_)) = obj.get("value") {
            v.clone()
        } else if let Some(v @ Value::Object(_)) = obj.get("singer_state") {
            v.clone()
        } else if obj.is_empty() {
            return Ok(State::default());
        } else {
            return Err(shape());
        };
        if inner
            .get("bookmarks")
            .is_some_and(|b| !b.is_object() && !b.is_null())
        {
            return Err(shape());
        }
        let mut inner = inner;
        if inner.get("bookmarks").is_some_and(Value::is_null) {
            if let Some(o) = inner.as_object_mut() {
                o.remove("bookmarks");
            }
        }
        let state: State = serde_json::from_value(inner).map_err(|source| StateError::Json {
            path: path.to_string(),
            source,
        })?;
        // Every cursor must decode now, not halfway through a sync.
        for (stream, sb) in &state.bookmarks {
            for (shard, b) in &sb.shards {
                decode_cursor(&b.cursor).map_err(|problem| StateError::Cursor {
                    path: path.to_string(),
                    stream: stream.clone(),
                    shard: shard.clone(),
                    problem,
                })?;
            }
        }
        Ok(state)
    }

    /// Checks that every cursor of the given streams belongs to `keyspace`.
    pub fn check_keyspace(&self, path: &str, keyspace: &str) -> Result<(), StateError> {
        for (stream, sb) in &self.bookmarks {
            for (shard, b) in &sb.shards {
                if let Ok(tc) = decode_cursor(&b.cursor) {
                    if !tc.keyspace.is_empty() && tc.keyspace != keyspace {
                        return Err(StateError::Keyspace {
                            path: path.to_string(),
                            stream: stream.clone(),
                            shard: shard.clone(),
                            found: tc.keyspace,
                            expected: keyspace.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The saved cursor of one (stream, shard).
    pub fn cursor(&self, stream: &str, shard: &str) -> Option<TableCursor> {
        let b = self.bookmarks.get(stream)?.shards.get(shard)?;
        decode_cursor(&b.cursor).ok()
    }

    /// Stores a cursor for one (stream, shard).
    /// Replaces the cursor unconditionally (a start, or a reset by choice
    /// after a purged position); readers' cursors go through [`State::advance`].
    pub fn set_cursor(&mut self, stream: &str, shard: &str, cursor: &TableCursor) {
        let entry = self.bookmarks.entry(stream.to_string()).or_default();
        let encoded = encode_cursor(cursor);
        match entry.shards.get_mut(shard) {
            Some(b) => b.cursor = encoded,
            None => {
                entry.shards.insert(
                    shard.to_string(),
                    ShardBookmark {
                        cursor: encoded,
                        extra: Map::new(),
                    },
                );
            }
        }
    }

    /// The position a copy of this (stream, shard) began at, kept beside
    /// the cursor (`copy_floor`, a key the Go tap ignores) from before the
    /// first record of the copy until the copy is done, so that a copy
    /// restarted after a crash also replays the changes since then.
    pub fn copy_floor(&self, stream: &str, shard: &str) -> Option<String> {
        self.bookmarks
            .get(stream)?
            .shards
            .get(shard)?
            .extra
            .get(COPY_FLOOR)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Sets or clears the copy floor of one (stream, shard).
    pub fn set_copy_floor(&mut self, stream: &str, shard: &str, floor: Option<&str>) {
        let Some(b) = self
            .bookmarks
            .get_mut(stream)
            .and_then(|sb| sb.shards.get_mut(shard))
        else {
            return;
        };
        match floor {
            Some(f) => {
                b.extra
                    .insert(COPY_FLOOR.into(), Value::String(f.to_string()));
            }
            None => {
                b.extra.remove(COPY_FLOOR);
            }
        }
    }

    /// Fills in a starting cursor for every (stream, shard) that has none:
    /// `starting_gtids` when given, else an empty position (a full copy).
    pub fn initialize(
        &mut self,
        stream: &str,
        keyspace: &str,
        shards: &[String],
        starting: Option<&BTreeMap<String, String>>,
    ) {
        for shard in shards {
            if self.cursor(stream, shard).is_some() {
                continue;
            }
            let position = starting
                .and_then(|m| m.get(shard))
                .cloned()
                .unwrap_or_default();
            self.set_cursor(
                stream,
                shard,
                &TableCursor {
                    shard: shard.clone(),
                    keyspace: keyspace.to_string(),
                    position,
                    last_known_pk: None,
                },
            );
        }
    }

    /// Adopts a reader's cursor for one (stream, shard), unless it would
    /// move backward (see [`advances`]); `false` when it was refused. A
    /// cursor past its copy also ends the copy's floor.
    pub fn advance(&mut self, stream: &str, shard: &str, cursor: &TableCursor) -> bool {
        if let Some(old) = self.cursor(stream, shard) {
            if !advances(&old, cursor) {
                return false;
            }
        }
        self.set_cursor(stream, shard, cursor);
        if cursor.last_known_pk.is_none() && !cursor.position.is_empty() {
            self.set_copy_floor(stream, shard, None);
        }
        true
    }

    /// The FULL_TABLE copy of `stream` this run: the interrupted one resumed
    /// with its version when `resumable`, or a new one at `now_ms` with its
    /// shard cursors cleared.
    pub fn full_table_copy(&mut self, stream: &str, resumable: bool, now_ms: i64) -> FullTableCopy {
        let bm = self.bookmarks.entry(stream.to_string()).or_default();
        let in_progress = bm.extra.get(COMPLETE_KEY).and_then(Value::as_bool) == Some(false);
        let old = bm.extra.get(VERSION_KEY).and_then(Value::as_i64);
        if let (true, true, Some(version)) = (resumable, in_progress, old) {
            return FullTableCopy {
                version,
                first: false,
            };
        }
        bm.shards.clear();
        bm.extra.insert(VERSION_KEY.into(), Value::from(now_ms));
        bm.extra.insert(COMPLETE_KEY.into(), Value::Bool(false));
        FullTableCopy {
            version: now_ms,
            first: old.is_none(),
        }
    }

    /// Marks the FULL_TABLE copy of `stream` complete: the next run copies
    /// afresh under a new version.
    pub fn complete_full_table(&mut self, stream: &str) {
        if let Some(bm) = self.bookmarks.get_mut(stream) {
            bm.shards.clear();
            bm.extra.insert(COMPLETE_KEY.into(), Value::Bool(true));
        }
    }

    /// Drops FULL_TABLE bookkeeping from a stream now synced by changes.
    pub fn forget_full_table(&mut self, stream: &str) {
        if let Some(bm) = self.bookmarks.get_mut(stream) {
            bm.extra.remove(VERSION_KEY);
            bm.extra.remove(COMPLETE_KEY);
        }
    }

    /// Marks `stream` for a re-copy: its table was truncated, so the target
    /// holds rows that are gone. Set before the checkpoint adopts the cursor
    /// past the TRUNCATE, so no STATE covers the TRUNCATE without the mark.
    pub fn mark_recopy(&mut self, stream: &str) {
        let bm = self.bookmarks.entry(stream.to_string()).or_default();
        bm.extra.insert(RECOPY_KEY.into(), Value::Bool(true));
    }

    /// The re-copy of `stream` this run, if it has one.
    ///
    /// A marked stream begins one under a new version (`now_ms`, or one
    /// more than an interrupted re-copy's), with every shard's bookmark
    /// dropped, those of shards this run does not read included: each shard
    /// is then copied again, whichever run reads it, and the records carry
    /// the version until [`State::complete_recopy`]. A re-copy that has begun
    /// and is not complete resumes with its version and its cursors, so an
    /// interrupted one is finished under the same version.
    pub fn recopy(&mut self, stream: &str, now_ms: i64) -> Option<Recopy> {
        let bm = self.bookmarks.get_mut(stream)?;
        let old = bm.extra.get(RECOPY_VERSION_KEY).and_then(Value::as_i64);
        if bm.extra.remove(RECOPY_KEY).is_none() {
            return old.map(|version| Recopy {
                version,
                begun: false,
            });
        }
        let version = old.map_or(now_ms, |v| now_ms.max(v + 1));
        bm.shards.clear();
        bm.extra
            .insert(RECOPY_VERSION_KEY.into(), Value::from(version));
        Some(Recopy {
            version,
            begun: true,
        })
    }

    /// Whether a re-copy of `stream` has begun and is not complete.
    pub fn recopy_under_way(&self, stream: &str) -> bool {
        self.bookmarks
            .get(stream)
            .is_some_and(|bm| bm.extra.contains_key(RECOPY_VERSION_KEY))
    }

    /// Ends the re-copy of `stream` once every shard's copy is done and its
    /// version activated: the cursors stay, and change capture goes on
    /// from them. A mark set meanwhile (a new TRUNCATE) stays too.
    pub fn complete_recopy(&mut self, stream: &str) {
        if let Some(bm) = self.bookmarks.get_mut(stream) {
            bm.extra.remove(RECOPY_VERSION_KEY);
        }
    }

    /// Drops re-copy bookkeeping from a stream now synced as FULL_TABLE,
    /// which copies it whole every run anyway.
    pub fn forget_recopy(&mut self, stream: &str) {
        if let Some(bm) = self.bookmarks.get_mut(stream) {
            bm.extra.remove(RECOPY_KEY);
            bm.extra.remove(RECOPY_VERSION_KEY);
        }
    }

    /// Compact JSON of the state value, as STATE messages carry it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Whether `new` may replace `old` for one (stream, shard). A cursor never
/// moves backward: once a shard is past its copy, a copy cursor or an older
/// position is refused. During a copy the primary key advances and the
/// server is trusted; an empty old cursor accepts anything.
pub fn advances(old: &TableCursor, new: &TableCursor) -> bool {
    use crate::position::Position;
    if old.last_known_pk.is_some() || old.position.is_empty() {
        return true;
    }
    if new.last_known_pk.is_some() {
        return false;
    }
    match (
        Position::parse(&old.position),
        Position::parse(&new.position),
    ) {
        (Ok(o), Ok(n)) => n.at_least(&o),
        _ => false,
    }
}

/// base64(protobuf TableCursor), exactly as the Go tap writes it.
pub fn encode_cursor(cursor: &TableCursor) -> String {
    B64.encode(cursor.encode_to_vec())
}

/// What is wrong with a saved cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorProblem {
    #[error("not base64 ({0})")]
    Base64(String),
    #[error("not a protobuf TableCursor ({0})")]
    Protobuf(String),
    #[error("a TableCursor with no shard or keyspace")]
    Unnamed,
    #[error("holding an unreadable position ({0})")]
    Position(String),
}

/// Decodes a saved cursor, saying what is wrong with it.
pub fn decode_cursor(text: &str) -> Result<TableCursor, CursorProblem> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| CursorProblem::Base64(e.to_string()))?;
    let tc = TableCursor::decode(bytes.as_slice())
        .map_err(|e| CursorProblem::Protobuf(e.to_string()))?;
    if tc.shard.is_empty() && tc.keyspace.is_empty() && !bytes.is_empty() {
        return Err(CursorProblem::Unnamed);
    }
    if let Err(e) = crate::position::Position::parse(&tc.position) {
        return Err(CursorProblem::Position(e.to_string()));
    }
    Ok(tc)
}

/// Resolves the shard list: every shard of the keyspace, or the configured
/// subset, each of which must exist.
pub fn select_shards(
    keyspace: &str,
    available: &[String],
    subset: Option<&[String]>,
) -> Result<Vec<String>, StateError> {
    let Some(subset) = subset else {
        return Ok(available.to_vec());
    };
    for s in subset {
        if !available.contains(s) {
            return Err(StateError::UnknownShard {
                shard: s.clone(),
                keyspace: keyspace.to_string(),
                available: available.join(", "),
            });
        }
    }
    Ok(subset.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POS: &str = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-717,e4e20f06-e28f-11ec-8d20-8e7ac09cb64c:1-44,eba743a8-e28f-11ec-9227-62aa711d33c6:1-32";

    /// wire-protocol.md §6.6 vectors.
    #[test]
    fn cursor_vectors() {
        let tc = TableCursor {
            shard: "-".into(),
            keyspace: "import-on-scaler".into(),
            position: String::new(),
            last_known_pk: None,
        };
        assert_eq!(encode_cursor(&tc), "CgEtEhBpbXBvcnQtb24tc2NhbGVy");
        let with_pos = TableCursor {
            position: POS.into(),
            ..tc.clone()
        };
        let enc = encode_cursor(&with_pos);
        // The full cursor string from the Go singer-tap README.
        assert_eq!(enc, "CgEtEhBpbXBvcnQtb24tc2NhbGVyGoYBTXlTUUw1Ni9lNDIyOTJlOC1lMjhmLTExZWMtOWM1Yi1kNjgwZjVkNjU1YjM6MS03MTcsZTRlMjBmMDYtZTI4Zi0xMWVjLThkMjAtOGU3YWMwOWNiNjRjOjEtNDQsZWJhNzQzYTgtZTI4Zi0xMWVjLTkyMjctNjJhYTcxMWQzM2M2OjEtMzI=");
        let bytes = B64.decode(&enc).expect("b64");
        assert_eq!(&bytes[..21], b"\x0a\x01\x2d\x12\x10import-on-scaler");
        assert_eq!(&bytes[21..24], b"\x1a\x86\x01");
        assert_eq!(decode_cursor(&enc).expect("decodes"), with_pos);
    }

    #[test]
    fn state_forms() {
        let bare =
            r#"{"bookmarks":{"users":{"shards":{"-":{"cursor":"CgEtEhBpbXBvcnQtb24tc2NhbGVy"}}}}}"#;
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("   \n", 0),
            ("{}", 0),
            (bare, 1),
            (&format!(r#"{{"value":{bare}}}"#), 1),
            (&format!(r#"{{"singer_state":{bare}}}"#), 1),
            (r#"{"bookmarks":{}}"#, 0),
            (r#"{"bookmarks":null}"#, 0),
        ];
        for (text, n) in cases {
            let s = State::from_text(text, "s.json").expect(text);
            assert_eq!(s.bookmarks.len(), *n, "{text}");
        }
        // byte-identical round trip of the Go form
        let s = State::from_text(bare, "s.json").expect("bare");
        assert_eq!(serde_json::to_string(&s).expect("json"), bare);
    }

    #[test]
    fn unknown_keys_survive() {
        let text = r#"{"bookmarks":{"a":{"shards":{"-":{"cursor":"CgEtEhBpbXBvcnQtb24tc2NhbGVy","x":1}},"version":17}},"currently_syncing":null}"#;
        let mut s = State::from_text(text, "s.json").expect("valid");
        let tc = TableCursor {
            shard: "-80".into(),
            keyspace: "import-on-scaler".into(),
            position: String::new(),
            last_known_pk: None,
        };
        s.set_cursor("b", "-80", &tc);
        let out = serde_json::to_string(&s).expect("json");
        assert!(out.contains(r#""x":1"#), "{out}");
        assert!(out.contains(r#""version":17"#), "{out}");
        assert!(out.contains(r#""currently_syncing":null"#), "{out}");
        assert!(out.contains(r#""b":{"shards":{"-80":"#), "{out}");
    }

    #[test]
    fn bad_states() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not valid JSON"),
            ("[1,2]", "no `bookmarks` object"),
            (r#"{"foo":1}"#, "no `bookmarks` object"),
            (r#"{"bookmarks":[1]}"#, "no `bookmarks` object"),
            (
                r#"{"bookmarks":{"t":{"shards":{"-":{"cursor":"!!!"}}}}}"#,
                "stream `t` shard `-` has a cursor that is not base64",
            ),
            (
                r#"{"bookmarks":{"t":{"shards":{"-":{"cursor":"/////w=="}}}}}"#,
                "not a protobuf TableCursor",
            ),
            (
                r#"{"bookmarks":{"t":{"shards":{"-":{"cursor":"aGVsbG8gd29ybGQ="}}}}}"#,
                "cursor that is",
            ),
            (
                r#"{"bookmarks":{"t":{"shards":{"-":{"nocursor":1}}}}}"#,
                "not valid JSON",
            ),
        ];
        for (text, want) in cases {
            let err = State::from_text(text, "s.json")
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{text}: `{err}` lacks `{want}`");
            assert!(err.contains("s.json"), "{err}");
        }
    }

    #[test]
    fn keyspace_check_and_init() {
        let mut s = State::default();
        let gtids: BTreeMap<String, String> = [("80-".to_string(), POS.to_string())].into();
        s.initialize("t", "ks", &["-80".into(), "80-".into()], Some(&gtids));
        assert_eq!(
            s.cursor("t", "-80").map(|c| c.position),
            Some(String::new())
        );
        assert_eq!(
            s.cursor("t", "80-").map(|c| c.position),
            Some(POS.to_string())
        );
        // existing cursors are not replaced
        s.initialize("t", "ks", &["80-".into()], None);
        assert_eq!(
            s.cursor("t", "80-").map(|c| c.position),
            Some(POS.to_string())
        );
        assert!(s.check_keyspace("s.json", "ks").is_ok());
        let err = s
            .check_keyspace("s.json", "other")
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains("keyspace `ks`, not `other`"), "{err}");
    }

    const P5: &str = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5";
    const P9: &str = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-9";

    /// A cursor of shard `-` at `pos`, in its copy or past it.
    fn cursor(pos: &str, copying: bool) -> TableCursor {
        TableCursor {
            shard: "-".into(),
            keyspace: "ks".into(),
            position: pos.into(),
            last_known_pk: copying.then(crate::pb::query::QueryResult::default),
        }
    }

    #[test]
    fn cursors_never_move_backward() {
        let (a, b, c) = (P5, P9, cursor);
        // (old, new, accepted)
        let cases = [
            (c("", false), c("", true), true),
            (c("", false), c(a, false), true),
            (c(a, true), c(a, true), true),
            (c(a, true), c(b, false), true),
            (c(a, false), c(b, false), true),
            (c(a, false), c(a, false), true),
            (c(b, false), c(a, false), false),
            (c(a, false), c(b, true), false),
            (c(a, false), c("", false), false),
            (c(a, false), c("garbage", false), false),
        ];
        for (i, (old, new, want)) in cases.iter().enumerate() {
            assert_eq!(advances(old, new), *want, "case {i}");
        }
    }

    #[test]
    fn shard_subset() {
        let all = vec!["-80".to_string(), "80-".to_string()];
        assert_eq!(select_shards("ks", &all, None).expect("all"), all);
        assert_eq!(
            select_shards("ks", &all, Some(&["80-".to_string()])).expect("subset"),
            vec!["80-".to_string()]
        );
        let err = select_shards("ks", &all, Some(&["-".to_string()])).expect_err("unknown");
        assert!(err
            .to_string()
            .contains("shard `-` is not in keyspace `ks` (it has -80, 80-)"));
    }

    #[test]
    fn advance_refuses_to_go_back_and_ends_the_copy_floor() {
        let (a, b, c) = (P5, P9, cursor);
        let mut s = State::default();
        s.initialize("t", "ks", &["-".into()], None);
        s.set_copy_floor("t", "-", Some(a));
        assert!(s.advance("t", "-", &c(a, true)));
        assert_eq!(s.copy_floor("t", "-").as_deref(), Some(a), "copying");
        assert!(s.advance("t", "-", &c(b, false)));
        assert_eq!(s.copy_floor("t", "-"), None, "the copy is done");
        assert!(!s.advance("t", "-", &c(a, false)), "older");
        assert!(!s.advance("t", "-", &c(b, true)), "back into a copy");
        assert_eq!(s.cursor("t", "-").map(|c| c.position), Some(b.into()));
    }

    #[test]
    fn a_truncated_stream_is_recopied_under_a_version_that_survives_interruptions() {
        let cursor = TableCursor {
            shard: "-80".into(),
            keyspace: "ks".into(),
            position: "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5".into(),
            last_known_pk: None,
        };
        let begun = |version| {
            Some(Recopy {
                version,
                begun: true,
            })
        };
        let resumed = |version| {
            Some(Recopy {
                version,
                begun: false,
            })
        };
        // (what happens, the clock, what `recopy` then says, whether the
        // shard's cursor is still there)
        let steps: &[(&str, i64, Option<Recopy>, bool)] = &[
            ("nothing", 10, None, true),
            ("mark", 100, begun(100), false),
            // interrupted: the next run resumes with the same version
            ("cursor", 200, resumed(100), true),
            ("nothing", 300, resumed(100), true),
            // a new TRUNCATE during the re-copy: a new one, even if the clock
            // went back
            ("mark", 50, begun(101), false),
            ("cursor", 60, resumed(101), true),
            // done: the cursors stay, change capture goes on from them
            ("complete", 400, None, true),
            ("nothing", 500, None, true),
            // a TRUNCATE seen during the re-copy outlives its completion
            ("mark", 600, begun(600), false),
            ("mark complete", 700, begun(700), false),
            ("forget", 800, None, false),
        ];
        let mut s = State::default();
        s.set_cursor("t", "-80", &cursor);
        for (i, (what, now, want, has_cursor)) in steps.iter().enumerate() {
            for op in what.split(' ') {
                match op {
                    "mark" => s.mark_recopy("t"),
                    "cursor" => s.set_cursor("t", "-80", &cursor),
                    "complete" => s.complete_recopy("t"),
                    "forget" => s.forget_recopy("t"),
                    _ => {}
                }
            }
            assert_eq!(s.recopy("t", *now), *want, "step {i}: {what}");
            assert_eq!(
                s.cursor("t", "-80").is_some(),
                *has_cursor,
                "step {i}: {what}"
            );
        }
        let text = s.to_json().to_string();
        assert!(!text.contains("recopy"), "{text}");
        assert_eq!(State::default().recopy("none", 1), None);
    }

    #[test]
    fn full_table_copies_keep_or_renew_their_version() {
        let mut s = State::default();
        let first = s.full_table_copy("t", true, 10);
        assert_eq!(
            first,
            FullTableCopy {
                version: 10,
                first: true
            }
        );
        s.initialize("t", "ks", &["-".into()], None);
        // interrupted: resumed with its version when resumable
        let again = s.full_table_copy("t", true, 20);
        assert_eq!(
            again,
            FullTableCopy {
                version: 10,
                first: false
            }
        );
        assert!(s.cursor("t", "-").is_some(), "resumed where it was");
        // not resumable (a keyless table): a new version, shards cleared
        let keyless = s.full_table_copy("t", false, 30);
        assert_eq!(
            keyless,
            FullTableCopy {
                version: 30,
                first: false
            }
        );
        assert!(s.cursor("t", "-").is_none());
        s.complete_full_table("t");
        let next = s.full_table_copy("t", true, 40);
        assert_eq!(
            next,
            FullTableCopy {
                version: 40,
                first: false
            }
        );
        s.forget_full_table("t");
        let text = s.to_json().to_string();
        assert!(
            !text.contains("version") && !text.contains("initial_full_table_complete"),
            "{text}"
        );
    }
}
