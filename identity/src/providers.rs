//! Sign-in with the identity providers a deployment configures: Google and Microsoft through
//! OpenID Connect (discovery, JWKS, the authorization-code flow with PKCE, `state` and `nonce`,
//! id_token validation) and GitHub through OAuth2 and its user and e-mail APIs.
//!
//! What an id_token must satisfy: an asymmetric algorithm (never `none` or an HMAC), a `kid`
//! found in the provider's JWKS (fetched from the discovery document's `jwks_uri`, never from
//! the token), a valid signature, `iss` equal to the discovered issuer (Microsoft's `common`
//! endpoint publishes `{tenantid}` in it: it is filled from the token's own `tid`), `aud` equal
//! to our client id (and `azp`, when there is one), `exp`/`nbf`/`iat` within a minute of skew,
//! and the `nonce` we sent.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::access::{Provider, VerifiedIdentity};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// One provider's registration with us.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderSettings {
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret (from the environment or a mounted file, never logged).
    pub client_secret: SecretString,
    /// Where the provider sends the browser back (`.../v1/auth/{provider}/callback`), as
    /// registered with the provider.
    pub redirect_uri: String,
    /// OpenID Connect issuer (Google and Microsoft); defaults to the provider's public one.
    #[serde(default)]
    pub issuer: Option<String>,
    /// GitHub's authorize endpoint (default `https://github.com/login/oauth/authorize`).
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// GitHub's token endpoint (default `https://github.com/login/oauth/access_token`).
    #[serde(default)]
    pub token_url: Option<String>,
    /// GitHub's API (default `https://api.github.com`).
    #[serde(default)]
    pub api_url: Option<String>,
}

/// Why a sign-in with a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider is not configured in this deployment.
    #[error("the provider is not configured")]
    NotConfigured,
    /// The provider could not be reached or answered nonsense (502).
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused, or what it sent failed validation (401).
    #[error("{0}")]
    Rejected(String),
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Cached<T> {
    at: Instant,
    value: T,
}

/// The configured providers, with their discovery documents and keys cached.
pub struct Providers {
    http: reqwest::Client,
    settings: BTreeMap<Provider, ProviderSettings>,
    discovery: Mutex<BTreeMap<Provider, Cached<Discovery>>>,
    jwks: Mutex<BTreeMap<Provider, Cached<JwkSet>>>,
}

/// How long a discovery document or a key set is reused; an unknown `kid` refetches the keys
/// at most once a minute (a provider rotating its keys), never more often, so a flood of
/// forged tokens cannot make us hammer the provider.
const CACHE_FOR: Duration = Duration::from_secs(3600);
const REFETCH_AFTER: Duration = Duration::from_secs(60);
const SKEW_SECS: u64 = 60;

fn default_issuer(provider: Provider) -> &'static str {
    match provider {
        Provider::Google => "https://accounts.google.com",
        Provider::Microsoft => "https://login.microsoftonline.com/common/v2.0",
        Provider::Github => "",
    }
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IdClaims {
    sub: String,
    iss: String,
    nonce: Option<String>,
    azp: Option<String>,
    #[serde(default)]
    aud: serde_json::Value,
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    hd: Option<String>,
    tid: Option<String>,
    /// Microsoft: the e-mail's domain is verified by the directory's owner.
    #[serde(default)]
    xms_edov: Option<serde_json::Value>,
}

fn truthy(v: &Option<serde_json::Value>) -> bool {
    matches!(v, Some(serde_json::Value::Bool(true)))
        || matches!(v, Some(serde_json::Value::String(s)) if s == "true" || s == "1")
        || matches!(v, Some(serde_json::Value::Number(n)) if n.as_u64() == Some(1))
}

fn unavailable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(e.to_string())
}

