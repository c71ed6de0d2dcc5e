//! Layered configuration: built-in defaults, then an optional TOML file, then environment
//! variables named `APP__SECTION__KEY` (e.g. `APP__DATABASE__URL`). Validated at start-up.
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How the service runs: `development` starts with no configuration (a built-in signing key,
/// development tokens); `production` refuses to start with any built-in secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub profile: Profile,
    pub identity: IdentitySettings,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub idempotency: IdempotencySettings,
    pub log: LogSettings,
    pub kafka: streaming::KafkaSettings,
    #[serde(default)]
    pub platform: PlatformSettings,
    pub engine: EngineSettings,
    pub kapa: kapa::KapaSettings,
    pub kapa_workers: KapaWorkerSettings,
    pub secrets: secrets::SecretSettings,
    pub flags: FlagSettings,
    pub rate_limits: crate::rate_limit::RateLimitSettings,
    pub http: crate::hardening::HttpSettings,
    pub webhooks: crate::webhooks::WebhookSettings,
    pub metrics: MetricsSettings,
    pub health: HealthSettings,
    pub slo: SloSettings,
    pub quality: QualitySettings,
    pub tracing: TracingSettings,
    pub embedded: EmbeddedSettings,
    pub read_cache: crate::read_cache::ReadCacheSettings,
    pub shutdown: ShutdownSettings,
}

/// Feature flags (docs/feature-flags.md).
#[derive(Debug, Clone, Deserialize)]
pub struct FlagSettings {
    /// How long a tenant's overrides are reused before they are read again.
    pub cache_ttl_ms: u64,
    /// How often exposure counts are written.
    pub flush_interval_ms: u64,
    /// Usage reports one user may send per flag per minute.
    pub usage_per_minute: u32,
}

/// The development pseudonym key. Start-up warns when it is in use.
pub const DEV_PSEUDONYM_KEY: &str = "dev-only-insecure-pseudonym-key-change-me-0123456";

/// How questions are answered (docs/kapa.md).
#[derive(Debug, Clone, Deserialize)]
pub struct EngineSettings {
    /// The engine of tenants without Kapa settings: `local` (development) or `none`
    /// (production: such tenants are answered from the fallback or not at all).
    pub default: String,
    /// The key from which per-tenant pseudonym keys are derived (at least 32 bytes).
    pub pseudonym_key: SecretString,
    /// The least trigram similarity (0-1) for an earlier upvoted answer to be a fallback.
    pub fallback_min_similarity: f32,
    /// How old an upvoted answer may be to be reused for an identical question.
    pub reuse_max_age_days: u32,
    /// How long after a question without answer the sweeper fails it (longer than any engine
    /// call: kapa.total_timeout_ms and more).
    pub sweep_after_ms: u64,
    /// How often the sweeper looks.
    pub sweep_interval_ms: u64,
    /// How far back the sweeper looks.
    pub sweep_horizon_hours: u64,
}

