//! Where budgets are kept: Redis, shared by every replica (one atomic script, one round trip
//! per request), or this process's memory when Redis cannot be reached and the deployment
//! chose to fail open. Both run the same algorithms:
//!
//! - **GCRA** (the generic cell rate algorithm) for rates: one number per key, the theoretical
//!   arrival time; a request is allowed when it is not more than one period ahead of now.
//! - a **counter per window** for quotas (questions per month): allowed while under the limit.
//!
//! A request checks all its keys at once and is recorded under none of them when any refuses,
//! so a refused request costs no budget.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::redis_link::RedisLink;

/// One budget a request draws on.
#[derive(Debug, Clone)]
pub struct Limit {
    /// The policy's name (for `RateLimit-Policy`).
    pub policy: &'static str,
    /// Whose budget: `ip:1.2.3.4`, `user:acme:alice`, ...
    pub key: String,
    /// How it refills.
    pub kind: Kind,
}

/// How a budget refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `limit` requests per `period`, smoothly.
    Rate { limit: u32, period: Duration },
    /// `limit` requests until the window ends (`ends_in` from now).
    Quota { limit: u64, ends_in: Duration },
}

impl Kind {
    /// The limit and the window in seconds, for the headers.
    pub fn quota_and_window(self) -> (u64, u64) {
        match self {
            Kind::Rate { limit, period } => (u64::from(limit), period.as_secs().max(1)),
            Kind::Quota { limit, ends_in } => (limit, ends_in.as_secs().max(1)),
        }
    }
}

/// What one budget said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub remaining: u64,
    /// When a refused request may be retried.
    pub retry_after: Duration,
    /// When the budget is whole again.
    pub reset: Duration,
}

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local new = {}
local denied = false
for i = 1, #KEYS do
  local kind = ARGV[(i - 1) * 3 + 1]
  local limit = tonumber(ARGV[(i - 1) * 3 + 2])
  local period = tonumber(ARGV[(i - 1) * 3 + 3])
  local stored = tonumber(redis.call('GET', KEYS[i]))
  if kind == 'g' then
    local interval = period / limit
    local tat = stored or now
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - period
    if allow_at - now > 0.5 then
      denied = true
      table.insert(out, 0); table.insert(out, 0)
      table.insert(out, math.ceil(allow_at - now)); table.insert(out, math.ceil(tat - now))
    else
      new[i] = new_tat
      table.insert(out, 1); table.insert(out, math.floor((period - (new_tat - now)) / interval))
      table.insert(out, 0); table.insert(out, math.ceil(new_tat - now))
    end
  else
    local used = stored or 0
    if used + 1 > limit then
      denied = true
      table.insert(out, 0); table.insert(out, 0)
      table.insert(out, period); table.insert(out, period)
    else
      new[i] = used + 1
      table.insert(out, 1); table.insert(out, limit - used - 1)
      table.insert(out, 0); table.insert(out, period)
    end
  end
end
if not denied then
  for i = 1, #KEYS do
    local kind = ARGV[(i - 1) * 3 + 1]
    local period = tonumber(ARGV[(i - 1) * 3 + 3])
    if kind == 'g' then
      redis.call('SET', KEYS[i], new[i], 'PX', math.ceil(new[i] - now) + 1)
    else
      redis.call('SET', KEYS[i], new[i], 'PX', period + 60000)
    end
  end
end
return out
"#;

/// The budgets in Redis ([`RedisLink`]: connected lazily, reconnected at most once a second).
pub struct RedisBudgets {
    link: RedisLink,
    prefix: String,
    timeout: Duration,
    script: redis::Script,
}

impl RedisBudgets {
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Self {
            link: RedisLink::new(url, timeout)?,
            prefix: prefix.to_string(),
            timeout,
            script: redis::Script::new(SCRIPT),
        })
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        self.link.connection().await
    }

    async fn forget_connection(&self) {
        self.link.forget_connection().await;
    }

    /// Whether Redis answers a `PING` within the timeout (health details).
    pub async fn ping(&self) -> bool {
        let Some(mut connection) = self.connection().await else {
            return false;
        };
        let answered = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        if matches!(answered, Ok(Ok(_))) {
            return true;
        }
        self.forget_connection().await;
        false
    }

    /// Records `key` for `ttl` if it is new: `Some(true)` the first time, `Some(false)` after,
    /// `None` when Redis cannot answer.
    pub async fn first_time(&self, key: &str, ttl: Duration) -> Option<bool> {
        let mut connection = self.connection().await?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{key}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms);
        match tokio::time::timeout(
            self.timeout,
            cmd.query_async::<Option<String>>(&mut connection),
        )
        .await
        {
            Ok(Ok(set)) => Some(set.is_some()),
            _ => {
                self.forget_connection().await;
                None
            }
        }
    }

    /// Checks and draws on every budget at once; `None` when Redis cannot answer.
    pub async fn check(&self, limits: &[Limit]) -> Option<Vec<Outcome>> {
        let mut connection = self.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        for limit in limits {
            invocation.key(format!("{}{}", self.prefix, limit.key));
            match limit.kind {
                Kind::Rate { limit, period } => invocation
                    .arg("g")
                    .arg(limit.max(1))
                    .arg(u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1)),
                Kind::Quota { limit, ends_in } => invocation.arg("c").arg(limit).arg(
                    u64::try_from(ends_in.as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1),
                ),
            };
        }
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(values)) if values.len() == limits.len() * 4 => Some(
                values
                    .chunks(4)
                    .map(|c| Outcome {
                        allowed: c[0] == 1,
                        remaining: u64::try_from(c[1]).unwrap_or(0),
                        retry_after: Duration::from_millis(u64::try_from(c[2]).unwrap_or(0)),
                        reset: Duration::from_millis(u64::try_from(c[3]).unwrap_or(0)),
                    })
                    .collect(),
            ),
            other => {
                if let Ok(Err(error)) = &other {
                    tracing::warn!(%error, "rate limits: Redis failed");
                } else {
                    tracing::warn!("rate limits: Redis did not answer in time");
                }
                self.forget_connection().await;
                None
            }
        }
    }
}

