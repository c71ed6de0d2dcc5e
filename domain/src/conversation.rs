//! A conversation is one thread of questions and answers, with the feedback given on them.
use crate::code::Code;
use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{CitedSource, EngineAnswer};
use crate::guardrail::{self, GuardrailPolicy, GuardrailRule};
use crate::{domain_event, validate, DomainError};

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

/// What can be asked of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    /// Ask a question (the first, or a follow-up).
    AskQuestion {
        /// Ids are chosen by the caller (the command side) so that handling stays deterministic.
        question_id: Uuid,
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
        /// The tenant's guardrail policy at the time of asking (looked up by the command side).
        policy: GuardrailPolicy,
    },
    /// Record what the engine (or the fallback) answered to the pending question. Recording for
    /// a question that is no longer pending records nothing (a late answer after the sweeper
    /// failed it, or a retried record).
    RecordAnswer {
        /// The question answered.
        question_id: Uuid,
        /// The id the answer gets.
        answer_id: Uuid,
        /// What the engine answered.
        answer: EngineAnswer,
        /// The tenant's guardrail policy, for the answer's own screening.
        policy: GuardrailPolicy,
        /// Why the answer came from the fallback rather than the tenant's engine, if it did.
        fallback_reason: Option<String>,
    },
    /// Record that the pending question got no answer.
    FailAnswer {
        /// The question not answered.
        question_id: Uuid,
        /// What went wrong.
        reason: String,
        /// Whether asking again may work.
        retryable: bool,
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
        /// How many findings the guardrails redacted from the text, per rule (never the text).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        redactions: BTreeMap<GuardrailRule, u32>,
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
        /// How many findings the guardrails redacted from the answer, per rule.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        redactions: BTreeMap<GuardrailRule, u32>,
        /// Why the fallback answered instead of the tenant's engine, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback_reason: Option<String>,
        /// For streamed answers: how long until the first chunk arrived.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_chunk_ms: Option<u64>,
    },
    /// An answer arrived but a guardrail kept it from the user (the tenant's output policy).
    AnswerWithheld {
        /// The question whose answer was withheld.
        question_id: Uuid,
        /// The guardrail rule the answer broke.
        rule: GuardrailRule,
        /// Which engine produced it.
        engine: String,
        /// How long the engine took.
        latency_ms: u64,
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
    AnswerWithheld,
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
    /// The question waiting for its answer, if any: asked, neither answered, failed nor
    /// blocked yet. At most one at a time, so a follow-up always knows the engine's thread.
    pub pending: Option<Uuid>,
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
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ConversationCommand::AskQuestion {
                question_id,
                follow_up,
                text,
                asked_by,
                channel,
                integration_id,
                policy,
            } => {
                if follow_up {
                    self.ensure_open()?;
                } else if self.status != ConversationStatus::NotStarted {
                    return Err(DomainError::new(
                        Code::ConversationExists,
                        "a conversation with this id has already started",
                    ));
                }
                if self.pending.is_some() {
                    return Err(DomainError::new(
                        Code::QuestionPending,
                        "the previous question is still being answered; ask again when it is",
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
                // Only the screened text is stored: what a guardrail redacted never reaches
                // the event store, the engine or a read model.
                let screened = guardrail::screen_question(&text, &policy);
                sink.write(
                    ConversationEvent::QuestionAsked {
                        question_id,
                        text: screened.text,
                        asked_by,
                        channel,
                        integration_id,
                        redactions: screened.redactions,
                    },
                    self,
                )
                .await;
                if let Some(violation) = screened.blocked {
                    sink.write(
                        ConversationEvent::QuestionBlocked {
                            question_id,
                            rule: violation.rule.to_string(),
                            reason: violation.reason,
                        },
                        self,
                    )
                    .await;
                }
            }
            ConversationCommand::RecordAnswer {
                question_id,
                answer_id,
                answer,
                policy,
                fallback_reason,
            } => {
                if self.pending != Some(question_id) {
                    return Ok(());
                }
                let screened = guardrail::screen_answer(&answer.text, &policy);
                let event = match screened.blocked {
                    Some(violation) => ConversationEvent::AnswerWithheld {
                        question_id,
                        rule: violation.rule,
                        engine: answer.engine,
                        latency_ms: answer.latency_ms,
                    },
                    None => ConversationEvent::AnswerRecorded {
                        question_id,
                        answer_id,
                        text: screened.text,
                        sources: answer.sources,
                        uncertain: answer.uncertain,
                        latency_ms: answer.latency_ms,
                        engine: answer.engine,
                        engine_answer_id: answer.engine_answer_id,
                        engine_thread_id: answer.engine_thread_id,
                        redactions: screened.redactions,
                        fallback_reason,
                        first_chunk_ms: answer.first_chunk_ms,
                    },
                };
                sink.write(event, self).await;
            }
            ConversationCommand::FailAnswer {
                question_id,
                reason,
                retryable,
            } => {
                if self.pending != Some(question_id) {
                    return Ok(());
                }
                sink.write(
                    ConversationEvent::AnswerFailed {
                        question_id,
                        reason,
                        retryable,
                    },
                    self,
                )
                .await;
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
            ConversationEvent::QuestionAsked { question_id, .. } => {
                self.status = ConversationStatus::Open;
                self.questions += 1;
                self.pending = Some(question_id);
            }
            ConversationEvent::AnswerRecorded {
                question_id,
                answer_id,
                engine_thread_id,
                ..
            } => {
                self.pending = None;
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
            ConversationEvent::AnswerFailed { .. }
            | ConversationEvent::QuestionBlocked { .. }
            | ConversationEvent::AnswerWithheld { .. } => self.pending = None,
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
    use crate::guardrail::OutputAction;
    use cqrs_es::test::TestFramework;

    fn framework() -> TestFramework<Conversation> {
        TestFramework::<Conversation>::with(())
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
            first_chunk_ms: None,
        }
    }

    const Q: Uuid = Uuid::from_u128(1);
    const A: Uuid = Uuid::from_u128(2);

    fn ask(text: &str, follow_up: bool) -> ConversationCommand {
        ConversationCommand::AskQuestion {
            question_id: Q,
            follow_up,
            text: text.into(),
            asked_by: "alice".into(),
            channel: "web".into(),
            integration_id: None,
            policy: GuardrailPolicy::default(),
        }
    }

    fn record(answer: EngineAnswer, policy: GuardrailPolicy) -> ConversationCommand {
        ConversationCommand::RecordAnswer {
            question_id: Q,
            answer_id: A,
            answer,
            policy,
            fallback_reason: None,
        }
    }

    fn asked() -> ConversationEvent {
        ConversationEvent::QuestionAsked {
            question_id: Q,
            text: "How do I export?".into(),
            asked_by: "alice".into(),
            channel: "web".into(),
            integration_id: None,
            redactions: BTreeMap::new(),
        }
    }

    fn recorded() -> ConversationEvent {
        let a = answer();
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
            redactions: BTreeMap::new(),
            fallback_reason: None,
            first_chunk_ms: None,
        }
    }

    fn asked_and_answered() -> Vec<ConversationEvent> {
        vec![asked(), recorded()]
    }

    fn upvote() -> Feedback {
        Feedback {
            reaction: Reaction::Upvote,
            reasons: vec![],
            comment: None,
        }
    }

    #[test]
    fn asking_records_the_question_only_and_leaves_it_pending() {
        framework()
            .given_no_previous_events()
            .when(ask(" How do I export? ", false))
            .then_expect_events(vec![asked()]);
        let err = framework()
            .given(vec![asked()])
            .when(ask("And then?", true))
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::QuestionPending);
    }

    #[test]
    fn the_answer_is_recorded_once_for_the_pending_question() {
        framework()
            .given(vec![asked()])
            .when(record(answer(), GuardrailPolicy::default()))
            .then_expect_events(vec![recorded()]);
        // A late or repeated record for a question no longer pending records nothing.
        framework()
            .given(asked_and_answered())
            .when(record(answer(), GuardrailPolicy::default()))
            .then_expect_events(vec![]);
        framework()
            .given(asked_and_answered())
            .when(ConversationCommand::FailAnswer {
                question_id: Q,
                reason: "interrupted".into(),
                retryable: true,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_engine_failure_is_recorded_with_its_retryability() {
        framework()
            .given(vec![asked()])
            .when(ConversationCommand::FailAnswer {
                question_id: Q,
                reason: "timeout".into(),
                retryable: true,
            })
            .then_expect_events(vec![ConversationEvent::AnswerFailed {
                question_id: Q,
                reason: "timeout".into(),
                retryable: true,
            }]);
    }

    #[test]
    fn a_card_number_is_blocked_and_never_stored() {
        let events = framework()
            .given_no_previous_events()
            .when(ask("why was 4111 1111 1111 1111 declined", false))
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            &events[1],
            ConversationEvent::QuestionBlocked { rule, .. } if rule == "payment_card_number"
        ));
        let stored = serde_json::to_string(&events).unwrap();
        assert!(!stored.contains("4111"), "{stored}");
    }

    #[test]
    fn personal_data_is_redacted_before_it_is_stored() {
        let events = framework()
            .given_no_previous_events()
            .when(ask("I am jane@acme.com, how do I export?", false))
            .inspect_result()
            .unwrap();
        let ConversationEvent::QuestionAsked {
            text, redactions, ..
        } = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!(text, "I am [redacted:email], how do I export?");
        assert_eq!(redactions.get(&GuardrailRule::Email), Some(&1));
    }

    #[test]
    fn an_answer_that_leaks_is_redacted_or_withheld_per_policy() {
        let leaky = EngineAnswer {
            text: "Ask bob@acme.com.".into(),
            ..answer()
        };
        let events = framework()
            .given(vec![asked()])
            .when(record(leaky.clone(), GuardrailPolicy::default()))
            .inspect_result()
            .unwrap();
        assert!(matches!(&events[0],
            ConversationEvent::AnswerRecorded { text, redactions, .. }
                if text == "Ask [redacted:email]." && redactions[&GuardrailRule::Email] == 1));
        let withhold = GuardrailPolicy {
            output: Some(OutputAction::Withhold),
            ..Default::default()
        };
        framework()
            .given(vec![asked()])
            .when(record(leaky, withhold))
            .then_expect_events(vec![ConversationEvent::AnswerWithheld {
                question_id: Q,
                rule: GuardrailRule::Email,
                engine: "scripted".into(),
                latency_ms: 120,
            }]);
    }

    #[test]
    fn events_stored_before_the_guardrail_fields_still_load() {
        let old = serde_json::json!({"QuestionAsked": {"question_id": Q, "text": "t",
            "asked_by": "a", "channel": "web", "integration_id": null}});
        let event: ConversationEvent = serde_json::from_value(old).unwrap();
        assert!(
            matches!(event, ConversationEvent::QuestionAsked { redactions, .. } if redactions.is_empty())
        );
    }

    #[test]
    fn empty_and_oversized_questions_are_invalid() {
        for text in ["   ".to_string(), "x".repeat(MAX_QUESTION_CHARS + 1)] {
            let err = framework()
                .given_no_previous_events()
                .when(ask(&text, false))
                .inspect_result()
                .unwrap_err();
            assert_eq!(err.code, Code::InvalidQuestion);
        }
    }

    #[test]
    fn a_follow_up_needs_an_open_conversation() {
        let err = framework()
            .given_no_previous_events()
            .when(ask("And then?", true))
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ConversationNotFound);
        let mut resolved = asked_and_answered();
        resolved.push(ConversationEvent::ConversationResolved { by: "alice".into() });
        let err = framework()
            .given(resolved)
            .when(ask("And then?", true))
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ConversationResolved);
    }

    #[test]
    fn no_feedback_on_an_answer_that_does_not_exist() {
        let err = framework()
            .given(asked_and_answered())
            .when(ConversationCommand::GiveFeedback {
                answer_id: Uuid::from_u128(99),
                user_id: "bob".into(),
                feedback: upvote(),
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::AnswerNotFound);
    }

    #[test]
    fn one_reaction_per_user_changeable_and_repeats_record_nothing() {
        let mut given = asked_and_answered();
        given.push(ConversationEvent::FeedbackGiven {
            answer_id: A,
            user_id: "bob".into(),
            feedback: upvote(),
        });
        framework()
            .given(given.clone())
            .when(ConversationCommand::GiveFeedback {
                answer_id: A,
                user_id: "bob".into(),
                feedback: upvote(),
            })
            .then_expect_events(vec![]);
        let downvote = Feedback {
            reaction: Reaction::Downvote,
            reasons: vec![DownvoteReason::Irrelevant, DownvoteReason::Incorrect],
            comment: Some("wrong product".into()),
        };
        framework()
            .given(given)
            .when(ConversationCommand::GiveFeedback {
                answer_id: A,
                user_id: "bob".into(),
                feedback: downvote,
            })
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

    #[test]
    fn reasons_belong_to_downvotes() {
        let err = framework()
            .given(asked_and_answered())
            .when(ConversationCommand::GiveFeedback {
                answer_id: A,
                user_id: "bob".into(),
                feedback: Feedback {
                    reaction: Reaction::Upvote,
                    reasons: vec![DownvoteReason::Incorrect],
                    comment: None,
                },
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ReasonsNeedDownvote);
    }

    #[test]
    fn escalation_happens_once_and_not_after_resolution() {
        let mut given = asked_and_answered();
        given.push(ConversationEvent::ConversationEscalated {
            by: "alice".into(),
            reason: None,
        });
        let err = framework()
            .given(given)
            .when(ConversationCommand::Escalate {
                by: "alice".into(),
                reason: None,
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::ConversationEscalated);
        framework()
            .given(asked_and_answered())
            .when(ConversationCommand::Resolve { by: "alice".into() })
            .then_expect_events(vec![ConversationEvent::ConversationResolved {
                by: "alice".into(),
            }]);
    }
}
