//! The answer-quality evaluator (docs/observability.md): measures each tenant's helpful-answer
//! and answered rates over its window from the analytics facts and records a breach, or the
//! recovery from one, on the tenant as an event. The event reaches the tenant's webhooks
//! (`quality.changed`) and its audit trail; the number of tenants in breach is a metric the
//! platform alerts on when many breach at once (an engine-wide regression).
use std::sync::Arc;
use std::time::Duration;

use commands::CommandBus;
use domain::quality::{assess, QualityObjective, QualityObjectives, QualitySample, QualityVerdict};
use domain::tenant::TenantCommand;
use domain::TenantId;
use sqlx::PgPool;

/// Who records quality breaches in the audit trail.
pub const QUALITY_USER: &str = "system:quality";

/// A tenant's measurements over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Measured {
    /// Upvotes.
    pub upvotes: i64,
    /// Upvotes and downvotes.
    pub votes: i64,
    /// Questions answered.
    pub answered: i64,
    /// Questions answered, failed or withheld (guardrail blocks and pending ones aside).
    pub outcomes: i64,
}

impl Measured {
    pub fn sample(&self, objective: QualityObjective) -> QualitySample {
        match objective {
            QualityObjective::HelpfulRate => QualitySample {
                good: self.upvotes,
                total: self.votes,
            },
            QualityObjective::AnsweredRate => QualitySample {
                good: self.answered,
                total: self.outcomes,
            },
        }
    }
}

/// What the facts say of one tenant over `window_days`, read in `conn` (the tenant's own
/// transaction on the API's pool, or the owner's across tenants).
pub async fn measure<'c, E>(
    conn: E,
    tenant: &TenantId,
    window_days: u32,
) -> Result<Measured, sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    let (upvotes, votes, answered, outcomes): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(upvotes), 0)::bigint,
                coalesce(sum(upvotes + downvotes), 0)::bigint,
                count(*) FILTER (WHERE status = 'answered'),
                count(*) FILTER (WHERE status IN ('answered', 'failed', 'withheld'))
           FROM rm_questions
          WHERE tenant_id = $1 AND asked_at >= now() - make_interval(days => $2)",
    )
    .bind(tenant.as_str())
    .bind(i32::try_from(window_days).unwrap_or(90))
    .fetch_one(conn)
    .await?;
    Ok(Measured {
        upvotes,
        votes,
        answered,
        outcomes,
    })
}

/// Evaluates every active tenant with questions in its window; returns how many breaches and
/// recoveries were recorded.
#[tracing::instrument(skip_all, err)]
pub async fn evaluate(pool: &PgPool, bus: &CommandBus) -> anyhow::Result<usize> {
    // The tenants' objectives and breaches as the read model has them: a stale copy only
    // sends a command the aggregate then refuses as a repeat.
    let tenants: Vec<(String, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "SELECT tenant_id, coalesce(state -> 'quality', 'null'::jsonb),
                coalesce(state -> 'quality_breached', '[]'::jsonb)
           FROM rm_tenants
          WHERE state ->> 'status' = 'active'
            AND EXISTS (SELECT 1 FROM rm_questions q WHERE q.tenant_id = rm_tenants.tenant_id
                          AND q.asked_at >= now() - interval '90 days')",
    )
    .fetch_all(pool)
    .await?;
    let mut recorded = 0;
    for (tenant, objectives, breached) in tenants {
        let tenant = TenantId::parse(&tenant)?;
        let objectives: QualityObjectives = if objectives.is_null() {
            QualityObjectives::default()
        } else {
            serde_json::from_value(objectives).map_err(|e| {
                anyhow::anyhow!("tenant {tenant}: unreadable quality objectives: {e}")
            })?
        };
        let breached: Vec<String> = serde_json::from_value(breached)
            .map_err(|e| anyhow::anyhow!("tenant {tenant}: unreadable quality breaches: {e}"))?;
        let measured = measure(pool, &tenant, objectives.window_days).await?;
        for objective in QualityObjective::ALL.iter().copied() {
            let sample = measured.sample(objective);
            let was = breached.iter().any(|b| b == objective.as_str());
            let command = match assess(&objectives, objective, sample, was) {
                QualityVerdict::Breached { value } => TenantCommand::RecordQualityBreach {
                    objective,
                    value,
                    sample: sample.total,
                },
                QualityVerdict::Recovered { value } => TenantCommand::RecordQualityRecovery {
                    objective,
                    value,
                    sample: sample.total,
                },
                QualityVerdict::Unchanged => continue,
            };
            let ctx = crate::workers::system_context(&tenant, QUALITY_USER)?;
            match bus.tenant(&ctx, command).await {
                Ok(_) => recorded += 1,
                // Another instance recorded it first: the next round sees it.
                Err(commands::CommandError::Concurrency) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(recorded)
}

/// Tenants recorded as breaching an objective now (the platform-wide alert's input).
pub async fn breached_tenants(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM rm_tenants
          WHERE jsonb_array_length(coalesce(state -> 'quality_breached', '[]'::jsonb)) > 0",
    )
    .fetch_one(pool)
    .await
}

/// Evaluates every `interval`.
pub fn spawn(
    pool: PgPool,
    bus: Arc<CommandBus>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    crate::workers::every(interval, "evaluating quality objectives", move || {
        let pool = pool.clone();
        let bus = bus.clone();
        async move {
            let recorded = evaluate(&pool, &bus).await?;
            if recorded > 0 {
                tracing::info!(
                    recorded,
                    "quality objectives: breaches or recoveries recorded"
                );
            }
            Ok(())
        }
    })
}