/// The workers that talk to Kapa outside a request: feedback forwarding and source syncs.
#[derive(Debug, Clone, Deserialize)]
pub struct KapaWorkerSettings {
    /// Run them in this process.
    pub in_process: bool,
    /// How often the feedback forwarder and the sync poller look for work.
    pub interval_ms: u64,
    /// The first retry delay of a failed feedback forward (it doubles, at most ten minutes).
    pub retry_base_ms: u64,
    /// Attempts before a feedback forward is given up (it stays visible as failed).
    pub feedback_max_attempts: u32,
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
    /// The owner's connection: migrations, and the parts that cross tenants (relay,
    /// projections, workers, identity), through the `cross_tenant` policies (docs/isolation.md).
    pub url: SecretString,
    /// A read replica (same database, same logins) that the read routes query instead of `url`:
    /// conversations, analytics, audit queries, sources lists (docs/disaster-recovery.md). Its
    /// lag adds to the projections'. Unset: the read routes use the primary.
    #[serde(default)]
    pub read_url: Option<SecretString>,
    /// Connections of the owner's pool.
    pub max_connections: u32,
    /// The role the API's pool acts as, held to row-level security (`answers_api`).
    pub api_role: String,
    /// The login of the API's pool (same host and database as `url`). Unset: the API logs in as
    /// `url`'s user and `SET ROLE`s to `api_role` — development only, refused in production,
    /// since that login could `RESET ROLE`.
    pub api_username: Option<String>,
    pub api_password: Option<SecretString>,
    /// Connections of the API's pool.
    pub api_max_connections: u32,
    /// The API role's `statement_timeout`: below the request deadline, so the database gives up
    /// on a runaway query before the client is answered 503 (the owner's is
    /// `statement_timeout_ms`: rebuilds and sweeps run longer statements).
    pub api_statement_timeout_ms: u64,
    pub acquire_timeout_ms: u64,
    /// Create the database when it does not exist (convenient locally; off in production).
    pub create_if_missing: bool,
    /// Run migrations at start-up (the `migrate` subcommand runs them on demand).
    pub migrate_on_start: bool,
    /// Postgres cancels a statement running longer than this (`statement_timeout`).
    pub statement_timeout_ms: u64,
}

/// When `/health/details` calls the read side behind (docs/metrics.md).
#[derive(Debug, Clone, Deserialize)]
pub struct HealthSettings {
    /// A projection or the relay with more unapplied events than this is `behind`.
    pub max_lag_events: i64,
    /// A projection whose newest applied event is older than this while behind is `behind`.
    pub max_lag_seconds: f64,
    /// A projection with events waiting and none delivered for this long is stalled: logged,
    /// counted and its consumer recreated (docs/projections.md).
    pub stall_after_ms: u64,
}

/// Service level objectives and the indicators recorded for them (docs/observability.md).
#[derive(Debug, Clone, Deserialize)]
pub struct SloSettings {
    /// Record the indicators (per minute, in Postgres) and serve the SLO and trend routes.
    pub enabled: bool,
    /// The rolling window an error budget is spent over, in days.
    pub window_days: u32,
    /// How often an instance adds what it counted to Postgres (and samples read-model lag).
    pub flush_interval_ms: u64,
    /// Share of `/v1` commands (POST, PUT, PATCH, DELETE) answered without a server error.
    pub commands_availability_target: f64,
    /// Share of `/v1` reads (GET) answered without a server error.
    pub reads_availability_target: f64,
    /// Requests faster than this are good for the latency objective (the seed's 500 ms).
    pub latency_threshold_ms: u64,
    /// Share of `/v1` requests (except those waiting for an answer engine) under the threshold:
    /// 0.95 is "p95 under 500 ms".
    pub latency_target: f64,
    /// A sample of the read side is fresh when no projection is further behind than this.
    pub freshness_threshold_seconds: f64,
    /// Share of samples in which the read models were fresh.
    pub freshness_target: f64,
}

/// The embedded transport (docs/streaming.md): projections follow the event store itself in
/// this process, no broker and no relay. One transport at a time: this or `kafka.enabled`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddedSettings {
    pub enabled: bool,
    /// Events read from the store at a time.
    pub batch_size: i64,
    /// How long a caught-up projection waits before looking again.
    pub idle_ms: u64,
}

/// A graceful stop (docs/deployment.md, "Graceful shutdown").
#[derive(Debug, Clone, Deserialize)]
pub struct ShutdownSettings {
    /// After SIGTERM, how long readiness answers 503 while requests are still served, so that
    /// load balancers stop sending before the listener closes (longer than the readiness
    /// probe's period). SIGINT skips it.
    pub drain_ms: u64,
    /// How long in-flight requests, then the relay's and projections' current batches, may take
    /// to finish before they are cut.
    pub grace_ms: u64,
}

