//! The VStream front: `/vtgateservice.Vitess/VStream`, as vtgate serves it.
//!
//! It reads the same backing data, with the same fault switches, as the
//! Connect front: the request is turned into the Sync-shaped stream of
//! [`crate::grpc::open_stream`] (copy in primary-key order, then changes from
//! the capture log, one unit of row changes per transaction, already in
//! VStream's row shape), and a translator task turns each of those into
//! VStream events in vtgate's order:
//!
//! - a transaction: `BEGIN`, `FIELD` (before the first row, again when the
//!   fields change, and before the first change after a copy), `ROW`
//!   (`flags: 1`), `VGTID`, `COMMIT`;
//! - a copy batch: `BEGIN`, `FIELD` then a `VGTID` with the snapshot
//!   position, one `ROW` per row (after-images only), `VGTID` with
//!   `table_p_ks`, `COMMIT`; the end of the copy is a `BEGIN`, `VGTID`
//!   without `table_p_ks`, `COMMIT`, then `COPY_COMPLETED` for the shard and
//!   once more with empty keyspace and shard. vtgate does not pass on
//!   vttablet's `LASTPK` events: the lastpk travels in the VGTID only;
//! - every event but `HEARTBEAT` and the last `COPY_COMPLETED` names the
//!   keyspace and shard;
//! - a TRUNCATE recorded by the MySQL front: `VGTID`, then `DDL` with the
//!   statement, outside BEGIN/COMMIT (see [`crate::grpc::Unit`]);
//! - an idle stream sends `HEARTBEAT` every `heartbeat_interval` seconds;
//! - a `current` request gets one `VGTID` with the shard's position.
//!
//! This order and shape were checked against a real vtgate (v0.24, see
//! tests/vstream_diff.rs); what still differs is listed in the README.
//!
//! Events of consecutive transactions that are ready at once go in one
//! response (vtgate batches too). Row and field table names are
//! `keyspace.table`, vtgate's default. `enum_set_string_values` is set
//! unless the emulator sends old Vitess change forms (ENUM indexes, SET
//! bitmasks).
//!
//! A response's events travel already encoded (build.rs retypes
//! `VStreamResponse.events` as bytes): a copied row's ROW event is written
//! by hand in [`copy_rows`], everything else by prost, and both give the
//! same bytes.
//!
//! A resumed copy (`table_p_ks` with a lastpk) gets a new snapshot, whatever
//! the gtid, like the Connect front. A request names one shard and one
//! table: `filter.rules = [{match: "<table>"}]`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::grpc::{check_auth, open_stream, parse_timeout, SyncState, Unit};
use crate::values::ChangeText;
use crate::wire::binlogdata::{
    FieldEvent, RowChange, RowEvent, ShardGtid, TableLastPk, VEvent, VEventType, VGtid,
};
use crate::wire::psdbconnect::v1alpha1::{SyncRequest, SyncResponse, TableCursor};
use crate::wire::query::{Field, QueryResult};
use crate::wire::vtgate::{VStreamRequest, VStreamResponse};
use crate::wire::vtgateservice::vitess_server::Vitess;

mod copy_rows;

/// Row changes per VStream response before consecutive transactions stop
/// being merged into it.
const MERGE_ROWS: usize = 4000;

#[derive(Clone)]
pub struct VStreamService {
    pub state: Arc<SyncState>,
}

