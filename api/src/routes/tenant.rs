use actix_web::{delete, get, post, put, web, HttpResponse};
use commands::{CommandBus, CommandOutcome};
use domain::tenant::TenantCommand;
use domain::Code;

use crate::auth::Authenticated;
use crate::dto::*;
use crate::problem::ApiError;
use crate::routes::{Caller, CommandProblems};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create)
        .service(get_tenant)
        .service(rename)
        .service(set_kapa)
        .service(set_answer_policy)
        .service(set_quality_objectives)
        .service(quality)
        .service(set_flag)
        .service(clear_flag)
        .service(invite)
        .service(change_role)
        .service(remove_member)
        .service(suspend)
        .service(reactivate);
}

/// The tenant from its read model, in a transaction of the tenant the caller may go on reading
/// in.
async fn read_tenant(
    tenants: &event_store::TenantPool,
    tenant_id: &domain::TenantId,
) -> Result<
    (
        sqlx::Transaction<'static, sqlx::Postgres>,
        domain::tenant::Tenant,
        u64,
    ),
    ApiError,
> {
    let mut tx = super::tenant_tx(tenants, tenant_id).await?;
    let found = projections::tenants::get(&mut tx, tenant_id)
        .await
        .map_err(crate::routes::conversations::read_error)?;
    let (tenant, version) = found.ok_or_else(|| {
        ApiError::new(
            Code::TenantNotFound,
            "this tenant has not been created yet (or its creation has not reached the read model)",
        )
    })?;
    Ok((tx, tenant, version))
}

async fn send(
    bus: &CommandBus,
    caller: &Caller,
    body: &impl serde::Serialize,
    command: TenantCommand,
) -> Result<CommandOutcome, ApiError> {
    Ok(bus.tenant(&caller.context(body), command).await?)
}

/// Create the caller's tenant; the caller becomes its first admin.
#[utoipa::path(post, path = "/v1/tenant", tag = "tenant", request_body = CreateTenantRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 201, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/tenant")]
pub async fn create(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<CreateTenantRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::Create {
        name: body.name.clone(),
        admin_user_id: caller.claims.sub.to_string(),
        admin_email: None,
    };
    let outcome = send(&bus, &caller, &*body, command).await?;
    Ok(HttpResponse::Created().json(outcome))
}

/// The caller's tenant from its read model: settings, feature flags, members and roles (any
/// role). Eventually consistent: compare `version` with a command's to wait for your write.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, body = TenantView), CommandProblems), security(("bearer" = [])))]
#[get("/tenant")]
pub async fn get_tenant(
    tenants: web::Data<event_store::TenantPool>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = auth.0.tenant_id;
    let (tx, tenant, version) = read_tenant(&tenants, &tenant_id).await?;
    super::end_read(tx);
    Ok(HttpResponse::Ok().json(TenantView::new(tenant_id.to_string(), tenant, version)))
}

#[utoipa::path(put, path = "/v1/tenant/name", tag = "tenant", request_body = RenameTenantRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/tenant/name")]
pub async fn rename(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<RenameTenantRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::Rename {
        name: body.name.clone(),
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, &*body, command).await?))
}

/// Set the tenant's Kapa.ai project, integration and API key reference.
#[utoipa::path(put, path = "/v1/tenant/kapa", tag = "tenant", request_body = KapaSettingsRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/tenant/kapa")]
pub async fn set_kapa(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<KapaSettingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::SetKapaSettings {
        project_id: body.project_id.clone(),
        integration_id: body.integration_id.clone(),
        api_key_ref: body.api_key_ref.clone(),
        share_user_email: body.share_user_email,
        share_company_name: body.share_company_name,
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, &*body, command).await?))
}

