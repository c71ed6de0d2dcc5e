use std::sync::Arc;
use tracing::Instrument;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, EventStore};
use domain::account::{Account, AccountCommand};
use domain::conversation::{Conversation, ConversationCommand, ConversationEvent};
use domain::engine::{ChunkSink, FailureKind};
use domain::knowledge_source::{KnowledgeSource, SourceCommand};
use domain::tenant::{Tenant, TenantCommand};
use domain::{Action, DomainError, ScopedId, TenantId};
use event_store::{EventMetadata, PgEventRepository, TenantPool};
use uuid::Uuid;

use crate::answering::{Answering, AnsweringSettings, Asker, Engines, Gates};
use crate::error::CommandError;
use crate::flags::TenantFlags;
use crate::idempotency::{Claim, IdempotencySettings, IdempotencyStore, Settled};
use crate::outcome::{AnswerStatus, CommandOutcome, DescribeOutcome};
use crate::{Clock, CommandContext};

type Store<A> = PersistedEventStore<PgEventRepository, A>;

/// A question as the caller sends it; the bus adds ids, the asking user and the tenant's engine
/// settings.
#[derive(Debug, Clone)]
pub struct AskQuestion {
    pub text: String,
    pub channel: String,
    pub integration_id: Option<String>,
}

/// What running a command produced.
struct Ran<A: Aggregate, P> {
    outcome: CommandOutcome,
    /// The events stored, with their sequences (empty for a replay).
    events: Vec<(u64, A::Event)>,
    /// What `peek` saw of the aggregate before the command (`None` for a replay).
    peeked: Option<P>,
}

/// The sequence and stored (screened) text of the question a command recorded.
fn asked_text(events: &[(u64, ConversationEvent)]) -> Option<(u64, String)> {
    events.iter().find_map(|(seq, e)| match e {
        ConversationEvent::QuestionAsked { text, .. } => Some((*seq, text.clone())),
        _ => None,
    })
}

pub struct CommandBus {
    tenants: Store<Tenant>,
    conversations: Store<Conversation>,
    sources: Store<KnowledgeSource>,
    accounts: Store<Account>,
    answering: Answering,
    flags: Arc<TenantFlags>,
    idempotency: IdempotencyStore,
    clock: Arc<dyn Clock>,
    metrics: Arc<crate::metrics::BusMetrics>,
    trace_context: Option<TraceContext>,
}

/// The W3C `traceparent` of the current span, when tracing is on: stored with each event so
/// the relay and the projections continue the request's trace. The service provides it (the
/// command side knows no tracing backend).
pub type TraceContext = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Conversations and sources live under their tenant (`domain::ScopedId`), so one tenant can
/// never address another's aggregates.
fn scoped(ctx: &CommandContext, id: Uuid) -> String {
    ctx.tenant_id.scope(id).to_string()
}

/// The id a client sees: the UUID of a scoped aggregate, the tenant id of a tenant.
fn public_id(aggregate_id: &str) -> String {
    ScopedId::parse(aggregate_id).map_or_else(|_| aggregate_id.to_string(), |s| s.id.to_string())
}

fn authorize(ctx: &CommandContext, action: Action) -> Result<(), CommandError> {
    if ctx.role.may(action) {
        Ok(())
    } else {
        Err(CommandError::Forbidden {
            role: ctx.role.to_string(),
            action: match action {
                Action::Ask => "ask questions",
                Action::GiveFeedback => "give feedback",
                Action::ManageSources => "manage knowledge sources",
                Action::AdministerTenant => "administer the tenant",
            },
        })
    }
}

