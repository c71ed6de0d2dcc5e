//! The tenant's own upvoted answers, searched when the engine cannot answer (fallback) or need
//! not (reuse). Always filtered by the asking tenant: another tenant's answers are never found.
use async_trait::async_trait;
use domain::engine::{AnswerLibrary, CitedSource, LibraryAnswer, LibraryLookup};
use domain::TenantId;
use event_store::TenantPool;

use crate::intent;

/// [`AnswerLibrary`] over the questions read model (`rm_questions`).
pub struct PgAnswerLibrary {
    pool: TenantPool,
}

impl PgAnswerLibrary {
    /// Searches the read model through the API's tenant-scoped `pool`.
    pub fn new(pool: TenantPool) -> Self {
        Self { pool }
    }
}

struct Found {
    text: String,
    answer_text: Option<String>,
    cited_sources: Vec<String>,
    similarity: Option<f32>,
}

#[async_trait]
impl AnswerLibrary for PgAnswerLibrary {
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id), err)]
    async fn find(
        &self,
        tenant_id: &str,
        question: &str,
        lookup: LibraryLookup,
    ) -> Result<Option<LibraryAnswer>, String> {
        let normalized = intent::normalize(question);
        let tenant = TenantId::parse(tenant_id).map_err(|e| e.to_string())?;
        let mut tx = self
            .pool
            .begin(&tenant)
            .await
            .map_err(|e| format!("searching earlier answers failed: {e}"))?;
        // "Upvoted" means more up- than downvotes: a disputed answer is not offered again.
        let found = match lookup {
            LibraryLookup::Similar { min_similarity } => {
                sqlx::query_as!(
                    Found,
                    r#"SELECT text, answer_text, cited_sources,
                          similarity(normalized, $2) AS "similarity"
                     FROM rm_questions
                    WHERE tenant_id = $1 AND upvotes > 0 AND upvotes > downvotes
                      AND answer_text IS NOT NULL AND status = 'answered'
                      AND similarity(normalized, $2) >= $3
                    ORDER BY similarity(normalized, $2) DESC, asked_at DESC
                    LIMIT 1"#,
                    tenant_id,
                    normalized,
                    min_similarity,
                )
                .fetch_optional(&mut *tx)
                .await
            }
            LibraryLookup::Identical { max_age_days } => {
                sqlx::query_as!(
                    Found,
                    r#"SELECT text, answer_text, cited_sources, 1::real AS "similarity"
                     FROM rm_questions
                    WHERE tenant_id = $1 AND normalized = $2 AND upvotes > 0
                      AND upvotes > downvotes AND answer_text IS NOT NULL AND status = 'answered'
                      AND asked_at > now() - make_interval(days => $3)
                    ORDER BY upvotes DESC, asked_at DESC
                    LIMIT 1"#,
                    tenant_id,
                    normalized,
                    i32::try_from(max_age_days).unwrap_or(i32::MAX),
                )
                .fetch_optional(&mut *tx)
                .await
            }
        }
        .map_err(|e| format!("searching earlier answers failed: {e}"))?;
        Ok(found.and_then(|f| {
            Some(LibraryAnswer {
                question: f.text,
                text: f.answer_text?,
                sources: f
                    .cited_sources
                    .into_iter()
                    .map(|url| CitedSource { url, title: None })
                    .collect(),
                similarity: f.similarity.unwrap_or(0.0),
            })
        }))
    }
}
