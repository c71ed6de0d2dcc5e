//! A tenant is one customer company: its name, its Kapa settings, feature flags and members.
use crate::code::Code;
use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::access::{
    refuse, AccessPolicy, Admission, LinkedIdentity, Provider, VerifiedIdentity, WebhookTopic,
};
use crate::engine::EngineContext;
use crate::flags::FlagOverride;
use crate::guardrail::GuardrailPolicy;
use crate::{domain_event, validate, DomainError, Role};

/// Where the tenant's Kapa.ai project is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KapaSettings {
    /// The Kapa project.
    pub project_id: String,
    /// The Kapa integration, if any.
    pub integration_id: Option<String>,
    /// Where the API key lives (`env://KAPA_KEY_ACME`, `vault://kv/acme/kapa`, ...); the key
    /// itself is never stored in an event.
    pub api_key_ref: String,
    /// Send the asking user's e-mail address to Kapa (off unless the tenant opts in).
    #[serde(default)]
    pub share_user_email: bool,
    /// Send the company's name to Kapa (off unless the tenant opts in).
    #[serde(default)]
    pub share_company_name: bool,
}

/// How the tenant's questions are answered beyond the engine itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerPolicy {
    /// What the guardrails do with questions and answers.
    #[serde(default)]
    pub guardrails: GuardrailPolicy,
    /// Answer a question identical (after normalisation) to one recently answered and upvoted
    /// with that answer instead of asking the engine again (saves cost; off by default).
    #[serde(default)]
    pub reuse_upvoted_answers: bool,
}

/// The tenant's override of a platform-defined feature flag (`crate::flags`).
pub type FeatureFlag = FlagOverride;

/// A person of the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// What they may do.
    pub role: Role,
    /// Their address, if known.
    pub email: Option<String>,
    /// The provider accounts they signed in with (none until the invitation is accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<LinkedIdentity>,
}

impl Member {
    /// Invited and not signed in yet.
    pub fn invitation_pending(&self) -> bool {
        self.identities.is_empty()
    }
}

/// The tenant's plan: its question budgets (the engine costs money per question).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanQuota {
    /// Questions per minute, the whole tenant.
    pub questions_per_minute: u32,
    /// Questions per calendar month (UTC).
    pub questions_per_month: u64,
}

/// A webhook endpoint of the tenant (its signing secret lives outside events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Where deliveries go.
    pub url: String,
    /// What it receives.
    pub topics: Vec<WebhookTopic>,
    /// Disabled endpoints receive nothing (after a long failure streak, or by an Admin).
    pub enabled: bool,
}

/// An API key of the tenant (the secret itself is only ever stored hashed, outside events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// What it is for.
    pub name: String,
    /// What it may do (Operator at most).
    pub role: Role,
    /// The key's visible prefix, to recognise it.
    pub prefix: String,
    /// Revoked keys stay listed.
    pub revoked: bool,
}

/// Where a tenant stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Not created yet.
    #[default]
    Unprovisioned,
    /// Accepts commands.
    Active,
    /// Accepts no commands until reactivated.
    Suspended,
}

