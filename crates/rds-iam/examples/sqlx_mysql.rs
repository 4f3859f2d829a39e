//! Connects to MySQL or MariaDB with an IAM token and prints who it is connected as.
//!
//! ```sh
//! DATABASE_URL=mysql://db_iam_user@tasks.cluster-xyz.eu-west-1.rds.amazonaws.com:3306/tasksmanager \
//! RDS_IAM_ROOT_CERT=global-bundle.pem cargo run -p rds-iam --features mysql --example sqlx_mysql
//! ```
//!
//! AWS credentials and region come from the usual places (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_REGION`, ...).

use std::str::FromStr;

use sqlx::mysql::MySqlConnectOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = MySqlConnectOptions::from_str(&std::env::var("DATABASE_URL")?)?;
    let mut builder = rds_iam::MySqlIamPool::builder(options);
    if let Ok(root_cert) = std::env::var("RDS_IAM_ROOT_CERT") {
        builder = builder.root_cert(root_cert);
    }
    let database = builder.connect().await?;
    let user: String = sqlx::query_scalar("SELECT CURRENT_USER()")
        .fetch_one(database.pool())
        .await?;
    println!("{user}");
    Ok(())
}
