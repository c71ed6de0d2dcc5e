//! The pool the read routes query (docs/disaster-recovery.md, "Read replicas"): a replica's
//! when `database.read_url` is set, else the API's own. Commands, and the audit trail's record
//! of each read, always go to the primary.
use std::ops::Deref;

use event_store::TenantPool;

/// The API's pool for reads, held to row-level security like the primary's.
#[derive(Clone)]
pub struct ReadPool {
    pool: TenantPool,
    /// Whether it is a replica's (readiness checks it then).
    replica: bool,
}

impl ReadPool {
    pub fn primary(pool: TenantPool) -> Self {
        Self {
            pool,
            replica: false,
        }
    }

    pub fn replica(pool: TenantPool) -> Self {
        Self {
            pool,
            replica: true,
        }
    }

    pub fn is_replica(&self) -> bool {
        self.replica
    }
}

impl Deref for ReadPool {
    type Target = TenantPool;

    fn deref(&self) -> &TenantPool {
        &self.pool
    }
}
