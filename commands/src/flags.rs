//! Feature flags where the code runs: an OpenFeature-shaped provider interface
//! ([`FlagProvider`]: resolve a boolean with a value, a variant and a reason), the platform's
//! own provider over tenant overrides ([`TenantFlags`]) with an in-process cache, and exposure
//! counting. The command side evaluates against the tenant it already loaded (no round trip);
//! handlers go through the cache (a tenant is read from the store at most once per TTL).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::flags::{self, Evaluation, FlagOverride, Reason};
use domain::tenant::Tenant;
use domain::TenantId;
use sqlx::PgPool;

/// Who a flag is evaluated for (OpenFeature's evaluation context: the targeting key is the
/// user; the tenant scopes the overrides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationContext {
    pub tenant: TenantId,
    pub user: String,
}

/// A resolved flag (OpenFeature's `ResolutionDetails`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub value: bool,
    /// `on` or `off`.
    pub variant: &'static str,
    pub reason: Reason,
}

impl From<Evaluation> for Resolution {
    fn from(e: Evaluation) -> Self {
        Self {
            value: e.value,
            variant: e.variation(),
            reason: e.reason,
        }
    }
}

/// Where flag values come from. Swapping the store for LaunchDarkly or flagd means another
/// implementation of this trait (docs/feature-flags.md); none may need the network to start.
#[async_trait]
pub trait FlagProvider: Send + Sync {
    /// Resolves a boolean flag; `default` when the provider cannot (never an error).
    async fn resolve_bool(&self, flag: &str, default: bool, ctx: &EvaluationContext) -> Resolution;
}

type Loader =
    Arc<dyn Fn(TenantId) -> futures::future::BoxFuture<'static, Option<Tenant>> + Send + Sync>;

/// Lookups of an in-process cache by result: the hit rate is `hit / (hit + miss)`.
#[allow(clippy::expect_used)] // constant name and labels, checked by the tests
fn cache_lookups() -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "answers_cache_lookups_total",
            "Lookups of an in-process cache, by cache and result (hit, miss)",
        ),
        &["cache", "result"],
    )
    .expect("a valid counter")
}

/// A tenant's overrides, shared between the cache and evaluations.
type Overrides = Arc<std::collections::BTreeMap<String, FlagOverride>>;

/// (tenant, flag, user, variation).
type ExposureKey = (String, String, String, &'static str);

/// The platform's provider: definitions in code, overrides from the tenant's events, cached
/// per tenant for `ttl`; every evaluation is counted as an exposure.
pub struct TenantFlags {
    ttl: Duration,
    load: Loader,
    cache: Mutex<HashMap<TenantId, (Instant, Overrides)>>,
    exposures: Exposures,
    /// `answers_cache_lookups_total{cache="feature_flags", result}` (docs/metrics.md).
    lookups: prometheus::IntCounterVec,
}

impl TenantFlags {
    /// A provider that reads a tenant with `load` at most once per `ttl`.
    pub fn new(ttl: Duration, load: Loader) -> Self {
        Self {
            ttl,
            load,
            cache: Mutex::new(HashMap::new()),
            exposures: Exposures::default(),
            lookups: cache_lookups(),
        }
    }

    /// The cache's hit and miss counter, to register with the service's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.lookups.clone())]
    }

    /// Evaluates against a tenant already loaded (the command side): no round trip.
    pub fn evaluate(
        &self,
        tenant_id: &TenantId,
        tenant: &Tenant,
        flag: &str,
        user: &str,
    ) -> Resolution {
        self.resolve(tenant_id, flag, false, tenant.feature_flags.get(flag), user)
    }

    /// One evaluation, counted as an exposure. An unknown flag gets `default` and is not
    /// counted: nobody was exposed to anything.
    fn resolve(
        &self,
        tenant: &TenantId,
        flag: &str,
        default: bool,
        over: Option<&FlagOverride>,
        user: &str,
    ) -> Resolution {
        let Some(definition) = flags::definition(flag) else {
            return Resolution {
                value: default,
                variant: if default { "on" } else { "off" },
                reason: Reason::Unknown,
            };
        };
        let resolution = Resolution::from(flags::evaluate(definition, over, user));
        self.exposures
            .record(tenant, flag, user, resolution.variant);
        resolution
    }

    /// Forgets a tenant's cached overrides (after this process changed them).
    pub fn invalidate(&self, tenant: &TenantId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(tenant);
        }
    }

    async fn overrides(&self, tenant: &TenantId) -> Option<Overrides> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, overrides)) = cache.get(tenant) {
                if at.elapsed() < self.ttl {
                    self.lookups
                        .with_label_values(&["feature_flags", "hit"])
                        .inc();
                    return Some(overrides.clone());
                }
            }
        }
        self.lookups
            .with_label_values(&["feature_flags", "miss"])
            .inc();
        let loaded = (self.load)(tenant.clone()).await?;
        let overrides = Arc::new(loaded.feature_flags);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(tenant.clone(), (Instant::now(), overrides.clone()));
        }
        Some(overrides)
    }

    /// The exposures counted since the last flush.
    pub fn exposures(&self) -> &Exposures {
        &self.exposures
    }
}

