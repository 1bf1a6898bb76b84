//! The gRPC front: `/psdbconnect.v1alpha1.Connect/Sync`.
//!
//! One task per stream produces responses into a small channel (so reading
//! MariaDB and encoding/sending overlap), counting responses for the fault
//! injector. Copy phase: one streaming text-protocol SELECT in primary-key
//! order, cut into large batches, each carrying `last_known_pk`. Change
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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use mysql_async::prelude::Queryable;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::capture::{shadow_name, ShardCapture, CHANGELOG, GTIDS};
use crate::faults::{Fault, FaultHandle, FaultKind, PURGED_MESSAGE};
use crate::values::{push_change_form, quote_ident, quote_literal_for, ChangeText, TableMeta};
use crate::wire::psdbconnect::v1alpha1::connect_server::Connect;
use crate::wire::psdbconnect::v1alpha1::{
    DeletedRow, SyncRequest, SyncResponse, TableCursor, UpdatedRow,
};
use crate::wire::query::{Field, QueryResult, Row};

/// Default rows per copy-phase response (also bounded by [`BATCH_BYTES`]).
pub const DEFAULT_COPY_BATCH_ROWS: usize = 4000;
/// Cell bytes per response before it is cut.
const BATCH_BYTES: usize = 1 << 20;
/// Row changes per change-phase response (cut at a transaction boundary).
const CHANGE_BATCH_ROWS: usize = 1000;
/// GTIDs read per change-log query.
const GTID_CHUNK: u64 = 2000;

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
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
) -> Result<mpsc::Receiver<Result<SyncResponse, Status>>, Status> {
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
    let mut captured = has_shadow(&mut conn, &shard.database, &meta.name).await?;
    if !captured {
        shard.capture.refresh().await.map_err(internal)?;
        // Still none: the table cannot be captured (the scan logged why),
        // and is served with its copy and no changes.
        captured = has_shadow(&mut conn, &shard.database, &meta.name).await?;
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
        if st.faults.is_purged(&cursor.shard, n) || n < shard.capture.purged() {
            return Err(Status::unknown(PURGED_MESSAGE));
        }
        Some(n)
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

fn internal<E: std::fmt::Display>(e: E) -> Status {
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

/// The GTID number of our UUID in a `MySQL56/...` position.
pub fn parse_position(pos: &str, uuid: &str) -> Option<u64> {
    let (flavor, set) = pos.split_once('/')?;
    if flavor != "MySQL56" {
        return None;
    }
    let mut best = None;
    for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut pieces = part.split(':');
        let sid = pieces.next()?;
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
    best
}

/// Which columns a stream reads and returns.
struct Selection {
    /// Table column indexes returned to the client, in table order.
    out: Vec<usize>,
    /// Table column indexes SELECTed: `out` then missing PK columns.
    select: Vec<usize>,
    /// Positions in `select` of the PK columns, in key order.
    pk_pos: Vec<usize>,
}

impl Selection {
    fn new(meta: &TableMeta, columns: &[String]) -> Result<Selection, Status> {
        let out: Vec<usize> = if columns.is_empty() {
            (0..meta.columns.len()).collect()
        } else {
            let mut idx = Vec::new();
            for c in columns {
                let i = meta.column_index(c).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown column {c:?} in table {:?}",
                        meta.name
                    ))
                })?;
                if !idx.contains(&i) {
                    idx.push(i);
                }
            }
            idx.sort_unstable();
            idx
        };
        let mut select = out.clone();
        for &p in &meta.pk {
            if !select.contains(&p) {
                select.push(p);
            }
        }
        let pk_pos = meta
            .pk
            .iter()
            .filter_map(|p| select.iter().position(|s| s == p))
            .collect();
        Ok(Selection {
            out,
            select,
            pk_pos,
        })
    }

    fn fields(&self, meta: &TableMeta, idx: &[usize]) -> Vec<Field> {
        idx.iter().map(|&i| meta.columns[i].field.clone()).collect()
    }
}

