//! The database settings, parsed into types as they are read: durations are `Duration`s, the TLS mode is resolved
//! once, a password is a secret wherever it was written, and IAM or Secrets Manager settings exist only with their
//! way of authenticating.

mod url;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use rds_iam::{DSQL_MAX_CONNECTION_LIFETIME, DatabaseResource, DsqlClusterId, IamSettings, SecretId, TlsMode};
use secrecy::SecretString;
use serde::Deserialize;

pub use self::url::{DatabaseBackend, DatabaseUrl};

/// The environment variable that sets a key: `database.max_connections` is `APP__DATABASE__MAX_CONNECTIONS`.
#[must_use]
pub fn environment_variable_for(key: &str) -> String {
    format!("APP__{}", key.replace('.', "__").to_uppercase())
}

/// A key and the variable that sets it, for messages: `database.password (APP__DATABASE__PASSWORD)`.
#[must_use]
pub fn key_and_variable(key: &str) -> String {
    format!("{key} ({})", environment_variable_for(key))
}

/// The database, how the service authenticates to it, and the pool of connections to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawDatabaseSettings")]
pub struct DatabaseSettings {
    /// Where the database is, without any password.
    pub url: DatabaseUrl,
    pub pool: PoolSettings,
    /// Apply pending migrations when the service starts.
    pub migrate_on_start: bool,
    pub auth: Auth,
    pub tls: TlsSettings,
    /// A second pool, for reads that may lag a moment behind the writer: an Aurora reader endpoint, say.
    pub reader: Option<ReaderEndpoint>,
}

/// Where the reader pool connects.
#[derive(Debug, Clone)]
pub enum ReaderEndpoint {
    /// This URL: the same engine, user and database as the writer's, at another host.
    Url(DatabaseUrl),
    /// The reader endpoint of the Aurora cluster `database.iam.cluster_id` names, looked up as the writer's is.
    OfCluster,
}

/// How long a read waits for the reader pool before it goes to the writer instead: a reader that does not answer
/// should cost a read little more than this, and the reads after it nothing (see `SeaOrmTaskRepository`).
const READER_PATIENCE: Duration = Duration::from_secs(1);

/// How the service proves who it is.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The password in the URL or in `database.password`, if any.
    Password(Option<SecretString>),
    /// A fresh RDS IAM token for every new connection; no stored password. Boxed: it is large, and read once.
    Iam(Box<IamSettings>),
    /// The user and password held in a Secrets Manager secret, which may also say where the database is.
    SecretsManager(SecretsManagerSettings),
    /// Aurora DSQL: a fresh DSQL token for every new connection, renewed like RDS tokens. Boxed, as `Iam` is.
    Dsql(Box<DsqlSettings>),
}

/// Where an Aurora DSQL cluster is and how its tokens are signed.
#[derive(Debug, Clone, PartialEq)]
pub struct DsqlSettings {
    /// The cluster, whose endpoint (`CLUSTER.dsql.REGION.on.aws`) the service connects to; `None` when the URL
    /// names the endpoint itself.
    pub cluster_id: Option<DsqlClusterId>,
    /// The role connections log in as: the URL's user, else `admin`, which every cluster has. Its tokens are
    /// `DbConnectAdmin` tokens; any other role's are `DbConnect` tokens.
    pub role: String,
    /// The region, token lifetime and renewal, signing host, tunnel and TLS escape hatches, as for RDS; the
    /// settings that only RDS has (a role to assume, an RDS cluster or instance to look up) are refused with DSQL.
    pub iam: IamSettings,
}

/// Which secret holds the database user and password, and how often it is fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsManagerSettings {
    pub secret_id: SecretId,
    /// How often the secret is fetched again; it is also fetched at once when the server refuses its password.
    pub refresh: Duration,
}

/// The connection pool's size and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a request waits for a free connection before it is answered with 503.
    pub acquire_timeout: Duration,
    /// Connections idle this long are closed when next handed out.
    pub idle_timeout: Duration,
    /// Connections this old are replaced when handed out or returned.
    pub max_lifetime: Duration,
    /// New connections this process opens in any one second, at most: after a failover or a mass disconnect, the
    /// pool reconnects at this pace (with jitter) while requests wait in its queue, instead of every process of a
    /// fleet logging in at once and tripping RDS's IAM throttling.
    pub max_new_per_sec: NonZeroU32,
}

/// TLS to the database server, resolved once from `database.tls.mode`, the URL's `sslmode` and the auth mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// The CA certificates to trust, such as the RDS `global-bundle.pem`; the built-in web PKI roots when unset.
    pub root_cert: Option<PathBuf>,
}

impl DatabaseSettings {
    #[must_use]
    pub fn backend(&self) -> DatabaseBackend {
        self.url.backend()
    }

