//! Connects SeaORM to PostgreSQL, MySQL or MariaDB (the URL's scheme decides) with an IAM token and prints who it
//! is connected as.
//!
//! ```sh
//! DATABASE_URL=postgres://db_iam_user@tasks.cluster-xyz.eu-west-1.rds.amazonaws.com:5432/tasksmanager \
//! RDS_IAM_ROOT_CERT=global-bundle.pem cargo run -p rds-iam --features sea-orm,postgres,mysql --example sea_orm
//! ```
//!
//! AWS credentials and region come from the usual places (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_REGION`, ...).

use std::str::FromStr;

use rds_iam::{ConnectOptionsOf, IamConnectOptions, IamDatabase, IamPoolBuilder, MySqlIamPool, PgIamPool};
use sea_orm::{ConnectionTrait, Statement};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")?;
    let (database, query): (IamDatabase, _) = if url.starts_with("mysql:") || url.starts_with("mariadb:") {
        let builder = MySqlIamPool::builder(MySqlConnectOptions::from_str(&url)?);
        (with_root_cert(builder).connect().await?.into(), "SELECT CURRENT_USER()")
    } else {
        let builder = PgIamPool::builder(PgConnectOptions::from_str(&url)?);
        (
            with_root_cert(builder).connect().await?.into(),
            "SELECT current_user::text",
        )
    };
    let connection = database.connection();
    let row = connection
        .query_one_raw(Statement::from_string(connection.get_database_backend(), query))
        .await?
        .ok_or_else(|| anyhow::anyhow!("{query} returned no row"))?;
    let user: String = row.try_get_by_index(0)?;
    println!("{user}");
    Ok(())
}

/// Trusts the CA bundle `RDS_IAM_ROOT_CERT` names, if it is set.
fn with_root_cert<DB: sqlx::Database>(builder: IamPoolBuilder<DB>) -> IamPoolBuilder<DB>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    match std::env::var("RDS_IAM_ROOT_CERT") {
        Ok(path) => builder.root_cert(path),
        Err(_) => builder,
    }
}
