//! What the API reads from the conversations read model.
use chrono::{DateTime, Utc};
use domain::{AggregateType, TenantId};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ConversationDocument, ConversationRow, ConversationState, Conversations};
use crate::event::Projected;
use crate::intent::Intent;
use crate::projection::{stored, ApplyError, ReadError};
use crate::read_model::fold_all;

/// One line of the conversations list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationSummary {
    /// The conversation's id.
    pub id: Uuid,
    /// Open or resolved.
    pub status: ConversationState,
    /// Handed to a person.
    pub escalated: bool,
    /// Who asked the first question.
    pub started_by: String,
    /// Where the first question was asked.
    pub channel: String,
    /// How many questions it holds.
    pub question_count: i32,
    /// The newest question's text.
    pub last_question: String,
    /// When the first question was asked.
    pub created_at: DateTime<Utc>,
    /// When the last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// The conversation's version in the read model: a client that got version N from a
    /// command waits until it reads at least N.
    pub version: i64,
}

/// One conversation with everything in it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationDetail {
    /// Its list line.
    #[serde(flatten)]
    pub summary: ConversationSummary,
    /// Its questions, answers and feedback.
    #[serde(flatten)]
    pub document: ConversationDocument,
}

impl ConversationDetail {
    fn from_row(id: Uuid, row: ConversationRow) -> Self {
        Self {
            summary: ConversationSummary {
                id,
                status: row.status,
                escalated: row.escalated,
                started_by: row.started_by,
                channel: row.channel,
                question_count: row.document.questions.len() as i32,
                last_question: row.last_question,
                created_at: row.created_at,
                updated_at: row.updated_at,
                version: row.version,
            },
            document: row.document,
        }
    }
}

domain::text_enum! {
    /// The reaction filter of the conversations list: any upvote, any downvote, or none at all.
    pub enum ReactionFilter {
        Upvote = "upvote",
        Downvote = "downvote",
        None = "none",
    }
}

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
    /// Open or resolved.
    pub status: Option<ConversationState>,
    /// Has an uncertain (true) or a certain (false) answer.
    pub uncertain: Option<bool>,
    /// Has an upvote, a downvote, or no reaction at all.
    pub reaction: Option<ReactionFilter>,
    /// Has a question of this intent.
    pub intent: Option<Intent>,
    /// Has a question on this topic.
    pub topic: Option<String>,
    /// Case-insensitive text search in questions and answers.
    pub search: Option<String>,
}

/// The tenant's conversations, most recently updated first; `before` is the last item's
/// (updated_at, id) of the previous page.
pub async fn list(
    conn: &mut PgConnection,
    tenant: &TenantId,
    filter: &ConversationFilter,
    limit: i64,
    before: Option<(DateTime<Utc>, Uuid)>,
) -> Result<Vec<ConversationSummary>, ReadError> {
    Ok(sqlx::query_as!(
        ConversationSummary,
        r#"SELECT conversation_id AS id, status AS "status: ConversationState", escalated,
             started_by, channel, question_count, last_question, created_at, updated_at, version
           FROM rm_conversations c WHERE tenant_id = $1
           AND ($2::timestamptz IS NULL OR (updated_at, conversation_id) < ($2, $3))
           AND ($5::text IS NULL OR started_by = $5)
           AND ($6::timestamptz IS NULL OR created_at >= $6) AND ($7::timestamptz IS NULL OR created_at < $7)
           AND ($8::text IS NULL OR status = $8)
           AND ($9::text IS NULL OR EXISTS (SELECT 1 FROM jsonb_array_elements(c.document -> 'questions') e
                 WHERE strpos(lower(e ->> 'text'), lower($9)) > 0
                    OR strpos(lower(coalesce(e -> 'answer' ->> 'text', '')), lower($9)) > 0))
           AND (($10::bool IS NULL AND $11::text IS NULL AND $12::text IS NULL AND $13::text IS NULL)
                OR EXISTS (SELECT 1 FROM rm_questions q WHERE q.tenant_id = c.tenant_id
                  AND q.conversation_id = c.conversation_id
                  AND ($10::bool IS NULL OR (q.status = 'answered' AND q.uncertain = $10))
                  AND ($11::text IS NULL OR ($11 = 'upvote' AND q.upvotes > 0) OR ($11 = 'downvote' AND q.downvotes > 0)
                       OR ($11 = 'none' AND q.upvotes + q.downvotes = 0))
                  AND ($12::text IS NULL OR q.intent = $12) AND ($13::text IS NULL OR q.topic = $13)))
           ORDER BY updated_at DESC, conversation_id DESC LIMIT $4"#,
        tenant.as_str(),
        before.map(|b| b.0),
        before.map(|b| b.1),
        limit,
        filter.user.as_deref(),
        filter.from,
        filter.to,
        filter.status.map(ConversationState::as_str),
        filter.search.as_deref(),
        filter.uncertain,
        filter.reaction.map(ReactionFilter::as_str),
        filter.intent.map(Intent::as_str),
        filter.topic.as_deref(),
    )
    .fetch_all(&mut *conn)
    .await?)
}

struct DetailRow {
    id: Uuid,
    status: ConversationState,
    escalated: bool,
    started_by: String,
    channel: String,
    question_count: i32,
    last_question: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    document: serde_json::Value,
}

/// One conversation of the tenant, if the read model has it.
pub async fn get(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: Uuid,
) -> Result<Option<ConversationDetail>, ReadError> {
    let row = sqlx::query_as!(
        DetailRow,
        r#"SELECT conversation_id AS id, status AS "status: ConversationState", escalated,
             started_by, channel, question_count, last_question, created_at, updated_at, version,
             document
           FROM rm_conversations WHERE tenant_id = $1 AND conversation_id = $2"#,
        tenant.as_str(),
        id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(ConversationDetail {
            summary: ConversationSummary {
                id: r.id,
                status: r.status,
                escalated: r.escalated,
                started_by: r.started_by,
                channel: r.channel,
                question_count: r.question_count,
                last_question: r.last_question,
                created_at: r.created_at,
                updated_at: r.updated_at,
                version: r.version,
            },
            document: stored("conversation document", r.document)?,
        })
    })
    .transpose()
}

/// The conversation as the read model had it at `at`: its events recorded up to then, folded
/// by the same fold as the live model (in memory, no table involved).
pub async fn state_at(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<ConversationDetail>, ApplyError> {
    let stored = event_store::aggregate_events(
        &mut *conn,
        AggregateType::Conversation.as_str(),
        &tenant.scope(id).to_string(),
        Some(at),
    )
    .await?;
    let events = stored
        .iter()
        .map(|e| Projected::decode(&event_store::Envelope::from(e)))
        .collect::<Result<Vec<_>, _>>()?;
    let row = fold_all::<Conversations>(&events)?;
    Ok(row.map(|row| ConversationDetail::from_row(id, row)))
}
