//! Sign-in, sessions and second factors (docs/identity.md).
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use commands::CommandBus;
use domain::access::Provider;
use domain::account::{account_id, AccountCommand};
use domain::{Code, Role, TenantId};
use identity::store::Refreshed;
use identity::{secret, totp, Providers};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{unavailable, Auth, Authenticated, Via, REFRESH_COOKIE};
use crate::dto::ProviderDto;
use crate::problem::ApiError;
use crate::routes::CommandProblems;
use crate::sign_in::{self, SignInSettings, TokenResponse};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_providers)
        .service(authorize)
        .service(callback)
        .service(mfa_verify)
        .service(mfa_enrol)
        .service(mfa_confirm)
        .service(refresh)
        .service(me)
        .service(list_sessions)
        .service(sign_out)
        .service(revoke_session);
}

/// Our public signing keys (JWKS): what another service verifies our access tokens with.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, description = "A JSON Web Key Set", body = Object)))]
#[get("/.well-known/jwks.json")]
pub async fn jwks(auth: web::Data<Auth>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=300",
        ))
        .json(auth.keys.jwks())
}

fn provider(word: &str) -> Result<Provider, ApiError> {
    word.parse().map_err(|_| {
        ApiError::new(
            Code::ProviderNotFound,
            format!("`{word}` is not a provider (google, microsoft, github)"),
        )
    })
}

/// The providers one may sign in with in this deployment.
#[utoipa::path(get, path = "/v1/auth/providers", tag = "identity",
    responses((status = 200, body = Vec<ProviderDto>)))]
#[get("/auth/providers")]
pub async fn list_providers(providers: web::Data<Providers>) -> HttpResponse {
    let list: Vec<ProviderDto> = providers.configured().into_iter().map(Into::into).collect();
    HttpResponse::Ok().json(list)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// The tenant to sign in to; omitted, a platform operator signs in.
    #[param(pattern = "^[a-z0-9_-]{1,64}$")]
    pub tenant: Option<String>,
}

/// Where to send the browser to sign in (`Location`, also in the body): the provider's
/// authorization endpoint with PKCE (S256), a single-use `state` and a `nonce`.
#[utoipa::path(get, path = "/v1/auth/{provider}/authorize", tag = "identity",
    params(("provider" = inline(ProviderDto), Path), AuthorizeQuery),
    responses((status = 302, description = "To the provider", body = AuthorizationUrl), CommandProblems,
        (status = 502, description = "The provider is unreachable", content_type = "application/problem+json")))]
#[get("/auth/{provider}/authorize")]
pub async fn authorize(
    auth: web::Data<Auth>,
    providers: web::Data<Providers>,
    path: web::Path<String>,
    query: web::Query<AuthorizeQuery>,
) -> Result<HttpResponse, ApiError> {
    let provider = provider(&path)?;
    let tenant_id = query
        .tenant
        .as_deref()
        .map(TenantId::parse)
        .transpose()
        .map_err(|e| ApiError::new(Code::InvalidQuery, e.to_string()))?;
    let redirect_uri = providers
        .redirect_uri(provider)
        .map_err(sign_in::provider_error)?
        .to_string();
    let (state, nonce, verifier) = (
        secret::random_token(32),
        secret::random_token(32),
        secret::random_token(48),
    );
    let url = providers
        .authorization_url(provider, &state, &nonce, &secret::pkce_challenge(&verifier))
        .await
        .map_err(sign_in::provider_error)?;
    auth.store
        .start_attempt(
            &state,
            &identity::store::Attempt {
                tenant_id: tenant_id.map(|t| t.to_string()),
                provider: provider.to_string(),
                nonce,
                code_verifier: verifier,
                redirect_uri,
            },
            std::time::Duration::from_secs(auth.settings.sign_in_ttl_secs),
        )
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Found()
        .insert_header((actix_web::http::header::LOCATION, url.clone()))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(AuthorizationUrl {
            authorization_url: url,
        }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationUrl {
    pub authorization_url: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    #[param(max_length = 4096)]
    pub code: Option<String>,
    /// The `state` the sign-in started with.
    #[param(max_length = 256)]
    pub state: Option<String>,
    /// The provider's error (the person declined...).
    #[param(max_length = 256)]
    pub error: Option<String>,
}

/// The provider's redirect back: exchanges the code, validates the identity, applies the
/// tenant's access policy (accepting an invitation on a first sign-in), then issues a session
/// or asks for the second factor.
#[utoipa::path(get, path = "/v1/auth/{provider}/callback", tag = "identity",
    params(("provider" = inline(ProviderDto), Path), CallbackQuery),
    responses((status = 200, description = "A session (TokenResponse) or a second factor to give (MfaRequired)", body = TokenResponse),
        CommandProblems,
        (status = 502, description = "The provider is unreachable", content_type = "application/problem+json")))]
