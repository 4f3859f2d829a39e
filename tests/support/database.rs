//! A database of its own for every test: a fresh PostgreSQL database or a fresh SQLite file, removed afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, AssertSqlSafe, ConnectOptions, Connection};
use uuid::Uuid;

use crate::iam::{DSQL_ROLE, IAM_USER};

/// The ways the suite runs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// PostgreSQL with password authentication (a password is configured; the local server trusts it anyway).
    Postgres,
    /// PostgreSQL behind the RDS IAM emulator: IAM tokens, TLS verify-full against the emulator's CA.
    PostgresIam,
    /// MariaDB (or MySQL) with password authentication.
    MariaDb,
    /// MariaDB behind the RDS IAM emulator: IAM tokens over `mysql_clear_password`, TLS verify-identity.
    MariaDbIam,
    /// PostgreSQL as a user of the test's own, whose password and whereabouts a secret in LocalStack holds; the URL
    /// is `postgres://` alone. The local server does not check passwords.
    PostgresSecrets,
    /// MariaDB likewise: `mysql://` and a secret; MariaDB does check the password.
    MariaDbSecrets,
    /// PostgreSQL behind the emulator in Aurora DSQL mode: DSQL tokens (`DbConnectAdmin`) for the role `admin`, TLS
    /// verify-full against the emulator's CA.
    PostgresDsql,
}

impl Backend {
    /// Whether the service reaches this backend through the RDS IAM emulator, with RDS or DSQL tokens.
    #[must_use]
    pub fn uses_iam(self) -> bool {
        matches!(self, Self::PostgresIam | Self::MariaDbIam | Self::PostgresDsql)
    }

    /// Whether the service logs in to this backend with a user and password from Secrets Manager.
    #[must_use]
    pub fn uses_secrets(self) -> bool {
        matches!(self, Self::PostgresSecrets | Self::MariaDbSecrets)
    }

    /// `id` as an SQL literal of the `tasks.id` column: a native uuid on PostgreSQL, 16 bytes elsewhere.
    #[must_use]
    pub fn uuid_literal(self, id: Uuid) -> String {
        match self {
            Self::Postgres | Self::PostgresIam | Self::PostgresSecrets | Self::PostgresDsql => format!("'{id}'"),
            Self::Sqlite | Self::MariaDb | Self::MariaDbIam | Self::MariaDbSecrets => format!("X'{}'", id.simple()),
        }
    }
}

/// One test's database.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    /// The administrator's URL of the server that holds it (unused for SQLite).
    admin_url: String,
    url: String,
    name: String,
    sqlite_file: Option<PathBuf>,
}

impl TestDatabase {
    /// Creates an empty database; the service's own migrations fill it. For the IAM backends it is
    /// [`IAM_USER`]'s, which must exist already (the suite's emulator makes it).
    pub async fn create(backend: Backend) -> Self {
        Self::create_named(backend, "tasks_test_").await
    }

    /// Like [`TestDatabase::create`], with a name of `prefix` and hex digits; on PostgreSQL the prefix may hold any
    /// character an identifier can, quotes and spaces included. The servers are `TEST_DATABASE_URL` and
    /// `TEST_MYSQL_URL`, or the local ones; a test fails at once, saying how to start one, when it is not running.
    pub async fn create_named(backend: Backend, prefix: &str) -> Self {
        let admin_url = match backend {
            Backend::Postgres | Backend::PostgresIam | Backend::PostgresSecrets | Backend::PostgresDsql => {
                test_servers::postgres()
            }
            Backend::MariaDb | Backend::MariaDbIam | Backend::MariaDbSecrets => test_servers::mariadb(),
            Backend::Sqlite => String::new(),
        };
        Self::create_on(backend, admin_url, prefix).await
    }

