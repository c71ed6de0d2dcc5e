use domain::{Code, DomainError};
use serde::{Deserialize, Serialize};

/// A domain rejection in a form that can be stored with an idempotency key and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: Code,
    pub message: String,
}

impl From<DomainError> for Rejection {
    fn from(e: DomainError) -> Self {
        Self {
            code: e.code,
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
    #[error("the event store is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else that is our fault (500). Logged with its cause, never shown.
    #[error("internal error: {context}")]
    Internal {
        context: &'static str,
        #[source]
        source: BoxError,
    },
}

/// The cause of an infrastructure failure, kept whole for the logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl CommandError {
    pub(crate) fn from_aggregate(err: cqrs_es::AggregateError<DomainError>) -> Self {
        use cqrs_es::AggregateError as E;
        match err {
            E::UserError(e) => Self::Rejected(e.into()),
            E::AggregateConflict => Self::Concurrency,
            E::DatabaseConnectionError(e) => Self::Unavailable(e),
            E::DeserializationError(source) => Self::Internal {
                context: "a stored event is unreadable",
                source,
            },
            E::UnexpectedError(source) => Self::Internal {
                context: "the event store failed",
                source,
            },
        }
    }

    pub fn from_sqlx(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(Box::new(err)),
            other => Self::Internal {
                context: "a database statement failed",
                source: Box::new(other),
            },
        }
    }
}
