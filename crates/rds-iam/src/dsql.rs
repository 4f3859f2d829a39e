//! Aurora DSQL (the `dsql` feature): IAM tokens for a DSQL cluster, signed with `aws-sdk-dsql`'s generator, for the
//! same pool and refresher as RDS tokens.
//!
//! A DSQL token is a SigV4-presigned `GET https://HOST/?Action=DbConnect` (or `DbConnectAdmin`) for the service
//! `dsql`. Unlike an RDS token it names no user and no port: the action says whether it is for the `admin` role or
//! for a custom one, and the server matches it against the role the connection logs in as.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dsql::auth_token::{AuthTokenGenerator, Config as TokenConfig};
use aws_sdk_dsql::config::Region;

use crate::credential::IamToken;
use crate::error::{CredentialError, Error};
use crate::settings::{InvalidValue, TokenLifetime};
use crate::signer::{
    CredentialFuture, CredentialSource, capped_token, resolve_region, signing_credentials, start_of_second,
};

/// The role DSQL creates with every cluster; tokens for it are signed for `DbConnectAdmin`, tokens for any other
/// role for `DbConnect`.
pub const DSQL_ADMIN_USER: &str = "admin";

/// DSQL closes every connection after 60 minutes, whatever it is doing; a pool that replaces its connections by this
/// age never hands out one that is about to be closed under a statement.
pub const DSQL_MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(55 * 60);

/// What a DSQL token lets its bearer do: log in as the `admin` role, or as a custom role (one linked to the signing
/// IAM identity with `AWS IAM GRANT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsqlAction {
    /// `DbConnect`: any role but `admin`.
    DbConnect,
    /// `DbConnectAdmin`: the `admin` role.
    DbConnectAdmin,
}

impl DsqlAction {
    /// The action a connection logging in as `role` needs: `DbConnectAdmin` for [`DSQL_ADMIN_USER`] only.
    #[must_use]
    pub fn for_role(role: &str) -> Self {
        if role == DSQL_ADMIN_USER {
            Self::DbConnectAdmin
        } else {
            Self::DbConnect
        }
    }

    /// The action's name, as the token carries it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DbConnect => "DbConnect",
            Self::DbConnectAdmin => "DbConnectAdmin",
        }
    }
}

/// A DSQL cluster's identifier, the first label of its endpoint (`kaabtu3ivgyiv7yeqqqzxcvfne`): lowercase letters
/// and digits, as DSQL makes them, so that it is a host name label as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsqlClusterId(String);

impl FromStr for DsqlClusterId {
    type Err = InvalidValue;

    fn from_str(id: &str) -> Result<Self, InvalidValue> {
        let id = id.trim();
        if (1..=63).contains(&id.len())
            && id
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        {
            Ok(Self(id.to_owned()))
        } else {
            Err(InvalidValue(
                "must be a DSQL cluster identifier: lowercase letters and digits, such as kaabtu3ivgyiv7yeqqqzxcvfne",
            ))
        }
    }
}

impl DsqlClusterId {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cluster's endpoint in `region`: `CLUSTER.dsql.REGION.on.aws`.
    ///
    /// ```
    /// let id: rds_iam::DsqlClusterId = "kaabtu3ivgyiv7yeqqqzxcvfne".parse().unwrap();
    /// assert_eq!(id.host("us-east-1"), "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws");
    /// ```
    #[must_use]
    pub fn host(&self, region: &str) -> String {
        format!("{}.dsql.{region}.on.aws", self.0)
    }
}

