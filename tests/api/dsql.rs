//! Aurora DSQL through the emulator in DSQL mode (the whole HTTP suite also runs this way, as `postgres_dsql`): the
//! cluster named by its id and region, optimistic-concurrency conflicts retried without a failed request or a lost or
//! duplicated write, and migrations that never put DDL in a transaction with anything else.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use test_support::drills::{Load, ScratchPostgres};
use test_support::iam::DSQL_ROLE;
use test_support::{Backend, EmulatorOptions, Stack, TestDatabase, TestEmulator};

use crate::drills::assert_nothing_lost;

const CLIENTS: usize = 16;

/// With `database.dsql.cluster_id` and `database.iam.region` the service signs for `CLUSTER.dsql.REGION.on.aws`
/// (which the emulator insists on), logs in as `admin` (no user in the URL), and reaches the emulator through the
/// tunnel, since that name does not resolve here.
#[tokio::test]
async fn a_cluster_id_and_region_name_the_endpoint_and_the_role_defaults_to_admin() {
    let cluster_id = "kaabtu3ivgyiv7yeqqqzxcvfne";
    let options = EmulatorOptions {
        region: "eu-west-1".to_owned(),
        endpoint: Some(format!("{cluster_id}.dsql.eu-west-1.on.aws")),
        ..EmulatorOptions::default()
    };
    let stack = Stack::with_emulator(Backend::PostgresDsql, options).await;
    let url = format!("postgres:///{}", stack.database.name());
    let tunnel = stack.emulator().address.to_string();
    let settings = stack.settings(&[
        ("APP__DATABASE__URL", &url),
        ("APP__DATABASE__DSQL__CLUSTER_ID", cluster_id),
        ("APP__DATABASE__IAM__REGION", "eu-west-1"),
        ("APP__DATABASE__IAM__TUNNEL", &tunnel),
    ]);
    let app = match stack.start(settings, None).await {
        Ok(app) => app,
        Err((error, _)) => panic!("the service must start: {error}"),
    };

    let id = app.create_task("signed for the cluster").await;
    assert_eq!(app.read_task(id).await.name, "signed for the cluster");
    let emulator = app.emulator.as_ref().expect("an emulator");
    assert!(emulator.counts.accepted() >= 1);
    assert_eq!(emulator.counts.refused(), 0);
}

/// A tenth of the commits and autocommit writes answered with OC000 (and not carried out) while 16 clients create,
/// read, rename and delete tasks for 10 seconds: every conflict is retried whole, so no request fails, every
/// acknowledged write is stored once and nothing else is, and the retries counted by cause are the conflicts
/// injected, one for one.
#[tokio::test]
async fn occ_conflicts_on_a_tenth_of_commits_fail_no_request_and_lose_or_duplicate_no_write() {
    let options = EmulatorOptions {
        occ_conflict_rate: 0.1,
        ..EmulatorOptions::default()
    };
    let stack = Stack::with_emulator(Backend::PostgresDsql, options).await;
    // The migrations at start are not retried (a conflict stops the service, to be started again): conflicts begin
    // once it runs.
    stack.emulator().set_conflict_rate(0.0);
    let settings = stack.settings(&[]);
    let app = match stack.start(settings, None).await {
        Ok(app) => app,
        Err((error, _)) => panic!("the service must start: {error}"),
    };
    let emulator = app.emulator.as_ref().expect("an emulator");
    emulator.set_conflict_rate(0.1);

    let load = Load::start(&app.address, CLIENTS);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let tally = load.finish().await;
    emulator.set_conflict_rate(0.0);

    let injected = emulator.conflicts_injected();
    assert!(
        injected >= 10,
        "the drill must inject conflicts, and injected {injected}"
    );
    assert_nothing_lost(&app.database, &tally).await;
    let stored = app.database.stored_tasks().await;
    assert_eq!(
        stored.len(),
        tally.acknowledged.len(),
        "the rows stored are the acknowledged tasks, each once"
    );
    let metrics = app.get("/metrics").await.text().await.expect("the metrics");
    assert_eq!(retries(&metrics, "serialization_conflict"), injected, "{metrics}");
}

