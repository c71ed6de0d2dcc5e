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
    }
}

/// The questions, answers and feedback of one conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationDocument {
    pub questions: Vec<QuestionView>,
    pub resolved_by: Option<String>,
    pub escalated_by: Option<String>,
    pub escalation_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuestionView {
    pub question_id: Uuid,
    pub text: String,
    pub asked_by: String,
    pub channel: String,
    pub integration_id: Option<String>,
    pub asked_at: DateTime<Utc>,
    pub status: QuestionStatus,
    pub answer: Option<AnswerView>,
    /// Why it failed, or which guardrail blocked it.
    pub reason: Option<String>,
    pub retryable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnswerView {
    pub answer_id: Uuid,
    pub text: String,
    pub sources: Vec<SourceRef>,
    pub uncertain: bool,
    pub latency_ms: u64,
    pub engine: String,
    pub answered_at: DateTime<Utc>,
    /// One reaction per user.
    pub feedback: BTreeMap<String, FeedbackView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceRef {
    pub url: String,
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeedbackView {
    pub reaction: Reaction,
    pub reasons: Vec<DownvoteReason>,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

/// One conversation's row, between two events.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    pub status: ConversationState,
    pub escalated: bool,
    pub started_by: String,
    pub channel: String,
    pub last_question: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The last applied sequence of the conversation.
    pub version: i64,
    pub last_position: i64,
    pub document: ConversationDocument,
}