/// What can be asked of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantCommand {
    /// Create the tenant.
    Create {
        /// The company's name.
        name: String,
        /// Its first admin.
        admin_user_id: String,
        /// The first admin's address, when they are invited to sign in (a platform operator
        /// creating the tenant); absent when the creator is the admin.
        admin_email: Option<String>,
    },
    /// Decide who may join and how they sign in.
    SetAccessPolicy {
        /// The policy.
        policy: AccessPolicy,
    },
    /// An invited person signed in for the first time with a verified identity.
    AcceptInvitation {
        /// The invited member.
        user_id: String,
        /// The identity they signed in with.
        identity: LinkedIdentity,
    },
    /// Someone of an allowed domain joins uninvited (the policy allows it).
    Join {
        /// Their new user id.
        user_id: String,
        /// Their verified address.
        email: String,
        /// The identity they signed in with.
        identity: LinkedIdentity,
    },
    /// Create an API key for an integration.
    CreateApiKey {
        /// Its id.
        key_id: String,
        /// What it is for.
        name: String,
        /// What it may do: Operator at most.
        role: Role,
        /// Its visible prefix.
        prefix: String,
    },
    /// Set the plan's question budgets (platform operators); `None` returns to the defaults.
    SetPlan {
        /// The budgets.
        quota: Option<PlanQuota>,
    },
    /// Subscribe an endpoint to topics.
    AddWebhook {
        /// Its id.
        endpoint_id: String,
        /// Where deliveries go (http(s)).
        url: String,
        /// What it receives (at least one).
        topics: Vec<WebhookTopic>,
    },
    /// Unsubscribe an endpoint.
    RemoveWebhook {
        /// Its id.
        endpoint_id: String,
    },
    /// Stop delivering to an endpoint (the delivery worker after a long failure streak).
    DisableWebhook {
        /// Its id.
        endpoint_id: String,
        /// Why.
        reason: String,
    },
    /// Deliver to a disabled endpoint again.
    EnableWebhook {
        /// Its id.
        endpoint_id: String,
    },
    /// Revoke an API key.
    RevokeApiKey {
        /// Its id.
        key_id: String,
    },
    /// Change its name.
    Rename {
        /// The new name.
        name: String,
    },
    /// Point the tenant at a Kapa project.
    SetKapaSettings {
        /// The Kapa project.
        project_id: String,
        /// The Kapa integration, if any.
        integration_id: Option<String>,
        /// A reference to the API key (`env://`, `file://`, `vault://`, `aws-sm://`, `gcp-sm://`).
        api_key_ref: String,
        /// Send the asking user's e-mail address to Kapa.
        share_user_email: bool,
        /// Send the company's name to Kapa.
        share_company_name: bool,
    },
    /// Set the guardrail policy and answer reuse.
    SetAnswerPolicy {
        /// The policy.
        policy: AnswerPolicy,
    },
    /// Record that the engine refused the tenant's credentials (401/403): a person must fix the
    /// settings. Records nothing when the same problem is already recorded.
    RecordEngineRejection {
        /// What the engine said, for the tenant's admin (never the key).
        reason: String,
    },
    /// Record that the engine accepted the tenant's credentials again.
    RecordEngineRecovery,
    /// Set the answer-quality objectives (docs/observability.md).
    SetQualityObjectives {
        /// The targets and window.
        objectives: crate::quality::QualityObjectives,
    },
    /// Record that an objective fell below its target (the platform's evaluator, from the
    /// analytics facts). Records nothing when it is already recorded as breached.
    RecordQualityBreach {
        /// Which objective.
        objective: crate::quality::QualityObjective,
        /// The measured share.
        value: f64,
        /// Votes or questions it was measured over.
        sample: i64,
    },
    /// Record that a breached objective is met again. Records nothing when it was not breached.
    RecordQualityRecovery {
        /// Which objective.
        objective: crate::quality::QualityObjective,
        /// The measured share.
        value: f64,
        /// Votes or questions it was measured over.
        sample: i64,
    },
    /// Override a platform-defined flag for the tenant.
    SetFeatureFlag {
        /// The flag's key.
        flag: String,
        /// The override.
        setting: FlagOverride,
        /// Sent by a platform operator (who may override any flag); a tenant's Admin may only
        /// override flags marked tenant-controllable.
        by_platform: bool,
    },
    /// Remove the tenant's override: the platform's default applies again.
    ClearFeatureFlag {
        /// The flag's key.
        flag: String,
        /// Sent by a platform operator.
        by_platform: bool,
    },
    /// Add a person.
    InviteMember {
        /// Their user id.
        user_id: String,
        /// Their address, if known.
        email: Option<String>,
        /// What they may do.
        role: Role,
    },
    /// Change what a person may do.
    ChangeMemberRole {
        /// The person.
        user_id: String,
        /// Their new role.
        role: Role,
    },
    /// Remove a person.
    RemoveMember {
        /// The person.
        user_id: String,
    },
    /// Stop accepting commands.
    Suspend {
        /// Why.
        reason: String,
    },
    /// Accept commands again.
    Reactivate,
}

/// What happened to a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TenantEvent {
    /// The tenant was created.
    TenantCreated {
        /// The company's name.
        name: String,
        /// Its first admin.
        created_by: String,
    },
    /// The access policy was set.
    AccessPolicySet {
        /// The policy.
        policy: AccessPolicy,
    },
    /// An invited person signed in for the first time.
    InvitationAccepted {
        /// The member.
        user_id: String,
        /// With which provider.
        provider: Provider,
        /// The provider's id of the person.
        subject: String,
    },
    /// Someone of an allowed domain joined uninvited.
    MemberJoined {
        /// Their user id.
        user_id: String,
        /// Their verified address.
        email: String,
        /// Their role.
        role: Role,
        /// With which provider.
        provider: Provider,
        /// The provider's id of the person.
        subject: String,
    },
    /// An API key was created (never the key).
    ApiKeyCreated {
        /// Its id.
        key_id: String,
        /// What it is for.
        name: String,
        /// What it may do.
        role: Role,
        /// Its visible prefix.
        prefix: String,
    },
    /// The plan's question budgets were set (`None`: the platform's defaults).
    PlanSet {
        /// The budgets.
        quota: Option<PlanQuota>,
    },
    /// An endpoint was subscribed.
    WebhookAdded {
        /// Its id.
        endpoint_id: String,
        /// Where deliveries go.
        url: String,
        /// What it receives.
        topics: Vec<WebhookTopic>,
    },
    /// An endpoint was unsubscribed.
    WebhookRemoved {
        /// Its id.
        endpoint_id: String,
    },
    /// Deliveries to an endpoint stopped.
    WebhookDisabled {
        /// Its id.
        endpoint_id: String,
        /// Why.
        reason: String,
    },
    /// Deliveries to an endpoint resumed.
    WebhookEnabled {
        /// Its id.
        endpoint_id: String,
    },
    /// An API key was revoked.
    ApiKeyRevoked {
        /// Its id.
        key_id: String,
    },
    /// The tenant was renamed.
    TenantRenamed {
        /// The new name.
        name: String,
    },
    /// The tenant was pointed at a Kapa project.
    KapaSettingsSet {
        /// The Kapa project.
        project_id: String,
        /// The Kapa integration, if any.
        integration_id: Option<String>,
        /// A reference to the API key (never the key).
        api_key_ref: String,
        /// Send the asking user's e-mail address to Kapa.
        #[serde(default)]
        share_user_email: bool,
        /// Send the company's name to Kapa.
        #[serde(default)]
        share_company_name: bool,
    },
    /// The guardrail policy and answer reuse were set.
    AnswerPolicySet {
        /// The policy.
        policy: AnswerPolicy,
    },
    /// The engine refused the tenant's credentials (401/403).
    EngineCredentialsRejected {
        /// What the engine said (never the key).
        reason: String,
    },
    /// The engine accepted the tenant's credentials again.
    EngineCredentialsAccepted {},
    /// The answer-quality objectives were set.
    QualityObjectivesSet {
        /// The targets and window.
        objectives: crate::quality::QualityObjectives,
    },
    /// An answer-quality objective fell below its target over its window.
    QualityObjectiveBreached {
        /// Which objective.
        objective: crate::quality::QualityObjective,
        /// The measured share.
        value: f64,
        /// The target it was measured against.
        target: f64,
        /// The window it was measured over, in days.
        window_days: u32,
        /// Votes or questions it was measured over.
        sample: i64,
    },
    /// A breached answer-quality objective is met again.
    QualityObjectiveRecovered {
        /// Which objective.
        objective: crate::quality::QualityObjective,
        /// The measured share.
        value: f64,
        /// The target it was measured against.
        target: f64,
        /// The window it was measured over, in days.
        window_days: u32,
        /// Votes or questions it was measured over.
        sample: i64,
    },
    /// A flag was overridden for the tenant.
    FeatureFlagSet {
        /// The flag's key.
        flag: String,
        /// On or off.
        enabled: bool,
        /// The share of users (0-100) who get `on`.
        rollout_percentage: u8,
        /// Always `on` for these users.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow: Vec<String>,
        /// Always `off` for these users.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deny: Vec<String>,
        /// Set by a platform operator (not the tenant's Admin).
        #[serde(default)]
        by_platform: bool,
    },
    /// A feature flag was forgotten.
    FeatureFlagCleared {
        /// The feature.
        flag: String,
    },
    /// A person was added.
    MemberInvited {
        /// Their user id.
        user_id: String,
        /// Their address, if known.
        email: Option<String>,
        /// What they may do.
        role: Role,
    },
    /// A person's role changed.
    MemberRoleChanged {
        /// The person.
        user_id: String,
        /// The role before.
        from: Role,
        /// The role now.
        to: Role,
    },
    /// A person was removed.
    MemberRemoved {
        /// The person.
        user_id: String,
    },
    /// The tenant was suspended.
    TenantSuspended {
        /// Why.
        reason: String,
    },
    /// The tenant was reactivated.
    TenantReactivated {},
}

