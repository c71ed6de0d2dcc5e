//! Who is calling (docs/identity.md). A request carries one credential:
//!
//! - an access token of a session (`Authorization: Bearer`, or the `__Host-answers_access`
//!   cookie of a browser): Ed25519-signed, with a `kid` and the session's `sid`. The session is
//!   checked on every request (revoked? past its idle or absolute timeout?) and the role is
//!   re-read from the tenant's membership, both cached for `auth.session_check_ttl_ms`: a
//!   demotion, a removal or a revocation reaches live tokens within that, not at expiry.
//!   A cookie-authenticated write also needs `X-CSRF-Token` (the session's CSRF token).
//! - a tenant API key (`ans_sk_...`), looked up on every request (revoking is immediate).
//! - a development token (`answers token`, no session): only in the development profile.
//!
//! The tenant and the role always come from the verified credential, never from the request.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{dev::Payload, http::header, http::Method, web, FromRequest, HttpRequest};
use commands::CommandBus;
use domain::tenant::Tenant;
use domain::Code;
use domain::{Role, TenantId, UserId};
use identity::store::{IdentityStore, Session, SessionState};
use identity::{AccessClaims, TokenError, TokenKeys};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{AuthSettings, Profile};
use crate::problem::ApiError;

pub use identity::keys::now_secs;

/// The prefix of tenant API keys: secret scanners (GitHub's, gitleaks) can be taught it.
pub const API_KEY_PREFIX: &str = "ans_sk_";
/// The browser's access-token cookie.
pub const ACCESS_COOKIE: &str = "__Host-answers_access";
/// The browser's refresh-token cookie.
pub const REFRESH_COOKIE: &str = "__Host-answers_refresh";
/// The header a cookie-authenticated write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A signed-in session.
    Session,
    /// A tenant API key.
    ApiKey,
    /// A development token (development profile only).
    DevelopmentToken,
}

/// The verified caller of a tenant route.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The user (an API key's is `api-key:<id>`).
    pub sub: UserId,
    /// The tenant: the only source of a request's tenant.
    pub tenant_id: TenantId,
    /// The role now (re-read from the membership for sessions).
    pub role: Role,
    /// The session, for a signed-in caller.
    pub session: Option<Uuid>,
    /// How.
    pub via: Via,
}

impl Claims {
    /// Only an Admin, and never through an API key (a key cannot manage keys, access, webhooks
    /// or secrets: what it could do would outgrow its role).
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.role == Role::Admin && self.via != Via::ApiKey {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                format!("only an admin (signed in, not an API key) manages {what}"),
            ))
        }
    }
}

/// Mints development tokens (`answers token`, tests, `bench`): no session, so the production
/// profile refuses them.
pub struct JwtKeys {
    keys: TokenKeys,
}

impl JwtKeys {
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        Ok(Self {
            keys: settings.token_keys()?,
        })
    }

    pub fn mint(
        &self,
        user: &str,
        tenant_id: &str,
        role: Role,
        ttl_secs: u64,
    ) -> anyhow::Result<String> {
        let mut claims = self.keys.claims(UserId::parse(user)?.as_str(), ttl_secs);
        claims.tenant_id = Some(TenantId::parse(tenant_id)?.to_string());
        claims.role = Some(role);
        Ok(self.keys.sign(&claims)?)
    }
}

type Cached<T> = Mutex<HashMap<T, (Instant, CheckResult)>>;

#[derive(Clone)]
enum CheckResult {
    Active(Arc<Session>),
    Ended(Code),
}

/// Authentication as the application holds it.
pub struct Auth {
    pub keys: TokenKeys,
    pub store: IdentityStore,
    bus: Arc<CommandBus>,
    pub profile: Profile,
    pub settings: AuthSettings,
    operators: Vec<String>,
    legacy_operator: PlatformCredential,
    sessions: Cached<Uuid>,
    tenants: Mutex<HashMap<TenantId, (Instant, Arc<Tenant>)>>,
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => ApiError::new(Code::TokenExpired, "the token has expired"),
        TokenError::Invalid(why) => ApiError::new(Code::TokenInvalid, why),
    }
}

