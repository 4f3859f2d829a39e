//! `admin provision-db-user` against the real servers: the user gets exactly what the service needs on `tasks`, and
//! `rds_iam` where the role exists (behind the RDS IAM emulator, which creates it, as on RDS), and running it again
//! changes nothing. The local PostgreSQL offers TLS (with a certificate nobody can verify), so its tests run with the
//! default, `require`; the local MariaDB has no TLS, so its URLs turn TLS off in writing.

use admin::AdminError;
use rds_iam::TlsMode;
use test_support::{Backend, TestDatabase, spawn_app};

/// A user name of the test's own, as roles and MySQL accounts are server-wide.
fn test_user() -> String {
    format!("tasks_app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn a_postgres_user_gets_rds_iam_and_dml_on_tasks_only_and_a_second_run_changes_nothing() {
    let app = spawn_app(Backend::PostgresIam).await;
    let user = test_user();

    let first = admin::provision_db_user(app.database.url(), &user)
        .await
        .expect("provisioned");
    let second = admin::provision_db_user(app.database.url(), &user)
        .await
        .expect("idempotent");

    assert!(first.iter().any(|step| step.starts_with("created role")), "{first:?}");
    assert!(
        first.iter().any(|step| step.starts_with("granted rds_iam")),
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
    let iam_user = format!("SELECT pg_has_role('{user}', 'rds_iam', 'MEMBER')::int::bigint");
    assert_eq!(app.database.scalar(iam_user).await, 1);
    app.database
        .execute(format!("DROP OWNED BY {user}; DROP ROLE {user}"))
        .await;
}

#[tokio::test]
async fn a_mariadb_user_must_exist_where_the_server_is_not_rds_then_gets_rds_iam_and_dml_on_tasks_only() {
    let app = spawn_app(Backend::MariaDbIam).await;
    let user = test_user();
    let admin_url = without_tls(app.database.url());

    let refused = admin::provision_db_user(&admin_url, &user).await;
    app.database.execute(format!("CREATE USER '{user}'@'%'")).await;
    let granted = admin::provision_db_user(&admin_url, &user).await.expect("granted");
    let again = admin::provision_db_user(&admin_url, &user).await.expect("idempotent");

    let refused = refused.expect_err("no AWSAuthenticationPlugin here");
    assert!(matches!(refused, AdminError::NoAwsPlugin(_)), "{refused}");
    assert!(
        granted
            .iter()
            .any(|step| step.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON tasks")),
        "{granted:?}"
    );
    assert!(
        granted.iter().any(|step| step.starts_with("granted rds_iam")),
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
    let iam_user = format!("SELECT COUNT(*) FROM mysql.roles_mapping WHERE user = '{user}' AND role = 'rds_iam'");
    assert_eq!(app.database.scalar(iam_user).await, 1);
    app.database.execute(format!("DROP USER '{user}'@'%'")).await;
}

/// `url` with TLS turned off in writing, for the local MariaDB, which has none.
fn without_tls(url: &str) -> String {
    format!("{url}?ssl-mode=DISABLED")
}

#[tokio::test]
async fn the_admin_connection_requires_tls_unless_its_url_turns_it_off_in_writing() {
    let app = spawn_app(Backend::MariaDb).await;
    let user = test_user();
    app.database.execute(format!("CREATE USER '{user}'@'%'")).await;

    let no_tls_offered = admin::provision_db_user(app.database.url(), &user).await;
    let prefer = admin::provision_db_user(&format!("{}?ssl-mode=PREFERRED", app.database.url()), &user).await;
    let disabled_in_writing = admin::provision_db_user(&without_tls(app.database.url()), &user).await;

    let no_tls_offered = no_tls_offered.expect_err("the server offers no TLS");
    assert!(
        matches!(
            no_tls_offered,
            AdminError::Connect {
                mode: TlsMode::Require,
                ..
            }
        ),
        "{no_tls_offered}"
    );
    let prefer = prefer.expect_err("prefer could fall back to no TLS");
    assert!(matches!(prefer, AdminError::TlsNotRequired), "{prefer}");
    disabled_in_writing.expect("TLS turned off on purpose");
    app.database.execute(format!("DROP USER '{user}'@'%'")).await;
}

#[tokio::test]
async fn privileged_postgres_roles_are_refused_and_left_unchanged() {
    let app = spawn_app(Backend::Postgres).await;
    let (may_create_databases, member_of_superuser) = (test_user(), test_user());
    app.database
        .execute(format!(
            "CREATE ROLE {may_create_databases} LOGIN CREATEDB; CREATE ROLE {member_of_superuser} LOGIN; \
             GRANT postgres TO {member_of_superuser}"
        ))
        .await;

    // `postgres` is also the user the admin URL connects as: the master user, on RDS.
    for role in ["postgres", &may_create_databases, &member_of_superuser] {
        let refused = admin::provision_db_user(app.database.url(), role).await;

        let refused = refused.expect_err(role);
        assert!(matches!(refused, AdminError::PrivilegedUser(_)), "{role}: {refused}");
    }
    // The other two hold every privilege already, as a superuser and as a member of one.
    let granted = format!("SELECT has_table_privilege('{may_create_databases}', 'tasks', 'SELECT')::int::bigint");
    assert_eq!(app.database.scalar(granted).await, 0, "nothing granted");
    app.database
        .execute(format!(
            "DROP ROLE {may_create_databases}; DROP ROLE {member_of_superuser}"
        ))
        .await;
}

#[tokio::test]
async fn privileged_mariadb_users_are_refused_and_left_unchanged() {
    let app = spawn_app(Backend::MariaDb).await;
    let (may_grant, superuser) = (test_user(), test_user());
    let name = app.database.name().to_owned();
    app.database
        .execute(format!(
            "CREATE USER '{may_grant}'@'%'; GRANT SELECT ON {name}.* TO '{may_grant}'@'%' WITH GRANT OPTION; \
             CREATE USER '{superuser}'@'%'; GRANT SUPER ON *.* TO '{superuser}'@'%';"
        ))
        .await;
    let admin_url = without_tls(app.database.url());

    // `root` is also the user the admin URL connects as.
    for user in ["root", &may_grant, &superuser] {
        let refused = admin::provision_db_user(&admin_url, user).await;

        let refused = refused.expect_err(user);
        assert!(matches!(refused, AdminError::PrivilegedUser(_)), "{user}: {refused}");
    }
    let table_privileges = format!(
        "SELECT COUNT(*) FROM information_schema.table_privileges WHERE table_schema = '{name}' AND table_name = 'tasks'"
    );
    assert_eq!(app.database.scalar(table_privileges).await, 0, "nothing granted");
    app.database
        .execute(format!("DROP USER '{may_grant}'@'%'; DROP USER '{superuser}'@'%';"))
        .await;
}

#[tokio::test]
async fn a_database_name_with_quotes_is_quoted_as_an_identifier() {
    let database = TestDatabase::create_named(Backend::Postgres, "tasks \"quoted\" ").await;
    database
        .execute("CREATE TABLE tasks (id uuid PRIMARY KEY, name varchar(255) NOT NULL)".to_owned())
        .await;
    let user = test_user();

    let granted = admin::provision_db_user(database.url(), &user).await;

    granted.expect("granted");
    let connect = format!("SELECT has_database_privilege('{user}', current_database(), 'CONNECT')::int::bigint");
    assert_eq!(database.scalar(connect).await, 1);
    database
        .execute(format!("DROP OWNED BY {user}; DROP ROLE {user}"))
        .await;
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
    // 32 characters, but 64 bytes: past PostgreSQL's limit of 63 bytes.
    let long_in_bytes = "é".repeat(32);
    for name in [
        "",
        "a\"b",
        "a'b",
        "a`b",
        "a\\b",
        "line\nbreak",
        &"x".repeat(64),
        &long_in_bytes,
    ] {
        let error = admin::provision_db_user("postgres://127.0.0.1/none", name)
            .await
            .expect_err(name);
        assert!(matches!(error, AdminError::UserName), "{name:?}: {error}");
    }
}
