//! Compiles `proto/rsl_kv.proto` with protox (a Rust protobuf compiler, so no system
//! `protoc` is needed) and generates prost messages, the tonic services and their clients.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/rsl_kv.proto";
    println!("cargo:rerun-if-changed={proto}");
    let file_descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Values and checkpoint chunks decode as `bytes::Bytes`: slices of tonic's buffer.
        .bytes(".rsl.kv.v1")
        .emit_rerun_if_changed(false)
        .compile_fds(file_descriptors)?;
    Ok(())
}
