//! Secret references resolved to secrets. A tenant's settings never hold a key, only where it
//! lives: `env://NAME`, `file:///path` (a mounted Kubernetes secret) or
//! `vault://mount/path#field` (HashiCorp Vault KV v2, token auth). Each reference must point
//! inside the asking tenant's own space (docs/kapa.md), so one tenant can never borrow another
//! tenant's key by naming it. Resolved secrets are cached for a TTL: a rotated key is picked up
//! when its entry expires, or at once after [`SecretResolver::invalidate`] (called when Kapa
//! refuses a key). Secrets are [`SecretString`]s: their `Debug` is redacted, nothing here logs
//! one.
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod reference;

pub use reference::SecretRef;

/// Where secrets may come from, for the whole deployment.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretSettings {
    /// `env://` names must start with this prefix followed by the tenant id in upper case
    /// (`-` as `_`) and `_`: `KAPA_ACME_API_KEY` for tenant `acme` with prefix `KAPA_`.
    pub env_prefix: String,
    /// `file://` paths must lie under `<file_root>/<tenant id>/`.
    pub file_root: PathBuf,
    /// How long a resolved secret is reused.
    pub ttl_ms: u64,
    /// HashiCorp Vault, if the deployment uses it.
    #[serde(default)]
    pub vault: Option<VaultSettings>,
}

/// A Vault server (KV version 2 engine, token auth).
#[derive(Debug, Clone, Deserialize)]
pub struct VaultSettings {
    /// `https://vault.internal:8200`.
    pub address: String,
    /// The Vault token.
    pub token: SecretString,
    /// Enterprise namespace, sent as `X-Vault-Namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `vault://` paths (after the mount) must start with `<path_prefix><tenant id>/`
    /// (default prefix: `tenants/`).
    #[serde(default = "default_vault_prefix")]
    pub path_prefix: String,
    /// How long a Vault request may take.
    #[serde(default = "default_vault_timeout")]
    pub timeout_ms: u64,
}

fn default_vault_prefix() -> String {
    "tenants/".into()
}

fn default_vault_timeout() -> u64 {
    2_000
}