/// The same budgets in this process's memory (fail-open fallback; each replica then counts
/// alone, so the effective limit is multiplied by the number of replicas).
#[derive(Default)]
pub struct LocalBudgets {
    /// Per key: the theoretical arrival time (rates) or the count (quotas), and when it expires.
    state: Mutex<HashMap<String, (u64, Instant)>>,
    started: std::sync::OnceLock<Instant>,
}

impl LocalBudgets {
    /// Microseconds since this limiter started: integers, so a budget exactly at its boundary is
    /// not refused by a rounding error.
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.get_or_init(Instant::now).elapsed().as_micros())
            .unwrap_or(u64::MAX)
    }

    pub fn check(&self, limits: &[Limit]) -> Vec<Outcome> {
        let now = self.now_us();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.len() > 200_000 {
            state.retain(|_, (_, expires)| *expires > Instant::now());
        }
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut new = Vec::new();
        for limit in limits {
            let stored = state
                .get(&limit.key)
                .filter(|(_, expires)| *expires > Instant::now())
                .map(|(v, _)| *v);
            match limit.kind {
                Kind::Rate { limit: l, period } => {
                    let period = us(period);
                    let interval = period / u64::from(l.max(1));
                    let tat = stored.unwrap_or(now).max(now);
                    let new_tat = tat + interval;
                    let allow_at = new_tat.saturating_sub(period);
                    if allow_at > now {
                        out.push(outcome(false, 0, allow_at - now, tat - now));
                    } else {
                        let used = new_tat - now;
                        out.push(outcome(true, (period - used) / interval.max(1), 0, used));
                        new.push((limit.key.clone(), new_tat, Duration::from_micros(used + 1)));
                    }
                }
                Kind::Quota { limit: l, ends_in } => {
                    let used = stored.unwrap_or(0);
                    let window = us(ends_in);
                    if used + 1 > l {
                        out.push(outcome(false, 0, window, window));
                    } else {
                        out.push(outcome(true, l - used - 1, 0, window));
                        new.push((limit.key.clone(), used + 1, ends_in));
                    }
                }
            }
        }
        if out.iter().all(|o| o.allowed) {
            for (key, value, ttl) in new {
                state.insert(key, (value, Instant::now() + ttl));
            }
        }
        out
    }
}

fn outcome(allowed: bool, remaining: u64, retry_us: u64, reset_us: u64) -> Outcome {
    Outcome {
        allowed,
        remaining,
        retry_after: Duration::from_micros(retry_us),
        reset: Duration::from_micros(reset_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(key: &str, limit: u32) -> Limit {
        Limit {
            policy: "test",
            key: key.into(),
            kind: Kind::Rate {
                limit,
                period: Duration::from_secs(60),
            },
        }
    }

    #[test]
    fn gcra_allows_the_limit_then_refuses_without_charging() {
        let local = LocalBudgets::default();
        for i in 0..5 {
            let o = local.check(&[rate("a", 5)]);
            assert!(o[0].allowed, "request {i}");
            assert_eq!(o[0].remaining, 4 - i);
        }
        let refused = local.check(&[rate("a", 5)]);
        assert!(!refused[0].allowed);
        assert!(refused[0].retry_after > Duration::from_secs(11));
        assert!(refused[0].retry_after <= Duration::from_secs(12));
        // A refusal by one budget charges none of the others.
        let both = local.check(&[rate("b", 5), rate("a", 5)]);
        assert!(!both[1].allowed);
        assert_eq!(local.check(&[rate("b", 5)])[0].remaining, 4);
    }

    #[test]
    fn a_quota_counts_to_its_limit() {
        let local = LocalBudgets::default();
        let quota = Limit {
            policy: "month",
            key: "m".into(),
            kind: Kind::Quota {
                limit: 2,
                ends_in: Duration::from_secs(3600),
            },
        };
        assert!(local.check(std::slice::from_ref(&quota))[0].allowed);
        assert!(local.check(std::slice::from_ref(&quota))[0].allowed);
        let refused = local.check(&[quota])[0];
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(3600));
    }
}
