//! The knowledge sources read model: each source's current state and its sync history.
//! [`fold`] is the pure fold, [`storage`] its rows, [`queries`] what the API reads.
use chrono::{DateTime, Utc};
use domain::knowledge_source::SourceKind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub mod fold;
pub mod queries;
pub mod storage;

pub use fold::Sources;
pub use queries::list;

domain::text_enum! {
    /// Whether a source is in use.
    pub enum SourceState {
        Active = "active",
        Removed = "removed",
    }
}

domain::text_enum! {
    /// Where a source's sync stands.
    pub enum SyncPhase {
        Idle = "idle",
        Requested = "requested",
        Running = "running",
    }
}

domain::text_enum! {
    /// How one sync went.
    pub enum SyncOutcome {
        Requested = "requested",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
    }
}

/// One sync of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncRun {
    /// Its id, once a worker started it.
    pub sync_id: Option<Uuid>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// Who requested it.
    pub requested_by: String,
    /// When a worker started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// How it went.
    pub outcome: SyncOutcome,
    /// Documents found, when completed.
    pub document_count: Option<u64>,
    /// What went wrong, when failed.
    pub error: Option<String>,
}

/// One source as the API shows it, and as the fold keeps it between events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SourceSummary {
    /// The source's id.
    pub id: Uuid,
    /// What kind of knowledge it holds.
    pub kind: SourceKind,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub location: String,
    /// Active or removed.
    pub status: SourceState,
    /// Where its sync stands.
    pub sync_state: SyncPhase,
    /// Documents the last completed sync found.
    pub document_count: Option<i64>,
    /// The last sync's error, if it failed.
    pub last_error: Option<String>,
    /// When a sync last completed.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// When it was added.
    pub added_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// The source version folded in.
    pub version: i64,
    /// Newest last.
    pub history: Vec<SyncRun>,
}
