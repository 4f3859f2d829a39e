//! Verification of RDS IAM authentication tokens, written from the AWS Signature Version 4 specification for
//! query-string (presigned) requests. A token is the presigned URL of `GET https://host:port/?Action=connect&DBUser=u`
//! without its scheme, signed for the service `rds-db`; RDS recomputes the signature with the secret key of the access
//! key it names, and so does this module.
//!
//! Aurora DSQL tokens ([`TokenKind::Dsql`]) are the same kind of URL with three differences: the service is `dsql`,
//! the host has no port, and there is no user in it: the action is `DbConnectAdmin` for the role `admin` and
//! `DbConnect` for any other, and they may be signed to live up to a week.

use std::fmt::Write as _;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::credentials::{CredentialStore, TemporaryCredentials};
use crate::policy::Authorization;
use crate::time;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// RDS tokens live at most 15 minutes, whatever `X-Amz-Expires` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// DSQL accepts an `X-Amz-Expires` of up to a week.
pub const MAX_DSQL_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which service's tokens a verifier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// RDS and Aurora: service `rds-db`, `Action=connect`, the user in `DBUser`, signed for `host:port`.
    Rds,
    /// Aurora DSQL: service `dsql`, `Action=DbConnectAdmin` for `admin` and `DbConnect` for other roles, no user,
    /// signed for the host alone.
    Dsql,
}

impl TokenKind {
    fn service(self) -> &'static str {
        match self {
            Self::Rds => "rds-db",
            Self::Dsql => "dsql",
        }
    }

    /// The action a token for `user` must name.
    fn action_for(self, user: &str) -> &'static str {
        match self {
            Self::Rds => "connect",
            Self::Dsql if user == "admin" => "DbConnectAdmin",
            Self::Dsql => "DbConnect",
        }
    }

    fn max_lifetime(self) -> Duration {
        match self {
            Self::Rds => MAX_TOKEN_LIFETIME,
            Self::Dsql => MAX_DSQL_TOKEN_LIFETIME,
        }
    }
}
/// How far a client's clock may run ahead of ours, as AWS allows.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// RFC 3986 unreserved characters stay as they are; SigV4 encodes everything else.
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why a token was refused. The texts name what was wrong, never the token or its signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("Action is `{found}`, not `{expected}`")]
    WrongAction { found: String, expected: &'static str },
    #[error("token is for database user `{token_user}`, but the connection is for `{startup_user}`")]
    WrongUser { token_user: String, startup_user: String },
    #[error("token is signed for `{signed}`, but this endpoint is `{expected}`")]
    WrongHost { signed: String, expected: String },
    #[error("token is signed for region `{signed}`, but this endpoint is in `{expected}`")]
    WrongRegion { signed: String, expected: String },
    #[error("token is signed for service `{found}`, not `{expected}`")]
    WrongService { found: String, expected: &'static str },
    #[error("token expired {0} s ago")]
    Expired(u64),
    #[error("token is dated {0} s in the future, beyond the allowed clock skew")]
    NotYetValid(u64),
    #[error("access key `{0}` is unknown")]
    UnknownAccessKey(String),
    #[error("signature does not match (wrong secret key, or the token was altered)")]
    BadSignature,
    #[error("access key `{0}` is temporary, and the token does not carry its session token")]
    WrongSessionToken(String),
    #[error("access key `{0}` is a long-term key, and the token carries a session token")]
    UnexpectedSessionToken(String),
    #[error("access key `{0}` belongs to temporary credentials that have expired")]
    CredentialsExpired(String),
    #[error("no policy of `{principal}` allows rds-db:connect on `{resource}`")]
    NotAuthorized { principal: String, resource: String },
}

/// What a valid token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub access_key_id: String,
    pub user: String,
    pub expires_at: SystemTime,
    pub has_session_token: bool,
}

/// Checks tokens for one endpoint in one region.
#[derive(Debug, Clone)]
pub struct Verifier {
    credentials: Arc<RwLock<CredentialStore>>,
    region: String,
    /// The `host:port` (RDS) or host (DSQL) tokens must be signed for.
    endpoint: String,
    kind: TokenKind,
    max_token_age: Duration,
    /// When set, a valid token is also checked against its principal's policies, as RDS asks IAM.
    authorization: Option<Arc<Authorization>>,
}

