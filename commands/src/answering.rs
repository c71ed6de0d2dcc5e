//! Who answers a question, decided between recording the question and recording its answer:
//! the tenant's Kapa project when it has one, the deployment's default engine otherwise, an
//! earlier upvoted answer of the same tenant when the engine cannot (fallback) or need not
//! (reuse). What leaves for the engine is only what the tenant allows: a pseudonym for the
//! user, its role and channel, its e-mail address and the company name only by opt-in.
use std::sync::Arc;
use std::time::Instant;

use domain::engine::{
    AnswerEngine, AnswerLibrary, AnswerRequest, ChunkSink, EngineAnswer, EngineFailure,
    FailureKind, LibraryAnswer, LibraryLookup,
};
use domain::flags;
use domain::tenant::Tenant;
use domain::TenantId;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::flags::TenantFlags;

/// The engine names recorded for answers that did not come from an engine.
pub const FALLBACK_ENGINE: &str = "fallback";
/// See [`FALLBACK_ENGINE`].
pub const REUSE_ENGINE: &str = "reuse";

/// How questions are answered, for the whole deployment.
#[derive(Clone)]
pub struct AnsweringSettings {
    /// The key from which each tenant's pseudonym key is derived. Rotating it changes every
    /// pseudonym (Kapa then sees new users).
    pub pseudonym_key: SecretString,
    /// The least similarity (pg_trgm, 0 to 1) an earlier question needs for its answer to be
    /// offered as a fallback.
    pub fallback_min_similarity: f32,
    /// How old an upvoted answer may be to be reused for an identical question.
    pub reuse_max_age_days: u32,
}

/// The engines a deployment has.
#[derive(Clone, Default)]
pub struct Engines {
    /// Answers for tenants with Kapa settings.
    pub kapa: Option<Arc<dyn AnswerEngine>>,
    /// Answers for tenants without (the local engine in development; none in production, where
    /// such a tenant is answered from the fallback or not at all).
    pub default: Option<Arc<dyn AnswerEngine>>,
    /// Earlier answers, for fallback and reuse.
    pub library: Option<Arc<dyn AnswerLibrary>>,
}

/// What answering produced: an answer (perhaps from the fallback) or a failure.
pub(crate) struct Answered {
    pub result: Result<EngineAnswer, EngineFailure>,
    /// Set when the fallback answered: why the engine did not.
    pub fallback_reason: Option<String>,
    /// The engine's own failure, even when the fallback then answered (for the tenant's
    /// health: a rejected key is recorded although the user got a fallback answer).
    pub engine_failure: Option<EngineFailure>,
    /// Whether the tenant's Kapa project was asked and answered.
    pub kapa_answered: bool,
}

pub(crate) struct Answering {
    engines: Engines,
    settings: AnsweringSettings,
}

/// The feature flags that gate answering, for the asking user.
pub(crate) struct Gates<'a> {
    pub flags: &'a TenantFlags,
    pub tenant_id: &'a TenantId,
    pub user: &'a str,
}

impl Gates<'_> {
    fn on(&self, tenant: &Tenant, flag: &str) -> bool {
        self.flags
            .evaluate(self.tenant_id, tenant, flag, self.user)
            .value
    }
}

/// Who is asking, as far as the engine may know.
pub(crate) struct Asker<'a> {
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub role: &'a str,
    pub channel: &'a str,
    pub integration_id: Option<String>,
}

impl Answering {
    pub fn new(engines: Engines, settings: AnsweringSettings) -> Self {
        Self { engines, settings }
    }

    /// A stable pseudonym for a user of a tenant: HMAC-SHA256 of the user id under a key
    /// derived for the tenant, so the same person gets different pseudonyms in two tenants
    /// and nobody without the platform key can tell who it is.
    pub fn pseudonym(&self, tenant_id: &str, user_id: &str) -> String {
        let tenant_key = hmac(
            self.settings.pseudonym_key.expose_secret().as_bytes(),
            format!("pseudonym-tenant-key\u{1f}{tenant_id}").as_bytes(),
        );
        let digest = hmac(&tenant_key, user_id.as_bytes());
        format!("u_{}", hex::encode(&digest[..16]))
    }

    /// The request the engine gets: only what the tenant allows to leave.
    pub fn request(
        &self,
        tenant: &Tenant,
        asker: Asker<'_>,
        question: String,
        engine_thread_id: Option<String>,
    ) -> AnswerRequest {
        let kapa = tenant.kapa.as_ref();
        let user_email = kapa
            .filter(|k| k.share_user_email)
            .and_then(|_| tenant.members.get(asker.user_id))
            .and_then(|m| m.email.clone());
        let company_name = kapa
            .filter(|k| k.share_company_name)
            .map(|_| tenant.name.clone());
        let context = tenant.engine_context();
        AnswerRequest {
            tenant_id: asker.tenant_id.to_string(),
            question,
            engine_thread_id,
            user_ref: self.pseudonym(asker.tenant_id, asker.user_id),
            user_email,
            role: asker.role.to_string(),
            channel: asker.channel.to_string(),
            integration_id: asker
                .integration_id
                .or_else(|| context.integration_id.clone()),
            company_name,
            context,
        }
    }

