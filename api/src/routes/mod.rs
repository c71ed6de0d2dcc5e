//! The HTTP routes. Handlers only translate: HTTP in, a command to the bus, HTTP out.
use domain::Code;

use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use commands::CommandContext;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::IntoResponses;

use crate::auth::{Authenticated, Claims};
use crate::middleware::CorrelationId;
use crate::problem::{ApiError, Problem};

pub mod access;
pub mod admin;
pub mod analytics;
pub mod answer_stream;
pub mod audit;
pub mod conversations;
pub mod docs;
pub mod engine;
pub mod fallback;
pub mod flags;
pub mod health;
pub mod identity;
pub mod inbound;
pub mod observability;
pub mod platform;
pub mod sources;
pub mod tenant;
pub mod webhooks;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The authenticated caller of a command, with the request's correlation id and idempotency key.
pub struct Caller {
    pub claims: Claims,
    correlation_id: String,
    idempotency_key: Option<String>,
    request_line: String,
}

impl Caller {
    /// The command context for this request. `body` is part of the request's fingerprint, so an
    /// idempotency key reused for a different body is caught.
    pub fn context<B: Serialize>(&self, body: &B) -> CommandContext {
        let body = serde_json::to_string(body).unwrap_or_default();
        let digest = Sha256::digest(format!("{}\n{}", self.request_line, body).as_bytes());
        CommandContext {
            tenant_id: self.claims.tenant_id.clone(),
            user_id: self.claims.sub.clone(),
            role: self.claims.role,
            correlation_id: self.correlation_id.clone(),
            causation_id: None,
            idempotency_key: self.idempotency_key.clone(),
            request_fingerprint: hex::encode(digest),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // A malformed Idempotency-Key is refused before anything is awaited, so it wins over
        // a body error found by another extractor meanwhile.
        let key = idempotency_key(req);
        let req = req.clone();
        Box::pin(async move {
            let key = key?;
            let Authenticated(claims) = crate::auth::authenticated(&req).await?;
            caller(&req, claims, key)
        })
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    match req.headers().get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => {
            let key = v.to_str().ok().map(str::trim).filter(|k| {
                !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic())
            });
            Ok(Some(
                key.ok_or_else(|| {
                    ApiError::new(
                        Code::InvalidIdempotencyKey,
                        "Idempotency-Key must be 1-255 visible ASCII characters",
                    )
                })?
                .to_string(),
            ))
        }
    }
}

fn caller(
    req: &HttpRequest,
    claims: Claims,
    idempotency_key: Option<String>,
) -> Result<Caller, ApiError> {
    let correlation_id = req
        .extensions()
        .get::<CorrelationId>()
        .map(|c| c.0.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    Ok(Caller {
        claims,
        correlation_id,
        idempotency_key,
        request_line: format!("{} {}", req.method(), req.path()),
    })
}

/// Parses a word of a query parameter into its enum (the same enum the OpenAPI document lists);
/// a word that names nothing is answered with the parameter's own code.
pub fn parse_word<T: std::str::FromStr<Err = domain::text_enum::UnknownWord>>(
    value: Option<&str>,
    code: domain::Code,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| ApiError::new(code, e.to_string()))
        })
        .transpose()
}

/// The problems any command route may answer with.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum CommandProblems {
    /// Malformed JSON, a bad path parameter or a bad Idempotency-Key.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing, expired or invalid token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role may not send this command.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The aggregate (or the tenant) does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The aggregate's state forbids the command, or another command changed it first.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body exceeds the size limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field is invalid, or the Idempotency-Key was used for another request.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// Over a rate limit or quota: `Retry-After` says when to retry; `RateLimit-Policy` and
    /// `RateLimit` describe the budget.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// The database is unreachable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::live)
        .service(health::ready)
        .service(health::metrics)
        .service(health::details)
        .service(docs::openapi_json)
        .service(docs::swagger_ui)
        .service(identity::jwks)
        .service(
            web::scope("/v1")
                .configure(identity::configure)
                .configure(access::configure)
                .configure(webhooks::configure)
                .configure(inbound::configure)
                .configure(platform::configure)
                .configure(observability::configure)
                .configure(tenant::configure)
                .configure(conversations::configure)
                // Before sources: `/sources/kapa` must not be taken for a source id.
                .configure(engine::configure)
                .configure(sources::configure)
                .configure(admin::configure)
                .configure(flags::configure)
                .configure(audit::configure)
                .configure(analytics::configure),
        );
}

/// A transaction of the caller's tenant on the API's pool: the only way a handler reads or
/// writes tenant rows (docs/isolation.md). Commit it after the last statement; dropped, it
/// rolls back.
pub async fn tenant_tx(
    tenants: &event_store::TenantPool,
    tenant: &domain::TenantId,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
    tenants
        .begin(tenant)
        .await
        .map_err(conversations::read_error)
}

/// A read-only [`tenant_tx`] on one snapshot (`TenantPool::begin_snapshot`).
pub async fn snapshot_tx(
    tenants: &event_store::TenantPool,
    tenant: &domain::TenantId,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
    tenants
        .begin_snapshot(tenant)
        .await
        .map_err(conversations::read_error)
}

/// Ends a [`tenant_tx`] that only read. Dropped, not committed: the `ROLLBACK` sqlx queues
/// travels with the check it makes as the connection returns to the pool, off the request's
/// path (one round trip fewer than a `COMMIT`).
pub fn end_read(tx: sqlx::Transaction<'static, sqlx::Postgres>) {
    drop(tx);
}

/// Ends a [`tenant_tx`] that wrote.
pub async fn commit(tx: sqlx::Transaction<'static, sqlx::Postgres>) -> Result<(), ApiError> {
    tx.commit().await.map_err(conversations::read_error)
}
