//! A conversation is one thread of questions and answers, with the feedback given on them.
use crate::code::Code;
use std::collections::BTreeMap;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{AnswerEngine, AnswerRequest, CitedSource, EngineContext};
use crate::{domain_event, guardrail, validate, DomainError};

/// The longest question accepted, in characters.
pub const MAX_QUESTION_CHARS: usize = 4_000;
/// The longest feedback comment accepted, in characters.
pub const MAX_COMMENT_CHARS: usize = 2_000;

crate::text_enum! {
    /// A user's reaction to an answer.
    pub enum Reaction {
        Upvote = "upvote",
        Downvote = "downvote",
    }
}

crate::text_enum! {
    /// Why an answer was downvoted.
    pub enum DownvoteReason {
        Incorrect = "incorrect",
        Irrelevant = "irrelevant",
        Unaddressed = "unaddressed",
    }
}

/// A user's reaction to an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// Up or down.
    pub reaction: Reaction,
    /// Why it was downvoted (only with a downvote).
    pub reasons: Vec<DownvoteReason>,
    /// Free text, up to `MAX_COMMENT_CHARS`.
    pub comment: Option<String>,
}

/// Where a conversation stands on the command side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// No question asked yet.
    #[default]
    NotStarted,
    /// Questions may be asked.
    Open,
    /// Closed; no more questions.
    Resolved,
}

/// What a conversation needs from outside to decide.
#[derive(Clone)]
pub struct ConversationServices {
    /// The answer engine that answers its questions.
    pub engine: Arc<dyn AnswerEngine>,
}

/// What can be asked of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    /// Ask a question (the first, or a follow-up).
    AskQuestion {
        /// Ids are chosen by the caller (the command side) so that handling stays deterministic.
        question_id: Uuid,
        /// The id its answer will have.
        answer_id: Uuid,
        /// A follow-up needs an existing conversation; a first question starts one.
        follow_up: bool,
        /// The question.
        text: String,
        /// The asking user.
        asked_by: String,
        /// Where it was asked (`web`, `slack`...).
        channel: String,
        /// The Kapa integration it came through, if any.
        integration_id: Option<String>,
        /// The tenant asking (the engine answers from its knowledge).
        tenant_id: String,
        /// The tenant's engine settings at the time of asking.
        engine: EngineContext,
    },
    /// Give or change a user's feedback on an answer.
    GiveFeedback {
        /// The answer rated.
        answer_id: Uuid,
        /// The rating user.
        user_id: String,
        /// The reaction, reasons and comment.
        feedback: Feedback,
    },
    /// Mark the conversation resolved.
    Resolve {
        /// The resolving user.
        by: String,
    },
    /// Hand the conversation to a person.
    Escalate {
        /// The escalating user.
        by: String,
        /// Why, if given.
        reason: Option<String>,
    },
}

/// What happened to a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    /// A question was asked.
    QuestionAsked {
        /// The question's id.
        question_id: Uuid,
        /// The question, trimmed.
        text: String,
        /// The asking user.
        asked_by: String,
        /// Where it was asked.
        channel: String,
        /// The Kapa integration it came through, if any.
        integration_id: Option<String>,
    },
    /// The engine answered a question.
    AnswerRecorded {
        /// The question answered.
        question_id: Uuid,
        /// The answer's id.
        answer_id: Uuid,
        /// The answer.
        text: String,
        /// The knowledge the answer cites.
        sources: Vec<CitedSource>,
        /// The engine was not sure of it.
        uncertain: bool,
        /// How long the engine took.
        latency_ms: u64,
        /// Which engine answered (`kapa`, `local`...).
        engine: String,
        /// The engine's own id of the answer.
        engine_answer_id: String,
        /// The engine's thread, for follow-ups.
        engine_thread_id: Option<String>,
    },
    /// The engine could not answer a question.
    AnswerFailed {
        /// The question not answered.
        question_id: Uuid,
        /// What went wrong.
        reason: String,
        /// Whether asking again may work.
        retryable: bool,
    },
    /// A guardrail kept a question from the engine.
    QuestionBlocked {
        /// The question blocked.
        question_id: Uuid,
        /// The guardrail rule that blocked it.
        rule: String,
        /// Why, for people.
        reason: String,
    },
    /// A user rated an answer for the first time.
    FeedbackGiven {
        /// The answer rated.
        answer_id: Uuid,
        /// The rating user.
        user_id: String,
        /// The reaction, reasons and comment.
        feedback: Feedback,
    },
    /// A user changed their rating of an answer.
    FeedbackChanged {
        /// The answer rated.
        answer_id: Uuid,
        /// The rating user.
        user_id: String,
        /// The rating before.
        previous: Feedback,
        /// The rating now.
        feedback: Feedback,
    },
    /// The conversation was resolved.
    ConversationResolved {
        /// The resolving user.
        by: String,
    },
    /// The conversation was handed to a person.
    ConversationEscalated {
        /// The escalating user.
        by: String,
        /// Why, if given.
        reason: Option<String>,
    },
}

