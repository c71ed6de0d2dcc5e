//! Feature flags in the service: the stale-flag warning at start-up and the rate limit on usage
//! reports. Evaluation lives in `commands::flags`, definitions in `domain::flags`.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::NaiveDate;

/// Flags past their expiry date on `today`.
pub fn stale_flags(today: NaiveDate) -> Vec<&'static domain::flags::FlagDefinition> {
    domain::flags::FLAGS
        .iter()
        .filter(|f| {
            NaiveDate::parse_from_str(f.expires, "%Y-%m-%d").map_or(true, |expires| expires < today)
        })
        .collect()
}

/// Warns, once at start-up, about every stale flag.
pub fn warn_about_stale_flags(today: NaiveDate) {
    for flag in stale_flags(today) {
        tracing::warn!(
            flag = flag.key,
            expires = flag.expires,
            owner = flag.owner,
            "a feature flag is past its expiry date: remove it or make it permanent"
        );
    }
}

/// (tenant, user, flag).
type UsageKey = (String, String, String);

/// At most `per_minute` usage reports per tenant, user and flag in any minute (a fixed window
/// per key; memory is bounded by pruning windows that ended).
pub struct UsageLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<UsageKey, (Instant, u32)>>,
}

impl UsageLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when the report may be taken, else how long until it may.
    pub fn admit(&self, tenant: &str, user: &str, flag: &str) -> Result<(), Duration> {
        let minute = Duration::from_secs(60);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| start.elapsed() < minute);
        }
        let entry = windows
            .entry((tenant.to_string(), user.to_string(), flag.to_string()))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= minute {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= self.per_minute {
            return Err(minute.saturating_sub(entry.0.elapsed()));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_past_their_date_are_stale() {
        let before = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        assert!(stale_flags(before).is_empty());
        let after = NaiveDate::from_ymd_opt(2030, 1, 1).unwrap();
        assert_eq!(stale_flags(after).len(), domain::flags::FLAGS.len());
    }

    #[test]
    fn usage_reports_are_limited_per_user_and_flag() {
        let limiter = UsageLimiter::new(2);
        assert!(limiter.admit("t", "u", "f").is_ok());
        assert!(limiter.admit("t", "u", "f").is_ok());
        assert!(limiter.admit("t", "u", "f").is_err());
        assert!(limiter.admit("t", "v", "f").is_ok());
        assert!(limiter.admit("t", "u", "g").is_ok());
    }
}
