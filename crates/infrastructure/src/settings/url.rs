//! The database URL: which server, which engine, and any password taken out of it so the rest can be logged.

use secrecy::SecretString;
use url::Url;

/// Which kind of database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseBackend {
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    Sqlite,
}

/// A database URL with any password taken out of it and kept as a secret.
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
        let password = url
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
        Ok(Self { url, backend, password })
    }

    /// The URL without its password.
    #[must_use]
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    #[must_use]
    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    /// The password that was written in the URL.
    #[must_use]
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
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
