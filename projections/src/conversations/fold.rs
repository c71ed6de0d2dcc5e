//! The conversations read model as a pure fold.
use async_trait::async_trait;
use domain::conversation::ConversationEvent;
use domain::{AggregateType, AnyEvent, ScopedId};
use sqlx::PgConnection;

use super::{
    AnswerView, ConversationDocument, ConversationRow, ConversationState, FeedbackView,
    QuestionStatus, QuestionView, SourceRef,
};
use crate::event::EventMeta;
use crate::projection::ApplyError;
use crate::read_model::{ReadModel, Refusal};

/// The conversations read model.
pub struct Conversations;

fn question(doc: &mut ConversationDocument, id: uuid::Uuid) -> Result<&mut QuestionView, Refusal> {
    doc.questions
        .iter_mut()
        .find(|q| q.question_id == id)
        .ok_or_else(|| Refusal(format!("no question {id} in this conversation")))
}

#[async_trait]
impl ReadModel for Conversations {
    const NAME: &'static str = "conversations";
    const AGGREGATE_TYPES: &'static [AggregateType] = &[AggregateType::Conversation];
    const TABLES: &'static [&'static str] = &["rm_conversations"];
    type Event = ConversationEvent;
    type State = ConversationRow;
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

    fn version(state: &ConversationRow) -> i64 {
        state.version
    }

    fn fold(
        state: Option<ConversationRow>,
        meta: &EventMeta,
        event: &ConversationEvent,
    ) -> Result<ConversationRow, Refusal> {
        let at = meta.recorded_at;
        let mut row = match (state, event) {
            (Some(row), _) => row,
            (
                None,
                ConversationEvent::QuestionAsked {
                    asked_by, channel, ..
                },
            ) => ConversationRow {
                status: ConversationState::Open,
                escalated: false,
                started_by: asked_by.clone(),
                channel: channel.clone(),
                last_question: String::new(),
                created_at: at,
                updated_at: at,
                version: 0,
                last_position: 0,
                document: ConversationDocument::default(),
            },
            (None, other) => {
                return Err(Refusal(format!(
                    "{} for a conversation that never started",
                    cqrs_es::DomainEvent::event_type(other)
                )))
            }
        };
        let doc = &mut row.document;
        match event.clone() {
            ConversationEvent::QuestionAsked {
                question_id,
                text,
                asked_by,
                channel,
                integration_id,
                redactions,
            } => {
                row.last_question = text.clone();
                doc.questions.push(QuestionView {
                    question_id,
                    text,
                    asked_by,
                    channel,
                    integration_id,
                    asked_at: at,
                    status: QuestionStatus::Pending,
                    answer: None,
                    reason: None,
                    retryable: None,
                    redactions: redactions
                        .into_iter()
                        .map(|(rule, n)| (rule.to_string(), n))
                        .collect(),
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
                ..
            } => {
                let q = question(doc, question_id)?;
                q.status = QuestionStatus::Answered;
                q.answer = Some(AnswerView {
                    answer_id,
                    text,
                    sources: sources
                        .into_iter()
                        .map(|s| SourceRef {
                            url: s.url,
                            title: s.title,
                        })
                        .collect(),
                    uncertain,
                    latency_ms,
                    engine,
                    answered_at: at,
                    feedback: Default::default(),
                });
            }
            ConversationEvent::AnswerFailed {
                question_id,
                reason,
                retryable,
            } => {
                let q = question(doc, question_id)?;
                q.status = QuestionStatus::Failed;
                q.reason = Some(reason);
                q.retryable = Some(retryable);
            }
            ConversationEvent::QuestionBlocked {
                question_id, rule, ..
            } => {
                let q = question(doc, question_id)?;
                q.status = QuestionStatus::Blocked;
                q.reason = Some(rule);
            }
            ConversationEvent::AnswerWithheld {
                question_id, rule, ..
            } => {
                let q = question(doc, question_id)?;
                q.status = QuestionStatus::Withheld;
                q.reason = Some(rule.to_string());
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
                let answer = doc
                    .questions
                    .iter_mut()
                    .filter_map(|q| q.answer.as_mut())
                    .find(|a| a.answer_id == answer_id)
                    .ok_or_else(|| {
                        Refusal(format!("no answer {answer_id} in this conversation"))
                    })?;
                answer.feedback.insert(
                    user_id,
                    FeedbackView {
                        reaction: feedback.reaction,
                        reasons: feedback.reasons,
                        comment: feedback.comment,
                        at,
                    },
                );
            }
            ConversationEvent::ConversationResolved { by } => {
                row.status = ConversationState::Resolved;
                doc.resolved_by = Some(by);
            }
            ConversationEvent::ConversationEscalated { by, reason } => {
                row.escalated = true;
                doc.escalated_by = Some(by);
                doc.escalation_reason = reason;
            }
        }
        row.updated_at = at;
        row.version = meta.sequence;
        row.last_position = meta.position;
        Ok(row)
    }

    async fn load(
        conn: &mut PgConnection,
        key: &ScopedId,
    ) -> Result<Option<ConversationRow>, ApplyError> {
        Ok(super::storage::load(conn, key).await?)
    }

    async fn save(
        conn: &mut PgConnection,
        key: &ScopedId,
        state: &ConversationRow,
    ) -> Result<(), ApplyError> {
        super::storage::save(conn, key, state).await
    }

    async fn load_many(
        conn: &mut PgConnection,
        keys: &[ScopedId],
    ) -> Result<Vec<(ScopedId, ConversationRow)>, ApplyError> {
        super::storage::load_many(conn, keys).await
    }

    async fn save_many(
        conn: &mut PgConnection,
        parts: &[(&ScopedId, &ConversationRow)],
    ) -> Result<(), ApplyError> {
        super::storage::save_many(conn, parts).await
    }
}

#[cfg(test)]
mod tests {
    use domain::conversation::{Feedback, Reaction};
    use uuid::Uuid;

    use super::*;
    use crate::event::testing::event;
    use crate::read_model::fold_all;

    const ID: &str = "acme/0191e4c2-0000-7000-8000-000000000001";

    fn asked(q: u128, text: &str) -> AnyEvent {
        AnyEvent::Conversation(ConversationEvent::QuestionAsked {
            question_id: Uuid::from_u128(q),
            text: text.into(),
            asked_by: "alice".into(),
            channel: "web".into(),
            integration_id: None,
            redactions: Default::default(),
        })
    }

    fn answered(q: u128, a: u128) -> AnyEvent {
        AnyEvent::Conversation(ConversationEvent::AnswerRecorded {
            question_id: Uuid::from_u128(q),
            answer_id: Uuid::from_u128(a),
            text: "Use the export page.".into(),
            sources: vec![],
            uncertain: true,
            latency_ms: 12,
            engine: "local".into(),
            engine_answer_id: "x".into(),
            engine_thread_id: None,
            redactions: Default::default(),
            fallback_reason: None,
            first_chunk_ms: None,
        })
    }

    fn feedback(a: u128, user: &str, reaction: Reaction) -> AnyEvent {
        AnyEvent::Conversation(ConversationEvent::FeedbackGiven {
            answer_id: Uuid::from_u128(a),
            user_id: user.into(),
            feedback: Feedback {
                reaction,
                reasons: vec![],
                comment: None,
            },
        })
    }

    #[test]
    fn a_conversation_folds_its_questions_answers_feedback_and_fate() {
        let events = [
            event(ID, 1, 0, asked(1, "How do I export?")),
            event(ID, 2, 1, answered(1, 10)),
            event(ID, 3, 2, feedback(10, "bob", Reaction::Upvote)),
            event(ID, 4, 3, feedback(10, "bob", Reaction::Downvote)),
            event(ID, 5, 4, asked(2, "And import?")),
            event(
                ID,
                6,
                5,
                AnyEvent::Conversation(ConversationEvent::ConversationResolved {
                    by: "bob".into(),
                }),
            ),
        ];
        let row = fold_all::<Conversations>(&events).unwrap().unwrap();
        assert_eq!(row.status, ConversationState::Resolved);
        assert_eq!(row.version, 6);
        assert_eq!(row.last_question, "And import?");
        assert_eq!(row.created_at, events[0].meta.recorded_at);
        assert_eq!(row.updated_at, events[5].meta.recorded_at);
        let questions = &row.document.questions;
        assert_eq!(questions.len(), 2);
        assert_eq!(questions[0].status, QuestionStatus::Answered);
        assert_eq!(questions[1].status, QuestionStatus::Pending);
        let answer = questions[0].answer.as_ref().unwrap();
        assert!(answer.uncertain);
        assert_eq!(answer.feedback.len(), 1, "one reaction per user");
        assert_eq!(answer.feedback["bob"].reaction, Reaction::Downvote);
        assert_eq!(row.document.resolved_by.as_deref(), Some("bob"));
    }

    #[test]
    fn events_the_conversation_cannot_hold_are_refused_and_redeliveries_skipped() {
        let started = fold_all::<Conversations>(&[event(ID, 1, 0, asked(1, "Q"))])
            .unwrap()
            .unwrap();
        let meta = event(ID, 2, 1, answered(9, 10)).meta;
        let err = Conversations::fold(
            Some(started.clone()),
            &meta,
            &match answered(9, 10) {
                AnyEvent::Conversation(e) => e,
                _ => unreachable!(),
            },
        )
        .unwrap_err();
        assert!(err.0.contains("no question"), "{err}");
        let orphan =
            fold_all::<Conversations>(&[event(ID, 1, 0, feedback(10, "bob", Reaction::Upvote))]);
        assert!(orphan.unwrap_err().0.contains("never started"));
        // The same event twice folds once.
        let twice = fold_all::<Conversations>(&[
            event(ID, 1, 0, asked(1, "Q")),
            event(ID, 1, 0, asked(1, "Q")),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(twice, started);
    }
}