#[get("/auth/{provider}/callback")]
pub async fn callback(
    req: HttpRequest,
    auth: web::Data<Auth>,
    bus: web::Data<CommandBus>,
    providers: web::Data<Providers>,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let provider = provider(&path)?;
    let state = query.state.as_deref().unwrap_or_default();
    let attempt = auth
        .store
        .take_attempt(state)
        .await
        .map_err(unavailable)?
        .filter(|a| a.provider == provider.as_str())
        .ok_or_else(|| {
            ApiError::new(
                Code::SignInStateInvalid,
                "this sign-in is unknown, expired or already completed: start again",
            )
        })?;
    let tenant_id = attempt
        .tenant_id
        .as_deref()
        .map(TenantId::parse)
        .transpose()
        .map_err(|_| ApiError::new(Code::StoredDataUnreadable, "a stored sign-in is unreadable"))?;
    let outcome = match (&query.error, &query.code) {
        (Some(error), _) => Err(ApiError::new(
            Code::SignInFailed,
            format!("the provider ended the sign-in: {error}"),
        )),
        (None, None) => Err(ApiError::new(
            Code::SignInFailed,
            "the provider sent no code",
        )),
        (None, Some(code)) => providers
            .identify(provider, code, &attempt.code_verifier, &attempt.nonce)
            .await
            .map_err(sign_in::provider_error),
    };
    let identity = match outcome {
        Ok(identity) => identity,
        Err(e) => {
            if let Some(tenant_id) = &tenant_id {
                let command = AccountCommand::RecordSignInFailure {
                    provider,
                    reason: e.code,
                };
                sign_in::record(&bus, tenant_id, "unknown", Role::Viewer, command).await;
            }
            return Err(e);
        }
    };
    let Some(tenant_id) = tenant_id else {
        // A platform operator: outside every tenant, configured by the deployment.
        return match identity.email.as_deref() {
            Some(email) if auth.is_operator(email) => {
                sign_in::open_session(&auth, &bus, &req, None, email, None, provider, false, None)
                    .await
            }
            _ => {
                tracing::warn!(%provider, "a platform sign-in by someone who is not an operator");
                Err(ApiError::new(
                    Code::NotAnOperator,
                    "this identity is not a platform operator of this deployment",
                ))
            }
        };
    };
    let who = identity
        .email
        .clone()
        .unwrap_or_else(|| format!("{provider}-{}", identity.subject));
    let (user_id, role, mfa_required) =
        match sign_in::admit(&auth, &bus, &tenant_id, &identity).await {
            Ok(admitted) => admitted,
            Err(e) => {
                let command = AccountCommand::RecordSignInFailure {
                    provider,
                    reason: e.code,
                };
                sign_in::record(&bus, &tenant_id, &who, Role::Viewer, command).await;
                return Err(e);
            }
        };
    let factor = auth
        .store
        .factor(tenant_id.as_str(), &user_id)
        .await
        .map_err(unavailable)?;
    let enrolled = factor.as_ref().is_some_and(|f| f.confirmed);
    if enrolled || mfa_required {
        return sign_in::challenge(&auth, &tenant_id, &user_id, provider, !enrolled).await;
    }
    sign_in::open_session(
        &auth,
        &bus,
        &req,
        Some(&tenant_id),
        &user_id,
        Some(role),
        provider,
        false,
        None,
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    /// From the sign-in's `mfa_required` answer.
    #[schema(min_length = 1, max_length = 256)]
    pub mfa_token: String,
    /// The authenticator's six digits.
    #[schema(max_length = 16)]
    pub code: Option<String>,
    /// Or one of the recovery codes.
    #[schema(max_length = 64)]
    pub recovery_code: Option<String>,
}

/// A second factor completes a sign-in. The first code after enrolling confirms the factor and
/// returns the recovery codes (once) with the session.
#[utoipa::path(post, path = "/v1/auth/mfa/verify", tag = "identity", request_body = MfaVerifyRequest,
    responses((status = 200, body = TokenResponse), CommandProblems))]
