//! Tenant isolation in the database (docs/isolation.md): row-level security on every table that
//! holds a tenant's rows, the API's pool held to it, the start-up check.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use domain::{Role, TenantId};
use futures::StreamExt;
use integration_tests::TestApp;
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;

/// Tables that hold no tenant's rows, and why (a new table must be classified here or carry a
/// `tenant_id`, row-level security and the policies).
const PLATFORM_TABLES: &[&str] = &[
    "_sqlx_migrations",     // the schema's history
    "projection_status",    // positions of projections serving every tenant
    "projection_offsets",   // the projections' Kafka offsets (every tenant's events)
    "relay_checkpoints",    // the relay's position in the store
    "sli_minutes",          // the service's own indicators, every tenant's requests together
    "distribution_minutes", // the same, as histograms
];

/// One row of `tenant` in each tenant table, written by the owner (who crosses tenants). The
/// keys are every table with a `tenant_id` column: the test fails when a table is added without
/// a row here, so none escapes the checks below.
fn plants() -> Vec<(&'static str, &'static str)> {
    // In dependency order (sessions before refresh tokens, endpoints before deliveries).
    let plants = vec![
        ("events", "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id, tenant_id, actor_id, actor_role, correlation_id) VALUES ('tenant', $1, 1, 'Planted', '1', '{}', '{}', gen_random_uuid(), $1, 'u', 'admin', 'c')"),
        ("idempotency_keys", "INSERT INTO idempotency_keys (tenant_id, user_id, idempotency_key, request_fingerprint, state, locked_until) VALUES ($1, 'u', gen_random_uuid()::text, 'f', 'pending', now())"),
        ("dead_letters", "INSERT INTO dead_letters (projection, topic, kafka_partition, kafka_offset, payload, error, tenant_id) VALUES ('p', 't', 0, 0, '{}', 'e', $1)"),
        ("rm_conversations", "INSERT INTO rm_conversations (tenant_id, conversation_id, status, started_by, channel, last_question, created_at, updated_at, version, last_position, document) VALUES ($1, gen_random_uuid(), 'open', 'u', 'web', 'q', now(), now(), 1, 1, '{}')"),
        ("rm_audit", "INSERT INTO rm_audit (event_id, tenant_id, position, recorded_at, actor_id, actor_role, action, object_type, object_id, sequence, correlation_id, outcome, details) VALUES (gen_random_uuid(), $1, 1, now(), 'u', 'admin', 'a', 'tenant', $1, 1, 'c', 'accepted', '{}')"),
        ("audit_reads", "INSERT INTO audit_reads (tenant_id, actor_id, actor_role, route, query) VALUES ($1, 'u', 'admin', '/v1/audit', '')"),
        ("rm_questions", "INSERT INTO rm_questions (tenant_id, question_id, conversation_id, asked_at, asked_by, channel, text, normalized, intent, status, question_chars, conversation_version) VALUES ($1, gen_random_uuid(), gen_random_uuid(), now(), 'u', 'web', 'q', 'q', 'other', 'answered', 1, 1)"),
        ("rm_sources", "INSERT INTO rm_sources (tenant_id, source_id, kind, name, location, status, sync_state, added_at, updated_at, version) VALUES ($1, gen_random_uuid(), 'website', 'n', 'https://x.test', 'active', 'idle', now(), now(), 1)"),
        ("rm_tenants", "INSERT INTO rm_tenants (tenant_id, version, state, updated_at) VALUES ($1, 1, '{}', now())"),
        ("feedback_forwards", "INSERT INTO feedback_forwards (tenant_id, event_id, event_position, conversation_id, answer_id, user_id, engine_answer_id, state) VALUES ($1, gen_random_uuid(), 1, gen_random_uuid(), gen_random_uuid(), 'u', 'e', 'pending')"),
        ("flag_exposures", "INSERT INTO flag_exposures (tenant_id, flag, user_id, variation) VALUES ($1, 'f', 'u', 'on')"),
        ("flag_usage", "INSERT INTO flag_usage (tenant_id, flag, user_id) VALUES ($1, 'f', 'u')"),
        ("sign_in_attempts", "INSERT INTO sign_in_attempts (state_hash, tenant_id, provider, nonce, code_verifier, redirect_uri, expires_at) VALUES (decode(md5(random()::text), 'hex'), $1, 'google', 'n', 'v', 'https://x.test', now())"),
        ("sessions", "INSERT INTO sessions (session_id, tenant_id, user_id, provider, mfa, csrf_hash, expires_at) VALUES (gen_random_uuid(), $1, 'u', 'google', false, '\\x00', now())"),
        ("refresh_tokens", "INSERT INTO refresh_tokens (token_hash, session_id, tenant_id) SELECT decode(md5(random()::text), 'hex'), session_id, $1 FROM sessions WHERE tenant_id = $1 LIMIT 1"),
        ("mfa_challenges", "INSERT INTO mfa_challenges (token_hash, tenant_id, user_id, provider, expires_at) VALUES (decode(md5(random()::text), 'hex'), $1, 'u', 'google', now())"),
        ("mfa_factors", "INSERT INTO mfa_factors (tenant_id, user_id, secret) VALUES ($1, 'u', '\\x00')"),
        ("mfa_recovery_codes", "INSERT INTO mfa_recovery_codes (tenant_id, user_id, code_hash) VALUES ($1, 'u', '\\x00')"),
        ("api_keys", "INSERT INTO api_keys (tenant_id, key_id, key_hash, name, role, prefix, created_by) VALUES ($1, 'k', decode(md5(random()::text), 'hex'), 'n', 'admin', 'p', 'u')"),
        ("webhook_endpoints", "INSERT INTO webhook_endpoints (tenant_id, endpoint_id, url, topics, secret) VALUES ($1, 'planted', 'https://x.test', '{}', 's')"),
        ("webhook_deliveries", "INSERT INTO webhook_deliveries (tenant_id, delivery_id, endpoint_id, event_id, topic, body) VALUES ($1, gen_random_uuid(), 'planted', gen_random_uuid(), 't', '{}')"),
        ("inbound_secrets", "INSERT INTO inbound_secrets (tenant_id, secret) VALUES ($1, 's')"),
        ("read_model_versions", "INSERT INTO read_model_versions (tenant_id, projection, version) VALUES ($1, 'planted', nextval('read_model_version_seq'))"),
    ];
    plants
}

