//! `answers seed`: a realistic data set written through the normal command path (the command
//! bus, its rules, its events), laid over past days by the injectable clock, so analytics have
//! something real to show on a fresh install. Answers come from a synthetic engine (there is no
//! Kapa.ai here): some uncertain, some failing, most citing a page.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use commands::{
    AskQuestion, CommandBus, CommandContext, CommandError, Engines, IdempotencySettings,
};
use domain::conversation::{ConversationCommand, DownvoteReason, Feedback, Reaction};
use domain::engine::{
    AnswerEngine, AnswerRequest, ChunkSink, CitedSource, EngineAnswer, EngineFailure, FailureKind,
};
use domain::knowledge_source::{SourceCommand, SourceKind};
use domain::tenant::TenantCommand;
use domain::Role;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::write_stdout;
use answers_api::{startup, Settings};

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[arg(long, default_value_t = 3)]
    pub tenants: usize,
    /// Spread the questions over this many past days, up to now.
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// Questions in all (spread over the tenants).
    #[arg(long, default_value_t = 5000)]
    pub questions: usize,
    /// The same seed writes the same data set.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub(crate) const TOPICS: [&str; 8] = [
    "export",
    "billing",
    "sso",
    "webhooks",
    "api",
    "permissions",
    "integrations",
    "reports",
];
pub(crate) const QUESTIONS: [&str; 10] = [
    "How do I set up {t}?",
    "How to configure {t} for my team",
    "{t} fails with error 500",
    "{t} is not working since the last update",
    "What is the limit for {t}?",
    "Which plans include {t}?",
    "Is there an API for {t}?",
    "Walk me through {t} step by step",
    "Why can't I see {t} in the dashboard?",
    "{t} quantum edge case",
];

/// Deterministic synthetic answers: cites the topic's page, unsure about edge cases, fails now
/// and then.
struct SeedEngine;