domain_event!(ConversationEvent {
    QuestionAsked,
    AnswerRecorded,
    AnswerFailed,
    QuestionBlocked,
    FeedbackGiven,
    FeedbackChanged,
    ConversationResolved,
    ConversationEscalated,
});

/// What the aggregate remembers of an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerState {
    /// The question it answers.
    pub question_id: Uuid,
    /// One reaction per user, changeable.
    pub feedback: BTreeMap<String, Feedback>,
}

/// The conversation aggregate: what its rules need to decide.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Where it stands.
    pub status: ConversationStatus,
    /// Whether it was handed to a person.
    pub escalated: bool,
    /// How many questions were asked.
    pub questions: u32,
    /// The engine's thread, for follow-ups.
    pub engine_thread_id: Option<String>,
    /// Its answers by id, with the feedback given on them.
    pub answers: BTreeMap<Uuid, AnswerState>,
}

impl Conversation {
    fn ensure_started(&self) -> Result<(), DomainError> {
        if self.status == ConversationStatus::NotStarted {
            return Err(DomainError::new(
                Code::ConversationNotFound,
                "no such conversation",
            ));
        }
        Ok(())
    }

    fn ensure_open(&self) -> Result<(), DomainError> {
        self.ensure_started()?;
        if self.status == ConversationStatus::Resolved {
            return Err(DomainError::new(
                Code::ConversationResolved,
                "the conversation is resolved",
            ));
        }
        Ok(())
    }