    #[tracing::instrument(skip_all, fields(tenant = %request.tenant_id, engine))]
    pub async fn answer(
        &self,
        tenant: &Tenant,
        gates: Gates<'_>,
        request: AnswerRequest,
        chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Answered {
        if tenant.answer_policy.reuse_upvoted_answers && gates.on(tenant, flags::ANSWER_REUSE) {
            let lookup = LibraryLookup::Identical {
                max_age_days: self.settings.reuse_max_age_days,
            };
            if let Some(found) = self.library(&request, lookup).await {
                tracing::Span::current().record("engine", REUSE_ENGINE);
                return Answered {
                    result: Ok(library_answer(found, REUSE_ENGINE, false, &chunks)),
                    fallback_reason: None,
                    engine_failure: None,
                    kapa_answered: false,
                };
            }
        }
        let uses_kapa = request.context.has_kapa() && self.engines.kapa.is_some();
        let engine = if uses_kapa {
            self.engines.kapa.as_ref()
        } else {
            self.engines.default.as_ref()
        };
        let failure = match engine {
            Some(engine) => match engine.answer(request.clone(), chunks.clone()).await {
                Ok(answer) => {
                    tracing::Span::current().record("engine", answer.engine.as_str());
                    return Answered {
                        result: Ok(answer),
                        fallback_reason: None,
                        engine_failure: None,
                        kapa_answered: uses_kapa,
                    };
                }
                Err(failure) => failure,
            },
            None => EngineFailure::new(
                FailureKind::NotConfigured,
                "no answer engine is configured for this tenant",
            ),
        };
        tracing::info!(kind = %failure.kind, reason = %failure.reason, "the engine did not answer");
        let min_similarity = self.settings.fallback_min_similarity;
        let fallback = if gates.on(tenant, flags::FALLBACK_ENGINE) {
            self.library(&request, LibraryLookup::Similar { min_similarity })
                .await
        } else {
            None
        };
        match fallback {
            Some(found) => {
                tracing::Span::current().record("engine", FALLBACK_ENGINE);
                Answered {
                    result: Ok(library_answer(found, FALLBACK_ENGINE, true, &chunks)),
                    fallback_reason: Some(format!("{}: {}", failure.kind, failure.reason)),
                    engine_failure: Some(failure),
                    kapa_answered: false,
                }
            }
            None => Answered {
                result: Err(failure.clone()),
                fallback_reason: None,
                engine_failure: Some(failure),
                kapa_answered: false,
            },
        }
    }

    async fn library(
        &self,
        request: &AnswerRequest,
        lookup: LibraryLookup,
    ) -> Option<LibraryAnswer> {
        let library = self.engines.library.as_ref()?;
        match library
            .find(&request.tenant_id, &request.question, lookup)
            .await
        {
            Ok(found) => found,
            Err(error) => {
                // The library is a convenience: when it fails the question is answered (or
                // fails) as if it had found nothing.
                tracing::warn!(%error, "the answer library could not be searched");
                None
            }
        }
    }
}

fn library_answer(
    found: LibraryAnswer,
    engine: &str,
    uncertain: bool,
    chunks: &Option<Arc<dyn ChunkSink>>,
) -> EngineAnswer {
    let started = Instant::now();
    if let Some(chunks) = chunks {
        chunks.chunk(&found.text);
    }
    EngineAnswer {
        text: found.text,
        sources: found.sources,
        uncertain,
        latency_ms: started.elapsed().as_millis() as u64,
        engine: engine.to_string(),
        engine_answer_id: String::new(),
        engine_thread_id: None,
        first_chunk_ms: chunks.as_ref().map(|_| 0),
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answering() -> Answering {
        Answering::new(
            Engines::default(),
            AnsweringSettings {
                pseudonym_key: SecretString::from("k".repeat(32)),
                fallback_min_similarity: 0.4,
                reuse_max_age_days: 30,
            },
        )
    }

    #[test]
    fn pseudonyms_are_stable_per_tenant_and_differ_across_tenants() {
        let a = answering();
        assert_eq!(a.pseudonym("acme", "alice"), a.pseudonym("acme", "alice"));
        assert_ne!(a.pseudonym("acme", "alice"), a.pseudonym("acme", "bob"));
        assert_ne!(a.pseudonym("acme", "alice"), a.pseudonym("globex", "alice"));
        assert!(!a.pseudonym("acme", "alice").contains("alice"));
    }
}
