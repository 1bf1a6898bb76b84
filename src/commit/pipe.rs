//! The plumbing of commit mode's two entry points.
//!
//! `sync --commit`: the sync writes its Singer messages into an in-process
//! pipe, and the relay on the other end pushes them to the Import API, on a
//! thread of its own so that a sync blocked on a full pipe can never starve
//! it. The relay's future runs on that thread but on the main runtime's
//! drivers: a second runtime would bring a second signal driver, and the two
//! raced for the process's signals (a SIGTERM could wake only the one nobody
//! listened on).
//!
//! `relay`: the same relay on stdin. Either way the only stdout line is the
//! newest state file, for the next run's `--state`.

use std::path::Path;

use tracing::{info, warn};

use super::{state_files, CommitError, CommitSettings, Committer};
use crate::config::Settings;
use crate::error::kind::Kind;
use crate::relay::{self, RelayError};
use crate::signals::{StopSignals, Stopped};
use crate::singer;
use crate::sync::{Inputs, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("cannot start the import API writer ({what}): {source}")]
    Setup {
        what: &'static str,
        source: std::io::Error,
    },
    /// The writer's thread ended without a word (it panicked).
    #[error("the import API writer stopped unexpectedly; the newest state file covers every accepted batch")]
    WriterStopped,
    #[error(transparent)]
    Stopped(#[from] Stopped),
    #[error("writing the state file's path to stdout failed: {0}")]
    Output(#[from] std::io::Error),
}

impl PipeError {
    pub fn kind(&self) -> Kind {
        match self {
            PipeError::Commit(e) => e.kind(),
            PipeError::Relay(e) => e.kind(),
            PipeError::Sync(e) => e.kind(),
            PipeError::Stopped(s) => s.kind(),
            PipeError::Setup { .. } | PipeError::WriterStopped | PipeError::Output(_) => {
                Kind::Failed
            }
        }
    }
}

/// Read buffer of the relay's input.
const PIPE_BUFFER: usize = 256 * 1024;

/// `relay`: pushes the Singer messages on stdin.
pub async fn relay_stdin(commit: CommitSettings, max_line: usize) -> Result<(), PipeError> {
    let dir = commit.state_directory.clone();
    let committer = Committer::new(commit)?;
    let stdin = tokio::io::BufReader::with_capacity(PIPE_BUFFER, tokio::io::stdin());
    let relayed = relay::run(stdin, committer, max_line, "stdin").await;
    print_newest_state(&dir)?;
    Ok(relayed.map(|_| ())?)
}

/// `sync --commit`: the sync into a pipe, the relay out of it.
pub async fn sync(
    settings: &Settings,
    inputs: Inputs,
    commit: CommitSettings,
) -> Result<(), PipeError> {
    let dir = commit.state_directory.clone();
    let committer = Committer::new(commit)?;
    let setup = |what, source| PipeError::Setup { what, source };
    let (reader, writer) =
        std::io::pipe().map_err(|e| setup("creating the import API writer's pipe", e))?;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("import-api".into())
        .spawn(move || {
            let relayed = runtime.block_on(async move {
                let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(
                    std::os::fd::OwnedFd::from(reader),
                )
                .map_err(|e| setup("reading the import API writer's pipe", e))?;
                let input = tokio::io::BufReader::with_capacity(PIPE_BUFFER, pipe);
                relay::run(input, committer, usize::MAX, "the sync's output")
                    .await
                    .map_err(PipeError::from)
            });
            let _ = done_tx.send(relayed);
        })
        .map_err(|e| setup("starting the import API writer's thread", e))?;
    // A thread that ended without a word panicked.
    let stopped = |_| Err(PipeError::WriterStopped);
    // Listening starts now, not when the sync is done: a signal that comes
    // while the sync is blocked writing to a full pipe reaches the sync's
    // own listener only after its write, and if that write was its last,
    // a listener made afterwards would never hear it.
    let mut signals =
        StopSignals::listen().map_err(|e| setup("watching for SIGTERM and SIGINT", e))?;
    let sync = async { Ok::<_, PipeError>(crate::sync::run_into(settings, inputs, writer).await?) };
    tokio::pin!(sync);
    let (synced, relayed) = tokio::select! {
        synced = &mut sync => {
            // A signal during the sync stops it and the relay then pushes
            // what was read. Once the sync is done, nothing else listens
            // for signals (the runtime's handler would swallow them), so
            // the upload that remains is stopped here: every state file
            // already written covers only accepted batches.
            let relayed = match &synced {
                Ok(()) => tokio::select! {
                    r = &mut done_rx => r.unwrap_or_else(stopped),
                    stop = signals.stopped() => Err(stop.into()),
                },
                Err(_) => (&mut done_rx).await.unwrap_or_else(stopped),
            };
            (synced, relayed)
        }
        // The relay only ends early on an error: stop the sync at once
        // (dropping it stops its readers) rather than at its next write.
        relayed = &mut done_rx => match relayed.unwrap_or_else(stopped) {
            Err(e) => (Ok(()), Err(e)),
            ok => ((&mut sync).await, ok),
        },
    };
    print_newest_state(&dir)?;
    match (synced, relayed) {
        // A failed relay closes the pipe, so the sync fails too; the
        // relay's error is the cause.
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Ok(_)) => Ok(()),
    }
}

/// Commit mode's only stdout line: the newest state file.
fn print_newest_state(dir: &Path) -> Result<(), PipeError> {
    let Some(path) = state_files::newest_in(dir) else {
        warn!(dir = %dir.display(), "no state file written yet");
        return Ok(());
    };
    info!(path = %path.display(), "newest state file");
    singer::print_line(&path.display().to_string())?;
    Ok(())
}
