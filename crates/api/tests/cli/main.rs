//! The `tasks-api` binary as operators use it, next to the database clients they already have: a token printed by
//! `tasks-api token` logs `psql` and `mariadb` in through the RDS IAM emulator, `tasks-api migrate` runs through the
//! same IAM provider as the service, and a shared-profile role (`role_arn` + `source_profile`, assumed through the STS
//! of moto and of LocalStack) works through the SDK's default chain with no code of ours.

mod shutdown;

use std::path::Path;
use std::process::Output;

use rds_iam_emulator::credentials::CredentialStore;
use rds_iam_emulator::testing::{EmulatorOptions, TestEmulator};
use tokio::process::Command;

const ACCESS_KEY_ID: &str = "AKIACLITESTKEY000001";
const SECRET_ACCESS_KEY: &str = "cli/test+secret";
const REGION: &str = "eu-central-1";
/// The database user the tests log in as: an IAM user, granted `rds_iam` as `tasks-api admin provision-db-user` does
/// on RDS.
const IAM_USER: &str = "tasks_cli_iam";

/// An emulator in front of `upstream` that knows [`ACCESS_KEY_ID`] in [`REGION`] and, given `sts_upstream`, also
/// accepts the temporary credentials that STS issues through it; [`IAM_USER`] is an IAM user there.
async fn start_emulator(upstream: &url::Url, sts_upstream: Option<&str>) -> TestEmulator {
    let mut credentials = CredentialStore::default();
    credentials.insert(ACCESS_KEY_ID.to_owned(), SECRET_ACCESS_KEY.to_owned(), None);
    let options = EmulatorOptions {
        region: REGION.to_owned(),
        sts_upstream: sts_upstream.map(str::to_owned),
        ..EmulatorOptions::default()
    };
    let emulator = TestEmulator::start(upstream.clone(), credentials, options).await;
    emulator.create_iam_user(IAM_USER).await;
    emulator
}

/// `tasks-api` with AWS credentials in the environment and nothing else of the developer's: no profile files, no
/// instance metadata service.
fn tasks_api(home: &Path) -> Command {
    let mut command = tasks_api_without_credentials(home);
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
    command
}

fn tasks_api_without_credentials(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tasks-api"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

fn succeeded(what: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed: {stderr}");
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

async fn token(emulator: &TestEmulator, user: &str) -> String {
    token_from(tasks_api(emulator.directory()), emulator, user).await
}

/// What `tasks-api token` prints for `user` at the emulator, run as `command`.
async fn token_from(mut command: Command, emulator: &TestEmulator, user: &str) -> String {
    let output = command
        .args(["token", "--host", "127.0.0.1", "--user", user, "--region", REGION])
        .args(["--port", &emulator.address.port().to_string()])
        .output()
        .await
        .expect("tasks-api runs");
    let token = succeeded("tasks-api token", &output);
    assert!(output.stderr.is_empty(), "the token is all it prints");
    token.trim_end().to_owned()
}

/// The client program `name`, failing loudly when it is not installed.
fn client(name: &str) -> Command {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "`{name}` must be installed for this test (postgresql-client, mariadb-client)"
    );
    Command::new(name)
}

#[tokio::test]
async fn psql_logs_in_through_the_emulator_with_a_token_from_tasks_api_token() {
    let upstream = postgres_server();
    let emulator = start_emulator(&upstream, None).await;
    let token = token(&emulator, IAM_USER).await;

    assert_eq!(psql_current_user(&emulator, IAM_USER, &token).await, IAM_USER);
    assert_eq!(emulator.counts.accepted(), 1);
}

#[tokio::test]
async fn psql_logs_in_to_the_emulator_in_dsql_mode_with_tokens_from_tasks_api_token_dsql() {
    let upstream = postgres_server();
    let mut credentials = CredentialStore::default();
    credentials.insert(ACCESS_KEY_ID.to_owned(), SECRET_ACCESS_KEY.to_owned(), None);
    let options = EmulatorOptions {
        region: REGION.to_owned(),
        dsql: true,
        ..EmulatorOptions::default()
    };
    let emulator = TestEmulator::start(upstream, credentials, options).await;
    // DSQL's two kinds of role: `admin`, which every cluster has, and a custom one.
    emulator
        .administer(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'admin') THEN CREATE ROLE admin LOGIN; \
             END IF; END $$",
        )
        .await;
    emulator.create_iam_user(IAM_USER).await;
    let dsql_token = |admin: bool| {
        let mut command = tasks_api(emulator.directory());
        // DSQL tokens name the host alone, and the emulator's is its listen address's.
        command.args(["token", "--dsql", "--host", "127.0.0.1", "--region", REGION]);
        if admin {
            command.arg("--admin");
        }
        async move {
            let output = command.output().await.expect("tasks-api runs");
            let token = succeeded("tasks-api token --dsql", &output);
            assert!(output.stderr.is_empty(), "the token is all it prints");
            token.trim_end().to_owned()
        }
    };
    let admin_token = dsql_token(true).await;
    assert!(admin_token.contains("Action=DbConnectAdmin&"), "an admin token");
    assert!(admin_token.contains("%2Fdsql%2Faws4_request"), "signed for dsql");

    assert_eq!(psql_current_user(&emulator, "admin", &admin_token).await, "admin");
    assert_eq!(
        psql_current_user(&emulator, IAM_USER, &dsql_token(false).await).await,
        IAM_USER
    );
    assert_eq!(emulator.counts.accepted(), 2);
}

