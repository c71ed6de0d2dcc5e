//! The seam between a conversation and whatever answers its questions (Kapa.ai in production,
//! a deterministic local engine in development). The conversation aggregate sees only this trait.
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The tenant's answer-engine settings, copied into the ask command by the command side so the
/// aggregate needs no lookup. The API key is a reference to a secret, never the key itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineContext {
    /// The tenant's Kapa project, if set.
    pub project_id: Option<String>,
    /// The Kapa integration, if set.
    pub integration_id: Option<String>,
    /// A reference to the Kapa API key (never the key).
    pub api_key_ref: Option<String>,
}

/// A question for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRequest {
    /// The tenant asking.
    pub tenant_id: String,
    /// The question, after guardrails.
    pub question: String,
    /// The engine's own thread id from an earlier answer, for follow-up questions.
    pub engine_thread_id: Option<String>,
    /// A pseudonymous id for the asking user (never an e-mail address).
    pub user_ref: String,
    /// The tenant's engine settings.
    pub context: EngineContext,
}

/// A piece of knowledge an answer cites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitedSource {
    /// Where it is.
    pub url: String,
    /// Its title, if known.
    pub title: Option<String>,
}

/// What the engine answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineAnswer {
    /// The answer.
    pub text: String,
    /// The knowledge it cites.
    pub sources: Vec<CitedSource>,
    /// The engine was not sure.
    pub uncertain: bool,
    /// How long the engine took.
    pub latency_ms: u64,
    /// Which engine answered ("kapa", "local", ...).
    pub engine: String,
    /// The engine's id for this answer (Kapa's `question_answer_id`), needed to forward feedback.
    pub engine_answer_id: String,
    /// The engine's thread, for follow-ups.
    pub engine_thread_id: Option<String>,
}

/// Why the engine did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFailure {
    /// What went wrong.
    pub reason: String,
    /// Whether asking again later may succeed (timeouts, 429, 5xx) or not (bad configuration).
    pub retryable: bool,
}

/// Answers questions; injected into the conversation aggregate.
#[async_trait]
pub trait AnswerEngine: Send + Sync {
    /// Answers one question.
    async fn answer(&self, request: AnswerRequest) -> Result<EngineAnswer, EngineFailure>;
}
