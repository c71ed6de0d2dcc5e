//! The pool the read routes query (docs/disaster-recovery.md, "Read replicas"): a replica's
//! when `database.read_url` is set, else the API's own. Commands, and the audit trail's record
//! of each read, always go to the primary.
use std::ops::Deref;

use event_store::TenantPool;

/// The API's pool for reads, held to row-level security like the primary's.
#[derive(Clone)]
pub struct ReadPool(pub TenantPool);

impl Deref for ReadPool {
    type Target = TenantPool;

    fn deref(&self) -> &TenantPool {
        &self.0
    }
}
