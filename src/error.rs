//! The error every command returns, classified by exit code.
//!
//! Input errors (config, catalog, state, flags, and a server that refuses
//! the given host or credentials) exit 2; failures while running exit 1.
//! Module errors are kept as sources, never flattened into strings.

use crate::catalog::CatalogError;
use crate::commit::CommitError;
use crate::config::ConfigError;
use crate::mysql::MySqlError;
use crate::relay::RelayError;
use crate::state::StateError;

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
    pub fn exit_code(&self) -> u8 {
        match self {
            TapError::Usage(_)
            | TapError::Config(_)
            | TapError::Catalog(_)
            | TapError::State(_) => 2,
            TapError::MySql(e) => match e {
                MySqlError::Query { .. } | MySqlError::Shape { .. } => 1,
                _ => 2,
            },
            TapError::Runtime(_) | TapError::Output(_) => 1,
            TapError::Commit(e) if e.is_input() => 2,
            TapError::Relay(e) if e.is_input() => 2,
            TapError::Commit(_) | TapError::Relay(_) => 1,
            TapError::Interrupted { code, .. } => *code,
        }
    }
}
