//! The parsed form of a secret reference.
use std::path::PathBuf;

use crate::SecretError;

/// Where a secret lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env://NAME`: an environment variable of the service.
    Env(String),
    /// `file:///absolute/path`: a file, typically a mounted Kubernetes secret.
    File(PathBuf),
    /// `vault://mount/path/to/secret#field` (field defaults to `api_key`): Vault KV v2.
    Vault {
        /// The KV engine's mount (`secret`, `kv`).
        mount: String,
        /// The secret's path under the mount.
        path: String,
        /// The field of the secret's data.
        field: String,
    },
}

impl SecretRef {
    /// Parses a reference; schemes the platform knows but cannot resolve (`aws-sm://`,
    /// `gcp-sm://`) are refused with a clear message.
    pub fn parse(reference: &str) -> Result<Self, SecretError> {
        let invalid = |why: &str| SecretError::Invalid(format!("{why}: {reference}"));
        let (scheme, rest) = reference
            .split_once("://")
            .ok_or_else(|| invalid("a secret reference is scheme://location"))?;
        if rest.is_empty() || rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("the location is empty or has spaces"));
        }
        match scheme {
            "env" => {
                let valid = rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(invalid("an env:// name is A-Z, 0-9 and _"));
                }
                Ok(SecretRef::Env(rest.to_string()))
            }
            "file" => {
                let path = PathBuf::from(rest);
                if !path.is_absolute() {
                    return Err(invalid("a file:// path is absolute (file:///run/...)"));
                }
                Ok(SecretRef::File(path))
            }
            "vault" => {
                let (location, field) = match rest.split_once('#') {
                    Some((location, field)) if !field.is_empty() => (location, field),
                    Some(_) => return Err(invalid("the field after # is empty")),
                    None => (rest, "api_key"),
                };
                let (mount, path) = location
                    .split_once('/')
                    .filter(|(m, p)| !m.is_empty() && !p.is_empty())
                    .ok_or_else(|| invalid("a vault:// reference is mount/path"))?;
                if path
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
                {
                    return Err(invalid("a vault:// path has no empty, . or .. segments"));
                }
                Ok(SecretRef::Vault {
                    mount: mount.to_string(),
                    path: path.to_string(),
                    field: field.to_string(),
                })
            }
            "aws-sm" | "gcp-sm" => Err(invalid(
                "this deployment resolves env://, file:// and vault:// references only",
            )),
            _ => Err(invalid("unknown secret scheme")),
        }
    }

    /// The scheme, for logs.
    pub fn scheme(&self) -> &'static str {
        match self {
            SecretRef::Env(_) => "env",
            SecretRef::File(_) => "file",
            SecretRef::Vault { .. } => "vault",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        assert_eq!(
            SecretRef::parse("env://KAPA_ACME_KEY").unwrap(),
            SecretRef::Env("KAPA_ACME_KEY".into())
        );
        assert_eq!(
            SecretRef::parse("file:///run/secrets/acme/kapa").unwrap(),
            SecretRef::File("/run/secrets/acme/kapa".into())
        );
        assert_eq!(
            SecretRef::parse("vault://kv/tenants/acme/kapa#key").unwrap(),
            SecretRef::Vault {
                mount: "kv".into(),
                path: "tenants/acme/kapa".into(),
                field: "key".into()
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_resolve() {
        for bad in [
            "KAPA_KEY",
            "env://kapa key",
            "file://relative/path",
            "vault://kv",
            "vault://kv/tenants/../other#k",
            "aws-sm://prod/kapa",
            "ftp://x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }
}
