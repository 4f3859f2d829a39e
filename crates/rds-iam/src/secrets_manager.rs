//! Passwords held in AWS Secrets Manager (the `secrets-manager` feature): the user and password of an RDS database
//! secret, for the [`TokenRefresher`](crate::TokenRefresher) to fetch before the first connection, again on an
//! interval, and at once when the server refuses them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::config::Region;
use secrecy::SecretString;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::credential::Credential;
use crate::error::{CredentialError, Error};
use crate::settings::InvalidValue;
use crate::signer::{CredentialFuture, CredentialSource, load_aws_config};

/// A secret's name (`tasks/app-db`) or ARN (`arn:aws:secretsmanager:eu-west-1:123456789012:secret:tasks/app-db-AbCdEf`,
/// which also names its region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretId(String);

impl FromStr for SecretId {
    type Err = InvalidValue;

    fn from_str(id: &str) -> Result<Self, InvalidValue> {
        let id = id.trim();
        if id.is_empty() {
            return Err(InvalidValue("is empty: give the secret's name or ARN"));
        }
        let secret = Self(id.to_owned());
        if id.starts_with("arn:") && secret.region().is_none() {
            return Err(InvalidValue(
                "is not a secret's ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME); or give its name",
            ));
        }
        Ok(secret)
    }
}

impl SecretId {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The region an ARN names; `None` for a name.
    #[must_use]
    pub fn region(&self) -> Option<&str> {
        match self.0.splitn(7, ':').collect::<Vec<_>>().as_slice() {
            ["arn", partition, "secretsmanager", region, account, "secret", name]
                if !partition.is_empty() && !region.is_empty() && !account.is_empty() && !name.is_empty() =>
            {
                Some(region)
            }
            _ => None,
        }
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fetches a database secret from Secrets Manager: an RDS-managed master user secret (`ManageMasterUserPassword`),
/// or a secret of the same shape that a rotation function keeps up to date.
///
/// As a [`CredentialSource`] it gives the secret's user and password, fetched again every
/// [`SecretsManagerSource::renew_every`] (5 minutes by default), and at once when the server refuses them: during a
/// rotation the password changes on the server before the secret's current value does, and the user may change too
/// (RDS's alternating-users rotation).
///
/// ```no_run
/// use std::str::FromStr;
///
/// use rds_iam::SecretsManagerSource;
/// use sqlx::postgres::PgConnectOptions;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let source = SecretsManagerSource::new("tasks/app-db".parse()?, None).await?;
/// // Its host, port and database name, when the secret holds them, say where to connect.
/// let secret = source.fetch_secret().await?;
/// let mut options = PgConnectOptions::from_str("postgres://")?;
/// if let Some(host) = &secret.host {
///     options = options.host(host);
/// }
/// if let Some(dbname) = &secret.dbname {
///     options = options.database(dbname);
/// }
/// let database = rds_iam::PgIamPool::builder(options)
///     .root_cert("/etc/ssl/rds/global-bundle.pem")
///     .credential_source(source)
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    secret_id: SecretId,
    renew_every: Duration,
}

impl SecretsManagerSource {
    /// How often the secret is fetched again unless [`SecretsManagerSource::renew_every`] says otherwise.
    pub const DEFAULT_RENEWAL: Duration = Duration::from_secs(300);

    /// A source for the secret `secret_id`, asked for in its ARN's region, else in `sdk_config`'s; without
    /// `sdk_config`, the SDK's default configuration is loaded (credential chain, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// ...).
    pub async fn new(secret_id: SecretId, sdk_config: Option<SdkConfig>) -> Result<Self, Error> {
        let arn_region = secret_id.region();
        let sdk_config = match sdk_config {
            Some(config) => config,
            None => load_aws_config(arn_region).await,
        };
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&sdk_config);
        match (arn_region, sdk_config.region()) {
            (Some(region), _) => config = config.region(Region::new(region.to_owned())),
            (None, Some(_)) => {}
            (None, None) => {
                return Err(Error::InvalidSetting {
                    setting: "secret_id",
                    problem: "is a name, and no AWS region is configured to look it up in: give the secret's ARN, \
                              which names its region, or set AWS_REGION"
                        .to_owned(),
                });
            }
        }
        Ok(Self {
            client: aws_sdk_secretsmanager::Client::from_conf(config.build()),
            secret_id,
            renew_every: Self::DEFAULT_RENEWAL,
        })
    }