/// Accepted gRPC connections that are still open, by peer address. Entries
/// are removed (under the lock) before their socket closes, so a registered
/// fd always belongs to its connection.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    fds: Mutex<HashMap<SocketAddr, RawFd>>,
}

impl ConnRegistry {
    /// Resets (RST) the connection from `peer`, or every connection.
    pub fn reset(&self, peer: Option<SocketAddr>) {
        let Ok(map) = self.fds.lock() else { return };
        for (p, fd) in map.iter() {
            if peer.is_some_and(|want| want != *p) {
                continue;
            }
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: the fd is open: its TrackedStream removes it from this
            // map under the same lock before closing it.
            unsafe {
                libc::setsockopt(
                    *fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// A gRPC connection's TCP stream that stays registered while it is open.
pub struct TrackedStream {
    inner: tokio::net::TcpStream,
    peer: SocketAddr,
    registry: Arc<ConnRegistry>,
}

impl TrackedStream {
    pub fn new(
        inner: tokio::net::TcpStream,
        peer: SocketAddr,
        registry: Arc<ConnRegistry>,
    ) -> Self {
        use std::os::fd::AsRawFd;
        if let Ok(mut m) = registry.fds.lock() {
            m.insert(peer, inner.as_raw_fd());
        }
        TrackedStream {
            inner,
            peer,
            registry,
        }
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Ok(mut m) = self.registry.fds.lock() {
            if m.get(&self.peer) == Some(&self.inner.as_raw_fd()) {
                m.remove(&self.peer);
            }
        }
    }
}

impl tokio::io::AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TrackedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.inner.local_addr().ok(),
            remote_addr: Some(self.peer),
        }
    }
}

/// Why a stream stopped early (client gone, fault, deadline, error sent).
struct Stop;

/// The sending side of a stream: counts responses and applies faults and the
/// deadline.
struct Out {
    tx: mpsc::Sender<Result<SyncResponse, Status>>,
    sent: u32,
    fault: Option<Fault>,
    deadline: Option<Instant>,
    peer: Option<SocketAddr>,
    state: Arc<SyncState>,
    shutdown: watch::Receiver<bool>,
}

impl Out {
    async fn send(&mut self, mut resp: SyncResponse) -> Result<(), Stop> {
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return self
                    .fail(Status::deadline_exceeded("context deadline exceeded"))
                    .await;
            }
        }
        if let Some(f) = self
            .fault
            .as_ref()
            .filter(|f| self.sent >= f.after)
            .cloned()
        {
            self.fault = None;
            match f.kind {
                FaultKind::Status { code, message } => {
                    return self
                        .fail(Status::new(tonic::Code::from_i32(code), message))
                        .await;
                }
                FaultKind::Stall => {
                    tracing::info!("fault: stalling stream");
                    let mut shutdown = self.shutdown.clone();
                    tokio::select! {
                        _ = self.tx.closed() => {}
                        _ = shutdown.changed() => {}
                    }
                    return Err(Stop);
                }
                FaultKind::DropConnection => {
                    // Let the responses already queued reach the client first,
                    // so the drop is really mid-stream.
                    let max = self.tx.max_capacity();
                    for _ in 0..100 {
                        if self.tx.capacity() == max {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.drop_connection();
                    return Err(Stop);
                }
                FaultKind::MalformedRow => {
                    tracing::info!("fault: sending a malformed row");
                    let bad = Row {
                        lengths: vec![5, 7],
                        values: prost::bytes::Bytes::from_static(b"abc"),
                    };
                    match resp.result.first_mut() {
                        Some(r) => r.rows.push(bad),
                        None => resp.result.push(QueryResult {
                            rows: vec![bad],
                            ..Default::default()
                        }),
                    }
                }
            }
        }
        if self.tx.send(Ok(resp)).await.is_err() {
            tracing::debug!("client went away");
            return Err(Stop);
        }
        self.sent += 1;
        Ok(())
    }

    async fn fail(&mut self, status: Status) -> Result<(), Stop> {
        let _ = self.tx.send(Err(status)).await;
        Err(Stop)
    }

    /// Aborts the TCP connection under this stream with an RST.
    fn drop_connection(&self) {
        tracing::info!(peer = ?self.peer, "fault: dropping connection");
        if let Some(p) = self.peer {
            self.state.conns.reset(Some(p));
        }
    }

    /// Waits for `rx` to change, the deadline, or shutdown.
    async fn wait_change(&mut self, rx: &mut watch::Receiver<u64>) -> Result<(), Stop> {
        let mut shutdown = self.shutdown.clone();
        let changed = async {
            tokio::select! {
                r = rx.changed() => r.is_ok(),
                _ = shutdown.changed() => false,
                _ = self.tx.closed() => false,
            }
        };
        match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, changed).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Stop),
                Err(_) => {
                    self.fail(Status::deadline_exceeded("context deadline exceeded"))
                        .await
                }
            },
            None => {
                if changed.await {
                    Ok(())
                } else {
                    Err(Stop)
                }
            }
        }
    }
}

