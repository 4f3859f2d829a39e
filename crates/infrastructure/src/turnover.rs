//! When the pool may open a connection, and which open connections it must give up: the two rules that keep a fleet
//! of services from hurting an Aurora cluster after a failover, and the pool's maximum lifetime beside them.
//!
//! - [`OpeningPace`] spaces new connections out. Each one costs the server a TLS handshake and, with IAM, a token
//!   check that RDS throttles ("too many competing requests"; AWS advises staying under about 200 new IAM
//!   connections a second). After a failover or a mass disconnect every pool in a fleet wants all of its connections
//!   back at once, so each process opens at most its share a second, with jitter, and requests wait in the pool's
//!   queue meanwhile.
//! - [`Eviction`] marks the moment a failover was noticed. A connection opened before it may still reach the old
//!   writer (now a reader) through a stale DNS answer or simply because it was opened there, so the pool closes it
//!   when it is next handed out or returned, and opens a new one, which resolves the endpoint again.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::settings::PoolSettings;

/// Both rules, for one pool, with its maximum lifetime.
#[derive(Debug)]
pub(crate) struct Turnover {
    pub(crate) pace: OpeningPace,
    pub(crate) eviction: Eviction,
    max_lifetime: Duration,
}

impl Turnover {
    pub(crate) fn new(settings: &PoolSettings) -> Self {
        Self {
            pace: OpeningPace::per_second(settings.max_new_per_sec),
            eviction: Eviction::default(),
            max_lifetime: settings.max_lifetime,
        }
    }

    /// Whether a connection of this `age` is to be closed rather than used again, wherever it is (idle in the pool,
    /// parked, or just done with a statement): it has lived the pool's maximum lifetime, or it was opened before the
    /// last failover noticed.
    pub(crate) fn is_spent(&self, age: Duration) -> bool {
        age >= self.max_lifetime || self.eviction.opened_before_failover(age)
    }
}

/// Spaces the openings of new connections at least 1.1 × `1 / rate` apart, plus a random share of that, so that two
/// processes started together drift apart instead of opening in step. Spaced exactly `1 / rate` apart, `rate + 1`
/// openings would span exactly one second, and a server would see them all within one if the first reached it a
/// little late: the tenth kept back is the margin for that.
///
/// The pool opens a connection in two cases, and a turn is taken before each: when it has no idle connection to give
/// (see [`OpeningPace::claim_idle`]), and when it gives up an idle one that fails its check before use (the pool's
/// `before_acquire` waits for a turn before saying no, since the pool opens a replacement straight away).
#[derive(Debug)]
pub(crate) struct OpeningPace {
    interval: Duration,
    /// The earliest moment the next opening may start.
    next: Mutex<tokio::time::Instant>,
    /// Acquisitions under way that counted on one of the pool's idle connections instead of taking a turn.
    claims: AtomicUsize,
}

/// An acquisition's claim on one of the pool's idle connections, given back when the acquisition ends.
#[derive(Debug)]
pub(crate) struct IdleClaim<'p>(Option<&'p AtomicUsize>);

impl IdleClaim<'_> {
    /// Whether a turn to open a connection was taken instead of counting on an idle one.
    pub(crate) fn took_turn(&self) -> bool {
        self.0.is_none()
    }
}

