//! Identity (docs/identity.md): who is calling and how they proved it.
//!
//! - [`keys`]: our Ed25519 signing keys, access tokens with a `kid`, the published JWKS.
//! - [`providers`]: sign-in with Google and Microsoft (OpenID Connect) and GitHub (OAuth2).
//! - [`store`]: sign-in attempts, sessions and rotating refresh tokens, second factors, API keys.
//! - [`totp`]: RFC 6238 codes and recovery codes.
//! - [`secret`]: random tokens and their digests.
pub mod keys;
pub mod providers;
pub mod secret;
pub mod store;
pub mod totp;

pub use keys::{AccessClaims, KeyError, TokenError, TokenKeys};
pub use providers::{ProviderError, ProviderSettings, Providers};
