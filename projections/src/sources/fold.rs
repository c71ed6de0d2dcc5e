//! The knowledge sources read model as a pure fold.
use async_trait::async_trait;
use domain::knowledge_source::SourceEvent;
use domain::{AggregateType, AnyEvent, ScopedId};
use sqlx::PgConnection;

use super::{SourceState, SourceSummary, SyncOutcome, SyncPhase, SyncRun};
use crate::event::EventMeta;
use crate::projection::ApplyError;
use crate::read_model::{ReadModel, Refusal};

/// The knowledge sources read model.
pub struct Sources;

#[async_trait]
impl ReadModel for Sources {
    const NAME: &'static str = "sources";
    const AGGREGATE_TYPES: &'static [AggregateType] = &[AggregateType::KnowledgeSource];
    const TABLES: &'static [&'static str] = &["rm_sources"];
    type Event = SourceEvent;
    type State = SourceSummary;
    type Key = ScopedId;

    fn select(event: &AnyEvent) -> Option<&SourceEvent> {
        match event {
            AnyEvent::Source(e) => Some(e),
            _ => None,
        }
    }

    fn key(meta: &EventMeta) -> Result<ScopedId, ApplyError> {
        meta.scoped()
    }

    fn version(state: &SourceSummary) -> i64 {
        state.version
    }

    fn fold(
        state: Option<SourceSummary>,
        meta: &EventMeta,
        event: &SourceEvent,
    ) -> Result<SourceSummary, Refusal> {
        let at = meta.recorded_at;
        let mut source = match (state, event) {
            (
                None,
                SourceEvent::SourceAdded {
                    kind,
                    name,
                    location,
                    ..
                },
            ) => {
                return Ok(SourceSummary {
                    id: meta.scoped().map_err(|e| Refusal(e.report()))?.id,
                    kind: *kind,
                    name: name.clone(),
                    location: location.clone(),
                    status: SourceState::Active,
                    sync_state: SyncPhase::Idle,
                    document_count: None,
                    last_error: None,
                    last_synced_at: None,
                    added_at: at,
                    updated_at: at,
                    version: meta.sequence,
                    history: Vec::new(),
                })
            }
            (Some(_), SourceEvent::SourceAdded { .. }) => {
                return Err(Refusal("SourceAdded for a source added before".into()))
            }
            (None, other) => {
                return Err(Refusal(format!(
                    "{} for a source never added",
                    cqrs_es::DomainEvent::event_type(other)
                )))
            }
            (Some(source), _) => source,
        };
        match event.clone() {
            SourceEvent::SourceAdded { .. } => {}
            SourceEvent::SourceUpdated { name, location, .. } => {
                if let Some(name) = name {
                    source.name = name;
                }
                if let Some(location) = location {
                    source.location = location;
                }
            }
            SourceEvent::SourceRemoved {} => {
                source.status = SourceState::Removed;
                source.sync_state = SyncPhase::Idle;
            }
            SourceEvent::SyncRequested { requested_by } => {
                source.history.push(SyncRun {
                    sync_id: None,
                    requested_at: at,
                    requested_by,
                    started_at: None,
                    finished_at: None,
                    outcome: SyncOutcome::Requested,
                    document_count: None,
                    error: None,
                });
                source.sync_state = SyncPhase::Requested;
            }
            SourceEvent::SyncStarted { sync_id } => {
                if let Some(run) = source.history.last_mut() {
                    run.sync_id = Some(sync_id);
                    run.started_at = Some(at);
                    run.outcome = SyncOutcome::Running;
                }
                source.sync_state = SyncPhase::Running;
            }
            SourceEvent::SyncCompleted { document_count, .. } => {
                if let Some(run) = source.history.last_mut() {
                    run.finished_at = Some(at);
                    run.outcome = SyncOutcome::Completed;
                    run.document_count = Some(document_count);
                }
                source.sync_state = SyncPhase::Idle;
                source.document_count = Some(i64::try_from(document_count).unwrap_or(i64::MAX));
                source.last_synced_at = Some(at);
            }
            SourceEvent::SyncFailed { error, .. } => {
                if let Some(run) = source.history.last_mut() {
                    run.finished_at = Some(at);
                    run.outcome = SyncOutcome::Failed;
                    run.error = Some(error.clone());
                }
                source.sync_state = SyncPhase::Idle;
                source.last_error = Some(error);
            }
        }
        source.updated_at = at;
        source.version = meta.sequence;
        Ok(source)
    }

    async fn load(
        conn: &mut PgConnection,
        key: &ScopedId,
    ) -> Result<Option<SourceSummary>, ApplyError> {
        Ok(super::storage::load(conn, key).await?)
    }

    async fn save(
        conn: &mut PgConnection,
        key: &ScopedId,
        state: &SourceSummary,
    ) -> Result<(), ApplyError> {
        super::storage::save(conn, key, state).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::knowledge_source::SourceKind;
    use uuid::Uuid;

    use super::*;
    use crate::event::testing::event;
    use crate::read_model::fold_all;

    const ID: &str = "acme/0191e4c2-0000-7000-8000-000000000002";

    fn source(e: SourceEvent) -> AnyEvent {
        AnyEvent::Source(e)
    }

    #[test]
    fn a_source_folds_its_syncs_into_a_history() {
        let sync = Uuid::from_u128(7);
        let events = [
            event(
                ID,
                1,
                0,
                source(SourceEvent::SourceAdded {
                    kind: SourceKind::Docs,
                    name: "Docs".into(),
                    location: "https://docs.acme.example".into(),
                    settings: BTreeMap::new(),
                }),
            ),
            event(
                ID,
                2,
                1,
                source(SourceEvent::SyncRequested {
                    requested_by: "alice".into(),
                }),
            ),
            event(ID, 3, 2, source(SourceEvent::SyncStarted { sync_id: sync })),
            event(
                ID,
                4,
                3,
                source(SourceEvent::SyncCompleted {
                    sync_id: sync,
                    document_count: 42,
                }),
            ),
            event(
                ID,
                5,
                4,
                source(SourceEvent::SyncRequested {
                    requested_by: "bob".into(),
                }),
            ),
            event(ID, 6, 5, source(SourceEvent::SyncStarted { sync_id: sync })),
            event(
                ID,
                7,
                6,
                source(SourceEvent::SyncFailed {
                    sync_id: sync,
                    error: "timeout".into(),
                }),
            ),
            event(
                ID,
                8,
                7,
                source(SourceEvent::SourceUpdated {
                    name: Some("Product docs".into()),
                    location: None,
                    settings: None,
                }),
            ),
        ];
        let s = fold_all::<Sources>(&events).unwrap().unwrap();
        assert_eq!(s.name, "Product docs");
        assert_eq!(s.location, "https://docs.acme.example");
        assert_eq!(
            (s.status, s.sync_state),
            (SourceState::Active, SyncPhase::Idle)
        );
        assert_eq!(s.document_count, Some(42));
        assert_eq!(s.last_synced_at, Some(events[3].meta.recorded_at));
        assert_eq!(s.last_error.as_deref(), Some("timeout"));
        assert_eq!(s.version, 8);
        let outcomes: Vec<SyncOutcome> = s.history.iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, [SyncOutcome::Completed, SyncOutcome::Failed]);
        assert_eq!(s.history[0].document_count, Some(42));
        assert_eq!(s.history[1].requested_by, "bob");
    }

    #[test]
    fn events_of_a_source_never_added_are_refused() {
        let err = fold_all::<Sources>(&[event(ID, 1, 0, source(SourceEvent::SourceRemoved {}))])
            .unwrap_err();
        assert!(err.0.contains("never added"), "{err}");
    }
}