impl Verifier {
    /// `endpoint` is the `host:port` tokens must be signed for; `max_token_age` shortens tokens' lives below
    /// 15 minutes (for rotation tests).
    #[must_use]
    pub fn new(credentials: CredentialStore, region: &str, endpoint: &str, max_token_age: Duration) -> Self {
        Self {
            credentials: Arc::new(RwLock::new(credentials)),
            region: region.to_owned(),
            endpoint: endpoint.to_owned(),
            kind: TokenKind::Rds,
            max_token_age,
            authorization: None,
        }
    }

    /// The same verifier for Aurora DSQL tokens; `endpoint` is then the host alone.
    #[must_use]
    pub fn for_dsql(self) -> Self {
        Self {
            kind: TokenKind::Dsql,
            ..self
        }
    }

    #[must_use]
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// Also requires the policies of a token's principal to allow `rds-db:connect` as its user.
    #[must_use]
    pub fn authorizing(self, authorization: Authorization) -> Self {
        Self {
            authorization: Some(Arc::new(authorization)),
            ..self
        }
    }

    /// The same verifier for another endpoint: the credentials it knows and learns, the region and the policies
    /// are shared.
    #[must_use]
    pub fn for_endpoint(&self, endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            ..self.clone()
        }
    }

    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Accepts tokens signed with these temporary credentials until they expire, unless their key is already known
    /// otherwise (see [`CredentialStore::learn`]); true when it is known as given.
    pub(crate) fn learn(&self, credentials: TemporaryCredentials) -> bool {
        self.credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .learn(credentials, SystemTime::now())
    }

    fn store(&self) -> std::sync::RwLockReadGuard<'_, CredentialStore> {
        self.credentials.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Verifies `token` as the password of `startup_user`, at time `now`.
    pub fn verify(&self, token: &str, startup_user: &str, now: SystemTime) -> Result<VerifiedToken, Rejection> {
        let token = ParsedToken::parse(token)?;

        let action = token.param("Action")?;
        let expected_action = self.kind.action_for(startup_user);
        if action != expected_action {
            return Err(Rejection::WrongAction {
                found: action.to_owned(),
                expected: expected_action,
            });
        }
        let token_user = match self.kind {
            TokenKind::Rds => token.param("DBUser")?,
            // The action already says which kind of role the token is for; DSQL tokens name none.
            TokenKind::Dsql => startup_user,
        };
        if token_user != startup_user {
            return Err(Rejection::WrongUser {
                token_user: token_user.to_owned(),
                startup_user: startup_user.to_owned(),
            });
        }
        if !token.signed_host.eq_ignore_ascii_case(&self.endpoint) {
            return Err(Rejection::WrongHost {
                signed: token.signed_host.to_owned(),
                expected: self.endpoint.clone(),
            });
        }
        let algorithm = token.param("X-Amz-Algorithm")?;
        if algorithm != ALGORITHM {
            return Err(Rejection::Malformed(format!(
                "X-Amz-Algorithm `{algorithm}` is not {ALGORITHM}"
            )));
        }
        if token.param("X-Amz-SignedHeaders")? != "host" {
            return Err(Rejection::Malformed("X-Amz-SignedHeaders must be `host`".to_owned()));
        }

        let credential = token.param("X-Amz-Credential")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, scope_date, region, service, terminator] = scope[..] else {
            return Err(Rejection::Malformed(
                "X-Amz-Credential is not key/date/region/service/aws4_request".to_owned(),
            ));
        };
        if terminator != "aws4_request" {
            return Err(Rejection::Malformed(
                "X-Amz-Credential does not end in aws4_request".to_owned(),
            ));
        }
        if service != self.kind.service() {
            return Err(Rejection::WrongService {
                found: service.to_owned(),
                expected: self.kind.service(),
            });
        }
        if region != self.region {
            return Err(Rejection::WrongRegion {
                signed: region.to_owned(),
                expected: self.region.clone(),
            });
        }

        let amz_date = token.param("X-Amz-Date")?;
        let signed_at = time::parse_basic(amz_date)
            .ok_or_else(|| Rejection::Malformed(format!("X-Amz-Date `{amz_date}` is not YYYYMMDDTHHMMSSZ")))?;
        if !amz_date.starts_with(scope_date) || scope_date.len() != 8 {
            return Err(Rejection::Malformed(
                "X-Amz-Date and the credential scope's date differ".to_owned(),
            ));
        }
        let expires_in: u64 = token
            .param("X-Amz-Expires")?
            .parse()
            .map_err(|_| Rejection::Malformed("X-Amz-Expires is not a number of seconds".to_owned()))?;
        let max_lifetime = self.kind.max_lifetime().as_secs();
        if expires_in == 0 || expires_in > max_lifetime {
            return Err(Rejection::Malformed(format!(
                "X-Amz-Expires is {expires_in}; the server accepts 1 to {max_lifetime}"
            )));
        }
        let expires_at = signed_at + Duration::from_secs(expires_in).min(self.max_token_age);
        if let Ok(late) = now.duration_since(expires_at)
            && !late.is_zero()
        {
            return Err(Rejection::Expired(late.as_secs().max(1)));
        }
        if let Ok(early) = signed_at.duration_since(now)
            && early > CLOCK_SKEW
        {
            return Err(Rejection::NotYetValid(early.as_secs()));
        }

        let credentials = self.store();
        let secret = credentials
            .secret_for(access_key_id)
            .ok_or_else(|| Rejection::UnknownAccessKey(access_key_id.to_owned()))?;
        let signature = hex::decode(token.param("X-Amz-Signature")?)
            .map_err(|_| Rejection::Malformed("X-Amz-Signature is not hexadecimal".to_owned()))?;
        // verify_slice compares in constant time.
        signature_mac(
            secret,
            amz_date,
            scope_date,
            region,
            service,
            &token.canonical_request(),
        )
        .verify_slice(&signature)
        .map_err(|_| Rejection::BadSignature)?;
        let session_token = token.param("X-Amz-Security-Token").ok();
        match (credentials.session_token_for(access_key_id), session_token) {
            (Some(expected), presented) if presented != Some(expected) => {
                return Err(Rejection::WrongSessionToken(access_key_id.to_owned()));
            }
            // A long-term key signs without one: a token that carries one is not what its key says it is.
            (None, Some(_)) => return Err(Rejection::UnexpectedSessionToken(access_key_id.to_owned())),
            _ => {}
        }
        // A token signed with temporary credentials works no longer than they do.
        let expires_at = match credentials.expires_at(access_key_id) {
            Some(credentials_expire) if credentials_expire <= now => {
                return Err(Rejection::CredentialsExpired(access_key_id.to_owned()));
            }
            Some(credentials_expire) => expires_at.min(credentials_expire),
            None => expires_at,
        };
        if let Some(authorization) = &self.authorization {
            let resource = authorization.dbuser_arn(&self.region, token_user);
            let role_arn = credentials.role_arn_for(access_key_id);
            if !authorization.allows([Some(access_key_id), role_arn].into_iter().flatten(), &resource) {
                return Err(Rejection::NotAuthorized {
                    principal: role_arn.unwrap_or(access_key_id).to_owned(),
                    resource,
                });
            }
        }

        Ok(VerifiedToken {
            access_key_id: access_key_id.to_owned(),
            user: token_user.to_owned(),
            expires_at,
            has_session_token: session_token.is_some(),
        })
    }
}

