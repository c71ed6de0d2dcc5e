//! The answer engine as the platform and a tenant's admin see it: the Kapa circuit breakers
//! (platform operators), the feedback forwarded to Kapa, and the tenant's Kapa sources with
//! their import (tenant admins).
use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use commands::{CommandBus, CommandOutcome};
use domain::knowledge_source::{SourceCommand, SourceKind};
use domain::Code;
use event_store::TenantPool;
use kapa::BreakerStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Authenticated, PlatformOperator};
use crate::problem::ApiError;
use crate::routes::admin::admin;
use crate::routes::conversations::read_error;
use crate::routes::{Caller, CommandProblems};
use crate::startup::EngineStatus;
use crate::workers::KAPA_SOURCE_SETTING;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(engine_status)
        .service(feedback_forwards)
        .service(kapa_sources)
        .service(import_kapa_source)
        .service(retrieve);
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrievalRequest {
    /// What to look for (screened by the tenant's guardrails like a question).
    #[schema(min_length = 1, max_length = 2000, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub query: String,
    /// How many chunks, 1-15 (default 5).
    #[schema(minimum = 1, maximum = 15)]
    pub top_k: Option<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetrievalView {
    /// The query as sent to Kapa (after the guardrails).
    pub query: String,
    /// Kapa's chunks, best first, as Kapa sends them (`source_url`, `content`, ...).
    #[schema(value_type = Vec<Object>)]
    pub chunks: Vec<serde_json::Value>,
}

/// Search the tenant's Kapa knowledge without generating an answer (Kapa's retrieval). The
/// query passes the tenant's guardrails first: redacted, or refused when a rule blocks it.
#[utoipa::path(post, path = "/v1/sources/kapa/retrieval", tag = "sources", request_body = RetrievalRequest,
    responses((status = 200, body = RetrievalView), CommandProblems), security(("bearer" = [])))]
#[post("/sources/kapa/retrieval")]
pub async fn retrieve(
    bus: web::Data<CommandBus>,
    engines: web::Data<EngineStatus>,
    auth: Authenticated,
    body: web::Json<RetrievalRequest>,
) -> Result<HttpResponse, ApiError> {
    if !auth.0.role.may(domain::Action::Ask) {
        return Err(ApiError::new(
            Code::Forbidden,
            "the role viewer may not search the knowledge",
        ));
    }
    let top_k = body.top_k.unwrap_or(5);
    if !(1..=15).contains(&top_k) {
        return Err(ApiError::new(
            Code::InvalidLimit,
            "top_k is between 1 and 15",
        ));
    }
    let query = body.query.trim();
    if query.is_empty() || query.chars().count() > 2000 || query.contains('\0') {
        return Err(ApiError::new(
            Code::InvalidQuestion,
            "the query has 1 to 2000 characters",
        ));
    }
    let tenant = bus.tenant_snapshot(&auth.0.tenant_id).await?;
    let screened = domain::guardrail::screen_question(query, &tenant.answer_policy.guardrails);
    if let Some(violation) = screened.blocked {
        return Err(ApiError::new(
            Code::QueryBlocked,
            format!("{} (guardrail `{}`)", violation.reason, violation.rule),
        ));
    }
    let (kapa, settings, key) = kapa_of(&engines, &auth, tenant).await?;
    let chunks = kapa
        .client()
        .retrieve(
            &key,
            &settings.project_id,
            &screened.text,
            top_k,
            kapa.call_timeout(),
        )
        .await
        .map_err(kapa_error)?;
    Ok(HttpResponse::Ok().json(RetrievalView {
        query: screened.text,
        chunks,
    }))
}

/// A circuit breaker guarding one Kapa project.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerView {
    pub project_id: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub consecutive_failures: u32,
    pub times_opened: u64,
    /// Until an open breaker lets a probe through.
    pub retry_in_ms: Option<u64>,
}

impl From<BreakerStatus> for BreakerView {
    fn from(b: BreakerStatus) -> Self {
        Self {
            project_id: b.project_id,
            state: b.state.as_str().to_string(),
            consecutive_failures: b.consecutive_failures,
            times_opened: b.times_opened,
            retry_in_ms: b.retry_in_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EngineStatusView {
    /// Whether this deployment talks to Kapa at all.
    pub kapa_enabled: bool,
    /// This instance's circuit breakers, one per Kapa project asked since it started.
    pub breakers: Vec<BreakerView>,
}

/// The answer engine's circuit breakers in this instance (serves every tenant: the platform
/// operator credential is needed).
#[utoipa::path(get, path = "/v1/admin/engine", tag = "admin",
    responses((status = 200, body = EngineStatusView), CommandProblems), security(("platform" = [])))]
#[get("/admin/engine")]
pub async fn engine_status(
    engines: web::Data<EngineStatus>,
    _operator: PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    let breakers = engines
        .kapa
        .as_ref()
        .map(|k| k.breakers().into_iter().map(BreakerView::from).collect())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(EngineStatusView {
        kapa_enabled: engines.kapa.is_some(),
        breakers,
    }))
}

