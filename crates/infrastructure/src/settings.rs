//! Typed settings, loaded in layers: built-in defaults, then `config/default.toml`, then `config/$APP_ENV.toml`,
//! then `DATABASE_URL`, then `APP__SECTION__KEY` environment variables. Every key has a default, so the service runs
//! with no configuration at all (SQLite in the working directory).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::discovery::DatabaseResource;

/// Every setting of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
}

/// Where the HTTP server listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Worker threads; one per core when unset.
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT.
    pub shutdown_timeout_secs: u64,
}

/// How log lines look and how many there are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,sqlx=warn`; `RUST_LOG` takes precedence when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Pretty,
    /// One JSON object a line, for log shippers.
    Json,
}

/// The database and the pool of connections to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user@host:port/db`, `mysql://user@host:port/db` or `sqlite://file.db?mode=rwc`. A password written in the URL is moved out of
    /// it when the settings load, so the URL itself can be logged.
    pub url: DatabaseUrl,
    /// The password, when it is not in the URL.
    pub password: Option<SecretString>,
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a request waits for a free connection before it is answered with 503.
    pub acquire_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_lifetime_secs: u64,
    /// Apply pending migrations when the service starts.
    pub migrate_on_start: bool,
    /// How the service proves who it is: a static password, or short-lived IAM tokens.
    pub auth: AuthMode,
    pub iam: IamSettings,
    pub tls: TlsSettings,
}

/// Where the database password comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The password in the URL or in `database.password`, if any.
    Password,
    /// A fresh RDS IAM authentication token for every new connection; no stored password.
    Iam,
}

/// RDS IAM authentication. The database user is the URL's user; the credentials are the AWS SDK's default chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamSettings {
    /// The region tokens are signed for; parsed from an RDS host name, or the AWS region chain, when unset.
    pub region: Option<String>,
    /// The endpoint the token names, when it differs from the host connected to (SSH tunnels, port forwards).
    pub signing_host: Option<String>,
    pub signing_port: Option<u16>,
    /// How long a token is valid, at most 900 seconds.
    pub token_lifetime_secs: u64,
    /// When to renew a token, as a percentage of its lifetime.
    pub refresh_percent: u8,
    /// The longest pause between two attempts when renewing fails.
    pub retry_max_secs: u64,
    /// Lets IAM authentication run without TLS, for local experiments only.
    pub allow_without_tls: bool,
    /// A role to assume (cross-account access): tokens are then signed with its temporary credentials.
    pub assume_role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// The role session's name, as CloudTrail shows it.
    pub session_name: String,
    /// An Aurora cluster whose endpoint is looked up with `DescribeDBClusters`.
    pub cluster_id: Option<String>,
    /// An RDS instance whose endpoint is looked up with `DescribeDBInstances`.
    pub instance_id: Option<String>,
    /// With `cluster_id`: the cluster's reader endpoint rather than its writer endpoint.
    pub use_reader_endpoint: bool,
    /// `host:port` to connect to instead of the endpoint (an SSH or SSM port forward, a local proxy); tokens still
    /// name the endpoint.
    pub tunnel: Option<String>,
}

impl IamSettings {
    /// Where to connect instead of the endpoint, when through a tunnel.
    #[must_use]
    pub fn tunnel(&self) -> Option<(&str, u16)> {
        let (host, port) = self.tunnel.as_deref()?.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then_some(())?;
        Some((host, port.parse().ok()?))
    }

    /// The RDS resource whose endpoint is to be discovered, when one is named.
    #[must_use]
    pub fn resource(&self) -> Option<DatabaseResource> {
        match (&self.cluster_id, &self.instance_id) {
            (Some(id), _) => Some(DatabaseResource::Cluster {
                id: id.clone(),
                reader: self.use_reader_endpoint,
            }),
            (None, Some(id)) => Some(DatabaseResource::Instance { id: id.clone() }),
            (None, None) => None,
        }
    }

    /// The role to assume, when one is configured.
    #[must_use]
    pub fn assume_role(&self) -> Option<AssumeRole> {
        self.assume_role_arn.as_ref().map(|arn| AssumeRole {
            arn: arn.clone(),
            external_id: self.external_id.clone(),
            session_name: self.session_name.clone(),
        })
    }
}