/// The access key a token claims to be signed with, before anything is verified.
#[must_use]
pub fn access_key_id(token: &str) -> Option<String> {
    let token = ParsedToken::parse(token).ok()?;
    let credential = token.param("X-Amz-Credential").ok()?;
    credential.split('/').next().map(str::to_owned)
}

/// A token split into the host it names and its decoded query parameters.
struct ParsedToken<'a> {
    signed_host: &'a str,
    params: Vec<(String, String)>,
}

impl<'a> ParsedToken<'a> {
    fn parse(token: &'a str) -> Result<Self, Rejection> {
        let (signed_host, query) = token
            .split_once("/?")
            .ok_or_else(|| Rejection::Malformed("expected host:port/?query".to_owned()))?;
        let mut params = Vec::new();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |part: &str| {
                percent_decode_str(part)
                    .decode_utf8()
                    .map(|decoded| decoded.into_owned())
                    .map_err(|_| Rejection::Malformed("query parameter is not UTF-8".to_owned()))
            };
            let (name, value) = (decode(name)?, decode(value)?);
            if params.iter().any(|(existing, _)| existing == &name) {
                return Err(Rejection::Malformed(format!("parameter `{name}` appears twice")));
            }
            params.push((name, value));
        }
        Ok(Self { signed_host, params })
    }

    fn param(&self, name: &str) -> Result<&str, Rejection> {
        self.params
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.as_str())
            .ok_or_else(|| Rejection::Malformed(format!("missing {name}")))
    }

    /// The SigV4 canonical request: method, path, sorted and re-encoded query without the signature, the one signed
    /// header, and the hash of the empty payload.
    fn canonical_request(&self) -> String {
        let mut query: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(name, _)| name != "X-Amz-Signature")
            .map(|(name, value)| {
                (
                    utf8_percent_encode(name, SIGV4_ENCODE).to_string(),
                    utf8_percent_encode(value, SIGV4_ENCODE).to_string(),
                )
            })
            .collect();
        query.sort();
        let mut canonical = String::from("GET\n/\n");
        for (index, (name, value)) in query.iter().enumerate() {
            if index > 0 {
                canonical.push('&');
            }
            let _ = write!(canonical, "{name}={value}");
        }
        let _ = write!(
            canonical,
            "\nhost:{}\n\nhost\n{}",
            self.signed_host.trim(),
            hex::encode(Sha256::digest(b""))
        );
        canonical
    }
}

