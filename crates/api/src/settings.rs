//! Typed settings, loaded in layers: built-in defaults, then `config/default.toml`, then `config/$APP_ENV.toml`,
//! then `DATABASE_URL`, then `APP__SECTION__KEY` environment variables. Every key has a default, so the service runs
//! with no configuration at all (SQLite in the working directory).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use config::{Config, ConfigError, Environment, File, FileFormat};
use infrastructure::DatabaseSettings;
use infrastructure::settings::{key_and_variable, seconds};
use serde::Deserialize;

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
    #[serde(rename = "shutdown_timeout_secs", deserialize_with = "seconds")]
    pub shutdown_timeout: Duration,
    /// Take the client's address from `Forwarded`/`X-Forwarded-For`, which only a proxy in front of the service may
    /// be trusted to set; otherwise any client could write an address of its choice into the logs.
    pub trust_forwarded_for: bool,
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

/// Settings that could not be loaded: a file that does not parse, an unknown key, a value of the wrong type, or a
/// combination that cannot work. The text names the key and the variable that sets it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} (settings come from config/default.toml, config/$APP_ENV.toml and APP__SECTION__KEY variables)",
    describe(.0)
)]
pub struct SettingsError(#[source] ConfigError);

/// The error with the environment variable of the key it is about, unless its text names one already.
fn describe(error: &ConfigError) -> String {
    let key = match error {
        ConfigError::At { key, .. } | ConfigError::Type { key, .. } => key.as_deref(),
        _ => None,
    };
    let text = error.to_string();
    match key {
        Some(key) if !text.contains("APP__") => format!("{}: {text}", key_and_variable(key)),
        _ => text,
    }
}

const DEFAULTS: &str = r#"
[server]
host = "127.0.0.1"
port = 8080
shutdown_timeout_secs = 30
trust_forwarded_for = false

[database]
url = "sqlite://tasks.db?mode=rwc"
max_connections = 16
min_connections = 0
acquire_timeout_secs = 5
idle_timeout_secs = 600
max_lifetime_secs = 1800
max_new_connections_per_sec = 20
migrate_on_start = true
auth = "password"

[database.iam]
session_name = "tasks-api"

[database.dsql]

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
        builder
            .add_source(
                Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(app_variables)),
            )
            .build()
            .and_then(Config::try_deserialize)
            .map_err(SettingsError)
    }
}

#[cfg(test)]
mod tests {
    use infrastructure::{Auth, DatabaseBackend};
    use rds_iam::{DatabaseResource, HostPort, TlsMode};
    use secrecy::ExposeSecret;

    use super::*;