/// Logs in with `psql` as `user` with `token`, verifying the emulator's certificate, and asks who it is.
async fn psql_current_user(emulator: &TestEmulator, user: &str, token: &str) -> String {
    let connection = format!(
        "host=127.0.0.1 port={} user={user} dbname=postgres sslmode=verify-full sslrootcert={}",
        emulator.address.port(),
        emulator.ca_pem().display()
    );
    let output = client("psql")
        .args([connection.as_str(), "-tAc", "SELECT current_user"])
        .env("PGPASSWORD", token)
        .output()
        .await
        .expect("psql runs");
    succeeded("psql", &output).trim().to_owned()
}

/// The PostgreSQL to put the emulator in front of.
fn postgres_server() -> url::Url {
    test_servers::postgres().parse().expect("a server URL")
}

#[tokio::test]
async fn a_shared_profile_role_signs_tokens_through_the_default_chain_with_motos_sts() {
    let moto = test_servers::moto().await;
    a_shared_profile_role_signs_tokens_through_the_default_chain(&moto, "AKIAPROFILEBASE00001", "123456789012").await;
}

#[tokio::test]
async fn a_shared_profile_role_signs_tokens_through_the_default_chain_with_localstacks_sts() {
    let localstack = test_servers::localstack().await;
    // LocalStack files requests under the account a 12-digit access key id names.
    a_shared_profile_role_signs_tokens_through_the_default_chain(&localstack, "210987654321", "210987654321").await;
}

/// `tasks-api token` with a profile that assumes a role of `account` from a source profile whose key is
/// `base_access_key_id`, with STS at `sts` (reached through the emulator's STS pass-through).
async fn a_shared_profile_role_signs_tokens_through_the_default_chain(
    sts: &str,
    base_access_key_id: &str,
    account: &str,
) {
    let upstream = postgres_server();
    let emulator = start_emulator(&upstream, Some(sts)).await;
    let through = emulator.sts.as_deref().expect("an STS pass-through");
    let config = emulator.directory().join("config");
    let credentials = emulator.directory().join("credentials");
    std::fs::write(
        &config,
        format!(
            "[profile tasks]\nrole_arn = arn:aws:iam::{account}:role/tasks-db-access\nsource_profile = base\n\
             role_session_name = from-shared-profile\nendpoint_url = {through}\n\n[profile base]\nendpoint_url = {through}\n"
        ),
    )
    .expect("write the config file");
    std::fs::write(
        &credentials,
        format!("[base]\naws_access_key_id = {base_access_key_id}\naws_secret_access_key = profile/base+secret\n"),
    )
    .expect("write the credentials file");
    let mut command = tasks_api_without_credentials(emulator.directory());
    command
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_PROFILE", "tasks");

    let token = token_from(command, &emulator, IAM_USER).await;

    assert!(
        token.contains("X-Amz-Security-Token="),
        "signed with temporary credentials"
    );
    assert!(
        !token.contains(base_access_key_id),
        "not with the source profile's own key"
    );
    assert_eq!(psql_current_user(&emulator, IAM_USER, &token).await, IAM_USER);
    assert_eq!(
        emulator.counts.accepted(),
        1,
        "the emulator verified it with the secret STS issued"
    );
}