/// A role whose temporary credentials sign the tokens, assumed with the process's own credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
}

/// TLS to the database server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// `verify-full` (the default with IAM), `verify-ca`, `require`, `prefer` or `disable`; the URL's `sslmode` when
    /// unset with password authentication.
    pub mode: Option<TlsMode>,
    /// The CA certificates to trust, such as the RDS `global-bundle.pem`; the built-in web PKI roots when unset.
    pub root_cert: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

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

/// A setting that is missing, malformed or contradicts another.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0} (settings come from config/default.toml, config/$APP_ENV.toml and APP__SECTION__KEY variables)")]
    Load(#[from] config::ConfigError),
    #[error("{key} (environment variable {env}): {problem}")]
    Invalid {
        key: &'static str,
        env: String,
        problem: String,
    },
}

impl SettingsError {
    fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            env: environment_variable_for(key),
            problem: problem.into(),
        }
    }
}

/// The environment variable that sets a key: `database.max_connections` is `APP__DATABASE__MAX_CONNECTIONS`.
#[must_use]
pub fn environment_variable_for(key: &str) -> String {
    format!("APP__{}", key.replace('.', "__").to_uppercase())
}

const DEFAULTS: &str = r#"
[server]
host = "127.0.0.1"
port = 8080
shutdown_timeout_secs = 30

[database]
url = "sqlite://tasks.db?mode=rwc"
max_connections = 16
min_connections = 0
acquire_timeout_secs = 5
idle_timeout_secs = 600
max_lifetime_secs = 1800
migrate_on_start = true
auth = "password"

[database.iam]
token_lifetime_secs = 900
refresh_percent = 80
retry_max_secs = 30
allow_without_tls = false
session_name = "tasks-api"
use_reader_endpoint = false

[database.tls]

[log]
format = "pretty"
# PostgreSQL's NOTICEs (such as "relation already exists, skipping") are not news.
level = "info,sqlx::postgres::notice=warn"
"#;

impl Settings {
    /// Loads the settings from `./config` and the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_from(Path::new("config"), std::env::vars())
    }

    /// Loads the settings from a configuration directory and an explicit set of environment variables.
    pub fn load_from(
        config_dir: &Path,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let environment: HashMap<String, String> = environment.into_iter().collect();
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from(config_dir.join("default")).required(false));
        if let Some(app_env) = environment.get("APP_ENV") {
            builder = builder.add_source(File::from(config_dir.join(app_env)).required(false));
        }
        let mut app_variables: HashMap<String, String> = environment
            .iter()
            .filter(|(name, _)| name.starts_with("APP__"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        // DATABASE_URL is what sqlx, sea-orm-cli and most hosting platforms set; APP__DATABASE__URL still wins.
        if let Some(url) = environment.get("DATABASE_URL") {
            app_variables
                .entry("APP__DATABASE__URL".to_owned())
                .or_insert_with(|| url.clone());
        }
        let settings: Self = builder
            .add_source(
                Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(app_variables)),
            )
            .build()?
            .try_deserialize()?;
        settings.database.validate()?;
        Ok(settings)
    }
}

