//! Secrets Manager for the suite: database secrets in moto or LocalStack, and database users with passwords of their
//! own for the secrets to hold. Every password made here joins the log scan.
//!
//! Isolation as in [`crate::aws`]: a test that uses moto holds it exclusively (other tests reset it); on LocalStack
//! each test keeps its secrets in an AWS account of its own and holds no lock.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::aws::{Aws, AwsApi, aws};
use crate::database::{administer, run_to_completion};
use crate::iam::{SECRET_ACCESS_KEY, aws_config};
use crate::{Backend, TestDatabase, logs};

/// An AWS account on moto or LocalStack to keep secrets in.
#[derive(Debug)]
pub struct SecretsManager {
    endpoint: String,
    access_key_id: String,
    client: Client,
    /// Exclusive use of moto, when the secrets are kept there.
    _moto: Option<Aws>,
}

impl SecretsManager {
    /// An account of the test's own on `api`; fails loudly when it is not running.
    pub async fn start(api: AwsApi) -> Self {
        let (endpoint, access_key_id, moto) = match api {
            AwsApi::Moto => {
                let moto = aws(AwsApi::Moto).await;
                (moto.endpoint.clone(), moto.access_key_id.clone(), Some(moto))
            }
            AwsApi::LocalStack => {
                let endpoint = test_servers::localstack().await;
                require_localstack_secrets_manager(&endpoint).await;
                // LocalStack files everything under the account that a 12-digit access key id names.
                let account = 100_000_000_000 + u64::from(Uuid::new_v4().as_fields().0) % 900_000_000_000;
                (endpoint, account.to_string(), None)
            }
        };
        Self {
            client: Client::new(&sdk_config_at(&endpoint, &access_key_id).await),
            endpoint,
            access_key_id,
            _moto: moto,
        }
    }

    /// An AWS configuration for this account, every service at the emulator: what the service is given.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_at(&self.endpoint, &self.access_key_id).await
    }

    /// A new secret holding `contents`, with a name of the test's own.
    pub async fn create_secret(&self, contents: &str) -> TestSecret {
        let name = format!("tasks/test-{}", Uuid::new_v4().simple());
        let created = self
            .client
            .create_secret()
            .name(&name)
            .secret_string(contents)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "create the secret at {}: {}",
                    self.endpoint,
                    aws_sdk_secretsmanager::error::DisplayErrorContext(error)
                )
            });
        TestSecret {
            arn: created.arn().expect("a secret's ARN").to_owned(),
            name,
            client: self.client.clone(),
        }
    }
}

async fn sdk_config_at(endpoint: &str, access_key_id: &str) -> SdkConfig {
    aws_config(access_key_id, SECRET_ACCESS_KEY)
        .await
        .into_builder()
        .endpoint_url(endpoint)
        .build()
}

/// Panics with how to start LocalStack unless it answers with Secrets Manager available.
async fn require_localstack_secrets_manager(endpoint: &str) {
    let health: Result<Value, reqwest::Error> = async {
        reqwest::get(format!("{endpoint}/_localstack/health"))
            .await?
            .error_for_status()?
            .json()
            .await
    }
    .await;
    match health {
        Ok(health)
            if matches!(
                health["services"]["secretsmanager"].as_str(),
                Some("available" | "running")
            ) => {}
        outcome => panic!(
            "LocalStack at {endpoint} must serve Secrets Manager for this test (one the tests start does; one started \
             by hand needs SERVICES=sts,iam,secretsmanager); it answered {outcome:?}"
        ),
    }
}

/// A secret in Secrets Manager.
#[derive(Debug)]
pub struct TestSecret {
    pub arn: String,
    pub name: String,
    client: Client,
}

impl TestSecret {
    /// Deletes the secret at once, without the recovery window: from now on fetching it fails.
    pub async fn delete(&self) {
        self.client
            .delete_secret()
            .secret_id(&self.arn)
            .force_delete_without_recovery(true)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "delete the secret: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(error)
                )
            });
    }

    /// Makes `contents` the secret's current value (`AWSCURRENT`), as the last step of a rotation does.
    pub async fn put(&self, contents: &str) {
        self.client
            .put_secret_value()
            .secret_id(&self.arn)
            .secret_string(contents)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "put a new value in the secret: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(error)
                )
            });
    }
}

