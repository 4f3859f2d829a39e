//! The instances behind the endpoints and their roles over time: which instance is the writer, where each endpoint
//! relays, and what a failover does.
//!
//! A failover, as Aurora does it with two instances: both restart (the old writer, and the reader being promoted,
//! which Aurora restarts too), so every session on either closes and both refuse new connections for the downtime;
//! then the roles swap. For a further stale-DNS spell the cluster endpoint still relays to the old writer, now a
//! reader, as a client whose DNS answer was cached would reach it. The reader endpoint follows the reader at once.
//! With a single instance a failover is a restart: the downtime, and no swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::rate::RateLimit;

/// The longest downtime or stale-DNS spell a failover may ask for: far beyond any drill, and short enough that no
/// deadline computed from it can overflow.
pub const MAX_FAILOVER_SPELL: Duration = Duration::from_secs(3600);

/// Which instance an endpoint relays to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// An instance endpoint: always its own instance.
    Instance(usize),
    /// The cluster endpoint: the writer, or the old writer while DNS is stale after a failover.
    Writer,
    /// The reader endpoint: the reader.
    Reader,
}

/// Why a failover was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailoverError {
    #[error("a failover is under way: the instances restart for {remaining_ms} ms more")]
    InProgress { remaining_ms: u64 },
    #[error("a failover's downtime and stale-DNS spell are each at most {} ms", MAX_FAILOVER_SPELL.as_millis())]
    TooLong,
}

/// A failover, once started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStarted {
    /// The writer until now, which restarts and comes back as the reader.
    pub old_writer: String,
    /// The instance promoted to writer once the downtime is over (the same one with a single instance).
    pub new_writer: String,
    pub downtime_ms: u64,
    pub stale_dns_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Failover {
    at: Instant,
    downtime: Duration,
    stale_dns: Duration,
}

/// Where a failover is, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No failover under way.
    Settled,
    /// Every instance restarts and refuses connections until then.
    Down { until: Instant },
    /// The roles have swapped, but until then the cluster endpoint still relays to the old writer.
    StaleDns { old_writer: usize, until: Instant },
}

/// The roles at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Roles {
    instances: usize,
    pub(crate) writer: usize,
    pub(crate) phase: Phase,
}

impl Roles {
    /// With two instances, the one that is not the writer; with one, the writer itself.
    pub(crate) fn reader(&self) -> usize {
        (self.writer + 1) % self.instances
    }

    /// The instance `route` reaches and whether sessions opened there are read-only; `None` while the instances
    /// restart.
    pub(crate) fn target(&self, route: Route) -> Option<(usize, bool)> {
        let instance = match (route, self.phase) {
            (_, Phase::Down { .. }) => return None,
            (Route::Instance(instance), _) => instance,
            (Route::Writer, Phase::StaleDns { old_writer, .. }) => old_writer,
            (Route::Writer, Phase::Settled) => self.writer,
            (Route::Reader, _) => self.reader(),
        };
        Some((instance, instance != self.writer))
    }
}

/// The writer before the last failover, and that failover: the roles at any time follow from these.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    instances: usize,
    writer: usize,
    failover: Option<Failover>,
}

impl Timeline {
    fn new(instances: usize) -> Self {
        Self {
            instances,
            writer: 0,
            failover: None,
        }
    }

    fn roles(&self, now: Instant) -> Roles {
        let swapped = (self.writer + 1) % self.instances;
        let (writer, phase) = match self.failover {
            None => (self.writer, Phase::Settled),
            Some(failover) => {
                let up_at = failover.at + failover.downtime;
                let fresh_at = up_at + failover.stale_dns;
                if now < up_at {
                    (self.writer, Phase::Down { until: up_at })
                } else if now < fresh_at {
                    let phase = Phase::StaleDns {
                        old_writer: self.writer,
                        until: fresh_at,
                    };
                    (swapped, phase)
                } else {
                    (swapped, Phase::Settled)
                }
            }
        };
        Roles {
            instances: self.instances,
            writer,
            phase,
        }
    }

    fn fail_over(&mut self, now: Instant, downtime: Duration, stale_dns: Duration) -> Result<(), FailoverError> {
        if downtime > MAX_FAILOVER_SPELL || stale_dns > MAX_FAILOVER_SPELL {
            return Err(FailoverError::TooLong);
        }
        let roles = self.roles(now);
        if let Phase::Down { until } = roles.phase {
            let remaining_ms = until.saturating_duration_since(now).as_millis();
            return Err(FailoverError::InProgress {
                remaining_ms: u64::try_from(remaining_ms).unwrap_or(u64::MAX),
            });
        }
        // A failover during another's stale-DNS spell starts from the roles as they are now; the restart ends the
        // earlier spell along with every session.
        self.writer = roles.writer;
        self.failover = Some(Failover {
            at: now,
            downtime,
            stale_dns,
        });
        Ok(())
    }
}

