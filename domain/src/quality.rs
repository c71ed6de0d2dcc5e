//! A tenant's answer-quality objectives (the seed's "80%+ helpful responses", "95%+ queries
//! answered", docs/observability.md): targets over a rolling window, tenant-adjustable, and the
//! pure decision of whether a measurement breaches one or recovers from a breach.
use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::DomainError;

crate::text_enum! {
    /// One quality objective.
    pub enum QualityObjective {
        /// Upvotes among the answers' votes.
        HelpfulRate = "helpful_rate",
        /// Questions answered among those that reached an outcome (guardrail blocks aside:
        /// the tenant's own policy, not a miss).
        AnsweredRate = "answered_rate",
    }
}

/// The targets, with the seed's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityObjectives {
    /// Share of votes that are upvotes (default 0.8).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub helpful_rate: f64,
    /// Share of questions answered (default 0.95).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub answered_rate: f64,
    /// The rolling window, in days (default 7).
    #[schema(minimum = 1, maximum = 90)]
    pub window_days: u32,
    /// Fewer votes (or questions) than this in the window decide nothing (default 20).
    #[schema(minimum = 1, maximum = 100000)]
    pub min_sample: u32,
}

impl Default for QualityObjectives {
    fn default() -> Self {
        Self {
            helpful_rate: 0.8,
            answered_rate: 0.95,
            window_days: 7,
            min_sample: 20,
        }
    }
}

impl QualityObjectives {
    /// The objectives, or why they cannot be.
    pub fn validated(self) -> Result<Self, DomainError> {
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(self.helpful_rate) || !rate_ok(self.answered_rate) {
            return Err(DomainError::new(
                Code::InvalidSettings,
                "quality targets are shares between 0 and 1 (0.8 is 80 %)",
            ));
        }
        if !(1..=90).contains(&self.window_days) || !(1..=100_000).contains(&self.min_sample) {
            return Err(DomainError::new(
                Code::InvalidSettings,
                "window_days must be 1 to 90 and min_sample 1 to 100000",
            ));
        }
        Ok(self)
    }

    /// The target of `objective`.
    pub fn target(&self, objective: QualityObjective) -> f64 {
        match objective {
            QualityObjective::HelpfulRate => self.helpful_rate,
            QualityObjective::AnsweredRate => self.answered_rate,
        }
    }
}

/// Good and total over the window for one objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QualitySample {
    /// Upvotes, or questions answered.
    pub good: i64,
    /// Votes, or questions with an outcome.
    pub total: i64,
}

/// What a measurement means for an objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QualityVerdict {
    /// Below target with enough data, and not already recorded as breached.
    Breached {
        /// The measured share.
        value: f64,
    },
    /// Recorded as breached, now at or above target with enough data.
    Recovered {
        /// The measured share.
        value: f64,
    },
    /// Nothing to record.
    Unchanged,
}

/// Decides from `sample` whether `objective` is newly breached or recovered. Too small a sample
/// changes nothing either way: a breach stands until enough data shows recovery.
pub fn assess(
    objectives: &QualityObjectives,
    objective: QualityObjective,
    sample: QualitySample,
    breached: bool,
) -> QualityVerdict {
    if sample.total < i64::from(objectives.min_sample) || sample.total == 0 {
        return QualityVerdict::Unchanged;
    }
    let value = sample.good as f64 / sample.total as f64;
    let below = value < objectives.target(objective);
    match (below, breached) {
        (true, false) => QualityVerdict::Breached { value },
        (false, true) => QualityVerdict::Recovered { value },
        _ => QualityVerdict::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breach_needs_enough_data_and_is_recorded_once() {
        let o = QualityObjectives {
            min_sample: 10,
            ..Default::default()
        };
        let few = QualitySample { good: 1, total: 9 };
        assert_eq!(
            assess(&o, QualityObjective::HelpfulRate, few, false),
            QualityVerdict::Unchanged
        );
        let bad = QualitySample { good: 7, total: 10 };
        assert_eq!(
            assess(&o, QualityObjective::HelpfulRate, bad, false),
            QualityVerdict::Breached { value: 0.7 }
        );
        assert_eq!(
            assess(&o, QualityObjective::HelpfulRate, bad, true),
            QualityVerdict::Unchanged
        );
        let good = QualitySample { good: 8, total: 10 };
        assert_eq!(
            assess(&o, QualityObjective::HelpfulRate, good, true),
            QualityVerdict::Recovered { value: 0.8 }
        );
        // Too little data keeps a breach standing.
        assert_eq!(
            assess(&o, QualityObjective::HelpfulRate, few, true),
            QualityVerdict::Unchanged
        );
        // Answered rate has its own target.
        let answered = QualitySample {
            good: 94,
            total: 100,
        };
        assert_eq!(
            assess(&o, QualityObjective::AnsweredRate, answered, false),
            QualityVerdict::Breached { value: 0.94 }
        );
    }

    #[test]
    fn targets_are_checked() {
        let bad = QualityObjectives {
            helpful_rate: 1.5,
            ..Default::default()
        };
        assert_eq!(bad.validated().unwrap_err().code, Code::InvalidSettings);
        let bad = QualityObjectives {
            window_days: 0,
            ..Default::default()
        };
        assert!(bad.validated().is_err());
        assert!(QualityObjectives::default().validated().is_ok());
    }
}
