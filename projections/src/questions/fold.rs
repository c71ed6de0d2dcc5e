//! The questions read model as a pure fold.
use async_trait::async_trait;
use domain::conversation::ConversationEvent;
use domain::{AggregateType, AnyEvent, ScopedId};
use sqlx::PgConnection;

use super::{ConversationQuestions, QuestionRow};
use crate::conversations::QuestionStatus;
use crate::event::EventMeta;
use crate::intent;
use crate::projection::ApplyError;
use crate::read_model::{ReadModel, Refusal};

/// The questions (analytics) read model.
pub struct Questions;

fn matches_nothing(event: &ConversationEvent) -> Refusal {
    Refusal(format!(
        "{} matches nothing in this conversation",
        cqrs_es::DomainEvent::event_type(event)
    ))
}

#[async_trait]
impl ReadModel for Questions {
    const NAME: &'static str = "questions";
    const AGGREGATE_TYPES: &'static [AggregateType] = &[AggregateType::Conversation];
    const TABLES: &'static [&'static str] = &["rm_questions"];
    type Event = ConversationEvent;
    type State = ConversationQuestions;
    type Key = ScopedId;

    fn select(event: &AnyEvent) -> Option<&ConversationEvent> {
        match event {
            AnyEvent::Conversation(e) => Some(e),
            _ => None,
        }
    }

    fn key(meta: &EventMeta) -> Result<ScopedId, ApplyError> {
        meta.scoped()
    }

    fn version(state: &ConversationQuestions) -> i64 {
        state.version
    }

    fn fold(
        state: Option<ConversationQuestions>,
        meta: &EventMeta,
        event: &ConversationEvent,
    ) -> Result<ConversationQuestions, Refusal> {
        let mut state = state.unwrap_or_default();
        let rows = &mut state.rows;
        let by_question = |rows: &mut Vec<QuestionRow>, id: uuid::Uuid| {
            rows.iter_mut()
                .position(|r| r.question_id == id)
                .ok_or_else(|| matches_nothing(event))
        };
        match event.clone() {
            ConversationEvent::QuestionAsked {
                question_id,
                text,
                asked_by,
                channel,
                integration_id,
                redactions,
            } => {
                let escalated = rows.iter().any(|r| r.escalated);
                rows.push(QuestionRow {
                    question_id,
                    asked_at: meta.recorded_at,
                    asked_by,
                    channel,
                    integration_id,
                    normalized: intent::normalize(&text),
                    intent: intent::classify(&text),
                    topic: intent::topic(&text, &[]),
                    question_chars: text.chars().count() as i32,
                    text,
                    status: QuestionStatus::Pending,
                    uncertain: false,
                    latency_ms: None,
                    engine: None,
                    answer_id: None,
                    answer_chars: 0,
                    cited_sources: Vec::new(),
                    feedback: Default::default(),
                    resolved: false,
                    escalated,
                    answer_text: None,
                    redactions: redactions
                        .into_iter()
                        .map(|(rule, n)| (rule.to_string(), n))
                        .collect(),
                    fallback_reason: None,
                    first_chunk_ms: None,
                    answered_at: None,
                    resolved_at: None,
                });
            }
            ConversationEvent::AnswerRecorded {
                question_id,
                answer_id,
                text,
                sources,
                uncertain,
                latency_ms,
                engine,
                redactions,
                fallback_reason,
                first_chunk_ms,
                ..
            } => {
                let i = by_question(rows, question_id)
                    .map_err(|_| Refusal(format!("no question {question_id}")))?;
                let row = &mut rows[i];
                for (rule, n) in redactions {
                    *row.redactions.entry(rule.to_string()).or_insert(0) += n;
                }
                row.answer_text = Some(text.clone());
                row.fallback_reason = fallback_reason;
                row.first_chunk_ms = first_chunk_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
                row.answered_at = Some(meta.recorded_at);
                let urls: Vec<String> = sources.into_iter().map(|s| s.url).collect();
                row.status = QuestionStatus::Answered;
                row.uncertain = uncertain;
                row.latency_ms = Some(i64::try_from(latency_ms).unwrap_or(i64::MAX));
                row.engine = Some(engine);
                row.answer_id = Some(answer_id);
                row.answer_chars = text.chars().count() as i32;
                row.topic = intent::topic(&row.text, &urls);
                row.cited_sources = urls;
            }
            ConversationEvent::AnswerFailed { question_id, .. } => {
                let i = by_question(rows, question_id)?;
                rows[i].status = QuestionStatus::Failed;
                rows[i].answered_at = Some(meta.recorded_at);
            }
            ConversationEvent::QuestionBlocked { question_id, .. } => {
                let i = by_question(rows, question_id)?;
                rows[i].status = QuestionStatus::Blocked;
                rows[i].answered_at = Some(meta.recorded_at);
            }
            ConversationEvent::AnswerWithheld {
                question_id,
                rule,
                engine,
                latency_ms,
            } => {
                let i = by_question(rows, question_id)?;
                let row = &mut rows[i];
                row.status = QuestionStatus::Withheld;
                row.engine = Some(engine);
                row.latency_ms = Some(i64::try_from(latency_ms).unwrap_or(i64::MAX));
                *row.redactions.entry(rule.to_string()).or_insert(0) += 1;
                row.answered_at = Some(meta.recorded_at);
            }
            ConversationEvent::FeedbackGiven {
                answer_id,
                user_id,
                feedback,
            }
            | ConversationEvent::FeedbackChanged {
                answer_id,
                user_id,
                feedback,
                ..
            } => {
                let row = rows
                    .iter_mut()
                    .find(|r| r.answer_id == Some(answer_id))
                    .ok_or_else(|| matches_nothing(event))?;
                row.feedback
                    .insert(user_id, (feedback.reaction, feedback.reasons));
            }
            ConversationEvent::ConversationResolved { .. } => {
                if rows.is_empty() {
                    return Err(matches_nothing(event));
                }
                rows.iter_mut().for_each(|r| {
                    r.resolved = true;
                    r.resolved_at = Some(meta.recorded_at);
                });
            }
            ConversationEvent::ConversationEscalated { .. } => {
                if rows.is_empty() {
                    return Err(matches_nothing(event));
                }
                rows.iter_mut().for_each(|r| r.escalated = true);
            }
        }
        state.version = meta.sequence;
        Ok(state)
    }

    async fn load(
        conn: &mut PgConnection,
        key: &ScopedId,
    ) -> Result<Option<ConversationQuestions>, ApplyError> {
        Ok(super::storage::load(conn, key).await?)
    }

    async fn save(
        conn: &mut PgConnection,
        key: &ScopedId,
        state: &ConversationQuestions,
    ) -> Result<(), ApplyError> {
        super::storage::save(conn, key, state).await
    }
}

