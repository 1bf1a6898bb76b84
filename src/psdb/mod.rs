//! The seam between the tap and the two gRPC APIs it reads from:
//! PlanetScale Connect's `Sync` and vtgate's `VStream`.
//!
//! A reader names what it reads as a [`Target`] (keyspace, shard, table,
//! tablet type, cells) and asks for two things, whichever the API:
//! - [`PsdbClient::current`]: the shard's current position, which the
//!   reader's stop rule compares cursors against;
//! - [`PsdbClient::open`]: a [`Session`] that resumes from a cursor (a copy
//!   by primary key with an empty position, changes from the position) and
//!   yields [`Unit`]s: rows in the Sync response shape with the cursor that
//!   covers them (and, over VStream, word of a `TRUNCATE` of the table, which
//!   the Sync shape cannot carry).
//!
//! The API is chosen once, in the config, and only here: [`connect`] builds
//! Sync requests and passes responses through; [`vstream`] builds VStream
//! requests and translates events into the same units. Nothing outside this
//! module knows which API is in use. [`client`] owns the channel, TLS, the
//! credentials and the classification of gRPC statuses; `target` holds the
//! words both APIs share.

mod client;
pub mod codec;
pub mod connect;
mod target;
pub mod vstream;

use std::time::Duration;

pub use client::{classify, PsdbClient, PsdbError, StatusClass};
pub use target::{trim_last_known_pk, Change, Resume, SessionError, Target, Unit};

use crate::config::Api;
use crate::pb::psdbconnect::v1alpha1::SyncResponse;

/// One streaming call, whichever the API.
pub enum Session {
    Connect(tonic::Streaming<SyncResponse>),
    VStream(vstream::Session),
}

impl Session {
    /// The next unit; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Unit>, SessionError> {
        match self {
            Session::Connect(s) => Ok(s.message().await?.map(|resp| Unit {
                resp,
                enum_text: false,
                truncated: None,
            })),
            Session::VStream(s) => s.next().await,
        }
    }
}

impl PsdbClient {
    /// Opens a session on `target` that resumes from `resume`.
    pub async fn open(
        &self,
        target: &Target,
        resume: Resume<'_>,
    ) -> Result<Session, tonic::Status> {
        match self.api {
            Api::Psdbconnect => {
                let req = connect::request(target, &resume);
                Ok(Session::Connect(self.sync(req, resume.timeout).await?))
            }
            Api::Vstream => Ok(Session::VStream(
                vstream::Session::open(self, target, &resume).await?,
            )),
        }
    }

    /// The shard's current position, read within `timeout`.
    pub async fn current(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<String, tonic::Status> {
        match self.api {
            Api::Psdbconnect => connect::current(self, target, timeout).await,
            Api::Vstream => vstream::current(self, target, timeout).await,
        }
    }

    /// The API's name, for people.
    pub fn api_name(&self) -> &'static str {
        match self.api {
            Api::Psdbconnect => "Connect",
            Api::Vstream => "VStream",
        }
    }

    pub fn api(&self) -> Api {
        self.api
    }
}
