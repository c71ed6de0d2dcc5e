use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A member's role inside one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Administers the tenant; everything an operator may do.
    Admin,
    /// Asks, rates, and manages knowledge sources.
    Operator,
    /// Reads only: sends no command.
    Viewer,
}

/// What a command does, for authorisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask questions and resolve or escalate conversations.
    Ask,
    /// Rate answers.
    GiveFeedback,
    /// Add, change, remove and sync knowledge sources.
    ManageSources,
    /// Settings, members, roles, suspension.
    AdministerTenant,
}

impl Role {
    /// Viewers command nothing; Operators ask, rate and manage sources; Admins also administer
    /// the tenant.
    pub fn may(self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => !matches!(action, Action::AdministerTenant),
            Role::Viewer => false,
        }
    }

    /// The role as it appears in tokens and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role `{other}` (expected admin, operator or viewer)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_commands_nothing_operator_cannot_administer() {
        for action in [
            Action::Ask,
            Action::GiveFeedback,
            Action::ManageSources,
            Action::AdministerTenant,
        ] {
            assert!(!Role::Viewer.may(action));
            assert!(Role::Admin.may(action));
            assert_eq!(
                Role::Operator.may(action),
                action != Action::AdministerTenant
            );
        }
    }

    #[test]
    fn parses_case_insensitively_and_rejects_unknown() {
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }
}
