//! Commit mode: Singer messages in, Stitch Import API batches out.
//!
//! [`Committer`] consumes the messages a tap writes (SCHEMA, RECORD, STATE,
//! ACTIVATE_VERSION) whether they come from this tap's own sync (`sync
//! --commit`, through an in-process pipe) or from stdin (`relay`). It keeps
//! one pending request body per stream and sends it when the next record
//! would not fit (1000 messages or 2 MiB, measured exactly, see [`batch`]).
//!
//! The progress rule is the one of the Singer path, moved to the far side
//! of the network: a STATE becomes a state file only after every batch that
//! holds a record from before it has been accepted (2xx). Requests go one at
//! a time, so "accepted" is simply "sent before". A batch that got a 2xx is
//! dropped at once and never sent again; 408, 429, 5xx and connection
//! failures are retried with exponential backoff and jitter, any other
//! status ends the run with the server's message.
//!
//! ACTIVATE_VERSION has no Import API equivalent and is skipped: FULL_TABLE
//! rows are upserted like any other.

pub mod batch;
pub mod http;
pub mod pipe;
pub mod state_files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::config::{CommitConfig, ConfigError, Secret};
use crate::error::kind::Kind;
use crate::retry::{Policy, Retries};
use batch::{Envelope, Limits, Pending, Place, Sequence};
use http::{classify, server_message, ImportApi, Outcome};
use state_files::{StateDirectory, StateFileError};

/// Everything commit mode needs, validated.
#[derive(Debug, Clone)]
pub struct CommitSettings {
    pub api_url: String,
    pub api_token: Secret,
    pub batch_size: usize,
    pub state_directory: PathBuf,
    pub max_retries: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Setup(#[from] http::SetupError),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("stream `{stream}`: the record with key {key} makes a request body of {bytes} bytes on its own, over the Import API's limit of {limit}; nothing was sent for it. Deselect the large columns of that stream, or sync it in Singer mode")]
    RecordTooLarge {
        stream: String,
        key: String,
        bytes: usize,
        limit: usize,
    },
    #[error("RECORD for stream `{stream}` before any SCHEMA for it; a tap must send a stream's SCHEMA first")]
    RecordBeforeSchema { stream: String },
    #[error("stream `{stream}`: RECORD's `record` must be a JSON object, got {found}")]
    NotAnObject { stream: String, found: &'static str },
    #[error("the Import API refused a batch of stream `{stream}` with HTTP {status}: {message}")]
    Rejected {
        stream: String,
        status: u16,
        message: String,
    },
    #[error("the Import API did not take a batch of stream `{stream}` after {attempts} attempts; last: {last}. Rerun later from the newest state file")]
    GaveUp {
        stream: String,
        attempts: u32,
        last: String,
    },
}

impl CommitError {
    /// Exit-code class (see `error`): bad messages, a bad URL or token are
    /// input; what the server or the disk did fails the run.
    pub fn kind(&self) -> Kind {
        match self {
            CommitError::Setup(_)
            | CommitError::StateFile(StateFileError::Create { .. })
            | CommitError::RecordBeforeSchema { .. }
            | CommitError::NotAnObject { .. } => Kind::Input,
            _ => Kind::Failed,
        }
    }
}

impl CommitSettings {
    /// Commit mode's settings: the token and the state directory are
    /// required there.
    pub fn from_config(c: CommitConfig) -> Result<CommitSettings, ConfigError> {
        let api_token = c.api_token.ok_or(ConfigError::CommitNeeds {
            what: "an Import API token",
            flag: "--singer-api-token TOKEN",
            key: "singer_api_token",
        })?;
        let state_directory = c.state_directory.ok_or(ConfigError::CommitNeeds {
            what: "a directory for its state files",
            flag: "--state-directory DIR",
            key: "state_directory",
        })?;
        Ok(CommitSettings {
            api_url: c.api_url,
            api_token,
            batch_size: c.batch_size,
            state_directory,
            max_retries: c.max_retries,
            backoff: c.backoff,
            backoff_max: c.backoff_max,
            timeout: c.timeout,
        })
    }
}

/// One stream's request layout and pending records.
struct StreamQueue {
    schema: Box<RawValue>,
    key_names: Vec<String>,
    envelope: Envelope,
    pending: Pending,
}

/// Counters for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub records: u64,
    pub requests: u64,
    pub retries: u64,
    pub state_files: u64,
}

/// The commit-mode writer.
pub struct Committer {
    api: ImportApi,
    limits: Limits,
    settings: CommitSettings,
    streams: BTreeMap<String, StreamQueue>,
    sequence: Sequence,
    states: StateDirectory,
    totals: Totals,
    message: Vec<u8>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn json_kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

impl Committer {
    /// Opens (and creates) the state directory and checks the URL; sends
    /// nothing yet.
    pub fn new(settings: CommitSettings) -> Result<Committer, CommitError> {
        let api = ImportApi::new(&settings.api_url, &settings.api_token, settings.timeout)?;
        let states = StateDirectory::open(&settings.state_directory)?;
        Ok(Committer {
            api,
            limits: Limits::for_batch_size(settings.batch_size),
            settings,
            streams: BTreeMap::new(),
            sequence: Sequence::default(),
            states,
            totals: Totals::default(),
            message: Vec::with_capacity(4096),
        })
    }

