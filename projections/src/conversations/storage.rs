//! Where the conversations read model's rows live (`rm_conversations`; a rebuild's copy is
//! selected by `search_path`, so these statements never name a schema).
use domain::ScopedId;
use sqlx::PgConnection;

use super::{ConversationRow, ConversationState};
use crate::projection::{stored, to_json, ApplyError, ReadError};

#[derive(sqlx::FromRow)]
struct Stored {
    status: ConversationState,
    escalated: bool,
    started_by: String,
    channel: String,
    last_question: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    version: i64,
    last_position: i64,
    document: serde_json::Value,
}

pub async fn load(
    conn: &mut PgConnection,
    key: &ScopedId,
) -> Result<Option<ConversationRow>, ReadError> {
    let row: Option<Stored> = sqlx::query_as(
        "SELECT status, escalated, started_by, channel, last_question, created_at, updated_at, \
           version, last_position, document \
         FROM rm_conversations WHERE tenant_id = $1 AND conversation_id = $2 FOR UPDATE",
    )
    .bind(&key.tenant)
    .bind(key.id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(ConversationRow {
            status: r.status,
            escalated: r.escalated,
            started_by: r.started_by,
            channel: r.channel,
            last_question: r.last_question,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            last_position: r.last_position,
            document: stored("conversation document", r.document)?,
        })
    })
    .transpose()
}

pub async fn save(
    conn: &mut PgConnection,
    key: &ScopedId,
    row: &ConversationRow,
) -> Result<(), ApplyError> {
    sqlx::query(
        "INSERT INTO rm_conversations (tenant_id, conversation_id, status, escalated, started_by, channel, \
           question_count, last_question, created_at, updated_at, version, last_position, document) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET status = $3, escalated = $4, \
           question_count = $7, last_question = $8, updated_at = $10, version = $11, \
           last_position = $12, document = $13",
    )
    .bind(&key.tenant)
    .bind(key.id)
    .bind(row.status)
    .bind(row.escalated)
    .bind(&row.started_by)
    .bind(&row.channel)
    .bind(row.document.questions.len() as i32)
    .bind(&row.last_question)
    .bind(row.created_at)
    .bind(row.updated_at)
    .bind(row.version)
    .bind(row.last_position)
    .bind(to_json(&row.document)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
