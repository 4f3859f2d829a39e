//! The `tasks-api` command line: serve (the default) and manage the schema.

use std::time::Duration;

use clap::{Parser, Subcommand};
use infrastructure::iam::{IamTokenSource, TokenTarget};
use infrastructure::{Database, Settings};
use secrecy::ExposeSecret;

use crate::startup::Application;
use crate::telemetry;

/// The tasks service. Settings come from config/default.toml, config/$APP_ENV.toml and APP__SECTION__KEY variables.
#[derive(Debug, Parser)]
#[command(name = "tasks-api", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (what runs when no command is given).
    Serve,
    /// Apply, revert or list the schema migrations, on the configured database (with IAM auth when configured).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print an RDS IAM authentication token, like `aws rds generate-db-auth-token`, for psql and other tools.
    ///
    /// PGPASSWORD="$(tasks-api token --host H --user U)" psql "host=H user=U dbname=D sslmode=verify-full"
    Token {
        /// The endpoint the token is for (the name the server is known by, even through a tunnel).
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 5432)]
        port: u16,
        /// The database user (the one granted rds_iam).
        #[arg(long)]
        user: String,
        /// The region; parsed from an RDS host name, or the AWS region chain, when omitted.
        #[arg(long)]
        region: Option<String>,
        /// Seconds the token stays valid, at most 900.
        #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=900))]
        lifetime_secs: u64,
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
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => Ok(Application::build(settings_with_logs()?)
                .await?
                .run_until_stopped()
                .await?),
            Command::Migrate { action } => migrate(settings_with_logs()?, action).await,
            // Needs no settings, so a half-configured environment can still produce a token for psql.
            Command::Token {
                host,
                port,
                user,
                region,
                lifetime_secs,
            } => print_token(TokenTarget { host, port, user }, region, lifetime_secs).await,
        }
    }
}

fn settings_with_logs() -> anyhow::Result<Settings> {
    let settings = Settings::load()?;
    telemetry::init(telemetry::subscriber(&settings.log, std::io::stdout));
    Ok(settings)
}

/// The token goes to standard output and nothing else does, so the command can feed `PGPASSWORD`.
async fn print_token(target: TokenTarget, region: Option<String>, lifetime_secs: u64) -> anyhow::Result<()> {
    let source = IamTokenSource::new(target, region, Duration::from_secs(lifetime_secs), None).await?;
    let token = source.generate().await?;
    println!("{}", token.secret().expose_secret());
    Ok(())
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database).await?;
    match action {
        MigrateAction::Up { steps } => database.migrate_up(steps).await?,
        MigrateAction::Down { steps } => database.migrate_down(Some(steps)).await?,
        MigrateAction::Status => {}
    }
    // Every action ends with the resulting state, so a script's log shows what the schema now is.
    for migration in database.migration_status().await? {
        let state = if migration.applied { "applied" } else { "pending" };
        println!("{state:8} {}", migration.name);
    }
    database.close().await;
    Ok(())
}
