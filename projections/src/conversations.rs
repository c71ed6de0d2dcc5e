//! The per-tenant conversations read model: one row per conversation, with its questions,
//! answers and feedback as a JSON document, read by `GET /v1/conversations[/{id}]`.
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::conversation::{Conversation, ConversationEvent, Feedback};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use streaming::Envelope;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::runtime::{
    decode, object_uuid, stored, stored_for_apply, ApplyError, Projection, ReadError,
};

pub const TABLE: &str = "rm_conversations";

pub struct ConversationsProjection;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationDocument {
    pub questions: Vec<QuestionView>,
    pub resolved_by: Option<String>,
    pub escalated_by: Option<String>,
    pub escalation_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuestionView {
    pub question_id: Uuid,
    pub text: String,
    pub asked_by: String,
    pub channel: String,
    pub integration_id: Option<String>,
    pub asked_at: DateTime<Utc>,
    /// `pending`, `answered`, `failed` or `blocked`.
    pub status: String,
    pub answer: Option<AnswerView>,
    /// Why it failed, or which guardrail blocked it.
    pub reason: Option<String>,
    pub retryable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnswerView {
    pub answer_id: Uuid,
    pub text: String,
    pub sources: Vec<SourceRef>,
    pub uncertain: bool,
    pub latency_ms: u64,
    pub engine: String,
    pub answered_at: DateTime<Utc>,
    /// One reaction per user.
    pub feedback: BTreeMap<String, FeedbackView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceRef {
    pub url: String,
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeedbackView {
    /// `upvote` or `downvote`.
    pub reaction: String,
    pub reasons: Vec<String>,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

fn feedback_view(f: &Feedback, at: DateTime<Utc>) -> FeedbackView {
    let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
    FeedbackView {
        reaction: text(serde_json::to_value(f.reaction).unwrap_or_default()),
        reasons: f
            .reasons
            .iter()
            .map(|r| text(serde_json::to_value(r).unwrap_or_default()))
            .collect(),
        comment: f.comment.clone(),
        at,
    }
}

#[derive(Clone)]
struct Current {
    status: String,
    escalated: bool,
    started_by: String,
    channel: String,
    last_question: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    last_position: i64,
    document: ConversationDocument,
}

#[async_trait]
impl Projection for ConversationsProjection {
    fn name(&self) -> &'static str {
        "conversations"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[<Conversation as cqrs_es::Aggregate>::TYPE]
    }

    fn table(&self) -> &'static str {
        TABLE
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        table: &str,
        event: &Envelope,
    ) -> Result<bool, ApplyError> {
        let payload: ConversationEvent = decode(event)?;
        let id = object_uuid(event)?;
        let existing = load(conn, table, &event.tenant_id, id).await?;
        if existing
            .as_ref()
            .is_some_and(|c| event.sequence <= c.version)
        {
            return Ok(false); // a redelivery
        }
        let next = step(existing, event, payload)?;
        save(conn, table, &event.tenant_id, id, &next).await?;
        Ok(true)
    }

    /// A rebuild's batch: each conversation is read once and written once, however many of
    /// its events the batch holds (the same `step` as `apply`).
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        table: &str,
        events: &[Envelope],
    ) -> Result<u64, ApplyError> {
        let mut states: HashMap<(String, Uuid), Option<Current>> = HashMap::new();
        let mut touched: Vec<(String, Uuid)> = Vec::new();
        let mut applied = 0;
        for event in events {
            let decoded =
                decode::<ConversationEvent>(event).and_then(|p| Ok((p, object_uuid(event)?)));
            let (payload, id) = match decoded {
                Ok(v) => v,
                Err(e) if e.is_poison() => {
                    tracing::warn!(event_id = %event.event_id, reason = %e.report(), "skipped a poison event");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let key = (event.tenant_id.clone(), id);
            if !states.contains_key(&key) {
                let loaded = load(conn, table, &event.tenant_id, id).await?;
                states.insert(key.clone(), loaded);
            }
            let slot = states.get_mut(&key).expect("loaded above");
            if slot.as_ref().is_some_and(|c| event.sequence <= c.version) {
                continue;
            }
            match step(slot.clone(), event, payload) {
                Ok(next) => {
                    *slot = Some(next);
                    applied += 1;
                    if !touched.contains(&key) {
                        touched.push(key);
                    }
                }
                Err(e) if e.is_poison() => {
                    tracing::warn!(event_id = %event.event_id, reason = %e.report(), "skipped a poison event")
                }
                Err(e) => return Err(e),
            }
        }
        for (tenant, id) in touched {
            if let Some(Some(current)) = states.get(&(tenant.clone(), id)) {
                save(conn, table, &tenant, id, current).await?;
            }
        }
        Ok(applied)
    }
}

async fn load(
    conn: &mut PgConnection,
    table: &str,
    tenant: &str,
    id: Uuid,
) -> Result<Option<Current>, ApplyError> {
    let row = sqlx::query(&format!(
        "SELECT status, escalated, started_by, channel, last_question, created_at, updated_at, \
           version, last_position, document \
         FROM {table} WHERE tenant_id = $1 AND conversation_id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(Current {
            status: r.get("status"),
            escalated: r.get("escalated"),
            started_by: r.get("started_by"),
            channel: r.get("channel"),
            last_question: r.get("last_question"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            version: r.get("version"),
            last_position: r.get("last_position"),
            document: stored_for_apply("conversation document", r.get("document"))?,
        })
    })
    .transpose()
}

/// The conversation after `event`: pure, so a poison event leaves nothing half-written.
fn step(
    existing: Option<Current>,
    event: &Envelope,
    payload: ConversationEvent,
) -> Result<Current, ApplyError> {
    let mut row = match existing {
        Some(current) => current,
        None => match &payload {
            ConversationEvent::QuestionAsked {
                asked_by, channel, ..
            } => Current {
                status: "open".into(),
                escalated: false,
                started_by: asked_by.clone(),
                channel: channel.clone(),
                last_question: String::new(),
                created_at: event.recorded_at,
                updated_at: event.recorded_at,
                version: 0,
                last_position: 0,
                document: ConversationDocument::default(),
            },
            _ => {
                return Err(ApplyError::Poison(format!(
                    "{} for a conversation that never started",
                    event.event_type
                )))
            }
        },
    };
    let at = event.recorded_at;
    let doc = &mut row.document;
    let question = |doc: &mut ConversationDocument, id: Uuid| -> Result<usize, ApplyError> {
        doc.questions
            .iter()
            .position(|q| q.question_id == id)
            .ok_or_else(|| ApplyError::Poison(format!("no question {id} in this conversation")))
    };
    match payload {
        ConversationEvent::QuestionAsked {
            question_id,
            text,
            asked_by,
            channel,
            integration_id,
        } => {
            row.last_question = text.clone();
            doc.questions.push(QuestionView {
                question_id,
                text,
                asked_by,
                channel,
                integration_id,
                asked_at: at,
                status: "pending".into(),
                answer: None,
                reason: None,
                retryable: None,
            });
        }
        ConversationEvent::AnswerRecorded {
            question_id,
            answer_id,
            text,
            sources,
            uncertain,
            latency_ms,
            engine,
            ..
        } => {
            let i = question(doc, question_id)?;
            doc.questions[i].status = "answered".into();
            doc.questions[i].answer = Some(AnswerView {
                answer_id,
                text,
                sources: sources
                    .into_iter()
                    .map(|s| SourceRef {
                        url: s.url,
                        title: s.title,
                    })
                    .collect(),
                uncertain,
                latency_ms,
                engine,
                answered_at: at,
                feedback: BTreeMap::new(),
            });
        }
        ConversationEvent::AnswerFailed {
            question_id,
            reason,
            retryable,
        } => {
            let i = question(doc, question_id)?;
            doc.questions[i].status = "failed".into();
            doc.questions[i].reason = Some(reason);
            doc.questions[i].retryable = Some(retryable);
        }
        ConversationEvent::QuestionBlocked {
            question_id, rule, ..
        } => {
            let i = question(doc, question_id)?;
            doc.questions[i].status = "blocked".into();
            doc.questions[i].reason = Some(rule);
        }
        ConversationEvent::FeedbackGiven {
            answer_id,
            user_id,
            feedback,
        }
        | ConversationEvent::FeedbackChanged {
            answer_id,
            user_id,
            feedback,
            ..
        } => {
            let answer = doc
                .questions
                .iter_mut()
                .filter_map(|q| q.answer.as_mut())
                .find(|a| a.answer_id == answer_id)
                .ok_or_else(|| {
                    ApplyError::Poison(format!("no answer {answer_id} in this conversation"))
                })?;
            answer
                .feedback
                .insert(user_id, feedback_view(&feedback, at));
        }
        ConversationEvent::ConversationResolved { by } => {
            row.status = "resolved".into();
            doc.resolved_by = Some(by);
        }
        ConversationEvent::ConversationEscalated { by, reason } => {
            row.escalated = true;
            doc.escalated_by = Some(by);
            doc.escalation_reason = reason;
        }
    }
    row.updated_at = at;
    row.version = event.sequence;
    row.last_position = event.position;
    Ok(row)
}

async fn save(
    conn: &mut PgConnection,
    table: &str,
    tenant: &str,
    id: Uuid,
    row: &Current,
) -> Result<(), ApplyError> {
    let document = serde_json::to_value(&row.document)
        .map_err(|e| ApplyError::Poison(format!("cannot store the row: {e}")))?;
    sqlx::query(&format!(
        "INSERT INTO {table} (tenant_id, conversation_id, status, escalated, started_by, channel, \
           question_count, last_question, created_at, updated_at, version, last_position, document) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET status = $3, escalated = $4, \
           question_count = $7, last_question = $8, updated_at = $10, version = $11, \
           last_position = $12, document = $13"
    ))
    .bind(tenant)
    .bind(id)
    .bind(&row.status)
    .bind(row.escalated)
    .bind(&row.started_by)
    .bind(&row.channel)
    .bind(row.document.questions.len() as i32)
    .bind(&row.last_question)
    .bind(row.created_at)
    .bind(row.updated_at)
    .bind(row.version)
    .bind(row.last_position)
    .bind(document)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One line of the conversations list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationSummary {
    pub id: Uuid,
    /// `open` or `resolved`.
    pub status: String,
    pub escalated: bool,
    pub started_by: String,
    pub channel: String,
    pub question_count: i32,
    pub last_question: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The conversation's version in the read model: a client that got version N from a
    /// command waits until it reads at least N.
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub summary: ConversationSummary,
    #[serde(flatten)]
    pub document: ConversationDocument,
}

fn summary(r: &sqlx::postgres::PgRow) -> ConversationSummary {
    ConversationSummary {
        id: r.get("conversation_id"),
        status: r.get("status"),
        escalated: r.get("escalated"),
        started_by: r.get("started_by"),
        channel: r.get("channel"),
        question_count: r.get("question_count"),
        last_question: r.get("last_question"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        version: r.get("version"),
    }
}

const COLUMNS: &str = "conversation_id, status, escalated, started_by, channel, question_count, \
    last_question, created_at, updated_at, version";

/// Filters of the conversations list; all optional, combined with AND. The per-question ones
/// (uncertain, reaction, intent, topic) match a conversation when any of its questions matches.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Started by this user.
    pub user: Option<String>,
    /// Started at or after.
    pub from: Option<DateTime<Utc>>,
    /// Started before.
    pub to: Option<DateTime<Utc>>,
    /// `open` or `resolved`.
    pub status: Option<String>,
    pub uncertain: Option<bool>,
    /// `upvote`, `downvote` or `none`.
    pub reaction: Option<String>,
    pub intent: Option<String>,
    pub topic: Option<String>,
    /// Case-insensitive text search in questions and answers.
    pub search: Option<String>,
}

/// The tenant's conversations, most recently updated first; `before` is the last item's
/// (updated_at, id) of the previous page.
pub async fn list(
    pool: &PgPool,
    tenant: &str,
    filter: &ConversationFilter,
    limit: i64,
    before: Option<(DateTime<Utc>, Uuid)>,
) -> Result<Vec<ConversationSummary>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {TABLE} c WHERE tenant_id = $1 \
           AND ($2::timestamptz IS NULL OR (updated_at, conversation_id) < ($2, $3)) \
           AND ($5::text IS NULL OR started_by = $5) \
           AND ($6::timestamptz IS NULL OR created_at >= $6) AND ($7::timestamptz IS NULL OR created_at < $7) \
           AND ($8::text IS NULL OR status = $8) \
           AND ($9::text IS NULL OR EXISTS (SELECT 1 FROM jsonb_array_elements(c.document -> 'questions') e \
                 WHERE strpos(lower(e ->> 'text'), lower($9)) > 0 \
                    OR strpos(lower(coalesce(e -> 'answer' ->> 'text', '')), lower($9)) > 0)) \
           AND (($10::bool IS NULL AND $11::text IS NULL AND $12::text IS NULL AND $13::text IS NULL) \
                OR EXISTS (SELECT 1 FROM rm_questions q WHERE q.tenant_id = c.tenant_id \
                  AND q.conversation_id = c.conversation_id \
                  AND ($10::bool IS NULL OR (q.status = 'answered' AND q.uncertain = $10)) \
                  AND ($11::text IS NULL OR ($11 = 'upvote' AND q.upvotes > 0) OR ($11 = 'downvote' AND q.downvotes > 0) \
                       OR ($11 = 'none' AND q.upvotes + q.downvotes = 0)) \
                  AND ($12::text IS NULL OR q.intent = $12) AND ($13::text IS NULL OR q.topic = $13))) \
         ORDER BY updated_at DESC, conversation_id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .bind(&filter.user)
    .bind(filter.from)
    .bind(filter.to)
    .bind(&filter.status)
    .bind(&filter.search)
    .bind(filter.uncertain)
    .bind(&filter.reaction)
    .bind(&filter.intent)
    .bind(&filter.topic)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(summary).collect())
}

pub async fn get(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<ConversationDetail>, ReadError> {
    get_from(pool, TABLE, tenant, id).await
}

async fn get_from<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    table: &str,
    tenant: &str,
    id: Uuid,
) -> Result<Option<ConversationDetail>, ReadError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, document FROM {table} WHERE tenant_id = $1 AND conversation_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(executor)
    .await?;
    row.map(|r| {
        Ok(ConversationDetail {
            summary: summary(&r),
            document: stored("conversation document", r.get("document"))?,
        })
    })
    .transpose()
}

/// The conversation as the read model had it at `at`: its events recorded up to then, replayed
/// through this projection into a temporary table.
pub async fn state_at(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<ConversationDetail>, ApplyError> {
    let events =
        event_store::aggregate_events(pool, "conversation", &format!("{tenant}/{id}"), Some(at))
            .await?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "CREATE TEMP TABLE pit_conversations (LIKE {TABLE} INCLUDING ALL) ON COMMIT DROP"
    ))
    .execute(&mut *tx)
    .await?;
    for event in &events {
        ConversationsProjection
            .apply(&mut tx, "pit_conversations", &Envelope::from(event))
            .await?;
    }
    let state = get_from(&mut *tx, "pit_conversations", tenant, id).await?;
    tx.rollback().await?;
    Ok(state)
}
