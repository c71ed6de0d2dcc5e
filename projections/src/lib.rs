//! The read side. A read model is a pure fold over events plus its storage and its queries
//! ([`read_model::ReadModel`]); [`read_model::Folded`] makes one a [`Projection`]. The runtime
//! ([`runner`]) takes events from a [`source::EventSource`] (Kafka, or the store for rebuilds),
//! decodes them once, applies them in one Postgres transaction each with the status row, and
//! dead-letters poison events ([`dead_letters`]); [`rebuild`] replays the store into a copy and
//! swaps it in (docs/projections.md). Nothing here knows Kafka.

#![deny(missing_docs)]

pub mod analytics;
pub mod audit;
pub mod conversations;
pub mod dead_letters;
pub mod event;
pub mod intent;
pub mod projection;
pub mod questions;
pub mod read_model;
pub mod rebuild;
pub mod runner;
pub mod source;
pub mod sources;
pub mod status;
pub mod tenants;

pub use dead_letters::{DeadLetter, RetryError};
pub use event::{EventMeta, Projected};
pub use projection::{error_chain, ApplyError, Projection, ReadError};
pub use read_model::{Folded, ReadModel, Refusal};
pub use rebuild::{rebuild, RebuildError, RebuildReport};
pub use runner::{apply_one, ProjectionRunner, RunnerError};
pub use source::{Delivery, EventSource, Origin, SourceError, StoreFollower, StoreSource};
pub use status::{Freshness, ProjectionStatus};

use std::sync::Arc;

/// Every projection this service runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(Folded(conversations::Conversations)),
        Arc::new(Folded(audit::AuditTrail)),
        Arc::new(Folded(questions::Questions)),
        Arc::new(Folded(sources::Sources)),
        Arc::new(Folded(tenants::Tenants)),
    ]
}

/// The projection named `name`.
pub fn find(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}
