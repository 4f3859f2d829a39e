//! A local stand-in for Amazon RDS IAM database authentication, for tests and for trying IAM auth without AWS.
//!
//! It listens like a PostgreSQL or a MySQL/MariaDB server (whichever the upstream is), insists on TLS, asks for a
//! cleartext password (`mysql_clear_password` for MySQL), verifies that password as an RDS IAM token exactly as RDS
//! does (SigV4, service `rds-db`, user, endpoint, region, expiry), checks that the user is an IAM user (granted the
//! role `rds_iam` on the upstream, which the emulator creates at start), and only then opens a session as the same
//! user on the real upstream server and relays bytes both ways.
//!
//! | feature | adds |
//! |---|---|
//! | `testing` | `testing::TestEmulator`: an emulator on a free local port for the length of a test |

pub mod credentials;
mod iam_role;
mod mysql;
pub mod policy;
mod postgres;
mod server;
pub mod sigv4;
mod state;
mod sts;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod tls;

pub use iam_role::IamRoleError;
pub use server::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Emulator, Options, StartError};
pub use state::AuthCounts;
pub use sts::{IssuedCredentials, IssuedLog, StsPassThrough};
pub use tls::TlsError;
