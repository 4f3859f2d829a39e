//! The one-off steps IAM database authentication needs, as commands rather than console clicks: the least-privilege
//! IAM policy, turning IAM authentication on, and the database user with only what the service needs.

use aws_config::SdkConfig;
use infrastructure::{DatabaseBackend, DatabaseUrl};
use rds_iam::BoxError;
use rds_iam::discovery::{DatabaseResource, DiscoveryError, describe};
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("no AWS region: pass --region or set AWS_REGION")]
    NoRegion,
    #[error("{action} failed")]
    Aws {
        action: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("cannot connect with --admin-url")]
    Connect(#[source] sqlx::Error),
    #[error("--admin-url must be postgres:// or mysql://: {0}")]
    AdminUrl(String),
    #[error("--db-user must be 1 to 63 characters without quotes, backslashes or control characters")]
    UserName,
    #[error("the `tasks` table does not exist yet: run `tasks-api migrate up` with the administrator URL first")]
    NoTasksTable,
    #[error(
        "this server has no AWSAuthenticationPlugin, so it is not RDS: create the user `{0}` yourself (behind the RDS \
         IAM emulator, one without a password), then run this again to grant it what the service needs"
    )]
    NoAwsPlugin(String),
    #[error("a provisioning statement failed")]
    Sql(#[source] sqlx::Error),
}

fn aws_error(action: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> AdminError {
    AdminError::Aws {
        action,
        source: error.into(),
    }
}

/// The policy that allows `rds-db:connect` as one database user of one cluster or instance, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPolicy {
    pub resource_arn: String,
    pub document: serde_json::Value,
}

/// Builds the policy for `db_user` on `resource`: the account and partition from `GetCallerIdentity`, the resource
/// id from RDS (policies name `DbClusterResourceId`/`DbiResourceId`, not the identifier).
pub async fn connect_policy(
    aws: &SdkConfig,
    resource: &DatabaseResource,
    db_user: &str,
) -> Result<ConnectPolicy, AdminError> {
    let region = aws.region().ok_or(AdminError::NoRegion)?.to_string();
    let description = describe(aws, resource).await?;
    let identity = aws_sdk_sts::Client::new(aws)
        .get_caller_identity()
        .send()
        .await
        .map_err(|error| aws_error("sts:GetCallerIdentity", error))?;
    let caller_arn = identity.arn().unwrap_or_default();
    let partition = caller_arn
        .split(':')
        .nth(1)
        .filter(|partition| !partition.is_empty())
        .unwrap_or("aws");
    let account = identity.account().unwrap_or_default();
    let resource_arn = format!(
        "arn:{partition}:rds-db:{region}:{account}:dbuser:{}/{db_user}",
        description.endpoint.resource_id
    );
    let document = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "TasksApiDatabaseConnect",
            "Effect": "Allow",
            "Action": "rds-db:connect",
            "Resource": resource_arn,
        }],
    });
    Ok(ConnectPolicy { resource_arn, document })
}

/// Creates `policy` in IAM as `name` and returns its ARN.
pub async fn create_policy(aws: &SdkConfig, name: &str, policy: &ConnectPolicy) -> Result<String, AdminError> {
    let created = aws_sdk_iam::Client::new(aws)
        .create_policy()
        .policy_name(name)
        .description("rds-db:connect for tasks-api")
        .policy_document(policy.document.to_string())
        .send()
        .await
        .map_err(|error| aws_error("iam:CreatePolicy", error))?;
    Ok(created
        .policy()
        .and_then(|policy| policy.arn())
        .unwrap_or_default()
        .to_owned())
}

/// What `enable-iam` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamSwitch {
    AlreadyOn,
    TurnedOn,
    /// Asked for; RDS does not report it on yet (clusters apply it in the background).
    Requested,
}

/// Turns IAM database authentication on for `resource`, doing nothing when it already is.
pub async fn enable_iam(aws: &SdkConfig, resource: &DatabaseResource) -> Result<IamSwitch, AdminError> {
    if describe(aws, resource).await?.iam_enabled {
        return Ok(IamSwitch::AlreadyOn);
    }
    let client = aws_sdk_rds::Client::new(aws);
    match resource {
        DatabaseResource::Cluster { id, .. } => {
            client
                .modify_db_cluster()
                .db_cluster_identifier(id)
                .enable_iam_database_authentication(true)
                .apply_immediately(true)
                .send()
                .await
                .map_err(|error| aws_error("rds:ModifyDBCluster", error))?;
        }
        DatabaseResource::Instance { id } => {
            client
                .modify_db_instance()
                .db_instance_identifier(id)
                .enable_iam_database_authentication(true)
                .apply_immediately(true)
                .send()
                .await
                .map_err(|error| aws_error("rds:ModifyDBInstance", error))?;
        }
    }
    Ok(if describe(aws, resource).await?.iam_enabled {
        IamSwitch::TurnedOn
    } else {
        IamSwitch::Requested
    })
}