domain_event!(TenantEvent {
    TenantCreated,
    TenantRenamed,
    AccessPolicySet,
    InvitationAccepted,
    MemberJoined,
    ApiKeyCreated,
    ApiKeyRevoked,
    PlanSet,
    WebhookAdded,
    WebhookRemoved,
    WebhookDisabled,
    WebhookEnabled,
    KapaSettingsSet,
    AnswerPolicySet,
    EngineCredentialsRejected,
    EngineCredentialsAccepted,
    QualityObjectivesSet,
    QualityObjectiveBreached,
    QualityObjectiveRecovered,
    FeatureFlagSet,
    FeatureFlagCleared,
    MemberInvited,
    MemberRoleChanged,
    MemberRemoved,
    TenantSuspended,
    TenantReactivated,
});

/// The tenant aggregate: a company using the platform. Read models store it as JSON; fields
/// added later default when an older document is read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tenant {
    /// Where it stands.
    pub status: TenantStatus,
    /// The company's name.
    pub name: String,
    /// Its Kapa project, if set.
    pub kapa: Option<KapaSettings>,
    /// Why the engine last refused its credentials, until it accepts them again or the
    /// settings change.
    pub engine_problem: Option<String>,
    /// Guardrails and answer reuse.
    pub answer_policy: AnswerPolicy,
    /// Its feature flags by name.
    pub feature_flags: BTreeMap<String, FeatureFlag>,
    /// Its people by user id.
    pub members: BTreeMap<String, Member>,
    /// Who may join and how they sign in.
    pub access: AccessPolicy,
    /// Its API keys by id.
    pub api_keys: BTreeMap<String, ApiKeyInfo>,
    /// Its question budgets, when not the platform's defaults.
    pub plan: Option<PlanQuota>,
    /// Its webhook endpoints by id.
    pub webhooks: BTreeMap<String, WebhookEndpoint>,
    /// Its answer-quality objectives (the seed's defaults until set).
    pub quality: crate::quality::QualityObjectives,
    /// The objectives recorded as breached now.
    pub quality_breached: std::collections::BTreeSet<String>,
}

/// The longest tenant name accepted, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 200;
/// Schemes an API key reference may use.
pub const SECRET_REF_SCHEMES: [&str; 5] =
    ["env://", "file://", "vault://", "aws-sm://", "gcp-sm://"];

impl Tenant {
    /// The rule every other aggregate of the tenant obeys too: only an active tenant is commanded.
    pub fn ensure_accepts_commands(&self) -> Result<(), DomainError> {
        match self.status {
            TenantStatus::Active => Ok(()),
            TenantStatus::Unprovisioned => Err(DomainError::new(
                Code::TenantNotFound,
                "this tenant has not been created yet (POST /v1/tenant)",
            )),
            TenantStatus::Suspended => Err(DomainError::new(
                Code::TenantSuspended,
                "this tenant is suspended and accepts no commands",
            )),
        }
    }

    /// The engine settings its questions are asked with.
    pub fn engine_context(&self) -> EngineContext {
        match &self.kapa {
            Some(k) => EngineContext {
                project_id: Some(k.project_id.clone()),
                integration_id: k.integration_id.clone(),
                api_key_ref: Some(k.api_key_ref.clone()),
            },
            None => EngineContext::default(),
        }
    }

