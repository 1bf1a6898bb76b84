//! Sync: plan, read every (stream, shard) in parallel, write through one
//! checkpoint.
//!
//! The flow, one module a step:
//! - [`plan`]: MySQL once at the start (shards, tablets → cells, the
//!   tables' real columns), the catalog's streams checked against it, the
//!   FULL_TABLE versions and every (stream, shard) slot with its starting
//!   cursor. Nothing is written before the plan stands.
//! - [`reader`]: up to `max_parallel_readers` readers share one gRPC
//!   channel ([`crate::psdb`]); each follows its slot's sessions to the
//!   shard's stop position and turns units into batches with
//!   [`records`].
//! - [`checkpoint`]: the only writer. Records first, then the cursor that
//!   covers them, then STATE; ACTIVATE_VERSION when every slot of a
//!   versioned copy is done.
//!
//! Two kinds of stream carry a version on their records: FULL_TABLE
//! streams, copied whole every run, and a CDC stream being copied again
//! after a TRUNCATE (`on_truncate: recopy`). For the latter a reader only
//! reports the TRUNCATE, the checkpoint marks the stream in the state, and
//! the next run's plan turns the mark into a re-copy
//! ([`crate::state::State::recopy`] owns the rule): every shard copied
//! afresh under one new version, kept across interruptions, activated at
//! the end of a run that read every shard, with the cursors kept for
//! change capture after it.
//!
//! This module only wires them: it owns no rule of its own.

mod checkpoint;
mod error;
pub mod plan;
mod reader;
pub mod records;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, OnceCell, Semaphore};
use tokio::task::JoinSet;
use tracing::info;

use crate::config::Settings;
use crate::psdb::PsdbClient;
use crate::signals::StopSignals;
use crate::singer;
use checkpoint::Checkpoint;
pub use error::{ReadError, SyncError};
pub use plan::Inputs;
use reader::{Event, Shared};
use records::LinePool;

/// Runs a sync to completion, writing Singer messages to stdout.
pub async fn run(settings: &Settings, inputs: Inputs) -> Result<(), SyncError> {
    run_into(settings, inputs, singer::stdout()).await
}

/// Runs a sync to completion, writing Singer messages to `output` (stdout,
/// or in commit mode the pipe to the Import API writer). `output` is
/// dropped, and so closed, when the run ends.
pub async fn run_into<W: std::io::Write>(
    settings: &Settings,
    inputs: Inputs,
    output: W,
) -> Result<(), SyncError> {
    let plan = plan::make(settings, inputs).await?;
    let client = PsdbClient::connect(settings).await?;
    // From here on SIGINT/SIGTERM stop the run cleanly: readers stop, and
    // a final STATE covers exactly what was written.
    let mut signals = StopSignals::listen().map_err(SyncError::Signals)?;
    let slots = plan.slots();
    let shared = Arc::new(Shared {
        client,
        settings: settings.clone(),
        cells: plan.cells.clone(),
        sequence: Arc::new(AtomicU64::new(clock_nanos())),
        stops: plan
            .shards
            .iter()
            .map(|s| (s.clone(), OnceCell::new()))
            .collect(),
        lines: LinePool::default(),
    });
    info!(
        api = %settings.api.as_str(),
        streams = plan.streams.len(),
        shards = plan.shards.len(),
        readers = settings.max_parallel_readers,
        "sync starting"
    );
    let checkpoint = Checkpoint::start(output, plan, &slots, settings)?;
    let (tx, rx) = mpsc::channel::<Event>(settings.max_parallel_readers * 2 + 2);
    let permits = Arc::new(Semaphore::new(settings.max_parallel_readers));
    let mut readers = JoinSet::new();
    for slot in slots {
        let (shared, tx, permits) = (shared.clone(), tx.clone(), permits.clone());
        readers.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            reader::run(shared, slot, tx).await;
        });
    }
    drop(tx);
    checkpoint
        .run(rx, &mut readers, &mut signals, &shared.lines)
        .await
}

/// Seeds `_sdc_source_sequence` so that it also rises across runs.
fn clock_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
