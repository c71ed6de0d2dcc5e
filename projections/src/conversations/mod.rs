//! The per-tenant conversations read model: one row per conversation, with its questions,
//! answers and feedback as a JSON document, read by `GET /v1/conversations[/{id}]`.
//! [`fold`] is the pure fold, [`storage`] its rows, [`queries`] what the API reads.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::conversation::{DownvoteReason, Reaction};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub mod fold;
pub mod queries;
pub mod storage;

pub use fold::Conversations;
pub use queries::{
    get, list, state_at, ConversationDetail, ConversationFilter, ConversationSummary,
};

domain::text_enum! {
    /// Where a conversation stands in the read model.
    pub enum ConversationState {
        Open = "open",
        Resolved = "resolved",
    }
}

domain::text_enum! {
    /// Where a question stands.
    pub enum QuestionStatus {
        Pending = "pending",
        Answered = "answered",
        Failed = "failed",
        Blocked = "blocked",
        Withheld = "withheld",
    }
}

/// The questions, answers and feedback of one conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationDocument {
    /// Its questions in order, with their answers.
    pub questions: Vec<QuestionView>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// Who escalated it.
    pub escalated_by: Option<String>,
    /// Why it was escalated.
    pub escalation_reason: Option<String>,
}

/// A question as the read model shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuestionView {
    /// Its id.
    pub question_id: Uuid,
    /// The question.
    pub text: String,
    /// The asking user.
    pub asked_by: String,
    /// Where it was asked.
    pub channel: String,
    /// The Kapa integration it came through, if any.
    pub integration_id: Option<String>,
    /// When it was asked.
    pub asked_at: DateTime<Utc>,
    /// Where it stands.
    pub status: QuestionStatus,
    /// Its answer, once recorded.
    pub answer: Option<AnswerView>,
    /// Why it failed, or which guardrail blocked it.
    pub reason: Option<String>,
    /// For a failed question: whether asking again may work.
    pub retryable: Option<bool>,
    /// What the guardrails redacted from the question: counts per rule, never the text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redactions: BTreeMap<String, u32>,
}

/// An answer as the read model shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnswerView {
    /// Its id.
    pub answer_id: Uuid,
    /// The answer.
    pub text: String,
    /// The knowledge it cites.
    pub sources: Vec<SourceRef>,
    /// The engine was not sure.
    pub uncertain: bool,
    /// How long the engine took.
    pub latency_ms: u64,
    /// Which engine answered.
    pub engine: String,
    /// When it was recorded.
    pub answered_at: DateTime<Utc>,
    /// One reaction per user.
    pub feedback: BTreeMap<String, FeedbackView>,
}

/// A piece of knowledge an answer cites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceRef {
    /// Where it is.
    pub url: String,
    /// Its title, if known.
    pub title: Option<String>,
}

/// A user's reaction to an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeedbackView {
    /// Up or down.
    pub reaction: Reaction,
    /// Why it was downvoted.
    pub reasons: Vec<DownvoteReason>,
    /// Free text.
    pub comment: Option<String>,
    /// When it was given (or last changed).
    pub at: DateTime<Utc>,
}

/// One conversation's row, between two events.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    /// Open or resolved.
    pub status: ConversationState,
    /// Handed to a person.
    pub escalated: bool,
    /// Who asked the first question.
    pub started_by: String,
    /// Where the first question was asked.
    pub channel: String,
    /// The newest question's text.
    pub last_question: String,
    /// When the first question was asked.
    pub created_at: DateTime<Utc>,
    /// When the last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// The last applied sequence of the conversation.
    pub version: i64,
    /// The store position of the last event applied.
    pub last_position: i64,
    /// Its questions, answers and feedback.
    pub document: ConversationDocument,
}
