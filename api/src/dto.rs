//! Request and response bodies of the HTTP API. They mirror the domain's types but belong to the
//! API: renaming a domain field must not silently change the public contract.
use std::collections::BTreeMap;

use domain::access::{AccessPolicy, MfaRequirement, Provider};
use domain::conversation::{DownvoteReason, Feedback, Reaction};
use domain::guardrail::{GuardrailAction, GuardrailPolicy, GuardrailRule, OutputAction};
use domain::knowledge_source::{KnowledgeSource, SourceKind, SourceStatus, SyncState};
use domain::tenant::{AnswerPolicy, Tenant, TenantStatus};
use domain::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

macro_rules! mirror_enum {
    ($(#[$m:meta])* $dto:ident <=> $domain:ident { $($v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $dto { $($v),+ }
        impl From<$dto> for $domain {
            fn from(v: $dto) -> Self { match v { $($dto::$v => $domain::$v),+ } }
        }
        impl From<$domain> for $dto {
            fn from(v: $domain) -> Self { match v { $($domain::$v => $dto::$v),+ } }
        }
    };
}

mirror_enum!(
    /// A member's role: admin administers the tenant, operator asks and manages sources, viewer reads.
    RoleDto <=> Role { Admin, Operator, Viewer }
);
mirror_enum!(ReactionDto <=> Reaction { Upvote, Downvote });
mirror_enum!(
    /// An identity provider.
    ProviderDto <=> Provider { Google, Microsoft, Github }
);
mirror_enum!(
    /// Who must sign in with a second factor.
    MfaRequirementDto <=> MfaRequirement { Nobody, Admins, Everyone }
);
mirror_enum!(
    /// Why an answer was downvoted.
    DownvoteReasonDto <=> DownvoteReason { Incorrect, Irrelevant, Unaddressed }
);
mirror_enum!(SourceKindDto <=> SourceKind { Website, Docs, Github, Zendesk, Confluence, Notion, Slack, File });
mirror_enum!(TenantStatusDto <=> TenantStatus { Unprovisioned, Active, Suspended });
mirror_enum!(SourceStatusDto <=> SourceStatus { NotAdded, Active, Removed });

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// 1-200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameTenantRequest {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KapaSettingsRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^\\s*[^\\s\\x00-\\x1f\\x7f-\\x9f]+\\s*$"
    )]
    pub project_id: String,
    /// Blank is the same as absent.
    #[schema(pattern = r"^(?:\s*|(?=[\s\S]{1,200}$)\s*[^\s\x00-\x1f\x7f-\x9f]+\s*)$")]
    pub integration_id: Option<String>,
    /// A reference to the API key, never the key: `env://KAPA_<TENANT>_...`,
    /// `file:///<secrets root>/<tenant>/...` or `vault://<mount>/tenants/<tenant>/...#field`
    /// (docs/kapa.md).
    #[schema(min_length = 1, max_length = 500)]
    pub api_key_ref: String,
    /// Send the asking user's e-mail address to Kapa (default: no).
    #[serde(default)]
    pub share_user_email: bool,
    /// Send the company's name to Kapa (default: no).
    #[serde(default)]
    pub share_company_name: bool,
}

/// What a guardrail rule does with a question in which it finds something.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailActionsDto {
    pub email: Option<GuardrailAction>,
    pub phone: Option<GuardrailAction>,
    pub payment_card_number: Option<GuardrailAction>,
    pub iban: Option<GuardrailAction>,
    pub national_id: Option<GuardrailAction>,
    pub secret: Option<GuardrailAction>,
    /// Prompt injection can be blocked or allowed, not redacted.
    pub prompt_injection: Option<InjectionActionDto>,
    pub blocked_term: Option<GuardrailAction>,
}

mirror_enum!(
    /// What happens to a question that tries to override the assistant's instructions.
    InjectionActionDto <=> InjectionAction { Block, Allow }
);

/// The two choices prompt injection has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectionAction {
    Block,
    Allow,
}

impl GuardrailActionsDto {
    fn into_map(self) -> BTreeMap<GuardrailRule, GuardrailAction> {
        let injection = self
            .prompt_injection
            .map(|a| match InjectionAction::from(a) {
                InjectionAction::Block => GuardrailAction::Block,
                InjectionAction::Allow => GuardrailAction::Allow,
            });
        [
            (GuardrailRule::Email, self.email),
            (GuardrailRule::Phone, self.phone),
            (GuardrailRule::PaymentCard, self.payment_card_number),
            (GuardrailRule::Iban, self.iban),
            (GuardrailRule::NationalId, self.national_id),
            (GuardrailRule::Secret, self.secret),
            (GuardrailRule::PromptInjection, injection),
            (GuardrailRule::BlockedTerm, self.blocked_term),
        ]
        .into_iter()
        .filter_map(|(rule, action)| Some((rule, action?)))
        .collect()
    }
}