/// Whether `table`'s shadow table (its change capture) exists.
async fn has_shadow(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
) -> Result<bool, Status> {
    let shadow: Option<String> = conn
        .exec_first(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = ? AND table_name = ?",
            (database, shadow_name(table)),
        )
        .await
        .map_err(internal)?;
    Ok(shadow.is_some())
}

struct StreamCtx<'a> {
    st: &'a SyncState,
    shard: &'a ShardBackend,
    meta: &'a TableMeta,
    sel: &'a Selection,
    req: &'a SyncRequest,
    /// Shape the change phase for the VStream front (see [`open_stream`]).
    vstream: bool,
    /// The table has change capture; without it the change phase sends
    /// positions and no rows.
    captured: bool,
}

impl StreamCtx<'_> {
    fn cursor(&self, position: String, last_known_pk: Option<QueryResult>) -> TableCursor {
        TableCursor {
            shard: self.shard.name.clone(),
            keyspace: self.st.keyspace.clone(),
            position,
            last_known_pk,
        }
    }

    async fn run(
        &self,
        out: &mut Out,
        is_peek: bool,
        start_gtid: Option<u64>,
        cursor: TableCursor,
    ) -> Result<(), Stop> {
        let capture = &self.shard.capture;
        if is_peek {
            let head = capture.sync_now().await.unwrap_or_else(|_| capture.head());
            let pos = capture.position(head);
            return out
                .send(SyncResponse {
                    cursor: Some(self.cursor(pos, None)),
                    ..Default::default()
                })
                .await;
        }
        let from = match start_gtid {
            Some(n) => n,
            None => {
                let snapshot = capture.sync_now().await.unwrap_or_else(|_| capture.head());
                self.copy(out, snapshot, cursor.last_known_pk.as_ref())
                    .await?;
                snapshot
            }
        };
        self.changes(out, from).await
    }

    async fn copy(
        &self,
        out: &mut Out,
        snapshot: u64,
        last_pk: Option<&QueryResult>,
    ) -> Result<(), Stop> {
        let position = self.shard.capture.position(snapshot);
        let meta = self.meta;
        let sel = self.sel;
        let cols: Vec<String> = sel
            .select
            .iter()
            .map(|&i| quote_ident(&meta.columns[i].name))
            .collect();
        let order: Vec<String> = meta
            .pk
            .iter()
            .map(|&i| quote_ident(&meta.columns[i].name))
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {}.{}",
            cols.join(", "),
            quote_ident(&self.shard.database),
            quote_ident(&meta.name)
        );
        if let Some(lp) = last_pk.and_then(|q| q.rows.first().map(|r| (q, r))) {
            match self.after_pk_clause(lp.0, lp.1) {
                Ok(Some(clause)) => {
                    sql.push_str(" WHERE ");
                    sql.push_str(&clause);
                }
                Ok(None) => {}
                Err(status) => return out.fail(status).await,
            }
        }
        sql.push_str(" ORDER BY ");
        sql.push_str(&order.join(", "));

        let out_fields = sel.fields(meta, &sel.out);
        let pk_fields = sel.fields(meta, &meta.pk);
        let n_out = sel.out.len();
        let mut conn = match self.shard.pool.get_conn().await {
            Ok(c) => c,
            Err(e) => return out.fail(internal(e)).await,
        };
        let mut result = match conn.query_iter(sql).await {
            Ok(r) => r,
            Err(e) => return out.fail(internal(e)).await,
        };
        let batch_rows = self.st.copy_batch_rows.max(1);
        let mut rows: Vec<(Vec<i64>, usize, usize)> = Vec::with_capacity(batch_rows.min(65_536));
        let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + (64 << 10));
        let mut bytes = 0usize;
        let mut last_pk_row: Option<Row> = None;
        loop {
            let next = match result.next().await {
                Ok(r) => r,
                Err(e) => return out.fail(internal(e)).await,
            };
            let done = next.is_none();
            if let Some(row) = next {
                let cells = row.unwrap_raw();
                // Cells of a whole batch go into one buffer; rows become
                // slices of it at flush time (one allocation per batch).
                let mut lengths = Vec::with_capacity(n_out);
                let start = buf.len();
                for cell in cells.iter().take(n_out) {
                    push_cell(cell.as_ref(), &mut lengths, &mut buf);
                }
                let mut pk_lengths = Vec::with_capacity(sel.pk_pos.len());
                let mut pk_values = Vec::new();
                for &p in &sel.pk_pos {
                    push_cell(
                        cells.get(p).and_then(|c| c.as_ref()),
                        &mut pk_lengths,
                        &mut pk_values,
                    );
                }
                last_pk_row = Some(Row {
                    lengths: pk_lengths,
                    values: pk_values.into(),
                });
                bytes += buf.len() - start;
                rows.push((lengths, start, buf.len()));
            }
            if !rows.is_empty() && (done || rows.len() >= batch_rows || bytes >= BATCH_BYTES) {
                let lkp = QueryResult {
                    fields: pk_fields.clone(),
                    rows: last_pk_row.take().into_iter().collect(),
                    ..Default::default()
                };
                let resp = SyncResponse {
                    result: vec![QueryResult {
                        fields: out_fields.clone(),
                        rows: {
                            let block = prost::bytes::Bytes::from(std::mem::replace(
                                &mut buf,
                                Vec::with_capacity(BATCH_BYTES + (64 << 10)),
                            ));
                            rows.drain(..)
                                .map(|(lengths, s, e)| Row {
                                    lengths,
                                    values: block.slice(s..e),
                                })
                                .collect()
                        },
                        ..Default::default()
                    }],
                    cursor: Some(self.cursor(position.clone(), Some(lkp))),
                    ..Default::default()
                };
                bytes = 0;
                out.send(resp).await?;
            }
            if done {
                break;
            }
        }
        drop(result);
        drop(conn);
        out.send(SyncResponse {
            cursor: Some(self.cursor(position, None)),
            ..Default::default()
        })
        .await
    }

    /// `WHERE` clause selecting rows strictly after a `last_known_pk` row.
    fn after_pk_clause(&self, q: &QueryResult, row: &Row) -> Result<Option<String>, Status> {
        let meta = self.meta;
        let values = split_row(row).ok_or_else(|| {
            Status::invalid_argument("last_known_pk row lengths do not match its values")
        })?;
        // Values are matched by position to the PK columns; field names, when
        // present, must agree.
        let n = meta.pk.len().min(values.len());
        if n == 0 {
            return Ok(None);
        }
        for (i, f) in q.fields.iter().enumerate().take(n) {
            let col = &meta.columns[meta.pk[i]];
            if !f.name.is_empty() && !f.name.eq_ignore_ascii_case(&col.name) {
                return Err(Status::invalid_argument(format!(
                    "last_known_pk field {:?} is not primary key column {:?} of {:?}",
                    f.name, col.name, meta.name
                )));
            }
        }
        let mut ors = Vec::new();
        for k in 0..n {
            let mut ands = Vec::new();
            for (j, v) in values.iter().enumerate().take(k + 1) {
                let col = &meta.columns[meta.pk[j]];
                let ident = quote_ident(&col.name);
                let op = if j == k { ">" } else { "=" };
                match v {
                    Some(bytes) => {
                        ands.push(format!("{ident} {op} {}", quote_literal_for(col, bytes)))
                    }
                    None if j == k => ands.push(format!("{ident} IS NOT NULL")),
                    None => ands.push(format!("{ident} IS NULL")),
                }
            }
            ors.push(format!("({})", ands.join(" AND ")));
        }
        Ok(Some(ors.join(" OR ")))
    }

    async fn changes(&self, out: &mut Out, from: u64) -> Result<(), Stop> {
        let mut rx = self.shard.capture.subscribe();
        let mut pos = from;
        loop {
            let head = *rx.borrow_and_update();
            while head > pos {
                let upto = head.min(pos + GTID_CHUNK);
                self.change_range(out, pos, upto).await?;
                pos = upto;
            }
            out.wait_change(&mut rx).await?;
        }
    }

    /// Streams the changes to this table in GTIDs (from, upto], ending with a
    /// cursor at `upto`.
    async fn change_range(&self, out: &mut Out, from: u64, upto: u64) -> Result<(), Stop> {
        self.check_retained(out, from).await?;
        let meta = self.meta;
        let sel = self.sel;
        let db = quote_ident(&self.shard.database);
        let cols: Vec<String> = sel
            .select
            .iter()
            .map(|&i| format!("s.{}", quote_ident(&meta.columns[i].name)))
            .collect();
        let sql = if !self.captured {
            "SELECT 1 FROM DUAL WHERE FALSE".to_string()
        } else {
            format!(
                "SELECT g.gtid, c.op, s._psdb_img, {} FROM {db}.`{GTIDS}` g \
             JOIN {db}.`{CHANGELOG}` c ON c.trx_start = g.trx \
             JOIN {db}.{} s ON s._psdb_seq = c.seq \
             WHERE c.tbl = {} AND g.gtid > {from} AND g.gtid <= {upto} \
             ORDER BY g.gtid, c.seq, s._psdb_img DESC",
                cols.join(", "),
                quote_ident(&shadow_name(&meta.name)),
                crate::values::quote_literal(meta.name.as_bytes()),
            )
        };
        // Streamed, not collected: one transaction can hold millions of rows.
        let mut conn = match self.shard.pool.get_conn().await {
            Ok(c) => c,
            Err(e) => return out.fail(internal(e)).await,
        };
        let mut result = match conn.query_iter(sql).await {
            Ok(r) => r,
            Err(e) => return out.fail(internal(e)).await,
        };
        let legacy =
            !(self.req.include_inserts || self.req.include_updates || self.req.include_deletes);
        let out_fields = sel.fields(meta, &sel.out);
        // VStream deletes carry the whole before-image, as Vitess sends it.
        let (pk_fields, delete_positions) = if self.vstream {
            (out_fields.clone(), sel.out_positions())
        } else {
            (sel.fields(meta, &meta.pk), sel.pk_pos.clone())
        };
        let fields = ChangeFields::new(out_fields, &pk_fields);
        // A response cut inside a transaction: VStream ends the
        // transaction only at its last part, so earlier parts get no cursor.
        let part = |done: u64| (!self.vstream).then_some(done);
        let mut batch = Batch::default();
        let mut done_pos = from;
        let mut cur_gtid = 0u64;
        let mut before: Option<Vec<Option<Vec<u8>>>> = None;
        loop {
            let row = match result.next().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return out.fail(internal(e)).await,
            };
            let cells = row.unwrap_raw();
            let gtid = cells
                .first()
                .and_then(|c| c.as_ref())
                .and_then(as_u64)
                .unwrap_or(0);
            let op = cells
                .get(1)
                .and_then(|c| c.as_ref())
                .and_then(as_bytes)
                .unwrap_or_default();
            let img = cells
                .get(2)
                .and_then(|c| c.as_ref())
                .and_then(as_bytes)
                .unwrap_or_default();
            if gtid != cur_gtid {
                if cur_gtid != 0 {
                    done_pos = cur_gtid;
                    if batch.rows() >= CHANGE_BATCH_ROWS || (self.vstream && batch.rows() > 0) {
                        out.send(batch.take(self, &fields, Some(done_pos))).await?;
                    }
                }
                cur_gtid = gtid;
            }
            let values: Vec<Option<Vec<u8>>> = cells
                .into_iter()
                .skip(3)
                .map(|c| match c {
                    Some(mysql_async::Value::Bytes(b)) => Some(b),
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(other) => Some(other.as_sql(true).into_bytes()),
                })
                .collect();
            let kind = match (op.as_slice(), img.as_slice()) {
                (b"I", _) => Kind::Insert,
                (b"U", b"B") => {
                    before = Some(values);
                    continue;
                }
                (b"U", _) => Kind::Update,
                (b"D", _) => Kind::Delete,
                _ => continue,
            };
            let wanted = match kind {
                Kind::Insert => legacy || self.req.include_inserts,
                Kind::Update => legacy || self.req.include_updates,
                Kind::Delete => !legacy && self.req.include_deletes,
            };
            if !wanted {
                before = None;
                continue;
            }
            // Kinds land in separate response fields; cut the response when
            // the kind changes so the order of changes is kept.
            let kind_for_batch = if legacy && kind == Kind::Update {
                Kind::Insert
            } else {
                kind
            };
            if batch.kind.is_some_and(|k| k != kind_for_batch) {
                out.send(batch.take(self, &fields, part(done_pos))).await?;
            }
            batch.kind = Some(kind_for_batch);
            match kind_for_batch {
                Kind::Insert => batch
                    .inserts
                    .push(self.encode(&values, &sel.out_positions())),
                Kind::Update => {
                    let b = before.take().unwrap_or_default();
                    batch.updates.push((
                        self.encode(&b, &sel.out_positions()),
                        self.encode(&values, &sel.out_positions()),
                    ));
                }
                Kind::Delete => batch.deletes.push(self.encode(&values, &delete_positions)),
            }
            // A huge transaction is cut too; its responses carry the position
            // before it, so a resume replays it (at-least-once).
            if batch.rows() >= 20 * CHANGE_BATCH_ROWS {
                out.send(batch.take(self, &fields, part(done_pos))).await?;
            }
        }
        // Pruned while read: some images may be missing, so no cursor.
        self.check_retained(out, from).await?;
        out.send(batch.take(self, &fields, Some(upto))).await
    }

    /// Fails the stream as purged when the changes after `from` have been
    /// pruned by the retention (a copy may outlast it).
    async fn check_retained(&self, out: &mut Out, from: u64) -> Result<(), Stop> {
        if from < self.shard.capture.purged() {
            return out.fail(Status::unknown(PURGED_MESSAGE)).await;
        }
        Ok(())
    }

    /// Encodes selected cells of a change image as a Vitess row.
    fn encode(&self, values: &[Option<Vec<u8>>], positions: &[usize]) -> Row {
        let mut lengths = Vec::with_capacity(positions.len());
        let mut out = Vec::new();
        for &p in positions {
            let v = values.get(p).and_then(|v| v.as_deref());
            match v {
                None => lengths.push(-1),
                Some(b) => {
                    let start = out.len();
                    if self.st.change_text == ChangeText::ChangeForms {
                        let col = &self.meta.columns[self.sel.select[p]];
                        push_change_form(col, b, &mut out);
                    } else {
                        out.extend_from_slice(b);
                    }
                    lengths.push((out.len() - start) as i64);
                }
            }
        }
        Row {
            lengths,
            values: out.into(),
        }
    }
}

