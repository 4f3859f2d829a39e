//! The `tasks-api` command line: serve (the default) and manage the schema.

use clap::{Parser, Subcommand};
use infrastructure::{Database, Settings};

use crate::startup::Application;
use crate::telemetry;

/// The tasks service. Settings come from config/default.toml, config/$APP_ENV.toml and APP__SECTION__KEY variables.
#[derive(Debug, Parser)]
#[command(name = "tasks-api", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (what runs when no command is given).
    Serve,
    /// Apply, revert or list the schema migrations, on the configured database.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations.
    Up {
        /// Apply at most this many.
        #[arg(long)]
        steps: Option<u32>,
    },
    /// Revert applied migrations, newest first.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List every migration and whether it is applied.
    Status,
}

impl Cli {
    /// Runs the chosen command to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::load()?;
        telemetry::init(telemetry::subscriber(&settings.log, std::io::stdout));
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => Application::build(settings).await?.run_until_stopped().await?,
            Command::Migrate { action } => migrate(settings, action).await?,
        }
        Ok(())
    }
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database).await?;
    match action {
        MigrateAction::Up { steps } => database.migrate_up(steps).await?,
        MigrateAction::Down { steps } => database.migrate_down(Some(steps)).await?,
        MigrateAction::Status => {
            for migration in database.migration_status().await? {
                let state = if migration.applied { "applied" } else { "pending" };
                println!("{state:8} {}", migration.name);
            }
        }
    }
    database.close().await;
    Ok(())
}