#[post("/auth/mfa/verify")]
pub async fn mfa_verify(
    req: HttpRequest,
    auth: web::Data<Auth>,
    bus: web::Data<CommandBus>,
    body: web::Json<MfaVerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let invalid = || {
        ApiError::new(
            Code::MfaChallengeInvalid,
            "this second-factor challenge is unknown, expired or used: sign in again",
        )
    };
    let (tenant, user_id, provider) = auth
        .store
        .challenge(&body.mfa_token)
        .await
        .map_err(unavailable)?
        .ok_or_else(invalid)?;
    let stored = |_| {
        ApiError::new(
            Code::StoredDataUnreadable,
            "a stored challenge is unreadable",
        )
    };
    let tenant_id = TenantId::parse(&tenant).map_err(stored)?;
    let provider: Provider = provider.parse().map_err(|_| {
        ApiError::new(
            Code::StoredDataUnreadable,
            "a stored challenge is unreadable",
        )
    })?;
    let factor = auth
        .store
        .factor(&tenant, &user_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ApiError::new(
                Code::MfaNotEnrolled,
                "enrol a factor first (POST /v1/auth/mfa/enrol with this mfa_token)",
            )
        })?;
    let newly_confirmed = !factor.confirmed;
    let accepted = match (&body.code, &body.recovery_code) {
        (Some(code), None) => match totp::verify(
            &factor.secret,
            code,
            identity::keys::now_secs(),
            u64::try_from(factor.last_step).unwrap_or_default(),
        ) {
            Some(step) => auth
                .store
                .use_step(&tenant, &user_id, i64::try_from(step).unwrap_or(i64::MAX))
                .await
                .map_err(unavailable)?,
            None => false,
        },
        (None, Some(code)) if factor.confirmed => auth
            .store
            .use_recovery_code(&tenant, &user_id, code)
            .await
            .map_err(unavailable)?,
        (None, Some(_)) => false,
        _ => {
            return Err(ApiError::new(
                Code::InvalidBody,
                "send either `code` or `recovery_code`",
            ))
        }
    };
    let tenant_state = auth.tenant(&tenant_id).await?;
    let role = tenant_state
        .members
        .get(&user_id)
        .map(|m| m.role)
        .ok_or_else(invalid)?;
    if !accepted {
        auth.store
            .fail_challenge(&body.mfa_token)
            .await
            .map_err(unavailable)?;
        let command = AccountCommand::RecordSignInFailure {
            provider,
            reason: Code::MfaCodeInvalid,
        };
        sign_in::record(&bus, &tenant_id, &user_id, role, command).await;
        return Err(ApiError::new(
            Code::MfaCodeInvalid,
            "the code is wrong, outside the time window, or already used",
        ));
    }
    if !auth
        .store
        .close_challenge(&body.mfa_token)
        .await
        .map_err(unavailable)?
    {
        return Err(invalid());
    }
    let recovery_codes = if newly_confirmed {
        Some(enrolled(&auth, &bus, &tenant_id, &user_id, role).await?)
    } else {
        None
    };
    let command = AccountCommand::RecordMfaUse {
        method: sign_in::method(body.recovery_code.is_some()),
    };
    sign_in::record(&bus, &tenant_id, &user_id, role, command).await;
    sign_in::open_session(
        &auth,
        &bus,
        &req,
        Some(&tenant_id),
        &user_id,
        Some(role),
        provider,
        true,
        recovery_codes,
    )
    .await
}

