//! The read side. A [`Projection`] turns events into a read model; the [`runtime`] feeds it from
//! Kafka (consumer group, offsets stored only after an event is applied), records its status,
//! dead-letters poison events, and rebuilds it from the event store into a shadow table that is
//! swapped in atomically (docs/projections.md).

pub mod analytics;
pub mod audit;
pub mod conversations;
pub mod questions;
pub mod runtime;
pub mod sources;
pub mod tenants;

pub use runtime::{
    rebuild, retry_dead_letter, ApplyError, DeadLetter, Freshness, Projection, ProjectionRunner,
    ProjectionStatus, ReadError, RebuildReport,
};

use std::sync::Arc;

/// Every projection this service runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(conversations::ConversationsProjection),
        Arc::new(audit::AuditProjection),
        Arc::new(questions::QuestionsProjection),
        Arc::new(sources::SourcesProjection),
        Arc::new(tenants::TenantsProjection),
    ]
}