impl fmt::Display for DsqlClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Signs Aurora DSQL tokens with `aws-sdk-dsql`'s generator and whatever credentials the AWS configuration resolves:
/// `DbConnectAdmin` tokens for the role [`DSQL_ADMIN_USER`], `DbConnect` tokens for any other
/// ([`DsqlAction::for_role`]).
///
/// As a [`CredentialSource`] it plugs into [`IamPoolBuilder::credential_source`](crate::IamPoolBuilder), so the
/// first token is signed before the pool opens anything and the [`TokenRefresher`](crate::TokenRefresher) renews it
/// like an RDS token:
///
/// ```no_run
/// use std::str::FromStr;
///
/// use rds_iam::{DsqlAction, DsqlTokenSigner, TokenLifetime};
/// use sqlx::postgres::PgConnectOptions;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let host = "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws";
/// let signer = DsqlTokenSigner::new(host, DsqlAction::for_role("admin"), None, TokenLifetime::MAX, None).await?;
/// let database = rds_iam::PgIamPool::builder(PgConnectOptions::from_str(&format!("postgres://admin@{host}/postgres"))?)
///     .credential_source(signer)
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// DSQL also closes connections after 60 minutes: give the pool a `max_lifetime` of at most
/// [`DSQL_MAX_CONNECTION_LIFETIME`].
#[derive(Debug)]
pub struct DsqlTokenSigner {
    sdk_config: SdkConfig,
    region: Region,
    /// The cluster endpoint, without a port: DSQL tokens name none.
    host: String,
    action: DsqlAction,
    lifetime: TokenLifetime,
}

impl DsqlTokenSigner {
    /// A signer of `action` tokens for the cluster whose endpoint is `host`. The region is `region`, else the one in
    /// the host name, else the AWS region chain's; the default credential chain is loaded unless `sdk_config` is
    /// given.
    pub async fn new(
        host: impl Into<String>,
        action: DsqlAction,
        region: Option<String>,
        lifetime: TokenLifetime,
        sdk_config: Option<SdkConfig>,
    ) -> Result<Self, Error> {
        let host = host.into();
        let (sdk_config, region) = resolve_region(&host, region, sdk_config).await?;
        Ok(Self {
            sdk_config,
            region,
            host,
            action,
            lifetime,
        })
    }

    /// What the tokens are for.
    #[must_use]
    pub fn action(&self) -> DsqlAction {
        self.action
    }

    /// The region tokens are signed for.
    #[must_use]
    pub fn region(&self) -> &str {
        self.region.as_ref()
    }

    /// The cluster endpoint tokens name.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Signs a fresh token: resolves the credentials (no network call unless they must be fetched or renewed) and
    /// signs locally.
    pub async fn sign(&self) -> Result<IamToken, CredentialError> {
        let issued_at = start_of_second();
        let fail = |source| {
            CredentialError::new(
                format!(
                    "cannot sign a DSQL {} token for {} (AWS credentials come from the SDK's default chain: \
                     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, SSO, web identity, ECS or EC2 \
                     instance roles)",
                    self.action.as_str(),
                    self.host
                ),
                source,
            )
        };
        let (credentials, credentials_expire_in) = signing_credentials(&self.sdk_config).await.map_err(fail)?;
        let config = TokenConfig::builder()
            .hostname(self.host.clone())
            .region(self.region.clone())
            .expires_in(self.lifetime.get().as_secs())
            .credentials(credentials)
            .build()
            .map_err(fail)?;
        let generator = AuthTokenGenerator::new(config);
        let token = match self.action {
            DsqlAction::DbConnectAdmin => generator.db_connect_admin_auth_token(&self.sdk_config).await,
            DsqlAction::DbConnect => generator.db_connect_auth_token(&self.sdk_config).await,
        }
        .map_err(fail)?;
        Ok(capped_token(
            token.as_str(),
            issued_at,
            self.lifetime,
            credentials_expire_in,
        ))
    }
}

impl fmt::Display for DsqlTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DSQL {} tokens for {}", self.action.as_str(), self.host)
    }
}

impl CredentialSource for DsqlTokenSigner {
    fn fetch(&self) -> CredentialFuture<'_> {
        Box::pin(DsqlTokenSigner::sign(self))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use aws_credential_types::Credentials;
    use aws_types::sdk_config::TimeSource;
    use secrecy::ExposeSecret;

    use super::*;

