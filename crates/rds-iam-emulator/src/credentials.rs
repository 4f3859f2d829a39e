//! The secret keys the emulator knows, read from a file in the `~/.aws/credentials` INI format.

use std::collections::HashMap;
use std::path::Path;

/// Access key id to secret access key, for every profile of a credentials file.
#[derive(Clone, Default)]
pub struct CredentialStore {
    secrets: HashMap<String, String>,
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

    /// Parses the INI text: each `[profile]` with an `aws_access_key_id` and an `aws_secret_access_key` adds a key.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut secrets = HashMap::new();
        let mut key_id: Option<String> = None;
        let mut secret: Option<String> = None;
        let mut finish_profile = |key_id: &mut Option<String>, secret: &mut Option<String>| {
            if let (Some(key_id), Some(secret)) = (key_id.take(), secret.take()) {
                secrets.insert(key_id, secret);
            }
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                finish_profile(&mut key_id, &mut secret);
            } else if let Some((name, value)) = line.split_once('=')
                && !line.starts_with(['#', ';'])
            {
                match name.trim() {
                    "aws_access_key_id" => key_id = Some(value.trim().to_owned()),
                    "aws_secret_access_key" => secret = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        finish_profile(&mut key_id, &mut secret);
        Self { secrets }
    }

    #[must_use]
    pub fn secret_for(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id).map(String::as_str)
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
             [incomplete]\naws_access_key_id = AKIA2\n\n[profile b]\naws_secret_access_key=s3\naws_access_key_id=AKIA3\n",
        );
        assert_eq!(store.secret_for("AKIA1"), Some("s1"));
        assert_eq!(store.secret_for("AKIA2"), None);
        assert_eq!(store.secret_for("AKIA3"), Some("s3"));
        assert!(!format!("{store:?}").contains("s1"));
    }
}
