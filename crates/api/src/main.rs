use clap::Parser;
use tasks_api::cli::Cli;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse().run().await
}
