//! The `tasks-api` command line: serve (the default), manage the schema, print tokens, and provision IAM database
//! authentication.

use std::time::Duration;

use admin::{AdminError, IamSwitch, PolicyTarget};
use clap::{Parser, Subcommand};
use infrastructure::Database;
use rds_iam::{
    DatabaseResource, DsqlAction, DsqlTokenSigner, RdsTokenSigner, TokenLifetime, TokenTarget, load_aws_config,
};
use secrecy::ExposeSecret;

use crate::settings::Settings;
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
    /// Print an RDS IAM authentication token, like `aws rds generate-db-auth-token`, or with --dsql an Aurora DSQL
    /// one, like `aws dsql generate-db-connect-auth-token`, for psql and other tools.
    ///
    /// PGPASSWORD="$(tasks-api token --host H --user U)" psql "host=H user=U dbname=D sslmode=verify-full"
    ///
    /// PGPASSWORD="$(tasks-api token --dsql --admin --host H)" psql "host=H user=admin dbname=postgres
    /// sslmode=verify-full"
    Token {
        /// The endpoint the token is for (the name the server is known by, even through a tunnel); with --dsql,
        /// CLUSTER.dsql.REGION.on.aws.
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 5432, conflicts_with = "dsql")]
        port: u16,
        /// The database user (the one granted rds_iam). DSQL tokens name no user: say --admin or not instead.
        #[arg(long, required_unless_present = "dsql", conflicts_with = "dsql")]
        user: Option<String>,
        /// An Aurora DSQL token: DbConnect, for a custom role, or with --admin DbConnectAdmin, for the role admin.
        #[arg(long)]
        dsql: bool,
        /// With --dsql, a token for the role admin (DbConnectAdmin).
        #[arg(long, requires = "dsql")]
        admin: bool,
        /// The region; parsed from an RDS or DSQL host name, or the AWS region chain, when omitted.
        #[arg(long)]
        region: Option<String>,
        /// Seconds the token stays valid, at most 900.
        #[arg(long, default_value = "900", value_parser = parse_lifetime)]
        lifetime_secs: TokenLifetime,
    },
    /// Provision IAM database authentication: the IAM policy, IAM authentication on the database, the database user.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Print the least-privilege IAM policy that lets DB_USER connect (rds-db:connect on the database's resource id,
    /// the account from sts:GetCallerIdentity).
    IamPolicy {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The database user the policy is for.
        #[arg(long)]
        db_user: String,
        /// Also create the policy in IAM under this name, and print its ARN after the document.
        #[arg(long, value_name = "NAME")]
        create: Option<String>,
    },
    /// Turn IAM database authentication on (rds:ModifyDBCluster or rds:ModifyDBInstance); nothing when it is on.
    EnableIam {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Create the database user if missing, GRANT rds_iam where that role exists (RDS PostgreSQL, or any server behind
    /// the RDS IAM emulator) or identify it with AWSAuthenticationPlugin (RDS MySQL/MariaDB), and grant it only
    /// SELECT, INSERT, UPDATE and DELETE on tasks.
    /// Safe to run again. Refuses a user with more powers than the service needs.
    ///
    /// The connection requires TLS: verify-full for an RDS host name (add sslrootcert=global-bundle.pem, or ssl-ca=
    /// on MySQL, to the URL), require otherwise; sslmode=disable in the URL turns it off for a local server.
    ProvisionDbUser {
        #[arg(long)]
        db_user: String,
        /// An administrator's URL for the service's database (postgres:// or mysql://); TASKS_ADMIN_URL keeps it out
        /// of the process list.
        #[arg(long, env = "TASKS_ADMIN_URL", hide_env_values = true)]
        admin_url: String,
    },
}

/// Which RDS database a command is about.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct DatabaseArgs {
    /// An Aurora cluster identifier.
    #[arg(long)]
    cluster_id: Option<String>,
    /// An RDS instance identifier.
    #[arg(long)]
    instance_id: Option<String>,
    /// An RDS Proxy's name (iam-policy only): the policy names the proxy's resource id.
    #[arg(long)]
    proxy_name: Option<String>,
    /// The region; the AWS region chain when omitted.
    #[arg(long)]
    region: Option<String>,
}

