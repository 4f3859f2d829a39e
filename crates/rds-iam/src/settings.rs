//! Setting values that can only be built valid, and, with the `serde` feature, [`IamSettings`]: every IAM setting
//! as one deserialisable struct with defaults, for a service that loads its configuration with serde.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long a token is signed to live: 1 second to 15 minutes, as RDS allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetime(Duration);

impl TokenLifetime {
    /// The longest life RDS accepts, and the default.
    pub const MAX: Self = Self(Duration::from_secs(900));

    /// `lifetime` in whole seconds, if RDS accepts it.
    pub fn new(lifetime: Duration) -> Result<Self, InvalidValue> {
        if (1..=900).contains(&lifetime.as_secs()) {
            Ok(Self(Duration::from_secs(lifetime.as_secs())))
        } else {
            Err(InvalidValue(
                "must be between 1 and 900 seconds (RDS tokens live at most 15 minutes)",
            ))
        }
    }

    #[must_use]
    pub fn get(self) -> Duration {
        self.0
    }
}

impl Default for TokenLifetime {
    fn default() -> Self {
        Self::MAX
    }
}

/// Why a setting's value was refused; the text says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub(crate) &'static str);

/// An IAM role's ARN: `arn:aws:iam::123456789012:role/name` (any partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn(String);

impl FromStr for RoleArn {
    type Err = InvalidValue;

    fn from_str(arn: &str) -> Result<Self, InvalidValue> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", partition, "iam", "", account, resource]
                if !partition.is_empty()
                    && account.len() == 12
                    && account.bytes().all(|byte| byte.is_ascii_digit())
                    && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty()) =>
            {
                Ok(Self(arn.to_owned()))
            }
            _ => Err(InvalidValue("must be a role ARN: arn:aws:iam::123456789012:role/name")),
        }
    }
}

impl RoleArn {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A role session's name, as CloudTrail shows it: 2 to 64 of letters, digits and `=,.@-_` (STS's own rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionName(String);

impl FromStr for SessionName {
    type Err = InvalidValue;

    fn from_str(name: &str) -> Result<Self, InvalidValue> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "=,.@-_".contains(c);
        if (2..=64).contains(&name.len()) && name.chars().all(allowed) {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidValue("must be 2 to 64 characters of letters, digits and =,.@-_"))
        }
    }
}

impl SessionName {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SessionName {
    fn default() -> Self {
        Self("rds-iam".to_owned())
    }
}

/// A role whose temporary credentials sign the tokens, assumed with the process's own credentials (cross-account
/// access, or a narrower role than the process's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub arn: RoleArn,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    pub session_name: SessionName,
}

impl AssumeRole {
    /// `arn` with no external id and the default session name.
    #[must_use]
    pub fn new(arn: RoleArn) -> Self {
        Self {
            arn,
            external_id: None,
            session_name: SessionName::default(),
        }
    }
}

/// A `host:port` pair, such as a tunnel's local end (`127.0.0.1:15432`); IPv6 hosts in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let invalid = InvalidValue("must be host:port, such as 127.0.0.1:15432 for a local port forward");
        let (host, port) = text.rsplit_once(':').ok_or(invalid.clone())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match port.parse() {
            Ok(port) if !host.is_empty() => Ok(Self {
                host: host.to_owned(),
                port,
            }),
            _ => Err(invalid),
        }
    }
}

/// An RDS resource whose endpoint is looked up instead of written down (the `discovery` feature does the looking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseResource {
    /// An Aurora cluster, through its writer endpoint or, with `reader`, its reader endpoint.
    Cluster { id: String, reader: bool },
    /// A single RDS instance.
    Instance { id: String },
}

impl DatabaseResource {
    /// The AWS CLI command that turns IAM database authentication on for this resource.
    #[must_use]
    pub fn enable_iam_command(&self) -> String {
        let (command, flag, id) = match self {
            Self::Cluster { id, .. } => ("modify-db-cluster", "db-cluster-identifier", id),
            Self::Instance { id } => ("modify-db-instance", "db-instance-identifier", id),
        };
        format!("aws rds {command} --{flag} {id} --enable-iam-database-authentication --apply-immediately")
    }
}

impl fmt::Display for DatabaseResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cluster { id, .. } => write!(f, "DB cluster `{id}`"),
            Self::Instance { id } => write!(f, "DB instance `{id}`"),
        }
    }
}

#[cfg(feature = "serde")]
pub use self::serde_settings::IamSettings;

#[cfg(feature = "serde")]
mod serde_settings {
    use std::time::Duration;

    use serde::Deserialize;

    use super::{AssumeRole, DatabaseResource, HostPort, RoleArn, SessionName, TokenLifetime};
    use crate::refresher::RefreshPolicy;

    /// Every IAM setting, deserialisable with defaults, to drop into a service's own configuration:
    ///
    /// ```toml
    /// [database.iam]
    /// region = "eu-west-1"          # else from the host name, else the AWS region chain
    /// token_lifetime_secs = 900
    /// refresh_percent = 80
    /// cluster_id = "tasks"          # or instance_id; with use_reader_endpoint for the reader
    /// assume_role_arn = "arn:aws:iam::123456789012:role/db"
    /// tunnel = "127.0.0.1:15432"
    /// ```
    ///
    /// Each value is parsed into its type as it is read, so a wrong one is refused with its key's name, and
    /// combinations that cannot work (both a cluster and an instance) cannot be expressed once loaded.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(try_from = "Raw")]
    pub struct IamSettings {
        /// The region tokens are signed for.
        pub region: Option<String>,
        /// The endpoint the token names, when it differs from the host connected to.
        pub signing_host: Option<String>,
        pub signing_port: Option<u16>,
        pub token_lifetime: TokenLifetime,
        pub refresh: RefreshPolicy,
        /// Lets IAM run without TLS (`disable`, `prefer`), for local experiments only.
        pub allow_without_tls: bool,
        /// Lets IAM run over TLS that does not verify the server (`require`, `verify-ca`).
        pub allow_weaker_tls: bool,
        pub assume_role: Option<AssumeRole>,
        /// A cluster or instance whose endpoint is looked up; `None` for the connect options' own host.
        pub resource: Option<DatabaseResource>,
        /// Where to connect instead of the endpoint.
        pub tunnel: Option<HostPort>,
    }

