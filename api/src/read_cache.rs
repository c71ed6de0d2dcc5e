//! The read cache (docs/read-cache.md): computed dashboard answers in Redis, per tenant and
//! query, keyed by the versions of the read models they were computed from. A version moves in
//! the transaction that applies an event of the tenant (and for every tenant when a rebuild
//! swaps a projection in), so a cached answer is found only while the model still holds exactly
//! what it was computed from: never older than the model, with no time-to-live to guess. The
//! TTL that entries do carry only frees memory.
//!
//! Redis is an accelerator, not a dependency: when it cannot answer within `timeout_ms` the
//! answer is computed as if nothing were cached, and the lookup is counted as an `error`.
//!
//! Concurrent misses of one key are computed once ([`ReadCache::flight`]): the others wait for
//! that answer — the answer of the same read-model versions — instead of each computing it
//! (a dashboard's minute rolling over under load made every waiting request compute it).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::TenantId;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::redis_link::RedisLink;

/// `read_cache.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadCacheSettings {
    /// Look answers up in Redis and keep them there.
    pub enabled: bool,
    /// The Redis holding the answers (may be the rate limiter's).
    pub redis_url: String,
    /// The bound on one lookup or store; beyond it the answer is computed uncached.
    pub timeout_ms: u64,
    /// How long an unused answer stays (memory only: a stale answer is never found anyway).
    pub ttl_secs: u64,
    /// How long before a minute ends the dashboards read in the last ten minutes are computed
    /// for the next minute (whose relative ranges end a minute later); 0: never.
    pub prewarm_lead_ms: u64,
}

impl ReadCacheSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled && redis::Client::open(self.redis_url.as_str()).is_err() {
            problems.push("read_cache.redis_url is not a Redis URL".to_string());
        }
        if self.timeout_ms == 0 || self.ttl_secs == 0 {
            problems.push("read_cache.timeout_ms and read_cache.ttl_secs must be positive".into());
        }
        if self.prewarm_lead_ms >= 60_000 {
            problems.push(
                "read_cache.prewarm_lead_ms must be under a minute (0 turns pre-warming off)"
                    .into(),
            );
        }
        problems
    }
}

/// Where a cached answer lives: the view, the tenant, the versions it was computed from and
/// the query's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The views cached, with the projections each one reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// `GET /v1/analytics`: the questions read model.
    Analytics,
    /// `GET /v1/analytics/cost`: questions, and sync runs from the audit trail.
    Cost,
}

impl View {
    pub fn as_str(self) -> &'static str {
        match self {
            View::Analytics => "analytics",
            View::Cost => "analytics_cost",
        }
    }

    fn projections(self) -> &'static [&'static str] {
        match self {
            View::Analytics => &["questions"],
            View::Cost => &["questions", "audit"],
        }
    }
}

/// Lookups by view and result (`hit`, `miss`, `error`), and what a cache does for the
/// benchmark: the hit rate is `hit / (hit + miss + error)`.
#[allow(clippy::expect_used)] // constant name and labels, checked by the tests
fn lookups() -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "answers_read_cache_lookups_total",
            "Lookups of the read cache (Redis), by view and result (hit, miss, error)",
        ),
        &["view", "result"],
    )
    .expect("a valid counter")
}

pub struct ReadCache {
    link: Option<Arc<RedisLink>>,
    ttl: Duration,
    lookups: prometheus::IntCounterVec,
    /// Answers being computed, by key: whoever misses a key someone is computing waits for it.
    in_flight: Arc<Mutex<HashMap<String, Answer>>>,
}

/// The answer of a computation in flight: `None` until it ends, then the body, or `Err` when
/// the computation failed or was abandoned (its waiters compute for themselves).
type Answer = tokio::sync::watch::Receiver<Option<Result<String, ()>>>;

/// What to do after a miss.
pub enum Flight {
    /// Compute the answer and hand it to [`Leader::publish`].
    Lead(Leader),
    /// Someone is computing this key: wait for [`Follower::answer`].
    Follow(Follower),
}

/// The one request computing a key. Dropped without publishing (an error, a cancelled
/// request), it tells its followers to compute for themselves.
pub struct Leader {
    key: String,
    sender: tokio::sync::watch::Sender<Option<Result<String, ()>>>,
    in_flight: Arc<Mutex<HashMap<String, Answer>>>,
}

impl Leader {
    /// Hands the answer to every follower.
    pub fn publish(self, body: &str) {
        self.sender.send_replace(Some(Ok(body.to_string())));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.sender.borrow().is_none() {
            self.sender.send_replace(Some(Err(())));
        }
        if let Ok(mut map) = self.in_flight.lock() {
            map.remove(&self.key);
        }
    }
}

/// A request waiting for a leader's answer.
pub struct Follower(Answer);

impl Follower {
    /// The leader's answer, or `None` when it failed or went away.
    pub async fn answer(mut self) -> Option<String> {
        let result = self.0.wait_for(Option::is_some).await.ok()?.clone();
        result.and_then(Result::ok)
    }
}

