//! What the emulator counts, per endpoint and in all, and the statistics the control API's `GET /stats` answers
//! with (the same struct, serialised).
//!
//! A new connection is a TCP connection an endpoint accepted, whatever became of it: refused connections count
//! too, as they cost the server as much to accept. The peak rate is the largest number of new connections that any
//! one-second interval held (a sliding window, not whole-second buckets; see `rate`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::{Cluster, Phase, Route};
use crate::rate::PeakRate;
use crate::state::AuthCounts;

/// Why the emulator refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The instance restarts during a failover.
    StartingUp,
    /// Over `--max-auth-per-sec`.
    Throttled,
    /// The token, the policy, or a user that is not an IAM user.
    Unauthorized,
    /// Over `--max-connections`.
    TooManyConnections,
}

/// One endpoint's counters.
#[derive(Debug)]
pub(crate) struct EndpointCounters {
    connections: AtomicU64,
    sessions_opened: AtomicU64,
    starting_up: AtomicU64,
    throttled: AtomicU64,
    unauthorized: AtomicU64,
    too_many_connections: AtomicU64,
    new_connections: PeakRate,
    /// New connections over all endpoints.
    all_new_connections: Arc<PeakRate>,
}

impl EndpointCounters {
    pub(crate) fn new(all_new_connections: Arc<PeakRate>) -> Self {
        Self {
            connections: AtomicU64::new(0),
            sessions_opened: AtomicU64::new(0),
            starting_up: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            too_many_connections: AtomicU64::new(0),
            new_connections: PeakRate::default(),
            all_new_connections,
        }
    }

    pub(crate) fn connection_accepted(&self) {
        let now = Instant::now();
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.new_connections.record(now);
        self.all_new_connections.record(now);
    }

    pub(crate) fn session_opened(&self) {
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::StartingUp => &self.starting_up,
            Refusal::Throttled => &self.throttled,
            Refusal::Unauthorized => &self.unauthorized,
            Refusal::TooManyConnections => &self.too_many_connections,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// An endpoint: its name, where it listens, and the `host:port` tokens for it must be signed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// `cluster`, `reader`, or an instance's name (`instance` in single-endpoint mode).
    pub name: String,
    pub listen: SocketAddr,
    pub signing_name: String,
}

/// What the emulator has counted since it started, and its state now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// The instance that is the writer now (during a failover's downtime, still the old one).
    pub writer: String,
    /// The instance that is the reader now; `None` with a single instance.
    pub reader: Option<String>,
    /// The failover under way, if one is.
    pub failover: Option<FailoverStatus>,
    /// Tokens the emulator checked: every password presented to it.
    pub tokens_verified: u64,
    /// Log-ins let through: a valid token, for an IAM user, within the rate.
    pub logins_accepted: u64,
    /// Relayed sessions open now, on all instances.
    pub sessions_open: u64,
    /// The most new connections, over all endpoints, that any one-second interval held.
    pub peak_new_connections_per_sec: u64,
    pub instances: Vec<InstanceStats>,
    pub endpoints: Vec<EndpointStats>,
}

/// Where a failover is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStatus {
    pub phase: FailoverPhase,
    /// Until the phase ends.
    pub remaining_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverPhase {
    /// The instances restart and refuse connections.
    Down,
    /// The roles have swapped, but the cluster endpoint still relays to the old writer.
    StaleDns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Writer,
    Reader,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStats {
    pub name: String,
    pub role: Role,
    /// False while it restarts.
    pub available: bool,
    /// Relayed sessions open on it now.
    pub sessions_open: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    /// The instance a new connection would reach now; `None` while the instances restart.
    pub relays_to: Option<String>,
    /// Whether a session opened here now would be read-only.
    pub read_only: bool,
    /// TCP connections accepted.
    pub connections: u64,
    /// Sessions authenticated and relayed.
    pub sessions_opened: u64,
    pub refused: Refusals,
    /// The most new connections to this endpoint that any one-second interval held.
    pub peak_new_connections_per_sec: u64,
}

/// Connections refused, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// During a failover's downtime.
    pub starting_up: u64,
    /// Over `--max-auth-per-sec`.
    pub throttled: u64,
    /// A token refused, a principal its policies do not allow, or a user that is not an IAM user.
    pub unauthorized: u64,
    /// Over `--max-connections`.
    pub too_many_connections: u64,
}

/// An endpoint as the statistics need it.
#[derive(Debug)]
pub(crate) struct EndpointView {
    pub(crate) info: EndpointInfo,
    pub(crate) route: Route,
    pub(crate) counters: Arc<EndpointCounters>,
}

impl Stats {
    pub(crate) fn collect(
        cluster: &Cluster,
        endpoints: &[EndpointView],
        counts: &AuthCounts,
        all_new_connections: &PeakRate,
    ) -> Self {
        let now = Instant::now();
        let roles = cluster.roles();
        let instances = cluster.instances();
        let name = |instance: usize| instances[instance].name.clone();
        let remaining = |until: Instant| u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(0);
        let failover = match roles.phase {
            Phase::Settled => None,
            Phase::Down { until } => Some(FailoverStatus {
                phase: FailoverPhase::Down,
                remaining_ms: remaining(until),
            }),
            Phase::StaleDns { until, .. } => Some(FailoverStatus {
                phase: FailoverPhase::StaleDns,
                remaining_ms: remaining(until),
            }),
        };
        let available = !matches!(roles.phase, Phase::Down { .. });
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Self {
            writer: name(roles.writer),
            reader: (instances.len() > 1).then(|| name(roles.reader())),
            failover,
            tokens_verified: counts.accepted() + counts.refused(),
            logins_accepted: counts.accepted(),
            sessions_open: instances.iter().map(|instance| instance.sessions_open()).sum(),
            peak_new_connections_per_sec: all_new_connections.peak(),
            instances: instances
                .iter()
                .enumerate()
                .map(|(index, instance)| InstanceStats {
                    name: instance.name.clone(),
                    role: if index == roles.writer {
                        Role::Writer
                    } else {
                        Role::Reader
                    },
                    available,
                    sessions_open: instance.sessions_open(),
                })
                .collect(),
            endpoints: endpoints
                .iter()
                .map(|endpoint| {
                    let counters = &endpoint.counters;
                    let target = roles.target(endpoint.route);
                    EndpointStats {
                        endpoint: endpoint.info.clone(),
                        relays_to: target.map(|(instance, _)| name(instance)),
                        read_only: target.is_some_and(|(_, read_only)| read_only),
                        connections: load(&counters.connections),
                        sessions_opened: load(&counters.sessions_opened),
                        refused: Refusals {
                            starting_up: load(&counters.starting_up),
                            throttled: load(&counters.throttled),
                            unauthorized: load(&counters.unauthorized),
                            too_many_connections: load(&counters.too_many_connections),
                        },
                        peak_new_connections_per_sec: counters.new_connections.peak(),
                    }
                })
                .collect(),
        }
    }
}
