//! `answers bench --kapa`: asking through the real Kapa client against a local fake Kapa that
//! answers at once and after a fixed 300 ms, with 16 and 64 clients, beside the local engine;
//! and the client's own overhead per call (the engine with its key cache, bulkhead, breaker and
//! JSON, minus a bare HTTP POST of the same body to the same fake).
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use domain::engine::{AnswerEngine, AnswerRequest, EngineContext};
use domain::Role;
use kapa::KapaEngine;
use secrets::SecretResolver;
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;

use crate::bench::{drive, header, ms, Measurement};
use answers_api::auth::JwtKeys;
use answers_api::{Application, Settings};

type Fresh = fn(&Settings, usize) -> (Settings, String);

const KEY: &str = "bench-kapa-key";

/// A fake Kapa: project `slow` answers after 300 ms, any other at once.
async fn fake_kapa() -> anyhow::Result<String> {
    async fn chat(project: web::Path<String>) -> HttpResponse {
        if project.as_str() == "slow" {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        HttpResponse::Ok().json(json!({
            "answer": "Open Settings, then Export.",
            "thread_id": uuid::Uuid::now_v7().to_string(),
            "question_answer_id": uuid::Uuid::now_v7().to_string(),
            "relevant_sources": [{"title": "Export", "source_url": "https://docs.example.test/export"}],
            "is_uncertain": false
        }))
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = format!("http://{}", listener.local_addr()?);
    let server = HttpServer::new(|| {
        App::new().route("/query/v1/projects/{project}/chat/", web::post().to(chat))
    })
    .workers(2)
    .listen(listener)?
    .run();
    tokio::spawn(server);
    Ok(address)
}

pub async fn run(settings: &Settings, commands: usize, fresh: Fresh) -> anyhow::Result<String> {
    let kapa = fake_kapa().await?;
    std::env::set_var("KAPA_FAST_API_KEY", KEY);
    std::env::set_var("KAPA_SLOW_API_KEY", KEY);
    let mut report = format!(
        "\nanswers bench --kapa: the real Kapa client against a local fake Kapa\n\n{}",
        header()
    );
    let mut lines = Vec::new();
    for clients in [16usize, 64] {
        let (mut s, db) = fresh(settings, clients);
        s.kafka.enabled = false;
        s.kapa.enabled = true;
        s.kapa.base_url = kapa.clone();
        s.kapa.tenant_concurrency = clients;
        s.kapa.total_timeout_ms = 10_000;
        s.engine.sweep_after_ms = 60_000;
        s.kapa_workers.in_process = false;
        let result = platform(s, clients, commands).await;
        let _ = Postgres::force_drop_database(&db).await;
        lines.extend(result?);
    }
    for m in &lines {
        report.push_str(&m.line());
    }
    let (engine, bare) = overhead(settings, &kapa, commands).await?;
    report.push_str(&engine.line());
    report.push_str(&bare.line());
    report.push_str(&format!(
        "\nclient overhead per call (engine p50 - bare POST p50): {:.3} ms\n",
        ms(engine.percentile(50.0)) - ms(bare.percentile(50.0))
    ));
    Ok(report)
}

/// Asking over HTTP for a tenant on the local engine, one on the instant fake Kapa and one on
/// the 300 ms fake Kapa.
async fn platform(
    settings: Settings,
    clients: usize,
    commands: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let keys = JwtKeys::new(&settings.auth)?;
    // The benchmark measures the service, not its rate limits (which would refuse the load).
    let mut settings = settings;
    settings.rate_limits.enabled = false;
    let app = Application::build(settings).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let mut out = Vec::new();
    for (tenant, project, count) in [
        ("local", None, commands),
        ("fast", Some("fast"), commands),
        // 300 ms each: ten rounds of the clients is enough for stable percentiles.
        ("slow", Some("slow"), clients * 10),
    ] {
        let token = keys.mint("bench-admin", tenant, Role::Admin, 3600)?;
        let created = client
            .post(format!("{address}/v1/tenant"))
            .bearer_auth(&token)
            .json(&json!({"name": tenant}))
            .send()
            .await?;
        anyhow::ensure!(
            created.status().as_u16() == 201,
            "tenant: {}",
            created.status()
        );
        if let Some(project) = project {
            let set = client
                .put(format!("{address}/v1/tenant/kapa"))
                .bearer_auth(&token)
                .json(&json!({"project_id": project,
                              "api_key_ref": format!("env://KAPA_{}_API_KEY", tenant.to_uppercase())}))
                .send()
                .await?;
            anyhow::ensure!(
                set.status().as_u16() == 200,
                "kapa settings: {}",
                set.status()
            );
        }
        let name = match project {
            None => format!("ask, local engine, {clients} clients"),
            Some("slow") => format!("ask, Kapa 300 ms, {clients} clients"),
            Some(_) => format!("ask, Kapa at once, {clients} clients"),
        };
        let (client, address) = (client.clone(), address.clone());
        let engine = project.map_or("local", |_| "kapa");
        out.push(
            drive(&name, clients, count, move |i| {
                let request = client
                    .post(format!("{address}/v1/conversations"))
                    .bearer_auth(&token)
                    .json(&json!({"question": format!("How do I configure feature {i}?")}));
                async move {
                    let response = request.send().await?;
                    anyhow::ensure!(
                        response.status().as_u16() == 201,
                        "ask: {}",
                        response.status()
                    );
                    let body: serde_json::Value = response.json().await?;
                    anyhow::ensure!(
                        body["answer"]["engine"] == engine,
                        "answered by {} instead of {engine}: {body}",
                        body["answer"]["engine"]
                    );
                    Ok(())
                }
            })
            .await?,
        );
    }
    Ok(out)
}

/// The engine's own cost per call, beside a bare POST of the same body to the same fake.
async fn overhead(
    settings: &Settings,
    kapa: &str,
    count: usize,
) -> anyhow::Result<(Measurement, Measurement)> {
    let mut kapa_settings = settings.kapa.clone();
    kapa_settings.base_url = kapa.to_string();
    kapa_settings.tenant_concurrency = 16;
    let secrets = Arc::new(SecretResolver::new(settings.secrets.clone())?);
    let engine =
        Arc::new(KapaEngine::new(&kapa_settings, secrets).map_err(|e| anyhow::anyhow!(e))?);
    let request = AnswerRequest {
        tenant_id: "fast".into(),
        question: "How do I export?".into(),
        engine_thread_id: None,
        user_ref: "u_0123456789abcdef".into(),
        user_email: None,
        role: "operator".into(),
        channel: "web".into(),
        integration_id: None,
        company_name: None,
        context: EngineContext {
            project_id: Some("fast".into()),
            integration_id: None,
            api_key_ref: Some("env://KAPA_FAST_API_KEY".into()),
        },
    };
    let through_engine = {
        let (engine, request) = (engine.clone(), request.clone());
        drive("Kapa engine call, 16 clients", 16, count, move |_| {
            let (engine, request) = (engine.clone(), request.clone());
            async move {
                engine
                    .answer(request, None)
                    .await
                    .map_err(|f| anyhow::anyhow!(f.reason))?;
                Ok(())
            }
        })
        .await?
    };
    let client = reqwest::Client::new();
    let url = format!("{kapa}/query/v1/projects/fast/chat/");
    let body = json!({"query": request.question, "user": {"unique_client_id": request.user_ref,
        "metadata": {"role": "operator", "channel": "web"}}});
    let bare = drive("bare POST to the fake, 16 clients", 16, count, move |_| {
        let request = client.post(&url).header("X-API-KEY", KEY).json(&body);
        async move {
            let response = request.send().await?;
            anyhow::ensure!(response.status().is_success());
            let _: serde_json::Value = response.json().await?;
            Ok(())
        }
    })
    .await?;
    Ok((through_engine, bare))
}
