//! The gRPC front: `/psdbconnect.v1alpha1.Connect/Sync`.
//!
//! One task per stream produces responses into a small channel (so reading
//! MariaDB and encoding/sending overlap), counting responses for the fault
//! injector. Copy phase: one streaming text-protocol SELECT in key order
//! (vttablet's key: see [`crate::row_key`]), cut into large batches, each
//! carrying `last_known_pk`. Change
//! phase: change log ranges read from the capture tables (see
//! [`crate::capture`]), cut at transaction boundaries; the stream waits on the
//! capture's `watch` channel when idle, until the client's deadline
//! (`grpc-timeout`), then ends with DEADLINE_EXCEEDED.
//!
//! The copy's snapshot position is the capture head when the copy starts;
//! rows are read afterwards without a consistent snapshot, so a change made
//! during the copy can be both in the copied rows and replayed after them
//! (at-least-once, like a real catch-up). A resumed copy (position "" with
//! `last_known_pk`) takes a new snapshot position at resume time.
//!
//! `current` peeks get one response carrying the position, then the stream
//! ends.
//!
//! `include_*` flags: when at least one is set they are honoured exactly.
//! When none is set (what singer-tap and old airbyte send) inserts and the
//! after-images of updates come in `result` and deletes are not sent.
//!
//! The module follows a stream:
//! - this file: the service, request checks (auth, deadline, cursor,
//!   table, columns) and the producer task of each stream;
//! - [`stream`]: what one stream reads ([`stream::Selection`]) and its run:
//!   a `current` peek, or a copy then changes;
//! - [`copy`]: the copy phase;
//! - [`changes`]: the change phase;
//! - [`batch`]: change responses and the Vitess row encoding;
//! - [`sender`]: the sending side (faults, deadline, idle waits);
//! - [`compression`]: snappy-compressed calls, as PlanetScale's Go clients
//!   make them;
//! - [`conns`]: connection tracking for the drop-connection fault and for
//!   a stop that resets every client.

mod batch;
mod changes;
mod compression;
mod conns;
mod copy;
mod sender;
mod stream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::capture::ShardCapture;
use crate::faults::{FaultHandle, PURGED_MESSAGE};
use crate::values::ChangeText;
use crate::wire::binlogdata::RowChange;
use crate::wire::psdbconnect::v1alpha1::connect_server::Connect;
use crate::wire::psdbconnect::v1alpha1::{SyncRequest, SyncResponse};
use crate::wire::query::Field;

pub use batch::split_row;
pub use compression::{SnappyLayer, MAX_MESSAGE_BYTES};
pub use conns::{ConnRegistry, TrackedStream};
use sender::Out;
use stream::{has_shadow, Selection, StreamCtx};

/// Default rows per copy-phase response (also bounded by [`BATCH_BYTES`]).
pub const DEFAULT_COPY_BATCH_ROWS: usize = 4000;
/// Cell bytes per response before it is cut.
pub(super) const BATCH_BYTES: usize = 1 << 20;
/// Row changes per change-phase response (cut at a transaction boundary).
pub(super) const CHANGE_BATCH_ROWS: usize = 1000;
/// GTIDs read per change-log query.
pub(super) const GTID_CHUNK: u64 = 2000;

/// One shard as the gRPC front sees it.
pub struct ShardBackend {
    pub name: String,
    pub database: String,
    pub pool: mysql_async::Pool,
    pub capture: ShardCapture,
}