    fn load(variables: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let environment = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()));
        Settings::load_from(Path::new("/nonexistent"), environment)
    }

    fn iam(settings: &Settings) -> &rds_iam::IamSettings {
        match &settings.database.auth {
            Auth::Iam(iam) => iam,
            other => panic!("IAM settings expected: {other:?}"),
        }
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
            ("APP__DATABASE__ACQUIRE_TIMEOUT_SECS", "7"),
            ("APP__DATABASE__MIGRATE_ON_START", "false"),
            ("APP__LOG__FORMAT", "json"),
        ])
        .expect("settings load");
        assert_eq!(settings.server.port, 9000);
        assert_eq!(settings.database.pool.max_connections, 3);
        assert_eq!(settings.database.pool.acquire_timeout, Duration::from_secs(7));
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
        let Auth::Password(Some(password)) = &settings.database.auth else {
            panic!("password kept: {:?}", settings.database.auth);
        };
        assert_eq!(password.expose_secret(), "s3cr@t");
    }

    #[test]
    fn a_password_in_the_query_string_is_moved_out_too_and_the_rest_of_the_query_kept() {
        let settings = load(&[(
            "DATABASE_URL",
            "postgres://app@db/tasks?sslmode=require&password=s3cr%40t&application_name=x",
        )])
        .expect("settings load");
        let printed = format!("{settings:?} {}", settings.database.url);
        assert!(!printed.contains("s3cr"), "{printed}");
        assert_eq!(
            settings.database.url.as_url().query(),
            Some("sslmode=require&application_name=x")
        );
        let Auth::Password(Some(password)) = &settings.database.auth else {
            panic!("password kept: {:?}", settings.database.auth);
        };
        assert_eq!(password.expose_secret(), "s3cr@t");
    }

    #[test]
    fn an_ssl_passphrase_in_the_url_is_refused_without_being_repeated() {
        let error = load(&[(
            "DATABASE_URL",
            "postgres://app@db/tasks?sslkey=k.pem&sslpassword=pass-phrase",
        )])
        .expect_err("sqlx cannot use it");
        let error = error.to_string();
        assert!(
            error.contains("sslpassword") && error.contains("APP__DATABASE__URL"),
            "{error}"
        );
        assert!(!error.contains("pass-phrase"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = load(&[("APP__DATABASE__MAX_CONECTIONS", "3")]).expect_err("typo refused");
        assert!(error.to_string().contains("max_conections"), "{error}");
        let error = load(&[("APP__DATABASE__IAM__REGON", "eu-west-1")]).expect_err("typo refused");
        assert!(error.to_string().contains("regon"), "{error}");
    }

    #[test]
    fn bad_values_name_their_key_and_variable() {
        let cases = [
            ("APP__SERVER__PORT", "eighty"),
            ("APP__DATABASE__URL", "mongodb://x"),
            ("APP__DATABASE__MAX_CONNECTIONS", "0"),
            ("APP__DATABASE__IAM__TOKEN_LIFETIME_SECS", "901"),
            ("APP__DATABASE__IAM__REFRESH_PERCENT", "99"),
            ("APP__DATABASE__IAM__ASSUME_ROLE_ARN", "tasks-role"),
            ("APP__DATABASE__IAM__SESSION_NAME", "has spaces"),
            ("APP__DATABASE__IAM__TUNNEL", "localhost"),
            ("APP__DATABASE__IAM__TUNNEL", "localhost:99999"),
            ("APP__DATABASE__TLS__MODE", "sometimes"),
        ];
        for (variable, value) in cases {
            let error = load(&[(variable, value)]).expect_err(value);
            assert!(error.to_string().contains(variable), "{variable}={value}: {error}");
        }
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
        assert_eq!(settings.database.pool.max_connections, 4);
        assert_eq!(settings.server.host, "127.0.0.1");
    }

    #[test]
    fn iam_defaults_to_verify_full_and_its_settings_take_their_types() {
        let settings = load(&[
            ("APP__DATABASE__AUTH", "iam"),
            ("APP__DATABASE__URL", "postgres://db_iam_user@db:5432/tasks"),
        ])
        .expect("IAM settings load");
        assert_eq!(settings.database.tls.mode, TlsMode::VerifyFull);
        assert_eq!(iam(&settings).token_lifetime, rds_iam::TokenLifetime::MAX);
        assert_eq!(iam(&settings).assume_role, None, "no role unless one is named");
        assert!(!iam(&settings).allow_weaker_tls && !iam(&settings).allow_without_tls);
        let mysql = load(&[
            ("APP__DATABASE__AUTH", "iam"),
            (
                "APP__DATABASE__URL",
                "mysql://db_iam_user@db:3306/tasks?ssl-mode=VERIFY_IDENTITY",
            ),
        ])
        .expect("MySQL IAM");
        assert_eq!(mysql.database.tls.mode, TlsMode::VerifyFull);
        let weaker = load(&[
            ("APP__DATABASE__AUTH", "iam"),
            (
                "APP__DATABASE__URL",
                "postgres://db_iam_user@db:5432/tasks?sslmode=require",
            ),
            ("APP__DATABASE__IAM__ALLOW_WEAKER_TLS", "true"),
        ])
        .expect("weaker TLS, allowed by name");
        assert_eq!(weaker.database.tls.mode, TlsMode::Require);
        assert!(iam(&weaker).allow_weaker_tls);
        let password = load(&[("DATABASE_URL", "postgres://u@db/t")]).expect("password mode");
        assert_eq!(password.database.tls.mode, TlsMode::Prefer);
    }

    #[test]
    fn a_reader_pool_is_the_writers_settings_at_the_readers_endpoint() {
        let settings = load(&[
            ("APP__DATABASE__AUTH", "iam"),
            (
                "DATABASE_URL",
                "postgres://u@tasks.cluster-abc.eu-west-1.rds.amazonaws.com/t",
            ),
            (
                "APP__DATABASE__READER__URL",
                "postgres://u@tasks.cluster-ro-abc.eu-west-1.rds.amazonaws.com/t",
            ),
            ("APP__DATABASE__ACQUIRE_TIMEOUT_SECS", "30"),
        ])
        .expect("settings load");
        let reader = settings.database.reader_settings().expect("a reader pool");
        assert_eq!(
            reader.url.as_url().host_str(),
            Some("tasks.cluster-ro-abc.eu-west-1.rds.amazonaws.com")
        );
        assert!(matches!(reader.auth, Auth::Iam(_)) && !reader.migrate_on_start && reader.reader.is_none());
        // A reader that does not answer sends reads to the writer after a short wait, not the writer's long one.
        assert_eq!(reader.pool.acquire_timeout, Duration::from_secs(1));
        assert_eq!(reader.tls, settings.database.tls);

        let discovered = load(&[
            ("APP__DATABASE__AUTH", "iam"),
            ("DATABASE_URL", "postgres://u@placeholder/t"),
            ("APP__DATABASE__IAM__CLUSTER_ID", "tasks"),
            ("APP__DATABASE__READER__OF_CLUSTER", "true"),
        ])
        .expect("settings load");
        let reader = discovered.database.reader_settings().expect("a reader pool");
        assert_eq!(
            iam(&discovered).resource,
            Some(DatabaseResource::Cluster {
                id: "tasks".into(),
                reader: false
            })
        );
        let Auth::Iam(reader_iam) = &reader.auth else {
            panic!("IAM")
        };
        assert_eq!(
            reader_iam.resource,
            Some(DatabaseResource::Cluster {
                id: "tasks".into(),
                reader: true
            })
        );
        assert!(load(&[]).expect("defaults").database.reader_settings().is_none());
    }

    #[test]
    fn reader_settings_that_cannot_work_are_refused_by_name() {
        let cases = [
            vec![
                ("DATABASE_URL", "postgres://u@db/t"),
                ("APP__DATABASE__READER__URL", "mysql://u@replica/t"),
            ],
            vec![
                ("DATABASE_URL", "postgres://u@db/t"),
                ("APP__DATABASE__READER__URL", "postgres://u:p@replica/t"),
            ],
            vec![
                ("APP__DATABASE__AUTH", "iam"),
                ("DATABASE_URL", "postgres://u@db/t"),
                ("APP__DATABASE__READER__URL", "postgres://replica/t"),
            ],
            vec![
                ("DATABASE_URL", "postgres://u@db/t"),
                ("APP__DATABASE__READER__OF_CLUSTER", "true"),
            ],
            vec![
                ("APP__DATABASE__AUTH", "iam"),
                ("DATABASE_URL", "postgres://u@db/t"),
                ("APP__DATABASE__IAM__CLUSTER_ID", "tasks"),
                ("APP__DATABASE__READER__OF_CLUSTER", "true"),
                ("APP__DATABASE__READER__URL", "postgres://u@replica/t"),
            ],
        ];
        for variables in cases {
            let error = load(&variables).expect_err("refused").to_string();
            assert!(error.contains("APP__DATABASE__READER__"), "{variables:?}: {error}");
            assert!(!error.contains(":p@"), "{error}");
        }
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
                    ("DATABASE_URL", "mysql://u@db/tasks?password=p"),
                ],
                "APP__DATABASE__PASSWORD",
            ),
            (
                vec![
                    ("DATABASE_URL", "postgres://u@db/t"),
                    ("APP__DATABASE__IAM__EXTERNAL_ID", "x-123"),
                ],
                "external_id",
            ),
            (
                vec![
                    ("DATABASE_URL", "postgres://u@db/t"),
                    ("APP__DATABASE__IAM__CLUSTER_ID", "tasks"),
                    ("APP__DATABASE__IAM__INSTANCE_ID", "tasks-1"),
                ],
                "instance_id",
            ),
            (
                vec![
                    ("DATABASE_URL", "postgres://u@db/t"),
                    ("APP__DATABASE__IAM__USE_READER_ENDPOINT", "true"),
                ],
                "use_reader_endpoint",
            ),
        ];
        for (variables, named) in cases {
            let error = load(&variables).expect_err("refused").to_string();
            assert!(
                error.contains(named) && error.contains("APP__DATABASE"),
                "{named}: {error}"
            );
        }
    }

    #[test]
    fn discovery_and_tunnel_settings_become_one_endpoint_and_a_host_port() {
        let cluster = load(&[
            ("APP__DATABASE__AUTH", "iam"),
            ("APP__DATABASE__URL", "mysql://db_iam_user@tasks/tasksmanager"),
            ("APP__DATABASE__IAM__CLUSTER_ID", "tasks"),
            ("APP__DATABASE__IAM__USE_READER_ENDPOINT", "true"),
            ("APP__DATABASE__IAM__TUNNEL", "127.0.0.1:15432"),
        ])
        .expect("loads");
        assert_eq!(
            iam(&cluster).resource,
            Some(DatabaseResource::Cluster {
                id: "tasks".to_owned(),
                reader: true
            })
        );
        assert_eq!(
            iam(&cluster).tunnel,
            Some(HostPort {
                host: "127.0.0.1".to_owned(),
                port: 15432
            })
        );
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
    }

    #[test]
    fn two_passwords_are_ambiguous() {
        let error = load(&[
            ("DATABASE_URL", "postgres://app:one@db/tasks"),
            ("APP__DATABASE__PASSWORD", "two"),
        ])
        .expect_err("ambiguous");
        assert!(error.to_string().contains("APP__DATABASE__PASSWORD"), "{error}");
        for url in [
            "postgres://app@db/tasks?password=first-secret&password=second-secret",
            "postgres://app:first-secret@db/tasks?password=second-secret",
        ] {
            let error = load(&[("DATABASE_URL", url)]).expect_err(url).to_string();
            assert!(error.contains("written twice") && !error.contains("secret"), "{error}");
        }
    }

    const SECRET_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tasks/app-db-AbCdEf";

    #[test]
    fn secrets_manager_needs_only_the_engine_in_the_url_and_defaults_to_verify_full() {
        let settings = load(&[
            ("APP__DATABASE__AUTH", "secrets-manager"),
            ("APP__DATABASE__SECRET_ID", SECRET_ARN),
            ("APP__DATABASE__URL", "postgres://"),
        ])
        .expect("Secrets Manager settings load");
        let Auth::SecretsManager(secret) = &settings.database.auth else {
            panic!("Secrets Manager settings expected: {:?}", settings.database.auth);
        };
        assert_eq!(secret.secret_id.as_str(), SECRET_ARN);
        assert_eq!(secret.secret_id.region(), Some("eu-west-1"));
        assert_eq!(secret.refresh, Duration::from_secs(300));
        assert_eq!(settings.database.tls.mode, TlsMode::VerifyFull);
        assert_eq!(settings.database.backend(), DatabaseBackend::Postgres);

        let tuned = load(&[
            ("APP__DATABASE__AUTH", "secrets-manager"),
            ("APP__DATABASE__SECRET_ID", "tasks/app-db"),
            ("APP__DATABASE__SECRET_REFRESH_SECS", "60"),
            (
                "APP__DATABASE__URL",
                "mysql://proxy.example:3306/tasks?ssl-mode=REQUIRED",
            ),
        ])
        .expect("a name, a refresh interval and a URL that says where");
        let Auth::SecretsManager(secret) = &tuned.database.auth else {
            panic!("Secrets Manager settings expected");
        };
        assert_eq!(secret.refresh, Duration::from_secs(60));
        assert_eq!(tuned.database.tls.mode, TlsMode::Require, "the URL's choice");
    }

    #[test]
    fn secrets_manager_settings_that_cannot_work_are_refused_by_name() {
        let secrets_manager = [
            ("APP__DATABASE__AUTH", "secrets-manager"),
            ("DATABASE_URL", "postgres://"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut variables = secrets_manager.to_vec();
            variables.extend_from_slice(extra);
            variables
        };
        let cases = [
            (with(&[]), "APP__DATABASE__SECRET_ID"),
            (with(&[("APP__DATABASE__SECRET_ID", " ")]), "APP__DATABASE__SECRET_ID"),
            (
                with(&[("APP__DATABASE__SECRET_ID", "arn:aws:iam::123456789012:role/x")]),
                "APP__DATABASE__SECRET_ID",
            ),
            (
                with(&[
                    ("APP__DATABASE__SECRET_ID", "x"),
                    ("APP__DATABASE__SECRET_REFRESH_SECS", "0"),
                ]),
                "APP__DATABASE__SECRET_REFRESH_SECS",
            ),
            (
                with(&[
                    ("APP__DATABASE__SECRET_ID", "x"),
                    ("APP__DATABASE__PASSWORD", "static-one"),
                ]),
                "APP__DATABASE__PASSWORD",
            ),
            (
                with(&[
                    ("APP__DATABASE__SECRET_ID", "x"),
                    ("DATABASE_URL", "postgres://app@db/tasks"),
                ]),
                "APP__DATABASE__URL",
            ),
            (
                vec![
                    ("APP__DATABASE__AUTH", "secrets-manager"),
                    ("APP__DATABASE__SECRET_ID", "x"),
                ],
                "APP__DATABASE__URL",
            ),
            (
                vec![
                    ("DATABASE_URL", "postgres://db/tasks"),
                    ("APP__DATABASE__SECRET_ID", "x"),
                ],
                "APP__DATABASE__SECRET_ID",
            ),
            (
                vec![
                    ("APP__DATABASE__AUTH", "secretsmanager"),
                    ("APP__DATABASE__SECRET_ID", "x"),
                ],
                "APP__DATABASE__AUTH",
            ),
        ];
        for (variables, named) in cases {
            let error = load(&variables).expect_err(named).to_string();
            assert!(error.contains(named), "{variables:?}: {error}");
            assert!(!error.contains("static-one"), "{error}");
        }
    }

    fn dsql(settings: &Settings) -> &infrastructure::DsqlSettings {
        match &settings.database.auth {
            Auth::Dsql(dsql) => dsql,
            other => panic!("DSQL settings expected: {other:?}"),
        }
    }

    #[test]
    fn dsql_takes_the_endpoint_from_the_url_or_a_cluster_id_and_defaults_to_admin_and_verify_full() {
        let by_host = load(&[
            ("APP__DATABASE__AUTH", "dsql"),
            (
                "APP__DATABASE__URL",
                "postgres://app_role@kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws/postgres",
            ),
        ])
        .expect("an endpoint in the URL");
        assert_eq!(dsql(&by_host).cluster_id, None);
        assert_eq!(dsql(&by_host).role, "app_role");
        assert_eq!(by_host.database.tls.mode, TlsMode::VerifyFull);

        let by_id = load(&[
            ("APP__DATABASE__AUTH", "dsql"),
            ("APP__DATABASE__URL", "postgres:///postgres"),
            ("APP__DATABASE__DSQL__CLUSTER_ID", "kaabtu3ivgyiv7yeqqqzxcvfne"),
            ("APP__DATABASE__IAM__REGION", "eu-west-1"),
        ])
        .expect("a cluster id and a region");
        let settings = dsql(&by_id);
        let cluster_id = settings.cluster_id.as_ref().expect("the cluster id");
        assert_eq!(
            cluster_id.host(settings.iam.region.as_deref().expect("the region")),
            "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.eu-west-1.on.aws"
        );
        assert_eq!(settings.role, "admin");
    }

    #[test]
    fn dsql_settings_that_cannot_work_are_refused_by_name() {
        let host = "postgres://admin@kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws/postgres";
        let cases: [(&[(&str, &str)], &str); 9] = [
            (
                &[("APP__DATABASE__URL", "mysql://admin@db/tasks")],
                "APP__DATABASE__URL",
            ),
            (
                &[("APP__DATABASE__URL", "postgres://admin:pw-never-shown@db/postgres")],
                "APP__DATABASE__PASSWORD",
            ),
            (
                &[("APP__DATABASE__URL", "postgres:///postgres")],
                "APP__DATABASE__DSQL__CLUSTER_ID",
            ),
            (
                &[
                    ("APP__DATABASE__URL", host),
                    ("APP__DATABASE__DSQL__CLUSTER_ID", "kaabtu3ivgyiv7yeqqqzxcvfne"),
                ],
                "APP__DATABASE__DSQL__CLUSTER_ID",
            ),
            (
                &[
                    ("APP__DATABASE__URL", "postgres:///postgres"),
                    ("APP__DATABASE__DSQL__CLUSTER_ID", "Not-An-Id"),
                ],
                "APP__DATABASE__DSQL__CLUSTER_ID",
            ),
            (
                &[
                    ("APP__DATABASE__URL", host),
                    ("APP__DATABASE__MAX_LIFETIME_SECS", "3600"),
                ],
                "APP__DATABASE__MAX_LIFETIME_SECS",
            ),
            (
                &[
                    ("APP__DATABASE__URL", host),
                    (
                        "APP__DATABASE__IAM__ASSUME_ROLE_ARN",
                        "arn:aws:iam::123456789012:role/db",
                    ),
                ],
                "APP__DATABASE__IAM__ASSUME_ROLE_ARN",
            ),
            (
                &[
                    ("APP__DATABASE__URL", host),
                    ("APP__DATABASE__IAM__CLUSTER_ID", "tasks"),
                ],
                "APP__DATABASE__IAM__CLUSTER_ID",
            ),
            (&[("APP__DATABASE__URL", "sqlite://x.db")], "APP__DATABASE__URL"),
        ];
        for (extra, named) in cases {
            let mut variables = vec![("APP__DATABASE__AUTH", "dsql")];
            variables.extend_from_slice(extra);
            let error = load(&variables).expect_err(named).to_string();
            assert!(error.contains(named), "{variables:?}: {error}");
            assert!(!error.contains("pw-never-shown"), "{error}");
        }
        let elsewhere = load(&[("APP__DATABASE__DSQL__CLUSTER_ID", "kaabtu3ivgyiv7yeqqqzxcvfne")])
            .expect_err("a cluster id without auth = dsql");
        assert!(
            elsewhere.to_string().contains("APP__DATABASE__DSQL__CLUSTER_ID"),
            "{elsewhere}"
        );
        let at_the_limit = load(&[
            ("APP__DATABASE__AUTH", "dsql"),
            ("APP__DATABASE__URL", host),
            ("APP__DATABASE__MAX_LIFETIME_SECS", "3300"),
        ]);
        assert!(at_the_limit.is_ok(), "55 minutes is allowed");
    }
}
