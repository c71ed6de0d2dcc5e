//! The projection runtime: events from a source → one Postgres transaction per event (read
//! model change + status row) → acknowledged. Decoding, poison handling and dead letters happen
//! here, once, for every projection; anything else that fails stops the run without the
//! acknowledgement, so the event is delivered again after the restart (projections skip what
//! they already hold).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use sqlx::PgPool;

use crate::dead_letters;
use crate::event::Projected;
use crate::projection::{error_chain, ApplyError, Projection};
use crate::source::{Delivery, EventSource, SourceError};
use crate::status::{self, mark_applied, record_error, ProjectionStatus};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The event source failed.
    #[error("the event source failed")]
    Source(#[source] SourceError),
    /// The database failed.
    #[error("database")]
    Database(#[from] sqlx::Error),
    /// Applying an event failed for a reason that may pass.
    #[error("applying an event failed")]
    Apply(#[from] ApplyError),
    /// Events are waiting and none arrived for the stall time: the consumer is recreated.
    #[error("stalled: {lag_events} events waiting and none delivered for {waited:?}")]
    Stalled {
        /// Events of its aggregate types it has not applied.
        lag_events: i64,
        /// How long it waited for one.
        waited: Duration,
    },
}

/// Applies one event and moves the projection's status in one transaction.
pub async fn apply_one(
    pool: &PgPool,
    projection: &dyn Projection,
    event: &Projected,
) -> Result<bool, ApplyError> {
    let mut tx = pool.begin().await?;
    let applied = apply_in(&mut tx, projection, event).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Applies one event and moves the projection's status in `conn`'s transaction.
async fn apply_in(
    conn: &mut sqlx::PgConnection,
    projection: &dyn Projection,
    event: &Projected,
) -> Result<bool, ApplyError> {
    let applied = projection.apply(&mut *conn, event).await?;
    if applied {
        mark_applied(conn, projection.name(), &event.meta).await?;
    }
    Ok(applied)
}

/// The pause before restart number `attempt` (1-based) of a failing runner: exponential from
/// 200 ms, capped at `cap`, with jitter (between half and all of it) so that runners failing
/// together do not retry in lockstep.
pub fn backoff(attempt: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = Duration::from_millis(200).saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(cap).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Feeds one projection from one event source.
pub struct ProjectionRunner<S> {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    source: S,
    /// Events handled (applied, skipped or dead-lettered) since start: restarts that made
    /// progress reset the backoff.
    handled: AtomicU64,
    /// No delivery for this long while events wait is a stall (`None`: never checked).
    stall_after: Option<Duration>,
    /// Asked to stop: the runner ends after the event in hand (never inside its transaction).
    shutdown: shutdown::Shutdown,
}

impl<S: EventSource> ProjectionRunner<S> {
    /// A runner of `projection` on `source`.
    pub fn new(pool: PgPool, projection: Arc<dyn Projection>, source: S) -> Self {
        Self {
            pool,
            projection,
            source,
            handled: AtomicU64::new(0),
            stall_after: None,
            shutdown: shutdown::Shutdown::new(),
        }
    }

    /// Stops when `shutdown` is asked: after the event being applied (its transaction moves the
    /// checkpoint with the read model, so nothing is half-applied), the source closed (a Kafka
    /// consumer gives its partitions up at once for the other processes).
    pub fn with_shutdown(mut self, shutdown: shutdown::Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Detects a stalled consumer: no delivery for `after` while the store holds events it
    /// has not applied. The run then ends (logged at `warn` with the lag, counted in the
    /// status) and the supervisor recreates the consumer, which rejoins its group.
    pub fn with_stall_detection(mut self, after: Duration) -> Self {
        self.stall_after = Some(after);
        self
    }

    /// Runs until stopped, restarting after every failure: the pause grows exponentially (with
    /// jitter, capped at 30 s) while restarts make no progress, and starts over after one did.
    pub async fn run_supervised(mut self) {
        let mut attempt: u32 = 0;
        loop {
            let before = self.handled.load(Ordering::Relaxed);
            let result = self.run().await;
            self.source.close().await;
            if self.shutdown.is_stopping() {
                tracing::info!(
                    projection = self.projection.name(),
                    handled = self.handled.load(Ordering::Relaxed),
                    "projection stopped"
                );
                return;
            }
            if self.handled.load(Ordering::Relaxed) > before {
                attempt = 0;
            }
            attempt = attempt.saturating_add(1);
            let pause = backoff(attempt, Duration::from_secs(30), rand::random::<f64>());
            if let Err(RunnerError::Stalled { lag_events, waited }) = &result {
                tracing::warn!(projection = self.projection.name(), lag_events, waited_ms = waited.as_millis() as u64,
                    "projection stalled: events waiting and none delivered; recreating its consumer");
                if let Err(status) =
                    status::stall_recovered(&self.pool, self.projection.name()).await
                {
                    tracing::warn!(projection = self.projection.name(), error = %status,
                        "could not count the stall in the projection status");
                }
                // A stall is no fault of the events: recreate at once.
                attempt = 0;
                continue;
            }
            if let Err(e) = result {
                let report = error_chain(&e);
                tracing::warn!(projection = self.projection.name(), error = %report, attempt,
                    pause_ms = pause.as_millis() as u64, "projection stopped; restarting");
                if let Err(status) = record_error(&self.pool, self.projection.name(), &report).await
                {
                    tracing::warn!(projection = self.projection.name(), error = %status,
                        "could not record the error in the projection status");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.stopping() => {}
            }
        }
    }

    /// Consumes until the first error that is not a poison event, or until asked to stop
    /// (`Ok`).
    pub async fn run(&mut self) -> Result<(), RunnerError> {
        if self.shutdown.is_stopping() {
            return Ok(());
        }
        self.source.open().await.map_err(RunnerError::Source)?;
        status::ensure(&self.pool, self.projection.name()).await?;
        tracing::info!(projection = self.projection.name(), "projection consuming");
        loop {
            // Waiting for the next event is the one place a stop cuts in: nothing is held then.
            let (shutdown, source) = (&self.shutdown, &mut self.source);
            let next = async {
                tokio::select! {
                    biased;
                    _ = shutdown.stopping() => None,
                    delivery = source.next() => Some(delivery),
                }
            };
            let waited = match self.stall_after {
                None => Ok(next.await),
                Some(after) => tokio::time::timeout(after, next).await,
            };
            let delivery = match waited {
                Ok(delivery) => delivery,
                Err(_) => {
                    let after = self.stall_after.unwrap_or_default();
                    let lag = ProjectionStatus::load(&self.pool, self.projection.as_ref())
                        .await?
                        .lag_events;
                    let own = self.source.waiting().await.map_err(RunnerError::Source)?;
                    if lag > 0 && own != Some(false) {
                        return Err(RunnerError::Stalled {
                            lag_events: lag,
                            waited: after,
                        });
                    }
                    continue; // caught up: quiet is fine
                }
            };
            let Some(delivery) = delivery else {
                return Ok(());
            };
            let delivery = delivery.map_err(RunnerError::Source)?;
            self.handle(&delivery).await?;
            self.source
                .ack(&delivery)
                .await
                .map_err(RunnerError::Source)?;
            self.handled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies one delivery in a span that continues the trace it carries.
    async fn handle(&self, delivery: &Delivery) -> Result<(), RunnerError> {
        let span = tracing::info_span!(
            "projection.apply",
            projection = self.projection.name(),
            channel = %delivery.origin.channel,
            partition = delivery.origin.partition,
            offset = delivery.origin.offset,
            position = tracing::field::Empty,
            aggregate_id = tracing::field::Empty,
            tenant = tracing::field::Empty,
        );
        trace_context::continue_from(&span, delivery.traceparent.as_deref());
        let result = self.handle_in(delivery).instrument(span.clone()).await;
        if let Err(error) = &result {
            tracing::error!(parent: &span, %error, "the delivery could not be handled");
        }
        result
    }

    async fn handle_in(&self, delivery: &Delivery) -> Result<(), RunnerError> {
        let event = match Projected::decode_bytes(&delivery.payload) {
            Ok(event) => event,
            Err(e) => return self.dead_letter(delivery, None, &e).await,
        };
        let span = tracing::Span::current();
        span.record("position", event.meta.position);
        span.record("aggregate_id", event.meta.aggregate_id.as_str());
        span.record("tenant", event.meta.tenant.as_str());
        match self.apply_and_checkpoint(&event, delivery).await {
            Ok(applied) => {
                tracing::debug!(aggregate_id = %event.meta.aggregate_id, sequence = event.meta.sequence, applied, "handled");
                Ok(())
            }
            Err(RunnerError::Apply(e)) if e.is_poison() => {
                self.dead_letter(delivery, Some(&event), &e).await
            }
            Err(e) => Err(e),
        }
    }

    /// Applies the event and moves the source's own checkpoint (if it keeps one) in one
    /// transaction: a crash between the two cannot happen.
    async fn apply_and_checkpoint(
        &self,
        event: &Projected,
        delivery: &Delivery,
    ) -> Result<bool, RunnerError> {
        let mut tx = self.pool.begin().await?;
        let applied = apply_in(&mut tx, self.projection.as_ref(), event).await?;
        self.source
            .checkpoint_in(&mut tx, delivery)
            .await
            .map_err(RunnerError::Source)?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        event: Option<&Projected>,
        error: &ApplyError,
    ) -> Result<(), RunnerError> {
        dead_letters::record(
            &self.pool,
            self.projection.name(),
            delivery,
            event,
            &error.report(),
        )
        .await?;
        self.source.publish_dead_letter(delivery).await;
        // Past the dead letter too (its own statement: the letter is the record).
        let mut conn = self.pool.acquire().await?;
        self.source
            .checkpoint_in(&mut conn, delivery)
            .await
            .map_err(RunnerError::Source)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_exponentially_up_to_its_cap_with_jitter() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(2, cap, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(5, cap, 1.0), Duration::from_millis(3200));
        assert_eq!(backoff(10, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, cap, 1.0), cap);
        assert_eq!(backoff(10, cap, 0.0), cap / 2);
        let jittered = backoff(4, cap, 0.3);
        assert!(jittered >= Duration::from_millis(800) && jittered < Duration::from_millis(1600));
    }
}