/// A database user with a password of its own and every right on a test's database, on that database's server.
/// Dropped from the server when dropped: drop it after the database.
#[derive(Debug)]
pub struct PasswordUser {
    backend: Backend,
    admin_url: String,
    pub name: String,
    password: String,
}

impl PasswordUser {
    /// A new user of `database`.
    pub async fn create(database: &TestDatabase) -> Self {
        let user = Self {
            backend: database.backend(),
            admin_url: database.admin_url().to_owned(),
            name: format!("tasks_sm_{}", &Uuid::new_v4().simple().to_string()[..12]),
            password: new_password(),
        };
        let (name, password, database_name) = (&user.name, &user.password, database.name());
        let statements = if user.is_postgres() {
            // Owning the database, it may create the service's tables in its schema `public`.
            format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}'; ALTER DATABASE \"{database_name}\" OWNER TO {name}"
            )
        } else {
            format!(
                "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; GRANT ALL ON `{database_name}`.* TO '{name}'@'%'"
            )
        };
        administer(&user.admin_url, statements).await;
        user
    }

    /// A second user with the same rights and a password of its own, as RDS's alternating-users rotation makes
    /// (`NAME_clone`).
    pub async fn clone_user(&self, database: &TestDatabase) -> Self {
        let clone = Self {
            backend: self.backend,
            admin_url: self.admin_url.clone(),
            name: format!("{}_clone", self.name),
            password: new_password(),
        };
        let (name, password, original) = (&clone.name, &clone.password, &self.name);
        let statements = if clone.is_postgres() {
            // A member of the original role, so that it may use the tables the original created.
            format!("CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {original}")
        } else {
            format!(
                "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; GRANT ALL ON `{}`.* TO '{name}'@'%'",
                database.name()
            )
        };
        administer(&clone.admin_url, statements).await;
        clone
    }

    /// Gives the user a new password on the server, the first step of a rotation: from now on the old one is
    /// refused, though sessions opened with it carry on.
    pub async fn change_password(&mut self) {
        self.password = new_password();
        let (name, password) = (&self.name, &self.password);
        let statement = if self.is_postgres() {
            format!("ALTER ROLE {name} PASSWORD '{password}'")
        } else {
            format!("ALTER USER '{name}'@'%' IDENTIFIED BY '{password}'")
        };
        administer(&self.admin_url, statement).await;
    }

    /// What RDS keeps in a secret for this user of `database`: the engine, where the database is, the user and its
    /// current password.
    #[must_use]
    pub fn secret(&self, database: &TestDatabase) -> String {
        let url = url::Url::parse(database.url()).expect("the test database URL is a URL");
        json!({
            "engine": if self.is_postgres() { "postgres" } else { "mariadb" },
            "host": url.host_str(),
            "port": url.port().unwrap_or(if self.is_postgres() { 5432 } else { 3306 }),
            "dbname": database.name(),
            "username": self.name,
            "password": self.password,
        })
        .to_string()
    }

    fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres | Backend::PostgresSecrets)
    }
}

impl Drop for PasswordUser {
    fn drop(&mut self) {
        let statement = if self.is_postgres() {
            format!("DROP ROLE IF EXISTS {}", self.name)
        } else {
            format!("DROP USER IF EXISTS '{}'@'%'", self.name)
        };
        let admin_url = self.admin_url.clone();
        run_to_completion(async move { administer(&admin_url, statement).await });
    }
}

/// A new password, which the log scan looks for from now on.
fn new_password() -> String {
    let password = format!("sm-password-{}", Uuid::new_v4().simple());
    logs::forbid(&password);
    password
}

/// What the Secrets Manager backends log in with: a database user of the test's own, and the secret that holds its
/// password, in an AWS account of the test's own.
#[derive(Debug)]
pub struct SecretLogin {
    pub manager: SecretsManager,
    pub secret: TestSecret,
    /// Last, so that the user is dropped after what depends on it.
    pub user: PasswordUser,
}

impl SecretLogin {
    /// A new user of `database` and a new secret in `api` holding its password and whereabouts, as RDS would.
    pub async fn create(database: &TestDatabase, api: AwsApi) -> Self {
        let user = PasswordUser::create(database).await;
        let manager = SecretsManager::start(api).await;
        let secret = manager.create_secret(&user.secret(database)).await;
        Self { manager, secret, user }
    }
}