    /// Tokens made once by an independent signer, botocore 1.44.18, in a throwaway virtualenv
    /// (`python3 -m venv /tmp/v && /tmp/v/bin/pip install botocore`), with `botocore.auth.get_current_datetime`
    /// patched to return 2024-08-26T22:00:00Z, from a `dsql` client created with the key, secret and session token
    /// given here: `generate_db_connect_auth_token(HOST, REGION)`, `generate_db_connect_admin_auth_token(HOST,
    /// REGION)` and `generate_db_connect_admin_auth_token(HOST, REGION, ExpiresIn=600)`. The emulator's verifier
    /// checks the same tokens (`rds_iam_emulator::sigv4::fixtures`).
    const BOTOCORE_DB_CONNECT: &str = "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws/?Action=DbConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=cae25debf6f82e9570947a251e6065cd69a4e18dbcdb9c839ea0354a60ff41c2";
    const BOTOCORE_DB_CONNECT_ADMIN: &str = "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws/?Action=DbConnectAdmin&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=c3822fb46a78cc35e4059947ac216fa476c7e7f992dd736df907aa5405f09f41";
    const BOTOCORE_SESSION_ADMIN: &str = "iqabtu3jw4ggbhnqmbynnnebve.dsql.eu-west-3.on.aws/?Action=DbConnectAdmin&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240826%2Feu-west-3%2Fdsql%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaDFAKE%2FTOKEN%2Bwith%2Fslashes%3D&X-Amz-Signature=3907729ccf9bff60d208fb415f56c87281917a5617c2627fc7114cda008b8081";

    /// The clock botocore's was frozen at.
    #[derive(Debug)]
    struct Frozen;

    impl TimeSource for Frozen {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(1_724_709_600)
        }
    }

    fn frozen_config(key: &str, secret: &str, session_token: Option<&str>) -> SdkConfig {
        SdkConfig::builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                Credentials::new(key, secret, session_token.map(str::to_owned), None, "fixture"),
            ))
            .time_source(Frozen)
            .build()
    }

    async fn sign(host: &str, user: &str, lifetime: u64, config: SdkConfig) -> String {
        let lifetime = TokenLifetime::new(Duration::from_secs(lifetime)).expect("a lifetime");
        let signer = DsqlTokenSigner::new(host, DsqlAction::for_role(user), None, lifetime, Some(config))
            .await
            .expect("the region is in the host name");
        signer.sign().await.expect("signed").secret().expose_secret().to_owned()
    }

    #[tokio::test]
    async fn tokens_match_botocore_byte_for_byte_and_the_action_follows_the_user() {
        let host = "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws";
        let config = || frozen_config("akid", "secret", None);
        assert_eq!(sign(host, "app_role", 900, config()).await, BOTOCORE_DB_CONNECT);
        assert_eq!(
            sign(host, DSQL_ADMIN_USER, 900, config()).await,
            BOTOCORE_DB_CONNECT_ADMIN
        );

        let session = frozen_config(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("FwoGZXIvYXdzEJr//////////wEaDFAKE/TOKEN+with/slashes="),
        );
        // With a session token the two signers agree on every parameter and on the signature, but not on the order:
        // botocore sorts X-Amz-Security-Token in among the others, the Rust SDK appends it after the signature.
        // Servers read the query by name, so the order is no part of the token's meaning.
        let ours = sign(
            "iqabtu3jw4ggbhnqmbynnnebve.dsql.eu-west-3.on.aws",
            "admin",
            600,
            session,
        )
        .await;
        let parameters = |token: &str| {
            let mut parameters: Vec<String> = token.split(['?', '&']).map(str::to_owned).collect();
            parameters.sort();
            parameters
        };
        assert_eq!(parameters(&ours), parameters(BOTOCORE_SESSION_ADMIN));
        assert_eq!(ours.len(), BOTOCORE_SESSION_ADMIN.len());
    }

    #[tokio::test]
    async fn without_a_region_anywhere_the_signer_refuses_to_guess() {
        let config = frozen_config("akid", "secret", None);
        let error = DsqlTokenSigner::new(
            "127.0.0.1",
            DsqlAction::DbConnect,
            None,
            TokenLifetime::MAX,
            Some(config),
        )
        .await
        .expect_err("no region");
        assert!(matches!(error, Error::NoRegion), "{error}");
    }

    #[test]
    fn cluster_ids_are_host_labels() {
        let id: DsqlClusterId = "kaabtu3ivgyiv7yeqqqzxcvfne".parse().expect("an id");
        assert_eq!(id.host("eu-west-1"), "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.eu-west-1.on.aws");
        for bad in ["", "Kaab", "a.b", "with-dash", "x y", &"a".repeat(64)] {
            assert!(bad.parse::<DsqlClusterId>().is_err(), "{bad:?}");
        }
    }
}
