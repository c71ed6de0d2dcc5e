//! The work that talks to Kapa outside a request, driven by events: forwarding feedback to
//! Kapa's feedback upsert, and turning sync requests of sources linked to a Kapa source
//! (`settings.kapa_source_id`) into the status Kapa's ingestion API reports. Both find their
//! work in the event store itself (an anti-join, not a checkpoint: a late-committing event is
//! never skipped) and run in every instance safely (`FOR UPDATE SKIP LOCKED`, and aggregates
//! that refuse a repeated transition).
use std::sync::Arc;
use std::time::Duration;

use commands::{CommandBus, CommandContext};
use domain::conversation::{ConversationEvent, DownvoteReason, Reaction};
use domain::knowledge_source::{SourceCommand, SyncState};
use domain::{Role, ScopedId, TenantId, UserId};
use kapa::client::{FeedbackBody, FeedbackComment};
use kapa::{CallError, KapaEngine};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::Settings;

/// The setting of a knowledge source that links it to a Kapa source.
pub const KAPA_SOURCE_SETTING: &str = "kapa_source_id";

/// Starts the feedback forwarder and the sync poller.
pub fn spawn(
    pool: PgPool,
    bus: Arc<CommandBus>,
    kapa: Arc<KapaEngine>,
    settings: &Settings,
) -> Vec<JoinHandle<()>> {
    let interval = Duration::from_millis(settings.kapa_workers.interval_ms);
    let forwarder = FeedbackForwarder {
        pool: pool.clone(),
        bus: bus.clone(),
        kapa: kapa.clone(),
        max_attempts: settings.kapa_workers.feedback_max_attempts,
        retry_base: Duration::from_millis(settings.kapa_workers.retry_base_ms),
    };
    let forwarder = Arc::new(forwarder);
    let syncs = Arc::new(SyncPoller { pool, bus, kapa });
    vec![
        every(interval, "feedback forwarding", move || {
            let forwarder = forwarder.clone();
            async move { forwarder.run_once().await }
        }),
        every(interval, "polling source syncs", move || {
            let syncs = syncs.clone();
            async move { syncs.run_once().await }
        }),
    ]
}

/// Runs `work` every `interval`, for ever; a failed round is logged and tried at the next tick.
pub(crate) fn every<F, Fut>(interval: Duration, what: &'static str, work: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            if let Err(error) = work().await {
                tracing::warn!(%error, "{what} failed; trying again");
            }
        }
    })
}

pub(crate) fn system_context(tenant: &TenantId, user: &str) -> anyhow::Result<CommandContext> {
    Ok(CommandContext::acting(
        tenant.clone(),
        UserId::parse(user)?,
        Role::Admin,
    ))
}

/// Forwards every feedback change on a Kapa answer to Kapa, once.
pub struct FeedbackForwarder {
    pub pool: PgPool,
    pub bus: Arc<CommandBus>,
    pub kapa: Arc<KapaEngine>,
    pub max_attempts: u32,
    pub retry_base: Duration,
}

struct Due {
    tenant_id: String,
    event_id: Uuid,
    user_id: String,
    engine_answer_id: String,
    attempts: i32,
    payload: serde_json::Value,
}

impl FeedbackForwarder {
    /// Finds new feedback, then delivers what is due.
    pub async fn run_once(&self) -> anyhow::Result<()> {
        self.discover().await?;
        self.deliver().await
    }

