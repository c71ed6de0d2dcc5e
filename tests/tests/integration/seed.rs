use answers_tools::seed::{run, SeedArgs};
use integration_tests::test_settings;
use sqlx::PgPool;

async fn shape(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT tenant_id, event_type, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn seed_writes_a_deterministic_data_set_over_past_days_through_the_command_path() {
    let args = SeedArgs {
        tenants: 2,
        days: 10,
        questions: 120,
        seed: 7,
    };
    let first = test_settings();
    run(first.clone(), args.clone()).await.unwrap();
    let pool = answers_api::startup::connect(&first.database)
        .await
        .unwrap();

    let asked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'QuestionAsked'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(asked, 120);
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM events ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tenants, ["demo-1", "demo-2"]);
    let (days, oldest): (i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT count(DISTINCT recorded_at::date), min(recorded_at) FROM events WHERE event_type = 'QuestionAsked'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(days >= 9, "spread over the days: {days}");
    assert!(oldest >= chrono::Utc::now() - chrono::Duration::days(10));
    // Every event went through the command bus: complete metadata, gapless sequences.
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT aggregate_id, max(sequence) AS m, count(*) AS c FROM events GROUP BY 1) a WHERE m <> c",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(gaps, 0);

    // The same seed writes the same data set.
    let second = test_settings();
    run(second.clone(), args).await.unwrap();
    let again = answers_api::startup::connect(&second.database)
        .await
        .unwrap();
    assert_eq!(shape(&pool).await, shape(&again).await);
}