    impl Default for IamSettings {
        fn default() -> Self {
            Self::try_from(Raw::default()).expect("the defaults are valid")
        }
    }

    /// The settings as written, one key each.
    #[derive(Debug, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Raw {
        region: Option<String>,
        signing_host: Option<String>,
        signing_port: Option<u16>,
        #[serde(deserialize_with = "lifetime")]
        token_lifetime_secs: TokenLifetime,
        #[serde(deserialize_with = "percent")]
        refresh_percent: u8,
        retry_max_secs: u64,
        allow_without_tls: bool,
        allow_weaker_tls: bool,
        #[serde(deserialize_with = "parsed")]
        assume_role_arn: Option<RoleArn>,
        external_id: Option<String>,
        #[serde(deserialize_with = "parsed")]
        session_name: Option<SessionName>,
        cluster_id: Option<String>,
        instance_id: Option<String>,
        use_reader_endpoint: bool,
        #[serde(deserialize_with = "parsed")]
        tunnel: Option<HostPort>,
    }

    impl Default for Raw {
        fn default() -> Self {
            Self {
                region: None,
                signing_host: None,
                signing_port: None,
                token_lifetime_secs: TokenLifetime::MAX,
                refresh_percent: 80,
                retry_max_secs: 30,
                allow_without_tls: false,
                allow_weaker_tls: false,
                assume_role_arn: None,
                external_id: None,
                session_name: None,
                cluster_id: None,
                instance_id: None,
                use_reader_endpoint: false,
                tunnel: None,
            }
        }
    }

    fn parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: std::str::FromStr<Err = super::InvalidValue>,
    {
        Option::<String>::deserialize(deserializer)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }

    fn lifetime<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<TokenLifetime, D::Error> {
        TokenLifetime::new(Duration::from_secs(u64::deserialize(deserializer)?)).map_err(serde::de::Error::custom)
    }

    fn percent<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
        let percent = u8::deserialize(deserializer)?;
        if (10..=95).contains(&percent) {
            Ok(percent)
        } else {
            Err(serde::de::Error::custom("must be between 10 and 95"))
        }
    }

    impl TryFrom<Raw> for IamSettings {
        type Error = String;

        fn try_from(raw: Raw) -> Result<Self, String> {
            let resource = match (raw.cluster_id, raw.instance_id, raw.use_reader_endpoint) {
                (Some(_), Some(_), _) => {
                    return Err("`cluster_id` and `instance_id` are both set; name one of them".to_owned());
                }
                (Some(id), None, reader) => Some(DatabaseResource::Cluster { id, reader }),
                (None, Some(_), true) | (None, None, true) => {
                    return Err(
                        "`use_reader_endpoint` needs `cluster_id` (instances have a single endpoint)".to_owned(),
                    );
                }
                (None, Some(id), false) => Some(DatabaseResource::Instance { id }),
                (None, None, false) => None,
            };
            let assume_role = match (raw.assume_role_arn, raw.external_id) {
                (Some(arn), external_id) => Some(AssumeRole {
                    arn,
                    external_id,
                    session_name: raw.session_name.unwrap_or_default(),
                }),
                (None, Some(_)) => {
                    return Err("`external_id` needs `assume_role_arn`: set both or neither".to_owned());
                }
                (None, None) => None,
            };
            Ok(Self {
                region: raw.region,
                signing_host: raw.signing_host,
                signing_port: raw.signing_port,
                token_lifetime: raw.token_lifetime_secs,
                refresh: RefreshPolicy {
                    refresh_fraction: f64::from(raw.refresh_percent) / 100.0,
                    retry_max: Duration::from_secs(raw.retry_max_secs.max(1)),
                    ..RefreshPolicy::default()
                },
                allow_without_tls: raw.allow_without_tls,
                allow_weaker_tls: raw.allow_weaker_tls,
                assume_role,
                resource,
                tunnel: raw.tunnel,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parsed_into_their_types_or_refused_with_the_rule() {
        assert!("arn:aws:iam::123456789012:role/tasks".parse::<RoleArn>().is_ok());
        assert!(
            "arn:aws-cn:iam::123456789012:role/path/tasks"
                .parse::<RoleArn>()
                .is_ok()
        );
        for bad in [
            "tasks-role",
            "arn:aws:iam::123:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(bad.parse::<RoleArn>().is_err(), "{bad}");
        }
        assert!("tasks-api".parse::<SessionName>().is_ok());
        assert!("has spaces".parse::<SessionName>().is_err());
        assert_eq!(
            "[::1]:15432".parse::<HostPort>(),
            Ok(HostPort {
                host: "::1".to_owned(),
                port: 15432
            })
        );
        for bad in ["localhost", "localhost:99999", ":5432"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
        assert!(TokenLifetime::new(Duration::from_secs(901)).is_err());
        assert!(TokenLifetime::new(Duration::ZERO).is_err());
    }
}
