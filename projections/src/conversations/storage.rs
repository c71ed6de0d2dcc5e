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

/// Reads the part of the read model for `key`, locking it.
pub async fn load(
    conn: &mut PgConnection,
    key: &ScopedId,
) -> Result<Option<ConversationRow>, ReadError> {
    let row = sqlx::query_as!(
        Stored,
        r#"SELECT status AS "status: ConversationState", escalated, started_by, channel,
             last_question, created_at, updated_at, version, last_position, document
           FROM rm_conversations WHERE tenant_id = $1 AND conversation_id = $2 FOR UPDATE"#,
        key.tenant.as_str(),
        key.id,
    )
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

/// Writes the part of the read model for `key`.
pub async fn save(
    conn: &mut PgConnection,
    key: &ScopedId,
    row: &ConversationRow,
) -> Result<(), ApplyError> {
    let document = to_json(&row.document)?;
    sqlx::query!(
        "INSERT INTO rm_conversations (tenant_id, conversation_id, status, escalated, started_by, channel,
           question_count, last_question, created_at, updated_at, version, last_position, document)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET status = $3, escalated = $4,
           question_count = $7, last_question = $8, updated_at = $10, version = $11,
           last_position = $12, document = $13",
        key.tenant.as_str(),
        key.id,
        row.status.as_str(),
        row.escalated,
        row.started_by,
        row.channel,
        row.document.questions.len() as i32,
        row.last_question,
        row.created_at,
        row.updated_at,
        row.version,
        row.last_position,
        document,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