/// State shared by all streams.
pub struct SyncState {
    pub keyspace: String,
    pub shards: BTreeMap<String, ShardBackend>,
    pub username: String,
    pub password: String,
    pub change_text: ChangeText,
    pub faults: FaultHandle,
    /// Rows per copy-phase response (also cut at [`BATCH_BYTES`]).
    pub copy_batch_rows: usize,
    /// Live gRPC connections by peer address, for the drop-connection fault
    /// and for resetting every connection when the emulator stops.
    pub conns: Arc<ConnRegistry>,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct SyncService {
    pub state: Arc<SyncState>,
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncResponse, Status>> + Send>>;

/// What a stream's producer hands on: a Sync response, or a DDL statement
/// the change log recorded (a TRUNCATE TABLE made through the MySQL front).
/// The VStream front passes a DDL on as vtgate does (`VGTID`, `DDL`); the
/// Connect API has no place for one, so the Connect front drops it (the
/// next cursor moves past it), which is all a client of PlanetScale's
/// Connect can see of a DDL as far as its public clients show.
pub(crate) enum Unit {
    Response(SyncResponse),
    /// A VStream stream's change phase hands on row changes as they go in
    /// a ROW event (one transaction, or part of one), with the fields of
    /// its rows and, at the transaction's end, its position: no Sync
    /// response to take apart again.
    Changes {
        fields: Arc<[Field]>,
        changes: Vec<RowChange>,
        position: Option<String>,
    },
    Ddl {
        statement: String,
        position: String,
    },
}

#[tonic::async_trait]
impl Connect for SyncService {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        request: Request<SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let st = self.state.clone();
        check_auth(&st, request.metadata())?;
        let deadline = parse_timeout(request.metadata()).map(|d| Instant::now() + d);
        let peer = request.remote_addr();
        let rx = open_stream(st, request.into_inner(), deadline, peer, false).await?;
        let responses = tokio_stream::StreamExt::filter_map(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            |unit| match unit {
                Ok(Unit::Response(r)) => Some(Ok(r)),
                // A Connect stream (`vstream: false`) makes no `Changes`.
                Ok(Unit::Changes { .. } | Unit::Ddl { .. }) => None,
                Err(status) => Some(Err(status)),
            },
        );
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Validates a Sync-shaped request and starts its producer task; the
/// receiver yields its responses. `vstream` shapes the change phase for the
/// VStream front: one response per transaction (or part of one: those carry
/// no cursor), and deletes with their whole before-image.
pub(crate) async fn open_stream(
    st: Arc<SyncState>,
    req: SyncRequest,
    deadline: Option<Instant>,
    peer: Option<SocketAddr>,
    vstream: bool,
) -> Result<mpsc::Receiver<Result<Unit, Status>>, Status> {
    let cursor = req
        .cursor
        .clone()
        .ok_or_else(|| Status::invalid_argument("SyncRequest.cursor is required"))?;
    if cursor.keyspace != st.keyspace {
        return Err(Status::not_found(format!(
            "keyspace {:?} not found (this emulator serves {:?})",
            cursor.keyspace, st.keyspace
        )));
    }
    let shard = st.shards.get(&cursor.shard).ok_or_else(|| {
        Status::not_found(format!(
            "shard {:?} not found in keyspace {:?}",
            cursor.shard, st.keyspace
        ))
    })?;
    let mut conn = shard.pool.get_conn().await.map_err(internal)?;
    let meta = crate::values::load_table(&mut conn, &shard.database, &st.keyspace, &req.table_name)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "table {:?} not found in keyspace {:?}",
                req.table_name, st.keyspace
            ))
        })?;
    // A table created moments ago may not be captured yet; capture it now
    // so the change phase has its shadow table.
    let mut captured = has_shadow(&mut conn, &shard.capture.own, &meta.name).await?;
    if !captured {
        shard.capture.refresh().await.map_err(internal)?;
        // Still none: the table cannot be captured (the scan logged why),
        // and is served with its copy and no changes.
        captured = has_shadow(&mut conn, &shard.capture.own, &meta.name).await?;
    }
    drop(conn);
    let sel = Selection::new(&meta, &req.columns)?;
    let is_peek = cursor.position == "current";
    let start_gtid = if is_peek || cursor.position.is_empty() {
        None
    } else {
        let n = parse_position(&cursor.position, &shard.capture.uuid).ok_or_else(|| {
            Status::invalid_argument(format!(
                "invalid position {:?} for shard {:?}",
                cursor.position, cursor.shard
            ))
        })?;
        match n {
            Some(n) if !st.faults.is_purged(&cursor.shard, n) && n >= shard.capture.purged() => {
                Some(n)
            }
            _ => return Err(Status::unknown(PURGED_MESSAGE)),
        }
    };
    let fault = st.faults.take_for_stream(is_peek);
    let (tx, rx) = mpsc::channel(4);
    let shard_name = cursor.shard.clone();
    tokio::spawn(async move {
        let Some(shard) = st.shards.get(&shard_name) else {
            return;
        };
        let mut out = Out {
            tx,
            sent: 0,
            fault,
            deadline,
            peer,
            state: st.clone(),
            shutdown: st.shutdown.clone(),
        };
        let stream = StreamCtx {
            st: &st,
            shard,
            meta: &meta,
            sel: &sel,
            req: &req,
            vstream,
            captured,
        };
        let ended = stream.run(&mut out, is_peek, start_gtid, cursor).await;
        tracing::debug!(
            table = %req.table_name,
            responses = out.sent,
            stopped_early = ended.is_err(),
            "sync stream ended"
        );
    });
    Ok(rx)
}

