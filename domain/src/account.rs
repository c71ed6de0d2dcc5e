//! A person's sign-in record within one tenant: sign-ins and failed attempts, the second factor,
//! revoked sessions. Its events are the identity part of the audit trail; the secrets themselves
//! (TOTP seeds, refresh tokens, codes) live hashed or sealed in the identity tables, never here.
//!
//! The aggregate id is `tenant/uuid`, the UUID derived from the person's user id (or, for a
//! sign-in that matched nobody, from the address or provider subject tried), so every attempt
//! on the same person lands on one stream.
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::Provider;
use crate::code::Code;
use crate::{domain_event, DomainError, TenantId};

/// The namespace of account ids (a fixed random UUID: changing it would split every stream).
const ACCOUNT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_0b7e_8a2d_4c41_9d55_2f3e_1a7b_c901);

/// The account id of `who` (a user id, or `email:<address>` for a sign-in that matched nobody).
pub fn account_id(tenant: &TenantId, who: &str) -> Uuid {
    Uuid::new_v5(
        &ACCOUNT_NAMESPACE,
        format!("{}\n{}", tenant.as_str(), who).as_bytes(),
    )
}

/// How a second factor was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaMethod {
    /// A TOTP code (RFC 6238).
    Totp,
    /// A single-use recovery code.
    RecoveryCode,
}

/// What can be recorded of an account.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    /// A session was issued.
    RecordSignIn {
        /// The user.
        user_id: String,
        /// With which provider.
        provider: Provider,
        /// The session.
        session_id: Uuid,
        /// With a second factor.
        mfa: bool,
    },
    /// A sign-in was refused (never with a code or token in it).
    RecordSignInFailure {
        /// With which provider.
        provider: Provider,
        /// The error code it was refused with.
        reason: Code,
    },
    /// A TOTP factor was confirmed.
    EnrolMfa {
        /// The user.
        user_id: String,
    },
    /// A second factor was used.
    RecordMfaUse {
        /// How.
        method: MfaMethod,
    },
    /// An Admin removed the factor (the member enrols again).
    ResetMfa,
    /// Sessions were revoked.
    RevokeSessions {
        /// Which.
        sessions: Vec<Uuid>,
        /// Why: `sign_out`, `admin`, `refresh_token_reused`, `member_removed`.
        reason: String,
    },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// A session was issued.
    SignedIn {
        /// The user.
        user_id: String,
        /// With which provider.
        provider: Provider,
        /// The session.
        session_id: Uuid,
        /// With a second factor.
        mfa: bool,
    },
    /// A sign-in was refused.
    SignInFailed {
        /// With which provider.
        provider: Provider,
        /// The error code.
        reason: Code,
    },
    /// A TOTP factor was confirmed.
    MfaEnrolled {
        /// The user.
        user_id: String,
    },
    /// A second factor was used.
    MfaUsed {
        /// How.
        method: MfaMethod,
    },
    /// The factor was removed by an Admin.
    MfaReset {},
    /// Sessions were revoked.
    SessionsRevoked {
        /// Which.
        sessions: Vec<Uuid>,
        /// Why.
        reason: String,
    },
}

domain_event!(AccountEvent {
    SignedIn,
    SignInFailed,
    MfaEnrolled,
    MfaUsed,
    MfaReset,
    SessionsRevoked,
});

/// The account: whether a second factor is enrolled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    /// A confirmed TOTP factor exists.
    pub mfa_enrolled: bool,
}

impl Account {
    fn decide(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, DomainError> {
        Ok(vec![match command {
            AccountCommand::RecordSignIn {
                user_id,
                provider,
                session_id,
                mfa,
            } => AccountEvent::SignedIn {
                user_id,
                provider,
                session_id,
                mfa,
            },
            AccountCommand::RecordSignInFailure { provider, reason } => {
                AccountEvent::SignInFailed { provider, reason }
            }
            AccountCommand::EnrolMfa { user_id } => {
                if self.mfa_enrolled {
                    return Err(DomainError::new(
                        Code::MfaAlreadyEnrolled,
                        "a second factor is already enrolled",
                    ));
                }
                AccountEvent::MfaEnrolled { user_id }
            }
            AccountCommand::RecordMfaUse { method } => AccountEvent::MfaUsed { method },
            AccountCommand::ResetMfa => {
                if !self.mfa_enrolled {
                    return Err(DomainError::new(
                        Code::MfaNotEnrolled,
                        "the member has no second factor to reset",
                    ));
                }
                AccountEvent::MfaReset {}
            }
            AccountCommand::RevokeSessions { sessions, reason } => {
                if sessions.is_empty() {
                    return Ok(vec![]);
                }
                AccountEvent::SessionsRevoked { sessions, reason }
            }
        }])
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
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
            AccountEvent::MfaEnrolled { .. } => self.mfa_enrolled = true,
            AccountEvent::MfaReset {} => self.mfa_enrolled = false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    #[tokio::test]
    async fn a_factor_is_enrolled_once_and_reset_only_when_enrolled() {
        TestFramework::<Account>::with(())
            .given(vec![AccountEvent::MfaEnrolled {
                user_id: "u".into(),
            }])
            .when_async(AccountCommand::EnrolMfa {
                user_id: "u".into(),
            })
            .await
            .then_expect_error_message("mfa_already_enrolled: a second factor is already enrolled");
        let err = TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when_async(AccountCommand::ResetMfa)
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::MfaNotEnrolled);
    }

    #[test]
    fn account_ids_are_stable_and_tenant_bound() {
        let a = TenantId::parse("acme").unwrap();
        let b = TenantId::parse("beta").unwrap();
        assert_eq!(account_id(&a, "u1"), account_id(&a, "u1"));
        assert_ne!(account_id(&a, "u1"), account_id(&b, "u1"));
    }
}
