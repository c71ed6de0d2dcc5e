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
pub mod storage;

pub use fold::Questions;

/// One question's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionRow {
    pub question_id: Uuid,
    pub asked_at: DateTime<Utc>,
    pub asked_by: String,
    pub channel: String,
    pub integration_id: Option<String>,
    pub text: String,
    pub normalized: String,
    pub intent: Intent,
    pub topic: Option<String>,
    pub status: QuestionStatus,
    pub uncertain: bool,
    pub latency_ms: Option<i64>,
    pub engine: Option<String>,
    pub answer_id: Option<Uuid>,
    pub question_chars: i32,
    pub answer_chars: i32,
    pub cited_sources: Vec<String>,
    /// One reaction per user, with its reasons.
    pub feedback: BTreeMap<String, (Reaction, Vec<DownvoteReason>)>,
    pub resolved: bool,
    pub escalated: bool,
}

impl QuestionRow {
    pub fn upvotes(&self) -> i32 {
        self.count(Reaction::Upvote)
    }

    pub fn downvotes(&self) -> i32 {
        self.count(Reaction::Downvote)
    }

    fn count(&self, reaction: Reaction) -> i32 {
        self.feedback
            .values()
            .filter(|(r, _)| *r == reaction)
            .count() as i32
    }

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
    pub version: i64,
    pub rows: Vec<QuestionRow>,
}
