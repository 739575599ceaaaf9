//! Compiles `proto/rsl_kv.proto` and `proto/etcd_kv.proto` (the etcd subset the load
//! generator speaks) with protox (a Rust protobuf compiler, so no system
//! `protoc` is needed) and generates prost messages, the tonic services and their clients.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (service, etcd) = ("proto/rsl_kv.proto", "proto/etcd_kv.proto");
    for proto in [service, etcd] {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        // Values and checkpoint chunks decode as `bytes::Bytes`: slices of tonic's buffer.
        .bytes(".rsl.kv.v1")
        .emit_rerun_if_changed(false)
        .compile_fds(protox::compile([service], ["proto"])?)?;
    tonic_prost_build::configure()
        .bytes(".etcdserverpb")
        // The load generator is only ever etcd's client.
        .build_server(false)
        .emit_rerun_if_changed(false)
        .compile_fds(protox::compile([etcd], ["proto"])?)?;
    Ok(())
}
