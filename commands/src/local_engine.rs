use std::sync::Arc;

use async_trait::async_trait;
use domain::engine::{AnswerEngine, AnswerRequest, ChunkSink, EngineAnswer, EngineFailure};
use sha2::{Digest, Sha256};

/// A deterministic answer engine for development and tests: the same question always gets the
/// same answer, with no network. It says it is not grounded, and marks short questions uncertain.
/// Streamed, it hands the answer over word by word.
pub struct LocalAnswerEngine;

#[async_trait]
impl AnswerEngine for LocalAnswerEngine {
    async fn answer(
        &self,
        request: AnswerRequest,
        chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Result<EngineAnswer, EngineFailure> {
        let digest = hex::encode(Sha256::digest(
            format!("{}\u{1f}{}", request.tenant_id, request.question).as_bytes(),
        ));
        let words = request.question.split_whitespace().count();
        let text = format!(
            "The local answer engine is not grounded in any knowledge source. You asked: {}",
            request.question
        );
        if let Some(chunks) = &chunks {
            for piece in text.split_inclusive(' ') {
                chunks.chunk(piece);
            }
        }
        Ok(EngineAnswer {
            text,
            sources: vec![],
            uncertain: words < 3,
            latency_ms: 0,
            engine: "local".into(),
            engine_answer_id: digest[..32].to_string(),
            engine_thread_id: request
                .engine_thread_id
                .or_else(|| Some(format!("local-{}", &digest[32..48]))),
            first_chunk_ms: chunks.map(|_| 0),
        })
    }
}
