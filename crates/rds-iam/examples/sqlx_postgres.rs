//! Connects to PostgreSQL with an IAM token and prints who it is connected as.
//!
//! ```sh
//! DATABASE_URL=postgres://db_iam_user@tasks.cluster-xyz.eu-west-1.rds.amazonaws.com:5432/tasksmanager \
//! RDS_IAM_ROOT_CERT=global-bundle.pem cargo run -p rds-iam --features postgres --example sqlx_postgres
//! ```
//!
//! AWS credentials and region come from the usual places (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_REGION`, ...).

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(&std::env::var("DATABASE_URL")?)?;
    let mut builder = rds_iam::PgIamPool::builder(options);
    if let Ok(root_cert) = std::env::var("RDS_IAM_ROOT_CERT") {
        builder = builder.root_cert(root_cert);
    }
    let database = builder.connect().await?;
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(database.pool())
        .await?;
    println!("{user}");
    Ok(())
}
