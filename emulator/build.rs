//! Generates the gRPC server (and a client for the drain benchmark) from the
//! same protos the tap uses.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../proto");
    // Row cells as `Bytes`: decoding then slices the receive buffer instead
    // of copying every row (the drain benchmark's client is this code).
    tonic_prost_build::configure()
        .bytes(".query.Row.values")
        .compile_protos(
            &["../proto/psdbconnect.proto", "../proto/vtgateservice.proto"],
            &["../proto"],
        )?;
    Ok(())
}
