//! Performance budgets (`perf/budgets.toml`): the limits a load test's figures must stay within,
//! per route and overall, in named tiers — `ci` for a short run on a shared machine, `full` for
//! the documented run (docs/benchmarks.md). A breach is a finding, so the check reports every
//! one rather than stopping at the first.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file: its tiers by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    pub tiers: BTreeMap<String, Tier>,
}

/// One tier's limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// What the tier is for (printed with the report).
    #[serde(default)]
    pub description: Option<String>,
    /// Limits every route is held to.
    #[serde(default)]
    pub all: Limits,
    /// Tighter (or looser) limits for named routes, over `all`.
    #[serde(default)]
    pub routes: BTreeMap<String, Limits>,
    /// Limits on the run as a whole.
    #[serde(default)]
    pub overall: Overall,
}

/// Latency percentiles and the error rate of one route.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Failed requests over all requests (0.005 is 0.5 %).
    pub error_rate: Option<f64>,
}

impl Limits {
    /// `self`, with `over`'s limits where it sets them.
    fn overridden_by(self, over: &Limits) -> Limits {
        Limits {
            p50_ms: over.p50_ms.or(self.p50_ms),
            p95_ms: over.p95_ms.or(self.p95_ms),
            p99_ms: over.p99_ms.or(self.p99_ms),
            error_rate: over.error_rate.or(self.error_rate),
        }
    }
}

/// The run as a whole.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overall {
    /// Completed requests per second over the offered rate: below 1, the service (or the
    /// machine) could not keep up with the load. A ratio, so it holds on a slower machine.
    pub throughput_ratio: Option<f64>,
    /// Failed requests over all requests, every route together.
    pub error_rate: Option<f64>,
}

/// The figures a budget is checked against, for one route or for the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub route: String,
    pub count: usize,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// One limit that was exceeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    /// The route, or `overall`.
    pub route: String,
    pub figure: &'static str,
    pub limit: f64,
    pub actual: f64,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {:.4} over the budget of {}",
            self.route, self.figure, self.actual, self.limit
        )
    }
}

