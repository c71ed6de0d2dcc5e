use domain::{Role, TenantId, UserId};

/// Who sends a command and in what frame: taken from the verified token and the request,
/// never from the request body.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// A digest of what the request asked (method, route, body). Reusing an idempotency key for
    /// a different request is refused instead of answered with the other request's result.
    pub request_fingerprint: String,
}
