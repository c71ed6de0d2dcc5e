//! What a projection is to the runtime, and how applying or reading one fails.
use async_trait::async_trait;
use domain::AggregateType;
use sqlx::PgConnection;

use crate::event::Projected;

/// A read model fed by the event stream. The runtime decodes each event once and hands it
/// over with its metadata; a projection never sees the transport (Kafka or the store).
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Its name: the consumer group suffix, the status row, the route segment.
    fn name(&self) -> &'static str;
    /// The aggregate types (topics) it consumes.
    fn aggregate_types(&self) -> &'static [AggregateType];
    /// Its tables. A rebuild fills copies of them in a schema of its own (selected with
    /// `search_path`, so statements name tables without a schema) and swaps them in.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event in the caller's transaction. `Ok(false)`: it was applied before (a
    /// redelivery) and nothing changed.
    async fn apply(&self, conn: &mut PgConnection, event: &Projected) -> Result<bool, ApplyError>;
    /// Applies a rebuild's batch in order; returns how many events changed something. Poison
    /// events are skipped (the live runner dead-lettered them).
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Projected],
    ) -> Result<u64, ApplyError> {
        let mut applied = 0;
        for event in events {
            match self.apply(conn, event).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(e) if e.is_poison() => {
                    tracing::warn!(event_id = %event.meta.event_id, reason = %e.report(), "rebuild skipped a poison event")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied (undecodable, impossible for this read model, or the
    /// row it changes cannot be read).
    #[error("poison event: {0}")]
    Poison(String),
    /// The database refused the change for good: a constraint or a data error. Applying the
    /// same event again would fail the same way, so it is dead-lettered like a poison event.
    #[error("the database refused the change")]
    Refused(#[source] sqlx::Error),
    /// Applying failed for a reason that may pass (database down, lock timeout, serialisation).
    #[error("transient failure")]
    Transient(#[source] sqlx::Error),
}

impl ApplyError {
    /// Whether the event itself is at fault (dead-letter it and go on) rather than the
    /// moment (stop, back off and deliver it again).
    pub fn is_poison(&self) -> bool {
        matches!(self, ApplyError::Poison(_) | ApplyError::Refused(_))
    }

    /// The error with its causes, for the dead-letter record and the status row.
    pub fn report(&self) -> String {
        error_chain(self)
    }
}

/// An error and its `source()` chain on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// How a database error's SQLSTATE class decides its fate: integrity constraint violations
/// (23) and data exceptions (22) are the event's fault; everything else (connection 08,
/// serialisation and deadlocks 40, resources 53, operator intervention 57, ...) may pass.
pub fn sqlstate_is_permanent(code: &str) -> bool {
    code.starts_with("23") || code.starts_with("22")
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        // A stored value of the wrong kind: retrying reads the same value.
        if matches!(e, sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) {
            return ApplyError::Poison(format!("a stored row is unreadable: {}", error_chain(&e)));
        }
        let permanent = match &e {
            sqlx::Error::Database(db) => db.code().is_some_and(|c| sqlstate_is_permanent(&c)),
            _ => false,
        };
        if permanent {
            ApplyError::Refused(e)
        } else {
            ApplyError::Transient(e)
        }
    }
}

/// Why a read model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The database could not be queried.
    #[error("the read model cannot be queried")]
    Database(#[from] sqlx::Error),
    /// A stored row does not decode: an error, never silently an empty value.
    #[error("a stored {what} is unreadable")]
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<ReadError> for ApplyError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Database(e) => e.into(),
            e @ ReadError::Unreadable { .. } => ApplyError::Poison(error_chain(&e)),
        }
    }
}

/// Decodes a JSON column of a stored row.
pub fn stored<T: serde::de::DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T, ReadError> {
    serde_json::from_value(value).map_err(|source| ReadError::Unreadable { what, source })
}

/// Encodes a JSON column. Our own types always encode; a failure is a poison event rather
/// than a panic.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, ApplyError> {
    serde_json::to_value(value)
        .map_err(|e| ApplyError::Poison(format!("cannot store the row: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_and_data_errors_are_the_events_fault_the_rest_may_pass() {
        assert!(sqlstate_is_permanent("23505")); // unique violation
        assert!(sqlstate_is_permanent("23514")); // check violation
        assert!(sqlstate_is_permanent("22P02")); // invalid text representation
        assert!(!sqlstate_is_permanent("40001")); // serialisation failure
        assert!(!sqlstate_is_permanent("40P01")); // deadlock
        assert!(!sqlstate_is_permanent("08006")); // connection failure
        assert!(!sqlstate_is_permanent("57P01")); // admin shutdown
        assert!(!ApplyError::from(sqlx::Error::PoolTimedOut).is_poison());
        assert!(ApplyError::Poison("x".into()).is_poison());
    }

    #[test]
    fn an_unreadable_row_is_a_poison_event_with_its_cause() {
        let read: Result<Vec<u8>, _> = stored("sync history", serde_json::json!({"a": 1}));
        let e = ApplyError::from(read.unwrap_err());
        assert!(e.is_poison());
        assert!(
            e.report().contains("sync history is unreadable"),
            "{}",
            e.report()
        );
    }
}