    /// Records a forward for every feedback event on an answer Kapa gave that has none yet.
    async fn discover(&self) -> anyhow::Result<()> {
        sqlx::query!(
            r#"
            INSERT INTO feedback_forwards (tenant_id, event_id, event_position, conversation_id,
                   answer_id, user_id, engine_answer_id, state)
            SELECT e.tenant_id, e.event_id, e.position,
                   split_part(e.aggregate_id, '/', 2)::uuid,
                   (e.payload -> e.event_type ->> 'answer_id')::uuid,
                   e.payload -> e.event_type ->> 'user_id',
                   a.payload -> 'AnswerRecorded' ->> 'engine_answer_id',
                   'pending'
              FROM events e
              JOIN events a
                ON a.aggregate_type = 'conversation' AND a.aggregate_id = e.aggregate_id
               AND a.event_type = 'AnswerRecorded'
               AND a.payload -> 'AnswerRecorded' ->> 'answer_id' = e.payload -> e.event_type ->> 'answer_id'
             WHERE e.aggregate_type = 'conversation'
               AND e.event_type IN ('FeedbackGiven', 'FeedbackChanged')
               AND e.recorded_at > now() - interval '7 days'
               AND a.payload -> 'AnswerRecorded' ->> 'engine' = 'kapa'
               AND coalesce(a.payload -> 'AnswerRecorded' ->> 'engine_answer_id', '') <> ''
               AND NOT EXISTS (SELECT 1 FROM feedback_forwards f WHERE f.event_id = e.event_id)
             ORDER BY e.position
             LIMIT 500
            ON CONFLICT DO NOTHING
            "#
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deliver(&self) -> anyhow::Result<()> {
        // A newer change of the same user's feedback on the same answer makes an older,
        // undelivered one moot: sending it late would overwrite the newer one at Kapa.
        sqlx::query!(
            r#"UPDATE feedback_forwards f SET state = 'superseded'
                WHERE state = 'pending' AND EXISTS (
                    SELECT 1 FROM feedback_forwards n
                     WHERE n.tenant_id = f.tenant_id AND n.answer_id = f.answer_id
                       AND n.user_id = f.user_id AND n.event_position > f.event_position)"#
        )
        .execute(&self.pool)
        .await?;
        // Lease the due rows for a minute, so another instance does not send them too.
        let due = sqlx::query_as!(
            Due,
            r#"
            WITH leased AS (
                UPDATE feedback_forwards SET next_attempt_at = now() + interval '60 seconds'
                 WHERE (tenant_id, event_id) IN (
                       SELECT tenant_id, event_id FROM feedback_forwards
                        WHERE state = 'pending' AND next_attempt_at <= now()
                        ORDER BY event_position LIMIT 20 FOR UPDATE SKIP LOCKED)
                RETURNING tenant_id, event_id, user_id, engine_answer_id, attempts)
            SELECT l.tenant_id AS "tenant_id!", l.event_id AS "event_id!", l.user_id AS "user_id!",
                   l.engine_answer_id AS "engine_answer_id!", l.attempts AS "attempts!",
                   e.payload AS "payload!"
              FROM leased l JOIN events e ON e.event_id = l.event_id
            "#
        )
        .fetch_all(&self.pool)
        .await?;
        for row in due {
            let result = self.send(&row).await;
            match result {
                Ok(()) => {
                    sqlx::query!(
                        "UPDATE feedback_forwards SET state = 'delivered', delivered_at = now(),
                           attempts = attempts + 1, last_error = NULL
                         WHERE tenant_id = $1 AND event_id = $2",
                        row.tenant_id,
                        row.event_id
                    )
                    .execute(&self.pool)
                    .await?;
                }
                Err(error) => {
                    let attempts = row.attempts + 1;
                    let gave_up = attempts >= self.max_attempts as i32;
                    // The base, then doubling, at most ten minutes.
                    let delay = (self.retry_base.as_secs_f64() * 2f64.powi(attempts.min(20) - 1))
                        .min(600.0);
                    tracing::info!(event = %row.event_id, attempts, %error, gave_up, "feedback not forwarded");
                    sqlx::query!(
                        "UPDATE feedback_forwards SET attempts = $3, last_error = $4,
                           state = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
                           next_attempt_at = now() + make_interval(secs => $6)
                         WHERE tenant_id = $1 AND event_id = $2",
                        row.tenant_id,
                        row.event_id,
                        attempts,
                        error.chars().take(500).collect::<String>(),
                        gave_up,
                        delay,
                    )
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn send(&self, row: &Due) -> Result<(), String> {
        let tenant_id = TenantId::parse(&row.tenant_id).map_err(|e| e.to_string())?;
        let event: ConversationEvent = serde_json::from_value(row.payload.clone())
            .map_err(|e| format!("the feedback event is unreadable: {e}"))?;
        let feedback = match event {
            ConversationEvent::FeedbackGiven { feedback, .. }
            | ConversationEvent::FeedbackChanged { feedback, .. } => feedback,
            _ => return Err("the forwarded event is not feedback".into()),
        };
        let tenant = self
            .bus
            .tenant_snapshot(&tenant_id)
            .await
            .map_err(|e| e.to_string())?;
        let kapa = tenant
            .kapa
            .ok_or("the tenant no longer has Kapa settings")?;
        let key = self
            .kapa
            .key(tenant_id.as_str(), &kapa.api_key_ref)
            .await
            .map_err(|f| f.reason)?;
        let comment = (feedback.reaction == Reaction::Downvote).then(|| FeedbackComment {
            issue: feedback.comment.clone().unwrap_or_default(),
            incorrect: feedback.reasons.contains(&DownvoteReason::Incorrect),
            irrelevant: feedback.reasons.contains(&DownvoteReason::Irrelevant),
            unaddressed: feedback.reasons.contains(&DownvoteReason::Unaddressed),
        });
        let body = FeedbackBody {
            question_answer: row.engine_answer_id.clone(),
            reaction: feedback.reaction.to_string(),
            user_identifier: self.bus.pseudonym(&tenant_id, &row.user_id),
            comment,
        };
        self.kapa
            .client()
            .upsert_feedback(&key, &body, self.kapa.call_timeout())
            .await
            .map_err(|e: CallError| e.to_string())
    }
}

/// Turns sync requests of Kapa-linked sources into what Kapa's ingestion API reports.
pub struct SyncPoller {
    pub pool: PgPool,
    pub bus: Arc<CommandBus>,
    pub kapa: Arc<KapaEngine>,
}

/// The user recorded on the sync events the poller stores.
pub const SYNC_USER: &str = "system:kapa-sync";

impl SyncPoller {
    pub async fn run_once(&self) -> anyhow::Result<()> {
        let candidates = sqlx::query_scalar!(
            r#"SELECT DISTINCT aggregate_id AS "aggregate_id!" FROM events
                WHERE aggregate_type = 'knowledge_source'
                  AND event_type IN ('SyncRequested', 'SyncStarted')
                  AND recorded_at > now() - interval '7 days'"#
        )
        .fetch_all(&self.pool)
        .await?;
        for id in candidates {
            let id = ScopedId::parse(&id)?;
            if let Err(error) = self.poll(&id).await {
                tracing::warn!(source = %id, %error, "could not poll a source's sync");
            }
        }
        Ok(())
    }

    async fn poll(&self, id: &ScopedId) -> anyhow::Result<()> {
        let (source, _) = self.bus.source_state(&id.tenant, id.id).await?;
        let Some(kapa_source) = source.settings.get(KAPA_SOURCE_SETTING).cloned() else {
            return Ok(()); // not linked: its syncs are reported through the API by hand
        };
        let ctx = system_context(&id.tenant, SYNC_USER)?;
        let sync_id = match source.sync {
            SyncState::Idle => return Ok(()),
            SyncState::Requested => {
                let sync_id = Uuid::now_v7();
                self.bus
                    .source(&ctx, id.id, SourceCommand::StartSync { sync_id })
                    .await?;
                sync_id
            }
            SyncState::Running { sync_id } => sync_id,
        };
        let tenant = self.bus.tenant_snapshot(&id.tenant).await?;
        let verdict = match tenant.kapa {
            None => Some(Err("the tenant has no Kapa settings".to_string())),
            Some(settings) => match self
                .kapa
                .key(id.tenant.as_str(), &settings.api_key_ref)
                .await
            {
                Err(failure) => Some(Err(failure.reason)),
                Ok(key) => match self
                    .kapa
                    .client()
                    .source(
                        &key,
                        &settings.project_id,
                        &kapa_source,
                        self.kapa.call_timeout(),
                    )
                    .await
                {
                    Ok(found) => verdict(&found),
                    Err(CallError::Status { status, .. }) if status.as_u16() == 404 => {
                        Some(Err(format!(
                            "Kapa has no source {kapa_source} in project {}",
                            settings.project_id
                        )))
                    }
                    Err(CallError::Status { status, detail, .. }) if status.is_client_error() => {
                        Some(Err(format!(
                            "Kapa refused the request ({status}): {detail}"
                        )))
                    }
                    // Transient: poll again at the next tick.
                    Err(_) => None,
                },
            },
        };
        let command = match verdict {
            None => return Ok(()),
            Some(Ok(document_count)) => SourceCommand::CompleteSync {
                sync_id,
                document_count,
            },
            Some(Err(error)) => SourceCommand::FailSync { sync_id, error },
        };
        self.bus.source(&ctx, id.id, command).await?;
        Ok(())
    }
}

/// What Kapa's last ingestion task says: done (with a document count), failed (with its
/// error), or still running (`None`). Status words are not published; read leniently.
pub fn verdict(source: &kapa::KapaSource) -> Option<Result<u64, String>> {
    let status = source
        .last_task_status
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let count = match &source.deployed_markdown_items {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(serde_json::Value::Array(items)) => items.len() as u64,
        _ => 0,
    };
    match status.as_str() {
        "success" | "succeeded" | "completed" | "complete" | "done" | "finished" => Some(Ok(count)),
        "failed" | "failure" | "error" | "errored" | "cancelled" | "canceled" | "revoked" => {
            let error = match &source.last_task_error {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => format!("Kapa's ingestion task ended {status}"),
            };
            Some(Err(error.chars().take(2000).collect()))
        }
        // An ingested source whose task status Kapa omits is done.
        "" if source.ingested_at.as_ref().is_some_and(|v| !v.is_null()) => Some(Ok(count)),
        _ => None,
    }
}