impl BudgetFile {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: BudgetFile = toml::from_str(text)?;
        for (name, tier) in &file.tiers {
            let all = std::iter::once(("all", &tier.all))
                .chain(tier.routes.iter().map(|(r, l)| (r.as_str(), l)));
            for (route, limits) in all {
                for (figure, value) in [
                    ("p50_ms", limits.p50_ms),
                    ("p95_ms", limits.p95_ms),
                    ("p99_ms", limits.p99_ms),
                    ("error_rate", limits.error_rate),
                ] {
                    anyhow::ensure!(
                        value.is_none_or(|v| v.is_finite() && v >= 0.0),
                        "tier `{name}`, {route}: {figure} must be a non-negative number"
                    );
                }
            }
        }
        Ok(file)
    }

    pub fn tier(&self, name: &str) -> anyhow::Result<&Tier> {
        self.tiers.get(name).ok_or_else(|| {
            anyhow::anyhow!(
                "no tier `{name}` in the budgets (tiers: {})",
                self.tiers.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

impl Tier {
    /// Refuses a budget for a route the scenario does not send: a typo would otherwise pass
    /// for ever. Checked before a run as well as with its figures.
    pub fn names_only(&self, known_routes: &[&str]) -> anyhow::Result<()> {
        match self
            .routes
            .keys()
            .find(|r| !known_routes.contains(&r.as_str()))
        {
            Some(unknown) => anyhow::bail!(
                "the budgets name `{unknown}`, which is no route of the scenario (routes: {})",
                known_routes.join(", ")
            ),
            None => Ok(()),
        }
    }

    /// Every breach of this tier by the run's figures (`known_routes`: as in [`Tier::names_only`]).
    pub fn check(
        &self,
        known_routes: &[&str],
        routes: &[Figures],
        all: &Figures,
        throughput_ratio: f64,
    ) -> anyhow::Result<Vec<Breach>> {
        self.names_only(known_routes)?;
        let mut breaches = Vec::new();
        for figures in routes {
            let limits = self
                .routes
                .get(&figures.route)
                .map_or(self.all, |over| self.all.overridden_by(over));
            for (figure, limit, actual) in [
                ("p50_ms", limits.p50_ms, figures.p50_ms),
                ("p95_ms", limits.p95_ms, figures.p95_ms),
                ("p99_ms", limits.p99_ms, figures.p99_ms),
                ("error_rate", limits.error_rate, figures.error_rate),
            ] {
                if let Some(limit) = limit.filter(|limit| actual > *limit) {
                    breaches.push(Breach {
                        route: figures.route.clone(),
                        figure,
                        limit,
                        actual,
                    });
                }
            }
        }
        if let Some(limit) = self.overall.error_rate.filter(|l| all.error_rate > *l) {
            breaches.push(Breach {
                route: "overall".into(),
                figure: "error_rate",
                limit,
                actual: all.error_rate,
            });
        }
        if let Some(limit) = self
            .overall
            .throughput_ratio
            .filter(|l| throughput_ratio < *l)
        {
            breaches.push(Breach {
                route: "overall".into(),
                figure: "throughput_ratio (at least)",
                limit,
                actual: throughput_ratio,
            });
        }
        Ok(breaches)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"
        [tiers.ci]
        description = "loose"
        all = { p95_ms = 500, error_rate = 0.005 }
        overall = { throughput_ratio = 0.9 }
        [tiers.ci.routes."GET /v1/analytics"]
        p99_ms = 20
    "#;

    fn figures(route: &str, p95: f64, p99: f64, error_rate: f64) -> Figures {
        Figures {
            route: route.into(),
            count: 100,
            error_rate,
            p50_ms: 1.0,
            p95_ms: p95,
            p99_ms: p99,
        }
    }

    #[test]
    fn route_limits_override_the_tier_wide_ones_and_every_breach_is_reported() {
        let file = BudgetFile::parse(FILE).unwrap();
        let tier = file.tier("ci").unwrap();
        let routes = [
            figures("GET /v1/analytics", 10.0, 25.0, 0.0),
            figures("POST /v1/conversations", 600.0, 900.0, 0.01),
            figures("GET /v1/audit", 400.0, 900.0, 0.0),
        ];
        let all = figures("all", 500.0, 900.0, 0.003);
        let breaches = tier
            .check(
                &[
                    "GET /v1/analytics",
                    "POST /v1/conversations",
                    "GET /v1/audit",
                ],
                &routes,
                &all,
                0.8,
            )
            .unwrap();
        let found: Vec<_> = breaches
            .iter()
            .map(|b| (b.route.as_str(), b.figure))
            .collect();
        assert_eq!(
            found,
            [
                ("GET /v1/analytics", "p99_ms"),
                ("POST /v1/conversations", "p95_ms"),
                ("POST /v1/conversations", "error_rate"),
                ("overall", "throughput_ratio (at least)"),
            ]
        );
    }

    #[test]
    fn figures_within_the_budgets_pass() {
        let file = BudgetFile::parse(FILE).unwrap();
        let routes = [figures("GET /v1/analytics", 10.0, 19.0, 0.0)];
        let all = figures("all", 10.0, 19.0, 0.0);
        let breaches = file
            .tier("ci")
            .unwrap()
            .check(&["GET /v1/analytics"], &routes, &all, 0.99)
            .unwrap();
        assert!(breaches.is_empty(), "{breaches:?}");
    }

    #[test]
    fn a_budget_for_an_unknown_route_an_unknown_tier_or_field_is_refused() {
        let file = BudgetFile::parse(FILE).unwrap();
        let err = file
            .tier("ci")
            .unwrap()
            .check(&["GET /v1/audit"], &[], &figures("all", 0.0, 0.0, 0.0), 1.0)
            .unwrap_err();
        assert!(err.to_string().contains("GET /v1/analytics"), "{err}");
        assert!(file.tier("nightly").is_err());
        assert!(BudgetFile::parse("[tiers.ci]\nall = { p95 = 3 }").is_err());
        assert!(BudgetFile::parse("[tiers.ci]\nall = { p95_ms = -3 }").is_err());
    }

    #[test]
    fn the_committed_budgets_parse_and_name_only_routes_of_the_scenario() {
        let text = include_str!("../../perf/budgets.toml");
        let file = BudgetFile::parse(text).unwrap();
        for tier in ["ci", "full"] {
            let breaches = file
                .tier(tier)
                .unwrap()
                .check(
                    &crate::loadtest::ROUTES,
                    &[],
                    &figures("all", 0.0, 0.0, 0.0),
                    1.0,
                )
                .unwrap();
            assert!(breaches.is_empty());
        }
    }
}