    fn admin_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.role == Role::Admin)
            .count()
    }

    fn webhook(&self, endpoint_id: &str) -> Result<&WebhookEndpoint, DomainError> {
        self.webhooks.get(endpoint_id).ok_or_else(|| {
            DomainError::new(
                Code::WebhookNotFound,
                format!("no webhook endpoint `{endpoint_id}`"),
            )
        })
    }

    fn member(&self, user_id: &str) -> Result<&Member, DomainError> {
        self.members.get(user_id).ok_or_else(|| {
            DomainError::new(Code::MemberNotFound, format!("`{user_id}` is not a member"))
        })
    }

    fn decide(&self, command: TenantCommand) -> Result<Vec<TenantEvent>, DomainError> {
        if let TenantCommand::Create {
            name,
            admin_user_id,
            admin_email,
        } = command
        {
            if self.status != TenantStatus::Unprovisioned {
                return Err(DomainError::new(
                    Code::TenantExists,
                    "this tenant has already been created",
                ));
            }
            let name = validate::text("name", Code::InvalidName, &name, MAX_TENANT_NAME_CHARS)?;
            let admin = validate::identifier("admin user id", &admin_user_id)?;
            let email = admin_email.as_deref().map(email_address).transpose()?;
            return Ok(vec![
                TenantEvent::TenantCreated {
                    name,
                    created_by: admin.clone(),
                },
                TenantEvent::MemberInvited {
                    user_id: admin,
                    email,
                    role: Role::Admin,
                },
            ]);
        }
        if let TenantCommand::Reactivate = command {
            return match self.status {
                TenantStatus::Suspended => Ok(vec![TenantEvent::TenantReactivated {}]),
                TenantStatus::Active => Err(DomainError::new(
                    Code::TenantNotSuspended,
                    "the tenant is not suspended",
                )),
                TenantStatus::Unprovisioned => self.ensure_accepts_commands().map(|_| vec![]),
            };
        }
        self.ensure_accepts_commands()?;
        let event = match command {
            TenantCommand::Create { .. } | TenantCommand::Reactivate => {
                unreachable!("handled above")
            }
            TenantCommand::SetAccessPolicy { policy } => TenantEvent::AccessPolicySet {
                policy: policy.validated()?,
            },
            TenantCommand::AcceptInvitation { user_id, identity } => {
                let member = self.member(&user_id)?;
                if !member.invitation_pending() {
                    return Ok(vec![]);
                }
                TenantEvent::InvitationAccepted {
                    user_id,
                    provider: identity.provider,
                    subject: identity.subject,
                }
            }
            TenantCommand::Join {
                user_id,
                email,
                identity,
            } => {
                let user_id = validate::identifier("user id", &user_id)?;
                if self.members.contains_key(&user_id) {
                    return Err(DomainError::new(
                        Code::MemberExists,
                        format!("`{user_id}` is already a member"),
                    ));
                }
                TenantEvent::MemberJoined {
                    user_id,
                    email: email_address(&email)?,
                    role: Role::Viewer,
                    provider: identity.provider,
                    subject: identity.subject,
                }
            }
            TenantCommand::CreateApiKey {
                key_id,
                name,
                role,
                prefix,
            } => {
                if role == Role::Admin {
                    return Err(DomainError::new(
                        Code::ApiKeyRoleTooHigh,
                        "an API key may be an operator or a viewer, never an admin",
                    ));
                }
                let key_id = validate::identifier("key id", &key_id)?;
                if self.api_keys.contains_key(&key_id) {
                    return Err(DomainError::new(
                        Code::ConcurrentModification,
                        format!("an API key `{key_id}` already exists"),
                    ));
                }
                TenantEvent::ApiKeyCreated {
                    key_id,
                    name: validate::text("name", Code::InvalidName, &name, 200)?,
                    role,
                    prefix,
                }
            }
            TenantCommand::AddWebhook {
                endpoint_id,
                url,
                mut topics,
            } => {
                let url = validate::http_url("url", &url)?;
                topics.sort();
                topics.dedup();
                if topics.is_empty() {
                    return Err(DomainError::new(
                        Code::InvalidSettings,
                        "a webhook subscribes to at least one topic",
                    ));
                }
                if self.webhooks.len() >= 20 {
                    return Err(DomainError::new(
                        Code::InvalidSettings,
                        "a tenant has at most 20 webhook endpoints",
                    ));
                }
                TenantEvent::WebhookAdded {
                    endpoint_id: validate::identifier("endpoint id", &endpoint_id)?,
                    url,
                    topics,
                }
            }
            TenantCommand::RemoveWebhook { endpoint_id } => {
                self.webhook(&endpoint_id)?;
                TenantEvent::WebhookRemoved { endpoint_id }
            }
            TenantCommand::DisableWebhook {
                endpoint_id,
                reason,
            } => {
                if !self.webhook(&endpoint_id)?.enabled {
                    return Ok(vec![]);
                }
                TenantEvent::WebhookDisabled {
                    endpoint_id,
                    reason: validate::text("reason", Code::InvalidReason, &reason, 1000)?,
                }
            }
            TenantCommand::EnableWebhook { endpoint_id } => {
                if self.webhook(&endpoint_id)?.enabled {
                    return Ok(vec![]);
                }
                TenantEvent::WebhookEnabled { endpoint_id }
            }
            TenantCommand::SetPlan { quota } => {
                if quota.is_some_and(|q| q.questions_per_minute == 0 || q.questions_per_month == 0)
                {
                    return Err(DomainError::new(
                        Code::InvalidSettings,
                        "a plan's budgets must be at least 1 (suspend a tenant to stop it)",
                    ));
                }
                TenantEvent::PlanSet { quota }
            }
            TenantCommand::RevokeApiKey { key_id } => match self.api_keys.get(&key_id) {
                None => {
                    return Err(DomainError::new(
                        Code::ApiKeyNotFound,
                        format!("no API key `{key_id}`"),
                    ))
                }
                Some(k) if k.revoked => {
                    return Err(DomainError::new(
                        Code::ApiKeyRevoked,
                        format!("API key `{key_id}` is already revoked"),
                    ))
                }
                Some(_) => TenantEvent::ApiKeyRevoked { key_id },
            },
            TenantCommand::Rename { name } => TenantEvent::TenantRenamed {
                name: validate::text("name", Code::InvalidName, &name, MAX_TENANT_NAME_CHARS)?,
            },
            TenantCommand::SetKapaSettings {
                project_id,
                integration_id,
                api_key_ref,
                share_user_email,
                share_company_name,
            } => {
                let project_id = validate::identifier("project id", &project_id)?;
                let integration_id = match integration_id.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(id) => Some(validate::identifier("integration id", id)?),
                };
                let api_key_ref = validate::text(
                    "api key reference",
                    Code::InvalidSecretRef,
                    &api_key_ref,
                    500,
                )?;
                let has_scheme = SECRET_REF_SCHEMES
                    .iter()
                    .any(|s| api_key_ref.starts_with(s) && api_key_ref.len() > s.len());
                if !has_scheme {
                    return Err(DomainError::new(
                        Code::InvalidSecretRef,
                        format!(
                            "api_key_ref must reference a secret ({}), not contain the key",
                            SECRET_REF_SCHEMES.join(", ")
                        ),
                    ));
                }
                TenantEvent::KapaSettingsSet {
                    project_id,
                    integration_id,
                    api_key_ref,
                    share_user_email,
                    share_company_name,
                }
            }
            TenantCommand::SetAnswerPolicy { policy } => TenantEvent::AnswerPolicySet {
                policy: AnswerPolicy {
                    guardrails: policy.guardrails.validated()?,
                    reuse_upvoted_answers: policy.reuse_upvoted_answers,
                },
            },
            TenantCommand::RecordEngineRejection { reason } => {
                if self.engine_problem.as_deref() == Some(reason.as_str()) {
                    return Ok(vec![]);
                }
                TenantEvent::EngineCredentialsRejected { reason }
            }
            TenantCommand::RecordEngineRecovery => {
                if self.engine_problem.is_none() {
                    return Ok(vec![]);
                }
                TenantEvent::EngineCredentialsAccepted {}
            }
            TenantCommand::SetQualityObjectives { objectives } => {
                TenantEvent::QualityObjectivesSet {
                    objectives: objectives.validated()?,
                }
            }
            TenantCommand::RecordQualityBreach {
                objective,
                value,
                sample,
            } => {
                if self.quality_breached.contains(objective.as_str()) {
                    return Ok(vec![]);
                }
                TenantEvent::QualityObjectiveBreached {
                    objective,
                    value,
                    target: self.quality.target(objective),
                    window_days: self.quality.window_days,
                    sample,
                }
            }
            TenantCommand::RecordQualityRecovery {
                objective,
                value,
                sample,
            } => {
                if !self.quality_breached.contains(objective.as_str()) {
                    return Ok(vec![]);
                }
                TenantEvent::QualityObjectiveRecovered {
                    objective,
                    value,
                    target: self.quality.target(objective),
                    window_days: self.quality.window_days,
                    sample,
                }
            }
            TenantCommand::SetFeatureFlag {
                flag,
                setting,
                by_platform,
            } => {
                let flag = controllable_flag(&flag, by_platform)?;
                let setting = setting.validated()?;
                TenantEvent::FeatureFlagSet {
                    flag,
                    enabled: setting.enabled,
                    rollout_percentage: setting.rollout_percentage,
                    allow: setting.allow,
                    deny: setting.deny,
                    by_platform,
                }
            }
            TenantCommand::ClearFeatureFlag { flag, by_platform } => {
                let flag = controllable_flag(&flag, by_platform)?;
                if !self.feature_flags.contains_key(&flag) {
                    return Err(DomainError::new(
                        Code::FeatureFlagNotFound,
                        format!("feature flag `{flag}` is not set"),
                    ));
                }
                TenantEvent::FeatureFlagCleared { flag }
            }
            TenantCommand::InviteMember {
                user_id,
                email,
                role,
            } => {
                let user_id = validate::identifier("user id", &user_id)?;
                if self.members.contains_key(&user_id) {
                    return Err(DomainError::new(
                        Code::MemberExists,
                        format!("`{user_id}` is already a member"),
                    ));
                }
                let email =
                    validate::optional_text("email", Code::InvalidEmail, email.as_deref(), 320)?
                        .as_deref()
                        .map(email_address)
                        .transpose()?;
                if let Some(e) = &email {
                    let taken = self
                        .members
                        .values()
                        .any(|m| m.email.as_deref() == Some(e.as_str()));
                    if taken {
                        return Err(DomainError::new(
                            Code::MemberExists,
                            format!("`{e}` is already a member or invited"),
                        ));
                    }
                }
                TenantEvent::MemberInvited {
                    user_id,
                    email,
                    role,
                }
            }
            TenantCommand::ChangeMemberRole { user_id, role } => {
                let member = self.member(&user_id)?;
                if member.role == role {
                    return Err(DomainError::new(
                        Code::RoleUnchanged,
                        format!("`{user_id}` already has the role {role}"),
                    ));
                }
                if member.role == Role::Admin && self.admin_count() == 1 {
                    return Err(DomainError::new(
                        Code::LastAdmin,
                        "the last admin of a tenant cannot be demoted",
                    ));
                }
                TenantEvent::MemberRoleChanged {
                    user_id,
                    from: member.role,
                    to: role,
                }
            }
            TenantCommand::RemoveMember { user_id } => {
                let member = self.member(&user_id)?;
                if member.role == Role::Admin && self.admin_count() == 1 {
                    return Err(DomainError::new(
                        Code::LastAdmin,
                        "the last admin of a tenant cannot be removed",
                    ));
                }
                TenantEvent::MemberRemoved { user_id }
            }
            TenantCommand::Suspend { reason } => TenantEvent::TenantSuspended {
                reason: validate::text("reason", Code::InvalidReason, &reason, 1000)?,
            },
        };
        Ok(vec![event])
    }
}

