//! Feature flags over HTTP: what the signed-in user gets (`GET /v1/flags`), usage reports from
//! the frontend, and the platform operators' view and overrides.
use actix_web::{delete, get, post, put, web, HttpResponse};
use commands::flags::{EvaluationContext, FlagProvider};
use commands::{CommandBus, CommandOutcome};
use domain::tenant::TenantCommand;
use domain::Code;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::auth::{Authenticated, PlatformOperator};
use crate::dto::{FeatureFlagRequest, FlagKey};
use crate::problem::ApiError;
use crate::routes::conversations::read_error;
use crate::routes::CommandProblems;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(evaluate_all)
        .service(report_usage)
        .service(flag_status)
        .service(operator_set)
        .service(operator_clear);
}

/// One flag as the caller gets it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlagValue {
    pub key: String,
    pub value: bool,
    /// `on` or `off`.
    pub variant: String,
    /// `default`, `target_allow`, `target_deny`, `off` or `rollout`.
    pub reason: String,
    pub description: String,
}

/// Every flag the platform defines, evaluated for the signed-in user (what a frontend needs).
/// Each evaluation counts as an exposure.
#[utoipa::path(get, path = "/v1/flags", tag = "flags",
    responses((status = 200, body = Vec<FlagValue>), CommandProblems), security(("bearer" = [])))]
#[get("/flags")]
pub async fn evaluate_all(
    bus: web::Data<CommandBus>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let flags = bus.flags();
    let ctx = EvaluationContext {
        tenant: auth.0.tenant_id.clone(),
        user: auth.0.sub.to_string(),
    };
    let mut values = Vec::with_capacity(domain::flags::FLAGS.len());
    for definition in domain::flags::FLAGS {
        let r = flags
            .resolve_bool(definition.key, definition.default, &ctx)
            .await;
        values.push(FlagValue {
            key: definition.key.to_string(),
            value: r.value,
            variant: r.variant.to_string(),
            reason: r.reason.to_string(),
            description: definition.description.to_string(),
        });
    }
    Ok(HttpResponse::Ok().json(values))
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// How many uses this report stands for (1-100; default 1).
    #[schema(minimum = 1, maximum = 100)]
    pub count: Option<u8>,
}

/// The frontend reports that the signed-in user used a flagged feature (for adoption: exposed
/// users who used it). Rate limited per user and flag (`flags.usage_per_minute`).
#[utoipa::path(post, path = "/v1/flags/{flag}/usage", tag = "flags", request_body = UsageReport,
    params(("flag" = inline(FlagKey), Path)),
    responses((status = 204, description = "Recorded"), CommandProblems), security(("bearer" = [])))]
#[post("/flags/{flag}/usage")]
pub async fn report_usage(
    req: actix_web::HttpRequest,
    tenants: web::Data<event_store::TenantPool>,
    limiter: web::Data<crate::rate_limit::RateLimiter>,
    settings: web::Data<crate::config::FlagSettings>,
    auth: Authenticated,
    flag: web::Path<String>,
    body: web::Json<UsageReport>,
) -> Result<HttpResponse, ApiError> {
    let flag = flag.into_inner();
    if domain::flags::definition(&flag).is_none() {
        return Err(ApiError::new(
            Code::FeatureFlagNotFound,
            format!("the platform defines no flag `{flag}`"),
        ));
    }
    let count = body.count.unwrap_or(1);
    if !(1..=100).contains(&count) {
        return Err(ApiError::new(
            Code::InvalidBody,
            "count is between 1 and 100",
        ));
    }
    let (tenant, user) = (auth.0.tenant_id.as_str(), auth.0.sub.as_str());
    limiter
        .flag_usage(&req, &auth.0, &flag, settings.usage_per_minute)
        .await?;
    let mut tx = super::tenant_tx(&tenants, &auth.0.tenant_id).await?;
    sqlx::query!(
        "INSERT INTO flag_usage (tenant_id, flag, user_id, uses) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, flag, user_id) DO UPDATE
           SET uses = flag_usage.uses + excluded.uses, last_used = now()",
        tenant,
        flag,
        user,
        i64::from(count),
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| read_error(projections::ReadError::from(e)))?;
    super::commit(tx).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A flag as platform operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlagStatus {
    pub key: String,
    pub description: String,
    pub owner: String,
    pub expires: String,
    /// Past its expiry date: remove it or make it permanent.
    pub stale: bool,
    pub default: bool,
    pub tenant_controllable: bool,
    /// Tenants' overrides: `{tenant, enabled, rollout_percentage, allow, deny}`.
    #[schema(value_type = Vec<Object>)]
    pub overrides: Vec<serde_json::Value>,
    /// Evaluations counted per variation (`on`, `off`), flushed every second or so.
    pub evaluations: std::collections::BTreeMap<String, i64>,
    /// Distinct users exposed per variation.
    pub exposed_users: std::collections::BTreeMap<String, i64>,
    /// Distinct users exposed to `on` who reported using the feature.
    pub users_who_used: i64,
    /// `users_who_used` / users exposed to `on`.
    pub adoption: Option<f64>,
}

/// Every flag: definition, staleness, tenants' overrides, evaluation counts and adoption.
#[utoipa::path(get, path = "/v1/admin/flags", tag = "admin",
    responses((status = 200, body = Vec<FlagStatus>), CommandProblems), security(("platform" = [])))]
