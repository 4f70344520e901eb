//! [`Clock`] implementations: the real one, and one tests move by hand.

use std::sync::Mutex;
use std::time::Duration;

use waiter_domain::Timestamp;
use waiter_ports::clock::Clock;

/// Truncates to whole microseconds, the precision both databases store, so a
/// timestamp reads back exactly as it was written.
fn to_micros(instant: Timestamp) -> Timestamp {
    let micros = instant.nanosecond() / 1_000 * 1_000;
    instant.replace_nanosecond(micros).unwrap_or(instant)
}

/// The system clock, in UTC, at microsecond precision.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        to_micros(Timestamp::now_utc())
    }
}

/// A clock that stands still until told to move: tests use it to expire
/// tokens and sessions without sleeping.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock showing `start` (truncated to microseconds).
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(to_micros(start)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
