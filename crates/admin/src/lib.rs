//! The one-off steps IAM database authentication needs, as commands rather than console clicks: the least-privilege
//! IAM policy, turning IAM authentication on, and the database user with only what the service needs.

use std::str::FromStr;

use aws_config::SdkConfig;
use infrastructure::{DatabaseBackend, DatabaseUrl};
use rds_iam::discovery::{DatabaseResource, DiscoveryError, describe};
use rds_iam::{BoxError, ConnectOptionsOf, IamConnectOptions, TlsMode, region_from_host};
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
    #[error(
        "cannot connect with --admin-url over TLS {mode:?} (require by default, verify-full for an RDS host name, \
         which needs the RDS CA in the URL: sslrootcert=global-bundle.pem for PostgreSQL, ssl-ca=... for MySQL; \
         sslmode=disable for a local server without TLS)"
    )]
    Connect {
        mode: TlsMode,
        #[source]
        source: sqlx::Error,
    },
    #[error("--admin-url must be postgres:// or mysql://: {0}")]
    AdminUrl(String),
    #[error(
        "--admin-url asks for sslmode=prefer (or allow), which sends the administrator's password in clear when the \
         server, or whoever answers in its place, declines TLS: leave sslmode out (TLS is then required), or write \
         require, verify-full, or disable on purpose for a local server"
    )]
    TlsNotRequired,
    #[error("--db-user must be 1 to 63 bytes without quotes, backslashes or control characters")]
    UserName,
    #[error(
        "refusing to provision `{0}` for the service: it is the user --admin-url connects as or a member of it, a \
         superuser, or it may create roles or databases, replicate, bypass row security or grant privileges; name a \
         new user, which gets only what the service needs"
    )]
    PrivilegedUser(String),
    #[error("the `tasks` table does not exist yet: run `tasks-api migrate up` with the administrator URL first")]
    NoTasksTable,
    #[error(
        "this server has no AWSAuthenticationPlugin, so it is not RDS: create the user `{0}` yourself (behind the RDS \
         IAM emulator, one without a password), then run this again to grant it what the service needs"
    )]
    NoAwsPlugin(String),
    #[error("a provisioning statement failed")]
    Sql(#[source] sqlx::Error),
    #[error("RDS describes the proxy `{0}` without a resource id (arn:...:db-proxy:prx-...)")]
    ProxyWithoutId(String),
    #[error(
        "an RDS Proxy has no IAM database authentication switch of its own: it asks its clients for IAM when its \
         authentication settings say `IAMAuth: REQUIRED` (`aws rds modify-db-proxy --db-proxy-name {0} --auth ...`); \
         turn IAM on for the database behind it with --cluster-id or --instance-id"
    )]
    ProxyHasNoSwitch(String),
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

/// What a policy lets a user connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyTarget {
    /// An Aurora cluster or an RDS instance.
    Database(DatabaseResource),
    /// An RDS Proxy, by name: with end-to-end IAM or IAM towards the proxy alone, clients connect to it, and the
    /// policy names the proxy's resource id (`prx-...`), not the database's.
    Proxy(String),
}

