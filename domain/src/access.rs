//! Who may become and stay a member of a tenant: the tenant's access policy, the identities
//! that sign in, and the pure decision of what a verified identity is to the tenant
//! ([`crate::tenant::Tenant::admit`]). The sign-in flow (docs/identity.md) verifies the
//! identity with its provider first; this module only decides.
use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::{DomainError, Role};

crate::text_enum! {
    /// An identity provider a deployment may configure.
    pub enum Provider {
        Google = "google",
        Microsoft = "microsoft",
        Github = "github",
    }
}

crate::text_enum! {
    /// What a tenant's webhook endpoint can subscribe to.
    pub enum WebhookTopic {
        AnswerDownvoted = "answer.downvoted",
        QuestionBlocked = "question.blocked",
        SourceSyncFailed = "source.sync_failed",
        ConversationEscalated = "conversation.escalated",
        MemberChanged = "member.changed",
        /// An answer-quality objective breached or met again (docs/observability.md).
        QualityChanged = "quality.changed",
    }
}

crate::text_enum! {
    /// Who must sign in with a second factor.
    pub enum MfaRequirement {
        Nobody = "nobody",
        Admins = "admins",
        Everyone = "everyone",
    }
}

// `text_enum!` writes the derives, so the default is spelled out.
#[allow(clippy::derivable_impls)]
impl Default for MfaRequirement {
    fn default() -> Self {
        MfaRequirement::Nobody
    }
}

impl MfaRequirement {
    /// Whether a member with `role` must use a second factor.
    pub fn applies_to(self, role: Role) -> bool {
        match self {
            MfaRequirement::Nobody => false,
            MfaRequirement::Admins => role == Role::Admin,
            MfaRequirement::Everyone => true,
        }
    }
}

/// How people join and sign in to a tenant. The default admits invited people through any
/// configured provider, without a second factor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessPolicy {
    /// When not empty, every sign-in's verified e-mail address must be in one of these domains
    /// (invited people too).
    pub allowed_domains: Vec<String>,
    /// When not empty, only these providers may be used.
    pub allowed_providers: Vec<Provider>,
    /// Sign-in must come from an organisation's directory: Google Workspace (the id_token's
    /// `hd` is an allowed domain, or any when none is listed) or a Microsoft Entra
    /// organisation (not a personal Microsoft account). GitHub accounts are personal: refused.
    pub sso_required: bool,
    /// Who needs a second factor.
    pub mfa_required: MfaRequirement,
    /// People of an allowed domain who were not invited join as Viewers on first sign-in
    /// (needs `allowed_domains`).
    pub domain_members_join: bool,
}

/// Microsoft's tenant of personal accounts: an id_token from it is not an organisation's.
pub const MICROSOFT_CONSUMER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

impl AccessPolicy {
    /// The policy with domains lower-cased and checked, providers de-duplicated.
    pub fn validated(mut self) -> Result<Self, DomainError> {
        let mut domains = Vec::new();
        for d in &self.allowed_domains {
            let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
            let valid = !d.is_empty()
                && d.len() <= 253
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && d.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
            if !valid {
                return Err(DomainError::new(
                    Code::InvalidAccessPolicy,
                    format!("`{d}` is not a domain name (e.g. acme.com)"),
                ));
            }
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        if domains.len() > 50 {
            return Err(DomainError::new(
                Code::InvalidAccessPolicy,
                "at most 50 allowed domains",
            ));
        }
        if self.domain_members_join && domains.is_empty() {
            return Err(DomainError::new(
                Code::InvalidAccessPolicy,
                "domain_members_join needs at least one allowed domain",
            ));
        }
        self.allowed_domains = domains;
        self.allowed_providers.sort();
        self.allowed_providers.dedup();
        Ok(self)
    }

    /// Whether `domain` is one of the allowed domains.
    pub fn domain_allowed(&self, domain: &str) -> bool {
        self.allowed_domains.iter().any(|d| d == domain)
    }
}

/// An identity its provider has vouched for (signature, issuer, audience, nonce checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// Who vouches.
    pub provider: Provider,
    /// The provider's stable id of the person.
    pub subject: String,
    /// The address, only when the provider says it is verified; lower-cased.
    pub email: Option<String>,
    /// Google Workspace's hosted domain (`hd`), when the account belongs to one.
    pub hosted_domain: Option<String>,
    /// Microsoft's directory (`tid`), when the account belongs to one.
    pub directory: Option<String>,
}

impl VerifiedIdentity {
    /// The domain of the verified address.
    pub fn email_domain(&self) -> Option<&str> {
        self.email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d)
    }

    /// Whether the account belongs to an organisation's directory, as `policy` understands it.
    pub fn from_directory(&self, policy: &AccessPolicy) -> bool {
        match self.provider {
            Provider::Google => self
                .hosted_domain
                .as_deref()
                .is_some_and(|hd| policy.allowed_domains.is_empty() || policy.domain_allowed(hd)),
            Provider::Microsoft => self
                .directory
                .as_deref()
                .is_some_and(|tid| tid != MICROSOFT_CONSUMER_TENANT),
            Provider::Github => false,
        }
    }
}

/// A provider account linked to a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    /// The provider.
    pub provider: Provider,
    /// Its id of the person.
    pub subject: String,
}

/// What a verified identity is to a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A member who signed in before with this identity.
    Member {
        /// The member.
        user_id: String,
        /// Their role now.
        role: Role,
    },
    /// An invited person signing in for the first time: the invitation is accepted.
    AcceptsInvitation {
        /// The invited member.
        user_id: String,
        /// The role they were invited with.
        role: Role,
    },
    /// Someone of an allowed domain joining uninvited (`domain_members_join`).
    Joins {
        /// Their role.
        role: Role,
    },
}

/// Refuses with `code`.
pub(crate) fn refuse(code: Code, detail: impl Into<String>) -> DomainError {
    DomainError::new(code, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_and_checked() {
        let policy = AccessPolicy {
            allowed_domains: vec![" @Acme.COM ".into(), "acme.com".into()],
            ..Default::default()
        }
        .validated()
        .unwrap();
        assert_eq!(policy.allowed_domains, vec!["acme.com".to_string()]);
        for bad in ["acme", "acme.com/x", ".acme.com", "ac me.com"] {
            let err = AccessPolicy {
                allowed_domains: vec![bad.into()],
                ..Default::default()
            }
            .validated()
            .unwrap_err();
            assert_eq!(err.code, Code::InvalidAccessPolicy, "{bad}");
        }
    }

    #[test]
    fn mfa_requirement_by_role() {
        assert!(MfaRequirement::Admins.applies_to(Role::Admin));
        assert!(!MfaRequirement::Admins.applies_to(Role::Operator));
        assert!(MfaRequirement::Everyone.applies_to(Role::Viewer));
        assert!(!MfaRequirement::Nobody.applies_to(Role::Admin));
    }
}