async fn tenant_tables(pool: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r'
            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                          AND a.attname = 'tenant_id' AND NOT a.attisdropped)",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Writes one row of each tenant into every tenant table, as the owner.
async fn plant(pool: &PgPool, tenants: &[&str]) {
    for tenant in tenants {
        for (table, sql) in plants() {
            sqlx::query(sql)
                .bind(tenant)
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("planting a row of {tenant} in {table}: {e}"));
        }
    }
}

#[tokio::test]
async fn every_tenant_table_is_under_forced_row_level_security_with_both_policies() {
    let app = TestApp::spawn().await;
    check_catalogue(&app.pool).await;
    // A rebuild swaps in copies of a projection's tables: they are held as the live ones were,
    // and the API can still read them.
    for projection in projections::all() {
        projections::rebuild(&app.pool, projection.as_ref())
            .await
            .unwrap_or_else(|e| panic!("rebuilding {}: {e}", projection.name()));
    }
    check_catalogue(&app.pool).await;
    let mut tx = app
        .tenant_pool
        .begin(&"acme".parse().unwrap())
        .await
        .unwrap();
    for table in [
        "rm_conversations",
        "rm_audit",
        "rm_questions",
        "rm_sources",
        "rm_tenants",
    ] {
        sqlx::query(&format!("SELECT count(*) FROM {table}"))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{table} after a rebuild: {e}"));
    }
}

