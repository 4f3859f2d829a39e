//! Which database users are IAM users. RDS lets a valid token in only for one: on PostgreSQL a member of its role
//! `rds_iam`, on MySQL and MariaDB an account identified with `AWSAuthenticationPlugin`, which no server outside RDS
//! has. The emulator asks the same of a role named `rds_iam` on every engine (MySQL 8 and MariaDB have roles too),
//! creates that role on the upstream at start when it is absent, and asks the upstream at every log-in whether the
//! user has been granted it, over a small pool of its own connections.
//!
//! Nothing is cached: a membership check is one round trip on an open connection with an already prepared
//! statement, and a `GRANT` or `REVOKE` then counts from the next log-in on, as on RDS.

use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Database, Pool};
use url::Url;

/// Connections the emulator may open to the upstream for its own questions: a check takes a connection for one round
/// trip, so a few serve many clients logging in at once. One stays open while no client logs in, so that the next
/// does not wait for a connection to be opened.
const POOL_SIZE: u32 = 4;

/// Why the emulator could not make sure the upstream has the role `rds_iam`.
#[derive(Debug, thiserror::Error)]
pub enum IamRoleError {
    #[error("the --upstream URL cannot be used for the emulator's own connections")]
    Options(#[source] sqlx::Error),
    #[error(
        "cannot connect to the upstream as `{user}`, the --upstream URL's user, which the emulator reads role \
         memberships as"
    )]
    Connect {
        user: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "`{user}` cannot make sure the upstream has the role `rds_iam`: on PostgreSQL it needs CREATEROLE unless the \
         role exists (run `CREATE ROLE rds_iam` once as an administrator), on MySQL and MariaDB CREATE USER"
    )]
    Create {
        user: String,
        #[source]
        source: sqlx::Error,
    },
}

/// The upstream's role `rds_iam`, and the connections that ask who has been granted it.
#[derive(Clone)]
pub(crate) enum IamRole {
    Postgres(PgPool),
    MySql {
        pool: MySqlPool,
        /// MySQL and MariaDB keep role grants in tables of their own: the query that reads them.
        membership: &'static str,
    },
}

/// Membership as RDS's `pg_hba.conf` rule `+rds_iam` tests it: direct or through other roles, whatever their
/// INHERIT. Not `pg_has_role`, which counts a superuser a member of every role, and RDS does not.
const POSTGRES_MEMBERSHIP: &str = "WITH RECURSIVE granted (role) AS ( \
         SELECT membership.roleid FROM pg_auth_members AS membership \
         JOIN pg_roles AS member ON member.oid = membership.member WHERE member.rolname = $1 \
         UNION SELECT membership.roleid FROM pg_auth_members AS membership \
         JOIN granted ON membership.member = granted.role) \
     SELECT EXISTS (SELECT 1 FROM granted JOIN pg_roles ON pg_roles.oid = granted.role \
         WHERE pg_roles.rolname = 'rds_iam')";

/// Creates the role unless it exists, so that a user that may not create roles can run an emulator where it does.
/// Another emulator starting at the same moment may create it first: that is no failure.
const POSTGRES_CREATE: &str = "DO $$ BEGIN \
         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') THEN CREATE ROLE rds_iam; END IF; \
     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$";

// On MySQL and MariaDB, an account granted the role directly, as an IAM account is identified with the plugin
// itself. Grants WITH ADMIN OPTION do not count: MariaDB records the role's creator, the emulator's own user, as
// granted it that way.
const MARIADB_MEMBERSHIP: &str = "SELECT EXISTS (SELECT 1 FROM mysql.roles_mapping \
     WHERE Role = 'rds_iam' AND User = ? AND Admin_option = 'N')";
const MYSQL_MEMBERSHIP: &str = "SELECT EXISTS (SELECT 1 FROM mysql.role_edges \
     WHERE FROM_USER = 'rds_iam' AND FROM_HOST = '%' AND TO_USER = ? AND WITH_ADMIN_OPTION = 'N')";

