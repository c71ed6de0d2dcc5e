//! A question whose answer never arrived (the process stopped between recording the question
//! and recording its answer) must not stay pending forever: the sweeper finds questions older
//! than the answer budget with no answer, failure or block after them, and fails them as
//! retryable. It runs once at start-up and then periodically; a late answer that still arrives
//! records nothing (the aggregate only records for its pending question).
use std::sync::Arc;
use std::time::Duration;

use domain::{Role, ScopedId, TenantId, UserId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{CommandBus, CommandContext, CommandError};

/// The actor recorded on the failures the sweeper stores.
pub const SWEEPER_USER: &str = "system:answer-sweeper";

/// A question asked but not settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingQuestion {
    /// Its conversation.
    pub conversation: ScopedId,
    /// The question.
    pub question_id: Uuid,
    /// The sequence of its `QuestionAsked` in the conversation.
    pub sequence: u64,
}

pub struct Sweeper {
    pool: PgPool,
    bus: Arc<CommandBus>,
    /// How long an answer may take before its question counts as interrupted. Longer than any
    /// engine call can last (the engine's total timeout with its retries).
    budget: Duration,
    /// How far back to look: questions asked longer ago are not searched (bounds the query).
    horizon: Duration,
}

impl Sweeper {
    pub fn new(pool: PgPool, bus: Arc<CommandBus>, budget: Duration, horizon: Duration) -> Self {
        Self {
            pool,
            bus,
            budget,
            horizon,
        }
    }

    /// Questions asked between `horizon` and `budget` ago that nothing settled.
    pub async fn pending(&self) -> Result<Vec<PendingQuestion>, sqlx::Error> {
        let budget = self.budget.as_secs_f64();
        let horizon = self.horizon.as_secs_f64();
        // A conversation has at most one pending question, and asking the next needs the
        // previous settled: any settling event after the question settled it.
        let rows = sqlx::query!(
            r#"
            SELECT q.aggregate_id AS "aggregate_id!", q.sequence AS "sequence!",
                   (q.payload -> 'QuestionAsked' ->> 'question_id') AS "question_id!"
              FROM events q
             WHERE q.aggregate_type = 'conversation'
               AND q.event_type = 'QuestionAsked'
               AND q.recorded_at < now() - make_interval(secs => $1)
               AND q.recorded_at > now() - make_interval(secs => $2)
               AND NOT EXISTS (
                   SELECT 1 FROM events s
                    WHERE s.aggregate_type = 'conversation'
                      AND s.aggregate_id = q.aggregate_id
                      AND s.sequence > q.sequence
                      AND s.event_type IN
                          ('AnswerRecorded', 'AnswerFailed', 'QuestionBlocked', 'AnswerWithheld'))
             ORDER BY q.position
             LIMIT 1000
            "#,
            budget,
            horizon,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let conversation =
                ScopedId::parse(&row.aggregate_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let question_id =
                Uuid::parse_str(&row.question_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            pending.push(PendingQuestion {
                conversation,
                question_id,
                sequence: u64::try_from(row.sequence).unwrap_or(0),
            });
        }
        Ok(pending)
    }

    /// Fails every interrupted question; returns how many.
    #[tracing::instrument(skip_all, err)]
    pub async fn sweep(&self) -> Result<usize, CommandError> {
        let pending = self.pending().await.map_err(CommandError::from_sqlx)?;
        let mut failed = 0;
        for question in pending {
            let ctx = context(&question.conversation.tenant)?;
            let outcome = self
                .bus
                .fail_interrupted(
                    &ctx,
                    &question.conversation.to_string(),
                    question.question_id,
                    question.sequence,
                )
                .await?;
            tracing::info!(conversation = %question.conversation, question = %question.question_id,
                version = outcome.version, "failed an interrupted question");
            failed += 1;
        }
        Ok(failed)
    }

    /// Sweeps now and then every `interval`, for ever.
    pub async fn run(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            // A failed sweep is logged by `sweep` and tried again at the next tick.
            let _ = self.sweep().await;
        }
    }
}

fn context(tenant: &TenantId) -> Result<CommandContext, CommandError> {
    let user_id = UserId::parse(SWEEPER_USER).map_err(|e| CommandError::Internal {
        context: "the sweeper's user id",
        source: Box::new(e),
    })?;
    Ok(CommandContext::acting(tenant.clone(), user_id, Role::Admin))
}