pub(super) fn internal<E: std::fmt::Display>(e: E) -> Status {
    Status::internal(e.to_string())
}

/// Accepts Basic auth (PlanetScale) or Vitess static auth, which sends
/// `username` and `password` metadata.
pub(crate) fn check_auth(st: &SyncState, md: &tonic::metadata::MetadataMap) -> Result<(), Status> {
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", st.username, st.password));
    let basic = md
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v.trim() == expected);
    let text = |k: &str| md.get(k).and_then(|v| v.to_str().ok());
    let fixed = text("username") == Some(st.username.as_str())
        && text("password") == Some(st.password.as_str());
    if basic || fixed {
        Ok(())
    } else {
        Err(Status::unauthenticated("invalid username or password"))
    }
}

/// Parses the `grpc-timeout` header (`<digits><H|M|S|m|u|n>`).
pub(crate) fn parse_timeout(md: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Reads a `MySQL56/...` start position against this shard's server UUID:
/// `None` when it is not a GTID set, `Some(Some(n))` for the highest GTID
/// number of `uuid` in it, `Some(None)` when it names only other servers.
/// The last is a position of an earlier change log of this shard (one
/// removed on a clean exit, see [`crate::capture::remove`], gets a new UUID
/// when capture starts again): the changes after it are gone, so it answers
/// as purged.
pub fn parse_position(pos: &str, uuid: &str) -> Option<Option<u64>> {
    let (flavor, set) = pos.split_once('/')?;
    if flavor != "MySQL56" {
        return None;
    }
    let mut best = None;
    for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut pieces = part.split(':');
        let sid = pieces.next()?;
        if !is_uuid(sid) {
            return None;
        }
        let mine = sid.eq_ignore_ascii_case(uuid);
        for iv in pieces {
            let (a, b) = match iv.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?),
                None => {
                    let a = iv.parse::<u64>().ok()?;
                    (a, a)
                }
            };
            if mine && b >= a {
                best = Some(best.map_or(b, |x: u64| x.max(b)));
            }
        }
    }
    Some(best)
}

/// A server UUID as GTID sets spell it: 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let u = "0b4e3a9c-0000-4000-8000-000000000001";
        let other = "0b4e3a9c-0000-4000-8000-0000000000ff";
        assert_eq!(
            parse_position(&format!("MySQL56/{u}:1-17"), u),
            Some(Some(17))
        );
        assert_eq!(
            parse_position(&format!("MySQL56/{u}:1-3:5-9,{other}:1-99"), u),
            Some(Some(9))
        );
        // Another server's (an earlier change log's) position: purged.
        assert_eq!(
            parse_position(&format!("MySQL56/{other}:1-3"), u),
            Some(None)
        );
        assert_eq!(parse_position("MySQL56/other:1-3", u), None);
        assert_eq!(parse_position("garbage", u), None);
    }
}
