//! A local stand-in for Amazon RDS IAM database authentication, for tests and for trying IAM auth without AWS.
//!
//! It listens like a PostgreSQL or a MySQL/MariaDB server (whichever the upstream is), insists on TLS, asks for a
//! cleartext password (`mysql_clear_password` for MySQL), verifies that password as an RDS IAM token exactly as RDS
//! does (SigV4, service `rds-db`, user, endpoint, region, expiry), checks that the user is an IAM user (granted the
//! role `rds_iam` on the upstream, which the emulator creates at start), and only then opens a session as the same
//! user on the real upstream server and relays bytes both ways.
//!
//! It serves one endpoint, as an RDS instance or an RDS Proxy does, or an Aurora cluster's: two instances in front
//! of the one upstream, the writer's sessions read-write and the reader's read-only, a cluster endpoint and a reader
//! endpoint that follow the roles, and failovers on demand ([`Control`], or the HTTP control API). With
//! `max_auth_per_sec` it refuses log-ins beyond that rate with RDS's throttling message, and it counts connections
//! per endpoint, refusals by why, and the peak rate of new connections ([`Stats`]).
//!
//! With `dsql` it stands in for an Aurora DSQL cluster instead: it verifies DSQL tokens (service `dsql`,
//! `DbConnectAdmin` for `admin`, `DbConnect` for other roles, signed for the host without a port), and with
//! `occ_conflict_rate` it answers that share of commits and autocommit writes with DSQL's OC000 conflict, without
//! carrying them out ([`ConflictInjector`] counts them).
//!
//! | feature | adds |
//! |---|---|
//! | `testing` | `testing::TestEmulator`: an emulator on a free local port for the length of a test |

mod cluster;
mod control;
pub mod credentials;
mod http;
mod iam_role;
mod layout;
mod mysql;
pub mod policy;
mod postgres;
mod rate;
mod server;
pub mod sigv4;
mod state;
mod stats;
mod sts;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod tls;

pub use cluster::{FailoverError, FailoverStarted, MAX_FAILOVER_SPELL};
pub use control::Control;
pub use iam_role::IamRoleError;
pub use layout::{ClusterLayout, EndpointSpec, InstanceSpec, Layout, LayoutError};
pub use server::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Emulator, Options, StartError};
pub use state::{AuthCounts, ConflictInjector};
pub use stats::{EndpointInfo, EndpointStats, FailoverPhase, FailoverStatus, InstanceStats, Refusals, Role, Stats};
pub use sts::{IssuedCredentials, IssuedLog, StsPassThrough};
pub use tls::TlsError;
