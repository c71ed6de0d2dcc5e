//! Bearer-token authentication. Tokens are HS256 JWTs; the tenant and the role come from the
//! verified token, never from the request path or body.
use std::future::{ready, Ready};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use domain::Role;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;
use crate::problem::ApiError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant_id: String,
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

/// A tenant id is used as a key prefix and in logs: keep it to a safe alphabet.
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
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
        anyhow::ensure!(
            valid_tenant_id(tenant_id),
            "a tenant id is 1-64 characters of a-z, 0-9, `-` or `_`"
        );
        let now = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            tenant_id: tenant_id.to_string(),
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
                K::ExpiredSignature => ("token_expired", "the token has expired"),
                K::InvalidAudience => ("token_invalid", "the token is not meant for this API"),
                K::InvalidIssuer => ("token_invalid", "the token comes from an unknown issuer"),
                K::InvalidSignature => ("token_invalid", "the token's signature is invalid"),
                _ => ("token_invalid", "the token is malformed or incomplete"),
            };
            ApiError::unauthorized(code, detail)
        })?;
        let claims = data.claims;
        if !valid_tenant_id(&claims.tenant_id)
            || claims.sub.trim().is_empty()
            || claims.sub.len() > 200
        {
            return Err(ApiError::unauthorized(
                "token_invalid",
                "the token's subject or tenant is invalid",
            ));
        }
        Ok(claims)
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
    let keys = req.app_data::<web::Data<JwtKeys>>().ok_or_else(|| {
        ApiError::unauthorized("token_invalid", "authentication is not configured")
    })?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized("token_missing", "send `Authorization: Bearer <token>`")
        })?
        .to_str()
        .map_err(|_| {
            ApiError::unauthorized("token_invalid", "the Authorization header is not text")
        })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("token_missing", "the Authorization scheme must be Bearer")
        })?;
    keys.verify(token.trim()).map(Authenticated)
}
