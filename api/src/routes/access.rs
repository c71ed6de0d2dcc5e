//! What a tenant's Admin decides about access: the access policy, members' sessions and second
//! factors, API keys for integrations (docs/identity.md).
use actix_web::{delete, get, post, put, web, HttpResponse};
use commands::{CommandBus, CommandOutcome};
use domain::account::{account_id, AccountCommand};
use domain::tenant::TenantCommand;
use domain::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{unavailable, Auth, API_KEY_PREFIX};
use crate::dto::AccessPolicyRequest;
use crate::problem::ApiError;
use crate::routes::{Caller, CommandProblems};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(set_access_policy)
        .service(revoke_member_sessions)
        .service(reset_member_mfa)
        .service(create_api_key)
        .service(list_api_keys)
        .service(revoke_api_key);
}

/// Admins only, and never through an API key (a key cannot mint keys or change access).
fn admin(caller: &Caller) -> Result<(), ApiError> {
    caller.claims.require_admin("access")
}

/// Who may join and how they sign in: allowed e-mail domains and providers, SSO required,
/// who needs a second factor, whether people of an allowed domain join uninvited.
#[utoipa::path(put, path = "/v1/tenant/access-policy", tag = "tenant", request_body = AccessPolicyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/tenant/access-policy")]
pub async fn set_access_policy(
    bus: web::Data<CommandBus>,
    auth: web::Data<Auth>,
    caller: Caller,
    body: web::Json<AccessPolicyRequest>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let command = TenantCommand::SetAccessPolicy {
        policy: body.policy(),
    };
    let outcome = bus.tenant(&caller.context(&*body), command).await?;
    auth.forget_tenant(&caller.claims.tenant_id);
    Ok(HttpResponse::Ok().json(outcome))
}

/// Signs a member out everywhere (a lost laptop, a departure).
#[utoipa::path(delete, path = "/v1/tenant/members/{user_id}/sessions", tag = "tenant",
    params(("user_id" = String, Path)),
    responses((status = 204, description = "Revoked"), CommandProblems), security(("bearer" = [])))]
#[delete("/tenant/members/{user_id}/sessions")]
pub async fn revoke_member_sessions(
    bus: web::Data<CommandBus>,
    auth: web::Data<Auth>,
    caller: Caller,
    user_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let tenant = caller.claims.tenant_id.clone();
    let revoked = auth
        .store
        .revoke_all(Some(tenant.as_str()), &user_id, "admin")
        .await
        .map_err(unavailable)?;
    crate::routes::identity::revoked_sessions(
        &auth,
        &bus,
        &tenant,
        &user_id,
        caller.claims.sub.as_str(),
        caller.claims.role,
        revoked,
        "admin",
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Removes a member's second factor (a lost authenticator): they enrol again at their next
/// sign-in when the tenant requires one.
#[utoipa::path(delete, path = "/v1/tenant/members/{user_id}/mfa", tag = "tenant",
    params(("user_id" = String, Path)),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[delete("/tenant/members/{user_id}/mfa")]
pub async fn reset_member_mfa(
    bus: web::Data<CommandBus>,
    auth: web::Data<Auth>,
    caller: Caller,
    user_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let tenant = caller.claims.tenant_id.clone();
    let outcome = bus
        .account(
            &caller.context(&*user_id),
            account_id(&tenant, &user_id),
            AccountCommand::ResetMfa,
        )
        .await?;
    auth.store
        .delete_factor(tenant.as_str(), &user_id)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(outcome))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What it is for (`Slack bot`).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub name: String,
    /// `operator` or `viewer` (never `admin`).
    pub role: ApiKeyRole,
}

/// What an API key may be: never an Admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyRole {
    Operator,
    Viewer,
}

impl From<ApiKeyRole> for Role {
    fn from(r: ApiKeyRole) -> Self {
        match r {
            ApiKeyRole::Operator => Role::Operator,
            ApiKeyRole::Viewer => Role::Viewer,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub key_id: String,
    pub name: String,
    pub role: ApiKeyRole,
    /// The start of the key, to recognise it in lists.
    pub prefix: String,
    /// The key (`Authorization: Bearer ans_sk_...`). Shown this once; only its digest is kept.
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub key_id: String,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Creates an API key for a server-to-server integration.
#[utoipa::path(post, path = "/v1/tenant/api-keys", tag = "tenant", request_body = CreateApiKeyRequest,
    responses((status = 201, body = CreatedApiKey), CommandProblems), security(("bearer" = [])))]
#[post("/tenant/api-keys")]
pub async fn create_api_key(
    bus: web::Data<CommandBus>,
    auth: web::Data<Auth>,
    caller: Caller,
    body: web::Json<CreateApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let role: Role = body.role.into();
    let tenant = caller.claims.tenant_id.clone();
    let key_id = uuid::Uuid::now_v7().simple().to_string();
    let key = format!("{API_KEY_PREFIX}{}", identity::secret::random_token(32));
    let prefix: String = key.chars().take(API_KEY_PREFIX.len() + 6).collect();
    // The digest first: an event never names a key that cannot be used or revoked.
    auth.store
        .insert_api_key(
            tenant.as_str(),
            &key_id,
            &key,
            body.name.trim(),
            role.as_str(),
            &prefix,
            caller.claims.sub.as_str(),
        )
        .await
        .map_err(unavailable)?;
    let command = TenantCommand::CreateApiKey {
        key_id: key_id.clone(),
        name: body.name.clone(),
        role,
        prefix: prefix.clone(),
    };
    if let Err(e) = bus.tenant(&caller.context(&*body), command).await {
        let _ = auth.store.delete_api_key(tenant.as_str(), &key_id).await;
        return Err(e.into());
    }
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(CreatedApiKey {
            key_id,
            name: body.name.trim().to_string(),
            role: body.role,
            prefix,
            key,
        }))
}

/// The tenant's API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/tenant/api-keys", tag = "tenant",
    responses((status = 200, body = Vec<ApiKeyView>), CommandProblems), security(("bearer" = [])))]
#[get("/tenant/api-keys")]
pub async fn list_api_keys(
    auth: web::Data<Auth>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let keys = auth
        .store
        .api_keys(caller.claims.tenant_id.as_str())
        .await
        .map_err(unavailable)?;
    let views: Vec<ApiKeyView> = keys
        .into_iter()
        .map(|k| ApiKeyView {
            key_id: k.key_id,
            name: k.name,
            role: k.role,
            prefix: k.prefix,
            created_by: k.created_by,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Revokes an API key: requests with it are refused from now on.
#[utoipa::path(delete, path = "/v1/tenant/api-keys/{key_id}", tag = "tenant",
    params(("key_id" = String, Path)),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[delete("/tenant/api-keys/{key_id}")]
pub async fn revoke_api_key(
    bus: web::Data<CommandBus>,
    auth: web::Data<Auth>,
    caller: Caller,
    key_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&caller)?;
    let tenant = caller.claims.tenant_id.clone();
    // Refused at once, before the event: revocation must never wait on anything.
    auth.store
        .revoke_api_key(tenant.as_str(), &key_id)
        .await
        .map_err(unavailable)?;
    let command = TenantCommand::RevokeApiKey {
        key_id: key_id.into_inner(),
    };
    Ok(HttpResponse::Ok().json(bus.tenant(&caller.context(&()), command).await?))
}
