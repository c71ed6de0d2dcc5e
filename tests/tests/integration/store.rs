use integration_tests::TestApp;

#[tokio::test]
async fn events_cannot_be_updated_deleted_or_truncated() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme", "alice").await;
    let before: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT position, payload FROM events ORDER BY position")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(before.len(), 2);

    for statement in [
        "UPDATE events SET payload = '{}'::jsonb",
        "UPDATE events SET tenant_id = 'other' WHERE sequence = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE sequence = 2",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(statement)
            .execute(&app.pool)
            .await
            .expect_err(statement);
        assert!(
            err.to_string().contains("events are immutable"),
            "{statement}: {err}"
        );
    }
    let after: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT position, payload FROM events ORDER BY position")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(before, after);
}
