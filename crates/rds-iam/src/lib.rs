//! IAM database authentication for Amazon RDS and Aurora (PostgreSQL, MySQL, MariaDB) in sqlx and SeaORM pools.
//!
//! With IAM authentication there is no database password: every new connection presents a token, a SigV4-signed
//! request valid for up to 15 minutes, signed with whatever AWS credentials the process has. This crate gives you a
//! sqlx pool (or a SeaORM connection) that does this for you:
//!
//! - the first token is signed before the pool opens anything, so missing credentials or region stop you at start;
//! - a background task renews it at 80 % of its life (with jitter), never on the request path, and never later than
//!   30 s before the signing credentials themselves expire; reading the current token is a read lock and an `Arc`
//!   clone;
//! - when renewing fails it retries with capped exponential back-off and keeps the last good token until it expires;
//! - a connection refused for its token triggers one renewal and one retry ([`IamPool::run`]);
//! - TLS is verify-full unless you say otherwise, and MySQL's cleartext plugin (which RDS requires for tokens) is only
//!   enabled when TLS is required;
//! - the region comes from the RDS host name or the AWS region chain, never a silent `us-east-1`;
//! - tunnels, RDS Proxy and other front ends: sign for the endpoint, connect elsewhere; roles to assume; cluster and
//!   instance endpoints looked up by identifier.
//!
//! # sqlx
//!
//! ```no_run
//! use std::str::FromStr;
//!
//! use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // The user is the database user that was granted `rds_iam`; no password.
//! let options = PgConnectOptions::from_str(
//!     "postgres://db_iam_user@tasks.cluster-c9di9qmu8xqw.eu-west-1.rds.amazonaws.com:5432/tasksmanager",
//! )?;
//! let database = rds_iam::PgIamPool::builder(options)
//!     .root_cert("/etc/ssl/rds/global-bundle.pem")
//!     .pool_options(PgPoolOptions::new().max_connections(16))
//!     .connect()
//!     .await?;
//! let user: String = sqlx::query_scalar("SELECT current_user").fetch_one(database.pool()).await?;
//! println!("connected as {user}");
//! # Ok(())
//! # }
//! ```
//!
//! Keep the [`IamPool`] (or a clone) for as long as you use its pool: it owns the renewal.
//!
//! # Monitoring
//!
//! [`IamPool::token_status`] (or [`TokenRefresher::status`]) is a [`TokenStatus`]: the time left on the token in
//! force, its age, how many renewals succeeded and how many failed, and the last failure's text. It is cheap enough
//! to read on every metrics scrape, and the crate depends on no metrics library: turn it into gauges and counters
//! with the one your service uses. Renewals are also logged through `tracing`, at INFO, and failures at WARN.
//!
//! # SeaORM
//!
//! ```no_run
//! use std::str::FromStr;
//!
//! use sea_orm::{ConnectionTrait, Statement};
//! use sqlx::mysql::MySqlConnectOptions;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let options = MySqlConnectOptions::from_str("mysql://db_iam_user@tasks.cluster-c9di9qmu8xqw.eu-west-1.rds.amazonaws.com:3306/tasksmanager")?;
//! let database: rds_iam::IamDatabase = rds_iam::MySqlIamPool::builder(options).connect().await?.into();
//! let backend = database.connection().get_database_backend();
//! let row = database
//!     .connection()
//!     .query_one_raw(Statement::from_string(backend, "SELECT CURRENT_USER()"))
//!     .await?;
//! println!("{row:?}");
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `postgres` | [`PgIamPool`], for RDS PostgreSQL and Aurora PostgreSQL |
//! | `mysql` | [`MySqlIamPool`], for RDS MySQL, Aurora MySQL and RDS MariaDB |
//! | `sea-orm` | [`IamDatabase`], a SeaORM `DatabaseConnection` over either pool |
//! | `discovery` | [`IamPoolBuilder::discover`] and [`discovery`]: the endpoint from a cluster or instance identifier |
//! | `serde` | [`IamSettings`], every setting as one deserialisable struct, and `Deserialize` for [`TlsMode`] |
//! | `secrets-manager` | `SecretsManagerSource`: a user and password from a Secrets Manager secret instead of tokens |
//! | `dsql` | `DsqlTokenSigner`: tokens for Aurora DSQL (`DbConnect`, or `DbConnectAdmin` for `admin`) |
//!
//! None is on by default. The pieces underneath work on their own too: [`RdsTokenSigner`] signs tokens (for `psql`,
//! say), [`TokenRefresher`] keeps a credential fresh for any client, and [`CredentialSource`] lets tests, other token
//! services or other password stores plug in.
//!
//! # A password from Secrets Manager
//!
//! Where IAM authentication is not an option, RDS keeps the master user's password in Secrets Manager
//! (`ManageMasterUserPassword`) and rotates it, and applications keep theirs there too. With the `secrets-manager`
//! feature, `SecretsManagerSource` plugs such a secret into the same pool and refresher through
//! [`IamPoolBuilder::credential_source`]: the user and password are fetched before the first connection and kept as
//! a secret, fetched again every 5 minutes (configurable) and at once when the server refuses them, which is what a
//! rotation looks like from the client; the last good ones are kept while fetching fails. The TLS rules are the same
//! as for tokens.
//!
//! # Aurora DSQL
//!
//! DSQL accepts only IAM tokens, signed for the service `dsql` and naming the cluster endpoint
//! (`CLUSTER.dsql.REGION.on.aws`) without a port or user: the action is `DbConnectAdmin` for the `admin` role and
//! `DbConnect` for any other. With the `dsql` feature, `DsqlTokenSigner` signs them with `aws-sdk-dsql`'s generator
//! and plugs into [`IamPoolBuilder::credential_source`], so they are renewed by the same refresher; the region comes
//! from the host name as for RDS. DSQL closes connections after an hour (`DSQL_MAX_CONNECTION_LIFETIME` is the
//! pool's limit to keep under that), and answers optimistic-concurrency conflicts with SQLSTATE 40001, OC000 or
//! OC001: [`ErrorClass::SerializationConflict`], for the caller to run the whole transaction again.
//!
//! # What AWS needs
//!
//! IAM authentication switched on for the cluster or instance; a database user created for it (PostgreSQL:
//! `CREATE USER db_iam_user; GRANT rds_iam TO db_iam_user;`, MySQL: `CREATE USER db_iam_user IDENTIFIED WITH
//! AWSAuthenticationPlugin AS 'RDS';`); and a policy allowing `rds-db:connect` on
//! `arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/db_iam_user` for the credentials the process runs with.