/// Records the enrolment and makes the recovery codes (returned in clear, once).
async fn enrolled(
    auth: &Auth,
    bus: &CommandBus,
    tenant_id: &TenantId,
    user_id: &str,
    role: Role,
) -> Result<Vec<String>, ApiError> {
    let codes = totp::recovery_codes();
    auth.store
        .set_recovery_codes(tenant_id.as_str(), user_id, &codes)
        .await
        .map_err(unavailable)?;
    let command = AccountCommand::EnrolMfa {
        user_id: user_id.to_string(),
    };
    sign_in::record(bus, tenant_id, user_id, role, command).await;
    Ok(codes)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MfaEnrolRequest {
    /// During a sign-in that requires a factor the member does not have yet; omitted, the
    /// signed-in caller (bearer token) enrols.
    #[schema(max_length = 256)]
    pub mfa_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MfaEnrolment {
    /// The seed, base32 (for typing into an authenticator).
    pub secret: String,
    /// The same as an `otpauth://` URL (for a QR code).
    pub otpauth_url: String,
}

/// Starts a TOTP enrolment: a new seed, confirmed by the first code (`/v1/auth/mfa/verify`
/// during a sign-in, `/v1/auth/mfa/confirm` when signed in).
#[utoipa::path(post, path = "/v1/auth/mfa/enrol", tag = "identity", request_body = MfaEnrolRequest,
    responses((status = 200, body = MfaEnrolment), CommandProblems), security((), ("bearer" = [])))]
#[post("/auth/mfa/enrol")]
pub async fn mfa_enrol(
    req: HttpRequest,
    auth: web::Data<Auth>,
    settings: web::Data<SignInSettings>,
    body: web::Json<MfaEnrolRequest>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user_id) = match &body.mfa_token {
        Some(token) => {
            let (tenant, user, _) = auth
                .store
                .challenge(token)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    ApiError::new(
                        Code::MfaChallengeInvalid,
                        "this second-factor challenge is unknown, expired or used: sign in again",
                    )
                })?;
            (tenant, user)
        }
        None => {
            let caller = signed_in(&req).await?;
            (caller.tenant_id.to_string(), caller.sub.to_string())
        }
    };
    let seed = totp::new_secret();
    if !auth
        .store
        .put_pending_factor(&tenant, &user_id, &seed)
        .await
        .map_err(unavailable)?
    {
        return Err(ApiError::new(
            Code::MfaAlreadyEnrolled,
            "a second factor is already enrolled (an Admin can reset it)",
        ));
    }
    let tenant_id = TenantId::parse(&tenant).map_err(|_| {
        ApiError::new(
            Code::StoredDataUnreadable,
            "a stored tenant id is unreadable",
        )
    })?;
    let account = auth
        .tenant(&tenant_id)
        .await?
        .members
        .get(&user_id)
        .and_then(|m| m.email.clone())
        .unwrap_or_else(|| user_id.clone());
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(MfaEnrolment {
            secret: totp::base32(&seed),
            otpauth_url: totp::otpauth_url(&settings.totp_issuer, &account, &seed),
        }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaConfirmRequest {
    /// The authenticator's six digits.
    #[schema(min_length = 1, max_length = 16)]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Single-use codes for when the authenticator is lost; shown this once.
    pub recovery_codes: Vec<String>,
}

/// Confirms the signed-in caller's pending TOTP factor with a first code.
#[utoipa::path(post, path = "/v1/auth/mfa/confirm", tag = "identity", request_body = MfaConfirmRequest,
    responses((status = 200, body = RecoveryCodes), CommandProblems), security(("bearer" = [])))]
