//! Bearer-token authentication. Tokens are HS256 JWTs; the tenant and the role come from the
//! verified token, never from the request path or body.
use domain::Code;
use std::future::{ready, Ready};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use domain::{Role, TenantId, UserId};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::problem::ApiError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user; checked when the token is decoded.
    pub sub: UserId,
    /// The tenant; checked when the token is decoded. The only source of a request's tenant.
    pub tenant_id: TenantId,
    pub role: Role,
    pub exp: u64,
    pub iat: u64,
    pub iss: String,
    pub aud: String,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl JwtKeys {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = settings.leeway_secs;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
    }

    pub fn mint(
        &self,
        user: &str,
        tenant_id: &str,
        role: Role,
        ttl_secs: u64,
    ) -> anyhow::Result<String> {
        let now = now_secs();
        let claims = Claims {
            sub: UserId::parse(user)?,
            tenant_id: TenantId::parse(tenant_id)?,
            role,
            exp: now + ttl_secs,
            iat: now,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        use jsonwebtoken::errors::ErrorKind as K;
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let (code, detail) = match e.kind() {
                K::ExpiredSignature => (Code::TokenExpired, "the token has expired"),
                K::InvalidAudience => (Code::TokenInvalid, "the token is not meant for this API"),
                K::InvalidIssuer => (Code::TokenInvalid, "the token comes from an unknown issuer"),
                K::InvalidSignature => (Code::TokenInvalid, "the token's signature is invalid"),
                K::Json(_) => (
                    Code::TokenInvalid,
                    "the token's subject or tenant is invalid",
                ),
                _ => (Code::TokenInvalid, "the token is malformed or incomplete"),
            };
            ApiError::new(code, detail)
        })?;
        Ok(data.claims)
    }
}

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Authenticated, ApiError> {
    let keys = req
        .app_data::<web::Data<JwtKeys>>()
        .ok_or_else(|| ApiError::new(Code::TokenInvalid, "authentication is not configured"))?;
    keys.verify(bearer(req)?).map(Authenticated)
}

/// The bearer token of the request.
fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(Code::TokenMissing, "send `Authorization: Bearer <token>`"))?
        .to_str()
        .map_err(|_| ApiError::new(Code::TokenInvalid, "the Authorization header is not text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::new(
                Code::TokenMissing,
                "the Authorization scheme must be Bearer",
            )
        })?;
    Ok(token.trim())
}

/// The platform operators' credential (`platform.operator_token`): operations that serve every
/// tenant (rebuilding a projection, the global relay and projection status) need it. It is not a
/// tenant token, and no tenant token, whatever its role, stands in for it.
#[derive(Clone)]
pub struct PlatformCredential(Option<[u8; 32]>);

impl PlatformCredential {
    pub fn new(token: Option<&secrecy::SecretString>) -> Self {
        Self(token.map(|t| Sha256::digest(t.expose_secret().as_bytes()).into()))
    }

    /// Compares digests in constant time, so the comparison leaks nothing of the secret.
    fn matches(&self, token: &str) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        expected
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A request made with the platform credential.
#[derive(Debug, Clone, Copy)]
pub struct PlatformOperator;

impl FromRequest for PlatformOperator {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(platform_operator(req))
    }
}

fn platform_operator(req: &HttpRequest) -> Result<PlatformOperator, ApiError> {
    let token = bearer(req).map_err(|e| match e.code {
        Code::TokenMissing => ApiError::new(
            Code::PlatformCredentialMissing,
            "send `Authorization: Bearer <platform operator token>`",
        ),
        _ => ApiError::new(Code::PlatformCredentialInvalid, e.detail),
    })?;
    let credential = req.app_data::<web::Data<PlatformCredential>>();
    if credential.is_some_and(|c| c.matches(token)) {
        return Ok(PlatformOperator);
    }
    let is_tenant_token = req
        .app_data::<web::Data<JwtKeys>>()
        .is_some_and(|keys| keys.verify(token).is_ok());
    if is_tenant_token {
        Err(ApiError::new(
            Code::PlatformOnly,
            "this operation serves every tenant: it needs the platform operator credential, not a tenant token",
        ))
    } else if credential.is_some_and(|c| c.0.is_none()) {
        Err(ApiError::new(
            Code::PlatformCredentialInvalid,
            "no platform operator credential is configured (platform.operator_token)",
        ))
    } else {
        Err(ApiError::new(
            Code::PlatformCredentialInvalid,
            "the platform operator credential is wrong",
        ))
    }
}
