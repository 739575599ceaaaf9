//! The `rsl-kv-server` replica (built with mutual TLS) that the process-level tests start.

fn main() -> std::process::ExitCode {
    rsl_kv::server_cli::main()
}
