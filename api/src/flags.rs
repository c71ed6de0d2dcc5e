//! Feature flags in the service: the stale-flag warning at start-up. Usage reports are rate
//! limited with the other budgets (`rate_limit::RateLimiter::flag_usage`, shared by replicas).
//! Evaluation lives in `commands::flags`, definitions in `domain::flags`.
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
}
