//! A graceful stop (docs/deployment.md, "Graceful shutdown").
//!
//! A long-running loop (a projection runner, the relay) holds a [`Shutdown`] and asks between
//! units of work whether to stop, or waits for the stop beside whatever it waits for. Whoever
//! owns the process asks for the stop once ([`Shutdown::stop`]); every clone sees it. Work in
//! progress is never cut: a loop finishes its current batch (whose checkpoint moves in the same
//! transaction) and then returns.
use std::sync::Arc;

use tokio::sync::watch;

/// A stop asked for once and seen by every clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    asked: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            asked: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Asks every holder to stop after its current unit of work. Asking again does nothing.
    pub fn stop(&self) {
        self.asked
            .send_if_modified(|asked| !std::mem::replace(asked, true));
    }

    /// Whether the stop was asked for.
    pub fn is_stopping(&self) -> bool {
        *self.asked.borrow()
    }

    /// Resolves once the stop is asked for (at once if it already was). Cancel-safe: use it in
    /// `tokio::select!` beside the work's own wait.
    pub async fn stopping(&self) {
        let mut seen = self.asked.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail here.
        let _ = seen.wait_for(|asked| *asked).await;
    }
}

/// Which signal asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: an orchestrator's stop. Drain first (readiness false for a while, so that load
    /// balancers stop sending), then stop.
    Terminate,
    /// SIGINT (Ctrl-C): a person at a terminal. Stop gracefully, without the drain's wait.
    Interrupt,
}

/// Waits for SIGTERM or SIGINT. Installing the handlers replaces the default (exit at once) for
/// the whole process, so only the binary's long-running commands call this, never a library.
pub async fn signal() -> std::io::Result<Signal> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let signal = tokio::select! {
            _ = terminate.recv() => Signal::Terminate,
            _ = interrupt.recv() => Signal::Interrupt,
        };
        tracing::info!(?signal, "stop asked for");
        Ok(signal)
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(Signal::Interrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_clone_sees_the_stop_and_waiters_wake() {
        let shutdown = Shutdown::new();
        let held = shutdown.clone();
        let waiter = tokio::spawn(async move { held.stopping().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "nothing asked for a stop yet");
        assert!(!shutdown.is_stopping());
        shutdown.stop();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter ends");
        // Late waiters resolve at once; asking twice is harmless.
        shutdown.stop();
        assert!(shutdown.is_stopping());
        tokio::time::timeout(Duration::from_millis(100), shutdown.clone().stopping())
            .await
            .expect("a stop already asked for resolves at once");
    }
}
