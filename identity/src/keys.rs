//! Our access tokens: short-lived JWTs signed with Ed25519 (`EdDSA`), each naming its key in
//! `kid`. `/.well-known/jwks.json` publishes the public keys. Rotation: the new key signs, the
//! previous one is still accepted (and published) until the tokens it signed have expired.
//!
//! Verification accepts exactly one algorithm, `EdDSA`, and only keys we hold, looked up by an
//! exact `kid` match: `alg: none`, an HMAC "signed" with our public key, a `kid` naming a path
//! or a URL are all simply unknown and refused. Nothing is ever fetched because of a token.
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use domain::Role;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The `kid` of the development key; production refuses it.
pub const DEVELOPMENT_KID: &str = "development";

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user (a member's user id, a platform operator's address).
    pub sub: String,
    /// The tenant; absent for a platform operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The role at issue (a session's current role is re-read from the membership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The session; absent only in development tokens (`answers token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// A platform operator's token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub platform: bool,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Us.
    pub iss: String,
    /// This API.
    pub aud: String,
    /// The token's own id.
    pub jti: Uuid,
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not an Ed25519 PKCS#8 key.
    #[error("{0}: not an Ed25519 private key in PKCS#8 PEM (make one with `answers keygen`)")]
    Unreadable(&'static str),
    /// An empty or odd key id.
    #[error("{0}: a key id is 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`")]
    BadKid(&'static str),
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It has expired.
    #[error("the token has expired")]
    Expired,
    /// Anything else: what, for the caller.
    #[error("{0}")]
    Invalid(&'static str),
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: Vec<u8>,
}

impl SigningKey {
    fn from_pkcs8(kid: &str, der: &[u8], what: &'static str) -> Result<Self, KeyError> {
        let valid_kid = !kid.is_empty()
            && kid.len() <= 64
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_kid {
            return Err(KeyError::BadKid(what));
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| KeyError::Unreadable(what))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Self {
            kid: kid.to_string(),
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_der(&public),
            public,
        })
    }
}

/// Our signing keys: the current one and, during a rotation, the previous one.
pub struct TokenKeys {
    current: SigningKey,
    previous: Option<SigningKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

/// The DER inside a PEM document.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    STANDARD.decode(body).ok()
}

/// A new Ed25519 key as PKCS#8 PEM, for `answers keygen`.
pub fn generate_pem() -> Result<String, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
    let b64 = STANDARD.encode(doc.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

impl TokenKeys {
    /// Keys from configuration: the current key (PKCS#8 PEM) and its id, and optionally the
    /// previous ones during a rotation.
    pub fn new(
        current: (&str, &str),
        previous: Option<(&str, &str)>,
        issuer: &str,
        audience: &str,
        leeway: u64,
    ) -> Result<Self, KeyError> {
        let load = |(kid, pem): (&str, &str), what| {
            let der = pem_der(pem).ok_or(KeyError::Unreadable(what))?;
            SigningKey::from_pkcs8(kid, &der, what)
        };
        Ok(Self {
            current: load(current, "auth.signing_key")?,
            previous: previous
                .map(|p| load(p, "auth.previous_signing_key"))
                .transpose()?,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway,
        })
    }

    /// The development key: derived from a fixed, public seed so `answers token` and the server
    /// agree without configuration. Production refuses it (its `kid` is `development`).
    pub fn development(issuer: &str, audience: &str, leeway: u64) -> Self {
        let seed = Sha256::digest(b"answers development signing key: public, never for production");
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        #[allow(clippy::expect_used)]
        let current = SigningKey::from_pkcs8(DEVELOPMENT_KID, &der, "development key")
            .expect("a 32-byte seed is always an Ed25519 key");
        Self {
            current,
            previous: None,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway,
        }
    }

    /// The id of the key that signs.
    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// Whether the signing key is the development key (by id or by value).
    pub fn is_development(&self) -> bool {
        let dev = Self::development("", "", 0);
        self.current.kid == DEVELOPMENT_KID
            || self.current.public == dev.current.public
            || self
                .previous
                .as_ref()
                .is_some_and(|p| p.kid == DEVELOPMENT_KID)
    }

    /// Claims for `sub`, valid for `ttl_secs` from now.
    pub fn claims(&self, sub: &str, ttl_secs: u64) -> AccessClaims {
        let now = now_secs();
        AccessClaims {
            sub: sub.to_string(),
            tenant_id: None,
            role: None,
            sid: None,
            platform: false,
            exp: now + ttl_secs,
            iat: now,
            nbf: now,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::new_v4(),
        }
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current.kid.clone());
        encode(&header, claims, &self.current.encoding)
    }

    fn key(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.kid == kid)
    }

    /// Verifies a token of ours: algorithm, key, signature, issuer, audience, times.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind as K;
        let header =
            decode_header(token).map_err(|_| TokenError::Invalid("the token is malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(
                "the token is not signed with this API's algorithm (EdDSA)",
            ));
        }
        let kid = header
            .kid
            .ok_or(TokenError::Invalid("the token names no key (kid)"))?;
        let key = self.key(&kid).ok_or(TokenError::Invalid(
            "the token's key (kid) is not one of ours",
        ))?;
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        decode::<AccessClaims>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::Invalid("the token is not valid yet"),
                K::InvalidAudience => TokenError::Invalid("the token is not meant for this API"),
                K::InvalidIssuer => TokenError::Invalid("the token comes from an unknown issuer"),
                K::InvalidSignature => TokenError::Invalid("the token's signature is invalid"),
                _ => TokenError::Invalid("the token is malformed or incomplete"),
            })
    }

    /// The public keys, as a JSON Web Key Set (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(&k.public),
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(kid: &str) -> (TokenKeys, String) {
        let pem = generate_pem().unwrap();
        (
            TokenKeys::new((kid, &pem), None, "iss", "aud", 0).unwrap(),
            pem,
        )
    }

    #[test]
    fn a_token_verifies_with_its_key_and_the_jwks_publishes_it() {
        let (keys, _) = keys("k1");
        let mut claims = keys.claims("alice", 60);
        claims.tenant_id = Some("acme".into());
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), claims);
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kid"], "k1");
        // The published key verifies the token on its own (what another service would do).
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_audience(&["aud"]);
        decode::<AccessClaims>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
    }

    #[test]
    fn after_rotation_the_previous_key_still_verifies_and_a_foreign_key_does_not() {
        let (old, old_pem) = keys("k1");
        let token = old.sign(&old.claims("alice", 60)).unwrap();
        let new_pem = generate_pem().unwrap();
        let rotated =
            TokenKeys::new(("k2", &new_pem), Some(("k1", &old_pem)), "iss", "aud", 0).unwrap();
        assert!(rotated.verify(&token).is_ok());
        assert_eq!(rotated.current_kid(), "k2");
        let without_old = TokenKeys::new(("k2", &new_pem), None, "iss", "aud", 0).unwrap();
        assert!(without_old.verify(&token).is_err());
        // Same kid, another key: the signature fails.
        let (impostor, _) = keys("k1");
        assert_eq!(
            old.verify(&impostor.sign(&impostor.claims("eve", 60)).unwrap()),
            Err(TokenError::Invalid("the token's signature is invalid"))
        );
    }

    #[test]
    fn development_keys_are_recognised() {
        assert!(TokenKeys::development("i", "a", 0).is_development());
        assert!(!keys("k1").0.is_development());
        assert!(TokenKeys::new(("k", "not a pem"), None, "i", "a", 0).is_err());
        let pem = generate_pem().unwrap();
        assert!(TokenKeys::new(("../etc/passwd", &pem), None, "i", "a", 0).is_err());
    }
}
