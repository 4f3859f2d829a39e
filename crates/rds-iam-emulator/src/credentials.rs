//! The secret keys the emulator knows: read from a file in the `~/.aws/credentials` INI format, and learnt from the
//! temporary credentials a local AWS emulator's STS has issued.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use ini::{Ini, ParseOption};

/// Access key id to secret access key (and session token, for temporary credentials).
#[derive(Clone, Default)]
pub struct CredentialStore {
    secrets: HashMap<String, Secret>,
}

/// Why a credentials file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    #[error("not in the INI format: {0}")]
    Syntax(#[source] ini::ParseError),
}

#[derive(Clone, PartialEq, Eq)]
struct Secret {
    secret_access_key: String,
    session_token: Option<String>,
    /// When temporary credentials stop working, as STS said; configured keys do not expire.
    expires_at: Option<SystemTime>,
    /// The role temporary credentials were issued for.
    role_arn: Option<String>,
}

/// Temporary credentials as an STS answer issued them, and the role they were issued for.
#[derive(Debug)]
pub(crate) struct TemporaryCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: String,
    pub(crate) expires_at: SystemTime,
    pub(crate) role_arn: Option<String>,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore")
            .field("access_key_ids", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CredentialStore {
    /// Reads a credentials file.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(CredentialsError::Read)?;
        Self::parse(&text)
    }

    /// Parses the INI text: each `[profile]` with an `aws_access_key_id` and an `aws_secret_access_key` adds a key,
    /// bound to its `aws_session_token` when the profile has one. Text that is not INI (an unclosed `[section`, say)
    /// is an error rather than a file that silently grants nothing.
    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        // Values are taken verbatim, as the AWS CLI takes them: a secret may hold quotes or backslashes.
        let options = ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            ..ParseOption::default()
        };
        let ini = Ini::load_from_str_opt(text, options).map_err(CredentialsError::Syntax)?;
        let mut store = Self::default();
        // Every section is a profile, whatever its name; a name given twice is two profiles.
        for (_, profile) in ini.iter() {
            // A key given twice in one profile: the last one counts.
            let value = |key: &str| profile.get_all(key).next_back().map(str::to_owned);
            if let (Some(key_id), Some(secret)) = (value("aws_access_key_id"), value("aws_secret_access_key")) {
                store.insert(key_id, secret, value("aws_session_token"));
            }
        }
        Ok(store)
    }

    /// Adds a key; temporary credentials come with the session token that every request signed with them carries.
    pub fn insert(&mut self, access_key_id: String, secret_access_key: String, session_token: Option<String>) {
        self.secrets.insert(
            access_key_id,
            Secret {
                secret_access_key,
                session_token,
                expires_at: None,
                role_arn: None,
            },
        );
    }

    /// Adds temporary credentials that an STS answer carried, unless their key is already known with another
    /// secret or session token: an answer must not be able to replace the secret of a key, least of all a configured
    /// one. Credentials that expired before `now` are forgotten first, so their keys are no longer known. True when
    /// the key is now known as given.
    pub(crate) fn learn(&mut self, credentials: TemporaryCredentials, now: SystemTime) -> bool {
        self.secrets
            .retain(|_, known| known.expires_at.is_none_or(|expires_at| expires_at > now));
        let learned = Secret {
            secret_access_key: credentials.secret_access_key,
            session_token: Some(credentials.session_token),
            expires_at: Some(credentials.expires_at),
            role_arn: credentials.role_arn,
        };
        match self.secrets.get(&credentials.access_key_id) {
            Some(known) => *known == learned,
            None => {
                self.secrets.insert(credentials.access_key_id, learned);
                true
            }
        }
    }

    #[must_use]
    pub fn secret_for(&self, access_key_id: &str) -> Option<&str> {
        self.secrets
            .get(access_key_id)
            .map(|secret| secret.secret_access_key.as_str())
    }

    /// The session token that must accompany `access_key_id`, for temporary credentials.
    #[must_use]
    pub fn session_token_for(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id)?.session_token.as_deref()
    }

    /// When `access_key_id`'s temporary credentials expire; `None` for a key that does not.
    #[must_use]
    pub fn expires_at(&self, access_key_id: &str) -> Option<SystemTime> {
        self.secrets.get(access_key_id)?.expires_at
    }

    /// The role whose temporary credentials `access_key_id` is, when STS issued them for one.
    #[must_use]
    pub fn role_arn_for(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id)?.role_arn.as_deref()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_complete_profile_contributes_its_key() {
        let store = CredentialStore::parse(
            "# comment\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\nregion = x\n\n\
             [incomplete]\naws_access_key_id = AKIA2\naws_session_token = t2\n\n\
             [profile b]\naws_secret_access_key=s3\naws_access_key_id=ASIA3\naws_session_token = t3\n",
        )
        .expect("INI");
        assert_eq!(store.secret_for("AKIA1"), Some("s1"));
        assert_eq!(store.session_token_for("AKIA1"), None);
        assert_eq!(store.secret_for("AKIA2"), None);
        assert_eq!(store.secret_for("ASIA3"), Some("s3"));
        assert_eq!(store.session_token_for("ASIA3"), Some("t3"));
        assert!(!format!("{store:?}").contains("s1"));
    }

    #[test]
    fn values_are_verbatim_and_repeated_sections_are_separate_profiles() {
        let store = CredentialStore::parse(
            "[a]\naws_access_key_id = AKIA1\naws_secret_access_key = \"a\\b\"\naws_session_token = t==\n\
             [a]\naws_access_key_id = AKIA2\naws_secret_access_key = old\naws_secret_access_key = new\n",
        )
        .expect("INI");
        assert_eq!(store.secret_for("AKIA1"), Some("\"a\\b\""));
        assert_eq!(store.session_token_for("AKIA1"), Some("t=="));
        assert_eq!(store.secret_for("AKIA2"), Some("new"));
    }

    #[test]
    fn expired_credentials_are_forgotten_when_more_are_learned() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let minute = Duration::from_secs(60);
        let until = |access_key_id: &str, secret: &str, expires_at| TemporaryCredentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret.to_owned(),
            session_token: "t".to_owned(),
            expires_at,
            role_arn: Some("arn:aws:iam::123456789012:role/db".to_owned()),
        };
        let mut store =
            CredentialStore::parse("[a]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n").expect("INI");
        assert!(store.learn(until("ASIA1", "s", start + minute), start));
        assert_eq!(store.expires_at("ASIA1"), Some(start + minute));
        assert_eq!(store.role_arn_for("ASIA1"), Some("arn:aws:iam::123456789012:role/db"));

        let later = start + 2 * minute;
        assert!(store.learn(until("ASIA2", "s", later + minute), later));
        assert_eq!(store.secret_for("ASIA1"), None);
        assert_eq!(store.secret_for("AKIA1"), Some("s1"), "configured keys never expire");
        assert!(store.learn(until("ASIA1", "new", later + minute), later));
    }

    #[test]
    fn a_file_that_is_not_ini_is_refused() {
        let error = CredentialStore::parse("[default\naws_access_key_id = AKIA1\n").expect_err("not INI");
        assert!(matches!(error, CredentialsError::Syntax(_)), "{error}");
    }
}