impl Providers {
    /// The providers of this deployment; `timeout` bounds every call to them.
    pub fn new(
        settings: BTreeMap<Provider, ProviderSettings>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("answers-identity")
                .build()?,
            settings,
            discovery: Mutex::new(BTreeMap::new()),
            jwks: Mutex::new(BTreeMap::new()),
        })
    }

    /// The providers one may sign in with here.
    pub fn configured(&self) -> Vec<Provider> {
        self.settings.keys().copied().collect()
    }

    fn settings(&self, provider: Provider) -> Result<&ProviderSettings, ProviderError> {
        self.settings
            .get(&provider)
            .ok_or(ProviderError::NotConfigured)
    }

    /// Where the provider sends the browser back.
    pub fn redirect_uri(&self, provider: Provider) -> Result<&str, ProviderError> {
        Ok(&self.settings(provider)?.redirect_uri)
    }

    fn issuer(&self, provider: Provider) -> Result<String, ProviderError> {
        let s = self.settings(provider)?;
        Ok(s.issuer
            .clone()
            .unwrap_or_else(|| default_issuer(provider).to_string())
            .trim_end_matches('/')
            .to_string())
    }

    async fn discovery(&self, provider: Provider) -> Result<Discovery, ProviderError> {
        if let Some(c) = lock(&self.discovery).get(&provider) {
            if c.at.elapsed() < CACHE_FOR {
                return Ok(c.value.clone());
            }
        }
        let issuer = self.issuer(provider)?;
        let doc: Discovery = self
            .http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        // A discovery document for another issuer is not this provider's (OIDC Discovery 4.3).
        // Microsoft's multi-tenant endpoints publish a template (`.../{tenantid}/v2.0`): the
        // issuer is then checked per token, against the token's own `tid`.
        let template = provider == Provider::Microsoft && doc.issuer.contains("{tenantid}");
        if doc.issuer.trim_end_matches('/') != issuer && !template {
            return Err(ProviderError::Unavailable(format!(
                "the discovery document names the issuer `{}`, not `{issuer}`",
                doc.issuer
            )));
        }
        lock(&self.discovery).insert(
            provider,
            Cached {
                at: Instant::now(),
                value: doc.clone(),
            },
        );
        Ok(doc)
    }

    async fn keys(
        &self,
        provider: Provider,
        jwks_uri: &str,
        refetch: bool,
    ) -> Result<JwkSet, ProviderError> {
        if let Some(c) = lock(&self.jwks).get(&provider) {
            let fresh = c.at.elapsed() < CACHE_FOR && !(refetch && c.at.elapsed() > REFETCH_AFTER);
            if fresh {
                return Ok(c.value.clone());
            }
        }
        let set: JwkSet = self
            .http
            .get(jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        lock(&self.jwks).insert(
            provider,
            Cached {
                at: Instant::now(),
                value: set.clone(),
            },
        );
        Ok(set)
    }

    /// The URL to send the browser to.
    pub async fn authorization_url(
        &self,
        provider: Provider,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, ProviderError> {
        let s = self.settings(provider)?;
        let (endpoint, scope) = match provider {
            Provider::Github => (
                s.authorize_url
                    .clone()
                    .unwrap_or_else(|| "https://github.com/login/oauth/authorize".into()),
                "read:user user:email",
            ),
            _ => (
                self.discovery(provider).await?.authorization_endpoint,
                "openid email profile",
            ),
        };
        let mut url = url::Url::parse(&endpoint).map_err(unavailable)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &s.client_id)
                .append_pair("redirect_uri", &s.redirect_uri)
                .append_pair("scope", scope)
                .append_pair("state", state)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256");
            if provider != Provider::Github {
                q.append_pair("nonce", nonce);
            }
            if provider == Provider::Github {
                q.append_pair("allow_signup", "false");
            }
        }
        Ok(url.into())
    }

    /// Exchanges the authorization code and returns the identity the provider vouches for.
    pub async fn identify(
        &self,
        provider: Provider,
        code: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<VerifiedIdentity, ProviderError> {
        let s = self.settings(provider)?;
        let token_endpoint = match provider {
            Provider::Github => s
                .token_url
                .clone()
                .unwrap_or_else(|| "https://github.com/login/oauth/access_token".into()),
            _ => self.discovery(provider).await?.token_endpoint,
        };
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", s.redirect_uri.as_str()),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.expose_secret()),
            ("code_verifier", code_verifier),
        ];
        let response = self
            .http
            .post(&token_endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if status.is_server_error() {
            return Err(ProviderError::Unavailable(format!(
                "the token endpoint answered {status}"
            )));
        }
        let tokens: TokenResponse = response.json().await.map_err(unavailable)?;
        // GitHub answers a bad code with 200 and an `error` field.
        if let Some(error) = tokens.error {
            return Err(ProviderError::Rejected(format!(
                "the provider refused the code: {error}{}",
                tokens
                    .error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )));
        }
        if !status.is_success() {
            return Err(ProviderError::Rejected(format!(
                "the provider refused the code ({status})"
            )));
        }
        match provider {
            Provider::Github => {
                let token = tokens.access_token.ok_or_else(|| {
                    ProviderError::Rejected("the provider sent no access token".into())
                })?;
                self.github_identity(s, &token).await
            }
            _ => {
                let id_token = tokens.id_token.ok_or_else(|| {
                    ProviderError::Rejected("the provider sent no id_token".into())
                })?;
                self.validate_id_token(provider, &id_token, nonce).await
            }
        }
    }

    /// Validates an id_token (module documentation) and reads the identity from it.
    pub async fn validate_id_token(
        &self,
        provider: Provider,
        id_token: &str,
        nonce: &str,
    ) -> Result<VerifiedIdentity, ProviderError> {
        let s = self.settings(provider)?;
        let rejected = |why: &str| ProviderError::Rejected(format!("the id_token {why}"));
        let header = decode_header(id_token).map_err(|_| rejected("is malformed"))?;
        let asymmetric = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(rejected("is not signed with an asymmetric algorithm"));
        }
        let kid = header.kid.ok_or_else(|| rejected("names no key (kid)"))?;
        let discovery = self.discovery(provider).await?;
        let mut set = self.keys(provider, &discovery.jwks_uri, false).await?;
        if set.find(&kid).is_none() {
            set = self.keys(provider, &discovery.jwks_uri, true).await?;
        }
        let jwk = set
            .find(&kid)
            .ok_or_else(|| rejected("is signed with a key the provider does not publish"))?;
        if let Some(alg) = jwk.common.key_algorithm {
            if alg.to_string() != format!("{:?}", header.alg) {
                return Err(rejected("uses another algorithm than its key"));
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| rejected("has an unusable key"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&s.client_id]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = SKEW_SECS;
        // The issuer is compared below, where Microsoft's template is filled in.
        let claims = decode::<IdClaims>(id_token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => rejected("has expired"),
                    K::ImmatureSignature => rejected("is not valid yet"),
                    K::InvalidAudience => rejected("was issued to another client"),
                    K::InvalidSignature => rejected("has an invalid signature"),
                    K::InvalidAlgorithm => rejected("uses another algorithm than its key"),
                    _ => rejected("is invalid"),
                }
            })?
            .claims;
        let expected_issuer = if discovery.issuer.contains("{tenantid}") {
            let tid = claims
                .tid
                .as_deref()
                .ok_or_else(|| rejected("names no directory (tid)"))?;
            discovery.issuer.replace("{tenantid}", tid)
        } else {
            discovery.issuer.clone()
        };
        if claims.iss.trim_end_matches('/') != expected_issuer.trim_end_matches('/') {
            return Err(rejected("comes from another issuer"));
        }
        let several_audiences = matches!(&claims.aud, serde_json::Value::Array(a) if a.len() > 1);
        if (several_audiences || claims.azp.is_some())
            && claims.azp.as_deref() != Some(s.client_id.as_str())
        {
            return Err(rejected("was issued to another client (azp)"));
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(rejected("carries another nonce"));
        }
        let email_verified = match provider {
            Provider::Microsoft => truthy(&claims.xms_edov),
            _ => truthy(&claims.email_verified),
        };
        Ok(VerifiedIdentity {
            provider,
            subject: claims.sub,
            email: claims
                .email
                .filter(|_| email_verified)
                .map(|e| e.trim().to_ascii_lowercase()),
            hosted_domain: claims.hd.map(|d| d.to_ascii_lowercase()),
            directory: claims.tid,
        })
    }

    async fn github_identity(
        &self,
        s: &ProviderSettings,
        access_token: &str,
    ) -> Result<VerifiedIdentity, ProviderError> {
        #[derive(Deserialize)]
        struct User {
            id: u64,
        }
        #[derive(Deserialize)]
        struct Email {
            email: String,
            verified: bool,
            #[serde(default)]
            primary: bool,
        }
        let api = s
            .api_url
            .clone()
            .unwrap_or_else(|| "https://api.github.com".into());
        let api = api.trim_end_matches('/');
        let get = |path: &str| {
            self.http
                .get(format!("{api}{path}"))
                .bearer_auth(access_token)
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .send()
        };
        let user: User = get("/user")
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        let emails: Vec<Email> = get("/user/emails")
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        // Only a verified address identifies anyone; the primary one first.
        let email = emails
            .iter()
            .filter(|e| e.verified)
            .max_by_key(|e| e.primary)
            .map(|e| e.email.trim().to_ascii_lowercase());
        Ok(VerifiedIdentity {
            provider: Provider::Github,
            subject: user.id.to_string(),
            email,
            hosted_domain: None,
            directory: None,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
