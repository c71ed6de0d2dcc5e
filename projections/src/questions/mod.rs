//! Per-question facts for the analytics dashboards (docs/analytics.md): one row per question,
//! folded per conversation. [`fold`] is the pure fold, [`storage`] its rows; the queries over
//! them are `crate::analytics`.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::conversation::{DownvoteReason, Reaction};
use uuid::Uuid;

use crate::conversations::QuestionStatus;
use crate::intent::Intent;

pub mod fold;
pub mod library;
pub mod storage;

pub use fold::Questions;
pub use library::PgAnswerLibrary;

/// One question's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionRow {
    /// Its id.
    pub question_id: Uuid,
    /// When it was asked.
    pub asked_at: DateTime<Utc>,
    /// The asking user.
    pub asked_by: String,
    /// Where it was asked.
    pub channel: String,
    /// The Kapa integration it came through, if any.
    pub integration_id: Option<String>,
    /// The question.
    pub text: String,
    /// The question normalised, to group repeats.
    pub normalized: String,
    /// What it is after.
    pub intent: Intent,
    /// What it is about, if found.
    pub topic: Option<String>,
    /// Where it stands.
    pub status: QuestionStatus,
    /// The engine was not sure of the answer.
    pub uncertain: bool,
    /// How long the engine took.
    pub latency_ms: Option<i64>,
    /// Which engine answered.
    pub engine: Option<String>,
    /// Its answer, once recorded.
    pub answer_id: Option<Uuid>,
    /// The question's length in characters.
    pub question_chars: i32,
    /// The answer's length in characters.
    pub answer_chars: i32,
    /// The URLs the answer cites.
    pub cited_sources: Vec<String>,
    /// One reaction per user, with its reasons.
    pub feedback: BTreeMap<String, (Reaction, Vec<DownvoteReason>)>,
    /// Its conversation was resolved.
    pub resolved: bool,
    /// Its conversation was escalated.
    pub escalated: bool,
    /// The answer's text, once recorded (searched by the fallback and answer reuse).
    pub answer_text: Option<String>,
    /// What the guardrails redacted from the question and its answer, counts per rule.
    pub redactions: BTreeMap<String, u32>,
    /// Why the fallback answered instead of the engine, if it did.
    pub fallback_reason: Option<String>,
    /// For streamed answers, how long until the first chunk.
    pub first_chunk_ms: Option<i64>,
    /// When it was answered (or failed, blocked, withheld).
    pub answered_at: Option<DateTime<Utc>>,
    /// When its conversation was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

impl QuestionRow {
    /// How many users upvoted the answer.
    pub fn upvotes(&self) -> i32 {
        self.count(Reaction::Upvote)
    }

    /// How many users downvoted the answer.
    pub fn downvotes(&self) -> i32 {
        self.count(Reaction::Downvote)
    }

    fn count(&self, reaction: Reaction) -> i32 {
        self.feedback
            .values()
            .filter(|(r, _)| *r == reaction)
            .count() as i32
    }

    /// The reasons of every downvote.
    pub fn downvote_reasons(&self) -> Vec<DownvoteReason> {
        self.feedback
            .values()
            .filter(|(r, _)| *r == Reaction::Downvote)
            .flat_map(|(_, reasons)| reasons.iter().copied())
            .collect()
    }
}

/// The questions of one conversation, and the conversation version they have folded in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConversationQuestions {
    /// The conversation version folded in.
    pub version: i64,
    /// Its questions.
    pub rows: Vec<QuestionRow>,
}
