//! The audit trail for compliance reviewers (admin only). Every read here is itself recorded.
use actix_web::web::Bytes;
use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::knowledge_source::SourceEvent;
use domain::tenant::TenantEvent;
use domain::Code;
use domain::{Role, TenantId};
use event_store::TenantPool;
use projections::audit::{self, AuditEntry, AuditFilter, AuditRead};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::{commit, end_read, tenant_tx};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::dto::{Moment, SourceView, TenantView};
use crate::problem::ApiError;
use crate::routes::conversations::read_error;
use crate::routes::{parse_word, CommandProblems};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(export)
        .service(state_at)
        .service(raw_events)
        .service(reads);
}

domain::text_enum! {
    /// The export formats of the trail.
    pub enum ExportFormat {
        Ndjson = "ndjson",
        Csv = "csv",
    }
}

/// Only admins read the trail, and each read is recorded before it is answered.
async fn admit(
    tenants: &TenantPool,
    auth: &Authenticated,
    req: &HttpRequest,
) -> Result<(), ApiError> {
    if auth.0.role != Role::Admin {
        return Err(ApiError::new(
            Code::Forbidden,
            "only an admin reads the audit trail",
        ));
    }
    let mut tx = tenant_tx(tenants, &auth.0.tenant_id).await?;
    audit::record_read(
        &mut tx,
        &auth.0.tenant_id,
        auth.0.sub.as_str(),
        auth.0.role.as_str(),
        req.path(),
        req.query_string(),
    )
    .await
    .map_err(read_error)?;
    commit(tx).await
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Acting user.
    #[param(pattern = "^[^\\x00]*$")]
    pub actor: Option<String>,
    /// Event type, e.g. `MemberRoleChanged`.
    #[param(pattern = "^[^\\x00]*$")]
    pub action: Option<String>,
    /// `tenant`, `conversation` or `knowledge_source`.
    #[param(value_type = Option<domain::AggregateType>, inline)]
    pub object_type: Option<String>,
    #[param(pattern = "^[^\\x00]*$")]
    pub object_id: Option<String>,
    /// Inclusive start (RFC 3339).
    #[param(value_type = Option<Moment>, inline)]
    pub from: Option<Moment>,
    /// Exclusive end (RFC 3339).
    #[param(value_type = Option<Moment>, inline)]
    pub to: Option<Moment>,
    /// Page size 1-500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(minimum = 0)]
    pub cursor: Option<i64>,
    /// Export only: `ndjson` (default) or `csv`.
    #[param(value_type = Option<ExportFormat>, inline)]
    pub format: Option<String>,
}

impl AuditQuery {
    /// Every parameter checked, whichever route reads it: (filter, page size, cursor, csv).
    fn checked(&self) -> Result<(AuditFilter, i64, i64, bool), ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::new(
                Code::InvalidLimit,
                "limit must be between 1 and 500",
            ));
        }
        let cursor = self.cursor.unwrap_or(0);
        if cursor < 0 {
            return Err(ApiError::new(
                Code::InvalidCursor,
                "the cursor is a position, 0 or more",
            ));
        }
        let csv =
            parse_word(self.format.as_deref(), Code::InvalidFormat)? == Some(ExportFormat::Csv);
        Ok((self.filter()?, limit, cursor, csv))
    }

    fn filter(&self) -> Result<AuditFilter, ApiError> {
        let object_type: Option<domain::AggregateType> =
            parse_word(self.object_type.as_deref(), Code::InvalidObjectType)?;
        Ok(AuditFilter {
            actor: self.actor.clone(),
            action: self.action.clone(),
            object_type: object_type.map(|t| t.to_string()),
            object_id: self.object_id.clone(),
            from: self.from.map(|m| m.0),
            to: self.to.map(|m| m.0),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<i64>,
}

/// The tenant's audit trail: who did what to which object, when, with which outcome.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), CommandProblems), security(("bearer" = [])))]
#[get("/audit")]
pub async fn list(
    primary: web::Data<TenantPool>,
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let (filter, limit, cursor, _) = query.checked()?;
    admit(&primary, &auth, &req).await?;
    let mut tx = tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let items = audit::page(&mut tx, &auth.0.tenant_id, &filter, cursor, limit)
        .await
        .map_err(read_error)?;
    end_read(tx);
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.position))
        .flatten();
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}

const EXPORT_PAGE: i64 = 1000;

