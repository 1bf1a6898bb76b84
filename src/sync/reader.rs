//! One reader per (stream, shard): the read loop of design.md §7.
//!
//! The reader owns its sessions and its copy of the cursor. Each unit a
//! session yields becomes one [`Batch`] (see [`super::records`]) sent to
//! the checkpoint with the unit's cursor: the checkpoint writes the lines
//! first and only then adopts the cursor, so a STATE never runs ahead of
//! its records. The reader does not know which API it reads; that is
//! [`crate::psdb`]'s business.
//!
//! Stop rule: peek at `current` once per shard (shared by every stream of
//! that shard), then read until the cursor is past its copy and its position
//! contains the stop position (GTID-set `AtLeast`, not string equality). A
//! session that ends (deadline or end of stream) before that peeks again and
//! continues; a transient error retries from the last cursor with backoff.
//!
//! Copy floor: a copy resumed by primary key gets a new snapshot from the
//! server, so changes made between the first snapshot and the new one to
//! rows already copied would be lost. The position where the copy began is
//! kept in the saved copy cursor (and in the state before the copy's first
//! record) and, once the copy ends, changes are read again from it.
//!
//! TRUNCATE: the server sends it as one statement, not as row deletes, so
//! the target keeps rows that are gone. The reader says so, naming the
//! stream, and under `on_truncate: recopy` tells the checkpoint to mark the
//! stream for a re-copy before it sends the cursor past the TRUNCATE (one
//! channel, so the mark is in every STATE that covers the TRUNCATE). It
//! reads on: rows written after the TRUNCATE still flow; the next run
//! copies the stream again (see [`crate::state::State::recopy`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OnceCell};
use tracing::{debug, info, warn};

use super::error::ReadError;
use super::plan::{self, Slot};
use super::records::{Batch, ColumnWarning, LinePool, Records};
use crate::catalog::ReplicationMethod;
use crate::config::{OnTruncate, Settings};
use crate::pb::psdbconnect::v1alpha1::TableCursor;
use crate::position::Position;
use crate::psdb::{classify, PsdbClient, Resume, SessionError, StatusClass, Target, Unit};
use crate::retry::{Policy, Retries};

/// What every reader of a run shares.
pub struct Shared {
    pub client: PsdbClient,
    pub settings: Settings,
    pub cells: Vec<String>,
    /// `_sdc_source_sequence`: rises across the run (and across runs, being
    /// seeded from the clock).
    pub sequence: Arc<AtomicU64>,
    /// The stop position of each shard, peeked once per run.
    pub stops: Vec<(String, OnceCell<String>)>,
    pub lines: LinePool,
}

/// What a reader tells the checkpoint.
pub enum Event {
    Batch {
        slot: usize,
        batch: Batch,
    },
    /// The cursor must go back to this one (a purged position restarted as
    /// a full copy, by the user's choice).
    Reset {
        slot: usize,
        cursor: TableCursor,
    },
    /// The stream's table was truncated (`on_truncate: recopy`): mark the
    /// stream for a re-copy, before this slot's next cursor.
    Truncated {
        slot: usize,
    },
    /// A copy is about to begin at or after this position: saved (and a
    /// STATE emitted) before the copy's first record.
    CopyFloor {
        slot: usize,
        floor: String,
    },
    Done {
        slot: usize,
        warnings: Vec<ColumnWarning>,
    },
    Failed {
        slot: usize,
        error: ReadError,
    },
}

/// Runs one slot to completion and reports to the checkpoint.
pub async fn run(shared: Arc<Shared>, slot: Slot, tx: mpsc::Sender<Event>) {
    let index = slot.index;
    let mut reader = Reader::new(&shared, slot, &tx);
    let event = match reader.read().await {
        Ok(()) => Event::Done {
            slot: index,
            warnings: reader.records.warnings(),
        },
        Err(error) => Event::Failed { slot: index, error },
    };
    let _ = tx.send(event).await;
}