async fn check_catalogue(pool: &PgPool) {
    let tables = tenant_tables(pool).await;
    let planted: BTreeSet<String> = plants().iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(
        tables, planted,
        "every table with a tenant_id has a planted row in this test (and no other)"
    );
    let others: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .filter(|t| !tables.contains(t))
    .collect();
    let expected: BTreeSet<String> = PLATFORM_TABLES.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        others, expected,
        "a table without tenant_id must be classified"
    );
    for table in &tables {
        let (enabled, forced): (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class
              WHERE oid = ('public.' || $1)::regclass",
        )
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(
            enabled && forced,
            "{table}: row-level security enabled and forced"
        );
        let policies: BTreeSet<String> = sqlx::query_scalar(
            "SELECT policyname::text FROM pg_policies WHERE schemaname = 'public' AND tablename = $1",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        assert_eq!(
            policies,
            BTreeSet::from(["cross_tenant".to_string(), "tenant_isolation".to_string()]),
            "{table}"
        );
        let readable: bool =
            sqlx::query_scalar("SELECT has_table_privilege('answers_api', $1, 'SELECT')")
                .bind(format!("public.{table}"))
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(readable, "answers_api reads {table}");
    }
    // The API's role may not touch the platform tables at all.
    for table in [
        "projection_status",
        "projection_offsets",
        "relay_checkpoints",
        "sli_minutes",
        "distribution_minutes",
    ] {
        let allowed: bool =
            sqlx::query_scalar("SELECT has_table_privilege('answers_api', $1, 'SELECT')")
                .bind(table)
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(!allowed, "answers_api reads {table}");
    }
}

#[tokio::test]
async fn an_unfiltered_query_through_the_api_pool_sees_only_the_tenant_set_for_it() {
    let app = TestApp::spawn().await;
    plant(&app.pool, &["acme", "globex"]).await;
    let acme: TenantId = "acme".parse().unwrap();
    let globex: TenantId = "globex".parse().unwrap();
    for (table, _) in plants() {
        // The owner crosses tenants: both are there.
        let both: i64 =
            sqlx::query_scalar(&format!("SELECT count(DISTINCT tenant_id) FROM {table}"))
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(both, 2, "{table}: the owner sees both tenants");
        for (me, other) in [(&globex, &acme), (&acme, &globex)] {
            let mut tx = app.tenant_pool.begin(me).await.unwrap();
            // Deliberately unfiltered: no WHERE tenant_id.
            let seen: Vec<Option<String>> =
                sqlx::query_scalar(&format!("SELECT tenant_id FROM {table}"))
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("{table}: {e}"));
            assert!(!seen.is_empty(), "{table}: {me} sees its own row");
            assert!(
                seen.iter().all(|t| t.as_deref() == Some(me.as_str())),
                "{table}: {me} sees {seen:?}"
            );
            // Writing or changing the other tenant's rows is refused or touches nothing.
            let moved = sqlx::query(&format!(
                "UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = $1"
            ))
            .bind(other.as_str())
            .execute(&mut *tx)
            .await;
            match moved {
                Ok(done) => assert_eq!(
                    done.rows_affected(),
                    0,
                    "{table}: {me} updated {other}'s rows"
                ),
                // Read models and events: the API may not update them at all.
                Err(e) => assert!(
                    e.to_string().contains("permission denied")
                        || e.to_string().contains("immutable"),
                    "{table}: {e}"
                ),
            }
            tx.rollback().await.unwrap();
        }
    }
    // A row for another tenant cannot be written from a tenant's transaction.
    let mut tx = app.tenant_pool.begin(&globex).await.unwrap();
    let refused =
        sqlx::query("INSERT INTO inbound_secrets (tenant_id, secret) VALUES ('initech', 's')")
            .execute(&mut *tx)
            .await
            .expect_err("a foreign row is refused");
    assert!(
        refused.to_string().contains("row-level security"),
        "{refused}"
    );
}