/// One feedback change forwarded (or to be forwarded) to Kapa.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackForwardView {
    pub event_id: Uuid,
    pub conversation_id: Uuid,
    pub answer_id: Uuid,
    pub user_id: String,
    /// `pending`, `delivered`, `failed` (gave up) or `superseded` (a newer change went instead).
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForwardQuery {
    /// Only forwards of this answer.
    pub answer_id: Option<Uuid>,
}

/// The tenant's feedback forwarded to Kapa, newest first (at most 500).
#[utoipa::path(get, path = "/v1/admin/feedback-forwards", tag = "admin", params(ForwardQuery),
    responses((status = 200, body = Vec<FeedbackForwardView>), CommandProblems), security(("bearer" = [])))]
#[get("/admin/feedback-forwards")]
pub async fn feedback_forwards(
    tenants: web::Data<TenantPool>,
    auth: Authenticated,
    query: web::Query<ForwardQuery>,
) -> Result<HttpResponse, ApiError> {
    admin(&auth)?;
    let mut tx = super::tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let rows = sqlx::query_as!(
        FeedbackForwardView,
        "SELECT event_id, conversation_id, answer_id, user_id, state, attempts, last_error,
                next_attempt_at, created_at, delivered_at
           FROM feedback_forwards
          WHERE tenant_id = $1 AND ($2::uuid IS NULL OR answer_id = $2)
          ORDER BY event_position DESC LIMIT 500",
        auth.0.tenant_id.as_str(),
        query.answer_id,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| read_error(projections::ReadError::from(e)))?;
    super::end_read(tx);
    Ok(HttpResponse::Ok().json(rows))
}

/// A knowledge source of the tenant's Kapa project.
#[derive(Debug, Serialize, ToSchema)]
pub struct KapaSourceView {
    /// Its id in Kapa.
    pub kapa_source_id: String,
    pub name: Option<String>,
    /// Kapa's connector type.
    pub kind: Option<String>,
    pub last_task_status: Option<String>,
    /// The source here linked to it (`settings.kapa_source_id`), if any.
    pub linked_source_id: Option<Uuid>,
}

/// The Kapa engine, the tenant's Kapa settings and its key, for a tenant already loaded.
async fn kapa_of(
    engines: &EngineStatus,
    auth: &Authenticated,
    tenant: domain::tenant::Tenant,
) -> Result<
    (
        std::sync::Arc<kapa::KapaEngine>,
        domain::tenant::KapaSettings,
        secrecy::SecretString,
    ),
    ApiError,
> {
    let kapa = engines.kapa.clone().ok_or_else(|| {
        ApiError::new(
            Code::EngineUnavailable,
            "this deployment does not talk to Kapa",
        )
    })?;
    let settings = tenant.kapa.ok_or_else(|| {
        ApiError::new(
            Code::KapaNotConfigured,
            "set the tenant's Kapa project first (PUT /v1/tenant/kapa)",
        )
    })?;
    let key = kapa
        .key(auth.0.tenant_id.as_str(), &settings.api_key_ref)
        .await
        .map_err(|f| ApiError::new(Code::EngineUnavailable, f.reason))?;
    Ok((kapa, settings, key))
}

fn kapa_error(e: kapa::CallError) -> ApiError {
    ApiError::new(Code::EngineUnavailable, format!("asking Kapa failed: {e}"))
}

/// The sources of the tenant's Kapa project, with the source here each is linked to. Import the
/// unlinked ones with `POST /v1/sources/kapa/{kapa_source_id}/import`.
#[utoipa::path(get, path = "/v1/sources/kapa", tag = "sources",
    responses((status = 200, body = Vec<KapaSourceView>), CommandProblems), security(("bearer" = [])))]
#[get("/sources/kapa")]
pub async fn kapa_sources(
    bus: web::Data<CommandBus>,
    engines: web::Data<EngineStatus>,
    tenants: web::Data<TenantPool>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    admin(&auth)?;
    let tenant = bus.tenant_snapshot(&auth.0.tenant_id).await?;
    let (kapa, settings, key) = kapa_of(&engines, &auth, tenant).await?;
    let found = kapa
        .client()
        .sources(&key, &settings.project_id, kapa.call_timeout())
        .await
        .map_err(kapa_error)?;
    let linked = linked_sources(&tenants, &auth.0.tenant_id).await?;
    let views = found
        .into_iter()
        .map(|s| KapaSourceView {
            linked_source_id: linked
                .iter()
                .find(|(kapa_id, _)| *kapa_id == s.id)
                .map(|(_, id)| *id),
            kapa_source_id: s.id,
            name: s.name,
            kind: s.kind,
            last_task_status: s.last_task_status,
        })
        .collect::<Vec<_>>();
    Ok(HttpResponse::Ok().json(views))
}

