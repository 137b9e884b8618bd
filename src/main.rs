//! The `offload` binary: the gateway (`offload serve`) and its command-line client.

/// mimalloc rather than glibc's malloc: the gateway allocates and frees small objects on
/// every thread (requests, JSON, SQLite pages), where glibc's arenas spent about a sixth of
/// the server's time in a profile of a submit burst (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OFFLOAD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file, journald or a log pipeline
        // would get the escape codes as text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match offload::cli::main().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("offload: {}", offload::cli::on_stderr(&format!("{e:#}")));
            std::process::exit(1);
        }
    }
}
