//! `rsl-kv-server`: one replica of the replicated key-value service (see
//! [`rsl_kv::server_cli`]).

fn main() -> std::process::ExitCode {
    rsl_kv::server_cli::main()
}