/// The whole filtered trail as NDJSON or CSV, streamed page by page (memory stays bounded
/// whatever the size).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "NDJSON (default) or CSV (format=csv)",
        content((String = "application/x-ndjson"), (String = "text/csv"))), CommandProblems),
    security(("bearer" = [])))]
#[get("/audit/export")]
pub async fn export(
    primary: web::Data<TenantPool>,
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let (filter, _, _, csv) = query.checked()?;
    admit(&primary, &auth, &req).await?;
    let state = ExportState {
        tenants: TenantPool::clone(&tenants),
        tenant: auth.0.tenant_id.clone(),
        filter,
        after: 0,
        header: csv,
        done: false,
    };
    let body = futures::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        let mut chunk = String::new();
        if s.header {
            chunk.push_str(audit::CSV_HEADER);
            s.header = false;
        }
        // A transaction per page: the export holds no connection between pages.
        let page = async {
            let mut tx = s.tenants.begin(&s.tenant).await?;
            let entries = audit::page(&mut tx, &s.tenant, &s.filter, s.after, EXPORT_PAGE).await?;
            tx.commit().await?;
            Ok::<_, projections::ReadError>(entries)
        };
        match page.await {
            Ok(entries) => {
                s.done = (entries.len() as i64) < EXPORT_PAGE;
                if let Some(last) = entries.last() {
                    s.after = last.position;
                }
                for e in &entries {
                    if csv {
                        chunk.push_str(&e.csv_line());
                    } else {
                        chunk.push_str(&serde_json::to_string(e).unwrap_or_default());
                        chunk.push('\n');
                    }
                }
                Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), s))
            }
            Err(e) => {
                // Headers are gone already: end the stream early; the client sees a short body.
                tracing::error!(error = %e, "audit export failed mid-stream");
                s.done = true;
                Some((
                    Err(actix_web::error::ErrorInternalServerError("export failed")),
                    s,
                ))
            }
        }
    });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .streaming(body))
}

struct ExportState {
    tenants: TenantPool,
    tenant: TenantId,
    filter: AuditFilter,
    after: i64,
    header: bool,
    done: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AtQuery {
    /// The moment (RFC 3339).
    #[param(value_type = Moment, inline)]
    pub at: Moment,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointInTime {
    pub object_type: String,
    pub object_id: String,
    pub at: DateTime<Utc>,
    /// The object as it was: a tenant, a knowledge source, or a conversation exactly as the
    /// conversations read model showed it.
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

/// The state of a tenant, knowledge source or conversation as of a moment, rebuilt from its
/// events up to then.
#[utoipa::path(get, path = "/v1/audit/state/{object_type}/{object_id}", tag = "audit",
    params(("object_type" = domain::AggregateType, Path, description = "`tenant`, `knowledge_source` or `conversation`"),
           ("object_id" = String, Path, description = "the tenant id, or the object's UUID"), AtQuery),
    responses((status = 200, body = PointInTime), CommandProblems), security(("bearer" = [])))]
#[get("/audit/state/{object_type}/{object_id}")]
pub async fn state_at(
    primary: web::Data<TenantPool>,
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<AtQuery>,
) -> Result<HttpResponse, ApiError> {
    admit(&primary, &auth, &req).await?;
    let (object_type, object_id) = path.into_inner();
    let tenant = &auth.0.tenant_id;
    let not_found = || {
        ApiError::new(
            Code::ObjectNotFound,
            "the object did not exist at that moment",
        )
    };
    let uuid = || {
        Uuid::parse_str(&object_id)
            .map_err(|_| ApiError::new(Code::InvalidPath, "the object id is not a UUID"))
    };
    let mut tx = tenant_tx(&tenants, tenant).await?;
    let state = match object_type.as_str() {
        "conversation" => {
            let detail = projections::conversations::state_at(&mut tx, tenant, uuid()?, query.at.0)
                .await
                .map_err(|e| {
                    if e.is_poison() {
                        ApiError::infrastructure(
                            Code::StoredDataUnreadable,
                            "a stored event of this object cannot be replayed",
                            &e,
                        )
                    } else {
                        ApiError::infrastructure(
                            Code::ServiceUnavailable,
                            "the replay failed; retry shortly",
                            &e,
                        )
                    }
                })?
                .ok_or_else(not_found)?;
            serde_json::to_value(detail)
        }
        "tenant" => {
            if object_id != tenant.as_str() {
                return Err(not_found());
            }
            let (state, version) = replay::<domain::tenant::Tenant, TenantEvent>(
                &mut tx,
                "tenant",
                tenant.as_str(),
                query.at.0,
            )
            .await?;
            serde_json::to_value(TenantView::new(tenant.to_string(), state, version))
        }
        "knowledge_source" => {
            let id = uuid()?;
            let (state, version) =
                replay::<domain::knowledge_source::KnowledgeSource, SourceEvent>(
                    &mut tx,
                    "knowledge_source",
                    &tenant.scope(id).to_string(),
                    query.at.0,
                )
                .await?;
            serde_json::to_value(SourceView::new(id, state, version))
        }
        _ => {
            return Err(ApiError::new(
                Code::InvalidObjectType,
                "object_type is `tenant`, `knowledge_source` or `conversation`",
            ))
        }
    }
    .map_err(|e| ApiError::new(Code::InternalError, e.to_string()))?;
    end_read(tx);
    Ok(HttpResponse::Ok().json(PointInTime {
        object_type,
        object_id,
        at: query.at.0,
        state,
    }))
}

/// Folds an aggregate's events recorded up to `at` into its state (the aggregate's own `apply`).
async fn replay<A, E>(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    at: DateTime<Utc>,
) -> Result<(A, u64), ApiError>
where
    A: cqrs_es::Aggregate<Event = E>,
    E: serde::de::DeserializeOwned,
{
    let events = event_store::aggregate_events(conn, aggregate_type, aggregate_id, Some(at))
        .await
        .map_err(read_error)?;
    if events.is_empty() {
        return Err(ApiError::new(
            Code::ObjectNotFound,
            "the object did not exist at that moment",
        ));
    }
    let mut state = A::default();
    for e in &events {
        let event: E = serde_json::from_value(e.payload.clone()).map_err(|err| {
            tracing::error!(error = %err, event_id = %e.event_id, "stored event unreadable");
            ApiError::new(
                Code::StoredDataUnreadable,
                "a stored event could not be read",
            )
        })?;
        state.apply(event);
    }
    Ok((state, events.len() as u64))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WindowQuery {
    /// Inclusive start (RFC 3339).
    #[param(value_type = Moment, inline)]
    pub from: Moment,
    /// Exclusive end (RFC 3339).
    #[param(value_type = Moment, inline)]
    pub to: Moment,
}

/// The tenant's raw events recorded in a window, in order, as NDJSON (streamed).
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(WindowQuery),
    responses((status = 200, description = "NDJSON of stored events", content_type = "application/x-ndjson", body = String), CommandProblems), security(("bearer" = [])))]