pub(crate) fn unavailable(e: sqlx::Error) -> ApiError {
    ApiError::infrastructure(
        Code::ServiceUnavailable,
        "the identity store is unavailable; try again",
        &e,
    )
}

impl Auth {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: TokenKeys,
        store: IdentityStore,
        bus: Arc<CommandBus>,
        profile: Profile,
        settings: AuthSettings,
        operators: Vec<String>,
        legacy_operator: PlatformCredential,
    ) -> Self {
        Self {
            keys,
            store,
            bus,
            profile,
            settings,
            operators,
            legacy_operator,
            sessions: Mutex::new(HashMap::new()),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn check_ttl(&self) -> Duration {
        Duration::from_millis(self.settings.session_check_ttl_ms)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.settings.session_idle_secs)
    }

    /// Whether `email` is a platform operator of this deployment.
    pub fn is_operator(&self, email: &str) -> bool {
        self.operators.iter().any(|o| o == email)
    }

    /// The session's state, cached briefly.
    async fn session(&self, sid: Uuid) -> Result<Arc<Session>, ApiError> {
        let cached = lock(&self.sessions)
            .get(&sid)
            .filter(|(at, _)| at.elapsed() < self.check_ttl())
            .map(|(_, r)| r.clone());
        let result = match cached {
            Some(r) => r,
            None => {
                let r = match self
                    .store
                    .check(sid, self.idle())
                    .await
                    .map_err(unavailable)?
                {
                    SessionState::Active(s) => CheckResult::Active(Arc::new(s)),
                    SessionState::Revoked => CheckResult::Ended(Code::SessionRevoked),
                    SessionState::Expired => CheckResult::Ended(Code::SessionExpired),
                };
                let mut cache = lock(&self.sessions);
                if cache.len() > 100_000 {
                    cache.clear();
                }
                cache.insert(sid, (Instant::now(), r.clone()));
                r
            }
        };
        match result {
            CheckResult::Active(s) => Ok(s),
            CheckResult::Ended(Code::SessionExpired) => Err(ApiError::new(
                Code::SessionExpired,
                "the session has timed out: sign in again",
            )),
            CheckResult::Ended(code) => Err(ApiError::new(code, "the session has been revoked")),
        }
    }

    /// Forgets what this instance cached of a session (it was just revoked here).
    pub fn forget(&self, sessions: &[Uuid]) {
        let mut cache = lock(&self.sessions);
        for s in sessions {
            cache.remove(s);
        }
    }

    /// The tenant as its events say, cached briefly (membership and roles).
    pub async fn tenant(&self, tenant_id: &TenantId) -> Result<Arc<Tenant>, ApiError> {
        let cached = lock(&self.tenants)
            .get(tenant_id)
            .filter(|(at, _)| at.elapsed() < self.check_ttl())
            .map(|(_, t)| t.clone());
        if let Some(t) = cached {
            return Ok(t);
        }
        let tenant = Arc::new(self.bus.tenant_snapshot(tenant_id).await?);
        let mut cache = lock(&self.tenants);
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(tenant_id.clone(), (Instant::now(), tenant.clone()));
        Ok(tenant)
    }

    /// Forgets this instance's copy of a tenant (its membership just changed here).
    pub fn forget_tenant(&self, tenant_id: &TenantId) {
        lock(&self.tenants).remove(tenant_id);
    }

    async fn authenticate(&self, req: &HttpRequest) -> Result<Claims, ApiError> {
        let (token, from_cookie) = credential(req)?;
        if token.starts_with(API_KEY_PREFIX) {
            return self.api_key(&token).await;
        }
        let claims = self.keys.verify(&token).map_err(token_error)?;
        if claims.platform {
            return Err(ApiError::new(
                Code::TokenInvalid,
                "a platform operator's token names no tenant: tenant routes need a member's token",
            ));
        }
        let tenant_id = TenantId::parse(claims.tenant_id.as_deref().unwrap_or_default())
            .map_err(|_| ApiError::new(Code::TokenInvalid, "the token's tenant is invalid"))?;
        let sub = UserId::parse(&claims.sub)
            .map_err(|_| ApiError::new(Code::TokenInvalid, "the token's subject is invalid"))?;
        let Some(sid) = claims.sid else {
            return self.development_token(&claims, sub, tenant_id);
        };
        let session = self.session(sid).await?;
        if session.tenant_id.as_deref() != Some(tenant_id.as_str())
            || session.user_id != sub.as_str()
        {
            return Err(ApiError::new(
                Code::TokenInvalid,
                "the token does not match its session",
            ));
        }
        let tenant = self.tenant(&tenant_id).await?;
        let role = tenant
            .members
            .get(sub.as_str())
            .map(|m| m.role)
            .ok_or_else(|| {
                ApiError::new(
                    Code::SessionRevoked,
                    "you are no longer a member of this tenant",
                )
            })?;
        if from_cookie && !is_safe(req.method()) {
            check_csrf(req, &session)?;
        }
        Ok(Claims {
            sub,
            tenant_id,
            role,
            session: Some(sid),
            via: Via::Session,
        })
    }

    fn development_token(
        &self,
        claims: &AccessClaims,
        sub: UserId,
        tenant_id: TenantId,
    ) -> Result<Claims, ApiError> {
        if self.profile != Profile::Development {
            return Err(ApiError::new(
                Code::TokenInvalid,
                "development tokens (without a session) are refused in production: sign in",
            ));
        }
        let role = claims
            .role
            .ok_or_else(|| ApiError::new(Code::TokenInvalid, "the token names no role"))?;
        Ok(Claims {
            sub,
            tenant_id,
            role,
            session: None,
            via: Via::DevelopmentToken,
        })
    }

    async fn api_key(&self, key: &str) -> Result<Claims, ApiError> {
        let found = self.store.use_api_key(key).await.map_err(unavailable)?;
        let key = found.ok_or_else(|| {
            ApiError::new(Code::ApiKeyInvalid, "the API key is unknown or revoked")
        })?;
        let stored =
            |_| ApiError::new(Code::StoredDataUnreadable, "a stored API key is unreadable");
        Ok(Claims {
            sub: UserId::parse(&format!("api-key:{}", key.key_id)).map_err(stored)?,
            tenant_id: TenantId::parse(&key.tenant_id).map_err(stored)?,
            role: key.role.parse().map_err(|_| {
                ApiError::new(
                    Code::StoredDataUnreadable,
                    "a stored API key has an unknown role",
                )
            })?,
            session: None,
            via: Via::ApiKey,
        })
    }

    /// A platform operator: a signed-in operator's session, or the break-glass credential.
    async fn operator(&self, req: &HttpRequest) -> Result<PlatformOperator, ApiError> {
        let (token, _) = credential(req).map_err(|e| match e.code {
            Code::TokenMissing => ApiError::new(
                Code::PlatformCredentialMissing,
                "send `Authorization: Bearer <platform operator token>`",
            ),
            _ => ApiError::new(Code::PlatformCredentialInvalid, e.detail),
        })?;
        if self.legacy_operator.matches(&token) {
            return Ok(PlatformOperator {
                user: "platform-operator".into(),
            });
        }
        match self.keys.verify(&token) {
            Ok(claims) if claims.platform => {
                let sid = claims.sid.ok_or_else(|| {
                    ApiError::new(Code::PlatformCredentialInvalid, "the token has no session")
                })?;
                let session = self.session(sid).await?;
                if session.tenant_id.is_some()
                    || session.user_id != claims.sub
                    || !self.is_operator(&claims.sub)
                {
                    return Err(ApiError::new(
                        Code::PlatformCredentialInvalid,
                        "the token is not a platform operator's (any more)",
                    ));
                }
                Ok(PlatformOperator { user: claims.sub })
            }
            Ok(_) => Err(ApiError::new(
                Code::PlatformOnly,
                "this operation serves every tenant: it needs a platform operator, not a tenant's member",
            )),
            Err(TokenError::Expired) => Err(ApiError::new(
                Code::TokenExpired,
                "the token has expired",
            )),
            Err(_) if token.starts_with(API_KEY_PREFIX) => Err(ApiError::new(
                Code::PlatformOnly,
                "this operation serves every tenant: an API key of a tenant never reaches it",
            )),
            Err(_) => Err(ApiError::new(
                Code::PlatformCredentialInvalid,
                "the platform operator credential is wrong",
            )),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn check_csrf(req: &HttpRequest, session: &Session) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                Code::CsrfTokenInvalid,
                "a cookie-authenticated write needs the X-CSRF-Token header",
            )
        })?;
    if identity::secret::same(&identity::secret::digest(given), &session.csrf_hash) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::CsrfTokenInvalid,
            "the X-CSRF-Token header does not match the session",
        ))
    }
}