/// One instance: its name, its open sessions, the restarts that end them, and its rate of authentications.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) name: String,
    sessions_open: AtomicU64,
    /// Counts restarts; every session watches it, and ends when it changes.
    restarts: watch::Sender<u64>,
    auth_limit: Option<RateLimit>,
}

impl Instance {
    pub(crate) fn sessions_open(&self) -> u64 {
        self.sessions_open.load(Ordering::Relaxed)
    }
}

/// The instances and their roles over time.
#[derive(Debug)]
pub(crate) struct Cluster {
    instances: Vec<Instance>,
    timeline: Mutex<Timeline>,
}

/// What a new connection to an endpoint finds.
#[derive(Debug)]
pub(crate) enum Admission<'a> {
    /// The instances restart: the connection is refused as a starting server refuses it.
    StartingUp,
    /// An instance that can open a session, and a signal that fires when that instance restarts.
    Open(Placement<'a>, Restart),
}

/// The instance a connection reached, and how its session is to be opened there.
#[derive(Debug)]
pub(crate) struct Placement<'a> {
    instance: &'a Instance,
    read_only: bool,
}

impl Placement<'_> {
    /// Whether the session opens read-only, as on an Aurora reader.
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    /// How many authentications per second the instance takes, when it is limited.
    pub(crate) fn auth_limit(&self) -> Option<&RateLimit> {
        self.instance.auth_limit.as_ref()
    }

    pub(crate) fn instance_name(&self) -> &str {
        &self.instance.name
    }

    /// Counts a session open on the instance for as long as the value lives.
    pub(crate) fn session_opened(&self) -> OpenSession<'_> {
        self.instance.sessions_open.fetch_add(1, Ordering::Relaxed);
        OpenSession(self.instance)
    }
}

/// A session open on an instance; counted until dropped.
#[derive(Debug)]
pub(crate) struct OpenSession<'a>(&'a Instance);

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Fires when the instance a connection reached restarts.
#[derive(Debug)]
pub(crate) struct Restart(watch::Receiver<u64>);

impl Restart {
    pub(crate) async fn happened(&mut self) {
        // An error means the cluster is gone, and its sessions with it.
        let _ = self.0.changed().await;
    }
}

impl Cluster {
    /// Instances named `names`, the first the writer, each letting through at most `auth_limit` authentications
    /// per second when given.
    pub(crate) fn new(names: Vec<String>, auth_limit: Option<std::num::NonZeroU32>) -> Self {
        let instances: Vec<Instance> = names
            .into_iter()
            .map(|name| Instance {
                name,
                sessions_open: AtomicU64::new(0),
                restarts: watch::Sender::new(0),
                auth_limit: auth_limit.map(RateLimit::per_second),
            })
            .collect();
        Self {
            timeline: Mutex::new(Timeline::new(instances.len())),
            instances,
        }
    }

    pub(crate) fn instances(&self) -> &[Instance] {
        &self.instances
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn roles(&self) -> Roles {
        self.timeline().roles(Instant::now())
    }

    /// Where a new connection to an endpoint with `route` goes now.
    pub(crate) fn admit(&self, route: Route) -> Admission<'_> {
        // Under the lock a failover takes too: a connection either sees the failover, or is ended by it.
        let timeline = self.timeline();
        match timeline.roles(Instant::now()).target(route) {
            None => Admission::StartingUp,
            Some((instance, read_only)) => {
                let instance = &self.instances[instance];
                let restart = Restart(instance.restarts.subscribe());
                Admission::Open(Placement { instance, read_only }, restart)
            }
        }
    }

