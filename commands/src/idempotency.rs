//! Idempotency keys (docs/idempotency.md). A key is claimed before the command runs, so racing
//! retries wait for the first instead of running the command again; it is settled in the same
//! transaction as the command's events (see `event_store::PgEventRepository::persist`).
use std::time::Duration;

use event_store::TenantPool;
use sqlx::{Postgres, Transaction};

use crate::error::{CommandError, Rejection};
use crate::CommandContext;

#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    /// How long a claim holds before another request may take the key over (the first one is
    /// presumed dead).
    pub lease: Duration,
    /// How long a retry waits for the first request to finish before answering 409.
    pub wait: Duration,
    pub poll_interval: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(10),
            poll_interval: Duration::from_millis(20),
        }
    }
}

/// What an earlier request with the same key left behind.
#[derive(Debug)]
pub(crate) enum Settled {
    Committed {
        aggregate_type: String,
        aggregate_id: String,
        first_sequence: u64,
        last_sequence: u64,
    },
    Rejected(Rejection),
}

pub(crate) enum Claim {
    /// This request owns the key and runs the command.
    Owned,
    /// An earlier request settled it: answer as it did.
    Replay(Settled),
}

#[derive(Clone)]
pub(crate) struct IdempotencyStore {
    pool: TenantPool,
    settings: IdempotencySettings,
}

domain::text_enum! {
    /// Where a claimed idempotency key stands.
    pub enum KeyState {
        Pending = "pending",
        Committed = "committed",
        Rejected = "rejected",
    }
}

/// A stored key, as read back by a retry.
#[derive(sqlx::FromRow)]
struct KeyRow {
    request_fingerprint: String,
    state: KeyState,
    expired: bool,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    first_sequence: Option<i64>,
    last_sequence: Option<i64>,
    response_body: Option<serde_json::Value>,
}

impl KeyRow {
    /// A committed key names the events it stored; one that does not is unreadable.
    fn committed(self) -> Result<Settled, CommandError> {
        match (
            self.aggregate_type,
            self.aggregate_id,
            self.first_sequence,
            self.last_sequence,
        ) {
            (Some(aggregate_type), Some(aggregate_id), Some(first), Some(last)) => {
                Ok(Settled::Committed {
                    aggregate_type,
                    aggregate_id,
                    first_sequence: first.max(0) as u64,
                    last_sequence: last.max(0) as u64,
                })
            }
            _ => Err(CommandError::Internal {
                context: "a committed idempotency key names no events",
                source: "aggregate or sequences missing".into(),
            }),
        }
    }
}

impl IdempotencyStore {
    pub fn new(pool: TenantPool, settings: IdempotencySettings) -> Self {
        Self { pool, settings }
    }