/// Trace export (docs/observability.md).
#[derive(Debug, Clone, Deserialize)]
pub struct TracingSettings {
    /// `none` (default: spans only feed the logs) or `otlp` (exported over OTLP/gRPC).
    pub exporter: String,
    /// The collector's OTLP/gRPC endpoint.
    pub otlp_endpoint: String,
    /// The share of new traces kept (0 to 1); a caller's sampling decision is followed.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

/// The answer-quality evaluator (docs/observability.md).
#[derive(Debug, Clone, Deserialize)]
pub struct QualitySettings {
    /// Run it in this process (every instance may: a repeated breach is refused).
    pub in_process: bool,
    /// How often every tenant is measured.
    pub interval_ms: u64,
}

/// Prometheus metrics (docs/metrics.md).
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    /// Count and serve metrics (`/metrics`); off only to measure what they cost (`bench`).
    pub enabled: bool,
    /// Distinct tenant label values per tenant metric; later tenants are counted as `other`.
    pub tenant_label_cap: usize,
}

/// Our tokens and sessions (docs/identity.md).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// The Ed25519 key that signs access tokens (PKCS#8 PEM, `answers keygen`). Unset in
    /// development: a built-in key (refused in production).
    pub signing_key: Option<SecretString>,
    /// Its `kid`.
    pub signing_key_id: Option<String>,
    /// During a rotation: the previous key, still accepted and published until its tokens
    /// expire (`access_ttl_secs` after the rotation).
    pub previous_signing_key: Option<SecretString>,
    pub previous_signing_key_id: Option<String>,
    pub issuer: String,
    pub audience: String,
    /// Lifetime of tokens minted by the `token` subcommand (development only).
    pub dev_token_ttl_secs: u64,
    pub leeway_secs: u64,
    /// Lifetime of an access token.
    pub access_ttl_secs: u64,
    /// A session unused this long ends.
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in, used or not.
    pub session_absolute_secs: u64,
    /// How long a session check (revoked? member? role?) is reused: a revocation or a role
    /// change reaches live tokens within this.
    pub session_check_ttl_ms: u64,
    /// Cookies carry `Secure` (off only for plain-HTTP development).
    pub cookie_secure: bool,
    /// How long a sign-in may take between leaving for the provider and coming back.
    pub sign_in_ttl_secs: u64,
    /// How long a sign-in waits for its second factor.
    pub mfa_ttl_secs: u64,
}

/// Sign-in providers and platform operators (docs/identity.md). An absent provider is not
/// offered.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentitySettings {
    pub google: Option<identity::ProviderSettings>,
    pub microsoft: Option<identity::ProviderSettings>,
    pub github: Option<identity::ProviderSettings>,
    /// Verified e-mail addresses of the platform operators, comma-separated.
    pub operators: String,
    /// Timeout of every call to a provider.
    pub provider_timeout_ms: u64,
    /// The name authenticator apps show for our TOTP factors.
    pub totp_issuer: String,
}

