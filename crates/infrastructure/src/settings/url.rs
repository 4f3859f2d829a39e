//! The database URL: which server, which engine, and any password taken out of it so the rest can be logged.

use rds_iam::{DatabaseSecret, SecretId, TlsMode};
use secrecy::SecretString;
use url::Url;

use super::key_and_variable;

/// Which kind of database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseBackend {
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    Sqlite,
}

impl DatabaseBackend {
    /// The backend for an RDS engine name, as a database secret's `engine` gives it; `None` for engines the service
    /// does not talk to.
    #[must_use]
    pub fn of_rds_engine(engine: &str) -> Option<Self> {
        match engine {
            "postgres" | "aurora-postgresql" => Some(Self::Postgres),
            // `aurora` is Aurora MySQL 1's engine name, still found in older secrets.
            "mysql" | "mariadb" | "aurora-mysql" | "aurora" => Some(Self::MySql),
            _ => None,
        }
    }
}

/// The query parameters sqlx reads a secret from: PostgreSQL's `password` (taken as the password for MySQL too,
/// whose driver would silently ignore it), and libpq's `sslpassword`, which sqlx does not know and would log, value
/// and all, as an unrecognised parameter.
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A database URL with any password taken out of it (from its user info or its `?password=`) and kept as a secret.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    url: Url,
    backend: DatabaseBackend,
    password: Option<SecretString>,
}

impl DatabaseUrl {
    /// Parses a database URL, refusing schemes the service cannot talk to.
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut url = Url::parse(input).map_err(|error| {
            format!(
                "not a URL ({error}); expected postgres://user@host:5432/db, mysql://user@host:3306/db or \
                 sqlite://tasks.db?mode=rwc"
            )
        })?;
        let backend = match url.scheme() {
            "postgres" | "postgresql" => DatabaseBackend::Postgres,
            "mysql" | "mariadb" => DatabaseBackend::MySql,
            "sqlite" => DatabaseBackend::Sqlite,
            other => {
                return Err(format!(
                    "unsupported scheme `{other}`; use postgres://, mysql:// or sqlite://"
                ));
            }
        };
        let mut password = url
            .password()
            .map(|encoded| {
                percent_encoding::percent_decode_str(encoded)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .map(SecretString::from);
        if password.is_some() {
            // Only fails for URLs that cannot have credentials, and those cannot have had a password either.
            let _ = url.set_password(None);
        }
        let (secrets, kept): (Vec<_>, Vec<_>) = url
            .query_pairs()
            .into_owned()
            .partition(|(name, _)| SECRET_PARAMETERS.contains(&name.as_str()));
        for (name, value) in &secrets {
            match (name.as_str(), &password) {
                ("password", None) => password = Some(SecretString::from(value.as_str())),
                ("password", Some(_)) => {
                    return Err(
                        "the password is written twice in the URL (in its user info or as ?password=); \
                                keep only one"
                            .to_owned(),
                    );
                }
                // Never echo the value: it is a secret even when refused.
                _ => {
                    return Err(format!(
                        "`{name}` is not supported: the driver reads only unencrypted client keys, so decrypt the \
                         key file instead of giving its passphrase"
                    ));
                }
            }
        }
        if !secrets.is_empty() {
            url.set_query(None);
            if !kept.is_empty() {
                url.query_pairs_mut().extend_pairs(kept);
            }
        }
        Ok(Self { url, backend, password })
    }

    /// The URL without its password, fit to be logged.
    #[must_use]
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    #[must_use]
    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    /// The TLS mode the URL asks for with PostgreSQL's `sslmode` or MySQL's `ssl-mode`, in either spelling; an
    /// unknown value (libpq's `allow`) counts as `prefer`.
    #[must_use]
    pub fn tls_mode(&self) -> Option<TlsMode> {
        self.url.query_pairs().find_map(|(name, value)| {
            (name == "sslmode" || name == "ssl-mode").then(|| {
                match value.to_ascii_lowercase().replace('_', "-").as_str() {
                    "disable" | "disabled" => TlsMode::Disable,
                    "require" | "required" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" | "verify-identity" => TlsMode::VerifyFull,
                    _ => TlsMode::Prefer,
                }
            })
        })
    }

    /// The password that was written in the URL, in its user info or as `?password=`.
    #[must_use]
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }

