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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncRun {
    pub sync_id: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub requested_by: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: SyncOutcome,
    pub document_count: Option<u64>,
    pub error: Option<String>,
}

/// One source as the API shows it, and as the fold keeps it between events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SourceSummary {
    pub id: Uuid,
    pub kind: SourceKind,
    pub name: String,
    pub location: String,
    pub status: SourceState,
    pub sync_state: SyncPhase,
    pub document_count: Option<i64>,
    pub last_error: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub added_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    /// Newest last.
    pub history: Vec<SyncRun>,
}
