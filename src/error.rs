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

use crate::catalog::CatalogError;
use crate::commit::CommitError;
use crate::config::ConfigError;
use crate::mysql::MySqlError;
use crate::psdb::PsdbError;
use crate::relay::RelayError;
use crate::state::StateError;
use crate::sync::reader::ReadError;

/// What the person should do about an error, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Change an input (flags, config, catalog, state, credentials, host).
    Input,
    /// Nothing to change: the run failed and a rerun may succeed.
    Failed,
    /// Stopped by a signal; the code is 128 + the signal number.
    Interrupted(u8),
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Input => 2,
            Kind::Failed => 1,
            Kind::Interrupted(code) => code,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    State(Box<StateError>),
    #[error(transparent)]
    MySql(#[from] MySqlError),
    /// The gRPC endpoint could not be reached or set up.
    #[error(transparent)]
    Grpc(#[from] PsdbError),
    /// A (stream, shard) reader failed the sync.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A `check` step failed; the message carries the step's fix hint.
    #[error("check `{step}` failed: {message}; {hint}")]
    Check {
        step: &'static str,
        message: String,
        hint: String,
        kind: Kind,
    },
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("writing to stdout failed: {0}")]
    Output(#[from] std::io::Error),
    #[error("stopped by {signal}; the last STATE covers every record written")]
    Interrupted { signal: &'static str, code: u8 },
}

impl From<StateError> for TapError {
    fn from(e: StateError) -> TapError {
        TapError::State(Box::new(e))
    }
}

impl TapError {
    /// The one place that classifies errors (see the module doc).
    pub fn kind(&self) -> Kind {
        match self {
            TapError::Usage(_)
            | TapError::Config(_)
            | TapError::Catalog(_)
            | TapError::State(_)
            | TapError::Grpc(_) => Kind::Input,
            TapError::MySql(e) => e.kind(),
            TapError::Read(e) => e.kind(),
            TapError::Check { kind, .. } => *kind,
            TapError::Runtime(_) | TapError::Output(_) => Kind::Failed,
            TapError::Commit(e) if e.is_input() => Kind::Input,
            TapError::Relay(e) if e.is_input() => Kind::Input,
            TapError::Commit(_) | TapError::Relay(_) => Kind::Failed,
            TapError::Interrupted { code, .. } => Kind::Interrupted(*code),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }
}

/// The text of an error's innermost source: the cause itself, said once.
///
/// Client libraries wrap an OS error in layers whose messages repeat the
/// inner text (mysql_async prints `Input/output error: Input/output error:
/// Connection refused`; tonic prints `transport error` and hides the rest
/// in sources). The innermost source is the part a person can act on.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !t.trim().is_empty() {
            text = t;
        }
        cur = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Input/output error: {0}")]
    struct Layer(#[source] std::io::Error);

    #[test]
    fn root_cause_says_the_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = Layer(io);
        assert_eq!(root_cause(&e), "Connection refused");
        let plain = std::io::Error::other("disk full");
        assert_eq!(root_cause(&plain), "disk full");
    }

    #[test]
    fn kinds_map_to_the_documented_codes() {
        assert_eq!(TapError::Usage("x".into()).exit_code(), 2);
        assert_eq!(TapError::Runtime("x".into()).exit_code(), 1);
        assert_eq!(
            TapError::Interrupted {
                signal: "SIGTERM",
                code: 143
            }
            .exit_code(),
            143
        );
        let unreachable = MySqlError::Unreachable {
            endpoint: "h:1".into(),
            reason: "Connection refused".into(),
        };
        assert_eq!(TapError::from(unreachable).exit_code(), 2);
    }
}
