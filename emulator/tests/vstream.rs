//! The VStream front: vtgate's event order for a copy and for changes,
//! copy resume through `table_p_ks`, `current`, heartbeats and auth.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use psdb_emulator::wire::binlogdata::{
    Filter, Rule, ShardGtid, TableLastPk, VEvent, VEventType, VGtid,
};
use psdb_emulator::wire::query::QueryResult;
use psdb_emulator::wire::vtgate::{VStreamFlags, VStreamRequest};
use psdb_emulator::wire::vtgateservice::vitess_client::VitessClient;
use psdb_emulator::{Emulator, EmulatorConfig};

fn vrequest(
    emu: &Emulator,
    table: &str,
    gtid: &str,
    lastpk: Option<QueryResult>,
) -> VStreamRequest {
    VStreamRequest {
        tablet_type: 1,
        vgtid: Some(VGtid {
            shard_gtids: vec![ShardGtid {
                keyspace: emu.keyspace().into(),
                shard: "-".into(),
                gtid: gtid.into(),
                table_p_ks: lastpk
                    .map(|pk| TableLastPk {
                        table_name: table.into(),
                        lastpk: Some(pk),
                    })
                    .into_iter()
                    .collect(),
            }],
        }),
        filter: Some(Filter {
            rules: vec![Rule {
                r#match: table.into(),
                filter: format!("SELECT * FROM `{table}`"),
            }],
            ..Default::default()
        }),
        flags: Some(VStreamFlags {
            heartbeat_interval: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A response with its events decoded: the emulator's own types carry them
/// pre-encoded.
struct Response {
    events: Vec<VEvent>,
}

/// Reads responses until `done` holds on the event types so far.
async fn vstream_until(
    emu: &Emulator,
    req: VStreamRequest,
    static_auth: bool,
    done: impl Fn(&[VEventType]) -> bool,
) -> Vec<Response> {
    let mut c = VitessClient::new(channel(emu).await).max_decoding_message_size(usize::MAX);
    let mut r = tonic::Request::new(req);
    r.set_timeout(Duration::from_secs(20));
    let (user, pw) = (&emu.config().username, &emu.config().password);
    let r = if static_auth {
        let mut r = r;
        r.metadata_mut()
            .insert("username", user.parse().expect("u"));
        r.metadata_mut().insert("password", pw.parse().expect("p"));
        r
    } else {
        auth(r, user, pw)
    };
    let mut stream = c.v_stream(r).await.expect("vstream starts").into_inner();
    let mut out: Vec<Response> = Vec::new();
    while !done(&types(&out)) {
        match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
            Ok(Ok(Some(m))) => out.push(Response {
                events: m
                    .events
                    .iter()
                    .map(|e| VEvent::decode(e.as_ref()).expect("an event"))
                    .collect(),
            }),
            other => panic!(
                "stream ended before condition: {other:?}; got {:?}",
                types(&out)
            ),
        }
    }
    out
}

type Cells = Vec<Option<String>>;

fn types(resps: &[Response]) -> Vec<VEventType> {
    resps
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| VEventType::try_from(e.r#type).expect("known event type"))
        .collect()
}

fn row_cells(resps: &[Response]) -> Vec<(Option<Cells>, Option<Cells>)> {
    resps
        .iter()
        .flat_map(|r| &r.events)
        .filter_map(|e| e.row_event.as_ref())
        .flat_map(|re| &re.row_changes)
        .map(|c| (c.before.as_ref().map(cells), c.after.as_ref().map(cells)))
        .collect()
}

#[tokio::test]
async fn copy_then_changes_in_vtgate_order() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "vks").copy_batch_rows(2)).await;
    let d = emu.shard_database("-").to_string();
    db.execute(
        &d,
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), e ENUM('x','y'));\
         INSERT INTO t VALUES (1,'a','x'),(2,'b','y'),(3,'c',NULL);",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    use VEventType::*;

    // GIVEN no position: a copy in batches of two rows
    let copy = vstream_until(&emu, vrequest(&emu, "t", "", None), false, |t| {
        t.iter().filter(|e| **e == CopyCompleted).count() >= 2
    })
    .await;
    let t = types(&copy);
    let ev: Vec<VEventType> = t.iter().copied().filter(|e| *e != Heartbeat).collect();
    assert_eq!(
        ev,
        vec![
            Begin,
            Field,
            Vgtid, // the snapshot position, before the rows
            Row,
            Row,
            Vgtid,
            Commit, // rows 1, 2, one ROW each
            Begin,
            Row,
            Vgtid,
            Commit, // row 3
            Begin,
            Vgtid,
            Commit,
            CopyCompleted,
            CopyCompleted
        ]
    );
    let all: Vec<_> = copy.iter().flat_map(|r| &r.events).collect();
    let field = all
        .iter()
        .find_map(|e| e.field_event.as_ref())
        .expect("field");
    assert_eq!(field.table_name, "vks.t");
    assert!(field.enum_set_string_values);
    assert_eq!(field.fields.len(), 3);
    let rows = row_cells(&copy);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|(b, _)| b.is_none()),
        "copy rows are after-images"
    );
    assert_eq!(
        rows[0].1.clone().expect("after"),
        vec![s("1"), s("a"), s("x")]
    );
    let vgtids: Vec<&ShardGtid> = all
        .iter()
        .filter_map(|e| e.vgtid.as_ref())
        .map(|v| &v.shard_gtids[0])
        .collect();
    assert!(vgtids[0].table_p_ks.is_empty(), "the snapshot position");
    let first_pk = vgtids[1].table_p_ks[0].lastpk.clone().expect("lastpk");
    assert_eq!(rows_of(std::slice::from_ref(&first_pk)), vec![vec![s("2")]]);
    assert!(vgtids[3].table_p_ks.is_empty(), "the copy is done");
    let snapshot = vgtids[3].gtid.clone();
    assert!(snapshot.starts_with("MySQL56/"), "{snapshot}");

    // WHEN a copy resumes from the first batch's table_p_ks
    let resumed = vstream_until(&emu, vrequest(&emu, "t", "", Some(first_pk)), true, |t| {
        t.contains(&CopyCompleted)
    })
    .await;
    // THEN only the rest arrives (static auth metadata is accepted too)
    let rest = row_cells(&resumed);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1.clone().expect("after")[0], s("3"));

    // AND changes come one transaction at a time, with images by kind
    db.execute(
        &d,
        "INSERT INTO t VALUES (4,'d','y');\
         BEGIN; UPDATE t SET name='bb' WHERE id=2; DELETE FROM t WHERE id=1; COMMIT;",
    )
    .await
    .expect("changes");
    let changes = vstream_until(&emu, vrequest(&emu, "t", &snapshot, None), false, |t| {
        t.iter().filter(|e| **e == Commit).count() >= 2
            && t.iter().filter(|e| **e == Row).count() >= 3
    })
    .await;
    let ev: Vec<VEventType> = types(&changes)
        .into_iter()
        .filter(|e| *e != Heartbeat)
        .collect();
    assert_eq!(
        &ev[..9],
        &[Begin, Field, Row, Vgtid, Commit, Begin, Row, Row, Vgtid],
        "{ev:?}"
    );
    let rows = row_cells(&changes);
    assert_eq!(rows[0], (None, Some(vec![s("4"), s("d"), s("y")])));
    assert_eq!(rows[1].0.clone().expect("before")[1], s("b"));
    assert_eq!(rows[1].1.clone().expect("after")[1], s("bb"));
    assert_eq!(
        rows[2],
        (Some(vec![s("1"), s("a"), s("x")]), None),
        "a delete carries the whole before-image"
    );

    // AND `current` answers with a VGTID at the head
    let cur = vstream_until(&emu, vrequest(&emu, "t", "current", None), false, |t| {
        t.contains(&Vgtid)
    })
    .await;
    let head = cur
        .iter()
        .flat_map(|r| &r.events)
        .find_map(|e| e.vgtid.as_ref())
        .expect("vgtid");
    assert_eq!(
        head.shard_gtids[0].gtid,
        emu.position("-").expect("position")
    );

    // AND an idle stream sends heartbeats
    let head_pos = head.shard_gtids[0].gtid.clone();
    let idle = vstream_until(&emu, vrequest(&emu, "t", &head_pos, None), false, |t| {
        t.contains(&Heartbeat)
    })
    .await;
    assert!(row_cells(&idle).is_empty());
}

#[tokio::test]
async fn vstream_requests_are_checked() {
    let db = mariadb();
    let emu = start(EmulatorConfig::new(db, "vbad")).await;
    db.execute(
        emu.shard_database("-"),
        "CREATE TABLE t (id INT PRIMARY KEY)",
    )
    .await
    .expect("setup");
    emu.refresh_capture().await.expect("refresh");
    let mut c = VitessClient::new(channel(&emu).await);
    // no credentials
    let err = c
        .v_stream(tonic::Request::new(vrequest(&emu, "t", "", None)))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // a regex filter is not served
    let mut req = vrequest(&emu, "t", "", None);
    req.filter = Some(Filter {
        rules: vec![Rule {
            r#match: "/.*".into(),
            filter: String::new(),
        }],
        ..Default::default()
    });
    let r = auth(
        tonic::Request::new(req),
        &emu.config().username,
        &emu.config().password,
    );
    let err = c.v_stream(r).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // an unknown table
    let r = auth(
        tonic::Request::new(vrequest(&emu, "nope", "", None)),
        &emu.config().username,
        &emu.config().password,
    );
    let err = c.v_stream(r).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::NotFound);
}
