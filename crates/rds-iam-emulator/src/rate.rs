//! Events per second over a sliding one-second window: the peak rate of new connections the emulator reports, and
//! the rate of authentications it lets through with `--max-auth-per-sec`.
//!
//! The window is exact rather than bucketed: an event counts for the one second that follows it (the interval
//! `(now - 1 s, now]`), so "at most N per second" holds for every one-second interval, not only for those that
//! start on a whole second, and a peak is the largest number of events any one-second interval held.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

/// The times of the events of the last second, oldest first.
#[derive(Debug, Default)]
struct LastSecond {
    times: VecDeque<Instant>,
}

impl LastSecond {
    /// Forgets the events that are a second old or more at `now`, and returns how many remain.
    fn count_at(&mut self, now: Instant) -> usize {
        while self
            .times
            .front()
            .is_some_and(|&time| now.saturating_duration_since(time) >= WINDOW)
        {
            self.times.pop_front();
        }
        self.times.len()
    }

    fn record(&mut self, now: Instant) {
        self.times.push_back(now);
    }
}

/// The most events any one-second interval has held, with the events of the last second it needs to go on
/// counting.
#[derive(Debug, Default)]
pub(crate) struct PeakRate(Mutex<(LastSecond, usize)>);

impl PeakRate {
    /// Counts an event at `now`.
    pub(crate) fn record(&self, now: Instant) {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (last_second, peak) = &mut *guard;
        last_second.count_at(now);
        last_second.record(now);
        // The count peaks at an event: between events it only falls.
        *peak = (*peak).max(last_second.times.len());
    }

    /// The largest number of events within one second so far.
    pub(crate) fn peak(&self) -> u64 {
        let peak = self.0.lock().unwrap_or_else(PoisonError::into_inner).1;
        u64::try_from(peak).unwrap_or(u64::MAX)
    }
}

/// Lets at most `limit` events through in any one second; the events it refuses do not count.
#[derive(Debug)]
pub(crate) struct RateLimit {
    limit: usize,
    last_second: Mutex<LastSecond>,
}

impl RateLimit {
    pub(crate) fn per_second(limit: NonZeroU32) -> Self {
        Self {
            limit: usize::try_from(limit.get()).unwrap_or(usize::MAX),
            last_second: Mutex::default(),
        }
    }

    /// Counts an event at `now` and returns true, unless `limit` events already happened in the second before.
    pub(crate) fn try_acquire(&self, now: Instant) -> bool {
        let mut last_second = self.last_second.lock().unwrap_or_else(PoisonError::into_inner);
        let free = last_second.count_at(now) < self.limit;
        if free {
            last_second.record(now);
        }
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILLISECOND: Duration = Duration::from_millis(1);

    fn limit(events: u32) -> RateLimit {
        RateLimit::per_second(NonZeroU32::new(events).expect("not zero"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_lets_through_that_many_events_in_any_one_second() {
        let limit = limit(3);

        let first_second: Vec<bool> = (0..5).map(|_| limit.try_acquire(Instant::now())).collect();
        assert_eq!(first_second, [true, true, true, false, false]);

        // A second after the first three, they no longer count; the refused two never did.
        tokio::time::advance(WINDOW - MILLISECOND).await;
        assert!(!limit.try_acquire(Instant::now()));
        tokio::time::advance(MILLISECOND).await;
        let next_second: Vec<bool> = (0..4).map(|_| limit.try_acquire(Instant::now())).collect();
        assert_eq!(next_second, [true, true, true, false]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_slides_rather_than_resetting_on_whole_seconds() {
        let limit = limit(2);

        assert!(limit.try_acquire(Instant::now()));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(limit.try_acquire(Instant::now()));
        // 1.2 s after the start: a bucket per whole second would be empty again, but the interval (0.2 s, 1.2 s]
        // already holds the event at 0.6 s, and the one at 0 s has left it.
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(limit.try_acquire(Instant::now()));
        assert!(!limit.try_acquire(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_peak_is_the_busiest_second_wherever_it_starts() {
        let rate = PeakRate::default();
        assert_eq!(rate.peak(), 0);

        // Three events at the end of one whole second and three at the start of the next: six within 200 ms,
        // which per-whole-second buckets would report as a peak of three.
        tokio::time::advance(Duration::from_millis(900)).await;
        for _ in 0..3 {
            rate.record(Instant::now());
        }
        tokio::time::advance(Duration::from_millis(200)).await;
        for _ in 0..3 {
            rate.record(Instant::now());
        }
        assert_eq!(rate.peak(), 6);

        // A quiet spell afterwards lowers the current rate, never the peak.
        tokio::time::advance(Duration::from_secs(5)).await;
        rate.record(Instant::now());
        assert_eq!(rate.peak(), 6);
    }
}
