use infrastructure::Database;
use test_support::{Backend, Stack};

on_every_backend!(migrations_apply_revert_and_reapply_cleanly);

/// Through the same connection the service uses: with IAM, every session is opened through the emulator with a
/// token.
async fn migrations_apply_revert_and_reapply_cleanly(backend: Backend) {
    let stack = Stack::new(backend).await;
    let settings = stack.settings(&[]);
    let connection = Database::connect_with_aws(&settings.database, stack.known_aws().await)
        .await
        .expect("connect");
    let database = &stack.database;
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
    if let Some(emulator) = &stack.emulator {
        assert!(emulator.counts.accepted() > 0, "the migrations logged in with tokens");
        assert_eq!(emulator.counts.refused(), 0);
    }
}