/// Set the tenant's guardrails (what is redacted or blocked in questions and answers, blocked
/// terms) and answer reuse. Replaces the whole policy.
#[utoipa::path(put, path = "/v1/tenant/answer-policy", tag = "tenant", request_body = AnswerPolicyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/tenant/answer-policy")]
pub async fn set_answer_policy(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<AnswerPolicyRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::SetAnswerPolicy {
        policy: body.clone().into(),
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, &*body, command).await?))
}

/// Override a tenant-controllable flag for the tenant (Admin). Platform-only flags are set by
/// operators (`PUT /v1/admin/tenants/{tenant}/feature-flags/{flag}`).
#[utoipa::path(put, path = "/v1/tenant/feature-flags/{flag}", tag = "tenant", request_body = FeatureFlagRequest,
    params(("flag" = inline(TenantFlagKey), Path, description = "A flag the platform defines and tenants may override"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/tenant/feature-flags/{flag}")]
pub async fn set_flag(
    bus: web::Data<CommandBus>,
    caller: Caller,
    flag: web::Path<String>,
    body: web::Json<FeatureFlagRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::SetFeatureFlag {
        flag: flag.into_inner(),
        setting: body.setting(),
        by_platform: false,
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, &*body, command).await?))
}

/// Remove the tenant's override of a flag: the platform's default applies again.
#[utoipa::path(delete, path = "/v1/tenant/feature-flags/{flag}", tag = "tenant",
    params(("flag" = inline(TenantFlagKey), Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[delete("/tenant/feature-flags/{flag}")]
pub async fn clear_flag(
    bus: web::Data<CommandBus>,
    caller: Caller,
    flag: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::ClearFeatureFlag {
        flag: flag.into_inner(),
        by_platform: false,
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, &(), command).await?))
}

#[utoipa::path(post, path = "/v1/tenant/members", tag = "tenant", request_body = InviteMemberRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/members")]
pub async fn invite(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<InviteMemberRequest>,
) -> Result<HttpResponse, ApiError> {
    let user_id = match (&body.user_id, &body.email) {
        (Some(id), _) => id.clone(),
        (None, Some(_)) => format!("u-{}", uuid::Uuid::now_v7().simple()),
        (None, None) => {
            return Err(ApiError::new(
                Code::InvalidIdentifier,
                "invite by user_id or by email (the person then signs in with a provider that verifies it)",
            ))
        }
    };
    let command = TenantCommand::InviteMember {
        user_id,
        email: body.email.clone(),
        role: body.role.into(),
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, &*body, command).await?))
}

#[utoipa::path(put, path = "/v1/tenant/members/{user_id}/role", tag = "tenant", request_body = ChangeRoleRequest,
    params(("user_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/tenant/members/{user_id}/role")]
pub async fn change_role(
    bus: web::Data<CommandBus>,
    auth: web::Data<crate::auth::Auth>,
    caller: Caller,
    user_id: web::Path<String>,
    body: web::Json<ChangeRoleRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::ChangeMemberRole {
        user_id: user_id.into_inner(),
        role: body.role.into(),
    };
    let outcome = send(&bus, &caller, &*body, command).await?;
    // This instance sees the change at once; others within auth.session_check_ttl_ms.
    auth.forget_tenant(&caller.claims.tenant_id);
    Ok(HttpResponse::Ok().json(outcome))
}

