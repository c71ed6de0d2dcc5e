//! What `answers relay` and `answers project` serve: they have no API, but an orchestrator must
//! probe them and Prometheus scrape them (docs/deployment.md). On `server.port`:
//! - `GET /health/live`: the process runs (200, stopping included: a stop is not a fault);
//! - `GET /health/ready`: the database answers and the process is not stopping;
//! - `GET /metrics`: the process's metrics with the read side's (projection lag, relay), in the
//!   text format. No tenant is named in them, so no credential is asked for: the port is for the
//!   cluster only (the chart's NetworkPolicy lets Prometheus alone reach it).
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::Settings;

struct State {
    pool: PgPool,
    metrics: Arc<Metrics>,
    kafka: streaming::KafkaSettings,
    stopping: shutdown::Shutdown,
}

/// Binds `server.host:server.port` and serves the worker's endpoints until `stopping`.
pub fn serve(
    settings: &Settings,
    pool: PgPool,
    metrics: Arc<Metrics>,
    stopping: shutdown::Shutdown,
) -> anyhow::Result<(u16, Server)> {
    let listener =
        std::net::TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!(
                    "could not listen on {}:{} (server.port) for the health and metrics endpoints",
                    settings.server.host, settings.server.port
                )
            })?;
    let port = listener.local_addr()?.port();
    let state = web::Data::new(State {
        pool,
        metrics,
        kafka: settings.kafka.clone(),
        stopping: stopping.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/metrics", web::get().to(render_metrics))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        stopping.stopping().await;
        handle.stop(true).await;
    });
    tracing::info!(port, "health and metrics endpoints listening");
    Ok((port, server))
}

fn status(ok: bool, what: &str) -> HttpResponse {
    let body = serde_json::json!({ "status": what });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn live() -> HttpResponse {
    status(true, "ok")
}

async fn ready(state: web::Data<State>) -> HttpResponse {
    if state.stopping.is_stopping() {
        return status(false, "stopping");
    }
    let (database, _) = crate::routes::health::probe(
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    match database {
        Ok(()) => status(true, "ready"),
        Err(error) => {
            tracing::warn!(%error, "not ready: the database");
            status(false, "not ready: database")
        }
    }
}

async fn render_metrics(state: web::Data<State>) -> HttpResponse {
    crate::routes::health::observe_read_side(&state.metrics, &state.pool, &state.kafka).await;
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(error) => {
            tracing::warn!(%error, "metrics: could not be encoded");
            HttpResponse::InternalServerError().finish()
        }
    }
}