#[tokio::test]
async fn mariadb_logs_in_with_a_token_and_tasks_api_migrate_runs_through_iam() {
    let upstream = test_servers::mariadb().parse().expect("a server URL");
    let emulator = start_emulator(&upstream, None).await;
    let user = IAM_USER;
    let token = token(&emulator, user).await;
    let database = format!("tasks_cli_{}", uuid::Uuid::new_v4().simple());
    // The IAM user may create and drop the tests' databases: one grant for all of them (`_` escaped, as it is a
    // wildcard), as MySQL keeps a grant on a database after the database is dropped.
    emulator
        .administer(&format!("GRANT ALL ON `tasks\\_cli\\_%`.* TO '{user}'@'%'"))
        .await;
    let mariadb = |password: &str, statement: &str| {
        let mut command = client("mariadb");
        command
            .args(["-h", "127.0.0.1", "-u", user, "-N", "-e", statement])
            .args(["-P", &emulator.address.port().to_string()])
            .arg(format!("--password={password}"))
            .arg(format!("--ssl-ca={}", emulator.ca_pem().display()))
            .arg("--ssl-verify-server-cert");
        command
    };

    let output = mariadb(&token, &format!("CREATE DATABASE {database}; SELECT CURRENT_USER()"))
        .output()
        .await
        .expect("mariadb runs");
    assert!(succeeded("mariadb", &output).starts_with(&format!("{user}@")));

    let migrate = |action: &'static str| {
        let mut command = tasks_api(emulator.directory());
        command
            .args(["migrate", action])
            .env("APP__DATABASE__URL", emulator.url(user, &database))
            .env("APP__DATABASE__AUTH", "iam")
            .env("APP__DATABASE__IAM__REGION", REGION)
            .env("APP__DATABASE__TLS__ROOT_CERT", emulator.ca_pem());
        command
    };
    let up = migrate("up").output().await.expect("tasks-api migrate runs");
    let status = migrate("status").output().await.expect("tasks-api migrate runs");
    let tables = mariadb(&token, &format!("SHOW TABLES FROM {database} LIKE 'tasks'"))
        .output()
        .await
        .expect("mariadb runs");
    let dropped = mariadb(&token, &format!("DROP DATABASE {database}")).output().await;

    assert!(succeeded("tasks-api migrate up", &up).contains("applied"));
    for logs in [&up.stderr, &status.stderr] {
        let logs = String::from_utf8_lossy(logs);
        assert!(
            !logs.contains("X-Amz-Signature") && !logs.contains(SECRET_ACCESS_KEY),
            "{logs}"
        );
    }
    let status = succeeded("tasks-api migrate status", &status);
    assert!(status.contains("applied") && !status.contains("pending"), "{status}");
    assert_eq!(succeeded("mariadb", &tables).trim(), "tasks");
    assert!(dropped.is_ok_and(|output| output.status.success()));
    assert!(emulator.counts.accepted() >= 5, "every session came in with a token");
    assert_eq!(emulator.counts.refused(), 0);
}

#[tokio::test]
async fn every_admin_command_explains_itself_and_takes_exactly_one_database() {
    let home = std::env::temp_dir();
    for command in ["iam-policy", "enable-iam", "provision-db-user"] {
        let output = tasks_api(&home)
            .args(["admin", command, "--help"])
            .output()
            .await
            .expect("tasks-api runs");
        let help = succeeded(command, &output);
        assert!(help.contains("Usage: tasks-api admin"), "{help}");
    }
    let both = tasks_api(&home)
        .args(["admin", "enable-iam", "--cluster-id", "a", "--instance-id", "b"])
        .output()
        .await
        .expect("tasks-api runs");
    let neither = tasks_api(&home)
        .args(["admin", "iam-policy", "--db-user", "u"])
        .output()
        .await
        .expect("tasks-api runs");

    for refused in [both, neither] {
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("--cluster-id") && stderr.contains("--instance-id"),
            "{stderr}"
        );
    }
}
