use std::fmt;

pub use crate::code::Code;

/// Why an aggregate refused a command. Every variant is the caller's to fix (a 4xx, decided by
/// the code), never an infrastructure failure; those travel separately as
/// `cqrs_es::AggregateError` variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    /// Stable, machine-readable code; clients switch on it, and it decides the HTTP status.
    pub code: Code,
    /// The explanation for people; may change.
    pub message: String,
}

impl DomainError {
    /// A rejection with `code`, which must be a 4xx code.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        debug_assert!(code.is_client_error(), "{code} is not a rejection");
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DomainError {}
