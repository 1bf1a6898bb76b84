//! tap-planetscale: a Singer tap for PlanetScale and Vitess.
//!
//! Data flows config → discovery (MySQL) → catalog → selection → readers
//! (gRPC) → conversion → Singer writer (stdout) → state. Each step is a
//! module named after what it owns; `app` wires them together for the CLI.

pub mod about;
pub mod allocator;
pub mod app;
pub mod catalog;
pub mod charset;
pub mod check;
pub mod cli;
pub mod collations;
pub mod commit;
pub mod config;
pub mod convert;
pub mod discovery;
pub mod error;
pub mod json;
pub mod log;
pub mod mysql;
pub mod position;
pub mod progress;
pub mod psdb;
pub mod relay;
pub mod retry;
pub mod row_key;
pub mod signals;
pub mod singer;
pub mod state;
pub mod sync;
pub mod types;
pub mod wire;

/// Wire types generated from `proto/` (client side only).
pub mod pb {
    pub mod query {
        pub use crate::wire::query_result::QueryResult;
        pub use crate::wire::row::Row;
        tonic::include_proto!("query");
    }
    pub mod vtrpc {
        tonic::include_proto!("vtrpc");
    }
    pub mod topodata {
        tonic::include_proto!("topodata");
    }
    pub mod binlogdata {
        tonic::include_proto!("binlogdata");
    }
    pub mod vtgate {
        pub use crate::wire::vstream_response::VStreamResponse;
        tonic::include_proto!("vtgate");
    }
    pub mod vtgateservice {
        tonic::include_proto!("vtgateservice");
    }
    pub mod psdbconnect {
        pub mod v1alpha1 {
            tonic::include_proto!("psdbconnect.v1alpha1");
        }
    }
}
