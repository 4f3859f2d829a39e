use infrastructure::Database;
use tasks_api::Settings;
use test_support::{Backend, TestDatabase};

on_every_backend!(migrations_apply_revert_and_reapply_cleanly);

async fn migrations_apply_revert_and_reapply_cleanly(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let environment = [("APP__DATABASE__URL".to_owned(), database.url().to_owned())];
    let settings = Settings::load_from(std::path::Path::new("/nonexistent"), environment).expect("settings");
    let connection = Database::connect(&settings.database).await.expect("connect");
    let applied = |connection: &Database| {
        let connection = connection.clone();
        async move {
            let states = connection.migration_status().await.expect("status");
            assert!(!states.is_empty());
            states.iter().filter(|state| state.applied).count()
        }
    };

    assert_eq!(applied(&connection).await, 0);
    connection.migrate_up(None).await.expect("up");
    let total = applied(&connection).await;
    assert_eq!(total, connection.migration_status().await.expect("status").len());
    let id = uuid::Uuid::parse_str("0190163d-8694-739b-aea5-966c26f8ad91").expect("a UUID");
    database
        .execute(format!("INSERT INTO tasks VALUES ({}, 'x')", backend.uuid_literal(id)))
        .await;

    connection.migrate_down(Some(1)).await.expect("down");
    assert_eq!(applied(&connection).await, total - 1);
    connection.migrate_up(None).await.expect("up again");
    assert_eq!(applied(&connection).await, total);
    assert_eq!(database.count_tasks().await, 0, "reverting dropped the table");
    connection.close().await;
}
