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

/// A clock set by hand: the seed command and the tests lay events over past days with it.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn at(t: DateTime<Utc>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::Mutex::new(t)))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        // A poisoned lock only means another thread panicked while setting a time; the time
        // itself is a plain value and still valid.
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_says_what_it_was_set_to() {
        let t = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let clock = ManualClock::at(t);
        assert_eq!(clock.now(), t);
        clock.set(t + chrono::Duration::days(1));
        assert_eq!(clock.now(), t + chrono::Duration::days(1));
    }
}