    /// A fresh database on the server that `admin_url` administers (a PostgreSQL cluster of the test's own, say).
    pub async fn create_on(backend: Backend, admin_url: String, prefix: &str) -> Self {
        let name = format!("{prefix}{}", Uuid::new_v4().simple());
        match backend {
            Backend::Postgres | Backend::PostgresIam | Backend::PostgresSecrets | Backend::PostgresDsql => {
                // Owning it, the IAM user may create the service's tables in its schema `public`.
                let owner = match backend {
                    Backend::PostgresIam => format!(" OWNER {IAM_USER}"),
                    Backend::PostgresDsql => format!(" OWNER {DSQL_ROLE}"),
                    _ => String::new(),
                };
                administer(&admin_url, format!("CREATE DATABASE {}{owner}", quoted(&name))).await;
                let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                Self {
                    backend,
                    admin_url,
                    url: url.to_string(),
                    name,
                    sqlite_file: None,
                }
            }
            Backend::MariaDb | Backend::MariaDbIam | Backend::MariaDbSecrets => {
                // The name is the suite's own, of letters, digits and underscores.
                let mut statements = format!("CREATE DATABASE {name} CHARACTER SET utf8mb4");
                if backend == Backend::MariaDbIam {
                    // One grant on every database of this prefix (`_` is a wildcard, so escaped), rather than one
                    // per database that outlives it: MySQL keeps grants when their database is dropped.
                    let pattern = prefix.replace('_', "\\_");
                    statements.push_str(&format!("; GRANT ALL ON `{pattern}%`.* TO '{IAM_USER}'@'%'"));
                }
                administer(&admin_url, statements).await;
                Self {
                    backend,
                    url: format!("{}/{name}", admin_url.trim_end_matches('/')),
                    admin_url,
                    name,
                    sqlite_file: None,
                }
            }
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                Self {
                    backend,
                    admin_url,
                    url: format!("sqlite://{}?mode=rwc", file.display()),
                    name,
                    sqlite_file: Some(file),
                }
            }
        }
    }

    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL that reaches the database directly, bypassing any emulator.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The administrator's URL of the server that holds it.
    #[must_use]
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The database's name on its server.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection of the test's own, outside the service.
    pub async fn connect(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// Runs statements written by the test itself, outside the service.
    pub async fn execute(&self, sql: String) {
        let mut connection = self.connect().await;
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut connection)
            .await
            .expect("statement runs");
    }

    /// Applies the service's migrations directly, as the server's administrator: what `tasks-api migrate up` with an
    /// administrator's URL does before `admin provision-db-user`.
    pub async fn migrate(&self) {
        let variables = [("APP__DATABASE__URL".to_owned(), self.url.clone())];
        let settings = tasks_api::Settings::load_from(Path::new("/nonexistent"), variables).expect("settings");
        let database = infrastructure::Database::connect_with_aws(&settings.database, None)
            .await
            .expect("connect as the administrator");
        database.migrate_up(None).await.expect("the migrations apply");
        database.close().await;
    }

    /// How many rows `tasks` holds, read directly, not through the service.
    pub async fn count_tasks(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM tasks").await
    }

    /// The name stored for task `id`, read directly, not through the service; `None` when there is no such row.
    pub async fn task_name(&self, id: Uuid) -> Option<String> {
        let mut connection = self.connect().await;
        let query = format!("SELECT name FROM tasks WHERE id = {}", self.backend.uuid_literal(id));
        sqlx::query_scalar(AssertSqlSafe(query))
            .fetch_optional(&mut connection)
            .await
            .expect("a name or no row")
    }

    /// How many tables the test database holds: zero means not even the migrations got in.
    pub async fn count_tables(&self) -> i64 {
        match self.backend {
            Backend::Postgres | Backend::PostgresIam | Backend::PostgresSecrets | Backend::PostgresDsql => {
                self.scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'")
                    .await
            }
            Backend::MariaDb | Backend::MariaDbIam | Backend::MariaDbSecrets => {
                self.scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()")
                    .await
            }
            Backend::Sqlite => {
                self.scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
                    .await
            }
        }
    }

    /// A single number from a query of the test's own, read directly, not through the service.
    pub async fn scalar(&self, query: impl Into<String>) -> i64 {
        let mut connection = self.connect().await;
        sqlx::query_scalar(AssertSqlSafe(query.into()))
            .fetch_one(&mut connection)
            .await
            .expect("a number")
    }

    /// Every task stored, id to name, read directly, not through the service.
    pub async fn stored_tasks(&self) -> HashMap<Uuid, String> {
        let mut connection = self.connect().await;
        let id_as_text = match self.backend {
            Backend::Postgres | Backend::PostgresIam | Backend::PostgresSecrets | Backend::PostgresDsql => "id::text",
            Backend::Sqlite | Backend::MariaDb | Backend::MariaDbIam | Backend::MariaDbSecrets => "hex(id)",
        };
        let rows: Vec<(String, String)> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {id_as_text}, name FROM tasks")))
                .fetch_all(&mut connection)
                .await
                .expect("the stored tasks");
        rows.into_iter()
            .map(|(id, name)| (Uuid::parse_str(&id).expect("a stored id is a UUID"), name))
            .collect()
    }

    /// Ends every session of every client connected to this database, as an administrator's kill or a proxy's
    /// reset would, and returns how many there were. The administrator's connection comes from `admin`, kept open
    /// between calls.
    pub async fn end_sessions(&self, admin: &mut AnyConnection) -> usize {
        match self.backend {
            Backend::Postgres | Backend::PostgresIam | Backend::PostgresSecrets | Backend::PostgresDsql => {
                let ended: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()) AS ended",
                )
                .bind(&self.name)
                .fetch_one(&mut *admin)
                .await
                .expect("terminate the database's sessions");
                usize::try_from(ended).expect("a count")
            }
            Backend::MariaDb | Backend::MariaDbIam | Backend::MariaDbSecrets => {
                // Sessions waiting for a lock are ended first: ended after the lock's holder, they could get the
                // lock and finish their statement before their own end came.
                let sessions: Vec<i64> = sqlx::query_scalar(
                    "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID() \
                     ORDER BY state LIKE 'Waiting for%lock%' DESC",
                )
                .bind(&self.name)
                .fetch_all(&mut *admin)
                .await
                .expect("list the database's sessions");
                for session in &sessions {
                    // A session may end on its own between the listing and the kill: "unknown thread" is fine.
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!("KILL {session}")))
                        .execute(&mut *admin)
                        .await;
                }
                sessions.len()
            }
            Backend::Sqlite => panic!("only a server database has sessions to end"),
        }
    }

    /// A connection as the administrator of this database's server, for [`TestDatabase::end_sessions`].
    pub async fn admin_connection(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.admin_url)
            .await
            .expect("connect as the server's administrator")
    }

    /// Makes the database unreachable for the service, as an outage would: every session is ended and the database
    /// disappears.
    pub async fn take_down(&self) {
        drop_server_database(self.backend, &self.admin_url, &self.name).await;
    }
}