    /// Fetch the secret again this often (and at once when the server refuses its password).
    #[must_use]
    pub fn renew_every(mut self, interval: Duration) -> Self {
        self.renew_every = interval;
        self
    }

    /// The secret's name or ARN, as given.
    #[must_use]
    pub fn secret_id(&self) -> &SecretId {
        &self.secret_id
    }

    /// The secret's current value (`AWSCURRENT`), checked to hold a user and password. Errors say what is wrong
    /// with its shape, never what it holds.
    pub async fn fetch_secret(&self) -> Result<DatabaseSecret, CredentialError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(self.secret_id.as_str())
            .send()
            .await
            .map_err(|error| {
                CredentialError::new(
                    format!(
                        "cannot fetch the secret `{}` from Secrets Manager (AWS credentials come from the SDK's \
                         default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, SSO, web \
                         identity, ECS or EC2 instance roles; they need secretsmanager:GetSecretValue on it)",
                        self.secret_id
                    ),
                    aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
                )
            })?;
        let unusable = |problem: &str| {
            CredentialError::new(
                format!(
                    "the secret `{}` does not hold a database secret: RDS's shape is a JSON object with `username` and \
                     `password`, and optionally `host`, `port`, `dbname` and `engine`",
                    self.secret_id
                ),
                problem.to_owned(),
            )
        };
        let text = output
            .secret_string()
            .ok_or_else(|| unusable("it holds binary data (SecretBinary), not a string"))?;
        DatabaseSecret::parse(text).map_err(unusable)
    }
}

impl fmt::Display for SecretsManagerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the Secrets Manager secret `{}`", self.secret_id)
    }
}

impl CredentialSource for SecretsManagerSource {
    fn fetch(&self) -> CredentialFuture<'_> {
        Box::pin(async move {
            let fetched_at = Instant::now();
            let secret = self.fetch_secret().await?;
            Ok(Credential::password(
                secret.username,
                secret.password,
                fetched_at,
                self.renew_every,
            ))
        })
    }
}

/// What an RDS database secret holds: the user and password, and, in secrets made for an application (not in
/// RDS-managed master user secrets), where the database is. Extra fields are ignored.
///
/// `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct DatabaseSecret {
    /// The database user.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// The endpoint's host name.
    pub host: Option<String>,
    /// The endpoint's port.
    pub port: Option<u16>,
    /// The database to connect to.
    pub dbname: Option<String>,
    /// RDS's engine name: `postgres`, `aurora-postgresql`, `mysql`, `mariadb`, `aurora-mysql`, ...
    pub engine: Option<String>,
}

impl DatabaseSecret {
    /// Reads the secret's JSON. A problem is described by field name and expected type; no value, nor the JSON
    /// parser's own message (which may quote one), is ever part of it.
    fn parse(text: &str) -> Result<Self, &'static str> {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
            return Err("it is not a JSON object");
        };
        Ok(Self {
            username: text_field(&fields, "username")?
                .filter(|user| !user.is_empty())
                .ok_or("`username` is missing or empty")?,
            password: text_field(&fields, "password")?
                .filter(|password| !password.is_empty())
                .map(SecretString::from)
                .ok_or("`password` is missing or empty")?,
            host: text_field(&fields, "host")?.filter(|host| !host.is_empty()),
            port: port_field(&fields)?,
            dbname: text_field(&fields, "dbname")?.filter(|dbname| !dbname.is_empty()),
            engine: text_field(&fields, "engine")?.filter(|engine| !engine.is_empty()),
        })
    }
}