/// The tenant's sources linked to a Kapa source: (Kapa source id, source id), from the store.
async fn linked_sources(
    tenants: &TenantPool,
    tenant: &domain::TenantId,
) -> Result<Vec<(String, Uuid)>, ApiError> {
    let mut tx = super::tenant_tx(tenants, tenant).await?;
    let rows = sqlx::query!(
        r#"SELECT DISTINCT ON (aggregate_id) aggregate_id AS "aggregate_id!",
                  payload -> event_type -> 'settings' ->> 'kapa_source_id' AS kapa_source_id,
                  event_type AS "event_type!"
             FROM events
            WHERE aggregate_type = 'knowledge_source' AND tenant_id = $1
              AND (event_type = 'SourceRemoved'
                   OR (event_type IN ('SourceAdded', 'SourceUpdated')
                       AND payload -> event_type -> 'settings' IS NOT NULL
                       AND payload -> event_type -> 'settings' <> 'null'::jsonb))
            ORDER BY aggregate_id, sequence DESC"#,
        tenant.as_str(),
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| read_error(projections::ReadError::from(e)))?;
    super::end_read(tx);
    Ok(rows
        .into_iter()
        .filter(|r| r.event_type != "SourceRemoved")
        .filter_map(|r| {
            let id = domain::ScopedId::parse(&r.aggregate_id).ok()?.id;
            Some((r.kapa_source_id?, id))
        })
        .collect())
}

/// Import a source of the tenant's Kapa project: adds a source here linked to it, so its syncs
/// report what Kapa's ingestion says.
#[utoipa::path(post, path = "/v1/sources/kapa/{kapa_source_id}/import", tag = "sources",
    params(("kapa_source_id" = String, Path, description = "The source's id in Kapa", min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_.-]+$")),
    responses((status = 201, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/sources/kapa/{kapa_source_id}/import")]
pub async fn import_kapa_source(
    bus: web::Data<CommandBus>,
    engines: web::Data<EngineStatus>,
    tenants: web::Data<TenantPool>,
    caller: Caller,
    kapa_source_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // One credential check (and one draw on the rate limits) per request: the caller's.
    let auth = Authenticated(caller.claims.clone());
    admin(&auth)?;
    let kapa_source_id = kapa_source_id.into_inner();
    let tenant = bus.tenant_snapshot(&auth.0.tenant_id).await?;
    let (kapa, settings, key) = kapa_of(&engines, &auth, tenant).await?;
    if linked_sources(&tenants, &auth.0.tenant_id)
        .await?
        .iter()
        .any(|(k, _)| *k == kapa_source_id)
    {
        return Err(ApiError::new(
            Code::SourceExists,
            "a source here is already linked to that Kapa source",
        ));
    }
    let found = kapa
        .client()
        .source(
            &key,
            &settings.project_id,
            &kapa_source_id,
            kapa.call_timeout(),
        )
        .await
        .map_err(|e| match e {
            kapa::CallError::Status { status, .. } if status.as_u16() == 404 => ApiError::new(
                Code::SourceNotFound,
                "the tenant's Kapa project has no source with that id",
            ),
            other => kapa_error(other),
        })?;
    // Kapa's connector types do not all match ours; what does not is kept as documentation.
    let kind = match found.kind.as_deref().unwrap_or("") {
        "zendesk" => SourceKind::Zendesk,
        "confluence" => SourceKind::Confluence,
        "notion" => SourceKind::Notion,
        "slack" => SourceKind::Slack,
        _ => SourceKind::Docs,
    };
    let name = found
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("Kapa source {kapa_source_id}"));
    let location = format!(
        "{}/ingestion/v1/projects/{}/sources/{}/",
        kapa.client().base_url().trim_end_matches('/'),
        settings.project_id,
        kapa_source_id
    );
    let body = serde_json::json!({"kapa_source_id": kapa_source_id});
    let ctx = caller.context(&body);
    let command = SourceCommand::Add {
        kind,
        name: name.chars().take(200).collect(),
        location,
        settings: [(KAPA_SOURCE_SETTING.to_string(), kapa_source_id)].into(),
    };
    let outcome = bus.source(&ctx, Uuid::now_v7(), command).await?;
    Ok(HttpResponse::Created().json(outcome))
}