#[get("/admin/flags")]
pub async fn flag_status(
    pool: web::Data<PgPool>,
    bus: web::Data<CommandBus>,
    _operator: PlatformOperator,
) -> Result<HttpResponse, ApiError> {
    // Every tenant's counts: a platform operator's view, on the owner's pool.
    // What was evaluated until now is counted before it is read.
    bus.flags()
        .exposures()
        .flush(pool.get_ref())
        .await
        .map_err(|e| read_error(projections::ReadError::from(e)))?;
    let db = |e: sqlx::Error| read_error(projections::ReadError::from(e));
    let exposures = sqlx::query!(
        r#"SELECT flag, variation, sum(evaluations)::bigint AS "evaluations!",
                  count(*) AS "users!" FROM flag_exposures GROUP BY flag, variation"#
    )
    .fetch_all(pool.get_ref())
    .await
    .map_err(db)?;
    let adoption = sqlx::query!(
        r#"SELECT e.flag, count(DISTINCT (e.tenant_id, e.user_id)) AS "used!"
             FROM flag_exposures e JOIN flag_usage u
               ON u.tenant_id = e.tenant_id AND u.flag = e.flag AND u.user_id = e.user_id
            WHERE e.variation = 'on' GROUP BY e.flag"#
    )
    .fetch_all(pool.get_ref())
    .await
    .map_err(db)?;
    let overrides = sqlx::query!(
        r#"SELECT tenant_id, event_type,
                  payload -> event_type ->> 'flag' AS "flag!", payload -> event_type AS "setting!"
             FROM (SELECT DISTINCT ON (tenant_id, payload -> event_type ->> 'flag') *
                     FROM events
                    WHERE aggregate_type = 'tenant'
                      AND event_type IN ('FeatureFlagSet', 'FeatureFlagCleared')
                    ORDER BY tenant_id, payload -> event_type ->> 'flag', position DESC) latest
            WHERE event_type = 'FeatureFlagSet'
            ORDER BY tenant_id"#
    )
    .fetch_all(pool.get_ref())
    .await
    .map_err(db)?;
    let today = chrono::Utc::now().date_naive();
    let stale: Vec<&str> = crate::flags::stale_flags(today)
        .iter()
        .map(|f| f.key)
        .collect();
    let statuses: Vec<FlagStatus> = domain::flags::FLAGS
        .iter()
        .map(|d| {
            let mut evaluations = std::collections::BTreeMap::new();
            let mut exposed_users = std::collections::BTreeMap::new();
            for e in exposures.iter().filter(|e| e.flag == d.key) {
                evaluations.insert(e.variation.clone(), e.evaluations);
                exposed_users.insert(e.variation.clone(), e.users);
            }
            let users_who_used = adoption
                .iter()
                .find(|a| a.flag == d.key)
                .map_or(0, |a| a.used);
            let exposed_on = exposed_users.get("on").copied().unwrap_or(0);
            FlagStatus {
                key: d.key.to_string(),
                description: d.description.to_string(),
                owner: d.owner.to_string(),
                expires: d.expires.to_string(),
                stale: stale.contains(&d.key),
                default: d.default,
                tenant_controllable: d.tenant_controllable,
                overrides: overrides
                    .iter()
                    .filter(|o| o.flag == d.key)
                    .map(|o| {
                        let mut setting = o.setting.clone();
                        if let Some(map) = setting.as_object_mut() {
                            map.insert("tenant".into(), o.tenant_id.clone().into());
                        }
                        setting
                    })
                    .collect(),
                evaluations,
                exposed_users,
                users_who_used,
                adoption: (exposed_on > 0).then(|| users_who_used as f64 / exposed_on as f64),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(statuses))
}

/// Override any flag for a tenant (platform operators; recorded as `by_platform`).
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}/feature-flags/{flag}", tag = "admin",
    request_body = FeatureFlagRequest,
    params(("tenant" = String, Path, description = "The tenant id", pattern = "^[a-z0-9_-]{1,64}$"),
           ("flag" = inline(FlagKey), Path)),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("platform" = [])))]
#[put("/admin/tenants/{tenant}/feature-flags/{flag}")]
pub async fn operator_set(
    bus: web::Data<CommandBus>,
    operator: PlatformOperator,
    path: web::Path<(String, String)>,
    body: web::Json<FeatureFlagRequest>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, flag) = path.into_inner();
    let ctx = operator.context(&tenant)?;
    let command = TenantCommand::SetFeatureFlag {
        flag,
        setting: body.setting(),
        by_platform: true,
    };
    Ok(HttpResponse::Ok().json(bus.tenant(&ctx, command).await?))
}

/// Remove a tenant's override of a flag (platform operators).
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant}/feature-flags/{flag}", tag = "admin",
    params(("tenant" = String, Path, description = "The tenant id", pattern = "^[a-z0-9_-]{1,64}$"),
           ("flag" = inline(FlagKey), Path)),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("platform" = [])))]
#[delete("/admin/tenants/{tenant}/feature-flags/{flag}")]
pub async fn operator_clear(
    bus: web::Data<CommandBus>,
    operator: PlatformOperator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, flag) = path.into_inner();
    let ctx = operator.context(&tenant)?;
    let command = TenantCommand::ClearFeatureFlag {
        flag,
        by_platform: true,
    };
    Ok(HttpResponse::Ok().json(bus.tenant(&ctx, command).await?))
}