/// SigV4's MAC of the string to sign under the signing key derived from `secret`, ready to be compared with a
/// signature.
fn signature_mac(
    secret: &str,
    amz_date: &str,
    scope_date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> Hmac<Sha256> {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope_date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical_request))
    );
    let signing_key = [scope_date, region, service, "aws4_request"]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac_sha256(&key, part.as_bytes())
        });
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&signing_key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any size"));
    mac.update(string_to_sign.as_bytes());
    mac
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any size"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Tokens made by an independent signer, for the tests of every module that verifies tokens.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Made once with botocore 1.x (`generate_db_auth_token`, time frozen at 2024-08-26T22:00:00Z), an independent
    /// implementation of SigV4: our verifier must accept its tokens byte for byte. Signed for
    /// `prod-instance.us-east-1.rds.amazonaws.com:3306` and user `peccy` with key `akid`, secret `secret`.
    pub(crate) const BOTOCORE_TOKEN: &str = "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89";

    /// Also botocore, with a session token and a user name that needs percent-encoding: for
    /// `tasks.cluster-abc.eu-west-3.rds.amazonaws.com:5432`, user `db user+x@corp`, key `AKIDEXAMPLE`, secret
    /// [`SESSION_SECRET`], session token [`SESSION_TOKEN`].
    pub(crate) const BOTOCORE_SESSION_TOKEN: &str = "tasks.cluster-abc.eu-west-3.rds.amazonaws.com:5432/?Action=connect&DBUser=db%20user%2Bx%40corp&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240826%2Feu-west-3%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaDFAKE%2FTOKEN%2Bwith%2Fslashes%3D&X-Amz-Signature=eff84d6423566e6fb89c91accde5807aa7f6d62fa5ada67754b1bc82eed8a4eb";
    pub(crate) const SESSION_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    pub(crate) const SESSION_TOKEN: &str = "FwoGZXIvYXdzEJr//////////wEaDFAKE/TOKEN+with/slashes=";

    /// Aurora DSQL tokens, made once with botocore 1.44.18 in a throwaway virtualenv, time frozen at
    /// 2024-08-26T22:00:00Z (`botocore.auth.get_current_datetime` patched): `generate_db_connect_auth_token` and
    /// `generate_db_connect_admin_auth_token` of a `dsql` client for `kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws`
    /// with key `akid`, secret `secret`; and `generate_db_connect_admin_auth_token(..., ExpiresIn=600)` for
    /// `iqabtu3jw4ggbhnqmbynnnebve.dsql.eu-west-3.on.aws` with key `AKIDEXAMPLE`, [`SESSION_SECRET`] and
    /// [`SESSION_TOKEN`]. rds-iam's `DsqlTokenSigner` signs the same tokens (its tests compare them).
    pub(crate) const BOTOCORE_DSQL_TOKEN: &str = "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws/?Action=DbConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=cae25debf6f82e9570947a251e6065cd69a4e18dbcdb9c839ea0354a60ff41c2";
    pub(crate) const BOTOCORE_DSQL_ADMIN_TOKEN: &str = "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws/?Action=DbConnectAdmin&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=c3822fb46a78cc35e4059947ac216fa476c7e7f992dd736df907aa5405f09f41";
    pub(crate) const BOTOCORE_DSQL_SESSION_ADMIN_TOKEN: &str = "iqabtu3jw4ggbhnqmbynnnebve.dsql.eu-west-3.on.aws/?Action=DbConnectAdmin&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240826%2Feu-west-3%2Fdsql%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaDFAKE%2FTOKEN%2Bwith%2Fslashes%3D&X-Amz-Signature=3907729ccf9bff60d208fb415f56c87281917a5617c2627fc7114cda008b8081";

    /// When all these tokens were signed.
    pub(crate) fn signed_at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_724_709_600)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn verifier(region: &str, endpoint: &str) -> Verifier {
        let credentials = CredentialStore::parse(&format!(
            "[default]\naws_access_key_id = akid\naws_secret_access_key = secret\n\n\
             [other]\naws_access_key_id=AKIDEXAMPLE\naws_secret_access_key={SESSION_SECRET}\n\
             aws_session_token={SESSION_TOKEN}\n",
        ))
        .expect("INI");
        Verifier::new(credentials, region, endpoint, MAX_TOKEN_LIFETIME)
    }

    fn us_east() -> Verifier {
        verifier("us-east-1", "prod-instance.us-east-1.rds.amazonaws.com:3306")
    }

    fn dsql(region: &str, host: &str) -> Verifier {
        verifier(region, host).for_dsql()
    }

    #[test]
    fn dsql_tokens_from_an_independent_signer_are_accepted_for_the_role_their_action_names() {
        let cluster = dsql("us-east-1", "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws");
        let verified = cluster
            .verify(BOTOCORE_DSQL_TOKEN, "app_role", signed_at() + Duration::from_secs(60))
            .expect("a DbConnect token for a custom role");
        assert_eq!(
            (verified.access_key_id.as_str(), verified.user.as_str()),
            ("akid", "app_role")
        );
        assert!(cluster.verify(BOTOCORE_DSQL_ADMIN_TOKEN, "admin", signed_at()).is_ok());

        // The action must match the role: an admin token does not log in a custom role, nor the other way round.
        assert_eq!(
            cluster.verify(BOTOCORE_DSQL_ADMIN_TOKEN, "app_role", signed_at()),
            Err(Rejection::WrongAction {
                found: "DbConnectAdmin".to_owned(),
                expected: "DbConnect"
            })
        );
        assert!(matches!(
            cluster.verify(BOTOCORE_DSQL_TOKEN, "admin", signed_at()),
            Err(Rejection::WrongAction { .. })
        ));

        let with_session = dsql("eu-west-3", "iqabtu3jw4ggbhnqmbynnnebve.dsql.eu-west-3.on.aws");
        let verified = with_session
            .verify(
                BOTOCORE_DSQL_SESSION_ADMIN_TOKEN,
                "admin",
                signed_at() + Duration::from_secs(600),
            )
            .expect("valid for its 600 s");
        assert!(verified.has_session_token);
        assert_eq!(
            with_session.verify(
                BOTOCORE_DSQL_SESSION_ADMIN_TOKEN,
                "admin",
                signed_at() + Duration::from_secs(601)
            ),
            Err(Rejection::Expired(1))
        );
    }

    #[test]
    fn dsql_tokens_name_the_host_without_a_port_and_the_dsql_service() {
        let with_port = dsql("us-east-1", "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws:5432");
        assert!(matches!(
            with_port.verify(BOTOCORE_DSQL_TOKEN, "app_role", signed_at()),
            Err(Rejection::WrongHost { .. })
        ));
        // An RDS verifier refuses a DSQL token, and a DSQL verifier an RDS token, each for its service or action.
        let rds = verifier("us-east-1", "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws");
        assert!(matches!(
            rds.verify(BOTOCORE_DSQL_TOKEN, "app_role", signed_at()),
            Err(Rejection::WrongAction { .. })
        ));
        let as_dsql = dsql("us-east-1", "prod-instance.us-east-1.rds.amazonaws.com:3306");
        assert!(matches!(
            as_dsql.verify(BOTOCORE_TOKEN, "peccy", signed_at()),
            Err(Rejection::WrongAction { .. })
        ));
        let tampered = BOTOCORE_DSQL_TOKEN.replace("Action=DbConnect&", "Action=DbConnectAdmin&");
        assert_eq!(
            dsql("us-east-1", "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws").verify(
                &tampered,
                "admin",
                signed_at()
            ),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn a_token_from_an_independent_signer_is_accepted() {
        let verified = us_east()
            .verify(BOTOCORE_TOKEN, "peccy", signed_at() + Duration::from_secs(60))
            .expect("valid");
        assert_eq!(verified.access_key_id, "akid");
        assert_eq!(verified.expires_at, signed_at() + MAX_TOKEN_LIFETIME);
        assert!(!verified.has_session_token);
    }

    #[test]
    fn session_tokens_and_encoded_user_names_are_verified_decoded() {
        let verified = verifier("eu-west-3", "tasks.cluster-abc.eu-west-3.rds.amazonaws.com:5432")
            .verify(BOTOCORE_SESSION_TOKEN, "db user+x@corp", signed_at())
            .expect("valid");
        assert!(verified.has_session_token);
        assert_eq!(verified.user, "db user+x@corp");
    }

    #[test]
    fn temporary_credentials_are_bound_to_their_session_token() {
        let bound_to = |session_token: &str| {
            let mut credentials = CredentialStore::default();
            credentials.insert(
                "AKIDEXAMPLE".to_owned(),
                SESSION_SECRET.to_owned(),
                Some(session_token.to_owned()),
            );
            Verifier::new(
                credentials,
                "eu-west-3",
                "tasks.cluster-abc.eu-west-3.rds.amazonaws.com:5432",
                MAX_TOKEN_LIFETIME,
            )
        };
        assert_eq!(access_key_id(BOTOCORE_SESSION_TOKEN).as_deref(), Some("AKIDEXAMPLE"));

        assert_eq!(
            bound_to("another-session").verify(BOTOCORE_SESSION_TOKEN, "db user+x@corp", signed_at()),
            Err(Rejection::WrongSessionToken("AKIDEXAMPLE".to_owned()))
        );
        assert!(
            bound_to(SESSION_TOKEN)
                .verify(BOTOCORE_SESSION_TOKEN, "db user+x@corp", signed_at())
                .is_ok()
        );
    }

    #[test]
    fn a_long_term_key_that_presents_a_session_token_is_refused() {
        let mut credentials = CredentialStore::default();
        credentials.insert("AKIDEXAMPLE".to_owned(), SESSION_SECRET.to_owned(), None);
        let long_term = Verifier::new(
            credentials,
            "eu-west-3",
            "tasks.cluster-abc.eu-west-3.rds.amazonaws.com:5432",
            MAX_TOKEN_LIFETIME,
        );

        assert_eq!(
            long_term.verify(BOTOCORE_SESSION_TOKEN, "db user+x@corp", signed_at()),
            Err(Rejection::UnexpectedSessionToken("AKIDEXAMPLE".to_owned()))
        );
    }

    /// A token like [`BOTOCORE_TOKEN`] but dated `amz_date`, for dates no real signer would write.
    fn token_dated(amz_date: &str) -> String {
        let scope_date = &amz_date[..8];
        let unsigned = format!(
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy&\
             X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F{scope_date}%2Fus-east-1%2Frds-db%2Faws4_request&\
             X-Amz-Date={amz_date}&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
        );
        let canonical_request = ParsedToken::parse(&unsigned).expect("a token").canonical_request();
        let signature = signature_mac(
            "secret",
            amz_date,
            scope_date,
            "us-east-1",
            "rds-db",
            &canonical_request,
        )
        .finalize();
        format!("{unsigned}&X-Amz-Signature={}", hex::encode(signature.into_bytes()))
    }

    #[test]
    fn impossible_dates_are_refused_however_well_signed() {
        assert_eq!(
            token_dated("20240826T220000Z"),
            BOTOCORE_TOKEN,
            "the test signer signs as botocore"
        );
        let leap_day = time::parse_basic("20240229T120000Z").expect("a leap day");
        assert!(
            us_east()
                .verify(&token_dated("20240229T120000Z"), "peccy", leap_day)
                .is_ok()
        );

        // Each refused at the instant it would otherwise roll over to.
        for (impossible, rolled_over) in [
            ("20230229T120000Z", "20230301T120000Z"),
            ("20240230T120000Z", "20240301T120000Z"),
            ("20240431T120000Z", "20240501T120000Z"),
            ("21000229T120000Z", "21000301T120000Z"),
        ] {
            let now = time::parse_basic(rolled_over).expect("a real date");
            let rejection = us_east()
                .verify(&token_dated(impossible), "peccy", now)
                .expect_err(impossible);
            assert!(
                matches!(rejection, Rejection::Malformed(_)),
                "{impossible}: {rejection}"
            );
        }
    }

    #[test]
    fn with_policies_a_token_must_also_be_authorised_for_its_user() {
        let allowing = |principal: &str, resource: &str| {
            let file = format!(
                r#"{{"{principal}": {{"Statement": {{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "{resource}"}}}}}}"#
            );
            Authorization::parse(&file, "123456789012".to_owned(), "db-ABC".to_owned()).expect("a policy file")
        };
        let peccy = "arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ABC/peccy";

        let allowed = us_east().authorizing(allowing("akid", peccy));
        assert!(allowed.verify(BOTOCORE_TOKEN, "peccy", signed_at()).is_ok());
        let for_someone_else = us_east().authorizing(allowing("akid", &peccy.replace("peccy", "root")));
        assert_eq!(
            for_someone_else.verify(BOTOCORE_TOKEN, "peccy", signed_at()),
            Err(Rejection::NotAuthorized {
                principal: "akid".to_owned(),
                resource: peccy.to_owned()
            })
        );

        // Temporary credentials are their role's.
        let role = "arn:aws:iam::123456789012:role/db";
        let role_may = |user: &str| {
            let cluster = Verifier::new(
                CredentialStore::default(),
                "eu-west-3",
                "tasks.cluster-abc.eu-west-3.rds.amazonaws.com:5432",
                MAX_TOKEN_LIFETIME,
            )
            .authorizing(allowing(
                role,
                &format!("arn:aws:rds-db:eu-west-3:123456789012:dbuser:db-ABC/{user}"),
            ));
            assert!(cluster.learn(TemporaryCredentials {
                access_key_id: "AKIDEXAMPLE".to_owned(),
                secret_access_key: SESSION_SECRET.to_owned(),
                session_token: SESSION_TOKEN.to_owned(),
                expires_at: SystemTime::now() + Duration::from_secs(3600),
                role_arn: Some(role.to_owned()),
            }));
            cluster.verify(BOTOCORE_SESSION_TOKEN, "db user+x@corp", signed_at())
        };
        assert!(role_may("db user+x@corp").is_ok());
        assert!(role_may("db*@corp").is_ok(), "IAM's wildcards");
        assert!(matches!(role_may("postgres"), Err(Rejection::NotAuthorized { principal, .. }) if principal == role));
    }

    #[test]
    fn learning_never_changes_a_known_key() {
        let verifier = us_east();
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let learn = |key: &str, secret: &str, token: &str| {
            verifier.learn(TemporaryCredentials {
                access_key_id: key.to_owned(),
                secret_access_key: secret.to_owned(),
                session_token: token.to_owned(),
                expires_at: in_an_hour,
                role_arn: None,
            })
        };

        assert!(
            !learn("akid", "attacker's secret", "t"),
            "a configured key keeps its secret"
        );
        assert!(
            !learn("akid", "secret", "t"),
            "a long-term key does not become a temporary one"
        );
        assert!(learn("ASIANEW", "s1", "t1"));
        assert!(learn("ASIANEW", "s1", "t1"), "the same credentials again");
        assert!(!learn("ASIANEW", "s2", "t1"));
        assert!(!learn("ASIANEW", "s1", "t2"));

        assert!(verifier.verify(BOTOCORE_TOKEN, "peccy", signed_at()).is_ok());
        assert_eq!(verifier.store().secret_for("ASIANEW"), Some("s1"));
        assert_eq!(verifier.store().session_token_for("ASIANEW"), Some("t1"));
    }

    #[test]
    fn any_altered_byte_breaks_the_signature() {
        let tampered = BOTOCORE_TOKEN.replace("X-Amz-Expires=900", "X-Amz-Expires=899");
        assert_eq!(
            us_east().verify(&tampered, "peccy", signed_at()),
            Err(Rejection::BadSignature)
        );
        let tampered = BOTOCORE_TOKEN.replace("dd0cba84", "dd0cba85");
        assert_eq!(
            us_east().verify(&tampered, "peccy", signed_at()),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn a_wrong_secret_is_a_bad_signature() {
        let credentials =
            CredentialStore::parse("[default]\naws_access_key_id=akid\naws_secret_access_key=other\n").expect("INI");
        let verifier = Verifier::new(
            credentials,
            "us-east-1",
            "prod-instance.us-east-1.rds.amazonaws.com:3306",
            MAX_TOKEN_LIFETIME,
        );
        assert_eq!(
            verifier.verify(BOTOCORE_TOKEN, "peccy", signed_at()),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn the_token_must_name_this_user_host_and_region() {
        assert!(matches!(
            us_east().verify(BOTOCORE_TOKEN, "root", signed_at()),
            Err(Rejection::WrongUser { .. })
        ));
        let other_host = verifier("us-east-1", "other.us-east-1.rds.amazonaws.com:3306");
        assert!(matches!(
            other_host.verify(BOTOCORE_TOKEN, "peccy", signed_at()),
            Err(Rejection::WrongHost { .. })
        ));
        let other_port = verifier("us-east-1", "prod-instance.us-east-1.rds.amazonaws.com:5432");
        assert!(matches!(
            other_port.verify(BOTOCORE_TOKEN, "peccy", signed_at()),
            Err(Rejection::WrongHost { .. })
        ));
        let other_region = verifier("eu-west-1", "prod-instance.us-east-1.rds.amazonaws.com:3306");
        assert!(matches!(
            other_region.verify(BOTOCORE_TOKEN, "peccy", signed_at()),
            Err(Rejection::WrongRegion { .. })
        ));
    }

    #[test]
    fn tokens_expire_after_their_lifetime_or_the_configured_maximum_age() {
        let after = |seconds| signed_at() + Duration::from_secs(seconds);
        assert!(us_east().verify(BOTOCORE_TOKEN, "peccy", after(900)).is_ok());
        assert_eq!(
            us_east().verify(BOTOCORE_TOKEN, "peccy", after(901)),
            Err(Rejection::Expired(1))
        );
        let strict = Verifier::new(
            us_east().store().clone(),
            "us-east-1",
            "prod-instance.us-east-1.rds.amazonaws.com:3306",
            Duration::from_secs(5),
        );
        assert!(strict.verify(BOTOCORE_TOKEN, "peccy", after(5)).is_ok());
        assert_eq!(
            strict.verify(BOTOCORE_TOKEN, "peccy", after(6)),
            Err(Rejection::Expired(1))
        );
    }

    #[test]
    fn tokens_from_the_future_are_refused_beyond_the_clock_skew() {
        let before = |seconds| signed_at() - Duration::from_secs(seconds);
        assert!(
            us_east()
                .verify(BOTOCORE_TOKEN, "peccy", before(CLOCK_SKEW.as_secs()))
                .is_ok()
        );
        assert!(matches!(
            us_east().verify(BOTOCORE_TOKEN, "peccy", before(CLOCK_SKEW.as_secs() + 1)),
            Err(Rejection::NotYetValid(_))
        ));
    }

    #[test]
    fn unknown_keys_and_garbage_are_refused_without_echoing_the_token() {
        let unknown = BOTOCORE_TOKEN.replace("Credential=akid", "Credential=nobody");
        assert_eq!(
            us_east().verify(&unknown, "peccy", signed_at()),
            Err(Rejection::UnknownAccessKey("nobody".to_owned()))
        );
        for garbage in ["", "password", "host:1/?", "host:1/?Action=connect&Action=connect"] {
            let rejection = us_east().verify(garbage, "peccy", signed_at()).expect_err("refused");
            assert!(!rejection.to_string().contains("X-Amz-Signature="), "{rejection}");
        }
        let rejection = us_east()
            .verify(BOTOCORE_TOKEN, "root", signed_at())
            .expect_err("refused");
        assert!(!rejection.to_string().contains("dd0cba84"), "{rejection}");
    }
}