/// Builds the policy for `db_user` on `target`: the account and partition from `GetCallerIdentity`, the resource
/// id from RDS (policies name `DbClusterResourceId`/`DbiResourceId`, or a proxy's `prx-` id, not the identifier).
pub async fn connect_policy(
    aws: &SdkConfig,
    target: &PolicyTarget,
    db_user: &str,
) -> Result<ConnectPolicy, AdminError> {
    let region = aws.region().ok_or(AdminError::NoRegion)?.to_string();
    let resource_id = match target {
        PolicyTarget::Database(resource) => describe(aws, resource).await?.endpoint.resource_id,
        PolicyTarget::Proxy(name) => proxy_resource_id(aws, name).await?,
    };
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
    let resource_arn = format!("arn:{partition}:rds-db:{region}:{account}:dbuser:{resource_id}/{db_user}");
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

/// A proxy's resource id, the last part of its ARN (`arn:aws:rds:region:account:db-proxy:prx-0123abcd`).
async fn proxy_resource_id(aws: &SdkConfig, name: &str) -> Result<String, AdminError> {
    let proxies = aws_sdk_rds::Client::new(aws)
        .describe_db_proxies()
        .db_proxy_name(name)
        .send()
        .await
        .map_err(|error| aws_error("rds:DescribeDBProxies", error))?;
    proxies
        .db_proxies()
        .first()
        .and_then(|proxy| proxy.db_proxy_arn())
        .and_then(|arn| arn.rsplit(':').next())
        .filter(|id| id.starts_with("prx-"))
        .map(str::to_owned)
        .ok_or_else(|| AdminError::ProxyWithoutId(name.to_owned()))
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

/// Creates the service's database user if missing, lets it log in with IAM tokens where the server is RDS or behind
/// the RDS IAM emulator, and grants it what the service needs on `tasks` and nothing more (no DDL, no superuser).
/// Safe to run again. Returns what it did, a line a step.
///
/// The connection to `admin_url` requires TLS: `require`, or `verify-full` when the host is an RDS name, unless the
/// URL's own `sslmode` (`ssl-mode`) says otherwise; `prefer` is refused, as it falls back to sending the password in
/// clear. A user that is the connecting one, or has powers beyond the service's, is refused rather than changed.
pub async fn provision_db_user(admin_url: &str, db_user: &str) -> Result<Vec<String>, AdminError> {
    // PostgreSQL truncates names past 63 bytes (NAMEDATALEN - 1), however many characters those are.
    if db_user.is_empty()
        || db_user.len() > 63
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
            let mut connection = connect_with_tls::<sqlx::Postgres>(with_password.as_str(), &url).await?;
            provision_postgres(&mut connection, db_user).await
        }
        DatabaseBackend::MySql => {
            let _ = with_password.set_scheme("mysql");
            let mut connection = connect_with_tls::<sqlx::MySql>(with_password.as_str(), &url).await?;
            provision_mysql(&mut connection, db_user).await
        }
        DatabaseBackend::Sqlite => Err(AdminError::AdminUrl("SQLite has no users to provision".to_owned())),
    }
}

/// Connects with `with_password`, over the TLS [`admin_tls_mode`] picks.
async fn connect_with_tls<DB: sqlx::Database>(
    with_password: &str,
    url: &DatabaseUrl,
) -> Result<DB::Connection, AdminError>
where
    ConnectOptionsOf<DB>: IamConnectOptions + FromStr<Err = sqlx::Error>,
{
    let options =
        ConnectOptionsOf::<DB>::from_str(with_password).map_err(|error| AdminError::AdminUrl(error.to_string()))?;
    // The host the driver will really reach, which a `host=` query parameter may have changed.
    let mode = admin_tls_mode(&options.address().0, url.tls_mode())?;
    DB::Connection::connect_with(&options.with_tls(mode, None))
        .await
        .map_err(|source| AdminError::Connect { mode, source })
}

/// The URL's explicit TLS mode, except `prefer`; else `verify-full` for an RDS host name (the administrator's
/// password must not go to anyone holding some valid certificate) and `require` for any other.
fn admin_tls_mode(host: &str, in_url: Option<TlsMode>) -> Result<TlsMode, AdminError> {
    match in_url {
        Some(TlsMode::Prefer) => Err(AdminError::TlsNotRequired),
        Some(mode) => Ok(mode),
        None if region_from_host(host).is_some() => Ok(TlsMode::VerifyFull),
        None => Ok(TlsMode::Require),
    }
}

/// `name` as a PostgreSQL identifier: in double quotes, with any double quote inside doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn provision_postgres(connection: &mut PgConnection, db_user: &str) -> Result<Vec<String>, AdminError> {
    let mut report = Vec::new();
    let mut transaction = connection.begin().await.map_err(AdminError::Sql)?;
    let exists = |role: &str| {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)").bind(role.to_owned())
    };
    let role = quote_identifier(db_user);
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
        if privileged_role(&mut transaction, db_user).await? {
            return Err(AdminError::PrivilegedUser(db_user.to_owned()));
        }
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
        report.push(
            "skipped GRANT rds_iam: this server has no rds_iam role, so it is neither RDS nor behind the RDS IAM \
             emulator"
                .to_owned(),
        );
    }
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *transaction)
        .await
        .map_err(AdminError::Sql)?;
    for grant in [
        format!("GRANT CONNECT ON DATABASE {} TO {role}", quote_identifier(&database)),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON tasks TO {role}"),
    ] {
        execute(&mut *transaction, grant.clone()).await?;
        report.push(grant);
    }
    transaction.commit().await.map_err(AdminError::Sql)?;
    Ok(report)
}