/// A string field, absent or null being `None`.
fn text_field(fields: &Map<String, Value>, name: &'static str) -> Result<Option<String>, &'static str> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(match name {
            "username" => "`username` is not a string",
            "password" => "`password` is not a string",
            "host" => "`host` is not a string",
            "dbname" => "`dbname` is not a string",
            _ => "`engine` is not a string",
        }),
    }
}

/// `port`: RDS writes a number; secrets written by hand often hold it as a string.
fn port_field(fields: &Map<String, Value>) -> Result<Option<u16>, &'static str> {
    let port = match fields.get("port") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number.as_u64().and_then(|port| u16::try_from(port).ok()),
        Some(Value::String(text)) => text.trim().parse().ok(),
        Some(_) => None,
    };
    port.filter(|port| *port != 0)
        .map(Some)
        .ok_or("`port` is not a port number (1 to 65535)")
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn an_rds_secret_gives_its_user_password_and_endpoint() {
        let secret = DatabaseSecret::parse(
            r#"{"engine": "postgres", "host": "tasks.abc.eu-west-1.rds.amazonaws.com", "port": 5432,
                "username": "app", "password": "pa\"ss", "dbname": "tasks", "dbInstanceIdentifier": "tasks"}"#,
        )
        .expect("RDS's shape");
        assert_eq!(secret.username, "app");
        assert_eq!(secret.password.expose_secret(), "pa\"ss");
        assert_eq!(secret.host.as_deref(), Some("tasks.abc.eu-west-1.rds.amazonaws.com"));
        assert_eq!(secret.port, Some(5432));
        assert_eq!(secret.dbname.as_deref(), Some("tasks"));
        assert_eq!(secret.engine.as_deref(), Some("postgres"));
        assert!(!format!("{secret:?}").contains("pa\\\"ss"), "{secret:?}");

        let master = DatabaseSecret::parse(r#"{"username": "postgres", "password": "x", "port": "3306"}"#)
            .expect("a master user secret");
        assert_eq!((master.host, master.port, master.dbname), (None, Some(3306), None));
    }

    #[test]
    fn a_secret_of_another_shape_is_refused_by_field_name_without_its_values() {
        let cases = [
            ("hunter2-not-json", "not a JSON object"),
            (r#"["hunter2-array"]"#, "not a JSON object"),
            (r#"{"password": "hunter2-no-user"}"#, "`username` is missing"),
            (
                r#"{"username": "app", "pass": "hunter2-misnamed"}"#,
                "`password` is missing",
            ),
            (
                r#"{"username": "app", "password": ["hunter2-list"]}"#,
                "`password` is not a string",
            ),
            (
                r#"{"username": "app", "password": "hunter2-a", "port": "hunter2-port"}"#,
                "`port`",
            ),
            (
                r#"{"username": "app", "password": "hunter2-b", "port": 70000}"#,
                "`port`",
            ),
            (
                r#"{"username": "app", "password": "hunter2-c", "host": 7}"#,
                "`host` is not a string",
            ),
        ];
        for (text, expected) in cases {
            let problem = DatabaseSecret::parse(text).expect_err(text);
            assert!(problem.contains(expected), "{text}: {problem}");
            assert!(!problem.contains("hunter2"), "{text}: {problem}");
        }
    }

    #[test]
    fn an_arn_names_its_region_and_a_name_names_none() {
        let arn: SecretId = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:rds!db-1a2b:Xy9z"
            .parse()
            .expect("an ARN");
        assert_eq!(arn.region(), Some("eu-west-3"));
        let name: SecretId = "tasks/app-db".parse().expect("a name");
        assert_eq!(name.region(), None);
        for bad in [
            "",
            "  ",
            "arn:aws:iam::123456789012:role/tasks",
            "arn:aws:secretsmanager:::secret:x",
        ] {
            assert!(bad.parse::<SecretId>().is_err(), "{bad:?}");
        }
    }
}
