//! A local stand-in for Amazon RDS IAM database authentication, for tests and for trying IAM auth without AWS.
//!
//! It listens like a PostgreSQL server, insists on TLS, asks for a cleartext password, verifies that password as an
//! RDS IAM token exactly as RDS does (SigV4, service `rds-db`, user, endpoint, region, expiry), and only then opens a
//! session as the same user on a real upstream PostgreSQL and relays bytes both ways.

pub mod credentials;
mod protocol;
mod server;
pub mod sigv4;
mod tls;

pub use server::{AuthCounts, Emulator, Options, StartError};
pub use tls::TlsError;