    pub fn state_directory(&self) -> &Path {
        &self.settings.state_directory
    }

    /// A stream's SCHEMA. A changed schema first sends the records queued
    /// under the old one, so every body's records match its schema.
    pub async fn schema(
        &mut self,
        stream: &str,
        schema: &RawValue,
        key_names: &[String],
    ) -> Result<(), CommitError> {
        if let Some(q) = self.streams.get(stream) {
            if q.schema.get() == schema.get() && q.key_names == key_names {
                return Ok(());
            }
            self.send_pending(stream).await?;
        }
        self.streams.insert(
            stream.to_string(),
            StreamQueue {
                schema: schema.to_owned(),
                key_names: key_names.to_vec(),
                envelope: Envelope::new(stream, schema, key_names),
                pending: Pending::new(self.limits),
            },
        );
        Ok(())
    }

    /// One RECORD's `record`, converted by the tap exactly as in Singer
    /// mode and copied verbatim into the body.
    pub async fn record(&mut self, stream: &str, data: &RawValue) -> Result<(), CommitError> {
        if !data.get().trim_start().starts_with('{') {
            return Err(CommitError::NotAnObject {
                stream: stream.to_string(),
                found: json_kind(data.get()),
            });
        }
        let Some(q) = self.streams.get(stream) else {
            return Err(CommitError::RecordBeforeSchema {
                stream: stream.to_string(),
            });
        };
        let sequence = self.sequence.next(now_micros());
        self.message.clear();
        batch::encode_message(&mut self.message, sequence, data);
        match q.pending.place(&q.envelope, self.message.len()) {
            Place::TooLarge { body_bytes } => {
                return Err(CommitError::RecordTooLarge {
                    stream: stream.to_string(),
                    key: describe_key(data, &q.key_names),
                    bytes: body_bytes,
                    limit: self.limits.bytes,
                })
            }
            Place::AfterSend => self.send_pending(stream).await?,
            Place::Here => {}
        }
        let full = match self.streams.get_mut(stream) {
            Some(q) => {
                q.pending.push(&self.message);
                q.pending.is_full()
            }
            None => false,
        };
        self.totals.records += 1;
        if full {
            self.send_pending(stream).await?;
        }
        Ok(())
    }

    /// A STATE: every queued record is sent and accepted, then the value
    /// is written as a state file.
    pub async fn state(&mut self, value: &RawValue) -> Result<PathBuf, CommitError> {
        self.send_all().await?;
        let path = self.states.write(value.get().as_bytes())?;
        self.totals.state_files += 1;
        debug!(path = %path.display(), "state file written");
        Ok(path)
    }