    /// A transaction of the command's tenant.
    async fn begin(
        &self,
        ctx: &CommandContext,
    ) -> Result<Transaction<'static, Postgres>, CommandError> {
        self.pool
            .begin(&ctx.tenant_id)
            .await
            .map_err(CommandError::from_sqlx)
    }

    /// How long a retry waits for the first request, and how often it looks.
    pub fn waiting(&self) -> (Duration, Duration) {
        (self.settings.wait, self.settings.poll_interval)
    }

    #[tracing::instrument(skip_all, fields(key), err)]
    pub async fn claim(&self, ctx: &CommandContext, key: &str) -> Result<Claim, CommandError> {
        let deadline = tokio::time::Instant::now() + self.settings.wait;
        let lease_ms = self.settings.lease.as_millis() as f64;
        loop {
            let mut tx = self.begin(ctx).await?;
            let inserted = sqlx::query!(
                "INSERT INTO idempotency_keys (tenant_id, user_id, idempotency_key, \
                   request_fingerprint, state, locked_until) \
                 VALUES ($1, $2, $3, $4, 'pending', now() + $5 * interval '1 millisecond') \
                 ON CONFLICT DO NOTHING",
                ctx.tenant_id.as_str(),
                ctx.user_id.as_str(),
                key,
                ctx.request_fingerprint,
                lease_ms,
            )
            .execute(&mut *tx)
            .await
            .map_err(CommandError::from_sqlx)?;
            if inserted.rows_affected() == 1 {
                tx.commit().await.map_err(CommandError::from_sqlx)?;
                return Ok(Claim::Owned);
            }
            let row = sqlx::query_as!(
                KeyRow,
                r#"SELECT request_fingerprint, state AS "state: KeyState", locked_until < now() AS "expired!",
                   aggregate_type, aggregate_id, first_sequence, last_sequence, response_body
                 FROM idempotency_keys
                 WHERE tenant_id = $1 AND user_id = $2 AND idempotency_key = $3"#,
                ctx.tenant_id.as_str(),
                ctx.user_id.as_str(),
                key,
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(CommandError::from_sqlx)?;
            tx.commit().await.map_err(CommandError::from_sqlx)?;
            // Released between our insert and select: claim again.
            let Some(row) = row else { continue };
            if row.request_fingerprint != ctx.request_fingerprint {
                return Err(CommandError::IdempotencyKeyReused);
            }
            match row.state {
                KeyState::Committed => return Ok(Claim::Replay(row.committed()?)),
                KeyState::Rejected => {
                    let rejection = serde_json::from_value(row.response_body.unwrap_or_default())
                        .map_err(|e| CommandError::Internal {
                        context: "a stored idempotent response is unreadable",
                        source: Box::new(e),
                    })?;
                    return Ok(Claim::Replay(Settled::Rejected(rejection)));
                }
                KeyState::Pending => {}
            }
            if row.expired && self.take_over(ctx, key, lease_ms).await? {
                return Ok(Claim::Owned);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CommandError::IdempotencyKeyInProgress);
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn take_over(
        &self,
        ctx: &CommandContext,
        key: &str,
        lease_ms: f64,
    ) -> Result<bool, CommandError> {
        let mut tx = self.begin(ctx).await?;
        let updated = sqlx::query!(
            "UPDATE idempotency_keys SET locked_until = now() + $4 * interval '1 millisecond' \
             WHERE tenant_id = $1 AND user_id = $2 AND idempotency_key = $3 \
               AND state = 'pending' AND locked_until < now()",
            ctx.tenant_id.as_str(),
            ctx.user_id.as_str(),
            key,
            lease_ms,
        )
        .execute(&mut *tx)
        .await
        .map_err(CommandError::from_sqlx)?;
        tx.commit().await.map_err(CommandError::from_sqlx)?;
        Ok(updated.rows_affected() == 1)
    }

    /// The command was refused: later retries get the same refusal.
    pub async fn settle_rejected(
        &self,
        ctx: &CommandContext,
        key: &str,
        rejection: &Rejection,
    ) -> Result<(), CommandError> {
        let body = serde_json::to_value(rejection).map_err(|e| CommandError::Internal {
            context: "a rejection cannot be stored",
            source: Box::new(e),
        })?;
        let mut tx = self.begin(ctx).await?;
        sqlx::query!(
            "UPDATE idempotency_keys SET state = 'rejected', response_body = $4, settled_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND idempotency_key = $3 AND state = 'pending'",
            ctx.tenant_id.as_str(),
            ctx.user_id.as_str(),
            key,
            body,
        )
        .execute(&mut *tx)
        .await
        .map_err(CommandError::from_sqlx)?;
        tx.commit().await.map_err(CommandError::from_sqlx)?;
        Ok(())
    }

    /// The command was accepted but changed nothing (no events to settle the key with).
    pub async fn settle_unchanged(
        &self,
        ctx: &CommandContext,
        key: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<(), CommandError> {
        let mut tx = self.begin(ctx).await?;
        sqlx::query!(
            "UPDATE idempotency_keys SET state = 'committed', aggregate_type = $4, aggregate_id = $5, \
               first_sequence = $6 + 1, last_sequence = $6, settled_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND idempotency_key = $3 AND state = 'pending'",
            ctx.tenant_id.as_str(),
            ctx.user_id.as_str(),
            key,
            aggregate_type,
            aggregate_id,
            version as i64,
        )
        .execute(&mut *tx)
        .await
        .map_err(CommandError::from_sqlx)?;
        tx.commit().await.map_err(CommandError::from_sqlx)?;
        Ok(())
    }

    /// The command failed for a reason that is not the caller's: free the key for a retry.
    pub async fn release(&self, ctx: &CommandContext, key: &str) {
        let released = async {
            let mut tx = self.pool.begin(&ctx.tenant_id).await?;
            sqlx::query!(
                "DELETE FROM idempotency_keys \
             WHERE tenant_id = $1 AND user_id = $2 AND idempotency_key = $3 AND state = 'pending'",
                ctx.tenant_id.as_str(),
                ctx.user_id.as_str(),
                key,
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = released {
            // The lease runs out on its own; a retry takes the key over then.
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
    }
}