type VStreamStream = Pin<Box<dyn Stream<Item = Result<VStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Vitess for VStreamService {
    type VStreamStream = VStreamStream;

    async fn v_stream(
        &self,
        request: Request<VStreamRequest>,
    ) -> Result<Response<Self::VStreamStream>, Status> {
        let st = self.state.clone();
        check_auth(&st, request.metadata())?;
        let deadline = parse_timeout(request.metadata()).map(|d| Instant::now() + d);
        let peer: Option<SocketAddr> = request.remote_addr();
        let req = request.into_inner();
        let sg = match req.vgtid.as_ref().map(|v| v.shard_gtids.as_slice()) {
            Some([one]) => one.clone(),
            _ => {
                return Err(Status::invalid_argument(
                    "this emulator streams one shard per VStream: vgtid.shard_gtids must hold exactly one entry",
                ))
            }
        };
        let (table, columns) = match req.filter.as_ref().map(|f| f.rules.as_slice()) {
            Some([rule]) if !rule.r#match.is_empty() && !rule.r#match.starts_with('/') => {
                let columns = select_list(&rule.filter).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unsupported filter {:?}: use SELECT * or SELECT `a`, `b` FROM `table`",
                        rule.filter
                    ))
                })?;
                (rule.r#match.clone(), columns)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "this emulator streams one table per VStream: filter.rules must be [{match: \"<table>\"}]",
                ))
            }
        };
        let last_pk = sg
            .table_p_ks
            .iter()
            .find(|t| t.table_name == table || t.table_name.ends_with(&format!(".{table}")))
            .and_then(|t| t.lastpk.clone());
        let position = if last_pk.is_some() {
            String::new()
        } else {
            sg.gtid.clone()
        };
        let copying = position.is_empty();
        let sync = SyncRequest {
            table_name: table.clone(),
            cursor: Some(TableCursor {
                shard: sg.shard.clone(),
                keyspace: sg.keyspace.clone(),
                position,
                last_known_pk: last_pk,
            }),
            include_inserts: true,
            include_updates: true,
            include_deletes: true,
            columns,
            ..Default::default()
        };
        let heartbeat = req
            .flags
            .as_ref()
            .map(|f| f.heartbeat_interval)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(u64::from(s)));
        let rx = open_stream(st.clone(), sync, deadline, peer, true).await?;
        let (tx, out_rx) = mpsc::channel(4);
        let translator = Translator {
            keyspace: Bytes::from(sg.keyspace),
            shard: Bytes::from(sg.shard),
            qualified: Bytes::from(format!("{}.{table}", st.keyspace)),
            table,
            enum_text: st.change_text == ChangeText::CopyForms,
            fields: None,
            in_tx: false,
            copying,
        };
        tokio::spawn(translator.run(rx, tx, heartbeat));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

/// Turns Sync-shaped responses into VStream events.
struct Translator {
    /// The keyspace, shard and `keyspace.table` (the name vtgate puts in
    /// FIELD and ROW events) as events carry them: shared by every event
    /// rather than copied into each (a copy sends one event a row).
    keyspace: Bytes,
    shard: Bytes,
    qualified: Bytes,
    table: String,
    enum_text: bool,
    /// The fields last sent in a FIELD event.
    fields: Option<Arc<[Field]>>,
    in_tx: bool,
    /// The stream began with a copy that has not completed yet.
    copying: bool,
}

/// A name of the stream as the members still typed `string` take it; it
/// was a `String` to begin with, so nothing is replaced.
fn text(name: &Bytes) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// An event as a response carries it (pre-encoded, see build.rs).
fn encoded(ev: &VEvent) -> Bytes {
    Bytes::from(ev.encode_to_vec())
}

fn event(kind: VEventType) -> VEvent {
    VEvent {
        r#type: kind as i32,
        ..Default::default()
    }
}

