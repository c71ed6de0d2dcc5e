//! Layered configuration: built-in defaults, then an optional TOML file, then environment
//! variables named `APP__SECTION__KEY` (e.g. `APP__DATABASE__URL`). Validated at start-up.
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The development secret. Start-up warns when it is in use.
pub const DEV_JWT_SECRET: &str = "dev-only-insecure-jwt-secret-change-me-0123456789";

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub idempotency: IdempotencySettings,
    pub log: LogSettings,
    pub kafka: streaming::KafkaSettings,
    #[serde(default)]
    pub platform: PlatformSettings,
}

/// Operating the platform as a whole (not one tenant).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlatformSettings {
    /// The platform operators' bearer credential for the routes that serve every tenant
    /// (projection status and rebuilds). Unset: those routes refuse everyone.
    pub operator_token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    /// 0 picks a free port (tests do).
    pub port: u16,
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`; secret because it may carry a password.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// Create the database when it does not exist (convenient locally; off in production).
    pub create_if_missing: bool,
    /// Run migrations at start-up (the `migrate` subcommand runs them on demand).
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// HS256 secret, at least 32 bytes.
    pub jwt_secret: SecretString,
    pub issuer: String,
    pub audience: String,
    /// Lifetime of tokens minted by the `token` subcommand.
    pub dev_token_ttl_secs: u64,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub json_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdempotencySettings {
    pub lease_ms: u64,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `json` (default) or `pretty`.
    pub format: String,
    /// A tracing filter, e.g. `info,sqlx=warn`; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Settings {
    /// Defaults, then `file` (if given, it must exist), then `APP__*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder()
            .set_default("server.host", "127.0.0.1")?
            .set_default("server.port", 8080)?
            .set_default("server.workers", 0)?
            .set_default("database.url", "postgres://postgres@127.0.0.1:5432/answers")?
            .set_default("database.max_connections", 20)?
            .set_default("database.acquire_timeout_ms", 5000)?
            .set_default("database.create_if_missing", true)?
            .set_default("database.migrate_on_start", true)?
            .set_default("auth.jwt_secret", DEV_JWT_SECRET)?
            .set_default("auth.issuer", "answers-dev")?
            .set_default("auth.audience", "answers-api")?
            .set_default("auth.dev_token_ttl_secs", 12 * 3600)?
            .set_default("auth.leeway_secs", 30)?
            .set_default("limits.json_body_bytes", 64 * 1024)?
            .set_default("idempotency.lease_ms", 30_000)?
            .set_default("idempotency.wait_ms", 10_000)?
            .set_default("log.format", "json")?
            .set_default("log.filter", "info,sqlx=warn,rdkafka=warn")?
            .set_default("kafka.enabled", true)?
            .set_default("kafka.bootstrap_servers", "127.0.0.1:9092")?
            .set_default("kafka.client_id", "answers")?
            .set_default("kafka.topic_prefix", "answers.events")?
            .set_default("kafka.partitions", 3)?
            .set_default("kafka.replication_factor", 1)?
            .set_default("kafka.linger_ms", 0)?
            .set_default("kafka.message_timeout_ms", 120_000)?
            .set_default("kafka.producer_batch_messages", 1)?
            .set_default("kafka.consumer_group", "answers")?
            .set_default("kafka.relay.in_process", true)?
            .set_default("kafka.relay.name", "kafka")?
            .set_default("kafka.relay.batch_size", 500)?
            .set_default("kafka.relay.idle_ms", 50)?
            .set_default("kafka.projections_in_process", true)?;
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("APP")
                .prefix_separator("__")
                .separator("__"),
        );
        let settings: Settings = builder
            .build()?
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.auth.jwt_secret.expose_secret().len() < 32 {
            problems.push("auth.jwt_secret must be at least 32 bytes".to_string());
        }
        if let Some(token) = &self.platform.operator_token {
            let token = token.expose_secret();
            if token.len() < 32 {
                problems.push("platform.operator_token must be at least 32 bytes".to_string());
            }
            if token == self.auth.jwt_secret.expose_secret() {
                problems
                    .push("platform.operator_token must differ from auth.jwt_secret".to_string());
            }
        }
        if self.auth.issuer.trim().is_empty() || self.auth.audience.trim().is_empty() {
            problems.push("auth.issuer and auth.audience must not be empty".to_string());
        }
        let url = self.database.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push("database.url must be a postgres:// URL".to_string());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".to_string());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.limits.json_body_bytes) {
            problems.push("limits.json_body_bytes must be between 1 KiB and 16 MiB".to_string());
        }
        if !matches!(self.log.format.as_str(), "json" | "pretty") {
            problems.push("log.format must be `json` or `pretty`".to_string());
        }
        if self.kafka.enabled {
            if self.kafka.bootstrap_servers.trim().is_empty() {
                problems.push("kafka.bootstrap_servers must not be empty".to_string());
            }
            if self.kafka.partitions < 1 || self.kafka.replication_factor < 1 {
                problems.push(
                    "kafka.partitions and kafka.replication_factor must be at least 1".to_string(),
                );
            }
            if !(1..=1_000_000).contains(&self.kafka.producer_batch_messages) {
                problems.push(
                    "kafka.producer_batch_messages must be between 1 and 1000000".to_string(),
                );
            }
            if self.kafka.relay.batch_size < 1 {
                problems.push("kafka.relay.batch_size must be at least 1".to_string());
            }
            let valid_prefix = !self.kafka.topic_prefix.is_empty()
                && self
                    .kafka
                    .topic_prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid_prefix {
                problems.push(
                    "kafka.topic_prefix must be letters, digits, `.`, `_` or `-`".to_string(),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    pub fn idempotency(&self) -> commands::IdempotencySettings {
        commands::IdempotencySettings {
            lease: Duration::from_millis(self.idempotency.lease_ms),
            wait: Duration::from_millis(self.idempotency.wait_ms),
            ..Default::default()
        }
    }
}

impl DatabaseSettings {
    /// The URL with any password masked, for messages.
    pub fn redacted_url(&self) -> String {
        let url = self.url.expose_secret();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &url[scheme + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                    None => url.to_string(),
                }
            }
            _ => url.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_passwords_never_print() {
        let mut s = Settings::load(None).unwrap();
        s.database.url = SecretString::from("postgres://app:hunter2@db:5432/answers");
        assert_eq!(
            s.database.redacted_url(),
            "postgres://app:***@db:5432/answers"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_short_secret_is_refused_with_a_readable_message() {
        let mut s = Settings::load(None).unwrap();
        s.auth.jwt_secret = SecretString::from("short");
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("auth.jwt_secret must be at least 32 bytes"),
            "{err}"
        );
    }
}
