//! Kapa as an [`AnswerEngine`]: resolve the tenant's key, take a permit of the tenant's
//! bulkhead, pass the project's circuit breaker, then call Kapa with retries where safe, all
//! inside one total budget.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::engine::{
    AnswerEngine, AnswerRequest, ChunkSink, CitedSource, EngineAnswer, EngineFailure, FailureKind,
};
use secrecy::SecretString;
use secrets::{SecretError, SecretResolver};
use serde::Deserialize;

use crate::client::{
    CallError, ChatAnswer, ChatBody, KapaClient, KapaUser, KapaUserMetadata, Thread,
};
use crate::resilience::{Admission, Backoff, BreakerStatus, Breakers, Bulkheads};

/// The engine name recorded on Kapa's answers.
pub const KAPA_ENGINE: &str = "kapa";

/// How the platform talks to Kapa.
#[derive(Debug, Clone, Deserialize)]
pub struct KapaSettings {
    /// Build the Kapa engine (tenants with Kapa settings are answered by Kapa).
    pub enabled: bool,
    /// `https://api.kapa.ai`.
    pub base_url: String,
    /// How long connecting may take.
    pub connect_timeout_ms: u64,
    /// How long one question may take in all, retries and streaming included.
    pub total_timeout_ms: u64,
    /// Retries after the first attempt, for failures where retrying is safe.
    pub retries: u32,
    /// The first retry's delay (it doubles, with jitter).
    pub retry_base_ms: u64,
    /// The longest delay between retries.
    pub retry_max_ms: u64,
    /// Failures in a row that open a project's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before letting one probe through.
    pub breaker_open_ms: u64,
    /// Questions of one tenant in flight to Kapa at once.
    pub tenant_concurrency: usize,
    /// How long a question waits for one of its tenant's permits.
    pub tenant_wait_ms: u64,
    /// The timeout of calls other than asking (feedback, sources).
    pub call_timeout_ms: u64,
}

/// Kapa behind the resilience layer.
pub struct KapaEngine {
    client: KapaClient,
    secrets: Arc<SecretResolver>,
    breakers: Breakers,
    bulkheads: Bulkheads,
    backoff: Backoff,
    total_timeout: Duration,
    call_timeout: Duration,
    /// `kapa_retries_total{reason}`: retries after a failed attempt (docs/metrics.md).
    retries: prometheus::IntCounterVec,
}

/// Why a key could not be had, as an engine failure.
pub fn key_failure(error: &SecretError) -> EngineFailure {
    let kind = if error.retryable() {
        FailureKind::Unavailable
    } else {
        FailureKind::Misconfigured
    };
    EngineFailure::new(
        kind,
        format!("the Kapa API key could not be resolved: {error}"),
    )
}