/// The request's credential and whether it came from the cookie.
pub fn credential(req: &HttpRequest) -> Result<(String, bool), ApiError> {
    match req.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().map_err(|_| {
                ApiError::new(Code::TokenInvalid, "the Authorization header is not text")
            })?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| {
                    ApiError::new(
                        Code::TokenMissing,
                        "the Authorization scheme must be Bearer",
                    )
                })?;
            Ok((token.trim().to_string(), false))
        }
        None => req
            .cookie(ACCESS_COOKIE)
            .map(|c| (c.value().to_string(), true))
            .ok_or_else(|| {
                ApiError::new(
                    Code::TokenMissing,
                    "send `Authorization: Bearer <token>` (or sign in for a session cookie)",
                )
            }),
    }
}

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

fn auth_of(req: &HttpRequest) -> Result<web::Data<Auth>, ApiError> {
    req.app_data::<web::Data<Auth>>()
        .cloned()
        .ok_or_else(|| ApiError::new(Code::TokenInvalid, "authentication is not configured"))
}

/// The verified caller of a tenant route.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticated(&req).await })
    }
}

pub async fn authenticated(req: &HttpRequest) -> Result<Authenticated, ApiError> {
    let claims = auth_of(req)?.authenticate(req).await?;
    if let Some(limiter) = req.app_data::<web::Data<crate::rate_limit::RateLimiter>>() {
        limiter.caller(req, &claims).await?;
    }
    Ok(Authenticated(claims))
}