/// `db_retries_total` for `cause`, from a scrape.
fn retries(metrics: &str, cause: &str) -> u64 {
    let series = format!("db_retries_total{{pool=\"writer\",cause=\"{cause}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("no {series} in the scrape"))
}

/// The migrations applied, reverted and applied again through the emulator in DSQL mode, on a PostgreSQL of the
/// test's own that logs every statement of the role `admin` with its virtual transaction id: no transaction holds a
/// DDL statement beside any other statement (DSQL refuses DDL with DML, and more than one DDL). A transaction that
/// does mix them, run on purpose, is the one the check finds.
#[tokio::test]
async fn migrations_through_dsql_never_put_ddl_in_a_transaction_with_another_statement() {
    let cluster = ScratchPostgres::start();
    let upstream: url::Url = cluster.admin_url().parse().expect("a URL");
    let emulator = TestEmulator::start_on(upstream, Backend::PostgresDsql, EmulatorOptions::default()).await;
    emulator
        .administer(&format!("ALTER ROLE {DSQL_ROLE} SET log_statement = 'all'"))
        .await;
    emulator.administer("ALTER SYSTEM SET log_line_prefix = '%v|'").await;
    emulator.administer("SELECT pg_reload_conf()").await;
    wait_for_log_line_prefix(&cluster.admin_url(), "%v|").await;
    let database = TestDatabase::create_on(Backend::PostgresDsql, cluster.admin_url(), "tasks_dsql_log_").await;
    let stack = Stack {
        emulator: Some(emulator),
        ..Stack::over(database)
    };
    let settings = stack.settings(&[]);

    let service = infrastructure::Database::connect_with_aws(&settings.database, stack.known_aws().await)
        .await
        .expect("the service connects through the emulator in DSQL mode");
    service.migrate_up(None).await.expect("the migrations apply");
    service.migrate_down(None).await.expect("the last migration reverts");
    service.migrate_up(None).await.expect("the migrations apply again");
    service.close().await;
    // The control: DDL and DML in one transaction, as the same role, straight to the server.
    let mut control = stack.database.url().parse::<url::Url>().expect("a URL");
    control.set_username(DSQL_ROLE).expect("a user");
    let mut admin = PgConnection::connect(control.as_str()).await.expect("connect as admin");
    sqlx::raw_sql("BEGIN; CREATE TABLE mixed_control (id int); INSERT INTO mixed_control VALUES (1); COMMIT")
        .execute(&mut admin)
        .await
        .expect("PostgreSQL allows what DSQL refuses");
    admin.close().await.expect("close");

    let transactions = logged_transactions(&cluster.log());
    let statements: Vec<&String> = transactions.values().flatten().collect();
    for expected in [
        r#"CREATE TABLE IF NOT EXISTS "tasks""#,
        r#"INSERT INTO "seaql_migrations""#,
        r#"DROP TABLE "tasks""#,
        r#"DELETE FROM "seaql_migrations""#,
    ] {
        assert!(
            statements.iter().any(|statement| statement.contains(expected)),
            "`{expected}` is not among the logged statements: {statements:#?}"
        );
    }
    let mixed: Vec<&Vec<String>> = transactions
        .values()
        .filter(|statements| {
            let ddl = statements.iter().filter(|statement| is_ddl(statement)).count();
            ddl > 0 && statements.len() > 1
        })
        .collect();
    assert_eq!(
        mixed.len(),
        1,
        "only the control mixes DDL with other statements: {mixed:#?}"
    );
    assert!(
        mixed[0].iter().all(|statement| statement.contains("mixed_control")),
        "{mixed:#?}"
    );
}

/// Waits until new sessions log with `prefix`: a reload reaches the server's processes a moment after it is asked
/// for.
async fn wait_for_log_line_prefix(admin_url: &str, prefix: &str) {
    for _ in 0..50 {
        let mut connection = PgConnection::connect(admin_url).await.expect("connect");
        let current: String = sqlx::query_scalar("SHOW log_line_prefix")
            .fetch_one(&mut connection)
            .await
            .expect("the setting");
        if current == prefix {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("log_line_prefix never became {prefix:?}");
}

/// The statements of every logged transaction, by virtual transaction id, without transaction control (BEGIN,
/// COMMIT, ...). Log lines are `VXID|LOG:  statement: SQL` (simple protocol, where one query may hold several
/// statements, split here on `;`) or `VXID|LOG:  execute NAME: SQL` (extended protocol); a statement's further lines,
/// and every other message, are left out.
fn logged_transactions(log: &str) -> BTreeMap<String, Vec<String>> {
    let mut transactions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in log.lines() {
        let Some((vxid, message)) = line.split_once("|LOG:  ") else {
            continue;
        };
        let sql = if let Some(sql) = message.strip_prefix("statement: ") {
            sql
        } else if let Some(named) = message.strip_prefix("execute ") {
            match named.split_once(": ") {
                Some((_, sql)) => sql,
                None => continue,
            }
        } else {
            continue;
        };
        if vxid.is_empty() {
            continue;
        }
        let control = [
            "BEGIN",
            "START",
            "COMMIT",
            "END",
            "ROLLBACK",
            "SAVEPOINT",
            "RELEASE",
            "",
        ];
        for statement in sql.split(';') {
            if !control.contains(&first_keyword(statement).as_str()) {
                transactions
                    .entry(vxid.to_owned())
                    .or_default()
                    .push(statement.trim().to_owned());
            }
        }
    }
    transactions
}

fn first_keyword(sql: &str) -> String {
    sql.trim_start()
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Statements that change the schema.
fn is_ddl(sql: &str) -> bool {
    ["CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT", "GRANT", "REVOKE"].contains(&first_keyword(sql).as_str())
}
