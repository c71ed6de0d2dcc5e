//! Feature flags: defined by the platform in code (key, description, owner, expiry, default,
//! whether a tenant's Admin may change it), overridden per tenant by events, evaluated in
//! process. Evaluation is deterministic and monotonic: a user's bucket is LaunchDarkly's
//! (SHA-1 of `key.salt.user`, the first 15 hex digits over 0xFFFFFFFFFFFFFFF), so raising a
//! rollout from 10 % to 20 % keeps the first 10 % in.
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::code::Code;
use crate::DomainError;

/// A flag the platform defines. Flags are boolean: the variations are `on` and `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagDefinition {
    /// The key code and clients use.
    pub key: &'static str,
    /// What it gates.
    pub description: &'static str,
    /// Who to ask about it.
    pub owner: &'static str,
    /// After this date (ISO 8601) the flag is stale: remove it or make it permanent.
    pub expires: &'static str,
    /// The value without a tenant override.
    pub default: bool,
    /// Whether a tenant's Admin may override it (otherwise platform operators only).
    pub tenant_controllable: bool,
    /// Mixed into the bucketing hash, so two flags' rollouts pick different users.
    pub salt: &'static str,
}

/// Streamed answers (`Accept: text/event-stream`).
pub const STREAMING_ANSWERS: &str = "streaming-answers";
/// Reusing upvoted answers to identical questions (with the tenant's opt-in).
pub const ANSWER_REUSE: &str = "answer-reuse";
/// Answering from earlier upvoted answers when the engine cannot.
pub const FALLBACK_ENGINE: &str = "fallback-engine";
/// Every flag the platform defines.
pub const FLAGS: &[FlagDefinition] = &[
    FlagDefinition {
        key: STREAMING_ANSWERS,
        description: "Answers stream as Server-Sent Events when the client asks for them",
        owner: "answers-team",
        expires: "2027-06-30",
        default: true,
        tenant_controllable: true,
        salt: "b1f0",
    },
    FlagDefinition {
        key: ANSWER_REUSE,
        description: "Identical questions reuse a recent upvoted answer (tenant opt-in too)",
        owner: "answers-team",
        expires: "2027-06-30",
        default: true,
        tenant_controllable: true,
        salt: "7c2d",
    },
    FlagDefinition {
        key: FALLBACK_ENGINE,
        description: "When the engine cannot answer, answer from earlier upvoted answers",
        owner: "answers-team",
        expires: "2027-06-30",
        default: true,
        tenant_controllable: false,
        salt: "e93a",
    },
];

/// The definition of `key`.
pub fn definition(key: &str) -> Option<&'static FlagDefinition> {
    FLAGS.iter().find(|f| f.key == key)
}

/// The most users an allow or deny list holds.
pub const MAX_TARGETS: usize = 100;

/// A tenant's override of a flag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlagOverride {
    /// Off: everyone gets `off` (except the allow list).
    pub enabled: bool,
    /// On: this share of users (0-100) gets `on`.
    pub rollout_percentage: u8,
    /// Always `on` for these users.
    pub allow: Vec<String>,
    /// Always `off` for these users (wins over `allow`).
    pub deny: Vec<String>,
}

impl FlagOverride {
    /// The override as given, checked.
    pub fn validated(mut self) -> Result<Self, DomainError> {
        if self.rollout_percentage > 100 {
            return Err(DomainError::new(
                Code::InvalidRollout,
                "rollout_percentage must be between 0 and 100",
            ));
        }
        for list in [&mut self.allow, &mut self.deny] {
            if list.len() > MAX_TARGETS {
                return Err(DomainError::new(
                    Code::InvalidFeatureFlag,
                    format!("at most {MAX_TARGETS} users in an allow or deny list"),
                ));
            }
            if list.iter().any(|u| {
                u.trim().is_empty() || u.chars().count() > 200 || u.chars().any(char::is_control)
            }) {
                return Err(DomainError::new(
                    Code::InvalidFeatureFlag,
                    "a user in an allow or deny list is 1-200 characters, no control characters",
                ));
            }
            list.sort();
            list.dedup();
        }
        Ok(self)
    }
}

crate::text_enum! {
    /// Why a flag evaluated as it did.
    pub enum Reason {
        /// No tenant override: the platform's default.
        Default = "default",
        /// The user is on the deny list.
        TargetDeny = "target_deny",
        /// The user is on the allow list.
        TargetAllow = "target_allow",
        /// The tenant switched it off.
        Off = "off",
        /// The user's bucket against the rollout percentage.
        Rollout = "rollout",
        /// The platform does not define the flag.
        Unknown = "unknown",
    }
}

/// A flag's value for one user, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// On or off.
    pub value: bool,
    /// Why.
    pub reason: Reason,
}