/// Why a session ended.
enum Ended {
    /// The stop position is reached: the slot is done.
    Caught,
    /// Open a new session (after a deadline, an early end, a rewind to the
    /// copy floor or a recovered error).
    Again,
    /// The checkpoint is gone: the run is shutting down.
    Shutdown,
}

/// What a unit meant for its session.
enum After {
    /// Read on; `moved` when the unit carried a cursor.
    Next {
        moved: bool,
    },
    End(Ended),
}

/// One slot's reading, kept across sessions.
struct Reader<'a> {
    shared: &'a Shared,
    slot: Slot,
    target: Target,
    tx: &'a mpsc::Sender<Event>,
    records: Records,
    cursor: TableCursor,
    copying: bool,
    /// The columns to request; re-read if the table loses one mid-run.
    columns: Vec<String>,
    retries: Retries,
    /// Where the current copy began (see the module doc).
    floor: Option<String>,
    /// Whether this copy has been restarted (here or in an earlier run);
    /// only then can rows already emitted be older than the copy's snapshot.
    resumed: bool,
}

impl<'a> Reader<'a> {
    fn new(shared: &'a Shared, slot: Slot, tx: &'a mpsc::Sender<Event>) -> Reader<'a> {
        let settings = &shared.settings;
        let start = slot.start.clone();
        let floor: Option<String> = start
            .last_known_pk
            .as_ref()
            .and(Some(start.position.clone()))
            .filter(|p| !p.is_empty())
            .or_else(|| slot.floor.clone());
        Reader {
            shared,
            target: Target {
                keyspace: settings.database.clone(),
                shard: slot.shard.clone(),
                table: slot.stream.table.clone(),
                tablet_type: settings.tablet_type,
                cells: shared.cells.clone(),
            },
            tx,
            records: Records::new(
                slot.stream.clone(),
                &slot.shard,
                settings.include_metadata,
                shared.sequence.clone(),
            ),
            copying: start.last_known_pk.is_some() || start.position.is_empty(),
            cursor: start,
            columns: slot.stream.columns.clone(),
            retries: Retries::new(Policy::reading(settings.max_retries, settings.retry_budget)),
            resumed: floor.is_some(),
            floor,
            slot,
        }
    }

    async fn read(&mut self) -> Result<(), ReadError> {
        let started = Instant::now();
        let mut first_stop = true;
        loop {
            let Some((stop_text, stop)) = self.stop(first_stop).await? else {
                continue;
            };
            first_stop = false;
            if reached(&self.cursor, &stop) {
                debug!(stream = %self.slot.stream.name, shard = %self.slot.shard, "nothing new");
                return Ok(());
            }
            if self.cursor.position.is_empty()
                && self.cursor.last_known_pk.is_none()
                && self.floor.is_none()
            {
                // A fresh copy: its floor is the stop position just peeked,
                // at or before the copy's own snapshot. It reaches the state
                // before the copy's first record.
                self.floor = Some(stop_text.clone());
                let event = Event::CopyFloor {
                    slot: self.slot.index,
                    floor: stop_text,
                };
                if self.tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
            if self.cursor.last_known_pk.is_some() {
                self.resumed = true;
            }
            match self.session(&stop).await? {
                Ended::Caught => {
                    info!(stream = %self.slot.stream.name, shard = %self.slot.shard, secs = started.elapsed().as_secs_f64(), "caught up");
                    return Ok(());
                }
                Ended::Shutdown => return Ok(()),
                Ended::Again => {}
            }
        }
    }

    /// The stop position: peeked once per shard for the whole run, and
    /// again for this slot after a session ends early. `None` after a
    /// transient failure that was waited out.
    async fn stop(&mut self, first: bool) -> Result<Option<(String, Position)>, ReadError> {
        let shared = self.shared;
        let timeout = shared.settings.timeout.min(Duration::from_secs(45));
        let peek = || shared.client.current(&self.target, timeout);
        let cell = shared
            .stops
            .iter()
            .find(|(s, _)| *s == self.slot.shard)
            .map(|(_, c)| c);
        let answer = match (first, cell) {
            (true, Some(cell)) => cell.get_or_try_init(peek).await.cloned(),
            _ => peek().await,
        };
        let text = match answer {
            Ok(text) => text,
            Err(status) if classify(&status).kind().is_retryable() => {
                self.wait_to_retry(&status, "peek failed").await?;
                return Ok(None);
            }
            Err(status) => return Err(self.error(&status)),
        };
        let stop = Position::parse(&text).map_err(|e| ReadError::Data {
            stream: self.slot.stream.name.clone(),
            shard: self.slot.shard.clone(),
            problem: format!("the current position is unreadable: {e}"),
        })?;
        Ok(Some((text, stop)))
    }

    /// One session, until the stop position, its deadline or its end.
    async fn session(&mut self, stop: &Position) -> Result<Ended, ReadError> {
        let timeout = self.shared.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let resume = Resume {
            cursor: &self.cursor,
            columns: &self.columns,
            keys: &self.slot.stream.key_properties,
            copying: self.copying,
            timeout,
        };
        let mut session = match self.shared.client.open(&self.target, resume).await {
            Ok(s) => s,
            Err(status) => {
                self.recover(&status, "sync failed to open").await?;
                return Ok(Ended::Again);
            }
        };
        let mut progressed = false;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, session.next()).await else {
                return Ok(Ended::Again); // our deadline: a normal end of session
            };
            match next {
                Ok(Some(unit)) => match self.unit(unit, stop).await? {
                    After::End(ended) => return Ok(ended),
                    After::Next { moved } => progressed |= moved,
                },
                Ok(None) => {
                    // The server ended the stream before the stop position.
                    // Normal once in a while; a server that keeps doing it
                    // without any progress must not make us spin.
                    if !progressed {
                        let status =
                            tonic::Status::unavailable("the stream ended before the stop position");
                        self.recover(&status, "stream ended early").await?;
                    }
                    return Ok(Ended::Again);
                }
                Err(SessionError::Data(problem)) => {
                    return Err(ReadError::Data {
                        stream: self.slot.stream.name.clone(),
                        shard: self.slot.shard.clone(),
                        problem,
                    })
                }
                Err(SessionError::Status(status)) => {
                    self.recover(&status, "stream failed; resuming from the last cursor")
                        .await?;
                    return Ok(Ended::Again);
                }
            }
        }
    }

    /// Sends one unit's batch.
    async fn unit(&mut self, unit: Unit, stop: &Position) -> Result<After, ReadError> {
        if let Some(statement) = &unit.truncated {
            if !self.truncated(statement).await {
                return Ok(After::End(Ended::Shutdown));
            }
        }
        let mut batch = self
            .records
            .batch(&unit.resp, self.copying, unit.enum_text, &self.shared.lines)
            .map_err(|source| ReadError::Convert {
                stream: self.slot.stream.name.clone(),
                shard: self.slot.shard.clone(),
                source,
            })?;
        self.copying = batch.copying;
        let had_cursor = batch.cursor.is_some();
        let mut rewind = false;
        if let Some(c) = batch.cursor.as_mut() {
            rewind = apply_floor(&mut self.floor, c, self.resumed);
            self.cursor = c.clone();
        }
        if batch.records > 0 || had_cursor {
            batch.held = self.shared.lines.hold(batch.lines.len()).await;
            let event = Event::Batch {
                slot: self.slot.index,
                batch,
            };
            if self.tx.send(event).await.is_err() {
                return Ok(After::End(Ended::Shutdown));
            }
        }
        if rewind {
            debug!(stream = %self.slot.stream.name, shard = %self.slot.shard, from = %self.cursor.position, "copy was resumed; reading changes again from where it began");
            return Ok(After::End(Ended::Again));
        }
        if had_cursor {
            self.retries.progress();
            if reached(&self.cursor, stop) {
                return Ok(After::End(Ended::Caught));
            }
        }
        Ok(After::Next { moved: had_cursor })
    }

    /// Says what a TRUNCATE of the table means for the stream and, for a
    /// re-copy, has the checkpoint mark it. `false` when the checkpoint is
    /// gone.
    async fn truncated(&self, statement: &str) -> bool {
        let (stream, shard) = (&self.slot.stream.name, &self.slot.shard);
        let policy = self.shared.settings.on_truncate;
        match truncate_action(policy, self.slot.stream.method) {
            TruncateAction::Warn => {
                warn!(stream = %stream, shard = %shard, statement = %statement, "table truncated on the server: the server sends this as one DDL, not as row deletes, so the target still holds every row it had; copy the stream again: set `on_truncate: recopy`, or drop its bookmark from the state (or sync it as FULL_TABLE), and run again")
            }
            TruncateAction::FullTable => {
                warn!(stream = %stream, shard = %shard, statement = %statement, "table truncated on the server: the stream is FULL_TABLE, so its next run copies it whole and ACTIVATE_VERSION drops what vanished")
            }
            TruncateAction::Recopy => {
                warn!(stream = %stream, shard = %shard, statement = %statement, "table truncated on the server: the server sends this as one DDL, not as row deletes, so the target still holds every row it had; on_truncate is recopy: the stream is marked, and the next run copies it again on every shard under a new version and then sends ACTIVATE_VERSION, so the target drops what vanished; rows written after the TRUNCATE keep coming");
                let event = Event::Truncated {
                    slot: self.slot.index,
                };
                return self.tx.send(event).await.is_ok();
            }
        }
        true
    }

    /// Deals with a session that failed, whether opening it or while it
    /// ran: waits out a transient error, restarts a purged position as a
    /// full copy (by choice), or re-reads the table's columns after DDL.
    /// `Ok` means start a new session; `Err` ends the slot.
    async fn recover(&mut self, status: &tonic::Status, what: &str) -> Result<(), ReadError> {
        if self.tx.is_closed() {
            // The checkpoint has stopped (a closed pipe, a signal, another
            // reader's failure) and the connection is being torn down with
            // the process: nothing to retry, and nothing worth a warning.
            return Err(self.error(status));
        }
        match classify(status) {
            StatusClass::SessionEnd => Ok(()),
            StatusClass::Retryable => self.wait_to_retry(status, what).await,
            StatusClass::Purged if self.shared.settings.resync_on_purged => {
                self.restart().await;
                Ok(())
            }
            _ if names_a_column(status) => {
                self.wait_to_retry(status, "a requested column is gone")
                    .await?;
                self.reread_columns().await;
                Ok(())
            }
            _ => Err(self.error(status)),
        }
    }

    /// Logs a retry with its reason and waits for it; the slot's error when
    /// the attempts or the time budget are used up.
    async fn wait_to_retry(&mut self, status: &tonic::Status, what: &str) -> Result<(), ReadError> {
        let Some(wait) = self.retries.next_wait() else {
            return Err(self.error(status));
        };
        warn!(stream = %self.slot.stream.name, shard = %self.slot.shard, attempt = self.retries.attempts(), code = ?status.code(), error = %status.message(), wait_ms = wait.as_millis() as u64, "{what}; retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The selected columns the table still has, read again over MySQL
    /// after the server refused one. Dropped columns are then written as
    /// null.
    async fn reread_columns(&mut self) {
        let stream = &self.slot.stream;
        let Some(now) = plan::table_columns(&self.shared.settings, &stream.table).await else {
            return;
        };
        self.columns = stream
            .props
            .iter()
            .filter(|p| now.contains(&p.name))
            .map(|p| p.name.clone())
            .collect();
        warn!(stream = %stream.name, shard = %self.slot.shard, columns = ?self.columns, "re-read the table's columns after DDL");
    }

    /// Restarts the slot from a full copy after a purged position, telling
    /// the checkpoint to reset its cursor.
    async fn restart(&mut self) {
        warn!(stream = %self.slot.stream.name, shard = %self.slot.shard, "saved position was purged; restarting this stream from a full copy (resync_on_purged)");
        self.cursor = TableCursor {
            shard: self.slot.shard.clone(),
            keyspace: self.target.keyspace.clone(),
            position: String::new(),
            last_known_pk: None,
        };
        self.copying = true;
        let event = Event::Reset {
            slot: self.slot.index,
            cursor: self.cursor.clone(),
        };
        let _ = self.tx.send(event).await;
    }

    /// The error that ends the slot after `status`.
    fn error(&self, status: &tonic::Status) -> ReadError {
        let (stream, shard) = (self.slot.stream.name.clone(), self.slot.shard.clone());
        let (code, message) = (status.code(), status.message().to_string());
        match classify(status) {
            StatusClass::Purged => ReadError::Purged {
                stream,
                shard,
                message,
            },
            StatusClass::Auth => ReadError::Auth {
                stream,
                shard,
                code,
                message,
            },
            StatusClass::Retryable | StatusClass::SessionEnd => ReadError::Exhausted {
                stream,
                shard,
                attempts: self.retries.attempts(),
                code,
                message,
            },
            StatusClass::Permanent => ReadError::Server {
                stream,
                shard,
                code,
                message,
            },
        }
    }
}

/// What a TRUNCATE of a stream's table leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TruncateAction {
    /// A warning with the fix.
    Warn,
    /// The warning, and the stream is marked for a re-copy.
    Recopy,
    /// Nothing to do: a FULL_TABLE stream is copied whole every run.
    FullTable,
}

