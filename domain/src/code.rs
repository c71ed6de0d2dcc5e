//! The one catalogue of error codes. Every error the service returns carries one of these; the
//! code alone decides the HTTP status, and docs/errors.md has an anchor for each (a test
//! compares the two). Clients switch on the code; the detail text is for people.
use serde::{Deserialize, Serialize};

macro_rules! catalogue {
    ($($variant:ident = ($status:literal, $name:literal);)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Code {
            $(
                #[doc = concat!("`", $name, "` (HTTP ", stringify!($status), ")")]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in catalogue order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as clients see it (snake_case).
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The HTTP status every error with this code is answered with.
            pub const fn status(self) -> u16 {
                match self { $(Code::$variant => $status,)* }
            }
        }
    };
}

catalogue! {
    MalformedJson = (400, "malformed_json");
    UnreadableBody = (400, "unreadable_body");
    InvalidPath = (400, "invalid_path");
    InvalidQuery = (400, "invalid_query");
    InvalidIdempotencyKey = (400, "invalid_idempotency_key");
    InvalidLimit = (400, "invalid_limit");
    InvalidCursor = (400, "invalid_cursor");
    InvalidStatus = (400, "invalid_status");
    InvalidReaction = (400, "invalid_reaction");
    InvalidIntent = (400, "invalid_intent");
    InvalidSearch = (400, "invalid_search");
    InvalidRange = (400, "invalid_range");
    InvalidWindow = (400, "invalid_window");
    InvalidBucket = (400, "invalid_bucket");
    InvalidTimeZone = (400, "invalid_time_zone");
    InvalidFormat = (400, "invalid_format");
    InvalidObjectType = (400, "invalid_object_type");
    InvalidRedirectUri = (400, "invalid_redirect_uri");
    TokenMissing = (401, "token_missing");
    TokenExpired = (401, "token_expired");
    TokenInvalid = (401, "token_invalid");
    PlatformCredentialMissing = (401, "platform_credential_missing");
    PlatformCredentialInvalid = (401, "platform_credential_invalid");
    SessionRevoked = (401, "session_revoked");
    SessionExpired = (401, "session_expired");
    SignInFailed = (401, "sign_in_failed");
    SignInStateInvalid = (401, "sign_in_state_invalid");
    RefreshTokenInvalid = (401, "refresh_token_invalid");
    RefreshTokenReused = (401, "refresh_token_reused");
    MfaChallengeInvalid = (401, "mfa_challenge_invalid");
    MfaCodeInvalid = (401, "mfa_code_invalid");
    ApiKeyInvalid = (401, "api_key_invalid");
    WebhookSignatureInvalid = (401, "webhook_signature_invalid");
    Forbidden = (403, "forbidden");
    PlatformOnly = (403, "platform_only");
    FlagNotTenantControllable = (403, "flag_not_tenant_controllable");
    NotAMember = (403, "not_a_member");
    ProviderNotAllowed = (403, "provider_not_allowed");
    EmailDomainNotAllowed = (403, "email_domain_not_allowed");
    SsoRequired = (403, "sso_required");
    NotAnOperator = (403, "not_an_operator");
    CsrfTokenInvalid = (403, "csrf_token_invalid");
    DevelopmentOnly = (403, "development_only");
    RouteNotFound = (404, "route_not_found");
    ProjectionNotFound = (404, "projection_not_found");
    DeadLetterNotFound = (404, "dead_letter_not_found");
    ObjectNotFound = (404, "object_not_found");
    TenantNotFound = (404, "tenant_not_found");
    ConversationNotFound = (404, "conversation_not_found");
    AnswerNotFound = (404, "answer_not_found");
    SourceNotFound = (404, "source_not_found");
    MemberNotFound = (404, "member_not_found");
    FeatureFlagNotFound = (404, "feature_flag_not_found");
    ProviderNotFound = (404, "provider_not_found");
    ApiKeyNotFound = (404, "api_key_not_found");
    SessionNotFound = (404, "session_not_found");
    WebhookNotFound = (404, "webhook_not_found");
    DeliveryNotFound = (404, "delivery_not_found");
    MethodNotAllowed = (405, "method_not_allowed");
    ConcurrentModification = (409, "concurrent_modification");
    IdempotencyKeyInProgress = (409, "idempotency_key_in_progress");
    DeadLetterStillFailing = (409, "dead_letter_still_failing");
    TenantExists = (409, "tenant_exists");
    TenantSuspended = (409, "tenant_suspended");
    TenantNotSuspended = (409, "tenant_not_suspended");
    LastAdmin = (409, "last_admin");
    MemberExists = (409, "member_exists");
    RoleUnchanged = (409, "role_unchanged");
    ConversationExists = (409, "conversation_exists");
    ConversationResolved = (409, "conversation_resolved");
    ConversationEscalated = (409, "conversation_escalated");
    QuestionPending = (409, "question_pending");
    KapaNotConfigured = (409, "kapa_not_configured");
    SourceExists = (409, "source_exists");
    SourceRemoved = (409, "source_removed");
    SyncInProgress = (409, "sync_in_progress");
    SyncNotRequested = (409, "sync_not_requested");
    SyncNotRunning = (409, "sync_not_running");
    MfaAlreadyEnrolled = (409, "mfa_already_enrolled");
    MfaNotEnrolled = (409, "mfa_not_enrolled");
    ApiKeyRevoked = (409, "api_key_revoked");
    WebhookReplayed = (409, "webhook_replayed");
    PayloadTooLarge = (413, "payload_too_large");
    UnsupportedMediaType = (415, "unsupported_media_type");
    InvalidBody = (422, "invalid_body");
    InvalidQuestion = (422, "invalid_question");
    InvalidName = (422, "invalid_name");
    InvalidIdentifier = (422, "invalid_identifier");
    InvalidEmail = (422, "invalid_email");
    InvalidSecretRef = (422, "invalid_secret_ref");
    InvalidFeatureFlag = (422, "invalid_feature_flag");
    InvalidRollout = (422, "invalid_rollout");
    InvalidLocation = (422, "invalid_location");
    InvalidSettings = (422, "invalid_settings");
    InvalidComment = (422, "invalid_comment");
    InvalidReason = (422, "invalid_reason");
    InvalidError = (422, "invalid_error");
    InvalidGuardrailPolicy = (422, "invalid_guardrail_policy");
    InvalidAccessPolicy = (422, "invalid_access_policy");
    ApiKeyRoleTooHigh = (422, "api_key_role_too_high");
    InvalidWebhookUrl = (422, "invalid_webhook_url");
    QueryBlocked = (422, "query_blocked");
    ReasonsNeedDownvote = (422, "reasons_need_downvote");
    EmptyUpdate = (422, "empty_update");
    IdempotencyKeyReused = (422, "idempotency_key_reused");
    RateLimited = (429, "rate_limited");
    InternalError = (500, "internal_error");
    StoredDataUnreadable = (500, "stored_data_unreadable");
    EngineUnavailable = (502, "engine_unavailable");
    IdentityProviderUnavailable = (502, "identity_provider_unavailable");
    ServiceUnavailable = (503, "service_unavailable");
    NotReady = (503, "not_ready");
    ShuttingDown = (503, "shutting_down");
    RequestTimedOut = (503, "request_timed_out");
}

impl Code {
    /// Where the code is explained: an anchor of docs/errors.md.
    pub fn doc_anchor(self) -> String {
        format!("docs/errors.md#{}", self.as_str())
    }

    /// A rejection by the domain (4xx) rather than a failure of ours (5xx).
    pub const fn is_client_error(self) -> bool {
        self.status() < 500
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_as_its_name_and_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!((400..600).contains(&code.status()));
        }
    }
}
