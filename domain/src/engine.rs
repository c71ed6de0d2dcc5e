//! The seam between a conversation and whatever answers its questions (Kapa.ai in production,
//! a deterministic local engine in development). The conversation aggregate sees only this trait.
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The tenant's answer-engine settings, copied into the ask command by the command side so the
/// aggregate needs no lookup. The API key is a reference to a secret, never the key itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineContext {
    pub project_id: Option<String>,
    pub integration_id: Option<String>,
    pub api_key_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRequest {
    pub tenant_id: String,
    pub question: String,
    /// The engine's own thread id from an earlier answer, for follow-up questions.
    pub engine_thread_id: Option<String>,
    /// A pseudonymous id for the asking user (never an e-mail address).
    pub user_ref: String,
    pub context: EngineContext,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitedSource {
    pub url: String,
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineAnswer {
    pub text: String,
    pub sources: Vec<CitedSource>,
    pub uncertain: bool,
    pub latency_ms: u64,
    /// Which engine answered ("kapa", "local", ...).
    pub engine: String,
    /// The engine's id for this answer (Kapa's `question_answer_id`), needed to forward feedback.
    pub engine_answer_id: String,
    pub engine_thread_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFailure {
    pub reason: String,
    /// Whether asking again later may succeed (timeouts, 429, 5xx) or not (bad configuration).
    pub retryable: bool,
}

#[async_trait]
pub trait AnswerEngine: Send + Sync {
    async fn answer(&self, request: AnswerRequest) -> Result<EngineAnswer, EngineFailure>;
}