    /// The end of the input: sends what is left. Returns the newest state
    /// file (of this run or an earlier one) and the totals.
    pub async fn finish(mut self) -> Result<(Option<PathBuf>, Totals), CommitError> {
        self.send_all().await?;
        info!(
            records = self.totals.records,
            requests = self.totals.requests,
            retries = self.totals.retries,
            state_files = self.totals.state_files,
            "import API: all batches accepted"
        );
        Ok((self.states.newest(), self.totals))
    }

    /// The newest state file so far, for a run that ends in an error.
    pub fn newest_state_file(&self) -> Option<PathBuf> {
        self.states.newest()
    }

    async fn send_all(&mut self) -> Result<(), CommitError> {
        let names: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, q)| !q.pending.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.send_pending(&name).await?;
        }
        Ok(())
    }

    /// Sends one stream's pending body until it is accepted, refused, or
    /// the retries run out.
    async fn send_pending(&mut self, stream: &str) -> Result<(), CommitError> {
        let Some(q) = self.streams.get_mut(stream) else {
            return Ok(());
        };
        if q.pending.is_empty() {
            return Ok(());
        }
        let count = q.pending.len();
        let body = q.pending.take_body(&q.envelope);
        let bytes = body.len();
        let mut retries = Retries::new(Policy {
            attempts: self.settings.max_retries,
            budget: None,
            first: self.settings.backoff,
            max: self.settings.backoff_max,
        });
        loop {
            let started = std::time::Instant::now();
            let (problem, wait) = match self.api.post_batch(body.clone()).await {
                Ok(reply) => match classify(reply.status) {
                    Outcome::Accepted => {
                        self.totals.requests += 1;
                        debug!(
                            stream,
                            records = count,
                            bytes,
                            status = reply.status,
                            ms = started.elapsed().as_millis() as u64,
                            "batch accepted"
                        );
                        return Ok(());
                    }
                    Outcome::Reject => {
                        return Err(CommitError::Rejected {
                            stream: stream.to_string(),
                            status: reply.status,
                            message: server_message(&reply.body),
                        })
                    }
                    Outcome::Retry => (
                        format!("HTTP {}: {}", reply.status, server_message(&reply.body)),
                        reply.retry_after,
                    ),
                },
                Err(e) => (e.to_string(), None),
            };
            let Some(backoff) = retries.next_wait() else {
                return Err(CommitError::GaveUp {
                    stream: stream.to_string(),
                    attempts: retries.attempts() + 1,
                    last: problem,
                });
            };
            // A server's Retry-After is honoured up to the longest backoff.
            let wait = wait
                .map(|w| w.min(self.settings.backoff_max).max(backoff))
                .unwrap_or(backoff);
            self.totals.retries += 1;
            let attempt = retries.attempts();
            warn!(stream, attempt, records = count, error = %problem, wait_ms = wait.as_millis() as u64, "import API batch failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// `id=5, part="a"` for an error message, from the record's key columns.
fn describe_key(data: &RawValue, key_names: &[String]) -> String {
    let Ok(map) = serde_json::from_str::<Map<String, Value>>(data.get()) else {
        return "(unreadable)".into();
    };
    if key_names.is_empty() {
        return "(the stream has no key properties)".into();
    }
    key_names
        .iter()
        .map(|k| format!("{k}={}", map.get(k).unwrap_or(&Value::Null)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_described() {
        let data =
            RawValue::from_string(r#"{"id":5,"part":"a","big":"xxx"}"#.into()).expect("json");
        let cases: &[(&[&str], &str)] = &[
            (&["id"], "id=5"),
            (&["id", "part"], "id=5, part=\"a\""),
            (&["gone"], "gone=null"),
            (&[], "(the stream has no key properties)"),
        ];
        for (keys, want) in cases {
            let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
            assert_eq!(describe_key(&data, &keys), *want);
        }
    }
}
