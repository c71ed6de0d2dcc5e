use domain::error::RejectionKind;
use domain::DomainError;
use serde::{Deserialize, Serialize};

/// A domain rejection in a form that can be stored with an idempotency key and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub kind: RejectionKindDto,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKindDto {
    Invalid,
    Conflict,
    NotFound,
}

impl From<DomainError> for Rejection {
    fn from(e: DomainError) -> Self {
        Self {
            kind: match e.kind {
                RejectionKind::Invalid => RejectionKindDto::Invalid,
                RejectionKind::Conflict => RejectionKindDto::Conflict,
                RejectionKind::NotFound => RejectionKindDto::NotFound,
            },
            code: e.code.to_string(),
            message: e.message,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain said no (4xx). Safe to show to the caller.
    #[error("{}: {}", .0.code, .0.message)]
    Rejected(Rejection),
    /// The caller's role may not send this command.
    #[error("the role {role} may not {action}")]
    Forbidden { role: String, action: &'static str },
    /// Another command changed the aggregate first (optimistic concurrency).
    #[error("the aggregate was changed concurrently; reload and retry")]
    Concurrency,
    /// The idempotency key was used before for a different request.
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// A request with this idempotency key is still running.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyKeyInProgress,
    /// The database could not be reached or answered too slowly (503).
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// Anything else that is our fault (500). The message is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CommandError {
    pub(crate) fn from_aggregate(err: cqrs_es::AggregateError<DomainError>) -> Self {
        use cqrs_es::AggregateError as E;
        match err {
            E::UserError(e) => Self::Rejected(e.into()),
            E::AggregateConflict => Self::Concurrency,
            E::DatabaseConnectionError(e) => Self::Unavailable(e.to_string()),
            E::DeserializationError(e) => Self::Internal(format!("stored event unreadable: {e}")),
            E::UnexpectedError(e) => Self::Internal(e.to_string()),
        }
    }

    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}
