//! The error every command returns, and the one rule that turns it into an
//! exit code.
//!
//! The rule, the same for `check`, `discover`, `sync`, `relay` and the
//! Singer form (and written in the README):
//!
//! - `0`: the command did what it was asked.
//! - `2` ([`Kind::Input`]): the person must change an input before a rerun
//!   can succeed: a flag, the config, the catalog, the state, the
//!   credentials, or the host (a wrong or unreachable host included: a
//!   rerun with the same config meets the same closed port).
//! - `1` ([`Kind::Failed`]): the run failed on the way, and a rerun with the
//!   same inputs may succeed (a server error, a stream that ran out of
//!   retries, a full disk).
//! - `130` / `143`: stopped by SIGINT / SIGTERM.
//!
//! Module errors are kept as sources, never flattened into strings.

pub mod kind;

pub use kind::Kind;

use crate::check::CheckError;
use crate::commit::pipe::PipeError;
use crate::config::ConfigError;
use crate::mysql::MySqlError;
use crate::sync::SyncError;

/// Each layer's error, as the command that ran it returns it.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `discover`'s MySQL queries.
    #[error(transparent)]
    MySql(#[from] MySqlError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Commit mode and the relay.
    #[error(transparent)]
    Commit(#[from] PipeError),
    #[error("writing to stdout failed: {0}")]
    Output(#[from] std::io::Error),
}

impl TapError {
    /// The one place that turns errors into exit codes (see the module
    /// doc): each layer's own kind.
    pub fn kind(&self) -> Kind {
        match self {
            TapError::Usage(_) | TapError::Config(_) => Kind::Input,
            TapError::MySql(e) => e.kind(),
            TapError::Sync(e) => e.kind(),
            TapError::Check(e) => e.kind(),
            TapError::Commit(e) => e.kind(),
            TapError::Output(_) => Kind::Failed,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_keep_their_kind() {
        assert_eq!(TapError::Usage("x".into()).exit_code(), 2);
        let unreachable = MySqlError::Unreachable {
            endpoint: "h:1".into(),
            reason: "Connection refused".into(),
        };
        assert_eq!(TapError::from(unreachable).exit_code(), 2);
        let stopped = crate::signals::Stopped {
            signal: "SIGTERM",
            code: 143,
        };
        assert_eq!(TapError::from(SyncError::from(stopped)).exit_code(), 143);
        let gone = SyncError::NoShards {
            keyspace: "ks".into(),
        };
        assert_eq!(TapError::from(PipeError::from(gone)).exit_code(), 2);
        assert_eq!(TapError::from(PipeError::WriterStopped).exit_code(), 1);
    }
}