/// A checked, lower-cased e-mail address (invitations are matched by address, case-blind).
fn email_address(email: &str) -> Result<String, DomainError> {
    let e = validate::text("email", Code::InvalidEmail, email, 320)?.to_ascii_lowercase();
    // Local part: visible characters; domain: dot-separated labels of letters, digits and `-`
    // (what `format: email` in the API document promises).
    let valid = e.matches('@').count() == 1
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.chars().all(|c| c.is_ascii_graphic() || !c.is_ascii())
                && domain.contains('.')
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        });
    if valid {
        Ok(e)
    } else {
        Err(DomainError::new(
            Code::InvalidEmail,
            "email is not an e-mail address",
        ))
    }
}

impl Tenant {
    /// What a verified identity is to this tenant, or why it may not sign in. Pure: the
    /// sign-in flow sends the events the admission implies.
    pub fn admit(&self, identity: &VerifiedIdentity) -> Result<Admission, DomainError> {
        self.ensure_accepts_commands()?;
        let policy = &self.access;
        if !policy.allowed_providers.is_empty()
            && !policy.allowed_providers.contains(&identity.provider)
        {
            return Err(refuse(
                Code::ProviderNotAllowed,
                format!(
                    "this tenant does not allow sign-in with {}",
                    identity.provider
                ),
            ));
        }
        if policy.sso_required && !identity.from_directory(policy) {
            return Err(refuse(
                Code::SsoRequired,
                "this tenant requires sign-in through its organisation's directory (Google Workspace or Microsoft Entra)",
            ));
        }
        if !policy.allowed_domains.is_empty() {
            let allowed = identity
                .email_domain()
                .is_some_and(|d| policy.allowed_domains.iter().any(|a| a == d));
            if !allowed {
                return Err(refuse(
                    Code::EmailDomainNotAllowed,
                    "the verified e-mail address is not in one of the tenant's allowed domains",
                ));
            }
        }
        let linked = self.members.iter().find(|(_, m)| {
            m.identities
                .iter()
                .any(|i| i.provider == identity.provider && i.subject == identity.subject)
        });
        if let Some((user_id, m)) = linked {
            return Ok(Admission::Member {
                user_id: user_id.clone(),
                role: m.role,
            });
        }
        if let Some(email) = &identity.email {
            let invited = self.members.iter().find(|(_, m)| {
                m.invitation_pending() && m.email.as_deref() == Some(email.as_str())
            });
            if let Some((user_id, m)) = invited {
                return Ok(Admission::AcceptsInvitation {
                    user_id: user_id.clone(),
                    role: m.role,
                });
            }
            if policy.domain_members_join {
                return Ok(Admission::Joins { role: Role::Viewer });
            }
        }
        Err(refuse(
            Code::NotAMember,
            "you are not a member of this tenant and have no invitation for a verified address",
        ))
    }
}

