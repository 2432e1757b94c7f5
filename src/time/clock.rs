//! The clocks a drill reads: monotonic for what it measures (RTO, phase
//! durations), wall for what it stamps (timeline, incident, verified).

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Seam for time so RTO arithmetic is testable without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic reading since an arbitrary fixed origin.
    fn monotonic(&self) -> Duration;
    /// The current wall-clock time.
    fn wall(&self) -> DateTime<Utc>;
}

/// The real clocks: [`Instant`] for monotonic readings, [`Utc::now`] for wall.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
        ORIGIN.elapsed()
    }

    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to. Clones share one time, so a test
/// keeps a handle to advance while the drill reads another.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<ManualNow>>,
}

#[derive(Debug)]
struct ManualNow {
    monotonic: Duration,
    wall: DateTime<Utc>,
}

impl ManualClock {
    /// A clock reading `wall_start` on the wall and zero on the monotonic side.
    pub fn new(wall_start: DateTime<Utc>) -> Self {
        let now = ManualNow {
            monotonic: Duration::ZERO,
            wall: wall_start,
        };
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        now.monotonic += by;
        now.wall += by;
    }

    fn lock(&self) -> MutexGuard<'_, ManualNow> {
        // Two plain values, always updated together: a panic elsewhere
        // cannot leave them inconsistent, so poisoning carries no meaning.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        self.lock().monotonic
    }

    fn wall(&self) -> DateTime<Utc> {
        self.lock().wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_one_time() {
        let start = DateTime::from_timestamp(1_777_622_400, 0).unwrap();
        let clock = ManualClock::new(start);
        let handle = clock.clone();
        handle.advance(Duration::from_secs(90));
        assert_eq!(clock.monotonic(), Duration::from_secs(90));
        assert_eq!(clock.wall(), start + Duration::from_secs(90));
    }
}
