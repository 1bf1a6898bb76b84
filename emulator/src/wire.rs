//! Generated protobuf/gRPC types (from `proto/`), laid out so that the
//! generated `super::super::query` paths resolve.

#![allow(clippy::all, missing_docs)]

pub mod query {
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
