//! The sign-in flow between the identity providers, the tenant's membership and our sessions
//! (docs/identity.md): what the routes in `routes::identity` call.
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse};
use commands::{CommandBus, CommandContext};
use domain::access::{Admission, LinkedIdentity, Provider, VerifiedIdentity};
use domain::account::{account_id, AccountCommand, MfaMethod};
use domain::tenant::TenantCommand;
use domain::{Code, Role, TenantId, UserId};
use identity::store::Issued;
use identity::ProviderError;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{unavailable, Auth, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::problem::ApiError;

/// The CSRF cookie: readable by the page's script, which echoes it in `X-CSRF-Token`.
pub const CSRF_COOKIE: &str = "__Host-answers_csrf";

/// What the sign-in routes need besides `Auth`.
pub struct SignInSettings {
    /// The name authenticator apps show.
    pub totp_issuer: String,
    /// The development profile.
    pub development: bool,
}

/// A session's credentials (also set as cookies for browsers).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The access token (a JWT, `Authorization: Bearer`).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Exchange at `POST /v1/auth/refresh` for the next pair; single use.
    pub refresh_token: String,
    /// Echo in `X-CSRF-Token` on writes authenticated by the cookie.
    pub csrf_token: String,
    /// The session.
    pub session_id: Uuid,
    /// The tenant; absent for a platform operator.
    pub tenant_id: Option<String>,
    /// Who.
    pub user_id: String,
    /// The role in the tenant.
    #[schema(value_type = Option<String>, example = "admin")]
    pub role: Option<Role>,
    /// A platform operator's session.
    pub platform_operator: bool,
    /// With the first session after enrolling a second factor: single-use codes for when the
    /// authenticator is lost, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

/// A sign-in that needs its second factor before a session is issued.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaRequired {
    /// Always `mfa_required`.
    pub status: &'static str,
    /// Send it to `POST /v1/auth/mfa/verify` with the code (or to `/v1/auth/mfa/enrol` first).
    pub mfa_token: String,
    /// The member has no factor yet and must enrol one (the tenant requires it).
    pub enrolment_required: bool,
}

/// The command frame of something done for a person during sign-in.
pub fn person_context(
    tenant_id: &TenantId,
    user: &str,
    role: Role,
) -> Result<CommandContext, ApiError> {
    let user_id =
        UserId::parse(user).map_err(|e| ApiError::new(Code::InvalidIdentifier, e.to_string()))?;
    Ok(CommandContext::acting(tenant_id.clone(), user_id, role))
}

/// Records on a person's sign-in record; a failure to record is logged, never a refusal of
/// what already happened (the session exists; the event is its audit line).
pub async fn record(
    bus: &CommandBus,
    tenant_id: &TenantId,
    who: &str,
    role: Role,
    command: AccountCommand,
) {
    let ctx = match person_context(tenant_id, who, role) {
        Ok(ctx) => ctx,
        Err(_) => match person_context(tenant_id, "unknown", role) {
            Ok(ctx) => ctx,
            Err(_) => return,
        },
    };
    if let Err(error) = bus.account(&ctx, account_id(tenant_id, who), command).await {
        tracing::error!(%error, "could not record an identity event");
    }
}

/// A provider's failure as a problem.
pub fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::NotConfigured => ApiError::new(
            Code::ProviderNotFound,
            "that provider is not configured in this deployment",
        ),
        ProviderError::Unavailable(why) => {
            tracing::warn!(%why, "identity provider unavailable");
            ApiError::new(
                Code::IdentityProviderUnavailable,
                "the identity provider could not be reached; try again",
            )
        }
        ProviderError::Rejected(why) => ApiError::new(Code::SignInFailed, why),
    }
}

/// What a verified identity gets at a tenant: the member, their role and whether they need a
/// second factor, after accepting an invitation or joining when the policy says so. Reads the
/// tenant fresh from its events (not the briefly cached copy): an invitation or a suspension
/// of a moment ago counts.
pub async fn admit(
    auth: &Auth,
    bus: &CommandBus,
    tenant_id: &TenantId,
    identity: &VerifiedIdentity,
) -> Result<(String, Role, bool), ApiError> {
    let tenant = bus.tenant_snapshot(tenant_id).await?;
    let admission = tenant
        .admit(identity)
        .map_err(|e| ApiError::new(e.code, e.message))?;
    let linked = LinkedIdentity {
        provider: identity.provider,
        subject: identity.subject.clone(),
    };
    let (user_id, role) = match admission {
        Admission::Member { user_id, role } => (user_id, role),
        Admission::AcceptsInvitation { user_id, role } => {
            let ctx = person_context(tenant_id, &user_id, role)?;
            bus.sign_in_membership(
                &ctx,
                TenantCommand::AcceptInvitation {
                    user_id: user_id.clone(),
                    identity: linked,
                },
            )
            .await?;
            (user_id, role)
        }
        Admission::Joins { role } => {
            let user_id = format!("{}-{}", identity.provider, identity.subject);
            let ctx = person_context(tenant_id, &user_id, role)?;
            bus.sign_in_membership(
                &ctx,
                TenantCommand::Join {
                    user_id: user_id.clone(),
                    email: identity.email.clone().unwrap_or_default(),
                    identity: linked,
                },
            )
            .await?;
            (user_id, role)
        }
    };
    auth.forget_tenant(tenant_id);
    let mfa_required = tenant.access.mfa_required.applies_to(role);
    Ok((user_id, role, mfa_required))
}