#[async_trait]
impl FlagProvider for TenantFlags {
    async fn resolve_bool(&self, flag: &str, default: bool, ctx: &EvaluationContext) -> Resolution {
        // A tenant that cannot be read gets the platform's defaults, not an error.
        let overrides = match flags::definition(flag) {
            Some(_) => self.overrides(&ctx.tenant).await,
            None => None,
        };
        let over = overrides.as_ref().and_then(|o| o.get(flag));
        self.resolve(&ctx.tenant, flag, default, over, &ctx.user)
    }
}

/// Exposure counts kept in memory and flushed in batches (one upsert per tenant, flag, user and
/// variation per flush, however many evaluations).
#[derive(Default)]
pub struct Exposures {
    pending: Mutex<HashMap<ExposureKey, i64>>,
}

impl Exposures {
    fn record(&self, tenant: &TenantId, flag: &str, user: &str, variant: &'static str) {
        if let Ok(mut pending) = self.pending.lock() {
            *pending
                .entry((
                    tenant.to_string(),
                    flag.to_string(),
                    user.to_string(),
                    variant,
                ))
                .or_insert(0) += 1;
        }
    }

    /// Writes what was counted; returns how many rows.
    #[tracing::instrument(skip_all, err)]
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let batch: Vec<_> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tenants = Vec::with_capacity(batch.len());
        let mut flags_ = Vec::with_capacity(batch.len());
        let mut users = Vec::with_capacity(batch.len());
        let mut variants = Vec::with_capacity(batch.len());
        let mut counts = Vec::with_capacity(batch.len());
        for ((tenant, flag, user, variant), count) in batch {
            tenants.push(tenant);
            flags_.push(flag);
            users.push(user);
            variants.push(variant.to_string());
            counts.push(count);
        }
        let n = tenants.len();
        sqlx::query!(
            "INSERT INTO flag_exposures (tenant_id, flag, user_id, variation, evaluations)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
             ON CONFLICT (tenant_id, flag, user_id, variation) DO UPDATE
               SET evaluations = flag_exposures.evaluations + excluded.evaluations,
                   last_seen = now()",
            &tenants,
            &flags_,
            &users,
            &variants,
            &counts,
        )
        .execute(pool)
        .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(tenant: Tenant) -> TenantFlags {
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = loads.clone();
        TenantFlags::new(
            Duration::from_secs(60),
            Arc::new(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tenant = tenant.clone();
                Box::pin(async move { Some(tenant) })
            }),
        )
    }

    #[tokio::test]
    async fn handlers_read_a_tenant_once_per_ttl_and_unknown_flags_get_the_default() {
        let mut tenant = Tenant::default();
        tenant.feature_flags.insert(
            flags::STREAMING_ANSWERS.into(),
            FlagOverride {
                enabled: false,
                ..Default::default()
            },
        );
        let p = provider(tenant);
        let ctx = EvaluationContext {
            tenant: TenantId::parse("acme").unwrap(),
            user: "ann".into(),
        };
        for _ in 0..3 {
            let r = p.resolve_bool(flags::STREAMING_ANSWERS, true, &ctx).await;
            assert_eq!((r.value, r.reason), (false, Reason::Off));
        }
        let r = p.resolve_bool("no-such-flag", true, &ctx).await;
        assert_eq!((r.value, r.reason), (true, Reason::Unknown));
        let counted = p.exposures.pending.lock().unwrap().clone();
        assert_eq!(
            counted.get(&(
                "acme".into(),
                flags::STREAMING_ANSWERS.into(),
                "ann".into(),
                "off"
            )),
            Some(&3)
        );
        // Three lookups of one tenant within the TTL (an unknown flag needs none): one miss
        // (the load), two hits.
        let lookups = |result: &str| {
            p.lookups
                .with_label_values(&["feature_flags", result])
                .get()
        };
        assert_eq!((lookups("miss"), lookups("hit")), (1, 2));
    }
}
