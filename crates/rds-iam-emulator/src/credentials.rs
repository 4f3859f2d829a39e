//! The secret keys the emulator knows: read from a file in the `~/.aws/credentials` INI format, and learnt from the
//! temporary credentials a local AWS emulator's STS has issued.

use std::collections::HashMap;
use std::path::Path;

/// Access key id to secret access key (and session token, for temporary credentials).
#[derive(Clone, Default)]
pub struct CredentialStore {
    secrets: HashMap<String, Secret>,
}

#[derive(Clone)]
struct Secret {
    secret_access_key: String,
    session_token: Option<String>,
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
    pub fn load(path: &Path) -> std::io::Result<Self> {
        std::fs::read_to_string(path).map(|text| Self::parse(&text))
    }

    /// Parses the INI text: each `[profile]` with an `aws_access_key_id` and an `aws_secret_access_key` adds a key,
    /// bound to its `aws_session_token` when the profile has one.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut store = Self::default();
        let mut profile: [Option<String>; 3] = Default::default();
        let finish_profile = |store: &mut Self, [key_id, secret, session_token]: &mut [Option<String>; 3]| {
            if let (Some(key_id), Some(secret)) = (key_id.take(), secret.take()) {
                store.insert(key_id, secret, session_token.take());
            }
            *session_token = None;
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                finish_profile(&mut store, &mut profile);
            } else if let Some((name, value)) = line.split_once('=')
                && !line.starts_with(['#', ';'])
            {
                let field = match name.trim() {
                    "aws_access_key_id" => 0,
                    "aws_secret_access_key" => 1,
                    "aws_session_token" => 2,
                    _ => continue,
                };
                profile[field] = Some(value.trim().to_owned());
            }
        }
        finish_profile(&mut store, &mut profile);
        store
    }

    /// Adds a key; temporary credentials come with the session token that every request signed with them carries.
    pub fn insert(&mut self, access_key_id: String, secret_access_key: String, session_token: Option<String>) {
        self.secrets.insert(
            access_key_id,
            Secret {
                secret_access_key,
                session_token,
            },
        );
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

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_complete_profile_contributes_its_key() {
        let store = CredentialStore::parse(
            "# comment\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\nregion = x\n\n\
             [incomplete]\naws_access_key_id = AKIA2\naws_session_token = t2\n\n\
             [profile b]\naws_secret_access_key=s3\naws_access_key_id=ASIA3\naws_session_token = t3\n",
        );
        assert_eq!(store.secret_for("AKIA1"), Some("s1"));
        assert_eq!(store.session_token_for("AKIA1"), None);
        assert_eq!(store.secret_for("AKIA2"), None);
        assert_eq!(store.secret_for("ASIA3"), Some("s3"));
        assert_eq!(store.session_token_for("ASIA3"), Some("t3"));
        assert!(!format!("{store:?}").contains("s1"));
    }
}
