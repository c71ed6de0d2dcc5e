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

impl CommandContext {
    /// The frame of a command sent outside a client's request (a worker, a sign-in, a platform
    /// operator, a connector): no idempotency key, a new correlation id.
    pub fn acting(tenant_id: TenantId, user_id: UserId, role: Role) -> Self {
        Self {
            tenant_id,
            user_id,
            role,
            correlation_id: uuid::Uuid::now_v7().to_string(),
            causation_id: None,
            idempotency_key: None,
            request_fingerprint: String::new(),
        }
    }
}