/// Opens a session and signs its first access token.
#[allow(clippy::too_many_arguments)]
pub async fn open_session(
    auth: &Auth,
    bus: &CommandBus,
    req: &HttpRequest,
    tenant_id: Option<&TenantId>,
    user_id: &str,
    role: Option<Role>,
    provider: Provider,
    mfa: bool,
    recovery_codes: Option<Vec<String>>,
) -> Result<HttpResponse, ApiError> {
    let user_agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let issued = auth
        .store
        .create_session(
            tenant_id.map(TenantId::as_str),
            user_id,
            provider.as_str(),
            mfa,
            user_agent,
            std::time::Duration::from_secs(auth.settings.session_absolute_secs),
        )
        .await
        .map_err(unavailable)?;
    if let (Some(tenant_id), Some(role)) = (tenant_id, role) {
        record(
            bus,
            tenant_id,
            user_id,
            role,
            AccountCommand::RecordSignIn {
                user_id: user_id.to_string(),
                provider,
                session_id: issued.session.session_id,
                mfa,
            },
        )
        .await;
    }
    let Issued {
        session,
        refresh_token,
        csrf_token,
    } = issued;
    respond(
        auth,
        session.session_id,
        tenant_id,
        user_id,
        role,
        refresh_token,
        Some(csrf_token),
        recovery_codes,
    )
}

/// The token response for a session (a new one, or a refreshed one).
#[allow(clippy::too_many_arguments)]
pub fn respond(
    auth: &Auth,
    session_id: Uuid,
    tenant_id: Option<&TenantId>,
    user_id: &str,
    role: Option<Role>,
    refresh_token: String,
    csrf_token: Option<String>,
    recovery_codes: Option<Vec<String>>,
) -> Result<HttpResponse, ApiError> {
    let ttl = auth.settings.access_ttl_secs;
    let mut claims = auth.keys.claims(user_id, ttl);
    claims.sid = Some(session_id);
    claims.tenant_id = tenant_id.map(|t| t.to_string());
    claims.role = role;
    claims.platform = tenant_id.is_none();
    let access_token = auth.keys.sign(&claims).map_err(|e| {
        ApiError::infrastructure(Code::InternalError, "could not sign the access token", &e)
    })?;
    let secure = auth.settings.cookie_secure;
    let cookie = |name: &'static str, value: String, max_age: u64, http_only: bool, same_site| {
        Cookie::build(name, value)
            .path("/")
            .secure(secure)
            .http_only(http_only)
            .same_site(same_site)
            .max_age(CookieDuration::seconds(
                i64::try_from(max_age).unwrap_or(i64::MAX),
            ))
            .finish()
    };
    let absolute = auth.settings.session_absolute_secs;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .cookie(cookie(
            ACCESS_COOKIE,
            access_token.clone(),
            ttl,
            true,
            SameSite::Lax,
        ))
        .cookie(cookie(
            REFRESH_COOKIE,
            refresh_token.clone(),
            absolute,
            true,
            SameSite::Strict,
        ));
    if let Some(csrf) = &csrf_token {
        response.cookie(cookie(
            CSRF_COOKIE,
            csrf.clone(),
            absolute,
            false,
            SameSite::Strict,
        ));
    }
    Ok(response.json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token,
        csrf_token: csrf_token.unwrap_or_default(),
        session_id,
        tenant_id: tenant_id.map(|t| t.to_string()),
        user_id: user_id.to_string(),
        role,
        platform_operator: tenant_id.is_none(),
        recovery_codes,
    }))
}

/// A response that clears the session cookies.
pub fn signed_out() -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        let mut c = Cookie::build(name, "").path("/").secure(true).finish();
        c.make_removal();
        response.cookie(c);
    }
    response.finish()
}

/// The member's second factor is needed before a session: a challenge.
pub async fn challenge(
    auth: &Auth,
    tenant_id: &TenantId,
    user_id: &str,
    provider: Provider,
    enrolment_required: bool,
) -> Result<HttpResponse, ApiError> {
    let mfa_token = auth
        .store
        .create_challenge(
            tenant_id.as_str(),
            user_id,
            provider.as_str(),
            std::time::Duration::from_secs(auth.settings.mfa_ttl_secs),
        )
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(MfaRequired {
            status: "mfa_required",
            mfa_token,
            enrolment_required,
        }))
}

/// How a second factor was proven, for the record.
pub fn method(recovery: bool) -> MfaMethod {
    if recovery {
        MfaMethod::RecoveryCode
    } else {
        MfaMethod::Totp
    }
}
