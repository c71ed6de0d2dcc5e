//! A read model as a pure fold plus its storage. [`Folded`] turns one into a [`Projection`]:
//! load the aggregate's part of the model, skip what it has already applied, fold, save. The
//! version check lives here, once, for every read model; so does the batching of rebuilds
//! (each part loaded once and saved once per batch, however many of its events the batch has).
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use async_trait::async_trait;
use domain::AggregateType;
use sqlx::PgConnection;

use crate::event::{EventMeta, Projected};
use crate::projection::{ApplyError, Projection};

/// Why a fold refuses an event: it can never apply (e.g. feedback on an answer the model has
/// never seen). The runtime dead-letters it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl From<Refusal> for ApplyError {
    fn from(r: Refusal) -> Self {
        ApplyError::Poison(r.0)
    }
}

/// A read model: a pure fold over events and where its rows live.
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// Its name.
    const NAME: &'static str;
    /// The aggregate types it folds.
    const AGGREGATE_TYPES: &'static [AggregateType];
    /// Its tables.
    const TABLES: &'static [&'static str];
    /// The events it folds (one aggregate's enum, or `AnyEvent`).
    type Event: Send + Sync;
    /// One aggregate's part of the model, between two events.
    type State: Clone + Send + Sync;
    /// Which part an event belongs to.
    type Key: Clone + Eq + Hash + Send + Sync;

    /// The event as this model's type; `None` for an event it does not fold.
    fn select(event: &domain::AnyEvent) -> Option<&Self::Event>;
    /// Which part of the model the event belongs to.
    fn key(meta: &EventMeta) -> Result<Self::Key, ApplyError>;
    /// The aggregate version the state has folded in.
    fn version(state: &Self::State) -> i64;
    /// Pure: the state after the event.
    fn fold(
        state: Option<Self::State>,
        meta: &EventMeta,
        event: &Self::Event,
    ) -> Result<Self::State, Refusal>;

    /// Reads the part (in the caller's transaction, locking it).
    async fn load(
        conn: &mut PgConnection,
        key: &Self::Key,
    ) -> Result<Option<Self::State>, ApplyError>;
    /// Writes the part.
    async fn save(
        conn: &mut PgConnection,
        key: &Self::Key,
        state: &Self::State,
    ) -> Result<(), ApplyError>;

    /// Reads the parts of a rebuild's batch (locking them). One statement per part unless the
    /// model reads them at once (the rebuild's round trips are its cost).
    async fn load_many(
        conn: &mut PgConnection,
        keys: &[Self::Key],
    ) -> Result<Vec<(Self::Key, Self::State)>, ApplyError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(state) = Self::load(conn, key).await? {
                found.push((key.clone(), state));
            }
        }
        Ok(found)
    }

    /// Writes the parts a rebuild's batch changed; one statement per part unless the model
    /// writes them at once.
    async fn save_many(
        conn: &mut PgConnection,
        parts: &[(&Self::Key, &Self::State)],
    ) -> Result<(), ApplyError> {
        for (key, state) in parts {
            Self::save(conn, key, state).await?;
        }
        Ok(())
    }
}

/// A [`ReadModel`] as a [`Projection`].
pub struct Folded<M>(pub M);

fn selected<M: ReadModel>(event: &Projected) -> Result<&M::Event, ApplyError> {
    M::select(&event.event).ok_or_else(|| {
        ApplyError::Poison(format!(
            "{} is not an event of the {} read model",
            event.event.event_type(),
            M::NAME
        ))
    })
}

#[async_trait]
impl<M: ReadModel> Projection for Folded<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn aggregate_types(&self) -> &'static [AggregateType] {
        M::AGGREGATE_TYPES
    }

    fn tables(&self) -> &'static [&'static str] {
        M::TABLES
    }

    async fn apply(&self, conn: &mut PgConnection, event: &Projected) -> Result<bool, ApplyError> {
        let payload = selected::<M>(event)?;
        let key = M::key(&event.meta)?;
        let state = M::load(conn, &key).await?;
        if state
            .as_ref()
            .is_some_and(|s| event.meta.sequence <= M::version(s))
        {
            return Ok(false); // a redelivery
        }
        let next = M::fold(state, &event.meta, payload)?;
        M::save(conn, &key, &next).await?;
        Ok(true)
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Projected],
    ) -> Result<u64, ApplyError> {
        // Every part the batch touches, read at once; then the events folded in memory, in
        // order; then every changed part written at once.
        let mut keys: Vec<M::Key> = Vec::new();
        let mut states: HashMap<M::Key, Option<M::State>> = HashMap::new();
        for event in events {
            if M::select(&event.event).is_none() {
                continue;
            }
            if let Ok(key) = M::key(&event.meta) {
                if states.insert(key.clone(), None).is_none() {
                    keys.push(key);
                }
            }
        }
        for (key, state) in M::load_many(conn, &keys).await? {
            states.insert(key, Some(state));
        }
        let mut touched: Vec<M::Key> = Vec::new();
        let mut changed: HashSet<M::Key> = HashSet::new();
        let mut applied = 0;
        for event in events {
            let step = (|| {
                let payload = selected::<M>(event)?;
                let key = M::key(&event.meta)?;
                let slot = states.get_mut(&key).ok_or_else(|| {
                    ApplyError::Poison("the state loaded for this key is gone".into())
                })?;
                if slot
                    .as_ref()
                    .is_some_and(|s| event.meta.sequence <= M::version(s))
                {
                    return Ok(None);
                }
                *slot = Some(M::fold(slot.clone(), &event.meta, payload)?);
                Ok::<_, ApplyError>(Some(key))
            })();
            match step {
                Ok(Some(key)) => {
                    applied += 1;
                    if changed.insert(key.clone()) {
                        touched.push(key);
                    }
                }
                Ok(None) => {}
                Err(e) if e.is_poison() => {
                    tracing::warn!(event_id = %event.meta.event_id, reason = %e.report(), "rebuild skipped a poison event")
                }
                Err(e) => return Err(e),
            }
        }
        let parts: Vec<(&M::Key, &M::State)> = touched
            .iter()
            .filter_map(|key| Some((key, states.get(key)?.as_ref()?)))
            .collect();
        M::save_many(conn, &parts).await?;
        Ok(applied)
    }
}

/// Folds a whole history in memory (point-in-time views, tests): no table involved.
pub fn fold_all<'a, M: ReadModel>(
    events: impl IntoIterator<Item = &'a Projected>,
) -> Result<Option<M::State>, Refusal> {
    let mut state = None;
    for event in events {
        let Some(payload) = M::select(&event.event) else {
            continue;
        };
        if state
            .as_ref()
            .is_some_and(|s| event.meta.sequence <= M::version(s))
        {
            continue;
        }
        state = Some(M::fold(state, &event.meta, payload)?);
    }
    Ok(state)
}