impl DatabaseSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.auth == AuthMode::Iam {
            self.validate_iam()?;
        }
        if self.password.is_some() && self.url.password.is_some() {
            return Err(SettingsError::invalid(
                "database.password",
                "a password is also written in database.url; keep only one of them",
            ));
        }
        if self.max_connections == 0 {
            return Err(SettingsError::invalid("database.max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(SettingsError::invalid(
                "database.min_connections",
                format!("must not exceed database.max_connections ({})", self.max_connections),
            ));
        }
        Ok(())
    }

    fn validate_iam(&self) -> Result<(), SettingsError> {
        if self.backend() == DatabaseBackend::Sqlite {
            return Err(SettingsError::invalid(
                "database.auth",
                "IAM authentication needs a postgres:// or mysql:// database.url (RDS, Aurora PostgreSQL or MySQL, \
                 RDS MariaDB)",
            ));
        }
        if self.url.as_url().username().is_empty() {
            return Err(SettingsError::invalid(
                "database.url",
                "IAM authentication needs the database user in the URL: postgres://db_iam_user@host:5432/db or \
                 mysql://db_iam_user@host:3306/db",
            ));
        }
        if self.password().is_some() {
            return Err(SettingsError::invalid(
                "database.password",
                "must not be set with database.auth = iam: the token is the password (remove it from the URL too)",
            ));
        }
        if !(1..=900).contains(&self.iam.token_lifetime_secs) {
            return Err(SettingsError::invalid(
                "database.iam.token_lifetime_secs",
                "must be between 1 and 900 (RDS tokens live at most 15 minutes)",
            ));
        }
        if !(10..=95).contains(&self.iam.refresh_percent) {
            return Err(SettingsError::invalid(
                "database.iam.refresh_percent",
                "must be between 10 and 95",
            ));
        }
        if let Some(arn) = &self.iam.assume_role_arn
            && !(arn.starts_with("arn:") && arn.contains(":iam::") && arn.contains(":role/"))
        {
            return Err(SettingsError::invalid(
                "database.iam.assume_role_arn",
                "must be a role ARN: arn:aws:iam::123456789012:role/name",
            ));
        }
        if self.iam.cluster_id.is_some() && self.iam.instance_id.is_some() {
            return Err(SettingsError::invalid(
                "database.iam.instance_id",
                "name either database.iam.cluster_id or database.iam.instance_id, not both",
            ));
        }
        if self.iam.tunnel.is_some() && self.iam.tunnel().is_none() {
            return Err(SettingsError::invalid(
                "database.iam.tunnel",
                "must be host:port, such as 127.0.0.1:15432 for a local port forward",
            ));
        }
        if self.iam.use_reader_endpoint && self.iam.cluster_id.is_none() {
            return Err(SettingsError::invalid(
                "database.iam.use_reader_endpoint",
                "only means something with database.iam.cluster_id (instances have one endpoint)",
            ));
        }
        if self.iam.external_id.is_some() && self.iam.assume_role_arn.is_none() {
            return Err(SettingsError::invalid(
                "database.iam.external_id",
                "only means something with database.iam.assume_role_arn; set both or neither",
            ));
        }
        // STS's own rule for RoleSessionName.
        let session_name_ok = (2..=64).contains(&self.iam.session_name.len())
            && self
                .iam
                .session_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(c));
        if !session_name_ok {
            return Err(SettingsError::invalid(
                "database.iam.session_name",
                "must be 2 to 64 characters of letters, digits and =,.@-_",
            ));
        }
        if self.tls_mode() == TlsMode::Disable && !self.iam.allow_without_tls {
            return Err(SettingsError::invalid(
                "database.tls.mode",
                "IAM tokens must not travel without TLS; use verify-full, or set database.iam.allow_without_tls = true \
                 for a local experiment",
            ));
        }
        Ok(())
    }

    /// The TLS mode in force: `database.tls.mode`, else the URL's `sslmode`, else `verify-full` with IAM and
    /// `prefer` with a password.
    #[must_use]
    pub fn tls_mode(&self) -> TlsMode {
        if let Some(mode) = self.tls.mode {
            return mode;
        }
        // PostgreSQL spells it sslmode=verify-full, MySQL ssl-mode=VERIFY_IDENTITY.
        let from_url = self.url.as_url().query_pairs().find_map(|(name, value)| {
            (name == "sslmode" || name == "ssl-mode").then(|| {
                match value.to_ascii_lowercase().replace('_', "-").as_str() {
                    "disable" | "disabled" => TlsMode::Disable,
                    "require" | "required" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" | "verify-identity" => TlsMode::VerifyFull,
                    _ => TlsMode::Prefer,
                }
            })
        });
        match (from_url, self.auth) {
            (Some(mode), _) => mode,
            (None, AuthMode::Iam) => TlsMode::VerifyFull,
            (None, AuthMode::Password) => TlsMode::Prefer,
        }
    }

    #[must_use]
    pub fn backend(&self) -> DatabaseBackend {
        self.url.backend
    }

    /// The password to present, from either the URL or `database.password`.
    #[must_use]
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref().or(self.url.password.as_ref())
    }

    #[must_use]
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs)
    }

    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    #[must_use]
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_secs)
    }
}

