//! The one place a sync writes: records, then the state that covers them.
//!
//! Readers send finished RECORD lines with the cursor that covers them.
//! The [`Checkpoint`] writes a batch's lines, then lets [`State::advance`]
//! adopt its cursor (which refuses any that would move backward), and emits
//! STATE every N records (counted once a cursor covers them) or T seconds,
//! before the first record written after a copy's floor was set, after a
//! reset, and once at the very end, always after flushing the records it
//! covers. It owns the map from slot
//! to (stream, shard), and the progress board.
//!
//! Every STATE carries the whole state, so the rules above keep their
//! number independent of the number of slots: a STATE per slot (at its
//! floor or its end) made a run over 1,000 tables × 4 shards write the
//! state 4,000 times over, quadratic in the tables. A slot's end needs no
//! STATE of its own: what it adopted is in the next one, and a run that
//! stops before that reads its changes again (never fewer). On a reader's failure or a stop signal it stops the
//! other readers, writes what it already received, emits the last good
//! STATE and fails.
//!
//! A versioned copy ends here too (see [`finish`]): once every slot of a
//! FULL_TABLE stream, or of a truncated stream's re-copy, is done, its
//! ACTIVATE_VERSION goes out, then the STATE that ends the copy. A reader's
//! word of a TRUNCATE marks the stream for a re-copy before the reader's
//! next cursor is adopted.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::warn;

use super::error::ReadError;
use super::error::SyncError;
use super::plan::{Plan, Slot};
use super::reader::Event;
use super::records::{Batch, LinePool, StreamSpec};
use crate::catalog::ReplicationMethod;
use crate::config::Settings;
use crate::progress;
use crate::signals::StopSignals;
use crate::singer::SingerWriter;
use crate::state::State;

pub struct Checkpoint<W: Write> {
    out: SingerWriter<W>,
    state: State,
    board: progress::Board,
    /// Per slot: its stream and shard.
    slots: Vec<(Arc<StreamSpec>, String)>,
    every_records: u64,
    every: Duration,
    /// How often STATE and progress are looked at without an event.
    tick: Duration,
    /// Records covered by a cursor adopted since the last STATE: the count
    /// the "every N records" rule looks at.
    since_state: u64,
    /// Per slot: records written since its last cursor. A reader may send
    /// part of a large transaction before the cursor that covers it; counted
    /// early, those records spent the rule on a STATE with no progress.
    uncovered: Vec<u64>,
    last_state: Instant,
    /// Whether the state changed since the last STATE.
    dirty: bool,
    /// A copy floor is in the state but not yet in a STATE: one must be
    /// written before the next record.
    floor_pending: bool,
    /// Per stream (by index in the plan): its slots not done yet.
    left: Vec<usize>,
    /// Per slot: its stream's index in the plan.
    stream_of: Vec<usize>,
    /// The run reads every shard of the keyspace (see [`Plan::every_shard`]).
    every_shard: bool,
    failure: Option<SyncError>,
}

impl<W: Write> Checkpoint<W> {
    /// Writes every stream's SCHEMA (and the ACTIVATE_VERSION of a first
    /// FULL_TABLE copy) before any record.
    pub fn start(
        output: W,
        plan: Plan,
        slots: &[Slot],
        settings: &Settings,
    ) -> Result<Checkpoint<W>, SyncError> {
        let mut out = SingerWriter::new(output);
        for s in &plan.streams {
            out.schema(&s.spec.name, &s.schema, &s.spec.key_properties, None)?;
        }
        for s in &plan.streams {
            if let Some(v) = s.activate_now {
                out.activate_version(&s.spec.name, v)?;
            }
        }
        let stream_of: Vec<usize> = slots.iter().map(|s| s.stream_index).collect();
        let mut left = vec![0; plan.streams.len()];
        for &i in &stream_of {
            left[i] += 1;
        }
        let entries = slots
            .iter()
            .map(|slot| {
                let estimate = plan.streams[slot.stream_index].row_count;
                let copying = slot.start.last_known_pk.is_some() || slot.start.position.is_empty();
                progress::Entry::new(
                    &slot.stream.name,
                    &slot.shard,
                    progress::per_shard(estimate, plan.shards.len()),
                    copying,
                )
            })
            .collect();
        Ok(Checkpoint {
            out,
            every_shard: plan.every_shard,
            state: plan.state,
            board: progress::Board::new(entries, settings.progress_interval),
            slots: slots
                .iter()
                .map(|s| (s.stream.clone(), s.shard.clone()))
                .collect(),
            every_records: settings.state_interval_records,
            every: settings.state_interval,
            tick: settings
                .state_interval
                .min(settings.progress_interval)
                .min(Duration::from_secs(5)),
            since_state: 0,
            uncovered: vec![0; slots.len()],
            last_state: Instant::now(),
            dirty: false,
            floor_pending: false,
            left,
            stream_of,
            failure: None,
        })
    }