/// Whether `role` can do more than the service should: it is, or is a member of, the connecting (master) user, a
/// superuser, a role with CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, or RDS's `rds_superuser`. Granting it
/// `rds_iam` would also lock it out of password log-in.
async fn privileged_role(connection: &mut PgConnection, role: &str) -> Result<bool, AdminError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_roles AS granted WHERE pg_has_role($1::name, granted.oid, 'MEMBER') \
         AND (granted.rolsuper OR granted.rolcreaterole OR granted.rolcreatedb OR granted.rolreplication \
         OR granted.rolbypassrls OR granted.rolname IN (current_user, 'rds_superuser')))",
    )
    .bind(role)
    .fetch_one(connection)
    .await
    .map_err(AdminError::Sql)
}

/// Whether `user` is the one the administrator connects as (on RDS, the master user), at whichever host.
async fn is_connecting_user(connection: &mut MySqlConnection, user: &str) -> Result<bool, AdminError> {
    let connecting: String = sqlx::query_scalar("SELECT CURRENT_USER()")
        .fetch_one(connection)
        .await
        .map_err(AdminError::Sql)?;
    // `user@host`; the user part may itself contain `@`.
    Ok(connecting
        .rsplit_once('@')
        .map_or(connecting.as_str(), |(name, _)| name)
        == user)
}

/// Whether the MySQL `account` (`'user'@'%'`) can do more than the service should: it holds a global privilege
/// (SUPER, CREATE USER, or reading every schema: the service needs none), or may grant what it holds anywhere.
async fn privileged_account(connection: &mut MySqlConnection, account: &str) -> Result<bool, AdminError> {
    let powers: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM information_schema.user_privileges WHERE grantee = ? \
                 AND (privilege_type <> 'USAGE' OR is_grantable = 'YES')) \
              + (SELECT COUNT(*) FROM information_schema.schema_privileges WHERE grantee = ? AND is_grantable = 'YES') \
              + (SELECT COUNT(*) FROM information_schema.table_privileges WHERE grantee = ? AND is_grantable = 'YES')",
    )
    .bind(account)
    .bind(account)
    .bind(account)
    .fetch_one(connection)
    .await
    .map_err(AdminError::Sql)?;
    Ok(powers > 0)
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
    if is_connecting_user(&mut *connection, db_user).await? {
        return Err(AdminError::PrivilegedUser(db_user.to_owned()));
    }
    if user_exists > 0 {
        if privileged_account(&mut *connection, &account).await? {
            return Err(AdminError::PrivilegedUser(db_user.to_owned()));
        }
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
    // RDS has no such role (its IAM accounts are identified with the plugin); the RDS IAM emulator creates one and
    // lets in only the accounts granted it.
    let iam_role: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE user = 'rds_iam'")
        .fetch_one(&mut *connection)
        .await
        .map_err(AdminError::Sql)?;
    if iam_role > 0 {
        execute(&mut *connection, format!("GRANT rds_iam TO {account}")).await?;
        report.push(format!(
            "granted rds_iam to {account}: the RDS IAM emulator lets it in with IAM tokens"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_required_verified_for_rds_names_and_weakened_only_in_writing() {
        let rds = "tasks.cluster-c9di9qmu8xqw.eu-west-1.rds.amazonaws.com";
        let cases = [
            (rds, None, Some(TlsMode::VerifyFull)),
            ("db.example.com", None, Some(TlsMode::Require)),
            ("127.0.0.1", Some(TlsMode::Disable), Some(TlsMode::Disable)),
            (rds, Some(TlsMode::VerifyCa), Some(TlsMode::VerifyCa)),
            ("127.0.0.1", Some(TlsMode::Prefer), None),
        ];
        for (host, in_url, expected) in cases {
            assert_eq!(admin_tls_mode(host, in_url).ok(), expected, "{host} {in_url:?}");
        }
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_identifier("tasks"), "\"tasks\"");
        assert_eq!(
            quote_identifier("a\"; DROP TABLE tasks; --"),
            "\"a\"\"; DROP TABLE tasks; --\""
        );
    }
}
