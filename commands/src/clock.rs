use chrono::{DateTime, Utc};

/// The time a command is accepted, recorded with its events. Injected so tests and the seed
/// command can lay events over any period.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
