//! PostgreSQL and MariaDB: the user's servers, which the tests never start. When one is not running, the failure
//! says how to start the project's own (docker-compose.yml) and point the tests at it.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// The administrator's URL of the PostgreSQL server the tests make their databases on: `TEST_DATABASE_URL`, or
/// `postgres://postgres@127.0.0.1:5432/postgres`.
///
/// # Panics
/// When nothing answers at its host and port, with the command that starts one.
#[must_use]
pub fn postgres() -> String {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    Database::Postgres.url(&CHECKED)
}

/// The administrator's URL of the MariaDB (or MySQL) server the tests make their databases on: `TEST_MYSQL_URL`, or
/// `mysql://root@127.0.0.1:3306`.
///
/// # Panics
/// When nothing answers at its host and port, with the command that starts one.
#[must_use]
pub fn mariadb() -> String {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    Database::MariaDb.url(&CHECKED)
}

#[derive(Debug, Clone, Copy)]
enum Database {
    Postgres,
    MariaDb,
}

impl Database {
    fn variable(self) -> &'static str {
        match self {
            Self::Postgres => "TEST_DATABASE_URL",
            Self::MariaDb => "TEST_MYSQL_URL",
        }
    }

    /// The URL, checked once per process: a test that cannot reach the server fails at once, saying what to do.
    fn url(self, checked: &OnceLock<Result<(), String>>) -> String {
        let url = std::env::var(self.variable()).unwrap_or_else(|_| {
            match self {
                Self::Postgres => "postgres://postgres@127.0.0.1:5432/postgres",
                Self::MariaDb => "mysql://root@127.0.0.1:3306",
            }
            .to_owned()
        });
        if let Err(advice) = checked.get_or_init(|| self.check(&url)) {
            panic!("{advice}");
        }
        url
    }

    /// Whether something listens at the URL's host and port (a URL with a socket path instead is left to the
    /// driver). The message names the host and port, never the URL, which may hold a password.
    fn check(self, url: &str) -> Result<(), String> {
        let variable = self.variable();
        let url = url::Url::parse(url).map_err(|error| format!("{variable} is not a URL: {error}"))?;
        let (name, default_port, service, password, user, path) = match self {
            Self::Postgres => (
                "PostgreSQL",
                5432,
                "postgres",
                "POSTGRES_PASSWORD",
                "postgres",
                "/postgres",
            ),
            Self::MariaDb => ("MariaDB", 3306, "mariadb", "MARIADB_ROOT_PASSWORD", "root", ""),
        };
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        let port = url.port().unwrap_or(default_port);
        let reached = (host, port).to_socket_addrs().and_then(|addresses| {
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address");
            for address in addresses {
                match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
                    Ok(_) => return Ok(()),
                    Err(error) => last = error,
                }
            }
            Err(last)
        });
        reached.map_err(|error| {
            format!(
                "{name} must be running for this test, and nothing answers at {host}:{port} ({variable}): {error}. \
                 Start yours, or the project's, with a password of its own: `export {password}=$(openssl rand -hex \
                 16)`, `docker compose up -d {service}`, then \
                 `export {variable}={scheme}://{user}:${password}@127.0.0.1:{default_port}{path}`",
                scheme = url.scheme(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::Database;

    /// A port nothing listens on: one the system just handed out and took back.
    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").port()
    }

    #[test]
    fn a_postgres_that_is_not_running_is_reported_with_the_command_that_starts_one_and_no_password() {
        let port = closed_port();

        let advice = Database::Postgres
            .check(&format!(
                "postgres://postgres:secret-password@127.0.0.1:{port}/postgres"
            ))
            .expect_err("nothing listens there");

        assert!(
            advice.contains(&format!("nothing answers at 127.0.0.1:{port} (TEST_DATABASE_URL)")),
            "{advice}"
        );
        assert!(
            advice.contains("`export POSTGRES_PASSWORD=$(openssl rand -hex 16)`, `docker compose up -d postgres`"),
            "{advice}"
        );
        assert!(
            advice
                .contains("`export TEST_DATABASE_URL=postgres://postgres:$POSTGRES_PASSWORD@127.0.0.1:5432/postgres`"),
            "{advice}"
        );
        assert!(!advice.contains("secret-password"), "{advice}");
    }

    #[test]
    fn a_mariadb_that_is_not_running_is_reported_with_the_command_that_starts_one() {
        let port = closed_port();

        let advice = Database::MariaDb
            .check(&format!("mysql://root@127.0.0.1:{port}"))
            .expect_err("nothing listens there");

        assert!(
            advice.contains("`export MARIADB_ROOT_PASSWORD=$(openssl rand -hex 16)`, `docker compose up -d mariadb`"),
            "{advice}"
        );
        assert!(
            advice.contains("`export TEST_MYSQL_URL=mysql://root:$MARIADB_ROOT_PASSWORD@127.0.0.1:3306`"),
            "{advice}"
        );
    }

    #[test]
    fn a_running_server_passes_the_check() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();

        let checked = Database::Postgres.check(&format!("postgres://postgres@127.0.0.1:{port}/postgres"));

        assert_eq!(checked, Ok(()));
    }
}