/// `name` as a PostgreSQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs one statement as administrator of a database server, failing loudly when the server is not there. The
/// statement is not logged: it may set a user's password (the Secrets Manager tests'), which the log scan looks for.
pub(crate) async fn administer(admin_url: &str, statement: String) {
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(admin_url).expect("an administrator's URL");
    let mut admin = options
        .disable_statement_logging()
        .connect()
        .await
        .unwrap_or_else(|error| panic!("the database server must be running for this test ({admin_url}): {error}"));
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(&mut admin)
        .await
        .expect("administrative statement runs");
}

/// Drops a per-test database, ending its sessions first (an outage, as far as the service can tell).
async fn drop_server_database(backend: Backend, admin_url: &str, name: &str) {
    match backend {
        Backend::Postgres | Backend::PostgresIam | Backend::PostgresSecrets | Backend::PostgresDsql => {
            administer(
                admin_url,
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quoted(name)),
            )
            .await;
        }
        Backend::MariaDb | Backend::MariaDbIam | Backend::MariaDbSecrets => {
            administer(admin_url, format!("DROP DATABASE IF EXISTS {name}")).await
        }
        Backend::Sqlite => panic!("only a server database can go down"),
    }
}

/// Drop cannot await, and the test's runtime may be shutting down: clean-up runs on a runtime of its own.
pub(crate) fn run_to_completion(cleanup: impl Future<Output = ()> + Send + 'static) {
    let worker = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for clean-up")
            .block_on(cleanup);
    });
    let _ = worker.join();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match (&self.backend, &self.sqlite_file) {
            (
                Backend::Postgres
                | Backend::PostgresIam
                | Backend::PostgresSecrets
                | Backend::PostgresDsql
                | Backend::MariaDb
                | Backend::MariaDbIam
                | Backend::MariaDbSecrets,
                _,
            ) => {
                let (backend, admin_url, name) = (self.backend, self.admin_url.clone(), self.name.clone());
                run_to_completion(async move { drop_server_database(backend, &admin_url, &name).await });
            }
            (Backend::Sqlite, Some(file)) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = file.clone().into_os_string();
                    path.push(suffix);
                    let _ = std::fs::remove_file(path);
                }
            }
            (Backend::Sqlite, None) => {}
        }
    }
}