impl DatabaseArgs {
    fn target(&self) -> PolicyTarget {
        match (&self.cluster_id, &self.instance_id, &self.proxy_name) {
            (Some(id), _, _) => PolicyTarget::Database(DatabaseResource::Cluster {
                id: id.clone(),
                reader: false,
            }),
            (None, Some(id), _) => PolicyTarget::Database(DatabaseResource::Instance { id: id.clone() }),
            (None, None, Some(name)) => PolicyTarget::Proxy(name.clone()),
            (None, None, None) => unreachable!("clap requires one of --cluster-id, --instance-id and --proxy-name"),
        }
    }
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
                dsql,
                admin,
                region,
                lifetime_secs,
            } => {
                let kind = match (dsql, user) {
                    (true, _) if admin => TokenKind::Dsql(DsqlAction::DbConnectAdmin),
                    (true, _) => TokenKind::Dsql(DsqlAction::DbConnect),
                    (false, Some(user)) => TokenKind::Rds { port, user },
                    (false, None) => unreachable!("clap requires --user without --dsql"),
                };
                print_token(host, kind, region, lifetime_secs).await
            }
            Command::Admin { action } => run_admin(action).await,
        }
    }
}

/// Results go to standard output, so that the policy document can be piped into other tools.
async fn run_admin(action: AdminAction) -> anyhow::Result<()> {
    match action {
        AdminAction::IamPolicy {
            database,
            db_user,
            create,
        } => {
            let aws = load_aws_config(database.region.as_deref()).await;
            let policy = admin::connect_policy(&aws, &database.target(), &db_user).await?;
            println!("{}", serde_json::to_string_pretty(&policy.document)?);
            if let Some(name) = create {
                println!("{}", admin::create_policy(&aws, &name, &policy).await?);
            }
        }
        AdminAction::EnableIam { database } => {
            let resource = match database.target() {
                PolicyTarget::Database(resource) => resource,
                PolicyTarget::Proxy(name) => return Err(AdminError::ProxyHasNoSwitch(name).into()),
            };
            let aws = load_aws_config(database.region.as_deref()).await;
            match admin::enable_iam(&aws, &resource).await? {
                IamSwitch::AlreadyOn => println!("{resource}: IAM database authentication was already on"),
                IamSwitch::TurnedOn => println!("{resource}: IAM database authentication is now on"),
                IamSwitch::Requested => println!(
                    "{resource}: IAM database authentication requested; RDS applies it in the background, check \
                     again in a minute"
                ),
            }
        }
        AdminAction::ProvisionDbUser { db_user, admin_url } => {
            for step in admin::provision_db_user(&admin_url, &db_user).await? {
                println!("{step}");
            }
        }
    }
    Ok(())
}

fn settings_with_logs() -> anyhow::Result<Settings> {
    let settings = Settings::load()?;
    telemetry::init(telemetry::subscriber(&settings.log, std::io::stdout));
    Ok(settings)
}

/// The token's lifetime, by the same rule as the service's.
fn parse_lifetime(seconds: &str) -> Result<TokenLifetime, String> {
    let seconds: u64 = seconds.parse().map_err(|error| format!("{error}"))?;
    TokenLifetime::new(Duration::from_secs(seconds)).map_err(|error| error.to_string())
}

/// Which service's token to print, and what it is for.
enum TokenKind {
    Rds { port: u16, user: String },
    Dsql(DsqlAction),
}

/// The token goes to standard output and nothing else does, so the command can feed `PGPASSWORD`.
async fn print_token(
    host: String,
    kind: TokenKind,
    region: Option<String>,
    lifetime: TokenLifetime,
) -> anyhow::Result<()> {
    let token = match kind {
        TokenKind::Rds { port, user } => {
            let signer = RdsTokenSigner::new(TokenTarget { host, port, user }, region, lifetime, None).await?;
            signer.sign().await?
        }
        TokenKind::Dsql(action) => {
            let signer = DsqlTokenSigner::new(host, action, region, lifetime, None).await?;
            signer.sign().await?
        }
    };
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
