use clap::Parser;
use tasks_api::cli::Cli;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse().run().await
}

/// jemalloc rather than the system's malloc: a request allocates and frees many small buffers (rows, names, JSON), and
/// glibc's malloc spent about a tenth of the service's CPU on them (see the workspace's Cargo.toml).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
