//! The domain of the answers platform: three aggregates (tenant, conversation, knowledge
//! source), their commands and events, and the rules that decide between them.
//!
//! Nothing in this crate performs I/O. The one outside capability an aggregate needs, an answer
//! engine, is a trait injected by cqrs-es as the aggregate's `Services`.

#![deny(missing_docs)]

pub mod access;
pub mod account;
pub mod code;
pub mod conversation;
pub mod engine;
/// Why an aggregate refuses a command.
pub mod error;
pub mod event;
pub mod flags;
pub mod guardrail;
pub mod ids;
pub mod knowledge_source;
pub mod quality;
/// Roles and what each may do.
pub mod role;
pub mod tenant;
#[doc(hidden)]
pub mod text_enum;
mod validate;

pub use code::Code;
pub use error::DomainError;
pub use event::{AggregateType, AnyEvent};
pub use ids::{IdError, ScopedId, TenantId, UserId};
pub use role::{Action, Role};

/// Version written with every event of this crate. Bump it per event when its payload changes
/// shape, and register an upcaster for the old version (docs/events.md).
pub const EVENT_VERSION_1: &str = "1.0";

/// Implements `cqrs_es::DomainEvent` for an externally tagged event enum: the event type is the
/// variant name, the version is per variant (all 1.0 today).
macro_rules! domain_event {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {
        impl cqrs_es::DomainEvent for $enum {
            fn event_type(&self) -> String {
                match self {
                    $(Self::$variant { .. } => stringify!($variant).to_string(),)+
                }
            }
            fn event_version(&self) -> String {
                $crate::EVENT_VERSION_1.to_string()
            }
        }
    };
}
pub(crate) use domain_event;