/// Why a reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The reference is not one this resolver understands.
    #[error("{0}")]
    Invalid(String),
    /// The reference points outside the tenant's own space.
    #[error("the secret reference points outside this tenant's secrets: {0}")]
    NotAllowed(String),
    /// Nothing is stored there.
    #[error("no secret at {0}")]
    NotFound(String),
    /// The store could not be reached or failed; trying later may work.
    #[error("the secret store is unavailable: {context}")]
    Unavailable {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SecretError {
    /// Whether trying again later may succeed (the store was down), rather than a person
    /// having to fix the reference.
    pub fn retryable(&self) -> bool {
        matches!(self, SecretError::Unavailable { .. })
    }
}

/// Resolves references for tenants, with a TTL cache.
pub struct SecretResolver {
    settings: SecretSettings,
    http: reqwest::Client,
    cache: Mutex<HashMap<(String, String), (SecretString, Instant)>>,
}

impl SecretResolver {
    /// A resolver over `settings`.
    pub fn new(settings: SecretSettings) -> Result<Self, SecretError> {
        let timeout = settings.vault.as_ref().map_or(2_000, |v| v.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout))
            .build()
            .map_err(|e| SecretError::Unavailable {
                context: "building the HTTP client".into(),
                source: Box::new(e),
            })?;
        Ok(Self {
            settings,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The secret `reference` names, for `tenant`.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, scheme), err(level = tracing::Level::WARN))]
    pub async fn resolve(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<SecretString, SecretError> {
        let parsed = SecretRef::parse(reference)?;
        tracing::Span::current().record("scheme", parsed.scheme());
        let key = (tenant.to_string(), reference.to_string());
        if let Some(secret) = self.cached(&key) {
            return Ok(secret);
        }
        let secret = match &parsed {
            SecretRef::Env(name) => self.read_env(tenant, name)?,
            SecretRef::File(path) => self.read_file(tenant, path).await?,
            SecretRef::Vault { mount, path, field } => {
                self.read_vault(tenant, mount, path, field).await?
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (secret.clone(), Instant::now()));
        }
        Ok(secret)
    }

    /// Forgets a cached secret, so the next use reads it again (after a rotation).
    pub fn invalidate(&self, tenant: &str, reference: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&(tenant.to_string(), reference.to_string()));
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<SecretString> {
        let ttl = Duration::from_millis(self.settings.ttl_ms);
        let cache = self.cache.lock().ok()?;
        let (secret, at) = cache.get(key)?;
        (at.elapsed() < ttl).then(|| secret.clone())
    }

    fn read_env(&self, tenant: &str, name: &str) -> Result<SecretString, SecretError> {
        let expected = format!(
            "{}{}_",
            self.settings.env_prefix,
            tenant.to_ascii_uppercase().replace('-', "_")
        );
        if !name.starts_with(&expected) {
            return Err(SecretError::NotAllowed(format!(
                "environment variables for this tenant start with {expected}"
            )));
        }
        match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => {
                Ok(SecretString::from(value.trim().to_string()))
            }
            _ => Err(SecretError::NotFound(format!("env://{name}"))),
        }
    }

    async fn read_file(&self, tenant: &str, path: &Path) -> Result<SecretString, SecretError> {
        let root = self.settings.file_root.join(tenant);
        let escapes = path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
        if escapes || !path.starts_with(&root) {
            return Err(SecretError::NotAllowed(format!(
                "files for this tenant lie under {}/",
                root.display()
            )));
        }
        match tokio::fs::read_to_string(path).await {
            Ok(value) if !value.trim().is_empty() => {
                Ok(SecretString::from(value.trim().to_string()))
            }
            Ok(_) => Err(SecretError::NotFound(format!("file://{}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SecretError::NotFound(format!("file://{}", path.display())))
            }
            Err(e) => Err(SecretError::Unavailable {
                context: format!("reading {}", path.display()),
                source: Box::new(e),
            }),
        }
    }

    async fn read_vault(
        &self,
        tenant: &str,
        mount: &str,
        path: &str,
        field: &str,
    ) -> Result<SecretString, SecretError> {
        let vault = self.settings.vault.as_ref().ok_or_else(|| {
            SecretError::Invalid("vault:// references need a Vault server (secrets.vault)".into())
        })?;
        let expected = format!("{}{tenant}/", vault.path_prefix);
        if !path.starts_with(&expected) {
            return Err(SecretError::NotAllowed(format!(
                "Vault paths for this tenant start with {expected}"
            )));
        }
        let url = format!(
            "{}/v1/{mount}/data/{path}",
            vault.address.trim_end_matches('/')
        );
        let mut request = self
            .http
            .get(&url)
            .header("X-Vault-Token", vault.token.expose_secret());
        if let Some(namespace) = &vault.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        let unavailable =
            |context: &str, e: Box<dyn std::error::Error + Send + Sync>| SecretError::Unavailable {
                context: context.to_string(),
                source: e,
            };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable("asking Vault", Box::new(e.without_url())))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(SecretError::NotFound(format!("vault://{mount}/{path}")));
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(SecretError::NotAllowed(format!(
                "Vault refused the platform's token for {mount}/{path}"
            )));
        }
        if !status.is_success() {
            return Err(unavailable(
                "asking Vault",
                format!("Vault answered {status}").into(),
            ));
        }
        #[derive(Deserialize)]
        struct Kv2 {
            data: Kv2Data,
        }
        #[derive(Deserialize)]
        struct Kv2Data {
            data: Option<HashMap<String, serde_json::Value>>,
        }
        let body: Kv2 = response
            .json()
            .await
            .map_err(|e| unavailable("reading Vault's answer", Box::new(e.without_url())))?;
        // A deleted version has `data: null`.
        match body.data.data.as_ref().and_then(|d| d.get(field)) {
            Some(serde_json::Value::String(value)) if !value.trim().is_empty() => {
                Ok(SecretString::from(value.trim().to_string()))
            }
            _ => Err(SecretError::NotFound(format!(
                "vault://{mount}/{path}#{field}"
            ))),
        }
    }
}