/// A secret given in configuration, or what its reference (`env://NAME`, `file:///path`)
/// points at.
pub fn resolve_secret(value: &SecretString) -> Result<SecretString, String> {
    let raw = value.expose_secret();
    if let Some(name) = raw.strip_prefix("env://") {
        return std::env::var(name)
            .map(SecretString::from)
            .map_err(|_| format!("the environment variable {name} is not set"));
    }
    if let Some(path) = raw.strip_prefix("file://") {
        return std::fs::read_to_string(path)
            .map(|s| SecretString::from(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| format!("cannot read {path}: {e}"));
    }
    Ok(value.clone())
}

impl IdentitySettings {
    /// The configured providers, their client secrets resolved: a `client_secret` may be the
    /// secret itself or a reference, `env://VARIABLE` or `file:///path` (a mounted secret).
    pub fn providers(
        &self,
    ) -> Result<
        std::collections::BTreeMap<domain::access::Provider, identity::ProviderSettings>,
        String,
    > {
        use domain::access::Provider;
        let mut out = std::collections::BTreeMap::new();
        for (provider, settings) in [
            (Provider::Google, &self.google),
            (Provider::Microsoft, &self.microsoft),
            (Provider::Github, &self.github),
        ] {
            let Some(mut settings) = settings.clone() else {
                continue;
            };
            settings.client_secret = resolve_secret(&settings.client_secret)
                .map_err(|e| format!("identity.{provider}.client_secret: {e}"))?;
            out.insert(provider, settings);
        }
        Ok(out)
    }

    /// The operators' addresses, lower-cased.
    pub fn operators(&self) -> Vec<String> {
        self.operators
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect()
    }
}

impl AuthSettings {
    /// The signing keys: configured ones, or the development key when none is.
    pub fn token_keys(&self) -> anyhow::Result<identity::TokenKeys> {
        let Some(key) = &self.signing_key else {
            return Ok(identity::TokenKeys::development(
                &self.issuer,
                &self.audience,
                self.leeway_secs,
            ));
        };
        let kid = self.signing_key_id.as_deref().unwrap_or("current");
        let previous = match (&self.previous_signing_key, &self.previous_signing_key_id) {
            (Some(k), Some(id)) => Some((id.as_str(), k.expose_secret())),
            (Some(k), None) => Some(("previous", k.expose_secret())),
            _ => None,
        };
        Ok(identity::TokenKeys::new(
            (kid, key.expose_secret()),
            previous,
            &self.issuer,
            &self.audience,
            self.leeway_secs,
        )?)
    }
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
    /// The share of successful, fast requests whose `request finished` line is logged (0 to 1),
    /// decided per trace id so a trace is logged whole or not at all. Failures (4xx, 5xx) and
    /// slow requests are always logged.
    pub success_sample_rate: f64,
    /// A request slower than this is logged whatever the sampling (at `warn`).
    pub slow_request_ms: u64,
}

impl Settings {
    /// Defaults, then `file` (if given, it must exist), then `APP__*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder()
            .set_default("server.host", "127.0.0.1")?
            .set_default("server.port", 8080)?
            .set_default("server.workers", 0)?
            .set_default("database.url", "postgres://postgres@127.0.0.1:5432/answers")?
            .set_default("database.max_connections", 10)?
            .set_default("database.api_role", "answers_api")?
            .set_default("metrics.tenant_label_cap", 100)?
            .set_default("metrics.enabled", true)?
            .set_default("log.success_sample_rate", 1.0)?
            .set_default("log.slow_request_ms", 1000)?
            .set_default("health.max_lag_events", 10_000)?
            .set_default("health.max_lag_seconds", 60.0)?
            .set_default("health.stall_after_ms", 60_000)?
            .set_default("read_cache.enabled", true)?
            .set_default("read_cache.redis_url", "redis://127.0.0.1:6379")?
            .set_default("read_cache.timeout_ms", 50)?
            .set_default("read_cache.ttl_secs", 3600)?
            .set_default("read_cache.prewarm_lead_ms", 10_000)?
            .set_default("shutdown.drain_ms", 5_000)?
            .set_default("shutdown.grace_ms", 20_000)?
            .set_default("embedded.enabled", false)?
            .set_default("embedded.batch_size", 500)?
            .set_default("embedded.idle_ms", 20)?
            .set_default("tracing.exporter", "none")?
            .set_default("tracing.otlp_endpoint", "http://127.0.0.1:4317")?
            .set_default("tracing.sample_ratio", 1.0)?
            .set_default("tracing.service_name", "answers")?
            .set_default("quality.in_process", true)?
            .set_default("quality.interval_ms", 300_000)?
            .set_default("slo.enabled", true)?
            .set_default("slo.window_days", 30)?
            .set_default("slo.flush_interval_ms", 10_000)?
            .set_default("slo.commands_availability_target", 0.999)?
            .set_default("slo.reads_availability_target", 0.999)?
            .set_default("slo.latency_threshold_ms", 500)?
            .set_default("slo.latency_target", 0.95)?
            .set_default("slo.freshness_threshold_seconds", 10.0)?
            .set_default("slo.freshness_target", 0.99)?
            .set_default("database.api_max_connections", 20)?
            .set_default("database.api_statement_timeout_ms", 15_000)?
            .set_default("database.acquire_timeout_ms", 5000)?
            .set_default("database.create_if_missing", true)?
            .set_default("database.migrate_on_start", true)?
            .set_default("profile", "development")?
            .set_default("auth.access_ttl_secs", 600)?
            .set_default("auth.session_idle_secs", 12 * 3600)?
            .set_default("auth.session_absolute_secs", 7 * 24 * 3600)?
            .set_default("auth.session_check_ttl_ms", 1_000)?
            .set_default("auth.cookie_secure", true)?
            .set_default("auth.sign_in_ttl_secs", 600)?
            .set_default("auth.mfa_ttl_secs", 300)?
            .set_default("identity.operators", "")?
            .set_default("webhooks.in_process", true)?
            .set_default("webhooks.interval_ms", 1_000)?
            .set_default(
                "webhooks.retry_schedule_ms",
                "5000,300000,1800000,7200000,18000000,36000000,36000000",
            )?
            .set_default("webhooks.disable_after_failures", 50)?
            .set_default("webhooks.timeout_ms", 10_000)?
            .set_default("webhooks.allow_private", false)?
            .set_default("webhooks.allow_http", false)?
            .set_default("webhooks.horizon_hours", 72)?
            .set_default("webhooks.rotation_overlap_secs", 86_400)?
            .set_default("http.cors_origins", "")?
            .set_default("http.hsts", false)?
            .set_default("http.request_timeout_ms", 30_000)?
            .set_default("http.client_request_timeout_ms", 5_000)?
            .set_default("database.statement_timeout_ms", 30_000)?
            .set_default("rate_limits.enabled", true)?
            .set_default("rate_limits.redis_url", "redis://127.0.0.1:6379")?
            .set_default("rate_limits.key_prefix", "answers:rl:")?
            .set_default("rate_limits.redis_timeout_ms", 100)?
            .set_default("rate_limits.on_redis_down", "open")?
            .set_default("rate_limits.trusted_proxies", "")?
            .set_default("rate_limits.client_ip_header", "X-Forwarded-For")?
            .set_default("rate_limits.per_ip_per_minute", 1200)?
            .set_default("rate_limits.sign_in_per_ip_per_minute", 60)?
            .set_default("rate_limits.per_user_per_minute", 600)?
            .set_default("rate_limits.per_tenant_per_minute", 6000)?
            .set_default("rate_limits.questions_per_user_per_minute", 30)?
            .set_default("rate_limits.questions_per_tenant_per_minute", 300)?
            .set_default("rate_limits.questions_per_tenant_per_month", 100_000)?
            .set_default("identity.provider_timeout_ms", 5_000)?
            .set_default("identity.totp_issuer", "Answers")?
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
            .set_default("kafka.projections_in_process", true)?
            .set_default("engine.default", "local")?
            .set_default("engine.pseudonym_key", DEV_PSEUDONYM_KEY)?
            .set_default("engine.fallback_min_similarity", 0.45)?
            .set_default("engine.reuse_max_age_days", 30)?
            .set_default("engine.sweep_after_ms", 120_000)?
            .set_default("engine.sweep_interval_ms", 30_000)?
            .set_default("engine.sweep_horizon_hours", 168)?
            .set_default("kapa.enabled", true)?
            .set_default("kapa.base_url", "https://api.kapa.ai")?
            .set_default("kapa.connect_timeout_ms", 2_000)?
            .set_default("kapa.total_timeout_ms", 30_000)?
            .set_default("kapa.retries", 2)?
            .set_default("kapa.retry_base_ms", 200)?
            .set_default("kapa.retry_max_ms", 2_000)?
            .set_default("kapa.breaker_failures", 5)?
            .set_default("kapa.breaker_open_ms", 30_000)?
            .set_default("kapa.tenant_concurrency", 8)?
            .set_default("kapa.tenant_wait_ms", 2_000)?
            .set_default("kapa.call_timeout_ms", 10_000)?
            .set_default("kapa_workers.in_process", true)?
            .set_default("kapa_workers.interval_ms", 1_000)?
            .set_default("kapa_workers.feedback_max_attempts", 10)?
            .set_default("kapa_workers.retry_base_ms", 2_000)?
            .set_default("secrets.env_prefix", "KAPA_")?
            .set_default("secrets.file_root", "/run/secrets/answers")?
            .set_default("secrets.ttl_ms", 300_000)?
            .set_default("flags.cache_ttl_ms", 1_000)?
            .set_default("flags.flush_interval_ms", 1_000)?
            .set_default("flags.usage_per_minute", 30)?;
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
        match self.auth.token_keys() {
            Ok(keys) if self.profile == Profile::Production && keys.is_development() => problems
                .push(
                    "profile production refuses the development signing key: set \
                     auth.signing_key (answers keygen) and auth.signing_key_id"
                        .to_string(),
                ),
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        if self.profile == Profile::Production {
            if self.auth.signing_key.is_none() {
                problems.push("profile production needs auth.signing_key".to_string());
            }
            if self.engine.pseudonym_key.expose_secret() == DEV_PSEUDONYM_KEY {
                problems.push(
                    "profile production refuses the development engine.pseudonym_key".to_string(),
                );
            }
            if !self.auth.cookie_secure {
                problems.push("profile production needs auth.cookie_secure".to_string());
            }
        }
        for origin in self.http.origins() {
            let valid = url::Url::parse(&origin)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/");
            if !valid {
                problems.push(format!(
                    "http.cors_origins: `{origin}` is not an origin (https://app.example.com)"
                ));
            }
        }
        if self.http.request_timeout_ms == 0
            || self.database.statement_timeout_ms == 0
            || self.database.api_statement_timeout_ms == 0
        {
            problems.push(
                "http.request_timeout_ms, database.statement_timeout_ms and \
                 database.api_statement_timeout_ms must be positive"
                    .to_string(),
            );
        }
        let schedule_ok = self
            .webhooks
            .retry_schedule_ms
            .split(',')
            .all(|d| d.trim().parse::<u64>().is_ok());
        if !schedule_ok
            || self.webhooks.interval_ms == 0
            || self.webhooks.disable_after_failures == 0
        {
            problems.push(
                "webhooks.retry_schedule_ms must be comma-separated milliseconds; interval_ms and disable_after_failures positive"
                    .to_string(),
            );
        }
        let targets = [
            self.slo.commands_availability_target,
            self.slo.reads_availability_target,
            self.slo.latency_target,
            self.slo.freshness_target,
        ];
        if targets.iter().any(|t| !(*t > 0.0 && *t < 1.0)) {
            problems.push(
                "slo targets must lie strictly between 0 and 1 (0.999 is three nines)".to_string(),
            );
        }
        if !(1..=90).contains(&self.slo.window_days)
            || self.slo.flush_interval_ms == 0
            || self.slo.latency_threshold_ms == 0
            || self.slo.freshness_threshold_seconds.is_nan()
            || self.slo.freshness_threshold_seconds <= 0.0
        {
            problems.push(
                "slo.window_days must be 1 to 90; slo.flush_interval_ms, latency_threshold_ms and \
                 freshness_threshold_seconds positive"
                    .to_string(),
            );
        }
        if self.embedded.enabled && self.kafka.enabled {
            problems.push(
                "one transport at a time: embedded.enabled or kafka.enabled, not both".to_string(),
            );
        }
        problems.extend(self.read_cache.problems());
        if self.shutdown.grace_ms == 0 || self.shutdown.drain_ms > 300_000 {
            problems.push(
                "shutdown.grace_ms must be positive and shutdown.drain_ms at most 300000 (5 min)"
                    .to_string(),
            );
        }
        if self.embedded.batch_size < 1 || self.embedded.idle_ms == 0 {
            problems.push("embedded.batch_size and embedded.idle_ms must be positive".to_string());
        }
        if !matches!(self.tracing.exporter.as_str(), "none" | "otlp")
            || !(0.0..=1.0).contains(&self.tracing.sample_ratio)
            || url::Url::parse(&self.tracing.otlp_endpoint).is_err()
        {
            problems.push(
                "tracing.exporter must be `none` or `otlp`, tracing.sample_ratio 0 to 1 and \
                 tracing.otlp_endpoint a URL (http://collector:4317)"
                    .to_string(),
            );
        }
        if !matches!(self.rate_limits.on_redis_down.as_str(), "open" | "closed") {
            problems.push("rate_limits.on_redis_down must be `open` or `closed`".to_string());
        }
        let per_minute = [
            self.rate_limits.per_ip_per_minute,
            self.rate_limits.sign_in_per_ip_per_minute,
            self.rate_limits.per_user_per_minute,
            self.rate_limits.per_tenant_per_minute,
            self.rate_limits.questions_per_user_per_minute,
            self.rate_limits.questions_per_tenant_per_minute,
        ];
        if per_minute.contains(&0) || self.rate_limits.questions_per_tenant_per_month == 0 {
            problems.push(
                "rate limits must be at least 1 (turn them off with rate_limits.enabled)"
                    .to_string(),
            );
        }
        let ttls = [
            self.auth.access_ttl_secs,
            self.auth.session_idle_secs,
            self.auth.session_absolute_secs,
            self.auth.sign_in_ttl_secs,
            self.auth.mfa_ttl_secs,
        ];
        if ttls.contains(&0) {
            problems.push("auth TTLs and timeouts must be positive".to_string());
        }
        let providers = self.identity.providers().unwrap_or_else(|e| {
            problems.push(e);
            Default::default()
        });
        for (name, provider) in providers {
            if provider.client_id.trim().is_empty()
                || provider.client_secret.expose_secret().is_empty()
                || url::Url::parse(&provider.redirect_uri).is_err()
            {
                problems.push(format!(
                    "identity.{name} needs client_id, client_secret and an absolute redirect_uri"
                ));
            }
        }
        if let Some(token) = &self.platform.operator_token {
            if token.expose_secret().len() < 32 {
                problems.push("platform.operator_token must be at least 32 bytes".to_string());
            }
        }
        if self.auth.issuer.trim().is_empty() || self.auth.audience.trim().is_empty() {
            problems.push("auth.issuer and auth.audience must not be empty".to_string());
        }
        let url = self.database.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push("database.url must be a postgres:// URL".to_string());
        }
        if self.database.max_connections == 0 || self.database.api_max_connections == 0 {
            problems.push(
                "database.max_connections and database.api_max_connections must be at least 1"
                    .to_string(),
            );
        }
        let role = &self.database.api_role;
        let identifier = role.len() <= 63
            && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !identifier {
            problems.push(format!(
                "database.api_role: `{role}` is not a role name (lower-case letters, digits, _)"
            ));
        }
        if self.database.api_password.is_some() && self.database.api_username.is_none() {
            problems.push("database.api_password is set without database.api_username".to_string());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.limits.json_body_bytes) {
            problems.push("limits.json_body_bytes must be between 1 KiB and 16 MiB".to_string());
        }
        if !(0.0..=1.0).contains(&self.log.success_sample_rate) {
            problems.push("log.success_sample_rate must be between 0 and 1".to_string());
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
        if !matches!(self.engine.default.as_str(), "local" | "none") {
            problems.push("engine.default must be `local` or `none`".to_string());
        }
        if self.engine.pseudonym_key.expose_secret().len() < 32 {
            problems.push("engine.pseudonym_key must be at least 32 bytes".to_string());
        }
        if !(0.0..=1.0).contains(&self.engine.fallback_min_similarity) {
            problems.push("engine.fallback_min_similarity must be between 0 and 1".to_string());
        }
        if self.engine.sweep_after_ms <= self.kapa.total_timeout_ms {
            problems.push(
                "engine.sweep_after_ms must be longer than kapa.total_timeout_ms (a question \
                 still being answered must not be swept)"
                    .to_string(),
            );
        }
        if self.engine.sweep_interval_ms == 0 || self.kapa_workers.interval_ms == 0 {
            problems.push(
                "engine.sweep_interval_ms and kapa_workers.interval_ms must be positive"
                    .to_string(),
            );
        }
        if self.kapa.enabled {
            if let Err(e) = kapa::KapaClient::parse_base_url(&self.kapa.base_url) {
                problems.push(e);
            }
            if self.kapa.total_timeout_ms == 0 || self.kapa.tenant_concurrency == 0 {
                problems.push(
                    "kapa.total_timeout_ms and kapa.tenant_concurrency must be positive"
                        .to_string(),
                );
            }
        }
        if !self
            .secrets
            .env_prefix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            || self.secrets.env_prefix.is_empty()
        {
            problems.push("secrets.env_prefix must be A-Z, 0-9 and _ (and not empty)".to_string());
        }
        if !self.secrets.file_root.is_absolute() {
            problems.push("secrets.file_root must be an absolute path".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    pub fn answering(&self) -> commands::AnsweringSettings {
        commands::AnsweringSettings {
            pseudonym_key: self.engine.pseudonym_key.clone(),
            fallback_min_similarity: self.engine.fallback_min_similarity,
            reuse_max_age_days: self.engine.reuse_max_age_days,
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
        redact(self.url.expose_secret())
    }

    /// `read_url` with its password hidden.
    pub fn redacted_read_url(&self) -> Option<String> {
        self.read_url
            .as_ref()
            .map(|url| redact(url.expose_secret()))
    }
}

/// A database URL with its password hidden, for messages and logs.
fn redact(url: &str) -> String {
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
    fn provider_secrets_may_be_references() {
        let dir = std::env::temp_dir().join(format!("answers-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("google-secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let mut s = Settings::load(None).unwrap();
        s.identity.google = Some(identity::ProviderSettings {
            client_id: "id".into(),
            client_secret: SecretString::from(format!("file://{}", file.display())),
            redirect_uri: "https://app.test/cb".into(),
            issuer: None,
            authorize_url: None,
            token_url: None,
            api_url: None,
        });
        let resolved = s.identity.providers().unwrap();
        let google = &resolved[&domain::access::Provider::Google];
        assert_eq!(google.client_secret.expose_secret(), "from-a-file");
        s.identity.google.as_mut().unwrap().client_secret =
            SecretString::from("env://ANSWERS_TEST_SURELY_UNSET_VARIABLE");
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("identity.google.client_secret"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn production_refuses_the_built_in_secrets_with_a_readable_message() {
        let mut s = Settings::load(None).unwrap();
        s.profile = Profile::Production;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("production needs auth.signing_key"), "{err}");
        assert!(err.contains("development engine.pseudonym_key"), "{err}");
        s.auth.signing_key = Some(SecretString::from(identity::keys::generate_pem().unwrap()));
        s.auth.signing_key_id = Some("development".into());
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("refuses the development signing key"), "{err}");
        s.auth.signing_key_id = Some("2026-11".into());
        s.engine.pseudonym_key = SecretString::from("p".repeat(40));
        s.validate().unwrap();
        s.auth.signing_key = Some(SecretString::from("not a key"));
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("not an Ed25519 private key"), "{err}");
    }

    #[test]
    fn slo_targets_and_windows_are_checked_with_a_readable_message() {
        let mut s = Settings::load(None).unwrap();
        s.validate().unwrap();
        s.slo.latency_target = 1.0;
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("slo targets must lie strictly between 0 and 1"),
            "{err}"
        );
        s.slo.latency_target = 0.95;
        s.slo.window_days = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("slo.window_days must be 1 to 90"), "{err}");
        s.slo.window_days = 30;
        s.tracing.exporter = "jaeger".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("tracing.exporter must be `none` or `otlp`"),
            "{err}"
        );
    }
}