/// A string of 1 to `max` characters, not blank, without control characters (the schema of the
/// hand-written string newtypes below; the domain checks the same).
fn printable_text(max: usize) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(
            "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        ))
        .into()
}

/// A blocked term: 1-100 characters, not blank, no control characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlockedTerm(pub String);

impl utoipa::PartialSchema for BlockedTerm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        printable_text(100)
    }
}

impl ToSchema for BlockedTerm {}

/// The tenant's guardrails and answer reuse.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerPolicyRequest {
    /// Per rule; rules left out keep their default (card numbers, prompt injection and
    /// blocked terms block; other personal data is redacted).
    #[serde(default)]
    pub actions: GuardrailActionsDto,
    /// Words or phrases (case-insensitive, whole words) never sent to the engine nor shown.
    #[serde(default)]
    #[schema(max_items = 200)]
    pub blocked_terms: Vec<BlockedTerm>,
    /// What happens to an answer that leaks personal data or a blocked term (default: redact).
    pub output: Option<OutputAction>,
    /// Answer a question identical to a recently upvoted one with that answer (default: no).
    #[serde(default)]
    pub reuse_upvoted_answers: bool,
}

impl From<AnswerPolicyRequest> for AnswerPolicy {
    fn from(r: AnswerPolicyRequest) -> Self {
        AnswerPolicy {
            guardrails: GuardrailPolicy {
                actions: r.actions.into_map(),
                blocked_terms: r.blocked_terms.into_iter().map(|t| t.0).collect(),
                output: r.output,
            },
            reuse_upvoted_answers: r.reuse_upvoted_answers,
        }
    }
}

/// The tenant's guardrails and answer reuse, every rule with the action it takes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AnswerPolicyView {
    pub actions: BTreeMap<String, GuardrailAction>,
    pub blocked_terms: Vec<String>,
    pub output: OutputAction,
    pub reuse_upvoted_answers: bool,
}

impl From<AnswerPolicy> for AnswerPolicyView {
    fn from(p: AnswerPolicy) -> Self {
        Self {
            actions: GuardrailRule::ALL
                .iter()
                .map(|rule| (rule.to_string(), p.guardrails.action(*rule)))
                .collect(),
            output: p.guardrails.output_action(),
            blocked_terms: p.guardrails.blocked_terms,
            reuse_upvoted_answers: p.reuse_upvoted_answers,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureFlagRequest {
    pub enabled: bool,
    /// 0-100; the share of the tenant's users who get `on` (by a stable hash of the user).
    #[serde(default = "hundred", deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 100)]
    pub rollout_percentage: u8,
    /// Users who always get `on`.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub allow: Vec<FlagUser>,
    /// Users who always get `off` (wins over `allow`).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub deny: Vec<FlagUser>,
}

/// A user in an allow or deny list: 1-200 characters, not blank, no control characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlagUser(pub String);

impl utoipa::PartialSchema for FlagUser {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        printable_text(200)
    }
}

impl ToSchema for FlagUser {}

impl FeatureFlagRequest {
    pub fn setting(&self) -> domain::flags::FlagOverride {
        domain::flags::FlagOverride {
            enabled: self.enabled,
            rollout_percentage: self.rollout_percentage,
            allow: self.allow.iter().map(|u| u.0.clone()).collect(),
            deny: self.deny.iter().map(|u| u.0.clone()).collect(),
        }
    }
}

/// A flag the platform defines (path parameter): one of its keys.
pub struct FlagKey;

impl utoipa::PartialSchema for FlagKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        flag_keys(domain::flags::FLAGS.iter().map(|f| f.key))
    }
}

impl ToSchema for FlagKey {}

/// A flag a tenant's Admin may override (path parameter).
pub struct TenantFlagKey;

impl utoipa::PartialSchema for TenantFlagKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        flag_keys(
            domain::flags::FLAGS
                .iter()
                .filter(|f| f.tenant_controllable)
                .map(|f| f.key),
        )
    }
}

impl ToSchema for TenantFlagKey {}

fn flag_keys<'a>(
    keys: impl Iterator<Item = &'a str>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(keys.map(str::to_string).collect::<Vec<_>>()))
        .into()
}

fn hundred() -> u8 {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteMemberRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^\\s*[^\\s\\x00-\\x1f\\x7f-\\x9f]+\\s*$"
    )]
    /// The member's id; omitted, one is made (invite by address: the person signs in with a
    /// provider that verifies this address).
    pub user_id: Option<String>,
    #[schema(max_length = 320, format = Email, pattern = "^[^\\x00]*$")]
    pub email: Option<String>,
    pub role: RoleDto,
}

