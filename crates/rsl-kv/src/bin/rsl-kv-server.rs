//! `rsl-kv-server`: one replica of the replicated key-value service (see
//! [`rsl_kv::server_cli`]).

/// mimalloc instead of the system allocator: the server allocates and frees small
/// buffers per operation on several threads, where glibc's arenas cost about a tenth of
/// the CPU time (see docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rsl_kv::server_cli::disable_transparent_huge_pages();
    rsl_kv::server_cli::main()
}