/// Creates the service's database user if missing, lets it log in with IAM tokens where the server is RDS, and
/// grants it what the service needs on `tasks` and nothing more (no DDL, no superuser). Safe to run again. Returns
/// what it did, a line a step.
pub async fn provision_db_user(admin_url: &str, db_user: &str) -> Result<Vec<String>, AdminError> {
    if db_user.is_empty()
        || db_user.chars().count() > 63
        || db_user
            .chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\'' | '`' | '\\'))
    {
        return Err(AdminError::UserName);
    }
    let url = DatabaseUrl::parse(admin_url).map_err(AdminError::AdminUrl)?;
    // The URL's password, when it has one, is back in the string sqlx parses; it never reaches a message.
    let mut with_password = url.as_url().clone();
    if let Some(password) = url.password() {
        let _ = with_password.set_password(Some(password.expose_secret()));
    }
    match url.backend() {
        DatabaseBackend::Postgres => {
            let mut connection = PgConnection::connect(with_password.as_str())
                .await
                .map_err(AdminError::Connect)?;
            provision_postgres(&mut connection, db_user).await
        }
        DatabaseBackend::MySql => {
            let _ = with_password.set_scheme("mysql");
            let mut connection = MySqlConnection::connect(with_password.as_str())
                .await
                .map_err(AdminError::Connect)?;
            provision_mysql(&mut connection, db_user).await
        }
        DatabaseBackend::Sqlite => Err(AdminError::AdminUrl("SQLite has no users to provision".to_owned())),
    }
}

async fn provision_postgres(connection: &mut PgConnection, db_user: &str) -> Result<Vec<String>, AdminError> {
    let mut report = Vec::new();
    let mut transaction = connection.begin().await.map_err(AdminError::Sql)?;
    let exists = |role: &str| {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)").bind(role.to_owned())
    };
    let role = format!("\"{db_user}\"");
    let tasks_exists: bool = sqlx::query_scalar("SELECT to_regclass('tasks') IS NOT NULL")
        .fetch_one(&mut *transaction)
        .await
        .map_err(AdminError::Sql)?;
    if !tasks_exists {
        return Err(AdminError::NoTasksTable);
    }
    if exists(db_user)
        .fetch_one(&mut *transaction)
        .await
        .map_err(AdminError::Sql)?
    {
        report.push(format!("role {role} exists"));
    } else {
        execute(&mut *transaction, format!("CREATE ROLE {role} LOGIN")).await?;
        report.push(format!("created role {role} (LOGIN, no password)"));
    }
    if exists("rds_iam")
        .fetch_one(&mut *transaction)
        .await
        .map_err(AdminError::Sql)?
    {
        execute(&mut *transaction, format!("GRANT rds_iam TO {role}")).await?;
        report.push(format!("granted rds_iam to {role}: it logs in with IAM tokens"));
    } else {
        report.push("skipped GRANT rds_iam: this server has no rds_iam role, so it is not RDS".to_owned());
    }
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *transaction)
        .await
        .map_err(AdminError::Sql)?;
    for grant in [
        format!("GRANT CONNECT ON DATABASE \"{database}\" TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON tasks TO {role}"),
    ] {
        execute(&mut *transaction, grant.clone()).await?;
        report.push(grant);
    }
    transaction.commit().await.map_err(AdminError::Sql)?;
    Ok(report)
}

async fn provision_mysql(connection: &mut MySqlConnection, db_user: &str) -> Result<Vec<String>, AdminError> {
    let mut report = Vec::new();
    let tasks_exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'tasks'",
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(AdminError::Sql)?;
    if tasks_exists == 0 {
        return Err(AdminError::NoTasksTable);
    }
    let account = format!("'{db_user}'@'%'");
    let user_exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE user = ? AND host = '%'")
        .bind(db_user)
        .fetch_one(&mut *connection)
        .await
        .map_err(AdminError::Sql)?;
    if user_exists > 0 {
        report.push(format!("user {account} exists"));
    } else {
        let aws_plugin: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.plugins \
             WHERE plugin_name = 'AWSAuthenticationPlugin' AND plugin_status = 'ACTIVE'",
        )
        .fetch_one(&mut *connection)
        .await
        .map_err(AdminError::Sql)?;
        if aws_plugin == 0 {
            return Err(AdminError::NoAwsPlugin(db_user.to_owned()));
        }
        execute(
            &mut *connection,
            format!("CREATE USER {account} IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS' REQUIRE SSL"),
        )
        .await?;
        report.push(format!(
            "created user {account} identified with AWSAuthenticationPlugin, SSL required"
        ));
    }
    let grant = format!("GRANT SELECT, INSERT, UPDATE, DELETE ON tasks TO {account}");
    execute(&mut *connection, grant.clone()).await?;
    report.push(grant);
    Ok(report)
}

/// Runs a statement built from names checked by [`provision_db_user`] (identifiers cannot be bound as parameters).
async fn execute<'c, E>(executor: E, statement: String) -> Result<(), AdminError>
where
    E: sqlx::Executor<'c>,
{
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(executor)
        .await
        .map(drop)
        .map_err(AdminError::Sql)
}
