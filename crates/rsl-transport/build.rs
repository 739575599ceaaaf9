//! Compiles `proto/rsl_transport.proto` with protox (a Rust protobuf compiler, so no
//! system `protoc` is needed) and generates prost messages and the tonic service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/rsl_transport.proto";
    println!("cargo:rerun-if-changed={proto}");
    let file_descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Request payloads decode as `bytes::Bytes`: a slice of tonic's receive buffer.
        .bytes(".rsl.transport.v1.Request.payload")
        // Checkpoint file bytes too: a chunk is handed on without a copy.
        .bytes(".rsl.transport.v1.CheckpointChunk.data")
        // Message chunks too: the sender slices the encoded message, the receiver copies each
        // chunk once, into the reassembly buffer.
        .bytes(".rsl.transport.v1.Chunk.data")
        .emit_rerun_if_changed(false)
        .compile_fds(file_descriptors)?;
    Ok(())
}
