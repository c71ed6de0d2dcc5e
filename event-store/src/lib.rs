//! The Postgres event store.
//!
//! [`PgEventRepository`] is this project's implementation of cqrs-es's
//! `PersistedEventRepository` (docs/event-store.md says why it replaces postgres-es): it writes
//! the event id, tenant, acting user and the other audit columns beside each event, and settles
//! the command's idempotency key in the same transaction. [`EventReader`] reads every committed
//! event in commit-safe order, for the relay and for replays.

#![deny(missing_docs)]

mod envelope;
mod metadata;
mod reader;
mod repository;
mod tenancy;

pub use envelope::{Envelope, EnvelopeMetadata};
pub use metadata::{EventMetadata, MetadataError};
pub use reader::{
    aggregate_events, read_batch, tenant_events_page, Checkpoint, EventReader, StoredEvent,
};
pub use repository::{append_bulk, PgEventRepository};
pub use tenancy::{bypass_reasons, tenant_of_aggregate, TenantPool, TENANT_SETTING};

/// The project's migrations (`migrations/` at the top of the repository), embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Runs the pending migrations.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