#[async_trait]
impl AnswerEngine for SeedEngine {
    async fn answer(
        &self,
        r: AnswerRequest,
        _chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Result<EngineAnswer, EngineFailure> {
        let q = r.question.to_lowercase();
        let h = q
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        if h % 40 == 0 {
            return Err(EngineFailure::new(
                FailureKind::Unavailable,
                "upstream timeout",
            ));
        }
        let topic = TOPICS.iter().find(|t| q.contains(*t)).unwrap_or(&"docs");
        Ok(EngineAnswer {
            text: format!(
                "Here is how {topic} works: open Settings, then {topic}, and follow the guide."
            ),
            sources: vec![CitedSource {
                url: format!("https://docs.example.test/{topic}/guide"),
                title: Some(format!("{topic} guide")),
            }],
            uncertain: q.contains("quantum") || h % 9 == 0,
            latency_ms: 400 + h % 2600,
            engine: "seed".into(),
            engine_answer_id: format!("{h:x}"),
            engine_thread_id: None,
            first_chunk_ms: None,
        })
    }
}

fn ctx(tenant: &str, user: &str, role: Role) -> anyhow::Result<CommandContext> {
    Ok(CommandContext {
        tenant_id: domain::TenantId::parse(tenant)?,
        user_id: domain::UserId::parse(user)?,
        role,
        correlation_id: format!("seed-{}", Uuid::now_v7()),
        causation_id: None,
        idempotency_key: None,
        request_fingerprint: String::new(),
    })
}

/// A domain rejection (say, the tenant exists from an earlier seed) is fine; anything else stops.
fn tolerate<T>(r: Result<T, CommandError>) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(CommandError::Rejected(_)) | Err(CommandError::Concurrency) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn run(settings: Settings, args: SeedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tenants > 0 && args.days > 0,
        "--tenants and --days must be positive"
    );
    let pool = startup::connect(&settings.database).await?;
    event_store::migrate(&pool).await?;
    // Commands go through the API's role, as the service sends them.
    let tenant_pool = startup::connect_api(&settings.database).await?;
    let now = Utc::now();
    let start = now - Duration::days(args.days);
    let clock = commands::ManualClock::at(start);
    // Seeded tenants get synthetic answers only: no library fallback (the read model may
    // not exist yet), no Kapa.
    let engines = Engines {
        kapa: None,
        default: Some(Arc::new(SeedEngine)),
        library: None,
    };
    let bus = CommandBus::new(
        tenant_pool,
        engines,
        settings.answering(),
        clock.clone(),
        IdempotencySettings::default(),
        std::time::Duration::from_secs(1),
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let set = |t: DateTime<Utc>| clock.set(t);

    let tenants: Vec<String> = (1..=args.tenants).map(|t| format!("demo-{t}")).collect();
    for tenant in &tenants {
        set(start);
        let admin = ctx(tenant, "admin", Role::Admin)?;
        tolerate(
            bus.tenant(
                &admin,
                TenantCommand::Create {
                    name: format!("Demo company {tenant}"),
                    admin_user_id: "admin".into(),
                    admin_email: None,
                },
            )
            .await,
        )?;
        tolerate(
            bus.tenant(
                &admin,
                TenantCommand::SetKapaSettings {
                    project_id: format!("{tenant}-project"),
                    integration_id: Some("web-widget".into()),
                    api_key_ref: format!(
                        "env://KAPA_{}_API_KEY",
                        tenant.to_uppercase().replace('-', "_")
                    ),
                    share_user_email: false,
                    share_company_name: false,
                },
            )
            .await,
        )?;
        for i in 0..6 {
            let role = if i < 4 { Role::Operator } else { Role::Viewer };
            tolerate(
                bus.tenant(
                    &admin,
                    TenantCommand::InviteMember {
                        user_id: format!("user{i}"),
                        email: Some(format!("user{i}@{tenant}.example")),
                        role,
                    },
                )
                .await,
            )?;
        }
        for (i, topic) in TOPICS.iter().take(4).enumerate() {
            let source = Uuid::now_v7();
            let kind = if i % 2 == 0 {
                SourceKind::Docs
            } else {
                SourceKind::Website
            };
            tolerate(
                bus.source(
                    &admin,
                    source,
                    SourceCommand::Add {
                        kind,
                        name: format!("{topic} docs"),
                        location: format!("https://docs.example.test/{topic}"),
                        settings: Default::default(),
                    },
                )
                .await,
            )?;
            for day in (0..args.days).step_by(7) {
                set(start + Duration::days(day) + Duration::hours(2));
                tolerate(
                    bus.source(
                        &admin,
                        source,
                        SourceCommand::RequestSync {
                            requested_by: "admin".into(),
                        },
                    )
                    .await,
                )?;
                let sync_id = Uuid::now_v7();
                tolerate(
                    bus.source(&admin, source, SourceCommand::StartSync { sync_id })
                        .await,
                )?;
                let done = if rng.gen_bool(0.9) {
                    SourceCommand::CompleteSync {
                        sync_id,
                        document_count: rng.gen_range(50..2000),
                    }
                } else {
                    SourceCommand::FailSync {
                        sync_id,
                        error: "the site answered 503".into(),
                    }
                };
                tolerate(bus.source(&admin, source, done).await)?;
            }
        }
    }

    let span = (args.days * 86_400) as f64;
    let (mut answered, mut rated) = (0usize, 0usize);
    for q in 0..args.questions {
        let at = start
            + Duration::seconds(
                (span * (q as f64 + rng.gen::<f64>()) / args.questions as f64) as i64,
            );
        set(at.min(now));
        let tenant = &tenants[q % tenants.len()];
        let user = format!("user{}", rng.gen_range(0..4));
        let asker = ctx(tenant, &user, Role::Operator)?;
        let topic = TOPICS[rng.gen_range(0..TOPICS.len())];
        let text = QUESTIONS[rng.gen_range(0..QUESTIONS.len())].replace("{t}", topic);
        let channel = ["web", "slack", "zendesk"][rng.gen_range(0..3)];
        let conversation = Uuid::now_v7();
        let Some(outcome) = tolerate(
            bus.ask(
                &asker,
                conversation,
                false,
                AskQuestion {
                    text,
                    channel: channel.into(),
                    integration_id: (channel == "web").then(|| "web-widget".to_string()),
                },
                None,
            )
            .await,
        )?
        else {
            continue;
        };
        let Some(answer) = outcome.answer.and_then(|a| a.answer_id) else {
            continue;
        };
        answered += 1;
        set((at + Duration::minutes(2)).min(now));
        if rng.gen_bool(0.45) {
            rated += 1;
            let feedback = if rng.gen_bool(0.7) {
                Feedback {
                    reaction: Reaction::Upvote,
                    reasons: vec![],
                    comment: None,
                }
            } else {
                let reason = [
                    DownvoteReason::Incorrect,
                    DownvoteReason::Irrelevant,
                    DownvoteReason::Unaddressed,
                ][rng.gen_range(0..3)];
                Feedback {
                    reaction: Reaction::Downvote,
                    reasons: vec![reason],
                    comment: None,
                }
            };
            tolerate(
                bus.conversation(
                    &asker,
                    conversation,
                    ConversationCommand::GiveFeedback {
                        answer_id: answer,
                        user_id: user.clone(),
                        feedback,
                    },
                )
                .await,
            )?;
        }
        if rng.gen_bool(0.08) {
            tolerate(
                bus.conversation(
                    &asker,
                    conversation,
                    ConversationCommand::Escalate {
                        by: user.clone(),
                        reason: Some("needs a human".into()),
                    },
                )
                .await,
            )?;
        } else if rng.gen_bool(0.5) {
            tolerate(
                bus.conversation(
                    &asker,
                    conversation,
                    ConversationCommand::Resolve { by: user.clone() },
                )
                .await,
            )?;
        }
    }
    write_stdout(&format!(
        "seeded {} tenants ({}) over {} days: {} questions, {} answered, {} rated\n\
         tokens: answers token --tenant {} --role admin --user admin\n",
        tenants.len(),
        tenants.join(", "),
        args.days,
        args.questions,
        answered,
        rated,
        tenants[0]
    ))
}
