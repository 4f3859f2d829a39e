//! Logging in with a Secrets Manager secret, against moto and against LocalStack: start-up from the secret, clear
//! errors for a secret that is missing or of the wrong shape, and rotations (of the password, of the user) that cost
//! no request. The whole HTTP suite also runs through this path (`on_secrets_backends!`, over LocalStack).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::aws::AwsApi;
use test_support::drills::{Load, ScratchPostgres};
use test_support::{Backend, LogCapture, Stack, TestApp, TestDatabase};

use crate::drills::assert_nothing_lost;
use crate::iam::refused_start;

/// Generates the tests that run once against each AWS API emulator.
macro_rules! secrets_manager_tests {
    ($module:ident, $api:ident) => {
        mod $module {
            use test_support::Backend;
            use test_support::aws::AwsApi;

            #[tokio::test]
            async fn the_service_starts_from_a_secret_that_says_where_the_database_is_on_postgres() {
                super::the_service_starts_from_a_secret_that_says_where_the_database_is(
                    AwsApi::$api,
                    Backend::PostgresSecrets,
                )
                .await;
            }

            #[tokio::test]
            async fn the_service_starts_from_a_secret_that_says_where_the_database_is_on_mariadb() {
                super::the_service_starts_from_a_secret_that_says_where_the_database_is(
                    AwsApi::$api,
                    Backend::MariaDbSecrets,
                )
                .await;
            }

            #[tokio::test]
            async fn a_secret_that_does_not_exist_stops_the_start_and_names_it_and_its_setting() {
                super::a_secret_that_does_not_exist_stops_the_start_and_names_it_and_its_setting(AwsApi::$api).await;
            }

            #[tokio::test]
            async fn a_secret_of_the_wrong_shape_stops_the_start_without_being_repeated() {
                super::a_secret_of_the_wrong_shape_stops_the_start_without_being_repeated(AwsApi::$api).await;
            }
        }
    };
}

secrets_manager_tests!(moto, Moto);
secrets_manager_tests!(localstack, LocalStack);

/// Rotation under load: PostgreSQL on a cluster of the test's own that checks passwords, with the secret in
/// LocalStack; MariaDB, which checks them, with the secret in moto. Each emulator and each engine once.
#[tokio::test]
async fn a_password_rotated_under_load_costs_no_request_on_postgres() {
    let cluster = ScratchPostgres::start();
    cluster.require_passwords();
    let database = TestDatabase::create_on(Backend::PostgresSecrets, cluster.admin_url(), "tasks_rotation_").await;
    a_password_rotated_under_load_costs_no_request(Stack::over_with_secret(database, AwsApi::LocalStack).await).await;
}

#[tokio::test]
async fn a_password_rotated_under_load_costs_no_request_on_mariadb() {
    let database = TestDatabase::create(Backend::MariaDbSecrets).await;
    a_password_rotated_under_load_costs_no_request(Stack::over_with_secret(database, AwsApi::Moto).await).await;
}

backend_tests!(postgres_secrets, PostgresSecrets;
    a_rotation_to_the_other_user_moves_new_sessions_to_it,
    a_secret_that_can_no_longer_be_fetched_is_ridden_out_on_the_last_good_password
);
backend_tests!(mariadb_secrets, MariaDbSecrets;
    a_rotation_to_the_other_user_moves_new_sessions_to_it,
    a_secret_that_can_no_longer_be_fetched_is_ridden_out_on_the_last_good_password
);

/// Starts the service on `stack`, failing the test if it does not start.
async fn start(stack: Stack, overrides: &[(&str, &str)]) -> TestApp {
    let settings = stack.settings(overrides);
    match stack.start(settings, None).await {
        Ok(app) => app,
        Err((error, _)) => panic!("the application must start: {}", rds_iam::error_chain(&error)),
    }
}

/// How many sessions `user` has open on the database's server.
async fn sessions_of(database: &TestDatabase, user: &str) -> i64 {
    database
        .scalar(match database.backend() {
            Backend::PostgresSecrets => format!("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = '{user}'"),
            _ => format!("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{user}'"),
        })
        .await
}

/// The secret's user as the service logs in: the one the user and password come from.
fn secret_user(app: &TestApp) -> String {
    app.login.as_ref().expect("a secret").user.name.clone()
}

async fn the_service_starts_from_a_secret_that_says_where_the_database_is(api: AwsApi, backend: Backend) {
    let stack = Stack::over_with_secret(TestDatabase::create(backend).await, api).await;
    // The URL is the engine alone (`postgres://`, `mysql://`): host, port and database come from the secret.
    let app = start(stack, &[]).await;

    let id = app.create_task("from a secret").await;
    let renamed = app.put_task(id, &json!({ "name": "from a secret, renamed" })).await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(app.read_task(id).await.name, "from a secret, renamed");
    let listed: Vec<Value> = app.get("/tasks").await.json().await.expect("a list");
    assert_eq!(listed.len(), 1);
    assert_eq!(app.delete_task(id).await.status(), 204);
    assert_eq!(app.database.count_tasks().await, 0);
    assert!(
        sessions_of(&app.database, &secret_user(&app)).await >= 1,
        "the service works as the secret's user"
    );
}

async fn a_secret_that_does_not_exist_stops_the_start_and_names_it_and_its_setting(api: AwsApi) {
    let stack = Stack::over_with_secret(TestDatabase::create(Backend::PostgresSecrets).await, api).await;
    let missing = "tasks/no-such-secret";

    let (error, stack) = refused_start(stack, &[("APP__DATABASE__SECRET_ID", missing)], None).await;

    assert!(
        error.contains(&format!("`{missing}`"))
            && error.contains("APP__DATABASE__SECRET_ID")
            && error.contains("ResourceNotFoundException"),
        "{error}"
    );
    assert_eq!(stack.database.count_tables().await, 0);
}