fn truncate_action(policy: OnTruncate, method: ReplicationMethod) -> TruncateAction {
    match (method.is_cdc(), policy) {
        (false, _) => TruncateAction::FullTable,
        (true, OnTruncate::Warn) => TruncateAction::Warn,
        (true, OnTruncate::Recopy) => TruncateAction::Recopy,
    }
}

/// Whether the cursor has reached the stop position with its copy done.
fn reached(cursor: &TableCursor, stop: &Position) -> bool {
    if cursor.last_known_pk.is_some() || cursor.position.is_empty() {
        return false;
    }
    match Position::parse(&cursor.position) {
        Ok(p) => p.at_least(stop),
        Err(_) => false,
    }
}

/// Keeps a copy's floor in its cursors. During a copy the saved position is
/// the floor (the server ignores it on resume anyway). When a copy that was
/// restarted ends past the floor, the cursor goes back to the floor and
/// `true` says to restart the session from there.
fn apply_floor(floor: &mut Option<String>, c: &mut TableCursor, resumed: bool) -> bool {
    if c.last_known_pk.is_some() {
        match floor {
            Some(f) => c.position = f.clone(),
            None if !c.position.is_empty() => *floor = Some(c.position.clone()),
            None => {}
        }
        return false;
    }
    let Some(f) = floor.take() else {
        return false;
    };
    let newer = resumed
        && match (Position::parse(&c.position), Position::parse(&f)) {
            (Ok(now), Ok(start)) => now.after(&start),
            _ => false,
        };
    if newer {
        c.position = f;
    }
    newer
}

