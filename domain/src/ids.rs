//! Identifiers. A tenant id and a user id are checked once, where they enter (a verified token,
//! a command), and typed from then on. Conversations and knowledge sources live under their
//! tenant: the id a client sees is a UUID, the aggregate id is `tenant/uuid` ([`ScopedId`]), so
//! one tenant can never address another's aggregates. That string is built and split here only.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a tenant id.
    #[error("a tenant id is 1-64 characters of a-z, 0-9, `-` or `_`; got `{0}`")]
    Tenant(String),
    /// Not a user id.
    #[error("a user id is 1-200 characters without control characters")]
    User,
    /// Not a `tenant/uuid` aggregate id.
    #[error("`{0}` is not a tenant-scoped id (`tenant/uuid`)")]
    Scoped(String),
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.0.as_str(), buf)
            }
        }

        /// A stored id is checked like any other: a row with an impossible id is an error.
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(Self::parse(s)?)
            }
        }
    };
}

string_id!(
    /// A tenant (a company): 1-64 characters of `a-z`, `0-9`, `-`, `_`. It prefixes scoped ids
    /// and appears in logs and topic headers, hence the small alphabet.
    TenantId
);

string_id!(
    /// A person, as the identity provider names them (the token's subject).
    UserId
);

impl TenantId {
    /// Checks and wraps a tenant id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError::Tenant(s.chars().take(80).collect()))
        }
    }

    /// The aggregate id of the tenant's conversation or source `id`.
    pub fn scope(&self, id: Uuid) -> ScopedId {
        ScopedId {
            tenant: self.clone(),
            id,
        }
    }
}

impl UserId {
    /// Checks and wraps a user id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let valid = !s.trim().is_empty() && s.len() <= 200 && !s.chars().any(char::is_control);
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError::User)
        }
    }
}

/// The aggregate id of a tenant-scoped aggregate: `tenant/uuid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScopedId {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The id the tenant's clients see.
    pub id: Uuid,
}

impl ScopedId {
    /// The only parse of `tenant/uuid`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (tenant, id) = s
            .split_once('/')
            .ok_or_else(|| IdError::Scoped(s.to_string()))?;
        Ok(Self {
            tenant: TenantId::parse(tenant).map_err(|_| IdError::Scoped(s.to_string()))?,
            id: Uuid::parse_str(id).map_err(|_| IdError::Scoped(s.to_string()))?,
        })
    }
}

/// The only display of `tenant/uuid`.
impl fmt::Display for ScopedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.id)
    }
}

impl FromStr for ScopedId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ScopedId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<ScopedId> for String {
    fn from(id: ScopedId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoped_id_parses_what_it_displays_and_nothing_else() {
        let tenant = TenantId::parse("acme-1").unwrap();
        let id = Uuid::now_v7();
        let scoped = tenant.scope(id);
        assert_eq!(scoped.to_string(), format!("acme-1/{id}"));
        assert_eq!(ScopedId::parse(&scoped.to_string()).unwrap(), scoped);
        for bad in [
            "acme",
            "acme/",
            "/x",
            "Acme/{id}",
            "acme/not-a-uuid",
            "a/b/c",
        ] {
            assert!(ScopedId::parse(bad).is_err(), "{bad}");
        }
        assert!(ScopedId::parse(&format!("acme/{id}/x")).is_err());
    }

    #[test]
    fn tenant_and_user_ids_are_checked_where_they_enter() {
        assert!(TenantId::parse("acme_2-x").is_ok());
        for bad in ["", "Acme", "a b", "a/b", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("  ").is_err());
        assert!(UserId::parse("a\u{0}b").is_err());
        let json: Result<TenantId, _> = serde_json::from_str("\"Not Valid\"");
        assert!(json.is_err());
    }
}
