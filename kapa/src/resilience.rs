//! What keeps a slow or failing Kapa from taking the platform with it: a circuit breaker per
//! Kapa project, a bulkhead (concurrency limit) per tenant, and retries with exponential
//! backoff and full jitter for the failures where retrying is safe.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where a circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused without trying, until `open_for` has passed.
    Open,
    /// One probe call is let through; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The word the status route shows.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A breaker as the status route shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerStatus {
    /// The Kapa project it guards.
    pub project_id: String,
    /// Where it stands.
    pub state: BreakerState,
    /// Failures in a row so far.
    pub consecutive_failures: u32,
    /// How many times it opened since the process started.
    pub times_opened: u64,
    /// Milliseconds until an open breaker lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
    times_opened: u64,
}

/// May this call go through?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes, normally.
    Closed,
    /// Yes, as the one probe of a half-open breaker.
    Probe,
}

/// The circuit breakers, one per Kapa project.
pub struct Breakers {
    failures_to_open: u32,
    open_for: Duration,
    breakers: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// Breakers that open after `failures_to_open` failures in a row and stay open `open_for`.
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            breakers: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, project: &str, f: impl FnOnce(&mut Breaker) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update; the counters are
        // still usable.
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(project.to_string()).or_default())
    }

    /// Whether a call to `project` may go through now; `None` while the breaker is open (or
    /// half-open with its probe already in flight).
    pub fn admit(&self, project: &str) -> Option<Admission> {
        let open_for = self.open_for;
        self.with(project, |b| match b.opened_at {
            None => Some(Admission::Closed),
            Some(at) if at.elapsed() >= open_for && !b.probing => {
                b.probing = true;
                Some(Admission::Probe)
            }
            Some(_) => None,
        })
    }

    /// The call reached Kapa and Kapa was healthy (whatever it answered).
    pub fn succeeded(&self, project: &str) {
        self.with(project, |b| {
            b.consecutive_failures = 0;
            b.opened_at = None;
            b.probing = false;
        })
    }

    /// The call failed in a way that counts against Kapa's health.
    pub fn failed(&self, project: &str) {
        let failures_to_open = self.failures_to_open;
        let opened = self.with(project, |b| {
            b.consecutive_failures = b.consecutive_failures.saturating_add(1);
            let was_probe = b.probing;
            b.probing = false;
            if was_probe || (b.opened_at.is_none() && b.consecutive_failures >= failures_to_open) {
                b.opened_at = Some(Instant::now());
                b.times_opened += 1;
                true
            } else {
                false
            }
        });
        if opened {
            tracing::warn!(project, "the Kapa circuit breaker opened");
        }
    }

    /// A probe that ended without a verdict (cancelled): let the next caller probe.
    pub fn abandon_probe(&self, project: &str) {
        self.with(project, |b| b.probing = false)
    }

    /// Every breaker, by project.
    pub fn snapshot(&self) -> Vec<BreakerStatus> {
        let map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<BreakerStatus> = map
            .iter()
            .map(|(project, b)| {
                let (state, retry_in_ms) = match b.opened_at {
                    None => (BreakerState::Closed, None),
                    Some(_) if b.probing => (BreakerState::HalfOpen, None),
                    Some(at) => {
                        let left = self.open_for.saturating_sub(at.elapsed());
                        if left.is_zero() {
                            (BreakerState::HalfOpen, None)
                        } else {
                            (BreakerState::Open, Some(left.as_millis() as u64))
                        }
                    }
                };
                BreakerStatus {
                    project_id: project.clone(),
                    state,
                    consecutive_failures: b.consecutive_failures,
                    times_opened: b.times_opened,
                    retry_in_ms,
                }
            })
            .collect();
        all.sort_by(|a, b| a.project_id.cmp(&b.project_id));
        all
    }
}

/// A concurrency limit per tenant: one tenant's burst waits for its own permits and cannot
/// take every connection to Kapa.
pub struct Bulkheads {
    per_tenant: usize,
    wait: Duration,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Bulkheads {
    /// `per_tenant` calls at once per tenant; a call waits at most `wait` for a permit.
    pub fn new(per_tenant: usize, wait: Duration) -> Self {
        Self {
            per_tenant: per_tenant.max(1),
            wait,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// A permit for one call of `tenant`, or `None` when none came free in time.
    pub async fn enter(&self, tenant: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut map = self.semaphores.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        tokio::time::timeout(self.wait, semaphore.acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// How retries back off.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based): exponential with full jitter, or
    /// what the server asked for in `Retry-After` when it did.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked;
        }
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        ceiling.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_once_and_closes_on_success() {
        let breakers = Breakers::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert_eq!(breakers.admit("p"), Some(Admission::Closed));
            breakers.failed("p");
        }
        breakers.succeeded("p"); // a success in between resets the count
        for _ in 0..3 {
            assert!(breakers.admit("p").is_some());
            breakers.failed("p");
        }
        assert_eq!(breakers.admit("p"), None, "open");
        assert_eq!(breakers.snapshot()[0].state, BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breakers.admit("p"), Some(Admission::Probe));
        assert_eq!(breakers.admit("p"), None, "one probe at a time");
        breakers.failed("p");
        assert_eq!(breakers.admit("p"), None, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breakers.admit("p"), Some(Admission::Probe));
        breakers.succeeded("p");
        assert_eq!(breakers.admit("p"), Some(Admission::Closed));
        assert_eq!(breakers.snapshot()[0].times_opened, 2);
        assert_eq!(
            breakers.admit("other"),
            Some(Admission::Closed),
            "per project"
        );
    }

    #[test]
    fn backoff_grows_jitters_and_honours_retry_after() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            retries: 3,
        };
        let d0 = b.delay(0, None);
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        let d5 = b.delay(5, None);
        assert!(d5 >= Duration::from_millis(500) && d5 <= Duration::from_millis(1_000));
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[tokio::test]
    async fn a_tenants_burst_waits_for_its_own_permits_only() {
        let bulkheads = Bulkheads::new(2, Duration::from_millis(20));
        let _a = bulkheads.enter("acme").await.unwrap();
        let _b = bulkheads.enter("acme").await.unwrap();
        assert!(bulkheads.enter("acme").await.is_none(), "acme is full");
        assert!(bulkheads.enter("globex").await.is_some(), "globex is not");
    }
}