impl Drop for IdleClaim<'_> {
    fn drop(&mut self) {
        if let Some(claims) = self.0 {
            claims.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl OpeningPace {
    /// The first turn is one interval away: the pool's first connection, which proves the settings at start, is
    /// opened straight away, and takes the turn before it.
    pub(crate) fn per_second(rate: NonZeroU32) -> Self {
        let interval = Duration::from_secs(1) / rate.get();
        Self {
            interval,
            next: Mutex::new(tokio::time::Instant::now() + interval),
            claims: AtomicUsize::new(0),
        }
    }

    /// Before asking the pool for a connection while it holds `idle` idle ones: counts on one of them when fewer
    /// acquisitions than that already do, and otherwise waits for a turn to open one. None when the turn would come
    /// after `deadline`. Taking an idle connection costs no turn, so a busy pool handing its connections round is
    /// never slowed; and as only as many acquisitions as there are idle connections go without a turn, each of the
    /// others may open one.
    pub(crate) async fn claim_idle(&self, idle: usize, deadline: tokio::time::Instant) -> Option<IdleClaim<'_>> {
        if self.claims.fetch_add(1, Ordering::AcqRel) < idle {
            return Some(IdleClaim(Some(&self.claims)));
        }
        self.claims.fetch_sub(1, Ordering::AcqRel);
        self.wait_turn(deadline).await.then_some(IdleClaim(None))
    }

    /// Waits for a turn to open a connection, and takes it; false when no turn comes by `deadline`. Nothing is
    /// reserved while waiting: a caller that gives up (its statement got a connection another way) costs no turn,
    /// so only the openings that happen are spaced out.
    pub(crate) async fn wait_turn(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let next = {
                let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
                let now = tokio::time::Instant::now();
                if *next <= now {
                    // The jitter goes into the spacing itself, so that it can only widen the gaps between openings.
                    *next = now + self.interval.mul_f64(1.1 + fastrand::f64() * 0.4);
                    return true;
                }
                *next
            };
            if next > deadline {
                return false;
            }
            tokio::time::sleep_until(next).await;
        }
    }
}

/// The moment from which connections opened earlier are given up, if a failover has been noticed.
#[derive(Debug)]
pub(crate) struct Eviction {
    anchor: Instant,
    /// Nanoseconds from `anchor` to the last failover noticed; 0 while none has been.
    since: AtomicU64,
}

impl Default for Eviction {
    fn default() -> Self {
        Self {
            anchor: Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl Eviction {
    /// From now on, every connection opened before this moment is to be given up.
    pub(crate) fn evict_older(&self) {
        let nanos = u64::try_from(self.anchor.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.since.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Whether something that happened at `moment` (a connection opened) came before the last failover noticed.
    pub(crate) fn is_before_failover(&self, moment: Instant) -> bool {
        let since = self.since.load(Ordering::Acquire);
        since != 0
            && moment
                .checked_duration_since(self.anchor)
                .is_none_or(|after| after.as_nanos() < u128::from(since))
    }

    /// Whether a connection of this `age` was opened before the last failover noticed.
    pub(crate) fn opened_before_failover(&self, age: Duration) -> bool {
        Instant::now()
            .checked_sub(age)
            .is_none_or(|opened| self.is_before_failover(opened))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_evicted_before_a_failover_and_only_older_connections_after_one() {
        let eviction = Eviction::default();
        assert!(!eviction.opened_before_failover(Duration::from_secs(3600)));
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        eviction.evict_older();
        std::thread::sleep(Duration::from_millis(2));
        let after = Instant::now();
        assert!(eviction.is_before_failover(before));
        assert!(!eviction.is_before_failover(after));
        assert!(eviction.opened_before_failover(after.elapsed() + Duration::from_millis(3)));
        assert!(!eviction.opened_before_failover(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn openings_are_spaced_by_at_least_the_interval_and_give_up_past_the_deadline() {
        let pace = OpeningPace::per_second(NonZeroU32::new(10).expect("non-zero"));
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(1);
        let mut turns = Vec::new();
        while pace.wait_turn(deadline).await {
            turns.push(tokio::time::Instant::now());
        }
        // The first turn comes after the start's own connection's; each gap is 110 to 150 ms: between 6 and 9 more
        // turns fit in the second.
        assert!((6..=9).contains(&turns.len()), "{} turns", turns.len());
        assert!(turns[0] - start >= Duration::from_millis(100));
        for pair in turns.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(110), "{pair:?}");
        }
        assert!(turns.iter().all(|turn| *turn <= deadline));
    }
}
