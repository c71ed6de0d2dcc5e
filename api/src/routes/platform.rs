//! What platform operators do across tenants (docs/identity.md): create a tenant with its
//! first Admin invited, suspend and reactivate tenants. Tenant Admins never reach these.
use actix_web::{delete, get, post, put, web, HttpResponse};
use commands::{CommandBus, CommandOutcome};
use domain::tenant::{PlanQuota, TenantCommand};
use domain::Code;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::PlatformOperator;
use crate::dto::SuspendTenantRequest;
use crate::problem::ApiError;
use crate::routes::CommandProblems;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_tenant)
        .service(suspend_tenant)
        .service(reactivate_tenant)
        .service(set_plan)
        .service(clear_plan)
        .service(whoami);
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantByOperatorRequest {
    /// The tenant's id (a-z, 0-9, `-`, `_`).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub tenant_id: String,
    /// The company's name.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub name: String,
    /// The first Admin's address: they sign in with a provider that verifies it.
    #[schema(max_length = 320, format = Email, pattern = "^[^\\x00]*$")]
    pub admin_email: String,
}

/// Creates a tenant and invites its first Admin by e-mail.
#[utoipa::path(post, path = "/v1/platform/tenants", tag = "platform", request_body = CreateTenantByOperatorRequest,
    responses((status = 201, body = CommandOutcome), CommandProblems), security(("platform" = [])))]
#[post("/platform/tenants")]
pub async fn create_tenant(
    bus: web::Data<CommandBus>,
    operator: PlatformOperator,
    body: web::Json<CreateTenantByOperatorRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = operator
        .context(&body.tenant_id)
        .map_err(|e| ApiError::new(Code::InvalidIdentifier, e.detail))?;
    let command = TenantCommand::Create {
        name: body.name.clone(),
        admin_user_id: format!("u-{}", uuid::Uuid::now_v7().simple()),
        admin_email: Some(body.admin_email.clone()),
    };
    Ok(HttpResponse::Created().json(bus.tenant(&ctx, command).await?))
}

/// Suspends a tenant: it accepts no commands until reactivated.
#[utoipa::path(post, path = "/v1/platform/tenants/{tenant}/suspend", tag = "platform", request_body = SuspendTenantRequest,
    params(("tenant" = String, Path, description = "The tenant id", pattern = "^[a-z0-9_-]{1,64}$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("platform" = [])))]
#[post("/platform/tenants/{tenant}/suspend")]
pub async fn suspend_tenant(
    bus: web::Data<CommandBus>,
    operator: PlatformOperator,
    tenant: web::Path<String>,
    body: web::Json<SuspendTenantRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = operator.context(&tenant)?;
    let command = TenantCommand::Suspend {
        reason: body.reason.clone(),
    };
    Ok(HttpResponse::Ok().json(bus.tenant(&ctx, command).await?))
}

/// Reactivates a suspended tenant.
#[utoipa::path(post, path = "/v1/platform/tenants/{tenant}/reactivate", tag = "platform",
    params(("tenant" = String, Path, description = "The tenant id", pattern = "^[a-z0-9_-]{1,64}$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("platform" = [])))]
#[post("/platform/tenants/{tenant}/reactivate")]
pub async fn reactivate_tenant(
    bus: web::Data<CommandBus>,
    operator: PlatformOperator,
    tenant: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ctx = operator.context(&tenant)?;
    Ok(HttpResponse::Ok().json(bus.tenant(&ctx, TenantCommand::Reactivate).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorView {
    /// The operator's address (`platform-operator` for the break-glass credential).
    pub user: String,
}

/// Who the platform operator is.
#[utoipa::path(get, path = "/v1/platform/me", tag = "platform",
    responses((status = 200, body = OperatorView), CommandProblems), security(("platform" = [])))]
#[get("/platform/me")]
pub async fn whoami(operator: PlatformOperator) -> HttpResponse {
    HttpResponse::Ok().json(OperatorView {
        user: operator.user,
    })
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// Questions per minute, the whole tenant.
    #[schema(minimum = 1)]
    pub questions_per_minute: u32,
    /// Questions per calendar month (UTC).
    #[schema(minimum = 1)]
    pub questions_per_month: u64,
}

/// Sets a tenant's plan: its question budgets (the engine-cost protection).
#[utoipa::path(put, path = "/v1/platform/tenants/{tenant}/plan", tag = "platform", request_body = PlanRequest,
    params(("tenant" = String, Path, description = "The tenant id", pattern = "^[a-z0-9_-]{1,64}$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("platform" = [])))]
#[put("/platform/tenants/{tenant}/plan")]
pub async fn set_plan(
    bus: web::Data<CommandBus>,
    operator: PlatformOperator,
    tenant: web::Path<String>,
    body: web::Json<PlanRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = operator.context(&tenant)?;
    let command = TenantCommand::SetPlan {
        quota: Some(PlanQuota {
            questions_per_minute: body.questions_per_minute,
            questions_per_month: body.questions_per_month,
        }),
    };
    Ok(HttpResponse::Ok().json(bus.tenant(&ctx, command).await?))
}

/// Returns a tenant to the default plan (`rate_limits.questions_per_tenant_*`).
#[utoipa::path(delete, path = "/v1/platform/tenants/{tenant}/plan", tag = "platform",
    params(("tenant" = String, Path, description = "The tenant id", pattern = "^[a-z0-9_-]{1,64}$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("platform" = [])))]
#[delete("/platform/tenants/{tenant}/plan")]
pub async fn clear_plan(
    bus: web::Data<CommandBus>,
    operator: PlatformOperator,
    tenant: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ctx = operator.context(&tenant)?;
    Ok(HttpResponse::Ok().json(
        bus.tenant(&ctx, TenantCommand::SetPlan { quota: None })
            .await?,
    ))
}