/// Who may join the tenant and how they sign in (replaces the whole policy).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccessPolicyRequest {
    /// When not empty, every sign-in's verified address must be in one of these domains.
    #[schema(max_items = 50, value_type = Vec<String>, example = json!(["acme.com"]))]
    pub allowed_domains: Vec<String>,
    /// When not empty, only these providers may be used.
    pub allowed_providers: Vec<ProviderDto>,
    /// Sign-in must come from an organisation's directory (Google Workspace, Microsoft Entra).
    pub sso_required: bool,
    /// Who needs a second factor.
    pub mfa_required: Option<MfaRequirementDto>,
    /// People of an allowed domain join as viewers on first sign-in, uninvited.
    pub domain_members_join: bool,
}

impl AccessPolicyRequest {
    pub fn policy(&self) -> AccessPolicy {
        AccessPolicy {
            allowed_domains: self.allowed_domains.clone(),
            allowed_providers: self.allowed_providers.iter().map(|p| (*p).into()).collect(),
            sso_required: self.sso_required,
            mfa_required: self.mfa_required.map(Into::into).unwrap_or_default(),
            domain_members_join: self.domain_members_join,
        }
    }
}

/// The access policy as set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessPolicyView {
    pub allowed_domains: Vec<String>,
    pub allowed_providers: Vec<ProviderDto>,
    pub sso_required: bool,
    pub mfa_required: MfaRequirementDto,
    pub domain_members_join: bool,
}

