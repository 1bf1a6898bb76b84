//! Generates the gRPC clients for the Connect API and vtgate's VStream from
//! our own minimal protos.
//! `protoc-bin-vendored` supplies protoc, so a fresh machine needs none.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &["proto/psdbconnect.proto", "proto/vtgateservice.proto"],
            &["proto"],
        )?;
    Ok(())
}
