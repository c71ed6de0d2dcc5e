use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, EventStore};
use domain::conversation::{Conversation, ConversationCommand, ConversationServices};
use domain::engine::AnswerEngine;
use domain::knowledge_source::{KnowledgeSource, SourceCommand};
use domain::tenant::{Tenant, TenantCommand};
use domain::{Action, DomainError, ScopedId, TenantId};
use event_store::{EventMetadata, PgEventRepository};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::CommandError;
use crate::idempotency::{Claim, IdempotencySettings, IdempotencyStore, Settled};
use crate::outcome::{CommandOutcome, DescribeOutcome};
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

pub struct CommandBus {
    tenants: Store<Tenant>,
    conversations: Store<Conversation>,
    sources: Store<KnowledgeSource>,
    conversation_services: ConversationServices,
    idempotency: IdempotencyStore,
    clock: Arc<dyn Clock>,
}

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
    pub fn new(
        pool: PgPool,
        engine: Arc<dyn AnswerEngine>,
        clock: Arc<dyn Clock>,
        idempotency: IdempotencySettings,
    ) -> Self {
        let repo = PgEventRepository::new(pool.clone());
        Self {
            tenants: PersistedEventStore::new_event_store(repo.clone()),
            conversations: PersistedEventStore::new_event_store(repo.clone()),
            sources: PersistedEventStore::new_event_store(repo),
            conversation_services: ConversationServices { engine },
            idempotency: IdempotencyStore::new(pool, idempotency),
            clock,
        }
    }

    pub async fn tenant(
        &self,
        ctx: &CommandContext,
        command: TenantCommand,
    ) -> Result<CommandOutcome, CommandError> {
        authorize(ctx, Action::AdministerTenant)?;
        self.run(&self.tenants, &(), ctx, ctx.tenant_id.to_string(), command)
            .await
    }

    /// Asks a question: the first of a new conversation, or a follow-up in an existing one.
    pub async fn ask(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        follow_up: bool,
        question: AskQuestion,
    ) -> Result<CommandOutcome, CommandError> {
        authorize(ctx, Action::Ask)?;
        let tenant = self.active_tenant(ctx).await?;
        let command = ConversationCommand::AskQuestion {
            question_id: Uuid::now_v7(),
            answer_id: Uuid::now_v7(),
            follow_up,
            text: question.text,
            asked_by: ctx.user_id.to_string(),
            channel: question.channel,
            integration_id: question.integration_id,
            tenant_id: ctx.tenant_id.to_string(),
            engine: tenant.engine_context(),
        };
        self.run(
            &self.conversations,
            &self.conversation_services,
            ctx,
            scoped(ctx, conversation_id),
            command,
        )
        .await
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
        self.active_tenant(ctx).await?;
        self.run(
            &self.conversations,
            &self.conversation_services,
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

    #[tracing::instrument(
        skip_all,
        fields(aggregate_type = A::TYPE, aggregate_id = %aggregate_id, tenant = %ctx.tenant_id,
               user = %ctx.user_id, correlation_id = %ctx.correlation_id),
        err(level = tracing::Level::INFO)
    )]
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
        let key = ctx.idempotency_key.as_deref();
        if let Some(key) = key {
            if let Claim::Replay(settled) = self.idempotency.claim(ctx, key).await? {
                return self.replay(store, settled).await;
            }
        }
        let result = self
            .execute(store, services, ctx, &aggregate_id, command)
            .await;
        if let Some(key) = key {
            match &result {
                Ok((_, true)) => {} // settled with the events, in their transaction
                Ok((outcome, false)) => {
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
        result.map(|(outcome, _)| outcome)
    }

    /// Loads the aggregate, lets it decide, stores what it decided. Returns the outcome and
    /// whether any event was stored.
    async fn execute<A>(
        &self,
        store: &Store<A>,
        services: &A::Services,
        ctx: &CommandContext,
        aggregate_id: &str,
        command: A::Command,
    ) -> Result<(CommandOutcome, bool), CommandError>
    where
        A: Aggregate<Error = DomainError> + DescribeOutcome,
    {
        let mut context = store
            .load_aggregate(aggregate_id)
            .await
            .map_err(CommandError::from_aggregate)?;
        let version_before = context.current_sequence as u64;
        let sink = EventSink::<A>::default();
        context
            .aggregate()
            .handle(command, services, &sink)
            .await
            .map_err(|e| CommandError::Rejected(e.into()))?;
        let events = sink.collect().await;
        let metadata = EventMetadata {
            tenant_id: ctx.tenant_id.to_string(),
            user_id: ctx.user_id.to_string(),
            role: ctx.role.to_string(),
            correlation_id: ctx.correlation_id.clone(),
            causation_id: ctx.causation_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
            occurred_at: Some(self.clock.now()),
        };
        let committed = store
            .commit(events, context, metadata.into_map())
            .await
            .map_err(CommandError::from_aggregate)?;
        let payloads: Vec<A::Event> = committed.iter().map(|e| e.payload.clone()).collect();
        let outcome = CommandOutcome {
            id: public_id(aggregate_id),
            version: committed
                .last()
                .map_or(version_before, |e| e.sequence as u64),
            answer: A::answer_outcome(&payloads),
        };
        Ok((outcome, !committed.is_empty()))
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
                let events = store
                    .load_events(&aggregate_id)
                    .await
                    .map_err(CommandError::from_aggregate)?;
                let payloads: Vec<A::Event> = events
                    .into_iter()
                    .filter(|e| (first_sequence..=last_sequence).contains(&(e.sequence as u64)))
                    .map(|e| e.payload)
                    .collect();
                Ok(CommandOutcome {
                    id: public_id(&aggregate_id),
                    version: last_sequence,
                    answer: A::answer_outcome(&payloads),
                })
            }
        }
    }
}