impl Evaluation {
    /// The variation's name (`on`/`off`), as exposures count it.
    pub fn variation(&self) -> &'static str {
        if self.value {
            "on"
        } else {
            "off"
        }
    }
}

/// LaunchDarkly's bucket of `user` for a flag: in [0, 1).
pub fn bucket(key: &str, salt: &str, user: &str) -> f64 {
    let digest = Sha1::digest(format!("{key}.{salt}.{user}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    // 15 hex digits fit in a u64; the constant is LaunchDarkly's long scale.
    let value = u64::from_str_radix(&hex[..15], 16).unwrap_or(0);
    value as f64 / 0xFFF_FFFF_FFFF_FFFFu64 as f64
}

/// Evaluates `definition` for `user` under the tenant's `over`ride, if any.
pub fn evaluate(
    definition: &FlagDefinition,
    over: Option<&FlagOverride>,
    user: &str,
) -> Evaluation {
    let Some(over) = over else {
        return Evaluation {
            value: definition.default,
            reason: Reason::Default,
        };
    };
    let user = user.to_string();
    if over.deny.binary_search(&user).is_ok() {
        return Evaluation {
            value: false,
            reason: Reason::TargetDeny,
        };
    }
    if over.allow.binary_search(&user).is_ok() {
        return Evaluation {
            value: true,
            reason: Reason::TargetAllow,
        };
    }
    if !over.enabled {
        return Evaluation {
            value: false,
            reason: Reason::Off,
        };
    }
    let share = f64::from(over.rollout_percentage) / 100.0;
    Evaluation {
        value: bucket(definition.key, definition.salt, &user) < share,
        reason: Reason::Rollout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag() -> &'static FlagDefinition {
        definition(STREAMING_ANSWERS).unwrap()
    }

    fn rollout(pct: u8) -> FlagOverride {
        FlagOverride {
            enabled: true,
            rollout_percentage: pct,
            ..Default::default()
        }
    }

    #[test]
    fn the_bucket_distribution_is_within_one_percent_of_the_target() {
        for pct in [1u8, 10, 25, 50, 90] {
            let over = rollout(pct);
            let on = (0..100_000)
                .filter(|i| evaluate(flag(), Some(&over), &format!("user-{i}")).value)
                .count();
            let share = on as f64 / 100_000.0;
            assert!(
                (share - f64::from(pct) / 100.0).abs() < 0.01,
                "{pct}%: {share}"
            );
        }
    }

    #[test]
    fn raising_the_percentage_never_removes_a_user() {
        let users: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let mut previous: Vec<bool> = vec![false; users.len()];
        for pct in (0..=100).step_by(5) {
            let over = rollout(pct);
            for (i, user) in users.iter().enumerate() {
                let on = evaluate(flag(), Some(&over), user).value;
                assert!(on || !previous[i], "{user} left at {pct}%");
                previous[i] = on;
            }
        }
        assert!(previous.iter().all(|on| *on), "100% is everyone");
    }

    #[test]
    fn the_bucket_is_launchdarklys() {
        // Computed outside this code (Python: int(sha1(b"streaming-answers.b1f0.alice")
        // .hexdigest()[:15], 16) / 0xFFFFFFFFFFFFFFF); a change of key format, digit count or
        // scale changes every user's bucket and must fail here.
        let alice = bucket(STREAMING_ANSWERS, "b1f0", "alice");
        assert!((alice - 0.303_918_862_637_648_56).abs() < 1e-12, "{alice}");
        let bob = bucket(ANSWER_REUSE, "7c2d", "bob");
        assert!((bob - 0.012_418_158_811_094_562).abs() < 1e-12, "{bob}");
    }

    #[test]
    fn deny_beats_allow_beats_off_beats_rollout_and_no_override_is_the_default() {
        let over = FlagOverride {
            enabled: false,
            rollout_percentage: 100,
            allow: vec!["ann".into(), "bob".into()],
            deny: vec!["bob".into()],
        }
        .validated()
        .unwrap();
        assert_eq!(
            evaluate(flag(), Some(&over), "bob").reason,
            Reason::TargetDeny
        );
        assert!(evaluate(flag(), Some(&over), "ann").value);
        assert_eq!(evaluate(flag(), Some(&over), "cy").reason, Reason::Off);
        assert_eq!(
            evaluate(flag(), None, "cy"),
            Evaluation {
                value: true,
                reason: Reason::Default
            }
        );
    }

    #[test]
    fn every_definition_is_well_formed() {
        let mut keys = std::collections::BTreeSet::new();
        for f in FLAGS {
            assert!(keys.insert(f.key), "{} twice", f.key);
            assert!(chrono_like_date(f.expires), "{}", f.expires);
        }
    }

    fn chrono_like_date(s: &str) -> bool {
        s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-'
    }
}