#[post("/auth/mfa/confirm")]
pub async fn mfa_confirm(
    req: HttpRequest,
    auth: web::Data<Auth>,
    bus: web::Data<CommandBus>,
    body: web::Json<MfaConfirmRequest>,
) -> Result<HttpResponse, ApiError> {
    let caller = signed_in(&req).await?;
    let (tenant, user) = (caller.tenant_id.as_str(), caller.sub.as_str());
    let factor = auth
        .store
        .factor(tenant, user)
        .await
        .map_err(unavailable)?
        .filter(|f| !f.confirmed)
        .ok_or_else(|| {
            ApiError::new(
                Code::MfaNotEnrolled,
                "no pending factor: start with POST /v1/auth/mfa/enrol",
            )
        })?;
    let step = totp::verify(&factor.secret, &body.code, identity::keys::now_secs(), 0);
    let accepted = match step {
        Some(step) => auth
            .store
            .use_step(tenant, user, i64::try_from(step).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable)?,
        None => false,
    };
    if !accepted {
        return Err(ApiError::new(
            Code::MfaCodeInvalid,
            "the code is wrong or outside the time window",
        ));
    }
    let codes = enrolled(&auth, &bus, &caller.tenant_id, user, caller.role).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(RecoveryCodes {
            recovery_codes: codes,
        }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshRequest {
    /// The refresh token; omitted, the `__Host-answers_refresh` cookie is used.
    #[schema(max_length = 256)]
    pub refresh_token: Option<String>,
}

/// Exchanges a refresh token for a new access token and a new refresh token. Each refresh
/// token works once: presenting a used one revokes the whole session (someone has a copy).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "identity", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), CommandProblems))]
#[post("/auth/refresh")]
pub async fn refresh(
    req: HttpRequest,
    auth: web::Data<Auth>,
    bus: web::Data<CommandBus>,
    body: Option<web::Json<RefreshRequest>>,
) -> Result<HttpResponse, ApiError> {
    let token = body
        .and_then(|b| b.into_inner().refresh_token)
        .or_else(|| req.cookie(REFRESH_COOKIE).map(|c| c.value().to_string()))
        .ok_or_else(|| ApiError::new(Code::TokenMissing, "send the refresh token"))?;
    let invalid = |why: &str| ApiError::new(Code::RefreshTokenInvalid, why.to_string());
    match auth
        .store
        .refresh(&token, auth.idle())
        .await
        .map_err(unavailable)?
    {
        Refreshed::Unknown => Err(invalid("the refresh token is unknown")),
        Refreshed::Ended => Err(invalid("the session has ended: sign in again")),
        Refreshed::Reused { session } => {
            auth.forget(&[session.session_id]);
            if let Some(tenant_id) = session
                .tenant_id
                .as_deref()
                .and_then(|t| TenantId::parse(t).ok())
            {
                let command = AccountCommand::RevokeSessions {
                    sessions: vec![session.session_id],
                    reason: "refresh_token_reused".into(),
                };
                sign_in::record(&bus, &tenant_id, &session.user_id, Role::Viewer, command).await;
            }
            Err(ApiError::new(
                Code::RefreshTokenReused,
                "this refresh token was already used: the session is revoked, sign in again",
            ))
        }
        Refreshed::Rotated {
            session,
            refresh_token,
        } => {
            let tenant_id = session
                .tenant_id
                .as_deref()
                .map(TenantId::parse)
                .transpose()
                .map_err(|_| {
                    ApiError::new(Code::StoredDataUnreadable, "a stored session is unreadable")
                })?;
            let role = match &tenant_id {
                Some(t) => {
                    let tenant = auth.tenant(t).await?;
                    let Some(member) = tenant.members.get(&session.user_id) else {
                        auth.store
                            .revoke_all(Some(t.as_str()), &session.user_id, "member_removed")
                            .await
                            .map_err(unavailable)?;
                        return Err(ApiError::new(
                            Code::SessionRevoked,
                            "you are no longer a member of this tenant",
                        ));
                    };
                    Some(member.role)
                }
                None if auth.is_operator(&session.user_id) => None,
                None => {
                    return Err(ApiError::new(
                        Code::SessionRevoked,
                        "you are no longer a platform operator",
                    ))
                }
            };
            sign_in::respond(
                &auth,
                session.session_id,
                tenant_id.as_ref(),
                &session.user_id,
                role,
                refresh_token,
                None,
                None,
            )
        }
    }
}

/// A signed-in member (sessions only: API keys and development tokens have no session).
async fn signed_in(req: &HttpRequest) -> Result<crate::auth::Claims, ApiError> {
    let Authenticated(claims) = crate::auth::authenticated(req).await?;
    if claims.via != Via::Session {
        return Err(ApiError::new(
            Code::Forbidden,
            "only a signed-in person (a session) can do this",
        ));
    }
    Ok(claims)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user_id: String,
    pub tenant_id: String,
    /// The role now (read from the membership).
    pub role: String,
    /// `session`, `api_key` or `development_token`.
    pub via: String,
    pub session_id: Option<Uuid>,
}

/// Who the caller is, as the server sees it now.
#[utoipa::path(get, path = "/v1/auth/me", tag = "identity",
    responses((status = 200, body = Me), CommandProblems), security(("bearer" = [])))]
