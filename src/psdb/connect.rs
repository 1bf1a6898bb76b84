//! PlanetScale Connect: `/psdbconnect.v1alpha1.Connect/Sync`.
//!
//! Its responses already have the shape the tap reads (rows, updates,
//! deletes and a cursor), so a session passes them through; this module
//! only builds requests. Every request asks for inserts, updates and
//! deletes: when none of the `include_*` flags is set (what the Go tap
//! sends) the server leaves deletes out and sends updates as inserts.

use std::time::Duration;

use tonic::Status;

use super::client::PsdbClient;
use super::target::{resume_cursor, Resume, Target};
use crate::config::TabletType;
use crate::pb::psdbconnect::v1alpha1::{SyncRequest, TableCursor};

/// psdb's tablet numbering (replica 0, primary 1, batch/rdonly 2).
pub fn tablet_type(t: TabletType) -> i32 {
    match t {
        TabletType::Replica => 0,
        TabletType::Primary => 1,
        TabletType::Rdonly => 2,
    }
}

/// The request that resumes `target` from `resume`.
pub fn request(target: &Target, resume: &Resume<'_>) -> SyncRequest {
    SyncRequest {
        table_name: target.table.clone(),
        cursor: Some(resume_cursor(target, resume)),
        tablet_type: tablet_type(target.tablet_type),
        include_inserts: true,
        include_updates: true,
        include_deletes: true,
        columns: resume.columns.to_vec(),
        cells: target.cells.clone(),
    }
}

/// The shard's current position: a Sync with position `current`, read
/// until the first cursor, then cancelled.
pub(super) async fn current(
    client: &PsdbClient,
    target: &Target,
    timeout: Duration,
) -> Result<String, Status> {
    let req = SyncRequest {
        table_name: target.table.clone(),
        cursor: Some(TableCursor {
            shard: target.shard.clone(),
            keyspace: target.keyspace.clone(),
            position: "current".to_string(),
            last_known_pk: None,
        }),
        tablet_type: tablet_type(target.tablet_type),
        include_inserts: false,
        include_updates: false,
        include_deletes: false,
        columns: Vec::new(),
        cells: target.cells.clone(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = client.sync(req, timeout).await?;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no position before the deadline")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::unavailable(
                    "the server ended the `current` peek without a position",
                ))
            }
            Ok(Ok(Some(resp))) => {
                if let Some(c) = resp.cursor {
                    return Ok(c.position);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::query::{Field, QueryResult, Row, Type};

    #[test]
    fn tablet_numbers() {
        assert_eq!(tablet_type(TabletType::Replica), 0);
        assert_eq!(tablet_type(TabletType::Primary), 1);
        assert_eq!(tablet_type(TabletType::Rdonly), 2);
    }

    #[test]
    fn a_copy_resumes_by_key_with_an_empty_position() {
        let target = Target {
            keyspace: "ks".into(),
            shard: "-80".into(),
            table: "t".into(),
            tablet_type: TabletType::Replica,
            cells: vec!["zone1".into()],
        };
        let field = |n: &str| Field {
            name: prost::bytes::Bytes::copy_from_slice(n.as_bytes()),
            r#type: Type::Int64 as i32,
            ..Default::default()
        };
        let cursor = TableCursor {
            shard: String::new(),
            keyspace: String::new(),
            position: "MySQL56/e42292e8-e28f-11ec-9c5b-d680f5d655b3:1-5".into(),
            last_known_pk: Some(QueryResult {
                fields: vec![field("v"), field("id")],
                rows: vec![Row::new(&[1, 1], prost::bytes::Bytes::from_static(b"97"))],
                ..Default::default()
            }),
        };
        let keys = vec!["id".to_string()];
        let resume = Resume {
            cursor: &cursor,
            columns: &[],
            keys: &keys,
            copying: true,
            timeout: Duration::from_secs(1),
        };
        let req = request(&target, &resume);
        let c = req.cursor.expect("cursor");
        assert_eq!((c.shard.as_str(), c.keyspace.as_str()), ("-80", "ks"));
        assert!(c.position.is_empty());
        let pk = c.last_known_pk.expect("pk");
        assert_eq!(pk.fields.len(), 1);
        assert_eq!(pk.rows[0].values(), b"7");
        assert_eq!((req.tablet_type, req.cells.len()), (0, 1));
        // changes resume from the position
        let changes = TableCursor {
            last_known_pk: None,
            ..cursor.clone()
        };
        let req = request(
            &target,
            &Resume {
                cursor: &changes,
                copying: false,
                ..resume
            },
        );
        assert_eq!(
            req.cursor.map(|c| c.position),
            Some(changes.position.clone())
        );
    }
}