#[cfg(test)]
mod tests {
    use domain::conversation::{DownvoteReason, Feedback, Reaction};
    use domain::engine::CitedSource;
    use uuid::Uuid;

    use super::*;
    use crate::event::testing::event;
    use crate::intent::Intent;
    use crate::read_model::fold_all;

    const ID: &str = "acme/0191e4c2-0000-7000-8000-000000000003";

    fn c(e: ConversationEvent) -> AnyEvent {
        AnyEvent::Conversation(e)
    }

    fn vote(user: &str, reaction: Reaction, reasons: Vec<DownvoteReason>) -> AnyEvent {
        c(ConversationEvent::FeedbackGiven {
            answer_id: Uuid::from_u128(10),
            user_id: user.into(),
            feedback: Feedback {
                reaction,
                reasons,
                comment: None,
            },
        })
    }

    #[test]
    fn questions_fold_their_outcome_feedback_and_conversation_fate() {
        let q = Uuid::from_u128(1);
        let events = [
            event(
                ID,
                1,
                0,
                c(ConversationEvent::QuestionAsked {
                    question_id: q,
                    text: "The export fails with an error".into(),
                    asked_by: "alice".into(),
                    channel: "slack".into(),
                    integration_id: None,
                    redactions: Default::default(),
                }),
            ),
            event(
                ID,
                2,
                1,
                c(ConversationEvent::AnswerRecorded {
                    question_id: q,
                    answer_id: Uuid::from_u128(10),
                    text: "Retry.".into(),
                    sources: vec![CitedSource {
                        url: "https://docs.acme.example/export".into(),
                        title: None,
                    }],
                    uncertain: false,
                    latency_ms: 250,
                    engine: "local".into(),
                    engine_answer_id: "e".into(),
                    engine_thread_id: None,
                    redactions: Default::default(),
                    fallback_reason: None,
                    first_chunk_ms: None,
                }),
            ),
            event(
                ID,
                3,
                2,
                vote("bob", Reaction::Downvote, vec![DownvoteReason::Incorrect]),
            ),
            event(ID, 4, 3, vote("carol", Reaction::Upvote, vec![])),
            event(ID, 5, 4, vote("bob", Reaction::Upvote, vec![])),
            event(
                ID,
                6,
                5,
                c(ConversationEvent::ConversationEscalated {
                    by: "bob".into(),
                    reason: None,
                }),
            ),
        ];
        let state = fold_all::<Questions>(&events).unwrap().unwrap();
        assert_eq!(state.version, 6);
        let row = &state.rows[0];
        assert_eq!(row.intent, Intent::Troubleshooting);
        assert_eq!(row.status, QuestionStatus::Answered);
        assert_eq!(row.latency_ms, Some(250));
        assert_eq!(row.cited_sources, ["https://docs.acme.example/export"]);
        assert_eq!(
            (row.upvotes(), row.downvotes()),
            (2, 0),
            "bob changed his mind"
        );
        assert!(row.downvote_reasons().is_empty());
        assert!(row.escalated && !row.resolved);
        assert_eq!(row.question_chars, 30);
    }

    #[test]
    fn an_event_for_nothing_in_the_conversation_is_refused() {
        let err = fold_all::<Questions>(&[event(ID, 1, 0, vote("bob", Reaction::Upvote, vec![]))])
            .unwrap_err();
        assert!(err.0.contains("matches nothing"), "{err}");
    }
}