    /// The settings of the reader pool, when one is configured: the writer's, at the reader's endpoint (with IAM,
    /// tokens are signed for it), with no migrations, and a short wait for a connection, after which reads go to
    /// the writer.
    #[must_use]
    pub fn reader_settings(&self) -> Option<Self> {
        let mut reader = Self {
            migrate_on_start: false,
            reader: None,
            pool: PoolSettings {
                acquire_timeout: self.pool.acquire_timeout.min(READER_PATIENCE),
                ..self.pool
            },
            ..self.clone()
        };
        match self.reader.as_ref()? {
            ReaderEndpoint::Url(url) => reader.url = url.clone(),
            ReaderEndpoint::OfCluster => {
                if let Auth::Iam(iam) = &mut reader.auth
                    && let Some(DatabaseResource::Cluster { reader, .. }) = &mut iam.resource
                {
                    *reader = true;
                }
            }
        }
        Some(reader)
    }
}

/// The settings as written, one key each.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabaseSettings {
    url: DatabaseUrl,
    password: Option<SecretString>,
    max_connections: u32,
    min_connections: u32,
    #[serde(deserialize_with = "seconds")]
    acquire_timeout_secs: Duration,
    #[serde(deserialize_with = "seconds")]
    idle_timeout_secs: Duration,
    #[serde(deserialize_with = "seconds")]
    max_lifetime_secs: Duration,
    max_new_connections_per_sec: NonZeroU32,
    migrate_on_start: bool,
    auth: AuthMode,
    iam: IamSettings,
    #[serde(default)]
    dsql: RawDsqlSettings,
    secret_id: Option<String>,
    #[serde(deserialize_with = "seconds", default = "default_secret_refresh")]
    secret_refresh_secs: Duration,
    tls: RawTlsSettings,
    #[serde(default)]
    reader: RawReaderSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReaderSettings {
    url: Option<DatabaseUrl>,
    #[serde(default)]
    of_cluster: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AuthMode {
    Password,
    Iam,
    SecretsManager,
    Dsql,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawDsqlSettings {
    cluster_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsSettings {
    mode: Option<TlsMode>,
    root_cert: Option<PathBuf>,
}

fn default_secret_refresh() -> Duration {
    rds_iam::SecretsManagerSource::DEFAULT_RENEWAL
}

/// A `*_secs` key read as a [`Duration`], for every settings struct of the service.
pub fn seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

/// A problem with the `database` settings, naming the key and its variable.
fn invalid(key: &str, problem: &str) -> String {
    format!("{}: {problem}", key_and_variable(key))
}

impl TryFrom<RawDatabaseSettings> for DatabaseSettings {
    type Error = String;

    fn try_from(raw: RawDatabaseSettings) -> Result<Self, String> {
        if raw.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if raw.min_connections > raw.max_connections {
            return Err(invalid(
                "database.min_connections",
                &format!("must not exceed database.max_connections ({})", raw.max_connections),
            ));
        }
        let password = match (raw.password, raw.url.password()) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "database.password",
                    "a password is also written in database.url; keep only one of them",
                ));
            }
            (password, in_url) => password.or_else(|| in_url.cloned()),
        };
        let raw_dsql_cluster_id = raw.dsql.cluster_id.clone();
        let tls = TlsSettings {
            mode: resolve_tls_mode(raw.tls.mode, &raw.url, raw.auth),
            root_cert: raw.tls.root_cert,
        };
        let auth = match (raw.auth, raw.secret_id) {
            (AuthMode::SecretsManager, secret_id) => {
                check_secrets_manager_url("database.url", &raw.url, password.is_some())?;
                Auth::SecretsManager(secrets_manager_settings(secret_id, raw.secret_refresh_secs)?)
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "database.secret_id",
                    "is only used with database.auth = secrets-manager: set that too, or remove the secret id",
                ));
            }
            (AuthMode::Password, None) => Auth::Password(password),
            (AuthMode::Iam, None) => {
                check_iam_url("database.url", &raw.url, password.is_some())?;
                Auth::Iam(Box::new(raw.iam))
            }
            (AuthMode::Dsql, None) => Auth::Dsql(Box::new(dsql_settings(
                &raw.url,
                password.is_some(),
                raw.dsql,
                raw.iam,
                raw.max_lifetime_secs,
            )?)),
        };
        if !matches!(auth, Auth::Dsql(_)) && raw_dsql_cluster_id.is_some() {
            return Err(invalid(
                "database.dsql.cluster_id",
                "is only used with database.auth = dsql: set that too, or remove the cluster id",
            ));
        }
        let reader = reader_endpoint(raw.reader, &raw.url, &auth)?;
        Ok(Self {
            reader,
            url: raw.url,
            pool: PoolSettings {
                max_connections: raw.max_connections,
                min_connections: raw.min_connections,
                acquire_timeout: raw.acquire_timeout_secs,
                idle_timeout: raw.idle_timeout_secs,
                max_lifetime: raw.max_lifetime_secs,
                max_new_per_sec: raw.max_new_connections_per_sec,
            },
            migrate_on_start: raw.migrate_on_start,
            auth,
            tls,
        })
    }
}

