use std::fmt;

/// Why an aggregate refused a command. Every variant is the caller's to fix (a 4xx), never an
/// infrastructure failure; those travel separately as `cqrs_es::AggregateError` variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    pub kind: RejectionKind,
    /// Stable, machine-readable code (snake_case); clients switch on it.
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// The command itself is invalid (422).
    Invalid,
    /// The command is valid but the aggregate's state forbids it now (409).
    Conflict,
    /// The command addresses something that does not exist (404).
    NotFound,
}

impl DomainError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Invalid,
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Conflict,
            code,
            message: message.into(),
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::NotFound,
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
