use answers_api::Application;
use integration_tests::test_settings;

#[tokio::test]
async fn an_unreachable_database_stops_start_up_with_a_clear_message() {
    let mut settings = test_settings();
    // Nothing listens on port 1.
    settings.database.url = "postgres://postgres:secret-pw@127.0.0.1:1/answers"
        .to_string()
        .into();
    settings.database.acquire_timeout_ms = 1000;
    let err = match Application::build(settings).await {
        Ok(_) => panic!("start-up must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("cannot reach PostgreSQL at postgres://postgres:***@127.0.0.1:1/answers"),
        "{err}"
    );
    assert!(
        !err.contains("secret-pw"),
        "the password is not printed: {err}"
    );
}

#[tokio::test]
async fn start_up_creates_and_migrates_a_missing_database() {
    let settings = test_settings();
    let app = Application::build(settings).await.expect("starts");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert!(tables.contains(&"events".to_string()));
    assert!(tables.contains(&"idempotency_keys".to_string()));
}
