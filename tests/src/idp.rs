//! Local identity providers speaking the documented protocols, for sign-in tests:
//! an OpenID Connect provider (discovery, JWKS, token endpoint; id_tokens signed with an ES256
//! key generated at test time) and GitHub's OAuth2 endpoints and user API. The production
//! client talks to them unchanged; only their base URLs are configured.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The client id the app is registered with at every fake provider.
pub const CLIENT_ID: &str = "answers-client";
/// Its secret.
pub const CLIENT_SECRET: &str = "answers-client-secret";

/// A token endpoint that hands out `body` once for `code`, and only when the PKCE verifier
/// matches the challenge the app sent (RFC 7636) and the client authenticates.
struct CodeExchange {
    code: String,
    challenge: String,
}

impl wiremock::Match for CodeExchange {
    fn matches(&self, request: &Request) -> bool {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let verifier_ok = get("code_verifier").is_some_and(|v| {
            URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == self.challenge
        });
        get("code").as_deref() == Some(self.code.as_str())
            && verifier_ok
            && get("client_id").as_deref() == Some(CLIENT_ID)
            && get("client_secret").as_deref() == Some(CLIENT_SECRET)
    }
}

/// An OpenID Connect provider.
pub struct FakeOidc {
    pub server: MockServer,
    /// The issuer the app is configured with.
    pub issuer: String,
    key: Vec<u8>,
    pub kid: String,
    /// The public key as a JWK (x, y of P-256).
    pub jwk: Value,
}

impl FakeOidc {
    /// A provider whose issuer is its base URL (Google-like).
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let issuer = server.uri();
        Self::mount(server, issuer.clone(), issuer).await
    }

    /// A provider like Microsoft's multi-tenant endpoint: configured as `.../common/v2.0`, its
    /// discovery document names the issuer `.../{tenantid}/v2.0`.
    pub async fn start_microsoft() -> Self {
        let server = MockServer::start().await;
        let configured = format!("{}/common/v2.0", server.uri());
        let published = format!("{}/{{tenantid}}/v2.0", server.uri());
        Self::mount(server, configured, published).await
    }

    async fn mount(server: MockServer, issuer: String, published_issuer: String) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let kid = format!("test-{}", uuid::Uuid::new_v4().simple());
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        let discovery_path = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_start_matches(&server.uri())
        );
        Mock::given(method("GET"))
            .and(path(discovery_path))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": published_issuer,
                "authorization_endpoint": format!("{}/authorize", server.uri()),
                "token_endpoint": format!("{}/token", server.uri()),
                "jwks_uri": format!("{}/keys", server.uri()),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/keys"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk.clone()]})))
            .mount(&server)
            .await;
        // Any code not handed out below: what a provider answers a replayed or forged code.
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(
                json!({"error": "invalid_grant", "error_description": "the code is invalid or was used"}),
            ))
            .with_priority(10)
            .mount(&server)
            .await;
        Self {
            server,
            issuer,
            key: pkcs8.as_ref().to_vec(),
            kid,
            jwk,
        }
    }

    /// Settings for the app.
    pub fn settings(&self, redirect: &str) -> identity::ProviderSettings {
        identity::ProviderSettings {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.to_string().into(),
            redirect_uri: redirect.into(),
            issuer: Some(self.issuer.clone()),
            authorize_url: None,
            token_url: None,
            api_url: None,
        }
    }

    /// Claims a valid id_token would carry for `nonce` (issuer, audience, times).
    pub fn claims(&self, sub: &str, email: &str, nonce: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer, "aud": CLIENT_ID, "sub": sub, "email": email,
            "email_verified": true, "nonce": nonce, "iat": now, "exp": now + 300,
        })
    }

    /// Signs `claims` with the provider's key (ES256, its `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &EncodingKey::from_ec_der(&self.key)).unwrap()
    }

    /// Hands out `id_token` once for `code` (PKCE checked against `challenge`).
    pub async fn issue(&self, code: &str, challenge: &str, id_token: &str) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(CodeExchange {
                code: code.into(),
                challenge: challenge.into(),
            })
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "provider-access-token", "token_type": "Bearer",
                "expires_in": 3600, "id_token": id_token,
            })))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }
}

/// GitHub: OAuth2 endpoints and the user and e-mail APIs.
pub struct FakeGithub {
    pub server: MockServer,
}

impl FakeGithub {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/login/oauth/access_token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}),
            ))
            .with_priority(10)
            .mount(&server)
            .await;
        Self { server }
    }

    pub fn settings(&self, redirect: &str) -> identity::ProviderSettings {
        identity::ProviderSettings {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.to_string().into(),
            redirect_uri: redirect.into(),
            issuer: None,
            authorize_url: Some(format!("{}/login/oauth/authorize", self.server.uri())),
            token_url: Some(format!("{}/login/oauth/access_token", self.server.uri())),
            api_url: Some(format!("{}/api", self.server.uri())),
        }
    }

    /// Hands out an access token once for `code`, for a user with `id` and these addresses
    /// (`(email, verified, primary)`).
    pub async fn issue(&self, code: &str, challenge: &str, id: u64, emails: &[(&str, bool, bool)]) {
        let token = format!("gho_{}", uuid::Uuid::new_v4().simple());
        Mock::given(method("POST"))
            .and(path("/login/oauth/access_token"))
            .and(CodeExchange {
                code: code.into(),
                challenge: challenge.into(),
            })
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"}),
            ))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&self.server)
            .await;
        let bearer = format!("Bearer {token}");
        Mock::given(method("GET"))
            .and(path("/api/user"))
            .and(wiremock::matchers::header("authorization", bearer.as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": id, "login": format!("user{id}")})),
            )
            .mount(&self.server)
            .await;
        let emails: Vec<Value> = emails
            .iter()
            .map(|(e, verified, primary)| json!({"email": e, "verified": verified, "primary": primary, "visibility": null}))
            .collect();
        Mock::given(method("GET"))
            .and(path("/api/user/emails"))
            .and(wiremock::matchers::header("authorization", bearer.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(emails))
            .mount(&self.server)
            .await;
    }
}

/// What the app put in the provider's authorization URL.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub state: String,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub url: url::Url,
}

impl AuthorizeRequest {
    pub fn parse(location: &str) -> Self {
        let url = url::Url::parse(location).unwrap();
        let get = |k: &str| {
            url.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
        assert_eq!(get("client_id").as_deref(), Some(CLIENT_ID));
        Self {
            state: get("state").unwrap(),
            nonce: get("nonce"),
            code_challenge: get("code_challenge").unwrap(),
            url,
        }
    }
}