#[tokio::test]
async fn forgetting_to_set_the_tenant_returns_nothing_and_writes_nothing() {
    let app = TestApp::spawn().await;
    plant(&app.pool, &["acme", "globex"]).await;
    // Once set in a transaction that has ended, the setting is '' on that connection: still
    // nothing. Touch every connection of the pool first so both states are covered.
    let mut tx = app
        .tenant_pool
        .begin(&"acme".parse().unwrap())
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let unscoped = app.tenant_pool.unscoped();
    for (table, _) in plants() {
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(unscoped)
            .await
            .unwrap();
        assert_eq!(seen, 0, "{table}: rows visible without a tenant");
    }
    let refused =
        sqlx::query("INSERT INTO inbound_secrets (tenant_id, secret) VALUES ('initech', 's')")
            .execute(unscoped)
            .await
            .expect_err("no tenant, no write");
    assert!(
        refused.to_string().contains("row-level security"),
        "{refused}"
    );
    // And the API's role is what the pool acts as.
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(unscoped)
        .await
        .unwrap();
    assert_eq!(role, "answers_api");
}

/// 10,000 requests of two tenants interleaved over an API pool of two connections: every
/// answer holds exactly the asking tenant's rows (a setting leaking between pooled
/// transactions would show foreign rows, or lose own ones).
#[tokio::test]
async fn ten_thousand_interleaved_requests_over_two_connections_see_no_foreign_row() {
    let app = TestApp::builder()
        .configure(|s| s.database.api_max_connections = 2)
        .spawn()
        .await;
    let mut own: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (tenant, endpoints) in [("acme", 3), ("globex", 5)] {
        let mut ids = BTreeSet::new();
        for n in 0..endpoints {
            let id = format!("{tenant}-{n}");
            sqlx::query(
                "INSERT INTO webhook_endpoints (tenant_id, endpoint_id, url, topics, secret)
                 VALUES ($1, $2, 'https://hooks.test/', '{}', 's')",
            )
            .bind(tenant)
            .bind(&id)
            .execute(&app.pool)
            .await
            .unwrap();
            ids.insert(id);
        }
        own.insert(tenant, ids);
    }
    let own = Arc::new(own);
    let tokens = Arc::new(BTreeMap::from([
        ("acme", app.token("acme", Role::Admin, "alice")),
        ("globex", app.token("globex", Role::Admin, "gina")),
    ]));
    let app = Arc::new(app);
    let results = futures::stream::iter(0..10_000usize)
        .map(|i| {
            let (app, own, tokens) = (app.clone(), own.clone(), tokens.clone());
            async move {
                let tenant = if i % 2 == 0 { "acme" } else { "globex" };
                let (status, body) = app
                    .call(Method::GET, "/v1/tenant/webhooks", &tokens[tenant], None)
                    .await;
                assert_eq!(status, 200, "{body}");
                let seen: BTreeSet<String> = body
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(|e| e["endpoint_id"].as_str().unwrap().to_string())
                    .collect();
                let foreign = seen.difference(&own[tenant]).count();
                (foreign, seen == own[tenant])
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<(usize, bool)>>()
        .await;
    let foreign: usize = results.iter().map(|(f, _)| f).sum();
    let exact = results.iter().filter(|(_, e)| *e).count();
    assert_eq!(foreign, 0, "foreign rows seen");
    assert_eq!(exact, 10_000, "answers with exactly the tenant's own rows");

    // The same through the pool itself, with a query that names no tenant at all.
    let checks = futures::stream::iter(0..10_000usize)
        .map(|i| {
            let (app, own) = (app.clone(), own.clone());
            async move {
                let tenant = if i % 2 == 0 { "acme" } else { "globex" };
                let mut tx = app
                    .tenant_pool
                    .begin(&tenant.parse().unwrap())
                    .await
                    .unwrap();
                let seen: BTreeSet<String> =
                    sqlx::query_scalar("SELECT endpoint_id FROM webhook_endpoints")
                        .fetch_all(&mut *tx)
                        .await
                        .unwrap()
                        .into_iter()
                        .collect();
                tx.commit().await.unwrap();
                seen == own[tenant]
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<bool>>()
        .await;
    assert_eq!(checks.iter().filter(|ok| **ok).count(), 10_000);
}

#[tokio::test]
async fn production_refuses_to_serve_when_the_api_login_can_bypass_row_level_security() {
    // The owner's login (a superuser here) as the API's: refused, saying why and what to do.
    let mut settings = TestApp::builder().production().settings().clone();
    settings.database.api_username = None;
    let refused = answers_api::Application::build(settings)
        .await
        .err()
        .expect("refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("bypass row-level security") && message.contains("superuser"),
        "{message}"
    );
    assert!(message.contains("APP__DATABASE__API_USERNAME"), "{message}");
    // A login that is a member of answers_api only: serves.
    let app = TestApp::builder().production().spawn().await;
    let (status, _): (u16, Value) = app.call(Method::GET, "/health/ready", "", None).await;
    assert_eq!(status, 200);
    let login: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(app.tenant_pool.unscoped())
        .await
        .unwrap();
    assert_eq!(login, integration_tests::api_login().await);
}

/// Production's shape: the tables' owner is no superuser. It runs the migrations, and the
/// relay, projections and rebuilds see every tenant only through `cross_tenant` (FORCE holds
/// the owner to the policies); the API logs in as its own member of `answers_api`.
#[tokio::test]
async fn a_non_superuser_owner_migrates_and_crosses_tenants_only_through_the_system_role() {
    const OWNER: &str = "answers_owner_test";
    let admin = PgPool::connect(&format!("{}/postgres", integration_tests::server_url()))
        .await
        .unwrap();
    sqlx::query(
        "DO $$ BEGIN
           CREATE ROLE answers_owner_test LOGIN CREATEDB CREATEROLE NOSUPERUSER NOBYPASSRLS;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&admin)
    .await
    .unwrap();
    let login = integration_tests::api_login().await;
    let app = TestApp::builder()
        .configure(|s| {
            let url = secrecy::ExposeSecret::expose_secret(&s.database.url).to_string();
            let (server, db) = url.rsplit_once('/').unwrap();
            let server = server.replace("postgres@", &format!("{OWNER}@"));
            s.database.url = format!("{server}/{db}").into();
            s.database.api_username = Some(login);
        })
        .spawn()
        .await;
    let (me, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((me.as_str(), superuser, bypass), (OWNER, false, false));
    let owner_of_events: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'events'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(owner_of_events, OWNER, "the migrations ran as the owner");
    // The owner writes and reads both tenants' rows: only the cross_tenant policy allows it.
    plant(&app.pool, &["acme", "globex"]).await;
    for (table, _) in plants() {
        let tenants: i64 =
            sqlx::query_scalar(&format!("SELECT count(DISTINCT tenant_id) FROM {table}"))
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(tenants, 2, "{table}");
    }
    // The API, through its own login, still one tenant at a time.
    let mut tx = app
        .tenant_pool
        .begin(&"acme".parse().unwrap())
        .await
        .unwrap();
    let seen: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM events")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, ["acme"]);
    tx.rollback().await.unwrap();
    // Commands and a rebuild work as this owner.
    let token = app.create_tenant("initech", "alice").await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/sources",
            &token,
            Some(serde_json::json!({"kind": "docs", "name": "Docs", "location": "https://docs.initech.test"})),
        )
        .await;
    assert_eq!(status, 201);
    sqlx::query("DELETE FROM events WHERE event_type = 'Planted'")
        .execute(&app.pool)
        .await
        .expect_err("events stay immutable for the owner too");
    for projection in projections::all() {
        // (Not the tenants projection: the planted tenant events are not real ones.)
        if projection.name() == "sources" || projection.name() == "conversations" {
            projections::rebuild(&app.pool, projection.as_ref())
                .await
                .unwrap_or_else(|e| panic!("rebuilding {} as the owner: {e}", projection.name()));
        }
    }
    check_catalogue(&app.pool).await;
}
