//! The database URL: which server, which engine, and any password taken out of it so the rest can be logged.

use rds_iam::TlsMode;
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