/// A flag the platform defines and the sender may override.
fn controllable_flag(flag: &str, by_platform: bool) -> Result<String, DomainError> {
    let flag = flag_name(flag)?;
    let definition = crate::flags::definition(&flag).ok_or_else(|| {
        DomainError::new(
            Code::FeatureFlagNotFound,
            format!("the platform defines no flag `{flag}`"),
        )
    })?;
    if !by_platform && !definition.tenant_controllable {
        return Err(DomainError::new(
            Code::FlagNotTenantControllable,
            format!("`{flag}` is set by the platform's operators, not by the tenant"),
        ));
    }
    Ok(flag)
}

fn flag_name(flag: &str) -> Result<String, DomainError> {
    let valid = !flag.is_empty()
        && flag.len() <= 64
        && flag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        && flag.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(flag.to_string())
    } else {
        Err(DomainError::new(
            Code::InvalidFeatureFlag,
            "a feature flag name is 1-64 characters of a-z, 0-9, `_`, `.` or `-`",
        ))
    }
}

impl Aggregate for Tenant {
    const TYPE: &'static str = "tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TenantEvent::TenantCreated { name, .. } => {
                self.status = TenantStatus::Active;
                self.name = name;
            }
            TenantEvent::TenantRenamed { name } => self.name = name,
            TenantEvent::AccessPolicySet { policy } => self.access = policy,
            TenantEvent::InvitationAccepted {
                user_id,
                provider,
                subject,
            } => {
                if let Some(m) = self.members.get_mut(&user_id) {
                    m.identities.push(LinkedIdentity { provider, subject });
                }
            }
            TenantEvent::MemberJoined {
                user_id,
                email,
                role,
                provider,
                subject,
            } => {
                self.members.insert(
                    user_id,
                    Member {
                        role,
                        email: Some(email),
                        identities: vec![LinkedIdentity { provider, subject }],
                    },
                );
            }
            TenantEvent::ApiKeyCreated {
                key_id,
                name,
                role,
                prefix,
            } => {
                self.api_keys.insert(
                    key_id,
                    ApiKeyInfo {
                        name,
                        role,
                        prefix,
                        revoked: false,
                    },
                );
            }
            TenantEvent::PlanSet { quota } => self.plan = quota,
            TenantEvent::WebhookAdded {
                endpoint_id,
                url,
                topics,
            } => {
                self.webhooks.insert(
                    endpoint_id,
                    WebhookEndpoint {
                        url,
                        topics,
                        enabled: true,
                    },
                );
            }
            TenantEvent::WebhookRemoved { endpoint_id } => {
                self.webhooks.remove(&endpoint_id);
            }
            TenantEvent::WebhookDisabled { endpoint_id, .. } => {
                if let Some(w) = self.webhooks.get_mut(&endpoint_id) {
                    w.enabled = false;
                }
            }
            TenantEvent::WebhookEnabled { endpoint_id } => {
                if let Some(w) = self.webhooks.get_mut(&endpoint_id) {
                    w.enabled = true;
                }
            }
            TenantEvent::ApiKeyRevoked { key_id } => {
                if let Some(k) = self.api_keys.get_mut(&key_id) {
                    k.revoked = true;
                }
            }
            TenantEvent::KapaSettingsSet {
                project_id,
                integration_id,
                api_key_ref,
                share_user_email,
                share_company_name,
            } => {
                // New settings deserve a fresh chance: the old problem may be what they fix.
                self.engine_problem = None;
                self.kapa = Some(KapaSettings {
                    project_id,
                    integration_id,
                    api_key_ref,
                    share_user_email,
                    share_company_name,
                })
            }
            TenantEvent::AnswerPolicySet { policy } => self.answer_policy = policy,
            TenantEvent::EngineCredentialsRejected { reason } => self.engine_problem = Some(reason),
            TenantEvent::EngineCredentialsAccepted {} => self.engine_problem = None,
            TenantEvent::QualityObjectivesSet { objectives } => self.quality = objectives,
            TenantEvent::QualityObjectiveBreached { objective, .. } => {
                self.quality_breached.insert(objective.as_str().to_string());
            }
            TenantEvent::QualityObjectiveRecovered { objective, .. } => {
                self.quality_breached.remove(objective.as_str());
            }
            TenantEvent::FeatureFlagSet {
                flag,
                enabled,
                rollout_percentage,
                allow,
                deny,
                ..
            } => {
                self.feature_flags.insert(
                    flag,
                    FlagOverride {
                        enabled,
                        rollout_percentage,
                        allow,
                        deny,
                    },
                );
            }
            TenantEvent::FeatureFlagCleared { flag } => {
                self.feature_flags.remove(&flag);
            }
            TenantEvent::MemberInvited {
                user_id,
                email,
                role,
            } => {
                self.members.insert(
                    user_id,
                    Member {
                        role,
                        email,
                        identities: Vec::new(),
                    },
                );
            }
            TenantEvent::MemberRoleChanged { user_id, to, .. } => {
                if let Some(m) = self.members.get_mut(&user_id) {
                    m.role = to;
                }
            }
            TenantEvent::MemberRemoved { user_id } => {
                self.members.remove(&user_id);
            }
            TenantEvent::TenantSuspended { .. } => self.status = TenantStatus::Suspended,
            TenantEvent::TenantReactivated {} => self.status = TenantStatus::Active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<Tenant>;

    fn created() -> Vec<TenantEvent> {
        vec![
            TenantEvent::TenantCreated {
                name: "Acme".into(),
                created_by: "alice".into(),
            },
            TenantEvent::MemberInvited {
                user_id: "alice".into(),
                email: None,
                role: Role::Admin,
            },
        ]
    }

    #[tokio::test]
    async fn creating_a_tenant_makes_its_creator_admin() {
        Given::with(())
            .given_no_previous_events()
            .when_async(TenantCommand::Create {
                name: "  Acme ".into(),
                admin_user_id: "alice".into(),
                admin_email: None,
            })
            .await
            .then_expect_events(created());
    }

    #[test]
    fn e_mail_addresses_are_checked() {
        assert_eq!(email_address(" Bob@Acme.COM ").unwrap(), "bob@acme.com");
        for bad in [
            "3@od3l9tw8.com*",
            "a b@acme.com",
            "a@acme",
            "@acme.com",
            "a@b@acme.com",
            "a@-x.com",
            "a@acme..com",
        ] {
            assert_eq!(
                email_address(bad).unwrap_err().code,
                Code::InvalidEmail,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_tenant_is_created_once() {
        let err = Given::with(())
            .given(created())
            .when_async(TenantCommand::Create {
                name: "Acme".into(),
                admin_user_id: "bob".into(),
                admin_email: None,
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::TenantExists);
    }

    #[tokio::test]
    async fn the_last_admin_cannot_be_demoted_or_removed() {
        let demote = Given::with(())
            .given(created())
            .when_async(TenantCommand::ChangeMemberRole {
                user_id: "alice".into(),
                role: Role::Viewer,
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(demote.code, Code::LastAdmin);
        let remove = Given::with(())
            .given(created())
            .when_async(TenantCommand::RemoveMember {
                user_id: "alice".into(),
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(remove.code, Code::LastAdmin);
    }

    #[tokio::test]
    async fn an_admin_can_be_demoted_when_another_admin_remains() {
        let mut given = created();
        given.push(TenantEvent::MemberInvited {
            user_id: "bob".into(),
            email: Some("bob@acme.test".into()),
            role: Role::Admin,
        });
        Given::with(())
            .given(given)
            .when_async(TenantCommand::ChangeMemberRole {
                user_id: "alice".into(),
                role: Role::Operator,
            })
            .await
            .then_expect_events(vec![TenantEvent::MemberRoleChanged {
                user_id: "alice".into(),
                from: Role::Admin,
                to: Role::Operator,
            }]);
    }

    #[tokio::test]
    async fn a_suspended_tenant_accepts_nothing_but_reactivation() {
        let mut given = created();
        given.push(TenantEvent::TenantSuspended {
            reason: "unpaid".into(),
        });
        let err = Given::with(())
            .given(given.clone())
            .when_async(TenantCommand::Rename { name: "New".into() })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::TenantSuspended);
        Given::with(())
            .given(given)
            .when_async(TenantCommand::Reactivate)
            .await
            .then_expect_events(vec![TenantEvent::TenantReactivated {}]);
    }

    #[tokio::test]
    async fn kapa_settings_take_a_secret_reference_never_a_key() {
        let err = Given::with(())
            .given(created())
            .when_async(TenantCommand::SetKapaSettings {
                project_id: "p-1".into(),
                integration_id: None,
                api_key_ref: "sk-live-abcdef".into(),
                share_user_email: false,
                share_company_name: false,
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidSecretRef);
        Given::with(())
            .given(created())
            .when_async(TenantCommand::SetKapaSettings {
                project_id: "p-1".into(),
                integration_id: Some("web".into()),
                api_key_ref: "env://KAPA_KEY_ACME".into(),
                share_user_email: false,
                share_company_name: true,
            })
            .await
            .then_expect_events(vec![TenantEvent::KapaSettingsSet {
                project_id: "p-1".into(),
                integration_id: Some("web".into()),
                api_key_ref: "env://KAPA_KEY_ACME".into(),
                share_user_email: false,
                share_company_name: true,
            }]);
    }

    #[tokio::test]
    async fn a_credentials_problem_is_recorded_once_and_cleared_by_new_settings() {
        let rejected = TenantEvent::EngineCredentialsRejected {
            reason: "401".into(),
        };
        let mut given = created();
        given.push(rejected.clone());
        Given::with(())
            .given(given.clone())
            .when_async(TenantCommand::RecordEngineRejection {
                reason: "401".into(),
            })
            .await
            .then_expect_events(vec![]);
        let mut tenant = Tenant::default();
        for e in given {
            tenant.apply(e);
        }
        assert_eq!(tenant.engine_problem.as_deref(), Some("401"));
        tenant.apply(TenantEvent::KapaSettingsSet {
            project_id: "p".into(),
            integration_id: None,
            api_key_ref: "env://K".into(),
            share_user_email: false,
            share_company_name: false,
        });
        assert_eq!(tenant.engine_problem, None);
    }

    fn set(flag: &str, pct: u8, by_platform: bool) -> TenantCommand {
        TenantCommand::SetFeatureFlag {
            flag: flag.into(),
            setting: FlagOverride {
                enabled: true,
                rollout_percentage: pct,
                ..Default::default()
            },
            by_platform,
        }
    }

    async fn refused(command: TenantCommand) -> Code {
        Given::with(())
            .given(created())
            .when_async(command)
            .await
            .inspect_result()
            .unwrap_err()
            .code
    }

    #[tokio::test]
    async fn feature_flags_are_overridden_validated_and_cleared() {
        use crate::flags::{FALLBACK_ENGINE, STREAMING_ANSWERS};
        assert_eq!(
            refused(set(STREAMING_ANSWERS, 101, false)).await,
            Code::InvalidRollout
        );
        assert_eq!(
            refused(set("beta", 50, true)).await,
            Code::FeatureFlagNotFound
        );
        // A platform-only flag: the tenant's Admin may not, an operator may.
        assert_eq!(
            refused(set(FALLBACK_ENGINE, 50, false)).await,
            Code::FlagNotTenantControllable
        );
        Given::with(())
            .given(created())
            .when_async(set(FALLBACK_ENGINE, 50, true))
            .await
            .then_expect_events(vec![TenantEvent::FeatureFlagSet {
                flag: FALLBACK_ENGINE.into(),
                enabled: true,
                rollout_percentage: 50,
                allow: vec![],
                deny: vec![],
                by_platform: true,
            }]);
        let mut given = created();
        given.push(TenantEvent::FeatureFlagSet {
            flag: STREAMING_ANSWERS.into(),
            enabled: true,
            rollout_percentage: 50,
            allow: vec![],
            deny: vec![],
            by_platform: false,
        });
        Given::with(())
            .given(given)
            .when_async(TenantCommand::ClearFeatureFlag {
                flag: STREAMING_ANSWERS.into(),
                by_platform: false,
            })
            .await
            .then_expect_events(vec![TenantEvent::FeatureFlagCleared {
                flag: STREAMING_ANSWERS.into(),
            }]);
        let missing = refused(TenantCommand::ClearFeatureFlag {
            flag: STREAMING_ANSWERS.into(),
            by_platform: false,
        })
        .await;
        assert_eq!(missing, Code::FeatureFlagNotFound);
    }

    #[test]
    fn an_older_flag_event_without_lists_still_loads() {
        let old = serde_json::json!({"FeatureFlagSet": {"flag": "x", "enabled": true, "rollout_percentage": 5}});
        let event: TenantEvent = serde_json::from_value(old).unwrap();
        assert!(
            matches!(event, TenantEvent::FeatureFlagSet { allow, by_platform: false, .. } if allow.is_empty())
        );
    }

    #[tokio::test]
    async fn commands_on_an_uncreated_tenant_are_not_found() {
        let err = Given::with(())
            .given_no_previous_events()
            .when_async(TenantCommand::Rename { name: "X".into() })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::TenantNotFound);
    }
}