/// The reader pool's endpoint, if one is configured, checked against the writer's settings: the same engine, no
/// password of its own (the writer's authentication serves both), and what the writer's way of authenticating
/// needs of a URL.
fn reader_endpoint(
    raw: RawReaderSettings,
    writer: &DatabaseUrl,
    auth: &Auth,
) -> Result<Option<ReaderEndpoint>, String> {
    match (raw.url, raw.of_cluster) {
        (None, false) => Ok(None),
        (Some(_), true) => Err(invalid(
            "database.reader.of_cluster",
            "and database.reader.url both name the reader: keep one of them",
        )),
        (None, true) => match auth {
            Auth::Iam(iam) if matches!(iam.resource, Some(DatabaseResource::Cluster { reader: false, .. })) => {
                Ok(Some(ReaderEndpoint::OfCluster))
            }
            _ => Err(invalid(
                "database.reader.of_cluster",
                "needs database.auth = iam with database.iam.cluster_id (and not use_reader_endpoint), whose reader \
                 endpoint it looks up; otherwise set database.reader.url",
            )),
        },
        (Some(url), false) => {
            if url.backend() != writer.backend() || url.backend() == DatabaseBackend::Sqlite {
                return Err(invalid(
                    "database.reader.url",
                    "must be a postgres:// or mysql:// URL of the same engine as database.url",
                ));
            }
            if url.password().is_some() {
                return Err(invalid(
                    "database.reader.url",
                    "must not hold a password: the reader is logged in to as the writer is (database.password, IAM \
                     or the secret)",
                ));
            }
            match auth {
                Auth::Iam(_) => check_iam_url("database.reader.url", &url, false)?,
                Auth::SecretsManager(_) => check_secrets_manager_url("database.reader.url", &url, false)?,
                Auth::Dsql(_) => {
                    return Err(invalid(
                        "database.reader.url",
                        "is not for Aurora DSQL, where every endpoint takes writes: remove it",
                    ));
                }
                Auth::Password(_) => {}
            }
            Ok(Some(ReaderEndpoint::Url(url)))
        }
    }
}

/// What IAM authentication needs from the URL: a server that has it, a user, and no password.
fn check_iam_url(key: &str, url: &DatabaseUrl, has_password: bool) -> Result<(), String> {
    if url.backend() == DatabaseBackend::Sqlite {
        return Err(invalid(
            "database.auth",
            "IAM authentication needs a postgres:// or mysql:// database.url (RDS, Aurora PostgreSQL or MySQL, RDS \
             MariaDB)",
        ));
    }
    if url.as_url().username().is_empty() {
        return Err(invalid(
            key,
            "IAM authentication needs the database user in the URL: postgres://db_iam_user@host:5432/db or \
             mysql://db_iam_user@host:3306/db",
        ));
    }
    if has_password {
        return Err(invalid(
            "database.password",
            "must not be set with database.auth = iam: the token is the password (remove it from the URL too)",
        ));
    }
    Ok(())
}

