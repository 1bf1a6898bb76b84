//! The sending side of a stream: responses go into a small channel (so
//! reading MariaDB and encoding/sending overlap), counted for the fault
//! injector, cut off at the client's deadline, and an idle change phase
//! waits here for the capture's next transaction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use super::{SyncState, Unit};
use crate::faults::{Fault, FaultKind};
use crate::wire::binlogdata::RowChange;
use crate::wire::psdbconnect::v1alpha1::SyncResponse;
use crate::wire::query::{Field, QueryResult, Row};

/// Why a stream stopped early (client gone, fault, deadline, error sent).
pub(super) struct Stop;

/// The sending side of a stream: counts responses and applies faults and the
/// deadline.
pub(super) struct Out {
    pub(super) tx: mpsc::Sender<Result<Unit, Status>>,
    pub(super) sent: u32,
    pub(super) fault: Option<Fault>,
    pub(super) deadline: Option<Instant>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) state: Arc<SyncState>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Out {
    pub(super) async fn send(&mut self, resp: SyncResponse) -> Result<(), Stop> {
        self.send_unit(Unit::Response(resp)).await
    }

    /// Hands on a VStream stream's row changes (see [`Unit::Changes`]);
    /// counted, faulted and cut off like a response.
    pub(super) async fn send_changes(
        &mut self,
        fields: Arc<[Field]>,
        changes: Vec<RowChange>,
        position: Option<String>,
    ) -> Result<(), Stop> {
        self.send_unit(Unit::Changes {
            fields,
            changes,
            position,
        })
        .await
    }

    async fn send_unit(&mut self, mut unit: Unit) -> Result<(), Stop> {
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
            self.state.faults.note_fired();
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
                    match &mut unit {
                        Unit::Response(resp) => match resp.result.first_mut() {
                            Some(r) => r.rows.push(bad),
                            None => resp.result.push(QueryResult {
                                rows: vec![bad],
                                ..Default::default()
                            }),
                        },
                        Unit::Changes { changes, .. } => changes.push(RowChange {
                            after: Some(bad),
                            ..Default::default()
                        }),
                        Unit::Ddl { .. } => {}
                    }
                }
            }
        }
        if self.tx.send(Ok(unit)).await.is_err() {
            tracing::debug!("client went away");
            return Err(Stop);
        }
        self.sent += 1;
        Ok(())
    }

    /// Hands on a DDL statement at `position` (see [`Unit`]); not counted
    /// as a response, as the Connect front never sends it.
    pub(super) async fn ddl(&mut self, statement: String, position: String) -> Result<(), Stop> {
        if self
            .tx
            .send(Ok(Unit::Ddl {
                statement,
                position,
            }))
            .await
            .is_err()
        {
            return Err(Stop);
        }
        Ok(())
    }

    pub(super) async fn fail(&mut self, status: Status) -> Result<(), Stop> {
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
    pub(super) async fn wait_change(&mut self, rx: &mut watch::Receiver<u64>) -> Result<(), Stop> {
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
