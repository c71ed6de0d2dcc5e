//! The seam between a conversation and whatever answers its questions (Kapa.ai in production,
//! a deterministic local engine in development). The conversation aggregate sees only this trait.
use std::sync::Arc;

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

impl EngineContext {
    /// Whether the tenant has a Kapa project to ask.
    pub fn has_kapa(&self) -> bool {
        self.project_id.is_some() && self.api_key_ref.is_some()
    }
}

/// A question for the engine, with only the context the tenant allows to leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRequest {
    /// The tenant asking.
    pub tenant_id: String,
    /// The question, after guardrails.
    pub question: String,
    /// The engine's own thread id from an earlier answer, for follow-up questions.
    pub engine_thread_id: Option<String>,
    /// A pseudonymous id for the asking user (an HMAC of the user id with a per-tenant key;
    /// never an e-mail address).
    pub user_ref: String,
    /// The user's e-mail address, only when the tenant opted in to sharing it.
    pub user_email: Option<String>,
    /// The asking user's role (`admin`, `agent`...).
    pub role: String,
    /// Where the question was asked (`web`, `slack`...).
    pub channel: String,
    /// The Kapa integration the question came through, if any (else the tenant's).
    pub integration_id: Option<String>,
    /// The company's name, only when the tenant opted in to sharing it.
    pub company_name: Option<String>,
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
    /// For streamed answers: how long until the first chunk arrived.
    pub first_chunk_ms: Option<u64>,
}

crate::text_enum! {
    /// What kind of failure kept the engine from answering.
    pub enum FailureKind {
        /// Could not connect, timed out, or the engine answered 5xx.
        Unavailable = "unavailable",
        /// The engine answered 429 and kept doing so.
        RateLimited = "rate_limited",
        /// The engine refused the credentials (401/403): a configuration failure.
        CredentialsRejected = "credentials_rejected",
        /// The engine refused the request or the project (other 4xx), or the key could not
        /// be resolved: a configuration failure.
        Misconfigured = "misconfigured",
        /// The engine answered something unreadable.
        Malformed = "malformed",
        /// A streamed answer ended before it was complete.
        Truncated = "truncated",
        /// The engine reported an error of its own.
        EngineError = "engine_error",
        /// The circuit breaker is open: the engine was not called.
        CircuitOpen = "circuit_open",
        /// The tenant already has as many questions in flight as it may.
        Busy = "busy",
        /// No engine is configured for the tenant.
        NotConfigured = "not_configured",
    }
}

impl FailureKind {
    /// Whether asking again later may succeed. Configuration failures need a person first.
    pub fn retryable(self) -> bool {
        !matches!(
            self,
            FailureKind::CredentialsRejected
                | FailureKind::Misconfigured
                | FailureKind::NotConfigured
        )
    }
}

/// Why the engine did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What went wrong, for people (never a secret).
    pub reason: String,
    /// Whether asking again later may succeed (timeouts, 429, 5xx) or not (bad configuration).
    pub retryable: bool,
}

impl EngineFailure {
    /// A failure of `kind`, retryable as the kind says.
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            retryable: kind.retryable(),
        }
    }
}

/// Receives a streamed answer's text as it arrives (the SSE response of the API).
pub trait ChunkSink: Send + Sync {
    /// One piece of the answer, in order.
    fn chunk(&self, text: &str);
}

/// Answers questions. Called by the command side between recording the question and recording
/// its answer, never by an aggregate.
#[async_trait]
pub trait AnswerEngine: Send + Sync {
    /// Answers one question. With `chunks`, the engine streams and hands each piece over as it
    /// arrives; the returned answer is always the whole.
    async fn answer(
        &self,
        request: AnswerRequest,
        chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Result<EngineAnswer, EngineFailure>;
}

/// A previously given, upvoted answer of the same tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryAnswer {
    /// The question it answered.
    pub question: String,
    /// The answer.
    pub text: String,
    /// The knowledge it cited.
    pub sources: Vec<CitedSource>,
    /// How similar its question is to the one asked (0 to 1; 1 for an identical question).
    pub similarity: f32,
}

/// Which earlier answers to look for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LibraryLookup {
    /// The most similar upvoted answer whose question is at least this similar.
    Similar {
        /// The least similarity accepted (0 to 1).
        min_similarity: f32,
    },
    /// An upvoted answer to the same question (after normalisation), given recently.
    Identical {
        /// How old the answer may be, in days.
        max_age_days: u32,
    },
}

/// The tenant's own answered questions, searched when the engine cannot answer (fallback) or
/// need not (reuse). Implemented over a read model; never returns another tenant's answers.
#[async_trait]
pub trait AnswerLibrary: Send + Sync {
    /// The best earlier answer for `question`, if one qualifies.
    async fn find(
        &self,
        tenant_id: &str,
        question: &str,
        lookup: LibraryLookup,
    ) -> Result<Option<LibraryAnswer>, String>;
}