mod classify;
mod credential;
#[cfg(feature = "discovery")]
pub mod discovery;
#[cfg(feature = "dsql")]
mod dsql;
mod error;
mod pool;
mod refresher;
mod region;
mod relay;
#[cfg(feature = "sea-orm")]
mod sea_orm;
#[cfg(feature = "secrets-manager")]
mod secrets_manager;
mod settings;
mod signer;

pub use classify::{Classify, ErrorClass, classify, classify_sqlstate};
pub use credential::{Credential, IamToken, TokenTarget};
#[cfg(feature = "dsql")]
pub use dsql::{DSQL_ADMIN_USER, DSQL_MAX_CONNECTION_LIFETIME, DsqlAction, DsqlClusterId, DsqlTokenSigner};
pub use error::{BoxError, CredentialError, Error};
pub use pool::{ConnectOptionsOf, IamConnectOptions, IamPool, IamPoolBuilder, TlsMode};
pub use refresher::{RefreshPolicy, TokenListener, TokenRefresher, TokenStatus};
pub use region::region_from_host;
#[cfg(feature = "sea-orm")]
pub use sea_orm::IamDatabase;
#[cfg(feature = "secrets-manager")]
pub use secrets_manager::{DatabaseSecret, SecretId, SecretsManagerSource};
#[cfg(feature = "serde")]
pub use settings::IamSettings;
pub use settings::{AssumeRole, DatabaseResource, HostPort, InvalidValue, RoleArn, SessionName, TokenLifetime};
pub use signer::{CredentialFuture, CredentialSource, RdsTokenSigner, load_aws_config};

/// An IAM-authenticated PostgreSQL pool.
#[cfg(feature = "postgres")]
pub type PgIamPool = IamPool<sqlx::Postgres>;

/// An IAM-authenticated MySQL or MariaDB pool.
#[cfg(feature = "mysql")]
pub type MySqlIamPool = IamPool<sqlx::MySql>;

/// An error and all its causes on one line (`outer: cause: root cause`), for logs and status reports. A cause whose
/// text the line already ends with (errors that print their source in their own message) is not repeated.
///
/// ```
/// let lost = sqlx::Error::Io(std::io::Error::other("connection reset"));
/// assert_eq!(rds_iam::error_chain(&lost), "error communicating with database: connection reset");
/// ```
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    use std::fmt::Write as _;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}