impl From<AccessPolicy> for AccessPolicyView {
    fn from(p: AccessPolicy) -> Self {
        Self {
            allowed_domains: p.allowed_domains,
            allowed_providers: p.allowed_providers.into_iter().map(Into::into).collect(),
            sso_required: p.sso_required,
            mfa_required: p.mfa_required.into(),
            domain_members_join: p.domain_members_join,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    pub role: RoleDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendTenantRequest {
    #[schema(min_length = 1, max_length = 1000, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// 1-4000 characters.
    #[schema(min_length = 1, max_length = 4000, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub question: String,
    /// Where the question was asked (`web`, `slack`, `zendesk`...). Defaults to `api`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^\\s*[^\\s\\x00-\\x1f\\x7f-\\x9f]+\\s*$"
    )]
    pub channel: Option<String>,
    /// The Kapa integration the question came through, if any.
    /// Blank is the same as absent.
    #[schema(pattern = r"^(?:\s*|(?=[\s\S]{1,200}$)\s*[^\s\x00-\x1f\x7f-\x9f]+\s*)$")]
    pub integration_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    pub reaction: ReactionDto,
    /// Only with a downvote.
    #[serde(default)]
    pub reasons: Vec<DownvoteReasonDto>,
    /// Up to 2000 characters.
    #[schema(max_length = 2000, pattern = "^[^\\x00]*$")]
    pub comment: Option<String>,
}

impl From<FeedbackRequest> for Feedback {
    fn from(r: FeedbackRequest) -> Self {
        Feedback {
            reaction: r.reaction.into(),
            reasons: r.reasons.into_iter().map(Into::into).collect(),
            comment: r.comment,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalateRequest {
    #[schema(max_length = 1000, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSourceRequest {
    pub kind: SourceKindDto,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub name: String,
    /// A URL for websites and docs, `owner/repo` for GitHub, an account or space for the others.
    #[schema(min_length = 1, max_length = 2000, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub location: String,
    /// Connector settings (no credentials: reference secrets instead).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSourceRequest {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 2000, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub location: Option<String>,
    pub settings: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSyncRequest {
    /// Chosen by the sync worker; names this run in the later complete or fail call.
    pub sync_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteSyncRequest {
    pub sync_id: Uuid,
    /// A whole number; `12.0` is read as 12, as JSON Schema's `integer` allows.
    #[serde(deserialize_with = "whole_number")]
    pub document_count: u64,
}

/// A non-negative whole number, also when written with a zero fraction (`12.0`), as JSON
/// Schema's `integer` allows; out of the target type's range is an error.
fn whole_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = serde_json::Number::deserialize(d)?;
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Some(f as u64),
        _ => None,
    };
    whole
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not a whole number in range")))
}

/// A tenant's answer-quality objectives (docs/observability.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityObjectivesRequest {
    /// Share of votes that are upvotes (the seed's 0.8).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub helpful_rate: f64,
    /// Share of questions answered (the seed's 0.95).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub answered_rate: f64,
    /// The rolling window, in days; a whole number.
    #[schema(minimum = 1, maximum = 90)]
    #[serde(deserialize_with = "whole_number")]
    pub window_days: u32,
    /// Fewer votes (or questions) than this in the window decide nothing; a whole number.
    #[schema(minimum = 1, maximum = 100000)]
    #[serde(deserialize_with = "whole_number")]
    pub min_sample: u32,
}

impl From<QualityObjectivesRequest> for domain::quality::QualityObjectives {
    fn from(r: QualityObjectivesRequest) -> Self {
        Self {
            helpful_rate: r.helpful_rate,
            answered_rate: r.answered_rate,
            window_days: r.window_days,
            min_sample: r.min_sample,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailSyncRequest {
    pub sync_id: Uuid,
    #[schema(min_length = 1, max_length = 2000, pattern = "^[^\\x00]*\\S[^\\x00]*$")]
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KapaSettingsView {
    pub project_id: String,
    pub integration_id: Option<String>,
    pub api_key_ref: String,
    pub share_user_email: bool,
    pub share_company_name: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeatureFlagView {
    pub enabled: bool,
    pub rollout_percentage: u8,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub email: Option<String>,
    pub role: RoleDto,
    /// Invited and not signed in yet.
    pub invitation_pending: bool,
}

/// The tenant as its events say it is now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub status: TenantStatusDto,
    pub kapa: Option<KapaSettingsView>,
    /// Why Kapa last refused the tenant's credentials, until it accepts them again or the
    /// settings change: a configuration failure for the admin to fix.
    pub engine_problem: Option<String>,
    pub answer_policy: AnswerPolicyView,
    pub feature_flags: BTreeMap<String, FeatureFlagView>,
    pub members: Vec<MemberView>,
    pub access_policy: AccessPolicyView,
    pub version: u64,
}

impl TenantView {
    pub fn new(id: String, t: Tenant, version: u64) -> Self {
        Self {
            id,
            name: t.name,
            status: t.status.into(),
            kapa: t.kapa.map(|k| KapaSettingsView {
                project_id: k.project_id,
                integration_id: k.integration_id,
                api_key_ref: k.api_key_ref,
                share_user_email: k.share_user_email,
                share_company_name: k.share_company_name,
            }),
            engine_problem: t.engine_problem,
            answer_policy: t.answer_policy.into(),
            feature_flags: t
                .feature_flags
                .into_iter()
                .map(|(k, f)| {
                    (
                        k,
                        FeatureFlagView {
                            enabled: f.enabled,
                            rollout_percentage: f.rollout_percentage,
                            allow: f.allow,
                            deny: f.deny,
                        },
                    )
                })
                .collect(),
            members: t
                .members
                .into_iter()
                .map(|(user_id, m)| MemberView {
                    user_id,
                    invitation_pending: m.invitation_pending(),
                    email: m.email,
                    role: m.role.into(),
                })
                .collect(),
            access_policy: t.access.into(),
            version,
        }
    }
}

/// A knowledge source as its events say it is now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceView {
    pub id: Uuid,
    pub kind: Option<SourceKindDto>,
    pub name: String,
    pub location: String,
    pub settings: BTreeMap<String, String>,
    pub status: SourceStatusDto,
    /// `idle`, `requested` or `running`.
    pub sync_state: String,
    pub running_sync_id: Option<Uuid>,
    pub document_count: Option<u64>,
    pub version: u64,
}

impl SourceView {
    pub fn new(id: Uuid, s: KnowledgeSource, version: u64) -> Self {
        let (sync_state, running_sync_id) = match s.sync {
            SyncState::Idle => ("idle", None),
            SyncState::Requested => ("requested", None),
            SyncState::Running { sync_id } => ("running", Some(sync_id)),
        };
        Self {
            id,
            kind: s.kind.map(Into::into),
            name: s.name,
            location: s.location,
            settings: s.settings,
            status: s.status.into(),
            sync_state: sync_state.to_string(),
            running_sync_id,
            document_count: s.document_count,
            version,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    pub status: String,
}

/// A moment in a query string: RFC 3339, years 0000-9999 (RFC 3339's own range, and inside
/// what the database can compare), so no parsable date ever reaches SQL out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Moment(pub chrono::DateTime<chrono::Utc>);

impl<'de> Deserialize<'de> for Moment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use chrono::Datelike;
        let t = chrono::DateTime::<chrono::Utc>::deserialize(d)?;
        if (0..=9999).contains(&t.year()) {
            Ok(Moment(t))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{t}` is outside the years 0000-9999"
            )))
        }
    }
}

impl utoipa::PartialSchema for Moment {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Moment {}