impl KapaEngine {
    /// An engine over `settings`, resolving keys with `secrets`.
    pub fn new(settings: &KapaSettings, secrets: Arc<SecretResolver>) -> Result<Self, String> {
        let client = KapaClient::new(
            &settings.base_url,
            Duration::from_millis(settings.connect_timeout_ms),
        )?;
        Ok(Self {
            client,
            secrets,
            breakers: Breakers::new(
                settings.breaker_failures,
                Duration::from_millis(settings.breaker_open_ms),
            ),
            bulkheads: Bulkheads::new(
                settings.tenant_concurrency,
                Duration::from_millis(settings.tenant_wait_ms),
            ),
            backoff: Backoff {
                base: Duration::from_millis(settings.retry_base_ms),
                max: Duration::from_millis(settings.retry_max_ms),
                retries: settings.retries,
            },
            total_timeout: Duration::from_millis(settings.total_timeout_ms),
            call_timeout: Duration::from_millis(settings.call_timeout_ms),
            retries: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "kapa_retries_total",
                    "Kapa calls retried after a failed attempt, by what failed (connect, 429, 502, 503, 504)",
                ),
                &["reason"],
            )
            .map_err(|e| e.to_string())?,
        })
    }

    /// The engine's own metrics, to register with the service's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.retries.clone())]
    }

    /// The HTTP client, for the calls that are not questions (feedback, sources).
    pub fn client(&self) -> &KapaClient {
        &self.client
    }

    /// The timeout of calls other than asking.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The tenant's key.
    pub async fn key(&self, tenant: &str, reference: &str) -> Result<SecretString, EngineFailure> {
        self.secrets
            .resolve(tenant, reference)
            .await
            .map_err(|e| key_failure(&e))
    }

    /// Forgets a cached key that Kapa refused, so a rotated one is read at the next call.
    pub fn forget_key(&self, tenant: &str, reference: &str) {
        self.secrets.invalidate(tenant, reference);
    }

    /// Every project's circuit breaker.
    pub fn breakers(&self) -> Vec<BreakerStatus> {
        self.breakers.snapshot()
    }

    async fn attempt(
        &self,
        key: &SecretString,
        thread: Thread<'_>,
        body: &ChatBody,
        chunks: Option<&Arc<dyn ChunkSink>>,
        progress: &Progress,
    ) -> Result<ChatAnswer, CallError> {
        match chunks {
            None => self.client.chat(key, thread, body).await,
            Some(sink) => {
                let mut on_start = || progress.started.store(true, Ordering::SeqCst);
                let mut on_text = |text: &str| {
                    let _ = progress.first_chunk_ms.compare_exchange(
                        u64::MAX,
                        progress.since.elapsed().as_millis() as u64,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    sink.chunk(text);
                };
                self.client
                    .chat_stream(key, thread, body, &mut on_start, &mut on_text)
                    .await
            }
        }
    }
}

/// How far a question's streamed answer got, across attempts.
struct Progress {
    /// When the question started.
    since: Instant,
    /// A response began: no more retries.
    started: AtomicBool,
    /// Milliseconds to the first chunk (`u64::MAX` until one came).
    first_chunk_ms: AtomicU64,
}

/// Releases a half-open breaker's probe if the call is abandoned without a verdict.
struct ProbeGuard<'a> {
    breakers: &'a Breakers,
    project: &'a str,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breakers.abandon_probe(self.project);
        }
    }
}

fn failure_of(error: &CallError) -> (EngineFailure, bool) {
    // The bool: whether the failure counts against Kapa's health (opens the breaker).
    match error {
        CallError::Status { status, detail, .. } => match status.as_u16() {
            401 | 403 => (
                EngineFailure::new(
                    FailureKind::CredentialsRejected,
                    format!("Kapa refused the API key ({status}): {detail}"),
                ),
                false,
            ),
            404 => (
                EngineFailure::new(
                    FailureKind::Misconfigured,
                    format!("Kapa does not know the project or thread ({status}): {detail}"),
                ),
                false,
            ),
            429 => (
                EngineFailure::new(
                    FailureKind::RateLimited,
                    "Kapa is rate limiting this project",
                ),
                false,
            ),
            s if s >= 500 => (
                EngineFailure::new(FailureKind::Unavailable, format!("Kapa answered {status}")),
                true,
            ),
            _ => (
                EngineFailure::new(
                    FailureKind::Misconfigured,
                    format!("Kapa refused the request ({status}): {detail}"),
                ),
                false,
            ),
        },
        CallError::Connect(_) | CallError::Timeout => (
            EngineFailure::new(FailureKind::Unavailable, error.to_string()),
            true,
        ),
        CallError::Malformed(_) => (
            EngineFailure::new(FailureKind::Malformed, error.to_string()),
            true,
        ),
        CallError::Truncated => (
            EngineFailure::new(FailureKind::Truncated, error.to_string()),
            true,
        ),
        CallError::Engine(_) => (
            EngineFailure::new(FailureKind::EngineError, error.to_string()),
            true,
        ),
    }
}

