//! Where the questions read model's rows live (`rm_questions`).
use std::collections::BTreeMap;

use domain::conversation::{DownvoteReason, Reaction};
use domain::ScopedId;
use sqlx::PgConnection;

use super::{ConversationQuestions, QuestionRow};
use crate::conversations::QuestionStatus;
use crate::intent::Intent;
use crate::projection::{stored, to_json, ApplyError, ReadError};

#[derive(sqlx::FromRow)]
struct Stored {
    question_id: uuid::Uuid,
    asked_at: chrono::DateTime<chrono::Utc>,
    asked_by: String,
    channel: String,
    integration_id: Option<String>,
    text: String,
    normalized: String,
    intent: Intent,
    topic: Option<String>,
    status: QuestionStatus,
    uncertain: bool,
    latency_ms: Option<i64>,
    engine: Option<String>,
    answer_id: Option<uuid::Uuid>,
    question_chars: i32,
    answer_chars: i32,
    cited_sources: Vec<String>,
    feedback: serde_json::Value,
    resolved: bool,
    escalated: bool,
    conversation_version: i64,
    answer_text: Option<String>,
    redactions: serde_json::Value,
    fallback_reason: Option<String>,
    first_chunk_ms: Option<i64>,
    answered_at: Option<chrono::DateTime<chrono::Utc>>,
    resolved_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Reads the part of the read model for `key`, locking it.
pub async fn load(
    conn: &mut PgConnection,
    key: &ScopedId,
) -> Result<Option<ConversationQuestions>, ReadError> {
    let rows = sqlx::query_as!(
        Stored,
        r#"SELECT question_id, asked_at, asked_by, channel, integration_id, text, normalized,
             intent AS "intent: Intent", topic, status AS "status: QuestionStatus", uncertain,
             latency_ms, engine, answer_id, question_chars, answer_chars, cited_sources, feedback,
             resolved, escalated, conversation_version, answer_text, redactions, fallback_reason,
             first_chunk_ms, answered_at, resolved_at
           FROM rm_questions WHERE tenant_id = $1 AND conversation_id = $2
           ORDER BY asked_at, question_id FOR UPDATE"#,
        key.tenant.as_str(),
        key.id,
    )
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let version = rows
        .iter()
        .map(|r| r.conversation_version)
        .max()
        .unwrap_or(0);
    let rows = rows
        .into_iter()
        .map(|r| {
            let feedback: BTreeMap<String, (Reaction, Vec<DownvoteReason>)> =
                stored("feedback of the answer", r.feedback)?;
            Ok(QuestionRow {
                question_id: r.question_id,
                asked_at: r.asked_at,
                asked_by: r.asked_by,
                channel: r.channel,
                integration_id: r.integration_id,
                text: r.text,
                normalized: r.normalized,
                intent: r.intent,
                topic: r.topic,
                status: r.status,
                uncertain: r.uncertain,
                latency_ms: r.latency_ms,
                engine: r.engine,
                answer_id: r.answer_id,
                question_chars: r.question_chars,
                answer_chars: r.answer_chars,
                cited_sources: r.cited_sources,
                feedback,
                resolved: r.resolved,
                escalated: r.escalated,
                answer_text: r.answer_text,
                redactions: stored("redactions of the question", r.redactions)?,
                fallback_reason: r.fallback_reason,
                first_chunk_ms: r.first_chunk_ms,
                answered_at: r.answered_at,
                resolved_at: r.resolved_at,
            })
        })
        .collect::<Result<Vec<_>, ReadError>>()?;
    Ok(Some(ConversationQuestions { version, rows }))
}

/// Writes the part of the read model for `key`.
pub async fn save(
    conn: &mut PgConnection,
    key: &ScopedId,
    state: &ConversationQuestions,
) -> Result<(), ApplyError> {
    for r in &state.rows {
        let feedback = to_json(&r.feedback)?;
        let redactions = to_json(&r.redactions)?;
        let reasons: Vec<String> = r
            .downvote_reasons()
            .iter()
            .map(|reason| reason.to_string())
            .collect();
        sqlx::query!(
            "INSERT INTO rm_questions (tenant_id, question_id, conversation_id, asked_at, asked_by, channel,
               integration_id, text, normalized, intent, topic, status, uncertain, latency_ms, engine,
               answer_id, question_chars, answer_chars, cited_sources, feedback, upvotes, downvotes,
               downvote_reasons, resolved, escalated, conversation_version, answer_text, redactions,
               fallback_reason, first_chunk_ms, answered_at, resolved_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
               $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)
             ON CONFLICT (tenant_id, question_id) DO UPDATE SET topic = $11, status = $12,
               uncertain = $13, latency_ms = $14, engine = $15, answer_id = $16, answer_chars = $18,
               cited_sources = $19, feedback = $20, upvotes = $21, downvotes = $22,
               downvote_reasons = $23, resolved = $24, escalated = $25, conversation_version = $26,
               answer_text = $27, redactions = $28, fallback_reason = $29, first_chunk_ms = $30,
               answered_at = $31, resolved_at = $32",
            key.tenant.as_str(),
            r.question_id,
            key.id,
            r.asked_at,
            r.asked_by,
            r.channel,
            r.integration_id,
            r.text,
            r.normalized,
            r.intent.as_str(),
            r.topic,
            r.status.as_str(),
            r.uncertain,
            r.latency_ms,
            r.engine,
            r.answer_id,
            r.question_chars,
            r.answer_chars,
            &r.cited_sources,
            feedback,
            r.upvotes(),
            r.downvotes(),
            &reasons,
            r.resolved,
            r.escalated,
            state.version,
            r.answer_text,
            redactions,
            r.fallback_reason,
            r.first_chunk_ms,
            r.answered_at,
            r.resolved_at,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