/// What DSQL needs: a PostgreSQL URL without a password, the cluster named once (by id, or by the URL's host), none
/// of the RDS-only IAM settings, and connections replaced before DSQL closes them at 60 minutes.
fn dsql_settings(
    url: &DatabaseUrl,
    has_password: bool,
    raw: RawDsqlSettings,
    iam: IamSettings,
    max_lifetime: Duration,
) -> Result<DsqlSettings, String> {
    if url.backend() != DatabaseBackend::Postgres {
        return Err(invalid(
            "database.url",
            "must be postgres:// with database.auth = dsql (Aurora DSQL speaks PostgreSQL): \
             postgres://admin@CLUSTER.dsql.REGION.on.aws/postgres, or postgres:///postgres with \
             database.dsql.cluster_id",
        ));
    }
    if has_password {
        return Err(invalid(
            "database.password",
            "must not be set with database.auth = dsql: the token is the password (remove it from the URL too)",
        ));
    }
    let role = match url.as_url().username() {
        "" => rds_iam::DSQL_ADMIN_USER.to_owned(),
        user => percent_encoding::percent_decode_str(user)
            .decode_utf8()
            .map_err(|_| invalid("database.url", "names a user that is not UTF-8 once percent-decoded"))?
            .into_owned(),
    };
    let cluster_id = raw
        .cluster_id
        .map(|id| id.parse::<DsqlClusterId>())
        .transpose()
        .map_err(|problem| invalid("database.dsql.cluster_id", &problem.to_string()))?;
    let has_host = url.as_url().host_str().is_some_and(|host| !host.is_empty());
    match (&cluster_id, has_host) {
        (Some(_), true) => {
            return Err(invalid(
                "database.dsql.cluster_id",
                "and the host in database.url both name the cluster: keep one (postgres:///postgres with the \
                 cluster id, or the endpoint CLUSTER.dsql.REGION.on.aws in the URL)",
            ));
        }
        (None, false) => {
            return Err(invalid(
                "database.dsql.cluster_id",
                "must name the cluster when database.url has no host: set it (with database.iam.region, unless \
                 AWS_REGION gives one), or write the endpoint CLUSTER.dsql.REGION.on.aws in the URL",
            ));
        }
        _ => {}
    }
    if iam.assume_role.is_some() {
        return Err(invalid(
            "database.iam.assume_role_arn",
            "is not supported with database.auth = dsql: give the process the role's credentials (a profile with \
             role_arn, chosen with AWS_PROFILE, does that)",
        ));
    }
    if let Some(resource) = &iam.resource {
        let key = match resource {
            rds_iam::DatabaseResource::Cluster { .. } => "database.iam.cluster_id",
            rds_iam::DatabaseResource::Instance { .. } => "database.iam.instance_id",
        };
        return Err(invalid(
            key,
            "names an RDS resource to look up, which DSQL does not have: use database.dsql.cluster_id",
        ));
    }
    if max_lifetime > DSQL_MAX_CONNECTION_LIFETIME {
        return Err(invalid(
            "database.max_lifetime_secs",
            &format!(
                "must be at most {} with database.auth = dsql: DSQL closes every connection after 60 minutes",
                DSQL_MAX_CONNECTION_LIFETIME.as_secs()
            ),
        ));
    }
    Ok(DsqlSettings { cluster_id, role, iam })
}

/// The secret to log in with, which must be named, and how often to fetch it again.
fn secrets_manager_settings(secret_id: Option<String>, refresh: Duration) -> Result<SecretsManagerSettings, String> {
    let secret_id = secret_id.ok_or_else(|| {
        invalid(
            "database.secret_id",
            "must name the secret (its name, or its ARN) with database.auth = secrets-manager",
        )
    })?;
    let secret_id = secret_id
        .parse()
        .map_err(|problem: rds_iam::InvalidValue| invalid("database.secret_id", &problem.to_string()))?;
    if refresh.is_zero() {
        return Err(invalid("database.secret_refresh_secs", "must be at least 1"));
    }
    Ok(SecretsManagerSettings { secret_id, refresh })
}

/// What Secrets Manager authentication needs from the URL: the engine (its scheme), and neither a user nor a password,
/// which come from the secret. The secret's host, port and database name fill in what the URL leaves out, so
/// `postgres://` or `mysql://` alone will do when the secret says where the database is.
fn check_secrets_manager_url(key: &str, url: &DatabaseUrl, has_password: bool) -> Result<(), String> {
    if url.backend() == DatabaseBackend::Sqlite {
        return Err(invalid(
            key,
            "must be postgres:// or mysql:// with database.auth = secrets-manager; the scheme alone will do when the \
             secret holds the host, port and dbname, and whatever the URL does hold wins over the secret (an RDS \
             Proxy endpoint, say)",
        ));
    }
    if has_password {
        return Err(invalid(
            "database.password",
            "must not be set with database.auth = secrets-manager: the password comes from the secret (remove it from \
             the URL too)",
        ));
    }
    if !url.as_url().username().is_empty() {
        return Err(invalid(
            key,
            "must not name a user with database.auth = secrets-manager: the user comes from the secret, and a \
             rotation may change it",
        ));
    }
    Ok(())
}

/// `database.tls.mode`, else the URL's `sslmode` (PostgreSQL) or `ssl-mode` (MySQL), else `verify-full` with IAM
/// or Secrets Manager and `prefer` with a password.
fn resolve_tls_mode(configured: Option<TlsMode>, url: &DatabaseUrl, auth: AuthMode) -> TlsMode {
    match (configured.or(url.tls_mode()), auth) {
        (Some(mode), _) => mode,
        // A secret's password is usually the master user's, and lasts until it is rotated: it deserves a verified
        // server by default, as tokens do.
        (None, AuthMode::Iam | AuthMode::SecretsManager | AuthMode::Dsql) => TlsMode::VerifyFull,
        (None, AuthMode::Password) => TlsMode::Prefer,
    }
}