#[get("/auth/me")]
pub async fn me(auth: Authenticated) -> HttpResponse {
    let c = auth.0;
    HttpResponse::Ok().json(Me {
        user_id: c.sub.to_string(),
        tenant_id: c.tenant_id.to_string(),
        role: c.role.to_string(),
        via: match c.via {
            Via::Session => "session",
            Via::ApiKey => "api_key",
            Via::DevelopmentToken => "development_token",
        }
        .into(),
        session_id: c.session,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: Uuid,
    pub provider: String,
    pub mfa: bool,
    pub user_agent: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The session of this request.
    pub current: bool,
}

/// My sessions in force.
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "identity",
    responses((status = 200, body = Vec<SessionView>), CommandProblems), security(("bearer" = [])))]
#[get("/auth/sessions")]
pub async fn list_sessions(
    req: HttpRequest,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, ApiError> {
    let caller = signed_in(&req).await?;
    let list = auth
        .store
        .sessions_of(Some(caller.tenant_id.as_str()), caller.sub.as_str())
        .await
        .map_err(unavailable)?;
    let views: Vec<SessionView> = list
        .into_iter()
        .map(|s| SessionView {
            current: Some(s.session_id) == caller.session,
            session_id: s.session_id,
            provider: s.provider,
            mfa: s.mfa,
            user_agent: s.user_agent,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SignOutRequest {
    /// Every session of mine, not only this one.
    pub all: bool,
}

/// Signs out: this session, or all of mine.
#[utoipa::path(post, path = "/v1/auth/sign-out", tag = "identity", request_body = SignOutRequest,
    responses((status = 204, description = "Signed out"), CommandProblems), security(("bearer" = [])))]
#[post("/auth/sign-out")]
pub async fn sign_out(
    req: HttpRequest,
    auth: web::Data<Auth>,
    bus: web::Data<CommandBus>,
    body: Option<web::Json<SignOutRequest>>,
) -> Result<HttpResponse, ApiError> {
    let caller = signed_in(&req).await?;
    let all = body.is_some_and(|b| b.all);
    let (tenant, user) = (caller.tenant_id.as_str(), caller.sub.as_str());
    let revoked = if all {
        auth.store.revoke_all(Some(tenant), user, "sign_out").await
    } else {
        let sid = caller.session.unwrap_or_default();
        auth.store
            .revoke_session(Some(tenant), user, sid, "sign_out")
            .await
            .map(|s| s.into_iter().collect())
    }
    .map_err(unavailable)?;
    revoked_sessions(
        &auth,
        &bus,
        &caller.tenant_id,
        user,
        user,
        caller.role,
        revoked,
        "sign_out",
    )
    .await;
    Ok(sign_in::signed_out())
}

/// Signs out one of my sessions (another device).
#[utoipa::path(delete, path = "/v1/auth/sessions/{session_id}", tag = "identity",
    params(("session_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), CommandProblems), security(("bearer" = [])))]
#[delete("/auth/sessions/{session_id}")]
pub async fn revoke_session(
    req: HttpRequest,
    auth: web::Data<Auth>,
    bus: web::Data<CommandBus>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let caller = signed_in(&req).await?;
    let user = caller.sub.as_str();
    let revoked = auth
        .store
        .revoke_session(Some(caller.tenant_id.as_str()), user, *path, "sign_out")
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::new(Code::SessionNotFound, "no such session of yours in force"))?;
    revoked_sessions(
        &auth,
        &bus,
        &caller.tenant_id,
        user,
        user,
        caller.role,
        vec![revoked],
        "sign_out",
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Forgets revoked sessions here and records them on the account of `user` (whose sessions
/// end), with `actor` (who ended them) as the actor.
#[allow(clippy::too_many_arguments)]
pub async fn revoked_sessions(
    auth: &Auth,
    bus: &CommandBus,
    tenant_id: &TenantId,
    user: &str,
    actor: &str,
    role: Role,
    sessions: Vec<Uuid>,
    reason: &str,
) {
    auth.forget(&sessions);
    let command = AccountCommand::RevokeSessions {
        sessions,
        reason: reason.to_string(),
    };
    if let Ok(ctx) = sign_in::person_context(tenant_id, actor, role) {
        if let Err(error) = bus
            .account(&ctx, account_id(tenant_id, user), command)
            .await
        {
            tracing::error!(%error, "could not record revoked sessions");
        }
    }
}