const PREFIX: &str = "answers:read:v1:";

impl ReadCache {
    /// Whether answers are cached at all.
    pub fn enabled(&self) -> bool {
        self.link.is_some()
    }

    pub fn new(settings: &ReadCacheSettings) -> redis::RedisResult<Self> {
        let link = if settings.enabled {
            Some(Arc::new(RedisLink::new(
                &settings.redis_url,
                Duration::from_millis(settings.timeout_ms),
            )?))
        } else {
            None
        };
        Ok(Self {
            link,
            ttl: Duration::from_secs(settings.ttl_secs),
            lookups: lookups(),
            in_flight: Arc::default(),
        })
    }

    /// After a miss of `key`: lead its computation, or follow the one already running.
    pub fn flight(&self, key: &CacheKey) -> Flight {
        #[allow(clippy::unwrap_used)] // poisoned only if a holder panicked: nothing to recover
        let mut map = self.in_flight.lock().unwrap();
        if let Some(answer) = map.get(key.as_str()) {
            return Flight::Follow(Follower(answer.clone()));
        }
        let (sender, receiver) = tokio::sync::watch::channel(None);
        map.insert(key.as_str().to_string(), receiver);
        Flight::Lead(Leader {
            key: key.as_str().to_string(),
            sender,
            in_flight: self.in_flight.clone(),
        })
    }

    /// Whether Redis holds an answer under `key` (not counted as a lookup: the pre-warmer's
    /// check, not a reader's).
    pub async fn holds(&self, key: &CacheKey) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        link.query::<i64>(redis::cmd("EXISTS").arg(key.as_str()))
            .await
            == Some(1)
    }

    /// The lookup counter, for the service's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.lookups.clone())]
    }

    /// The key of `view` for `tenant` and `query` (a canonical description of the request),
    /// read in the caller's transaction: with a snapshot (repeatable read), the versions and the
    /// answer computed after them in the same transaction describe the same state. `None` when
    /// the cache is off.
    pub async fn key(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        view: View,
        query: &str,
    ) -> Result<Option<CacheKey>, sqlx::Error> {
        if self.link.is_none() {
            return Ok(None);
        }
        // The database's identity is part of the key: versions restart from 1 in a new
        // database (a restore into a new one, every test), and an answer of another database
        // must not be found (docs/read-cache.md says what to do after restoring in place).
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT projection, version FROM read_model_versions \
              WHERE tenant_id = $1 AND projection = ANY($2) \
             UNION ALL \
             SELECT '#database', oid::bigint FROM pg_database WHERE datname = current_database()",
        )
        .bind(tenant.as_str())
        .bind(view.projections())
        .fetch_all(conn)
        .await?;
        // A projection that has applied nothing of the tenant's is at version 0: its first
        // event gives it a version from the sequence, which never gives 0.
        let versions: Vec<String> = view
            .projections()
            .iter()
            .map(|p| {
                let v = rows.iter().find(|(name, _)| name == p).map_or(0, |r| r.1);
                format!("{p}={v}")
            })
            .collect();
        let database = rows
            .iter()
            .find(|(name, _)| name == "#database")
            .map_or(0, |r| r.1);
        let digest = hex::encode(&Sha256::digest(query.as_bytes())[..16]);
        Ok(Some(CacheKey(format!(
            "{PREFIX}{database}:{}:{}:{}:{digest}",
            view.as_str(),
            tenant.as_str(),
            versions.join(",")
        ))))
    }

    /// The cached answer under `key`, if Redis holds one and answers in time.
    pub async fn get(&self, view: View, key: &CacheKey) -> Option<String> {
        let link = self.link.as_ref()?;
        let found = link
            .query::<Option<String>>(redis::cmd("GET").arg(key.as_str()))
            .await;
        let result = match &found {
            Some(Some(_)) => "hit",
            Some(None) => "miss",
            None => "error",
        };
        self.lookups
            .with_label_values(&[view.as_str(), result])
            .inc();
        found.flatten()
    }

    /// The answer under `key`, not counted as a lookup: a new leader's second look, since a
    /// leader that finished between a reader's lookup and its flight has put its answer and let
    /// its key go (`get` then `flight` is not atomic).
    pub async fn peek(&self, key: &CacheKey) -> Option<String> {
        let link = self.link.as_ref()?;
        link.query::<Option<String>>(redis::cmd("GET").arg(key.as_str()))
            .await
            .flatten()
    }

    /// Keeps `body` under `key` (bounded by the timeout; a failure only costs a later miss).
    /// Awaited before a leader lets its key go, so a reader arriving after finds it.
    pub async fn put(&self, key: &CacheKey, body: &str) {
        if let Some(link) = &self.link {
            let ttl = self.ttl.as_secs().max(1);
            let _: Option<()> = link
                .query(
                    redis::cmd("SET")
                        .arg(key.as_str())
                        .arg(body)
                        .arg("EX")
                        .arg(ttl),
                )
                .await;
        }
    }
}