/// The break-glass platform credential (`platform.operator_token`), kept for automation and
/// for the first steps of a deployment before an operator has signed in. Compared by digest in
/// constant time.
#[derive(Clone)]
pub struct PlatformCredential(Option<[u8; 32]>);

impl PlatformCredential {
    pub fn new(token: Option<&secrecy::SecretString>) -> Self {
        Self(token.map(|t| Sha256::digest(t.expose_secret().as_bytes()).into()))
    }

    fn matches(&self, token: &str) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        identity::secret::same(expected, &given)
    }
}

/// A platform operator: outside every tenant, for what spans tenants.
#[derive(Debug, Clone)]
pub struct PlatformOperator {
    /// The operator's address (or `platform-operator` for the break-glass credential).
    pub user: String,
}

impl PlatformOperator {
    /// The frame of a command an operator sends to a tenant: the operator is the actor.
    pub fn context(&self, tenant: &str) -> Result<commands::CommandContext, ApiError> {
        let tenant_id =
            TenantId::parse(tenant).map_err(|e| ApiError::new(Code::InvalidPath, e.to_string()))?;
        let user_id = UserId::parse(&self.user)
            .map_err(|e| ApiError::new(Code::InternalError, e.to_string()))?;
        Ok(commands::CommandContext::acting(
            tenant_id,
            user_id,
            Role::Admin,
        ))
    }
}

impl FromRequest for PlatformOperator {
    type Error = ApiError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { auth_of(&req)?.operator(&req).await })
    }
}
