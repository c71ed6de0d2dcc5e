//! Per-question facts for the analytics dashboards (docs/analytics.md).
use std::collections::BTreeMap;

use async_trait::async_trait;
use domain::conversation::{ConversationEvent, Feedback, Reaction};
use domain::intent;
use sqlx::{PgConnection, Row};
use streaming::Envelope;
use uuid::Uuid;

use crate::runtime::{decode, object_uuid, stored_for_apply, ApplyError, Projection};

pub const TABLE: &str = "rm_questions";

pub struct QuestionsProjection;

fn reaction(r: Reaction) -> &'static str {
    match r {
        Reaction::Upvote => "upvote",
        Reaction::Downvote => "downvote",
    }
}

#[async_trait]
impl Projection for QuestionsProjection {
    fn name(&self) -> &'static str {
        "questions"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["conversation"]
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
        let tenant = &event.tenant_id;
        let conversation = object_uuid(event)?;
        let applied: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT max(conversation_version) FROM {table} WHERE tenant_id = $1 AND conversation_id = $2"
        ))
        .bind(tenant)
        .bind(conversation)
        .fetch_one(&mut *conn)
        .await?;
        if applied.is_some_and(|v| event.sequence <= v) {
            return Ok(false);
        }
        let changed = match payload {
            ConversationEvent::QuestionAsked {
                question_id,
                text,
                asked_by,
                channel,
                integration_id,
            } => {
                let escalated = applied.is_some()
                    && sqlx::query_scalar::<_, bool>(&format!(
                        "SELECT bool_or(escalated) FROM {table} WHERE tenant_id = $1 AND conversation_id = $2"
                    ))
                    .bind(tenant)
                    .bind(conversation)
                    .fetch_one(&mut *conn)
                    .await?;
                sqlx::query(&format!(
                    "INSERT INTO {table} (tenant_id, question_id, conversation_id, asked_at, asked_by, channel, \
                       integration_id, text, normalized, intent, topic, status, question_chars, escalated, \
                       conversation_version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $14)"
                ))
                .bind(tenant)
                .bind(question_id)
                .bind(conversation)
                .bind(event.recorded_at)
                .bind(&asked_by)
                .bind(&channel)
                .bind(&integration_id)
                .bind(&text)
                .bind(intent::normalize(&text))
                .bind(intent::classify(&text).as_str())
                .bind(intent::topic(&text, &[]))
                .bind(text.chars().count() as i32)
                .bind(escalated)
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?
                .rows_affected()
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
                let urls: Vec<String> = sources.into_iter().map(|s| s.url).collect();
                let question: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT text FROM {table} WHERE tenant_id = $1 AND question_id = $2"
                ))
                .bind(tenant)
                .bind(question_id)
                .fetch_optional(&mut *conn)
                .await?;
                let question = question
                    .ok_or_else(|| ApplyError::Poison(format!("no question {question_id}")))?;
                sqlx::query(&format!(
                    "UPDATE {table} SET status = 'answered', uncertain = $3, latency_ms = $4, engine = $5, \
                       answer_id = $6, answer_chars = $7, cited_sources = $8, topic = $9 \
                     WHERE tenant_id = $1 AND question_id = $2"
                ))
                .bind(tenant)
                .bind(question_id)
                .bind(uncertain)
                .bind(latency_ms as i64)
                .bind(&engine)
                .bind(answer_id)
                .bind(text.chars().count() as i32)
                .bind(&urls)
                .bind(intent::topic(&question, &urls))
                .execute(&mut *conn)
                .await?
                .rows_affected()
            }
            ConversationEvent::AnswerFailed { question_id, .. } => {
                set_status(conn, table, tenant, question_id, "failed").await?
            }
            ConversationEvent::QuestionBlocked { question_id, .. } => {
                set_status(conn, table, tenant, question_id, "blocked").await?
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
            } => record_feedback(conn, table, tenant, answer_id, &user_id, &feedback).await?,
            ConversationEvent::ConversationResolved { .. } => {
                flag(conn, table, tenant, conversation, "resolved").await?
            }
            ConversationEvent::ConversationEscalated { .. } => {
                flag(conn, table, tenant, conversation, "escalated").await?
            }
        };
        if changed == 0 {
            return Err(ApplyError::Poison(format!(
                "{} matches nothing in this conversation",
                event.event_type
            )));
        }
        sqlx::query(&format!(
            "UPDATE {table} SET conversation_version = $3 WHERE tenant_id = $1 AND conversation_id = $2"
        ))
        .bind(tenant)
        .bind(conversation)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?;
        Ok(true)
    }
}

async fn set_status(
    conn: &mut PgConnection,
    table: &str,
    tenant: &str,
    question: Uuid,
    status: &str,
) -> Result<u64, ApplyError> {
    Ok(sqlx::query(&format!(
        "UPDATE {table} SET status = $3 WHERE tenant_id = $1 AND question_id = $2"
    ))
    .bind(tenant)
    .bind(question)
    .bind(status)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

async fn flag(
    conn: &mut PgConnection,
    table: &str,
    tenant: &str,
    conversation: Uuid,
    column: &str,
) -> Result<u64, ApplyError> {
    Ok(sqlx::query(&format!(
        "UPDATE {table} SET {column} = true WHERE tenant_id = $1 AND conversation_id = $2"
    ))
    .bind(tenant)
    .bind(conversation)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// One reaction per user: the map is replaced per user, the counts recomputed from it.
async fn record_feedback(
    conn: &mut PgConnection,
    table: &str,
    tenant: &str,
    answer: Uuid,
    user: &str,
    feedback: &Feedback,
) -> Result<u64, ApplyError> {
    let row = sqlx::query(&format!(
        "SELECT feedback FROM {table} WHERE tenant_id = $1 AND answer_id = $2"
    ))
    .bind(tenant)
    .bind(answer)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(0) };
    let mut all: BTreeMap<String, (String, Vec<String>)> =
        stored_for_apply("feedback of the answer", row.get("feedback"))?;
    let reasons: Vec<String> = feedback
        .reasons
        .iter()
        .map(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    all.insert(
        user.to_string(),
        (reaction(feedback.reaction).to_string(), reasons),
    );
    let up = all.values().filter(|(r, _)| r == "upvote").count() as i32;
    let down = all.values().filter(|(r, _)| r == "downvote").count() as i32;
    let down_reasons: Vec<String> = all
        .values()
        .filter(|(r, _)| r == "downvote")
        .flat_map(|(_, reasons)| reasons.clone())
        .collect();
    Ok(sqlx::query(&format!(
        "UPDATE {table} SET feedback = $3, upvotes = $4, downvotes = $5, downvote_reasons = $6 \
         WHERE tenant_id = $1 AND answer_id = $2"
    ))
    .bind(tenant)
    .bind(answer)
    .bind(
        serde_json::to_value(&all)
            .map_err(|e| ApplyError::Poison(format!("cannot store the row: {e}")))?,
    )
    .bind(up)
    .bind(down)
    .bind(&down_reasons)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