    fn feedback_events(
        &self,
        answer_id: Uuid,
        user_id: String,
        feedback: Feedback,
    ) -> Result<Vec<ConversationEvent>, DomainError> {
        self.ensure_started()?;
        let answer = self.answers.get(&answer_id).ok_or_else(|| {
            DomainError::new(
                Code::AnswerNotFound,
                "this conversation has no answer with that id",
            )
        })?;
        let user_id = validate::identifier("user id", &user_id)?;
        let mut reasons = feedback.reasons;
        reasons.sort();
        reasons.dedup();
        if feedback.reaction == Reaction::Upvote && !reasons.is_empty() {
            return Err(DomainError::new(
                Code::ReasonsNeedDownvote,
                "reasons (incorrect, irrelevant, unaddressed) describe a downvote",
            ));
        }
        let comment = validate::optional_text(
            "comment",
            Code::InvalidComment,
            feedback.comment.as_deref(),
            MAX_COMMENT_CHARS,
        )?;
        let feedback = Feedback {
            reaction: feedback.reaction,
            reasons,
            comment,
        };
        Ok(match answer.feedback.get(&user_id) {
            // Giving the same feedback again changes nothing and records nothing.
            Some(previous) if *previous == feedback => vec![],
            Some(previous) => vec![ConversationEvent::FeedbackChanged {
                answer_id,
                user_id,
                previous: previous.clone(),
                feedback,
            }],
            None => vec![ConversationEvent::FeedbackGiven {
                answer_id,
                user_id,
                feedback,
            }],
        })
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = DomainError;
    type Services = ConversationServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ConversationCommand::AskQuestion {
                question_id,
                answer_id,
                follow_up,
                text,
                asked_by,
                channel,
                integration_id,
                tenant_id,
                engine,
            } => {
                if follow_up {
                    self.ensure_open()?;
                } else if self.status != ConversationStatus::NotStarted {
                    return Err(DomainError::new(
                        Code::ConversationExists,
                        "a conversation with this id has already started",
                    ));
                }
                let text =
                    validate::text("question", Code::InvalidQuestion, &text, MAX_QUESTION_CHARS)?;
                let channel = validate::identifier("channel", &channel)?;
                let asked_by = validate::identifier("user id", &asked_by)?;
                let integration_id = match integration_id.as_deref() {
                    Some(id) if !id.trim().is_empty() => {
                        Some(validate::identifier("integration id", id)?)
                    }
                    _ => None,
                };
                sink.write(
                    ConversationEvent::QuestionAsked {
                        question_id,
                        text: text.clone(),
                        asked_by: asked_by.clone(),
                        channel,
                        integration_id,
                    },
                    self,
                )
                .await;
                if let Some(violation) = guardrail::check(&text) {
                    sink.write(
                        ConversationEvent::QuestionBlocked {
                            question_id,
                            rule: violation.rule.to_string(),
                            reason: violation.reason.to_string(),
                        },
                        self,
                    )
                    .await;
                    return Ok(());
                }
                let request = AnswerRequest {
                    tenant_id,
                    question: text,
                    engine_thread_id: self.engine_thread_id.clone(),
                    user_ref: asked_by,
                    context: engine,
                };
                let event = match services.engine.answer(request).await {
                    Ok(answer) => ConversationEvent::AnswerRecorded {
                        question_id,
                        answer_id,
                        text: answer.text,
                        sources: answer.sources,
                        uncertain: answer.uncertain,
                        latency_ms: answer.latency_ms,
                        engine: answer.engine,
                        engine_answer_id: answer.engine_answer_id,
                        engine_thread_id: answer.engine_thread_id,
                    },
                    Err(failure) => ConversationEvent::AnswerFailed {
                        question_id,
                        reason: failure.reason,
                        retryable: failure.retryable,
                    },
                };
                sink.write(event, self).await;
            }
            ConversationCommand::GiveFeedback {
                answer_id,
                user_id,
                feedback,
            } => {
                for event in self.feedback_events(answer_id, user_id, feedback)? {
                    sink.write(event, self).await;
                }
            }
            ConversationCommand::Resolve { by } => {
                self.ensure_open()?;
                sink.write(ConversationEvent::ConversationResolved { by }, self)
                    .await;
            }
            ConversationCommand::Escalate { by, reason } => {
                self.ensure_open()?;
                if self.escalated {
                    return Err(DomainError::new(
                        Code::ConversationEscalated,
                        "the conversation has already been escalated",
                    ));
                }
                let reason = validate::optional_text(
                    "reason",
                    Code::InvalidReason,
                    reason.as_deref(),
                    1000,
                )?;
                sink.write(
                    ConversationEvent::ConversationEscalated { by, reason },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ConversationEvent::QuestionAsked { .. } => {
                self.status = ConversationStatus::Open;
                self.questions += 1;
            }
            ConversationEvent::AnswerRecorded {
                question_id,
                answer_id,
                engine_thread_id,
                ..
            } => {
                if engine_thread_id.is_some() {
                    self.engine_thread_id = engine_thread_id;
                }
                self.answers.insert(
                    answer_id,
                    AnswerState {
                        question_id,
                        feedback: BTreeMap::new(),
                    },
                );
            }
            ConversationEvent::AnswerFailed { .. } | ConversationEvent::QuestionBlocked { .. } => {}
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
                if let Some(answer) = self.answers.get_mut(&answer_id) {
                    answer.feedback.insert(user_id, feedback);
                }
            }
            ConversationEvent::ConversationResolved { .. } => {
                self.status = ConversationStatus::Resolved
            }
            ConversationEvent::ConversationEscalated { .. } => self.escalated = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineAnswer, EngineFailure};
    use async_trait::async_trait;
    use cqrs_es::test::TestFramework;

    /// Answers every question the same way, or fails, as told.
    struct ScriptedEngine(Result<EngineAnswer, EngineFailure>);

    #[async_trait]
    impl AnswerEngine for ScriptedEngine {
        async fn answer(&self, _request: AnswerRequest) -> Result<EngineAnswer, EngineFailure> {
            self.0.clone()
        }
    }

    fn services(result: Result<EngineAnswer, EngineFailure>) -> ConversationServices {
        ConversationServices {
            engine: Arc::new(ScriptedEngine(result)),
        }
    }

    fn answer() -> EngineAnswer {
        EngineAnswer {
            text: "Use the export button.".into(),
            sources: vec![CitedSource {
                url: "https://docs.acme.test/export".into(),
                title: Some("Export".into()),
            }],
            uncertain: false,
            latency_ms: 120,
            engine: "scripted".into(),
            engine_answer_id: "qa-1".into(),
            engine_thread_id: Some("th-1".into()),
        }
    }

    const Q: Uuid = Uuid::from_u128(1);
    const A: Uuid = Uuid::from_u128(2);

    fn ask(text: &str, follow_up: bool) -> ConversationCommand {
        ConversationCommand::AskQuestion {
            question_id: Q,
            answer_id: A,
            follow_up,
            text: text.into(),
            asked_by: "alice".into(),
            channel: "web".into(),
            integration_id: None,
            tenant_id: "acme".into(),
            engine: EngineContext::default(),
        }
    }

    fn asked_and_answered() -> Vec<ConversationEvent> {
        let a = answer();
        vec![
            ConversationEvent::QuestionAsked {
                question_id: Q,
                text: "How do I export?".into(),
                asked_by: "alice".into(),
                channel: "web".into(),
                integration_id: None,
            },
            ConversationEvent::AnswerRecorded {
                question_id: Q,
                answer_id: A,
                text: a.text,
                sources: a.sources,
                uncertain: false,
                latency_ms: 120,
                engine: a.engine,
                engine_answer_id: a.engine_answer_id,
                engine_thread_id: a.engine_thread_id,
            },
        ]
    }

    fn upvote() -> Feedback {
        Feedback {
            reaction: Reaction::Upvote,
            reasons: vec![],
            comment: None,
        }
    }

    #[tokio::test]
    async fn asking_records_the_question_and_the_engines_answer() {
        TestFramework::<Conversation>::with(services(Ok(answer())))
            .given_no_previous_events()
            .when_async(ask(" How do I export? ", false))
            .await
            .then_expect_events(asked_and_answered());
    }

    #[tokio::test]
    async fn an_engine_failure_is_recorded_with_its_retryability() {
        let events = TestFramework::<Conversation>::with(services(Err(EngineFailure {
            reason: "timeout".into(),
            retryable: true,
        })))
        .given_no_previous_events()
        .when_async(ask("How do I export?", false))
        .await
        .inspect_result()
        .unwrap();
        assert_eq!(
            events[1],
            ConversationEvent::AnswerFailed {
                question_id: Q,
                reason: "timeout".into(),
                retryable: true
            }
        );
    }

    #[tokio::test]
    async fn a_card_number_is_blocked_before_the_engine_sees_it() {
        let events = TestFramework::<Conversation>::with(services(Ok(answer())))
            .given_no_previous_events()
            .when_async(ask("why was 4111 1111 1111 1111 declined", false))
            .await
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            &events[1],
            ConversationEvent::QuestionBlocked { rule, .. } if rule == "payment_card_number"
        ));
    }

    #[tokio::test]
    async fn empty_and_oversized_questions_are_invalid() {
        for text in ["   ".to_string(), "x".repeat(MAX_QUESTION_CHARS + 1)] {
            let err = TestFramework::<Conversation>::with(services(Ok(answer())))
                .given_no_previous_events()
                .when_async(ask(&text, false))
                .await
                .inspect_result()
                .unwrap_err();
            assert_eq!(err.code, Code::InvalidQuestion);
        }
    }

    #[tokio::test]
    async fn a_follow_up_needs_an_open_conversation() {
        let err = TestFramework::<Conversation>::with(services(Ok(answer())))
            .given_no_previous_events()
            .when_async(ask("And then?", true))
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ConversationNotFound);
        let mut resolved = asked_and_answered();
        resolved.push(ConversationEvent::ConversationResolved { by: "alice".into() });
        let err = TestFramework::<Conversation>::with(services(Ok(answer())))
            .given(resolved)
            .when_async(ask("And then?", true))
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ConversationResolved);
    }

    #[tokio::test]
    async fn no_feedback_on_an_answer_that_does_not_exist() {
        let err = TestFramework::<Conversation>::with(services(Ok(answer())))
            .given(asked_and_answered())
            .when_async(ConversationCommand::GiveFeedback {
                answer_id: Uuid::from_u128(99),
                user_id: "bob".into(),
                feedback: upvote(),
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::AnswerNotFound);
    }

    #[tokio::test]
    async fn one_reaction_per_user_changeable_and_repeats_record_nothing() {
        let mut given = asked_and_answered();
        given.push(ConversationEvent::FeedbackGiven {
            answer_id: A,
            user_id: "bob".into(),
            feedback: upvote(),
        });
        TestFramework::<Conversation>::with(services(Ok(answer())))
            .given(given.clone())
            .when_async(ConversationCommand::GiveFeedback {
                answer_id: A,
                user_id: "bob".into(),
                feedback: upvote(),
            })
            .await
            .then_expect_events(vec![]);
        let downvote = Feedback {
            reaction: Reaction::Downvote,
            reasons: vec![DownvoteReason::Irrelevant, DownvoteReason::Incorrect],
            comment: Some("wrong product".into()),
        };
        TestFramework::<Conversation>::with(services(Ok(answer())))
            .given(given)
            .when_async(ConversationCommand::GiveFeedback {
                answer_id: A,
                user_id: "bob".into(),
                feedback: downvote,
            })
            .await
            .then_expect_events(vec![ConversationEvent::FeedbackChanged {
                answer_id: A,
                user_id: "bob".into(),
                previous: upvote(),
                feedback: Feedback {
                    reaction: Reaction::Downvote,
                    reasons: vec![DownvoteReason::Incorrect, DownvoteReason::Irrelevant],
                    comment: Some("wrong product".into()),
                },
            }]);
    }

    #[tokio::test]
    async fn reasons_belong_to_downvotes() {
        let err = TestFramework::<Conversation>::with(services(Ok(answer())))
            .given(asked_and_answered())
            .when_async(ConversationCommand::GiveFeedback {
                answer_id: A,
                user_id: "bob".into(),
                feedback: Feedback {
                    reaction: Reaction::Upvote,
                    reasons: vec![DownvoteReason::Incorrect],
                    comment: None,
                },
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ReasonsNeedDownvote);
    }

    #[tokio::test]
    async fn escalation_happens_once_and_not_after_resolution() {
        let mut given = asked_and_answered();
        given.push(ConversationEvent::ConversationEscalated {
            by: "alice".into(),
            reason: None,
        });
        let err = TestFramework::<Conversation>::with(services(Ok(answer())))
            .given(given)
            .when_async(ConversationCommand::Escalate {
                by: "alice".into(),
                reason: None,
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ConversationEscalated);
        TestFramework::<Conversation>::with(services(Ok(answer())))
            .given(asked_and_answered())
            .when_async(ConversationCommand::Resolve { by: "alice".into() })
            .await
            .then_expect_events(vec![ConversationEvent::ConversationResolved {
                by: "alice".into(),
            }]);
    }
}
