//! The servers the test suites need, so that `cargo test --workspace` works on a machine with only PostgreSQL and
//! MariaDB running. A dev-dependency of the suites, never of the service.
//!
//! [`moto`] and [`localstack`] give the endpoint of an AWS API emulator: whatever answers at `AWS_ENDPOINT_URL`
//! (default `http://127.0.0.1:5000`) or `TEST_LOCALSTACK_URL` (default `http://127.0.0.1:4566`), used as is and never
//! stopped, or else one they start there, as testcontainers would, without Docker:
//!
//! - Installed on first use from PyPI, with the versions pinned in `python/*-requirements.txt`, into a virtualenv
//!   under the build's target directory (`target/test-servers/`); installed again only when those pins change.
//!   LocalStack needs Python 3.13 or newer: `python3`, `python3.14`, `python3.13` and pyenv's versions are tried,
//!   and the failure names the command that installs one.
//! - Started once for every test process of the run, under a lock in the system's temporary directory
//!   (`tasks-test-servers/<name>-<port>/`), whether cargo runs the test binaries one after another or nextest runs
//!   them side by side: the first process to find nothing answering starts it, the others wait for it.
//! - Stopped when the run ends, also when it is killed, by a keeper process (`python/keeper.py`) that owns the
//!   server and stops it once no test process and no cargo or nextest run that started one is alive; the kernel
//!   stops the server if the keeper itself is killed. The server's log is `server.log` in that directory.
//!
//! [`Emulator::exclusive`] keeps tests that reset moto from resetting it under each other, in one process or many.
//!
//! [`postgres`] and [`mariadb`] give the URLs of the databases the tests create their own databases on; those are
//! the user's servers, never started by the tests, and the failure when one is not running says how to start one.
//!
//! `cargo run -p test-servers -- moto` (or `localstack`) brings one up the same way for as long as it runs.

mod databases;
mod emulator;
mod keeper;
mod python;

pub use databases::{mariadb, postgres};
pub use emulator::{Emulator, Error, Exclusive, Outcome, localstack, moto};