#[get("/audit/events")]
pub async fn raw_events(
    primary: web::Data<TenantPool>,
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
    req: HttpRequest,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    admit(&primary, &auth, &req).await?;
    let (from, to, tenant, tenants) = (
        query.from.0,
        query.to.0,
        auth.0.tenant_id.clone(),
        TenantPool::clone(&tenants),
    );
    let body = futures::stream::unfold((0i64, false), move |(after, done)| {
        let (tenants, tenant) = (tenants.clone(), tenant.clone());
        async move {
            if done {
                return None;
            }
            let page = async {
                let mut tx = tenants.begin(&tenant).await?;
                let events = event_store::tenant_events_page(
                    &mut tx,
                    tenant.as_str(),
                    from,
                    to,
                    after,
                    EXPORT_PAGE,
                )
                .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(events)
            };
            match page.await {
                Ok(events) => {
                    let next = events.last().map_or(after, |e| e.position);
                    let mut chunk = String::new();
                    for e in &events {
                        chunk.push_str(
                            &serde_json::to_string(&streaming::Envelope::from(e))
                                .unwrap_or_default(),
                        );
                        chunk.push('\n');
                    }
                    Some((
                        Ok::<_, actix_web::Error>(Bytes::from(chunk)),
                        (next, (events.len() as i64) < EXPORT_PAGE),
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "raw event export failed mid-stream");
                    Some((
                        Err(actix_web::error::ErrorInternalServerError("export failed")),
                        (after, true),
                    ))
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body))
}

/// Who read the audit trail, what and when (newest first).
#[utoipa::path(get, path = "/v1/audit/reads", tag = "audit",
    responses((status = 200, body = Vec<AuditRead>), CommandProblems), security(("bearer" = [])))]
#[get("/audit/reads")]
pub async fn reads(
    primary: web::Data<TenantPool>,
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admit(&primary, &auth, &req).await?;
    let mut tx = tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let reads = audit::reads(&mut tx, &auth.0.tenant_id, 500)
        .await
        .map_err(read_error)?;
    end_read(tx);
    Ok(HttpResponse::Ok().json(reads))
}