impl DatabaseUrl {
    /// Parses a database URL, refusing schemes the service cannot talk to.
    pub fn parse(input: &str) -> Result<Self, SettingsError> {
        let mut url = Url::parse(input).map_err(|error| {
            SettingsError::invalid(
                "database.url",
                format!(
                    "not a URL ({error}); expected postgres://user@host:5432/db, mysql://user@host:3306/db or \
                     sqlite://tasks.db?mode=rwc"
                ),
            )
        })?;
        let backend = match url.scheme() {
            "postgres" | "postgresql" => DatabaseBackend::Postgres,
            "mysql" | "mariadb" => DatabaseBackend::MySql,
            "sqlite" => DatabaseBackend::Sqlite,
            other => {
                return Err(SettingsError::invalid(
                    "database.url",
                    format!("unsupported scheme `{other}`; use postgres://, mysql:// or sqlite://"),
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
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.url.fmt(f)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn load(variables: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let environment = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()));
        Settings::load_from(Path::new("/nonexistent"), environment)
    }

    #[test]
    fn no_configuration_means_sqlite_on_localhost_8080_with_migrations() {
        let settings = load(&[]).expect("defaults load");
        assert_eq!(settings.server.host, "127.0.0.1");
        assert_eq!(settings.server.port, 8080);
        assert_eq!(settings.database.backend(), DatabaseBackend::Sqlite);
        assert!(settings.database.migrate_on_start);
        assert_eq!(settings.log.format, LogFormat::Pretty);
    }

    #[test]
    fn environment_variables_override_defaults_with_typed_values() {
        let settings = load(&[
            ("APP__SERVER__PORT", "9000"),
            ("APP__DATABASE__MAX_CONNECTIONS", "3"),
            ("APP__DATABASE__MIGRATE_ON_START", "false"),
            ("APP__LOG__FORMAT", "json"),
        ])
        .expect("settings load");
        assert_eq!(settings.server.port, 9000);
        assert_eq!(settings.database.max_connections, 3);
        assert!(!settings.database.migrate_on_start);
        assert_eq!(settings.log.format, LogFormat::Json);
    }

    #[test]
    fn app_database_url_wins_over_database_url() {
        let settings = load(&[
            ("DATABASE_URL", "postgres://a@db-one/x"),
            ("APP__DATABASE__URL", "postgres://b@db-two/y"),
        ])
        .expect("settings load");
        assert_eq!(settings.database.url.as_url().host_str(), Some("db-two"));
        let settings = load(&[("DATABASE_URL", "postgres://a@db-one/x")]).expect("settings load");
        assert_eq!(settings.database.url.as_url().host_str(), Some("db-one"));
    }

    #[test]
    fn a_password_in_the_url_is_moved_out_and_never_printed() {
        let settings = load(&[("DATABASE_URL", "postgres://app:s3cr%40t@db/tasks")]).expect("settings load");
        let printed = format!("{settings:?} {}", settings.database.url);
        assert!(!printed.contains("s3cr"), "{printed}");
        let password = settings.database.password().expect("password kept");
        assert_eq!(password.expose_secret(), "s3cr@t");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = load(&[("APP__DATABASE__MAX_CONECTIONS", "3")]).expect_err("typo refused");
        assert!(error.to_string().contains("max_conections"), "{error}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = load(&[("APP__SERVER__PORT", "eighty")]).expect_err("not a port");
        assert!(error.to_string().contains("server.port"), "{error}");
        let error = load(&[("APP__DATABASE__URL", "mongodb://x")]).expect_err("unsupported");
        let message = error.to_string();
        assert!(
            message.contains("APP__DATABASE__URL") && message.contains("mongodb"),
            "{message}"
        );
        let error = load(&[("APP__DATABASE__MAX_CONNECTIONS", "0")]).expect_err("empty pool");
        assert!(error.to_string().contains("APP__DATABASE__MAX_CONNECTIONS"), "{error}");
    }

    #[test]
    fn the_documented_example_file_loads() {
        let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let environment = [("APP_ENV".to_owned(), "example".to_owned())];
        Settings::load_from(&config_dir, environment).expect("config/example.toml loads");
    }

    #[test]
    fn layers_apply_in_order_defaults_then_default_file_then_environment_file_then_variables() {
        let config_dir = std::env::temp_dir().join(format!("tasks-settings-{}", std::process::id()));
        std::fs::create_dir_all(&config_dir).expect("temp dir");
        std::fs::write(config_dir.join("default.toml"), "[server]\nport = 7000\nworkers = 1\n").expect("write");
        std::fs::write(config_dir.join("staging.toml"), "[server]\nworkers = 3\n").expect("write");
        let environment = [("APP_ENV", "staging"), ("APP__DATABASE__MAX_CONNECTIONS", "4")]
            .map(|(name, value)| (name.to_owned(), value.to_owned()));

        let settings = Settings::load_from(&config_dir, environment);
        std::fs::remove_dir_all(&config_dir).expect("clean up");

        let settings = settings.expect("settings load");
        assert_eq!(settings.server.port, 7000);
        assert_eq!(settings.server.workers, Some(3));
        assert_eq!(settings.database.max_connections, 4);
        assert_eq!(settings.server.host, "127.0.0.1");
    }

    #[test]
    fn iam_defaults_to_verify_full_and_refuses_plaintext_unless_allowed() {
        let iam = [
            ("APP__DATABASE__AUTH", "iam"),
            ("APP__DATABASE__URL", "postgres://db_iam_user@db:5432/tasks"),
        ];
        let settings = load(&iam).expect("IAM settings load");
        assert_eq!(settings.database.tls_mode(), TlsMode::VerifyFull);
        assert_eq!(settings.database.iam.token_lifetime_secs, 900);
        let mysql = load(&[iam[0], ("APP__DATABASE__URL", "mysql://db_iam_user@db:3306/tasks")]).expect("MySQL IAM");
        assert_eq!(mysql.database.tls_mode(), TlsMode::VerifyFull);

        let plaintext = [iam[0], iam[1], ("APP__DATABASE__TLS__MODE", "disable")];
        let error = load(&plaintext).expect_err("plaintext IAM refused");
        assert!(error.to_string().contains("APP__DATABASE__TLS__MODE"), "{error}");
        let allowed = [
            plaintext[0],
            plaintext[1],
            plaintext[2],
            ("APP__DATABASE__IAM__ALLOW_WITHOUT_TLS", "true"),
        ];
        assert_eq!(
            load(&allowed).expect("explicitly allowed").database.tls_mode(),
            TlsMode::Disable
        );
    }

    #[test]
    fn iam_settings_that_cannot_work_are_refused_by_name() {
        let cases = [
            (vec![("APP__DATABASE__AUTH", "iam")], "APP__DATABASE__AUTH"),
            (
                vec![("APP__DATABASE__AUTH", "iam"), ("DATABASE_URL", "postgres://db/tasks")],
                "APP__DATABASE__URL",
            ),
            (
                vec![
                    ("APP__DATABASE__AUTH", "iam"),
                    ("DATABASE_URL", "postgres://u:p@db/tasks"),
                ],
                "APP__DATABASE__PASSWORD",
            ),
            (
                vec![
                    ("APP__DATABASE__AUTH", "iam"),
                    ("DATABASE_URL", "postgres://u@db/t"),
                    ("APP__DATABASE__IAM__TOKEN_LIFETIME_SECS", "901"),
                ],
                "APP__DATABASE__IAM__TOKEN_LIFETIME_SECS",
            ),
            (
                vec![
                    ("APP__DATABASE__AUTH", "iam"),
                    ("DATABASE_URL", "postgres://u@db/t"),
                    ("APP__DATABASE__IAM__ASSUME_ROLE_ARN", "tasks-role"),
                ],
                "APP__DATABASE__IAM__ASSUME_ROLE_ARN",
            ),
            (
                vec![
                    ("APP__DATABASE__AUTH", "iam"),
                    ("DATABASE_URL", "postgres://u@db/t"),
                    ("APP__DATABASE__IAM__EXTERNAL_ID", "x-123"),
                ],
                "APP__DATABASE__IAM__EXTERNAL_ID",
            ),
            (
                vec![
                    ("APP__DATABASE__AUTH", "iam"),
                    ("DATABASE_URL", "postgres://u@db/t"),
                    (
                        "APP__DATABASE__IAM__ASSUME_ROLE_ARN",
                        "arn:aws:iam::123456789012:role/tasks",
                    ),
                    ("APP__DATABASE__IAM__SESSION_NAME", "has spaces"),
                ],
                "APP__DATABASE__IAM__SESSION_NAME",
            ),
        ];
        for (variables, key) in cases {
            let error = load(&variables).expect_err("refused");
            assert!(error.to_string().contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn discovery_and_tunnel_settings_are_checked_by_name() {
        let iam = [
            ("APP__DATABASE__AUTH", "iam"),
            ("APP__DATABASE__URL", "mysql://db_iam_user@tasks/tasksmanager"),
        ];
        let cluster = load(&[
            iam[0],
            iam[1],
            ("APP__DATABASE__IAM__CLUSTER_ID", "tasks"),
            ("APP__DATABASE__IAM__TUNNEL", "127.0.0.1:15432"),
        ])
        .expect("loads");
        assert_eq!(
            cluster.database.iam.resource(),
            Some(DatabaseResource::Cluster {
                id: "tasks".to_owned(),
                reader: false
            })
        );
        assert_eq!(cluster.database.iam.tunnel(), Some(("127.0.0.1", 15432)));
        let refused = [
            ("APP__DATABASE__IAM__TUNNEL", "localhost", "APP__DATABASE__IAM__TUNNEL"),
            (
                "APP__DATABASE__IAM__TUNNEL",
                "localhost:99999",
                "APP__DATABASE__IAM__TUNNEL",
            ),
            (
                "APP__DATABASE__IAM__USE_READER_ENDPOINT",
                "true",
                "APP__DATABASE__IAM__USE_READER_ENDPOINT",
            ),
        ];
        for (variable, value, named) in refused {
            let error = load(&[iam[0], iam[1], (variable, value)]).expect_err(value);
            assert!(error.to_string().contains(named), "{error}");
        }
        let both = [
            iam[0],
            iam[1],
            ("APP__DATABASE__IAM__CLUSTER_ID", "tasks"),
            ("APP__DATABASE__IAM__INSTANCE_ID", "tasks-1"),
        ];
        let error = load(&both).expect_err("ambiguous");
        assert!(error.to_string().contains("APP__DATABASE__IAM__INSTANCE_ID"), "{error}");
    }

    #[test]
    fn each_url_scheme_selects_its_backend() {
        for (url, backend) in [
            ("postgres://u@db/t", DatabaseBackend::Postgres),
            ("postgresql://u@db/t", DatabaseBackend::Postgres),
            ("mysql://u@db/t", DatabaseBackend::MySql),
            ("mariadb://u@db/t", DatabaseBackend::MySql),
            ("sqlite://t.db", DatabaseBackend::Sqlite),
        ] {
            assert_eq!(
                load(&[("DATABASE_URL", url)]).expect(url).database.backend(),
                backend,
                "{url}"
            );
        }
        let mysql_tls = load(&[("DATABASE_URL", "mysql://u@db/t?ssl-mode=VERIFY_IDENTITY")]).expect("loads");
        assert_eq!(mysql_tls.database.tls_mode(), TlsMode::VerifyFull);
    }

    #[test]
    fn two_passwords_are_ambiguous() {
        let error = load(&[
            ("DATABASE_URL", "postgres://app:one@db/tasks"),
            ("APP__DATABASE__PASSWORD", "two"),
        ])
        .expect_err("ambiguous");
        assert!(error.to_string().contains("APP__DATABASE__PASSWORD"), "{error}");
    }
}
