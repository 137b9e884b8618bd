//! The `offload` binary: the gateway (`offload serve`) and its command-line client.

/// mimalloc rather than glibc's malloc: the gateway allocates and frees small objects on
/// every thread (requests, JSON, SQLite pages), where glibc's arenas spent about a sixth of
/// the server's time in a profile of a submit burst (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    match offload::cli::main().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("offload: {}", offload::cli::on_stderr(&format!("{e:#}")));
            std::process::exit(1);
        }
    }
}
