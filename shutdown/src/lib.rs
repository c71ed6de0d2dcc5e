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

    /// Asks for the stop, then waits at most `within` for `tasks` to end; the ones still running
    /// then are aborted (`None`). Each task's outcome, in order, when all ended in time.
    pub async fn stop_within<T>(
        &self,
        tasks: Vec<tokio::task::JoinHandle<T>>,
        within: std::time::Duration,
    ) -> Option<Vec<Result<T, tokio::task::JoinError>>> {
        self.stop();
        let aborts: Vec<_> = tasks
            .iter()
            .map(tokio::task::JoinHandle::abort_handle)
            .collect();
        let all = async {
            let mut ended = Vec::with_capacity(tasks.len());
            for task in tasks {
                ended.push(task.await);
            }
            ended
        };
        match tokio::time::timeout(within, all).await {
            Ok(ended) => Some(ended),
            Err(_) => {
                for task in aborts {
                    task.abort();
                }
                None
            }
        }
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

    #[tokio::test]
    async fn stop_within_waits_for_those_that_stop_and_cuts_those_that_do_not() {
        let shutdown = Shutdown::new();
        let held = shutdown.clone();
        let polite = tokio::spawn(async move {
            held.stopping().await;
            7
        });
        let ended = shutdown
            .stop_within(vec![polite], Duration::from_secs(1))
            .await
            .expect("it stops when asked");
        assert_eq!(
            ended.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [7]
        );

        let deaf = tokio::spawn(std::future::pending::<()>());
        let probe = deaf.abort_handle();
        assert!(
            Shutdown::new()
                .stop_within(vec![deaf], Duration::from_millis(50))
                .await
                .is_none(),
            "a task that ignores the stop is cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(probe.is_finished(), "and aborted");
    }
}