impl Selection {
    /// Positions in `select` of the returned columns (always the prefix).
    fn out_positions(&self) -> Vec<usize> {
        (0..self.out.len()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Update,
    Delete,
}

#[derive(Default)]
struct Batch {
    kind: Option<Kind>,
    inserts: Vec<Row>,
    updates: Vec<(Row, Row)>,
    deletes: Vec<Row>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.inserts.len() + self.updates.len() + self.deletes.len()
    }

    fn take(
        &mut self,
        ctx: &StreamCtx<'_>,
        fields: &ChangeFields,
        pos: Option<u64>,
    ) -> SyncResponse {
        let b = std::mem::take(self);
        let mut resp = SyncResponse {
            cursor: pos.map(|p| ctx.cursor(ctx.shard.capture.position(p), None)),
            ..Default::default()
        };
        if !b.inserts.is_empty() {
            resp.result.push(QueryResult {
                fields: fields.out.clone(),
                rows: b.inserts,
                ..Default::default()
            });
        }
        for (before, after) in b.updates {
            resp.updates.push(UpdatedRow {
                before: one_row_result(&fields.out_encoded, &before),
                after: one_row_result(&fields.out_encoded, &after),
            });
        }
        for key in b.deletes {
            resp.deletes.push(DeletedRow {
                result: one_row_result(&fields.pk_encoded, &key),
            });
        }
        resp
    }
}

/// The field descriptions of a change stream, plain for insert results and
/// pre-encoded for the one-row results of updates and deletes.
struct ChangeFields {
    out: Vec<Field>,
    out_encoded: Vec<u8>,
    pk_encoded: Vec<u8>,
}

impl ChangeFields {
    fn new(out: Vec<Field>, pk: &[Field]) -> ChangeFields {
        ChangeFields {
            out_encoded: encode_fields(&out),
            pk_encoded: encode_fields(pk),
            out,
        }
    }
}

/// `QueryResult.fields` (field 1) as it goes on the wire.
fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in fields {
        prost::encoding::message::encode(1, f, &mut buf);
    }
    buf
}

