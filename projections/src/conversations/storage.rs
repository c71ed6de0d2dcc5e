//! Where the conversations read model's rows live (`rm_conversations`; a rebuild's copy is
//! selected by `search_path`, so these statements never name a schema).
use domain::ScopedId;
use sqlx::PgConnection;

use super::{ConversationRow, ConversationState};
use crate::projection::{stored, to_json, ApplyError, ReadError};

/// Reads the part of the read model for `key`, locking it.
pub async fn load(
    conn: &mut PgConnection,
    key: &ScopedId,
) -> Result<Option<ConversationRow>, ApplyError> {
    Ok(load_many(conn, std::slice::from_ref(key))
        .await?
        .pop()
        .map(|(_, row)| row))
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

#[derive(sqlx::FromRow)]
struct StoredKeyed {
    tenant_id: String,
    conversation_id: uuid::Uuid,
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

/// Reads the parts for `keys` in one statement, locking them (a rebuild's batch).
pub async fn load_many(
    conn: &mut PgConnection,
    keys: &[ScopedId],
) -> Result<Vec<(ScopedId, ConversationRow)>, ApplyError> {
    let tenants: Vec<String> = keys.iter().map(|k| k.tenant.as_str().to_string()).collect();
    let ids: Vec<uuid::Uuid> = keys.iter().map(|k| k.id).collect();
    let rows = sqlx::query_as!(
        StoredKeyed,
        r#"SELECT r.tenant_id, r.conversation_id, r.status AS "status: ConversationState",
             r.escalated, r.started_by, r.channel, r.last_question, r.created_at, r.updated_at,
             r.version, r.last_position, r.document
           FROM rm_conversations r
           JOIN UNNEST($1::text[], $2::uuid[]) AS k(tenant_id, conversation_id)
             ON r.tenant_id = k.tenant_id AND r.conversation_id = k.conversation_id
           FOR UPDATE OF r"#,
        &tenants,
        &ids,
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(ReadError::from)?;
    rows.into_iter()
        .map(|r| {
            let key = ScopedId {
                tenant: r.tenant_id.parse().map_err(|e: domain::IdError| {
                    ApplyError::Poison(format!("a stored conversation's tenant: {e}"))
                })?,
                id: r.conversation_id,
            };
            let row = ConversationRow {
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
            };
            Ok((key, row))
        })
        .collect()
}

/// Writes the parts in one statement (a rebuild's batch).
pub async fn save_many(
    conn: &mut PgConnection,
    parts: &[(&ScopedId, &ConversationRow)],
) -> Result<(), ApplyError> {
    if parts.is_empty() {
        return Ok(());
    }
    let n = parts.len();
    let (mut tenants, mut ids, mut statuses, mut escalated, mut started_by, mut channels) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut counts, mut last_questions, mut created, mut updated, mut versions, mut positions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut documents = Vec::with_capacity(n);
    for (key, row) in parts {
        tenants.push(key.tenant.as_str().to_string());
        ids.push(key.id);
        statuses.push(row.status.as_str().to_string());
        escalated.push(row.escalated);
        started_by.push(row.started_by.clone());
        channels.push(row.channel.clone());
        counts.push(row.document.questions.len() as i32);
        last_questions.push(row.last_question.clone());
        created.push(row.created_at);
        updated.push(row.updated_at);
        versions.push(row.version);
        positions.push(row.last_position);
        documents.push(to_json(&row.document)?);
    }
    sqlx::query!(
        "INSERT INTO rm_conversations (tenant_id, conversation_id, status, escalated, started_by, channel,
           question_count, last_question, created_at, updated_at, version, last_position, document)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::bool[], $5::text[], $6::text[],
           $7::int4[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::int8[], $12::int8[],
           $13::jsonb[])
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET status = EXCLUDED.status,
           escalated = EXCLUDED.escalated, question_count = EXCLUDED.question_count,
           last_question = EXCLUDED.last_question, updated_at = EXCLUDED.updated_at,
           version = EXCLUDED.version, last_position = EXCLUDED.last_position,
           document = EXCLUDED.document",
        &tenants,
        &ids,
        &statuses,
        &escalated,
        &started_by,
        &channels,
        &counts,
        &last_questions,
        &created,
        &updated,
        &versions,
        &positions,
        &documents,
    )
    .execute(&mut *conn)
    .await
    .map_err(ReadError::from)?;
    Ok(())
}