    /// Writes what the readers send until they are all done, a reader
    /// fails or a signal stops the run.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        readers: &mut JoinSet<()>,
        signals: &mut StopSignals,
        lines: &LinePool,
    ) -> Result<(), SyncError> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.event(ev, readers, lines)?,
                    None => break,
                },
                stop = signals.stopped() => {
                    self.failure = Some(stop.into());
                    break;
                }
                _ = ticker.tick() => self.tick()?,
            }
        }
        readers.abort_all();
        while readers.join_next().await.is_some() {}
        self.out.state(&self.state.to_json())?;
        self.board.finish();
        match self.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn event(
        &mut self,
        event: Event,
        readers: &mut JoinSet<()>,
        lines: &LinePool,
    ) -> Result<(), SyncError> {
        match event {
            Event::Batch { slot, batch } => {
                self.batch(slot, &batch)?;
                lines.give(batch.lines);
            }
            Event::CopyFloor { slot, floor } => {
                let (stream, shard) = &self.slots[slot];
                self.state.set_copy_floor(&stream.name, shard, Some(&floor));
                self.floor_pending = true;
                self.dirty = true;
            }
            Event::Truncated { slot } => {
                self.state.mark_recopy(&self.slots[slot].0.name);
                self.dirty = true;
            }
            Event::Reset { slot, cursor } => {
                let (stream, shard) = &self.slots[slot];
                self.state.set_cursor(&stream.name, shard, &cursor);
                self.emit_state()?;
            }
            Event::Done { slot, warnings } => {
                self.board.done(slot, warnings);
                self.done(slot)?;
            }
            Event::Failed { slot, error } => {
                self.failed(slot, error);
                readers.abort_all();
            }
        }
        Ok(())
    }

    fn batch(&mut self, slot: usize, b: &Batch) -> Result<(), SyncError> {
        if b.records > 0 && self.floor_pending {
            self.emit_state()?;
        }
        let (stream, shard) = &self.slots[slot];
        if b.records > 0 {
            self.out.records_raw(&b.lines, b.records)?;
            self.uncovered[slot] += b.records;
            self.dirty = true;
        }
        if let Some(c) = &b.cursor {
            self.since_state += std::mem::take(&mut self.uncovered[slot]);
            if self.state.advance(&stream.name, shard, c) {
                self.dirty = true;
            } else {
                warn!(stream = %stream.name, shard = %shard, new = %c.position, "server sent an older cursor; keeping the newer one");
            }
        }
        self.board.add(slot, &b.counts, b.copying);
        if self.since_state >= self.every_records || self.last_state.elapsed() >= self.every {
            self.emit_state()?;
        }
        Ok(())
    }

    /// A slot is done; the last of a versioned copy's slots activates it,
    /// so that rows the copy did not see go from the target.
    fn done(&mut self, slot: usize) -> Result<(), SyncError> {
        let stream = self.slots[slot].0.clone();
        let left = &mut self.left[self.stream_of[slot]];
        *left = left.saturating_sub(1);
        if *left == 0 {
            match finish(stream.method, stream.version, self.every_shard) {
                Finish::FullTable(version) => {
                    if let Some(v) = version {
                        self.out.activate_version(&stream.name, v)?;
                    } else if stream.version.is_some() {
                        warn!(stream = %stream.name, "copied only the shards in `shards`: ACTIVATE_VERSION is left out, as it would drop the other shards' rows from the target");
                    }
                    self.state.complete_full_table(&stream.name);
                    self.dirty = true;
                }
                Finish::Recopy(v) => {
                    self.out.activate_version(&stream.name, v)?;
                    self.state.complete_recopy(&stream.name);
                    self.dirty = true;
                }
                Finish::Nothing => {}
            }
        }
        Ok(())
    }

    fn failed(&mut self, slot: usize, error: ReadError) {
        let (stream, shard) = &self.slots[slot];
        if self.failure.is_none() {
            // Its text is the run's final error line: said once.
            warn!(stream = %stream.name, shard = %shard, "reader failed; stopping the others");
            self.failure = Some(SyncError::Read(error));
        } else {
            warn!(stream = %stream.name, shard = %shard, error = %error, "another reader failed too");
        }
    }

    /// The periodic STATE when the state changed without enough records to
    /// trigger one, and the progress display.
    fn tick(&mut self) -> Result<(), SyncError> {
        if self.dirty && self.last_state.elapsed() >= self.every {
            self.emit_state()?;
        }
        self.board.tick();
        Ok(())
    }

    fn emit_state(&mut self) -> Result<(), SyncError> {
        self.out.state(&self.state.to_json())?;
        self.since_state = 0;
        self.last_state = Instant::now();
        self.dirty = false;
        self.floor_pending = false;
        Ok(())
    }
}

/// What the end of every slot of a stream means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// A FULL_TABLE copy is complete: activate its version; the next run
    /// copies afresh.
    FullTable(Option<i64>),
    /// A re-copy is complete: activate its version; change capture goes on
    /// from its cursors.
    Recopy(i64),
    Nothing,
}

/// The end of a stream whose slots are all done. A copy is activated only
/// by a run over every shard: ACTIVATE_VERSION is per stream, so it would
/// drop the rows of the shards the run did not copy again.
fn finish(method: ReplicationMethod, version: Option<i64>, every_shard: bool) -> Finish {
    match (method, version) {
        (ReplicationMethod::FullTable, v) => Finish::FullTable(v.filter(|_| every_shard)),
        (_, Some(v)) if every_shard => Finish::Recopy(v),
        _ => Finish::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_copies_are_activated_at_their_end() {
        use ReplicationMethod::{FullTable, Incremental, LogBased};
        // (method, version, every shard read, what the end does)
        let cases = [
            (FullTable, Some(7), true, Finish::FullTable(Some(7))),
            (FullTable, Some(7), false, Finish::FullTable(None)),
            (FullTable, None, true, Finish::FullTable(None)),
            (Incremental, Some(7), true, Finish::Recopy(7)),
            (LogBased, Some(7), true, Finish::Recopy(7)),
            (Incremental, Some(7), false, Finish::Nothing),
            (Incremental, None, true, Finish::Nothing),
            (LogBased, None, false, Finish::Nothing),
        ];
        for (method, version, every_shard, want) in cases {
            assert_eq!(
                finish(method, version, every_shard),
                want,
                "{method:?} {version:?} {every_shard}"
            );
        }
    }
}
