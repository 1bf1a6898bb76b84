//! What can end a sync, and what each means for the exit code.
//!
//! Everything before the first output (catalog, state, keyspace, MySQL, the
//! gRPC endpoint) is an input the person must change, except a MySQL round
//! that kept losing its connection; a reader's error carries its own kind
//! (see [`ReadError::kind`]).

use crate::catalog::CatalogError;
use crate::convert::ConvertError;
use crate::error::kind::Kind;
use crate::mysql::MySqlError;
use crate::psdb::{PsdbError, StatusClass};
use crate::signals::Stopped;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
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
    #[error("keyspace `{keyspace}` has no shards (SHOW VITESS_SHARDS lists none for it); check `database`")]
    NoShards { keyspace: String },
    #[error("keyspace `{keyspace}` has no {tablet_type} tablets (SHOW VITESS_TABLETS); choose another tablet type (use_replica / use_rdonly)")]
    NoTablets {
        keyspace: String,
        tablet_type: String,
    },
    #[error("catalog stream `{stream}` selects table `{table}`, which is not in keyspace `{keyspace}`; deselect it or rediscover")]
    UnknownTable {
        stream: String,
        table: String,
        keyspace: String,
    },
    #[error("`recopy` (--recopy, TAP_PLANETSCALE_RECOPY or the config key) names stream `{stream}`, which the catalog does not select; selected streams: {selected}")]
    UnknownRecopy { stream: String, selected: String },
    #[error("sync needs --catalog FILE; create one with `tap-planetscale discover --auto-select`")]
    NoCatalog,
    #[error("cannot watch for SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Stopped(#[from] Stopped),
    #[error("writing the Singer output failed: {0}")]
    Output(#[from] std::io::Error),
}

impl From<StateError> for SyncError {
    fn from(e: StateError) -> SyncError {
        SyncError::State(Box::new(e))
    }
}

impl SyncError {
    pub fn kind(&self) -> Kind {
        match self {
            SyncError::Catalog(_)
            | SyncError::State(_)
            | SyncError::Grpc(_)
            | SyncError::NoShards { .. }
            | SyncError::NoTablets { .. }
            | SyncError::UnknownTable { .. }
            | SyncError::UnknownRecopy { .. }
            | SyncError::NoCatalog => Kind::Input,
            SyncError::MySql(e) => e.kind(),
            SyncError::Read(e) => e.kind(),
            SyncError::Stopped(s) => s.kind(),
            SyncError::Signals(_) | SyncError::Output(_) => Kind::Failed,
        }
    }
}

/// Why one (stream, shard) reader failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("stream `{stream}` shard `{shard}`: the saved position is no longer on the server (its binary logs were purged): {message}. Rerun this stream from a fresh state (remove its bookmark from the state file), or set `resync_on_purged` to true to restart it from a full copy automatically")]
    Purged {
        stream: String,
        shard: String,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: the server refused the credentials ({code:?}: {message}); check `username`/`password` (and `grpc_auth` for a self-hosted vtgate), and that the password may use the gRPC API (PlanetScale Connect)")]
    Auth {
        stream: String,
        shard: String,
        code: tonic::Code,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: the server failed the sync ({code:?}: {message})")]
    Server {
        stream: String,
        shard: String,
        code: tonic::Code,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: gave up after {attempts} attempts; last error {code:?}: {message}")]
    Exhausted {
        stream: String,
        shard: String,
        attempts: u32,
        code: tonic::Code,
        message: String,
    },
    #[error("stream `{stream}` shard `{shard}`: bad data from the server: {problem}")]
    Data {
        stream: String,
        shard: String,
        problem: String,
    },
    #[error("stream `{stream}` shard `{shard}`: bad data from the server: {source}")]
    Convert {
        stream: String,
        shard: String,
        source: ConvertError,
    },
}

impl ReadError {
    /// Exit-code class (see `error`): the gRPC status's class, so the same
    /// refusal means the same code whichever way it came.
    pub fn kind(&self) -> Kind {
        match self {
            ReadError::Auth { .. } => StatusClass::Auth.kind(),
            ReadError::Purged { .. } => StatusClass::Purged.kind(),
            // Out of retries: a rerun may pass.
            ReadError::Exhausted { .. } => Kind::Failed,
            ReadError::Server { .. } | ReadError::Data { .. } | ReadError::Convert { .. } => {
                Kind::Failed
            }
        }
    }
}
