//! What reaches the service's logs: never a secret, however it was configured.

use std::path::Path;

use tasks_api::Settings;
use test_support::{Backend, LogCapture, STATIC_PASSWORD, Stack, assert_no_secrets_logged};

#[tokio::test]
async fn a_password_in_the_url_query_string_is_never_logged() {
    let stack = Stack::new(Backend::Postgres).await;
    // The local server trusts the connection and never asks for the password: only where it ends up matters.
    let url = format!("{}?password={STATIC_PASSWORD}", stack.database.url());
    let variables = [("APP__SERVER__PORT", "0"), ("APP__DATABASE__URL", url.as_str())]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    let settings = Settings::load_from(Path::new("/nonexistent"), variables).expect("settings load");
    let connect_lines = LogCapture::containing(stack.database.name());

    let app = stack
        .start(settings, None)
        .await
        .map_err(|(error, _)| error)
        .expect("starts");
    app.create_task("with a password from the query string").await;

    // The URL is logged, as the connect span's field, so a password left in it would have been caught.
    let events = connect_lines.events();
    assert!(
        events.iter().any(|event| event.contains("connect to database")),
        "{events:?}"
    );
    assert_no_secrets_logged();
}