    /// Starts a failover now: every session on every instance ends, and the timeline above begins.
    pub(crate) fn fail_over(&self, downtime: Duration, stale_dns: Duration) -> Result<FailoverStarted, FailoverError> {
        let mut timeline = self.timeline();
        let now = Instant::now();
        timeline.fail_over(now, downtime, stale_dns)?;
        for instance in &self.instances {
            instance
                .restarts
                .send_modify(|restarts| *restarts = restarts.wrapping_add(1));
        }
        let old_writer = timeline.writer;
        let new_writer = timeline.roles(now + downtime).writer;
        let millis = |spell: Duration| u64::try_from(spell.as_millis()).unwrap_or(u64::MAX);
        Ok(FailoverStarted {
            old_writer: self.instances[old_writer].name.clone(),
            new_writer: self.instances[new_writer].name.clone(),
            downtime_ms: millis(downtime),
            stale_dns_ms: millis(stale_dns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: usize = 0;
    const B: usize = 1;
    const SECOND: Duration = Duration::from_secs(1);

    fn targets(roles: &Roles) -> [Option<(usize, bool)>; 4] {
        [Route::Instance(A), Route::Instance(B), Route::Writer, Route::Reader].map(|route| roles.target(route))
    }

    #[test]
    fn a_failover_restarts_both_instances_then_swaps_them_and_dns_lags() {
        let start = Instant::now();
        let mut timeline = Timeline::new(2);
        assert_eq!(
            targets(&timeline.roles(start)),
            [Some((A, false)), Some((B, true)), Some((A, false)), Some((B, true))]
        );

        timeline
            .fail_over(start, 2 * SECOND, 3 * SECOND)
            .expect("no failover under way");

        // Down: every endpoint refuses, whichever instance it reaches.
        for at in [start, start + 2 * SECOND - Duration::from_millis(1)] {
            let roles = timeline.roles(at);
            assert_eq!(
                roles.phase,
                Phase::Down {
                    until: start + 2 * SECOND
                }
            );
            assert_eq!(targets(&roles), [None; 4]);
        }
        // Swapped, with stale DNS: the cluster endpoint reaches A, which is now a reader.
        let roles = timeline.roles(start + 2 * SECOND);
        assert_eq!(roles.writer, B);
        assert_eq!(
            roles.phase,
            Phase::StaleDns {
                old_writer: A,
                until: start + 5 * SECOND
            }
        );
        assert_eq!(
            targets(&roles),
            [Some((A, true)), Some((B, false)), Some((A, true)), Some((A, true))]
        );
        // Settled: the cluster endpoint reaches the new writer.
        let roles = timeline.roles(start + 5 * SECOND);
        assert_eq!((roles.writer, roles.phase), (B, Phase::Settled));
        assert_eq!(
            targets(&roles),
            [Some((A, true)), Some((B, false)), Some((B, false)), Some((A, true))]
        );
    }

    #[test]
    fn a_failover_waits_for_the_last_ones_downtime_but_not_its_stale_dns() {
        let start = Instant::now();
        let mut timeline = Timeline::new(2);
        timeline
            .fail_over(start, 2 * SECOND, 3 * SECOND)
            .expect("no failover under way");

        assert_eq!(
            timeline.fail_over(start + SECOND, SECOND, SECOND),
            Err(FailoverError::InProgress { remaining_ms: 1000 })
        );

        // During the stale-DNS spell: B is the writer, so it fails over back to A, and the spell is over.
        let second = start + 3 * SECOND;
        timeline
            .fail_over(second, SECOND, Duration::ZERO)
            .expect("the downtime is over");
        assert_eq!(timeline.roles(second).phase, Phase::Down { until: second + SECOND });
        let roles = timeline.roles(second + SECOND);
        assert_eq!((roles.writer, roles.phase), (A, Phase::Settled));
    }

    #[test]
    fn a_single_instance_restarts_and_stays_the_writer() {
        let start = Instant::now();
        let mut timeline = Timeline::new(1);
        timeline
            .fail_over(start, SECOND, SECOND)
            .expect("no failover under way");

        assert_eq!(timeline.roles(start).target(Route::Instance(A)), None);
        for at in [start + SECOND, start + 2 * SECOND] {
            assert_eq!(timeline.roles(at).target(Route::Instance(A)), Some((A, false)));
        }
    }

    #[test]
    fn spells_beyond_the_maximum_are_refused() {
        let mut timeline = Timeline::new(2);
        let too_long = MAX_FAILOVER_SPELL + SECOND;
        for (downtime, stale_dns) in [(too_long, SECOND), (SECOND, too_long)] {
            assert_eq!(
                timeline.fail_over(Instant::now(), downtime, stale_dns),
                Err(FailoverError::TooLong)
            );
        }
        assert_eq!(timeline.roles(Instant::now()).phase, Phase::Settled);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_ends_the_sessions_and_refuses_connections_until_the_downtime_is_over() {
        let cluster = Cluster::new(vec!["a".to_owned(), "b".to_owned()], None);
        let Admission::Open(placement, mut restart) = cluster.admit(Route::Writer) else {
            panic!("a settled cluster admits connections");
        };
        let session = placement.session_opened();
        assert_eq!((placement.instance_name(), placement.read_only()), ("a", false));
        assert_eq!(cluster.instances()[A].sessions_open(), 1);

        let started = cluster
            .fail_over(Duration::from_millis(2000), Duration::from_millis(3000))
            .expect("no failover under way");

        assert_eq!(
            started,
            FailoverStarted {
                old_writer: "a".to_owned(),
                new_writer: "b".to_owned(),
                downtime_ms: 2000,
                stale_dns_ms: 3000,
            }
        );
        tokio::time::timeout(Duration::ZERO, restart.happened())
            .await
            .expect("the session is told to end");
        drop(session);
        assert_eq!(cluster.instances()[A].sessions_open(), 0);
        assert!(matches!(cluster.admit(Route::Reader), Admission::StartingUp));

        tokio::time::advance(2 * SECOND).await;
        let Admission::Open(placement, _) = cluster.admit(Route::Writer) else {
            panic!("the downtime is over");
        };
        assert_eq!((placement.instance_name(), placement.read_only()), ("a", true));
    }
}