#[async_trait]
impl AnswerEngine for KapaEngine {
    #[tracing::instrument(skip_all, fields(tenant = %request.tenant_id, project, attempts), err(Debug, level = tracing::Level::INFO))]
    async fn answer(
        &self,
        request: AnswerRequest,
        chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Result<EngineAnswer, EngineFailure> {
        let since = Instant::now();
        let deadline = since + self.total_timeout;
        let (Some(project), Some(key_ref)) = (
            request.context.project_id.as_deref(),
            request.context.api_key_ref.as_deref(),
        ) else {
            return Err(EngineFailure::new(
                FailureKind::NotConfigured,
                "the tenant has no Kapa project",
            ));
        };
        tracing::Span::current().record("project", project);
        let _permit = self
            .bulkheads
            .enter(&request.tenant_id)
            .await
            .ok_or_else(|| {
                EngineFailure::new(
                    FailureKind::Busy,
                    "too many of this tenant's questions are being answered at once",
                )
            })?;
        let key = self.key(&request.tenant_id, key_ref).await?;
        let admission = self.breakers.admit(project).ok_or_else(|| {
            EngineFailure::new(
                FailureKind::CircuitOpen,
                "Kapa failed repeatedly; the circuit breaker is open",
            )
        })?;
        let mut guard = ProbeGuard {
            breakers: &self.breakers,
            project,
            armed: admission == Admission::Probe,
        };
        let body = ChatBody {
            query: request.question.clone(),
            integration_id: request.integration_id.clone(),
            user: KapaUser {
                unique_client_id: request.user_ref.clone(),
                email: request.user_email.clone(),
                metadata: KapaUserMetadata {
                    company_name: request.company_name.clone(),
                    role: request.role.clone(),
                    channel: request.channel.clone(),
                },
            },
        };
        let thread = match request.engine_thread_id.as_deref() {
            Some(thread_id) => Thread::FollowUp { thread_id },
            None => Thread::New {
                project_id: project,
            },
        };
        let progress = Progress {
            since,
            started: AtomicBool::new(false),
            first_chunk_ms: AtomicU64::new(u64::MAX),
        };
        let mut attempt = 0;
        let outcome = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let call = self.attempt(&key, thread, &body, chunks.as_ref(), &progress);
            let result = match tokio::time::timeout(remaining, call).await {
                Ok(result) => result,
                Err(_) => Err(CallError::Timeout),
            };
            match result {
                Err(e)
                    if e.retry_safe()
                        && !progress.started.load(Ordering::SeqCst)
                        && attempt < self.backoff.retries =>
                {
                    let retry_after = match &e {
                        CallError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let delay = self.backoff.delay(attempt, retry_after);
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if delay >= remaining {
                        break Err(e); // waiting would spend the budget
                    }
                    tracing::info!(attempt, error = %e, delay_ms = delay.as_millis() as u64, "retrying Kapa");
                    let reason = match &e {
                        CallError::Status { status, .. } => status.as_str().to_string(),
                        _ => "connect".to_string(),
                    };
                    self.retries.with_label_values(&[&reason]).inc();
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        tracing::Span::current().record("attempts", attempt + 1);
        guard.armed = false;
        match outcome {
            Ok(answer) => {
                self.breakers.succeeded(project);
                let first = progress.first_chunk_ms.load(Ordering::SeqCst);
                Ok(EngineAnswer {
                    text: answer.answer,
                    sources: answer
                        .relevant_sources
                        .into_iter()
                        .filter_map(|s| {
                            Some(CitedSource {
                                url: s.source_url?,
                                title: s.title,
                            })
                        })
                        .collect(),
                    uncertain: answer.is_uncertain.unwrap_or(false),
                    latency_ms: since.elapsed().as_millis() as u64,
                    engine: KAPA_ENGINE.into(),
                    engine_answer_id: answer.question_answer_id.unwrap_or_default(),
                    engine_thread_id: answer.thread_id,
                    first_chunk_ms: chunks.as_ref().and((first != u64::MAX).then_some(first)),
                })
            }
            Err(error) => {
                let (failure, counts) = failure_of(&error);
                if counts {
                    self.breakers.failed(project);
                } else {
                    self.breakers.succeeded(project);
                }
                if failure.kind == FailureKind::CredentialsRejected {
                    self.forget_key(&request.tenant_id, key_ref);
                }
                Err(failure)
            }
        }
    }
}