impl CommandBus {
    /// A bus whose commands read and write through the API's tenant-scoped `pool`.
    pub fn new(
        pool: TenantPool,
        engines: Engines,
        answering: AnsweringSettings,
        clock: Arc<dyn Clock>,
        idempotency: IdempotencySettings,
        flag_cache_ttl: std::time::Duration,
    ) -> Self {
        let repo = PgEventRepository::new(pool.clone());
        let flag_repo = repo.clone();
        let flags = Arc::new(TenantFlags::new(
            flag_cache_ttl,
            Arc::new(move |tenant: TenantId| {
                let store: Store<Tenant> = PersistedEventStore::new_event_store(flag_repo.clone());
                Box::pin(async move {
                    match store.load_aggregate(tenant.as_str()).await {
                        Ok(context) => Some(context.aggregate),
                        Err(error) => {
                            tracing::warn!(%error, "flags: the tenant could not be read; defaults apply");
                            None
                        }
                    }
                })
            }),
        ));
        Self {
            flags,
            tenants: PersistedEventStore::new_event_store(repo.clone()),
            conversations: PersistedEventStore::new_event_store(repo.clone()),
            sources: PersistedEventStore::new_event_store(repo.clone()),
            accounts: PersistedEventStore::new_event_store(repo),
            answering: Answering::new(engines, answering),
            idempotency: IdempotencyStore::new(pool, idempotency),
            clock,
            metrics: Arc::new(crate::metrics::BusMetrics::new()),
            trace_context: None,
        }
    }

    /// Stores the current span's trace context with every event (docs/observability.md).
    pub fn with_trace_context(mut self, trace_context: TraceContext) -> Self {
        self.trace_context = Some(trace_context);
        self
    }

    /// The command side's metrics, to register with the service's registry.
    pub fn metrics(&self) -> &crate::metrics::BusMetrics {
        &self.metrics
    }

    pub async fn tenant(
        &self,
        ctx: &CommandContext,
        command: TenantCommand,
    ) -> Result<CommandOutcome, CommandError> {
        authorize(ctx, Action::AdministerTenant)?;
        let changes_flags = matches!(
            command,
            TenantCommand::SetFeatureFlag { .. } | TenantCommand::ClearFeatureFlag { .. }
        );
        let outcome = self
            .run(&self.tenants, &(), ctx, ctx.tenant_id.to_string(), command)
            .await;
        if changes_flags {
            // This instance sees its own change at once; others within the cache's TTL.
            self.flags.invalidate(&ctx.tenant_id);
        }
        outcome
    }

    /// What a sign-in does to the tenant on the signing-in person's behalf: accepting their
    /// invitation, joining by domain. No role is needed (the sign-in flow has verified the
    /// identity and `Tenant::admit` decided); nothing else may be sent this way.
    pub async fn sign_in_membership(
        &self,
        ctx: &CommandContext,
        command: TenantCommand,
    ) -> Result<CommandOutcome, CommandError> {
        if !matches!(
            command,
            TenantCommand::AcceptInvitation { .. } | TenantCommand::Join { .. }
        ) {
            return Err(CommandError::Internal {
                context: "only membership changes of a sign-in go without a role",
                source: "another tenant command was sent as a sign-in's".into(),
            });
        }
        self.run(&self.tenants, &(), ctx, ctx.tenant_id.to_string(), command)
            .await
    }

    /// Records on a person's sign-in record (the identity part of the audit trail). The
    /// sign-in flow and the session routes decide who may; the record itself refuses little.
    pub async fn account(
        &self,
        ctx: &CommandContext,
        account_id: Uuid,
        command: AccountCommand,
    ) -> Result<CommandOutcome, CommandError> {
        self.run(&self.accounts, &(), ctx, scoped(ctx, account_id), command)
            .await
    }