/// A `QueryResult` of pre-encoded fields and one row (`rows` is field 4),
/// byte for byte what prost would encode for the message.
fn one_row_result(fields: &[u8], row: &Row) -> prost::bytes::Bytes {
    let mut buf = Vec::with_capacity(fields.len() + row.values.len() + 4 * row.lengths.len() + 16);
    buf.extend_from_slice(fields);
    prost::encoding::message::encode(4, row, &mut buf);
    buf.into()
}

fn as_u64(v: &mysql_async::Value) -> Option<u64> {
    match v {
        mysql_async::Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        mysql_async::Value::Int(i) => u64::try_from(*i).ok(),
        mysql_async::Value::UInt(u) => Some(*u),
        _ => None,
    }
}

fn as_bytes(v: &mysql_async::Value) -> Option<Vec<u8>> {
    match v {
        mysql_async::Value::Bytes(b) => Some(b.clone()),
        _ => None,
    }
}

/// Appends one text-protocol cell to a Vitess row.
fn push_cell(cell: Option<&mysql_async::Value>, lengths: &mut Vec<i64>, values: &mut Vec<u8>) {
    match cell {
        Some(mysql_async::Value::Bytes(b)) => {
            lengths.push(b.len() as i64);
            values.extend_from_slice(b);
        }
        Some(mysql_async::Value::NULL) | None => lengths.push(-1),
        Some(other) => {
            let s = other.as_sql(true);
            let s = s.trim_matches('\'');
            lengths.push(s.len() as i64);
            values.extend_from_slice(s.as_bytes());
        }
    }
}

/// Splits a Vitess row into cells; `None` if lengths and values disagree.
pub fn split_row(row: &Row) -> Option<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(row.lengths.len());
    let mut off = 0usize;
    for &l in &row.lengths {
        if l < 0 {
            out.push(None);
        } else {
            let l = usize::try_from(l).ok()?;
            let end = off.checked_add(l)?;
            out.push(Some(row.values.get(off..end)?.to_vec()));
            off = end;
        }
    }
    (off == row.values.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let u = "0b4e3a9c-0000-4000-8000-000000000001";
        assert_eq!(parse_position(&format!("MySQL56/{u}:1-17"), u), Some(17));
        assert_eq!(
            parse_position(&format!("MySQL56/{u}:1-3:5-9,x:1-99"), u),
            Some(9)
        );
        assert_eq!(parse_position("MySQL56/other:1-3", u), None);
        assert_eq!(parse_position("garbage", u), None);
    }
}