impl Translator {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Result<Unit, Status>>,
        tx: mpsc::Sender<Result<VStreamResponse, Status>>,
        heartbeat: Option<Duration>,
    ) {
        loop {
            let first = match heartbeat {
                Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        let mut hb = event(VEventType::Heartbeat);
                        hb.timestamp = now_secs();
                        let resp = VStreamResponse {
                            events: vec![encoded(&hb)],
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(first) = first else { return };
            let mut events = Vec::new();
            let mut rows = 0;
            let mut failure = None;
            let mut next = Some(first);
            // Merge what is ready now, up to a size (a big transaction then
            // spans responses, as it does from vtgate).
            while let Some(msg) = next.take() {
                match msg {
                    Ok(Unit::Response(resp)) => rows += self.translate(resp, &mut events),
                    Ok(Unit::Changes {
                        fields,
                        changes,
                        position,
                    }) => {
                        let end = position.as_deref().map(|p| (p, None));
                        rows += self.part(Some(fields), changes, end, &mut events);
                    }
                    Ok(Unit::Ddl {
                        statement,
                        position,
                    }) => self.ddl(statement, &position, &mut events),
                    Err(status) => {
                        failure = Some(status);
                        break;
                    }
                }
                if rows < MERGE_ROWS {
                    next = rx.try_recv().ok();
                }
            }
            if !events.is_empty() && tx.send(Ok(VStreamResponse { events })).await.is_err() {
                return;
            }
            if let Some(status) = failure {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }

    /// An event of this stream's shard: vtgate passes on the keyspace and
    /// shard vttablet stamps on every event (not on HEARTBEAT or the last
    /// COPY_COMPLETED, which vtgate makes itself).
    fn event(&self, kind: VEventType) -> VEvent {
        VEvent {
            keyspace: self.keyspace.clone(),
            shard: self.shard.clone(),
            ..event(kind)
        }
    }

    /// Appends the events of one response; returns its row count.
    fn translate(&mut self, resp: SyncResponse, events: &mut Vec<Bytes>) -> usize {
        let (fields, changes) = row_changes(resp.result);
        let end = resp
            .cursor
            .as_ref()
            .map(|c| (c.position.as_str(), c.last_known_pk.as_ref()));
        self.part(fields.map(Arc::from), changes, end, events)
    }

    /// Appends the events of a transaction's rows (or a copy batch's), and
    /// when `end` gives its position (and a copy's lastpk), its end;
    /// returns the row count.
    fn part(
        &mut self,
        fields: Option<Arc<[Field]>>,
        changes: Vec<RowChange>,
        end: Option<(&str, Option<&QueryResult>)>,
        events: &mut Vec<Bytes>,
    ) -> usize {
        let rows = changes.len();
        if !changes.is_empty() {
            self.begin(events);
            if let Some(f) = fields.filter(|f| !f.is_empty()) {
                if self.fields.as_deref() != Some(&*f) {
                    self.field_event(&f, events);
                    // A copy pass states its snapshot position right after
                    // its fields, before the rows.
                    if let (true, Some((position, _))) = (self.copying, end) {
                        events.push(encoded(&self.vgtid(position, Vec::new())));
                    }
                    self.fields = Some(f);
                }
            }
            self.row_events(changes, events);
        }
        let Some((position, last_pk)) = end else {
            return rows;
        };
        self.begin(events);
        // vtgate folds vttablet's LASTPK events into the VGTID's table_p_ks
        // and does not pass them on.
        let table_p_ks = match last_pk {
            Some(pk) => vec![TableLastPk {
                table_name: self.table.clone(),
                lastpk: Some(lastpk_shape(pk)),
            }],
            None => Vec::new(),
        };
        events.push(encoded(&self.vgtid(position, table_p_ks)));
        events.push(encoded(&self.event(VEventType::Commit)));
        self.in_tx = false;
        if self.copying && last_pk.is_none() {
            self.copying = false;
            events.push(encoded(&self.event(VEventType::CopyCompleted)));
            events.push(encoded(&event(VEventType::CopyCompleted)));
            // The change stream after a copy is a new vstreamer, which
            // sends the fields again before its first row.
            self.fields = None;
        }
        rows
    }

    /// A DDL as vttablet streams a statement of the binlog, and vtgate
    /// passes it on: its position (`VGTID`), then the statement, outside
    /// any BEGIN/COMMIT. Rows after it get a FIELD event first.
    fn ddl(&mut self, statement: String, position: &str, events: &mut Vec<Bytes>) {
        events.push(encoded(&self.vgtid(position, Vec::new())));
        let mut ev = self.event(VEventType::Ddl);
        ev.statement = statement;
        ev.timestamp = now_secs();
        events.push(encoded(&ev));
        self.fields = None;
    }

    fn field_event(&self, fields: &[Field], events: &mut Vec<Bytes>) {
        let mut ev = self.event(VEventType::Field);
        ev.field_event = Some(FieldEvent {
            table_name: text(&self.qualified),
            fields: fields.to_vec(),
            keyspace: text(&self.keyspace),
            shard: text(&self.shard),
            enum_set_string_values: self.enum_text,
            ..Default::default()
        });
        events.push(encoded(&ev));
    }

    /// Copied rows go one per ROW event (as vtgate's copy sends them),
    /// written by [`copy_rows`]; changes of a transaction in one, flagged as
    /// a binlog rows event's end of statement (`flags: 1`), as vttablet
    /// passes them on.
    fn row_events(&self, changes: Vec<RowChange>, events: &mut Vec<Bytes>) {
        // One clock read for the lot: a copy batch's rows are one read.
        let timestamp = now_secs();
        let row_event = |row_changes: Vec<RowChange>, flags: u32| {
            let mut ev = self.event(VEventType::Row);
            ev.timestamp = timestamp;
            ev.row_event = Some(RowEvent {
                table_name: self.qualified.clone(),
                row_changes,
                keyspace: self.keyspace.clone(),
                shard: self.shard.clone(),
                flags,
                ..Default::default()
            });
            encoded(&ev)
        };
        if !self.copying {
            events.push(row_event(changes, 1));
            return;
        }
        let names = copy_rows::Names {
            keyspace: &self.keyspace,
            shard: &self.shard,
            table: &self.qualified,
            timestamp,
        };
        if copy_rows::encode(&names, &changes, events).is_none() {
            events.extend(changes.into_iter().map(|c| row_event(vec![c], 0)));
        }
    }

    fn vgtid(&self, position: &str, table_p_ks: Vec<TableLastPk>) -> VEvent {
        let mut vg = self.event(VEventType::Vgtid);
        vg.vgtid = Some(VGtid {
            shard_gtids: vec![ShardGtid {
                keyspace: text(&self.keyspace),
                shard: text(&self.shard),
                gtid: position.to_string(),
                table_p_ks,
            }],
        });
        vg
    }

    fn begin(&mut self, events: &mut Vec<Bytes>) {
        if !self.in_tx {
            let mut ev = self.event(VEventType::Begin);
            ev.timestamp = now_secs();
            events.push(encoded(&ev));
            self.in_tx = true;
        }
    }
}

/// The fields and rows of a Sync-shaped response (a copy batch: change
/// rows come as [`Unit::Changes`]), the rows moved into row changes,
/// uncopied.
fn row_changes(result: Vec<QueryResult>) -> (Option<Vec<Field>>, Vec<RowChange>) {
    let mut changes = Vec::new();
    let mut fields: Option<Vec<Field>> = None;
    for qr in result {
        fields = fields.or(Some(qr.fields));
        changes.extend(qr.rows.into_iter().map(|r| RowChange {
            after: Some(r),
            ..Default::default()
        }));
    }
    (fields, changes)
}

/// A lastpk as vtgate's VGTID carries it: its fields keep only name, type,
/// charset and flags (vttablet builds them from the key columns,
/// not from a query result).
fn lastpk_shape(pk: &QueryResult) -> QueryResult {
    QueryResult {
        fields: pk
            .fields
            .iter()
            .map(|f| Field {
                name: f.name.clone(),
                r#type: f.r#type,
                charset: f.charset,
                flags: f.flags,
                ..Default::default()
            })
            .collect(),
        ..pk.clone()
    }
}

/// The columns of a rule's `SELECT a, `b` FROM t` (empty for `*` or no
/// filter); `None` when the filter is something else.
fn select_list(filter: &str) -> Option<Vec<String>> {
    let text = filter.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let rest = text
        .get(..7)?
        .eq_ignore_ascii_case("select ")
        .then(|| &text[7..])?;
    let upper = rest.to_ascii_uppercase();
    let from = upper.rfind(" FROM ")?;
    let list = rest[..from].trim();
    if list == "*" {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        if chars.peek() == Some(&'`') {
            chars.next();
            loop {
                match chars.next()? {
                    '`' if chars.peek() == Some(&'`') => {
                        chars.next();
                        name.push('`');
                    }
                    '`' => break,
                    c => name.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().filter(|c| **c != ',' && !c.is_whitespace()) {
                name.push(*c);
                chars.next();
            }
        }
        if name.is_empty() {
            return None;
        }
        out.push(name);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::select_list;

    #[test]
    fn filters() {
        assert_eq!(select_list("SELECT * FROM `t`"), Some(vec![]));
        assert_eq!(select_list(""), Some(vec![]));
        assert_eq!(
            select_list("select `id`, `we``ird`,plain FROM `t`"),
            Some(vec!["id".into(), "we`ird".into(), "plain".into()])
        );
        assert_eq!(select_list("DELETE FROM t"), None);
    }
}