    /// Asks a question: the first of a new conversation, or a follow-up in an existing one.
    ///
    /// Three steps, so that a command the aggregate refuses (a lost concurrency race, a
    /// resolved conversation, a question still pending) never reaches the engine: record the
    /// question (screened by the guardrails), ask the engine outside any aggregate, record the
    /// answer or the failure. With `chunks`, the engine streams into it as the answer arrives.
    pub async fn ask(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        follow_up: bool,
        question: AskQuestion,
        chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Result<CommandOutcome, CommandError> {
        authorize(ctx, Action::Ask)?;
        let tenant = self.active_tenant(ctx).await?;
        let aggregate_id = scoped(ctx, conversation_id);
        let question_id = Uuid::now_v7();
        let command = ConversationCommand::AskQuestion {
            question_id,
            follow_up,
            text: question.text,
            asked_by: ctx.user_id.to_string(),
            channel: question.channel.clone(),
            integration_id: question.integration_id.clone(),
            policy: tenant.answer_policy.guardrails.clone(),
        };
        let ran = self
            .run_peek(
                &self.conversations,
                &(),
                ctx,
                aggregate_id.clone(),
                command,
                |c: &Conversation| c.engine_thread_id.clone(),
            )
            .await?;
        let (Some(thread), Some((asked_seq, text))) = (ran.peeked, asked_text(&ran.events)) else {
            return Ok(ran.outcome); // an idempotent replay: the first request answers
        };
        if ran.outcome.answer.as_ref().map(|a| a.status) != Some(AnswerStatus::Pending) {
            return Ok(ran.outcome); // blocked by a guardrail
        }
        let asker = Asker {
            tenant_id: ctx.tenant_id.as_str(),
            user_id: ctx.user_id.as_str(),
            role: ctx.role.as_str(),
            channel: &question.channel,
            integration_id: question.integration_id,
        };
        let request = self.answering.request(&tenant, asker, text, thread);
        let gates = Gates {
            flags: &self.flags,
            tenant_id: &ctx.tenant_id,
            user: ctx.user_id.as_str(),
        };
        let answered = self.answering.answer(&tenant, gates, request, chunks).await;
        if let (Some(_), Some(failure)) = (&answered.fallback_reason, &answered.engine_failure) {
            self.metrics
                .fallbacks
                .with_label_values(&[failure.kind.as_str()])
                .inc();
        }
        let command = match answered.result {
            Ok(answer) => ConversationCommand::RecordAnswer {
                question_id,
                answer_id: Uuid::now_v7(),
                answer,
                policy: tenant.answer_policy.guardrails.clone(),
                fallback_reason: answered.fallback_reason,
            },
            Err(failure) => ConversationCommand::FailAnswer {
                question_id,
                reason: failure.reason,
                retryable: failure.retryable,
            },
        };
        // The answer belongs to this request, but its recording is not the request itself:
        // it carries no idempotency key (the question's recording settled that).
        let inner = CommandContext {
            idempotency_key: None,
            ..ctx.clone()
        };
        self.record_engine_health(
            &inner,
            &tenant,
            answered.engine_failure.as_ref(),
            answered.kapa_answered,
        )
        .await;
        self.record_answer(&inner, &aggregate_id, asked_seq, &ran.events, command)
            .await
    }

    /// Fails a question whose answer never arrived (the process stopped between asking and
    /// recording). Records nothing when it was answered meanwhile.
    pub async fn fail_interrupted(
        &self,
        ctx: &CommandContext,
        aggregate_id: &str,
        question_id: Uuid,
        asked_seq: u64,
    ) -> Result<CommandOutcome, CommandError> {
        let command = ConversationCommand::FailAnswer {
            question_id,
            reason: "the answer was interrupted before it arrived; ask again".into(),
            retryable: true,
        };
        self.record_answer(ctx, aggregate_id, asked_seq, &[], command)
            .await
    }

    /// Stores the answer (or failure) of the question asked at `asked_seq` (whose events are
    /// `asked`, when the caller has them). Another command on the same conversation may commit
    /// in between (feedback, resolution): that is a concurrency conflict for this append only,
    /// so it reloads and records again.
    async fn record_answer(
        &self,
        ctx: &CommandContext,
        aggregate_id: &str,
        asked_seq: u64,
        asked: &[(u64, ConversationEvent)],
        command: ConversationCommand,
    ) -> Result<CommandOutcome, CommandError> {
        let mut attempt = 0;
        let recorded = loop {
            match self
                .execute(
                    &self.conversations,
                    &(),
                    ctx,
                    aggregate_id,
                    command.clone(),
                    |_| (),
                )
                .await
            {
                Err(CommandError::Concurrency) if attempt < 10 => attempt += 1,
                Err(e) => return Err(e),
                Ok(ran) => break ran,
            }
        };
        if recorded.events.is_empty() || asked.is_empty() {
            // Settled by someone else (the sweeper) or described from its question on: read
            // what is stored.
            return self
                .describe_since::<Conversation>(&self.conversations, aggregate_id, asked_seq)
                .await;
        }
        // The question's and the answer's events are all the outcome needs: no reload.
        let events: Vec<(u64, ConversationEvent)> =
            asked.iter().cloned().chain(recorded.events).collect();
        let (answer, version) = Conversation::answer_outcome(&events)
            .map(|(a, v)| (Some(a), v))
            .unwrap_or((None, recorded.outcome.version));
        Ok(CommandOutcome {
            id: recorded.outcome.id,
            version,
            answer,
        })
    }

    /// Keeps the tenant's record of its engine credentials true: a 401/403 is recorded for its
    /// admin to see; the next answer from Kapa clears it.
    async fn record_engine_health(
        &self,
        ctx: &CommandContext,
        tenant: &Tenant,
        failure: Option<&domain::engine::EngineFailure>,
        kapa_answered: bool,
    ) {
        let command = match failure {
            Some(f) if f.kind == FailureKind::CredentialsRejected => {
                TenantCommand::RecordEngineRejection {
                    reason: f.reason.clone(),
                }
            }
            None if kapa_answered && tenant.engine_problem.is_some() => {
                TenantCommand::RecordEngineRecovery
            }
            _ => return,
        };
        let id = ctx.tenant_id.to_string();
        if let Err(error) = self
            .execute(&self.tenants, &(), ctx, &id, command, |_| ())
            .await
        {
            // The answer matters more than the health note; the next question tries again.
            tracing::warn!(%error, "could not record the engine's verdict on the tenant's credentials");
        }
    }

    /// Feedback, resolution and escalation of a conversation.
    pub async fn conversation(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        command: ConversationCommand,
    ) -> Result<CommandOutcome, CommandError> {
        let action = match command {
            ConversationCommand::GiveFeedback { .. } => Action::GiveFeedback,
            _ => Action::Ask,
        };
        authorize(ctx, action)?;
        if matches!(
            command,
            ConversationCommand::AskQuestion { .. }
                | ConversationCommand::RecordAnswer { .. }
                | ConversationCommand::FailAnswer { .. }
        ) {
            return Err(CommandError::Internal {
                context: "questions and answers go through CommandBus::ask",
                source: "a question or answer command was sent as a plain conversation command"
                    .into(),
            });
        }
        self.active_tenant(ctx).await?;
        self.run(
            &self.conversations,
            &(),
            ctx,
            scoped(ctx, conversation_id),
            command,
        )
        .await
    }

    pub async fn source(
        &self,
        ctx: &CommandContext,
        source_id: Uuid,
        command: SourceCommand,
    ) -> Result<CommandOutcome, CommandError> {
        authorize(ctx, Action::ManageSources)?;
        self.active_tenant(ctx).await?;
        self.run(&self.sources, &(), ctx, scoped(ctx, source_id), command)
            .await
    }

    /// The tenant's current state and version, straight from its events (for the checks
    /// before a command; readers use the tenants read model).
    async fn tenant_state(&self, tenant_id: &TenantId) -> Result<(Tenant, u64), CommandError> {
        let context = self
            .tenants
            .load_aggregate(tenant_id.as_str())
            .await
            .map_err(CommandError::from_aggregate)?;
        Ok((context.aggregate, context.current_sequence as u64))
    }

    /// The tenant as its events say it is now, for workers that act for it outside a request
    /// (feedback forwarding, source syncs).
    pub async fn tenant_snapshot(&self, tenant_id: &TenantId) -> Result<Tenant, CommandError> {
        Ok(self.tenant_state(tenant_id).await?.0)
    }

    /// The feature flags, for handlers and workers.
    pub fn flags(&self) -> Arc<TenantFlags> {
        self.flags.clone()
    }

    /// The pseudonym the engine knows a user of a tenant by.
    pub fn pseudonym(&self, tenant_id: &TenantId, user_id: &str) -> String {
        self.answering.pseudonym(tenant_id.as_str(), user_id)
    }

    /// A knowledge source's current state and version, straight from its events.
    pub async fn source_state(
        &self,
        tenant_id: &TenantId,
        source_id: Uuid,
    ) -> Result<(KnowledgeSource, u64), CommandError> {
        let context = self
            .sources
            .load_aggregate(&tenant_id.scope(source_id).to_string())
            .await
            .map_err(CommandError::from_aggregate)?;
        Ok((context.aggregate, context.current_sequence as u64))
    }

    async fn active_tenant(&self, ctx: &CommandContext) -> Result<Tenant, CommandError> {
        let (tenant, _) = self.tenant_state(&ctx.tenant_id).await?;
        tenant
            .ensure_accepts_commands()
            .map_err(|e| CommandError::Rejected(e.into()))?;
        Ok(tenant)
    }

    async fn run<A>(
        &self,
        store: &Store<A>,
        services: &A::Services,
        ctx: &CommandContext,
        aggregate_id: String,
        command: A::Command,
    ) -> Result<CommandOutcome, CommandError>
    where
        A: Aggregate<Error = DomainError> + DescribeOutcome,
    {
        let ran = self
            .run_peek(store, services, ctx, aggregate_id, command, |_| ())
            .await?;
        Ok(ran.outcome)
    }

    /// `run`, also returning the stored events and what `peek` saw of the aggregate before the
    /// command (both only for a first execution, not for an idempotent replay).
    #[tracing::instrument(
        skip_all,
        fields(aggregate_type = A::TYPE, aggregate_id = %aggregate_id, tenant = %ctx.tenant_id,
               user = %ctx.user_id, correlation_id = %ctx.correlation_id),
        err(level = tracing::Level::INFO)
    )]
    async fn run_peek<A, P>(
        &self,
        store: &Store<A>,
        services: &A::Services,
        ctx: &CommandContext,
        aggregate_id: String,
        command: A::Command,
        peek: impl FnOnce(&A) -> P,
    ) -> Result<Ran<A, P>, CommandError>
    where
        A: Aggregate<Error = DomainError> + DescribeOutcome,
    {
        let key = ctx.idempotency_key.as_deref();
        if let Some(key) = key {
            if let Claim::Replay(settled) = self.idempotency.claim(ctx, key).await? {
                self.metrics.replays.with_label_values(&[A::TYPE]).inc();
                return Ok(Ran {
                    outcome: self.replay(store, settled).await?,
                    events: Vec::new(),
                    peeked: None,
                });
            }
        }
        let result = self
            .execute(store, services, ctx, &aggregate_id, command, peek)
            .await;
        if let Some(key) = key {
            match &result {
                Ok(ran) if !ran.events.is_empty() => {} // settled with the events, in their transaction
                Ok(Ran { outcome, .. }) => {
                    self.idempotency
                        .settle_unchanged(ctx, key, A::TYPE, &aggregate_id, outcome.version)
                        .await?
                }
                Err(CommandError::Rejected(rejection)) => {
                    self.idempotency
                        .settle_rejected(ctx, key, rejection)
                        .await?
                }
                Err(_) => self.idempotency.release(ctx, key).await,
            }
        }
        result
    }

    /// Loads the aggregate, lets it decide, stores what it decided. Returns the outcome and
    /// whether any event was stored.
    async fn execute<A, P>(
        &self,
        store: &Store<A>,
        services: &A::Services,
        ctx: &CommandContext,
        aggregate_id: &str,
        command: A::Command,
        peek: impl FnOnce(&A) -> P,
    ) -> Result<Ran<A, P>, CommandError>
    where
        A: Aggregate<Error = DomainError> + DescribeOutcome,
    {
        let started = std::time::Instant::now();
        let mut context = store
            .load_aggregate(aggregate_id)
            .instrument(tracing::info_span!(
                "event_store.load",
                aggregate_type = A::TYPE
            ))
            .await
            .map_err(CommandError::from_aggregate)?;
        self.metrics
            .store_seconds
            .with_label_values(&["load"])
            .observe(started.elapsed().as_secs_f64());
        let version_before = context.current_sequence as u64;
        let peeked = peek(context.aggregate());
        let sink = EventSink::<A>::default();
        context
            .aggregate()
            .handle(command, services, &sink)
            .await
            .map_err(|e| CommandError::Rejected(e.into()))?;
        let events = sink.collect().await;
        let append = tracing::info_span!(
            "event_store.append",
            aggregate_type = A::TYPE,
            events = events.len()
        );
        let metadata = EventMetadata {
            tenant_id: ctx.tenant_id.to_string(),
            user_id: ctx.user_id.to_string(),
            role: ctx.role.to_string(),
            correlation_id: ctx.correlation_id.clone(),
            causation_id: ctx.causation_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
            occurred_at: Some(self.clock.now()),
            // The events carry the append's own span: the relay's publish is its child.
            traceparent: append.in_scope(|| self.trace_context.as_ref().and_then(|f| f())),
        };
        let started = std::time::Instant::now();
        let committed = store
            .commit(events, context, metadata.into_map())
            .instrument(append)
            .await;
        self.metrics
            .store_seconds
            .with_label_values(&["commit"])
            .observe(started.elapsed().as_secs_f64());
        let committed = committed.map_err(|e| {
            let e = CommandError::from_aggregate(e);
            if matches!(e, CommandError::Concurrency) {
                self.metrics.conflicts.with_label_values(&[A::TYPE]).inc();
            }
            e
        })?;
        self.metrics
            .appended
            .with_label_values(&[A::TYPE])
            .inc_by(committed.len() as u64);
        let events: Vec<(u64, A::Event)> = committed
            .iter()
            .map(|e| (e.sequence as u64, e.payload.clone()))
            .collect();
        let answer = A::answer_outcome(&events);
        let outcome = CommandOutcome {
            id: public_id(aggregate_id),
            version: answer.as_ref().map_or_else(
                || events.last().map_or(version_before, |(seq, _)| *seq),
                |(_, seq)| *seq,
            ),
            answer: answer.map(|(a, _)| a),
        };
        Ok(Ran {
            outcome,
            events,
            peeked: Some(peeked),
        })
    }

    /// The outcome of the command whose first event has `first_sequence`, from what is stored
    /// now (later commands' events are ignored by `answer_outcome`).
    async fn describe_since<A>(
        &self,
        store: &Store<A>,
        aggregate_id: &str,
        first_sequence: u64,
    ) -> Result<CommandOutcome, CommandError>
    where
        A: Aggregate<Error = DomainError> + DescribeOutcome,
    {
        let events = store
            .load_events(aggregate_id)
            .await
            .map_err(CommandError::from_aggregate)?;
        let last = events.last().map_or(0, |e| e.sequence as u64);
        let events: Vec<(u64, A::Event)> = events
            .into_iter()
            .filter(|e| e.sequence as u64 >= first_sequence)
            .map(|e| (e.sequence as u64, e.payload))
            .collect();
        let answer = A::answer_outcome(&events);
        Ok(CommandOutcome {
            id: public_id(aggregate_id),
            version: answer.as_ref().map_or(last, |(_, seq)| *seq),
            answer: answer.map(|(a, _)| a),
        })
    }

    /// Answers a retried request from what its first attempt stored.
    async fn replay<A>(
        &self,
        store: &Store<A>,
        settled: Settled,
    ) -> Result<CommandOutcome, CommandError>
    where
        A: Aggregate<Error = DomainError> + DescribeOutcome,
    {
        match settled {
            Settled::Rejected(rejection) => Err(CommandError::Rejected(rejection)),
            Settled::Committed {
                aggregate_type,
                aggregate_id,
                first_sequence,
                last_sequence,
            } => {
                if aggregate_type != A::TYPE {
                    return Err(CommandError::IdempotencyKeyReused);
                }
                // A question is settled with its recording, before the engine answers: a
                // retry waits for the answer as it would for an unsettled key.
                let (wait, poll) = self.idempotency.waiting();
                let deadline = tokio::time::Instant::now() + wait;
                let described = loop {
                    let described = self
                        .describe_since(store, &aggregate_id, first_sequence)
                        .await?;
                    let pending = described
                        .answer
                        .as_ref()
                        .is_some_and(|a| a.status == AnswerStatus::Pending);
                    if !pending {
                        break described;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(CommandError::IdempotencyKeyInProgress);
                    }
                    tokio::time::sleep(poll.max(std::time::Duration::from_millis(20))).await;
                };
                Ok(CommandOutcome {
                    // Without an answer the command's own last event is its version.
                    version: if described.answer.is_some() {
                        described.version
                    } else {
                        last_sequence
                    },
                    ..described
                })
            }
        }
    }
}
