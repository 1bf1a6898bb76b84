//! SIGTERM and SIGINT, the two ways a scheduler or a person stops a run.
//!
//! tokio tells a listener only of signals that come after it was made, so
//! whoever must react to a stop makes its [`StopSignals`] before the work
//! it guards starts (the sync before its readers, commit mode before the
//! sync it pipes). Every listener hears every signal.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::error::kind::Kind;

/// SIGTERM and SIGINT, heard from the moment they are created.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    pub fn listen() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT (one already received counts), as the
    /// error the process exits with.
    pub async fn stopped(&mut self) -> Stopped {
        tokio::select! {
            _ = self.term.recv() => Stopped { signal: "SIGTERM", code: 143 },
            _ = self.int.recv() => Stopped { signal: "SIGINT", code: 130 },
        }
    }
}

/// A run stopped by a signal; it exits with 128 + the signal's number.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {signal}; the last STATE covers every record written")]
pub struct Stopped {
    pub signal: &'static str,
    pub code: u8,
}

impl Stopped {
    pub fn kind(&self) -> Kind {
        Kind::Interrupted(self.code)
    }
}