/// Whether a refusal is about a column (dropped or renamed by DDL).
fn names_a_column(status: &tonic::Status) -> bool {
    let msg = status.message().to_ascii_lowercase();
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => msg.contains("column"),
        // A server whose own metadata lagged the DDL fails in its SQL.
        tonic::Code::Internal | tonic::Code::Unknown => msg.contains("unknown column"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::query::QueryResult;

    #[test]
    fn stop_rule() {
        let p5 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5";
        let p9 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-9";
        let stop = Position::parse(p5).expect("pos");
        let c = |pos: &str, copy: bool| TableCursor {
            position: pos.into(),
            last_known_pk: copy.then(QueryResult::default),
            ..Default::default()
        };
        assert!(reached(&c(p5, false), &stop));
        assert!(reached(&c(p9, false), &stop));
        assert!(!reached(&c(p9, true), &stop), "copy not done");
        assert!(!reached(&c("", false), &stop));
        assert!(!reached(
            &c("MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-4", false),
            &stop
        ));
    }

    #[test]
    fn a_resumed_copy_rewinds_to_its_floor() {
        let p1 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5";
        let p2 = "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-9";
        let c = |pos: &str, copy: bool| TableCursor {
            position: pos.into(),
            last_known_pk: copy.then(QueryResult::default),
            ..Default::default()
        };
        // a fresh copy: floor from the first cursor, no rewind at the end
        let mut floor = None;
        let mut x = c(p1, true);
        assert!(!apply_floor(&mut floor, &mut x, false));
        assert_eq!(floor.as_deref(), Some(p1));
        let mut end = c(p2, false);
        assert!(!apply_floor(&mut floor, &mut end, false));
        assert_eq!(end.position, p2, "an uninterrupted copy needs no rewind");
        // a resumed copy: the server's new snapshot is replaced by the floor,
        // and the end of the copy rewinds to it
        let mut floor = Some(p1.to_string());
        let mut mid = c(p2, true);
        assert!(!apply_floor(&mut floor, &mut mid, true));
        assert_eq!(mid.position, p1, "saved copy cursors keep the floor");
        let mut end = c(p2, false);
        assert!(apply_floor(&mut floor, &mut end, true));
        assert_eq!(end.position, p1);
        assert!(floor.is_none());
        // afterwards, changes move on normally
        let mut next = c(p2, false);
        assert!(!apply_floor(&mut floor, &mut next, true));
        assert_eq!(next.position, p2);
    }

    #[test]
    fn a_truncate_marks_a_cdc_stream_for_a_recopy_only_when_asked() {
        use ReplicationMethod::{FullTable, Incremental, LogBased};
        let cases = [
            (OnTruncate::Warn, Incremental, TruncateAction::Warn),
            (OnTruncate::Warn, LogBased, TruncateAction::Warn),
            (OnTruncate::Recopy, Incremental, TruncateAction::Recopy),
            (OnTruncate::Recopy, LogBased, TruncateAction::Recopy),
            (OnTruncate::Warn, FullTable, TruncateAction::FullTable),
            (OnTruncate::Recopy, FullTable, TruncateAction::FullTable),
        ];
        for (policy, method, want) in cases {
            assert_eq!(
                truncate_action(policy, method),
                want,
                "{policy:?} {method:?}"
            );
        }
    }

    #[test]
    fn column_refusals_are_recognised() {
        use tonic::Status;
        assert!(names_a_column(&Status::invalid_argument(
            "unknown column \"v\" in table \"items\""
        )));
        assert!(names_a_column(&Status::internal(
            "Server error: `ERROR 1054 (42S22): Unknown column 'v' in 'SELECT'"
        )));
        assert!(!names_a_column(&Status::internal("connection reset")));
        assert!(!names_a_column(&Status::unavailable("unknown column")));
    }

    #[test]
    fn errors_take_the_kind_of_their_status() {
        let e = |code: tonic::Code| ReadError::Auth {
            stream: "s".into(),
            shard: "-".into(),
            code,
            message: "m".into(),
        };
        assert_eq!(e(tonic::Code::Unauthenticated).kind().exit_code(), 2);
        let gave_up = ReadError::Exhausted {
            stream: "s".into(),
            shard: "-".into(),
            attempts: 3,
            code: tonic::Code::Unavailable,
            message: "m".into(),
        };
        assert_eq!(gave_up.kind().exit_code(), 1);
    }
}