const MYSQL_CREATE: &str = "CREATE ROLE IF NOT EXISTS rds_iam";

impl IamRole {
    /// Connects to the PostgreSQL at `upstream` as its user (`postgres` when it names none, with its password,
    /// database and `sslmode` when it has them) and creates the role if it is absent.
    pub(crate) async fn postgres(upstream: &Url) -> Result<Self, IamRoleError> {
        let mut options = PgConnectOptions::from_url(upstream).map_err(IamRoleError::Options)?;
        if upstream.username().is_empty() {
            options = options.username("postgres");
        }
        let options = options.application_name("rds-iam-emulator");
        let user = options.get_username().to_owned();
        Ok(Self::Postgres(open(options, user, POSTGRES_CREATE).await?))
    }

    /// Connects to the MySQL or MariaDB at `upstream` as its user (`root` when it names none) and creates the role
    /// if it is absent.
    pub(crate) async fn mysql(upstream: &Url) -> Result<Self, IamRoleError> {
        let options = MySqlConnectOptions::from_url(upstream).map_err(IamRoleError::Options)?;
        let user = options.get_username().to_owned();
        let pool = open(options, user.clone(), MYSQL_CREATE).await?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&pool)
            .await
            .map_err(|source| IamRoleError::Connect { user, source })?;
        let membership = if version.contains("MariaDB") {
            MARIADB_MEMBERSHIP
        } else {
            MYSQL_MEMBERSHIP
        };
        Ok(Self::MySql { pool, membership })
    }

    /// Whether `user` has been granted the role, and so may log in with a token.
    pub(crate) async fn is_granted_to(&self, user: &str) -> Result<bool, sqlx::Error> {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(POSTGRES_MEMBERSHIP).bind(user).fetch_one(pool).await,
            Self::MySql { pool, membership } => sqlx::query_scalar(*membership).bind(user).fetch_one(pool).await,
        }
    }
}

#[cfg(feature = "testing")]
impl IamRole {
    /// Runs `statements` on the upstream as the emulator's own user.
    pub(crate) async fn execute(&self, statements: String) -> Result<(), sqlx::Error> {
        let statements = sqlx::raw_sql(sqlx::AssertSqlSafe(statements));
        match self {
            Self::Postgres(pool) => statements.execute(pool).await.map(drop),
            Self::MySql { pool, .. } => statements.execute(pool).await.map(drop),
        }
    }

    /// Creates the login `user` unless it exists, without a password (the emulator opens its sessions without one),
    /// and grants it the role. `user` must hold no quote, backslash or `$`. Tests run this at the same time for the
    /// same user, so a concurrent creation or grant is no failure.
    pub(crate) async fn create_member(&self, user: &str) -> Result<(), sqlx::Error> {
        self.execute(match self {
            Self::Postgres(_) => format!(
                "DO $$ BEGIN CREATE ROLE \"{user}\" LOGIN; \
                     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
                 DO $$ BEGIN GRANT rds_iam TO \"{user}\"; EXCEPTION WHEN unique_violation THEN NULL; END $$"
            ),
            Self::MySql { .. } => format!("CREATE USER IF NOT EXISTS '{user}'@'%'; GRANT rds_iam TO '{user}'@'%'"),
        })
        .await
    }
}

/// The pool for `options`, once the role exists on its server.
async fn open<DB>(
    options: <DB::Connection as sqlx::Connection>::Options,
    user: String,
    create: &'static str,
) -> Result<Pool<DB>, IamRoleError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let pool = PoolOptions::<DB>::new()
        .max_connections(POOL_SIZE)
        .min_connections(1)
        .connect_with(options)
        .await
        .map_err(|source| IamRoleError::Connect {
            user: user.clone(),
            source,
        })?;
    sqlx::raw_sql(create)
        .execute(&pool)
        .await
        .map_err(|source| IamRoleError::Create { user, source })?;
    Ok(pool)
}