async fn a_secret_of_the_wrong_shape_stops_the_start_without_being_repeated(api: AwsApi) {
    let stack = Stack::over_with_secret(TestDatabase::create(Backend::MariaDbSecrets).await, api).await;
    let login = stack.login.as_ref().expect("a secret");
    let mut misnamed: Value = serde_json::from_str(&login.user.secret(&stack.database)).expect("JSON");
    let password = misnamed["password"].as_str().expect("a password").to_owned();
    let fields = misnamed.as_object_mut().expect("an object");
    fields.remove("password");
    fields.insert("passwd".to_owned(), Value::String(password.clone()));
    // The two usual mistakes: the password under another name, and the password alone instead of RDS's JSON.
    let cases = [
        (misnamed.to_string(), "`password` is missing"),
        (password.clone(), "not a JSON object"),
    ];

    let mut stack = stack;
    for (contents, problem) in cases {
        stack.login.as_ref().expect("a secret").secret.put(&contents).await;
        let (error, refused) = refused_start(stack, &[], None).await;
        stack = refused;

        assert!(
            error.contains(problem) && error.contains("APP__DATABASE__SECRET_ID") && error.contains("RDS's shape"),
            "{error}"
        );
        assert!(!error.contains(&password), "the secret is never repeated: {error}");
        assert_eq!(stack.database.count_tables().await, 0);
    }
}

/// 16 clients for 10 s; 3 s in, the user's password is changed on the server, and 3 s later the secret gets the new
/// one: the gap a rotation function leaves between setting the password and making it current (separate steps, each
/// its own Lambda invocation). Connections live 2 s, so by the end of the gap none opened before the change is left:
/// requests need new log-ins, which the server refuses until the secret catches up. Each refused request waits for
/// the secret to change (within the acquire time-out) and runs again.
async fn a_password_rotated_under_load_costs_no_request(stack: Stack) {
    let refusals = LogCapture::containing(stack.login.as_ref().expect("a secret").user.name.clone());
    let mut app = start(stack, &[("APP__DATABASE__MAX_LIFETIME_SECS", "2")]).await;
    let load = Load::start(&app.address, 16);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let login = app.login.as_mut().expect("a secret");
    login.user.change_password().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    login.secret.put(&login.user.secret(&app.database)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tally = load.finish().await;

    assert_nothing_lost(&app.database, &tally).await;
    let retried = refusals
        .events()
        .into_iter()
        .filter(|event| event.contains("retried and succeeded"))
        .count();
    assert!(retried >= 1, "the old password was refused and requests ran again");
}

/// RDS's alternating-users rotation: the secret moves to a second user (the first keeps working until the next
/// rotation changes its password). New connections log in as the secret's new user, though the connect options
/// named the first one.
async fn a_rotation_to_the_other_user_moves_new_sessions_to_it(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut app = start(
        stack,
        &[
            ("APP__DATABASE__SECRET_REFRESH_SECS", "1"),
            ("APP__DATABASE__MAX_LIFETIME_SECS", "2"),
        ],
    )
    .await;
    app.create_task("as the first user").await;

    let login = app.login.as_mut().expect("a secret");
    let clone = login.user.clone_user(&app.database).await;
    login.secret.put(&clone.secret(&app.database)).await;
    let moved_by = Instant::now() + Duration::from_secs(15);
    while sessions_of(&app.database, &clone.name).await == 0 {
        assert!(
            Instant::now() < moved_by,
            "no session of the new user 15 s after the rotation"
        );
        app.create_task("during the move").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The next rotation changes the first user's password: the service no longer needs it.
    let login = app.login.as_mut().expect("a secret");
    login.user.change_password().await;
    let replaced_by = Instant::now() + Duration::from_secs(3);
    while Instant::now() < replaced_by {
        let id = app.create_task("as the second user").await;
        assert_eq!(app.read_task(id).await.name, "as the second user");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(sessions_of(&app.database, &clone.name).await >= 1);
    // The database (and with it the sessions) goes first, then the second user.
    drop(app);
    drop(clone);
}

/// The secret becomes impossible to fetch (deleted, as an expired permission or an outage would make it): renewal
/// fails and is retried, and new connections keep logging in with the last good password.
async fn a_secret_that_can_no_longer_be_fetched_is_ridden_out_on_the_last_good_password(backend: Backend) {
    let stack = Stack::new(backend).await;
    let failures = LogCapture::containing(stack.login.as_ref().expect("a secret").secret.arn.clone());
    let app = start(
        stack,
        &[
            ("APP__DATABASE__SECRET_REFRESH_SECS", "1"),
            ("APP__DATABASE__MAX_LIFETIME_SECS", "2"),
        ],
    )
    .await;

    app.login.as_ref().expect("a secret").secret.delete().await;
    // Every connection is replaced at least once meanwhile, with the last good password.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let id = app.create_task("while the secret is gone").await;
        assert_eq!(app.read_task(id).await.name, "while the secret is gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let failed_renewals = failures
        .events()
        .into_iter()
        .filter(|event| event.contains("WARN") && event.contains("renewing the credential failed"))
        .count();
    assert!(failed_renewals >= 1, "renewal was tried and failed");
    assert_eq!(app.readiness().await.status, "ready");
}
