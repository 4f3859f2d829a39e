//! `admin provision-db-user` against the real servers: the user gets exactly what the service needs on `tasks`, RDS-only
//! steps are skipped with a word where the server is not RDS, and running it again changes nothing.

use admin::AdminError;
use test_support::{Backend, TestDatabase, spawn_app};

/// A user name of the test's own, as roles and MySQL accounts are server-wide.
fn test_user() -> String {
    format!("tasks_app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn a_postgres_user_gets_dml_on_tasks_only_and_a_second_run_changes_nothing() {
    let app = spawn_app(Backend::Postgres).await;
    let user = test_user();

    let first = admin::provision_db_user(app.database.url(), &user)
        .await
        .expect("provisioned");
    let second = admin::provision_db_user(app.database.url(), &user)
        .await
        .expect("idempotent");

    assert!(first.iter().any(|step| step.starts_with("created role")), "{first:?}");
    assert!(
        first.iter().any(|step| step.contains("skipped GRANT rds_iam")),
        "{first:?}"
    );
    assert!(second.iter().any(|step| step.ends_with("exists")), "{second:?}");
    let privilege =
        |privilege: &str| format!("SELECT has_table_privilege('{user}', 'tasks', '{privilege}')::int::bigint");
    for granted in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        assert_eq!(app.database.scalar(privilege(granted)).await, 1, "{granted}");
    }
    for withheld in ["TRUNCATE", "REFERENCES", "TRIGGER"] {
        assert_eq!(app.database.scalar(privilege(withheld)).await, 0, "{withheld}");
    }
    let powers = format!(
        "SELECT (rolsuper OR rolcreatedb OR rolcreaterole)::int::bigint FROM pg_roles WHERE rolname = '{user}'"
    );
    assert_eq!(app.database.scalar(powers).await, 0);
    let may_create = format!("SELECT has_schema_privilege('{user}', 'public', 'CREATE')::int::bigint");
    assert_eq!(app.database.scalar(may_create).await, 0, "no DDL");
    app.database
        .execute(format!("DROP OWNED BY {user}; DROP ROLE {user}"))
        .await;
}

#[tokio::test]
async fn a_mariadb_user_must_exist_where_the_server_is_not_rds_then_gets_dml_on_tasks_only() {
    let app = spawn_app(Backend::MariaDb).await;
    let user = test_user();

    let refused = admin::provision_db_user(app.database.url(), &user).await;
    app.database.execute(format!("CREATE USER '{user}'@'%'")).await;
    let granted = admin::provision_db_user(app.database.url(), &user)
        .await
        .expect("granted");
    let again = admin::provision_db_user(app.database.url(), &user)
        .await
        .expect("idempotent");

    let refused = refused.expect_err("no AWSAuthenticationPlugin here");
    assert!(matches!(refused, AdminError::NoAwsPlugin(_)), "{refused}");
    assert!(
        granted
            .iter()
            .any(|step| step.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON tasks")),
        "{granted:?}"
    );
    assert_eq!(granted.len(), again.len());
    let table_privileges = format!(
        "SELECT COUNT(*) FROM information_schema.table_privileges WHERE grantee = \"'{user}'@'%'\" \
         AND table_name = 'tasks'"
    );
    assert_eq!(app.database.scalar(table_privileges).await, 4);
    let elsewhere = format!(
        "SELECT (SELECT COUNT(*) FROM information_schema.schema_privileges WHERE grantee = \"'{user}'@'%'\") + \
         (SELECT COUNT(*) FROM information_schema.user_privileges WHERE grantee = \"'{user}'@'%'\" \
          AND privilege_type <> 'USAGE')"
    );
    assert_eq!(app.database.scalar(elsewhere).await, 0, "nothing beyond the table");
    app.database.execute(format!("DROP USER '{user}'@'%'")).await;
}

#[tokio::test]
async fn provisioning_before_the_migrations_says_to_run_them_first() {
    let database = TestDatabase::create(Backend::Postgres).await;

    let error = admin::provision_db_user(database.url(), &test_user())
        .await
        .expect_err("no table yet");

    assert!(matches!(error, AdminError::NoTasksTable), "{error}");
    assert!(error.to_string().contains("tasks-api migrate up"));
}

#[tokio::test]
async fn user_names_that_could_break_out_of_quotes_are_refused() {
    for name in ["", "a\"b", "a'b", "a`b", "a\\b", "line\nbreak", &"x".repeat(64)] {
        let error = admin::provision_db_user("postgres://127.0.0.1/none", name)
            .await
            .expect_err(name);
        assert!(matches!(error, AdminError::UserName), "{name:?}: {error}");
    }
}