    /// This URL completed from the database secret `secret_id`: the secret's host, port and database name wherever
    /// the URL has none (what the URL holds wins: an RDS Proxy endpoint, a tunnel), once the secret's engine, when it
    /// names one, is known to be the URL's. Otherwise the problem, naming the setting to change.
    pub fn completed_from(&self, secret: &DatabaseSecret, secret_id: &SecretId) -> Result<Self, String> {
        let scheme = self.url.scheme();
        if let Some(engine) = &secret.engine {
            let backend = DatabaseBackend::of_rds_engine(engine).ok_or_else(|| {
                format!(
                    "the secret `{secret_id}` is for engine `{engine}`, which the service does not talk to \
                     (postgres, aurora-postgresql, mysql, mariadb, aurora-mysql)"
                )
            })?;
            if backend != self.backend {
                return Err(format!(
                    "the secret `{secret_id}` is for engine `{engine}`, but {} is {scheme}://: make the URL's scheme \
                     the secret's engine's",
                    key_and_variable("database.url")
                ));
            }
        }
        let mut url = self.url.clone();
        if url.host_str().is_none_or(str::is_empty) {
            let host = secret.host.as_deref().ok_or_else(|| {
                format!(
                    "{} names no host, and neither does the secret `{secret_id}`: put the host in the URL \
                     ({scheme}://HOST:PORT/DATABASE)",
                    key_and_variable("database.url")
                )
            })?;
            url.set_host(Some(host))
                .map_err(|error| format!("the secret `{secret_id}` holds a host that is not one: {error}"))?;
        }
        if url.port().is_none()
            && let Some(port) = secret.port
        {
            // Only fails for URLs without a host, and the host was just made sure of.
            let _ = url.set_port(Some(port));
        }
        if matches!(url.path(), "" | "/")
            && let Some(dbname) = &secret.dbname
        {
            url.set_path(dbname);
        }
        Ok(Self {
            url,
            backend: self.backend,
            password: None,
        })
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.url.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(engine: Option<&str>, host: Option<&str>) -> DatabaseSecret {
        DatabaseSecret {
            username: "app".to_owned(),
            password: SecretString::from("never-in-a-url"),
            host: host.map(str::to_owned),
            port: Some(6543),
            dbname: Some("tasks".to_owned()),
            engine: engine.map(str::to_owned),
        }
    }

    fn complete(url: &str, secret: &DatabaseSecret) -> Result<String, String> {
        let id: SecretId = "tasks/app-db".parse().expect("a secret id");
        let url = DatabaseUrl::parse(url).expect("a URL");
        url.completed_from(secret, &id).map(|url| url.to_string())
    }

    #[test]
    fn the_secret_fills_in_what_the_url_leaves_out_and_the_url_wins_over_it() {
        let rds = secret(
            Some("aurora-postgresql"),
            Some("tasks.cluster-abc.eu-west-1.rds.amazonaws.com"),
        );
        assert_eq!(
            complete("postgres://", &rds).as_deref(),
            Ok("postgres://tasks.cluster-abc.eu-west-1.rds.amazonaws.com:6543/tasks")
        );
        // An RDS Proxy endpoint and database in the URL: the secret gives only what is missing, the port here.
        assert_eq!(
            complete("postgres://proxy.example/other?sslmode=verify-full", &rds).as_deref(),
            Ok("postgres://proxy.example:6543/other?sslmode=verify-full")
        );
        let master = DatabaseSecret {
            engine: None,
            host: None,
            port: None,
            dbname: None,
            ..secret(None, None)
        };
        assert_eq!(
            complete("mysql://db.example:3306/tasks", &master).as_deref(),
            Ok("mysql://db.example:3306/tasks")
        );
    }

    #[test]
    fn a_secret_that_does_not_fit_the_url_is_refused_naming_what_to_change() {
        let cases = [
            (
                "mysql://",
                secret(Some("postgres"), Some("db")),
                "is for engine `postgres`",
            ),
            ("postgres://", secret(Some("oracle-ee"), Some("db")), "does not talk to"),
            ("postgres://", secret(Some("postgres"), None), "names no host"),
        ];
        for (url, secret, expected) in cases {
            let problem = complete(url, &secret).expect_err(url);
            assert!(problem.contains(expected), "{problem}");
            assert!(problem.contains("tasks/app-db"), "{problem}");
            assert!(!problem.contains("never-in-a-url"), "{problem}");
        }
        assert_eq!(DatabaseBackend::of_rds_engine("mariadb"), Some(DatabaseBackend::MySql));
    }
}