#[utoipa::path(delete, path = "/v1/tenant/members/{user_id}", tag = "tenant",
    params(("user_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[delete("/tenant/members/{user_id}")]
pub async fn remove_member(
    bus: web::Data<CommandBus>,
    auth: web::Data<crate::auth::Auth>,
    caller: Caller,
    user_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::RemoveMember {
        user_id: user_id.into_inner(),
    };
    let outcome = send(&bus, &caller, &(), command).await?;
    // This instance sees the change at once; others within auth.session_check_ttl_ms.
    auth.forget_tenant(&caller.claims.tenant_id);
    Ok(HttpResponse::Ok().json(outcome))
}

#[utoipa::path(post, path = "/v1/tenant/suspend", tag = "tenant", request_body = SuspendTenantRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/suspend")]
pub async fn suspend(
    bus: web::Data<CommandBus>,
    auth: web::Data<crate::auth::Auth>,
    caller: Caller,
    body: web::Json<SuspendTenantRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::Suspend {
        reason: body.reason.clone(),
    };
    let outcome = send(&bus, &caller, &*body, command).await?;
    // This instance sees the change at once; others within auth.session_check_ttl_ms.
    auth.forget_tenant(&caller.claims.tenant_id);
    Ok(HttpResponse::Ok().json(outcome))
}

#[utoipa::path(post, path = "/v1/tenant/reactivate", tag = "tenant",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/reactivate")]
pub async fn reactivate(
    bus: web::Data<CommandBus>,
    auth: web::Data<crate::auth::Auth>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let outcome = send(&bus, &caller, &(), TenantCommand::Reactivate).await?;
    // This instance sees the change at once; others within auth.session_check_ttl_ms.
    auth.forget_tenant(&caller.claims.tenant_id);
    Ok(HttpResponse::Ok().json(outcome))
}

/// Set the tenant's answer-quality objectives (Admin): helpful-answer and answered rates, the
/// rolling window and the smallest sample that decides (docs/observability.md).
#[utoipa::path(put, path = "/v1/tenant/quality-objectives", tag = "tenant", request_body = QualityObjectivesRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/tenant/quality-objectives")]
pub async fn set_quality_objectives(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<QualityObjectivesRequest>,
) -> Result<HttpResponse, ApiError> {
    let command = TenantCommand::SetQualityObjectives {
        objectives: body.clone().into(),
    };
    Ok(HttpResponse::Ok().json(send(&bus, &caller, &*body, command).await?))
}

/// One objective now.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ObjectiveQuality {
    /// `helpful_rate` or `answered_rate`.
    pub objective: String,
    pub target: f64,
    /// The measured share; `null` without votes (or questions).
    pub value: Option<f64>,
    /// Upvotes, or questions answered.
    pub good: i64,
    /// Votes, or questions with an outcome.
    pub total: i64,
    /// `met`, `below_target` (the evaluator records the breach at its next round),
    /// `breached` (recorded: an event, a `quality.changed` webhook) or `insufficient_data`.
    pub status: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QualityView {
    pub objectives: domain::quality::QualityObjectives,
    pub measured: Vec<ObjectiveQuality>,
}

/// The tenant's answer-quality objectives and where it stands against each over the window
/// (any role), from the analytics facts.
#[utoipa::path(get, path = "/v1/tenant/quality", tag = "tenant",
    responses((status = 200, body = QualityView), CommandProblems), security(("bearer" = [])))]
#[get("/tenant/quality")]
pub async fn quality(
    tenants: web::Data<event_store::TenantPool>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = auth.0.tenant_id;
    let (mut tx, tenant, _) = read_tenant(&tenants, &tenant_id).await?;
    let objectives = tenant.quality;
    let measured = crate::quality::measure(&mut *tx, &tenant_id, objectives.window_days)
        .await
        .map_err(crate::routes::conversations::read_error)?;
    super::end_read(tx);
    let measured = domain::quality::QualityObjective::ALL
        .iter()
        .map(|objective| {
            let sample = measured.sample(*objective);
            let target = objectives.target(*objective);
            let value = (sample.total > 0).then(|| sample.good as f64 / sample.total as f64);
            let status = if tenant.quality_breached.contains(objective.as_str()) {
                "breached"
            } else if sample.total < i64::from(objectives.min_sample) {
                "insufficient_data"
            } else if value.is_some_and(|v| v < target) {
                "below_target"
            } else {
                "met"
            };
            ObjectiveQuality {
                objective: objective.as_str().into(),
                target,
                value,
                good: sample.good,
                total: sample.total,
                status: status.into(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(QualityView {
        objectives,
        measured,
    }))
}
