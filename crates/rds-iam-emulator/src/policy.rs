//! Authorisation as IAM decides it for RDS: a token proves who signed it, and RDS then also asks IAM whether that
//! principal may `rds-db:connect` to `arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE-ID/USER`. The emulator asks the
//! identity policies given with `--policy` instead, evaluated as IAM evaluates them for this one action: an explicit
//! `Deny` wins, then any `Allow`; nothing allows by default.
//!
//! The file maps an access key id or a role ARN to its policy documents (one, or a list), in the JSON that
//! `tasks-api admin iam-policy` prints:
//!
//! ```json
//! {
//!   "AKIAEXAMPLE": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "rds-db:connect",
//!     "Resource": "arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/db_iam_user"}]},
//!   "arn:aws:iam::123456789012:role/tasks-db-access": [{"Version": "2012-10-17", "Statement": []}]
//! }
//! ```
//!
//! Temporary credentials learned through the STS pass-through are their role's; a statement with a `Condition` is
//! refused when the file is read, since the emulator cannot evaluate one faithfully.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

/// The action RDS authorises a connection with.
const CONNECT: &str = "rds-db:connect";

/// The identity policies of each principal, and the database whose users they are about.
#[derive(Debug, Clone)]
pub struct Authorization {
    policies: HashMap<String, Vec<Document>>,
    /// The account that owns the database, as in its ARNs.
    pub account_id: String,
    /// The database's resource id (`DbiResourceId`, or the cluster's `DbClusterResourceId`).
    pub resource_id: String,
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a map of access key ids or role ARNs to IAM policy documents: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the policy of `{principal}` has a statement with a Condition, which the emulator cannot evaluate")]
    Condition { principal: String },
    #[error("the policy of `{principal}` has a statement without {missing}")]
    Incomplete { principal: String, missing: &'static str },
}

impl Authorization {
    /// Reads a policy file for the database `resource_id` of `account_id`.
    pub fn load(path: &Path, account_id: String, resource_id: String) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(PolicyError::Read)?;
        Self::parse(&text, account_id, resource_id)
    }

    /// Parses the JSON of a policy file (see the module's documentation).
    pub fn parse(text: &str, account_id: String, resource_id: String) -> Result<Self, PolicyError> {
        let file: HashMap<String, OneOrMany<Document>> = serde_json::from_str(text).map_err(PolicyError::Json)?;
        let policies: HashMap<String, Vec<Document>> = file
            .into_iter()
            .map(|(principal, documents)| (principal, documents.into_vec()))
            .collect();
        for (principal, documents) in &policies {
            for statement in documents.iter().flat_map(|document| document.statement.iter()) {
                statement.check(principal)?;
            }
        }
        Ok(Self {
            policies,
            account_id,
            resource_id,
        })
    }

    /// The ARN that `rds-db:connect` as `user` on this database in `region` is authorised on.
    #[must_use]
    pub fn dbuser_arn(&self, region: &str, user: &str) -> String {
        format!(
            "arn:aws:rds-db:{region}:{}:dbuser:{}/{user}",
            self.account_id, self.resource_id
        )
    }

    /// Whether the policies of `principals` (an access key id, and the role of temporary credentials) together allow
    /// `rds-db:connect` on `resource`.
    #[must_use]
    pub fn allows<'a>(&self, principals: impl IntoIterator<Item = &'a str>, resource: &str) -> bool {
        let statements: Vec<&Statement> = principals
            .into_iter()
            .filter_map(|principal| self.policies.get(principal))
            .flatten()
            .flat_map(|document| document.statement.iter())
            .filter(|statement| statement.applies_to(resource))
            .collect();
        !statements.iter().any(|statement| statement.effect == Effect::Deny)
            && statements.iter().any(|statement| statement.effect == Effect::Allow)
    }
}

/// JSON that IAM accepts either as one value or as a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, T> {
        match self {
            Self::One(one) => std::slice::from_ref(one).iter(),
            Self::Many(many) => many.iter(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    statement: OneOrMany<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Statement {
    #[serde(rename = "Sid", default)]
    _sid: Option<String>,
    effect: Effect,
    action: Option<OneOrMany<String>>,
    not_action: Option<OneOrMany<String>>,
    resource: Option<OneOrMany<String>>,
    not_resource: Option<OneOrMany<String>>,
    condition: Option<serde_json::Value>,
}

impl Statement {
    /// Refuses what IAM refuses in an identity policy, and what the emulator cannot evaluate.
    fn check(&self, principal: &str) -> Result<(), PolicyError> {
        let incomplete = |missing| PolicyError::Incomplete {
            principal: principal.to_owned(),
            missing,
        };
        if self.condition.is_some() {
            return Err(PolicyError::Condition {
                principal: principal.to_owned(),
            });
        }
        if self.action.is_some() == self.not_action.is_some() {
            return Err(incomplete("exactly one of Action and NotAction"));
        }
        if self.resource.is_some() == self.not_resource.is_some() {
            return Err(incomplete("exactly one of Resource and NotResource"));
        }
        Ok(())
    }

    /// Whether this statement speaks about `rds-db:connect` on `resource`. Action names are case-insensitive,
    /// resources are not; both take IAM's wildcards.
    fn applies_to(&self, resource: &str) -> bool {
        let action = |patterns: &OneOrMany<String>| {
            patterns
                .iter()
                .any(|pattern| wildcard_match(&pattern.to_ascii_lowercase(), CONNECT))
        };
        let resource = |patterns: &OneOrMany<String>| patterns.iter().any(|pattern| wildcard_match(pattern, resource));
        let action_matches = match (&self.action, &self.not_action) {
            (Some(actions), _) => action(actions),
            (None, Some(actions)) => !action(actions),
            (None, None) => false,
        };
        let resource_matches = match (&self.resource, &self.not_resource) {
            (Some(resources), _) => resource(resources),
            (None, Some(resources)) => !resource(resources),
            (None, None) => false,
        };
        action_matches && resource_matches
    }
}

/// IAM's wildcards over the whole text: `*` for any run of characters (`/` and `:` included), `?` for one.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` take one more character, and try again from there.
                Some((star_p, star_t)) => {
                    star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_ARN: &str = "arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/db_iam_user";

    fn authorization(file: &str) -> Authorization {
        Authorization::parse(file, "123456789012".to_owned(), "cluster-ABC".to_owned()).expect("a policy file")
    }

    /// A file giving `AKIA1` one document with these statements.
    fn statements(statements: &str) -> Authorization {
        authorization(&format!(
            r#"{{"AKIA1": {{"Version": "2012-10-17", "Statement": [{statements}]}}}}"#
        ))
    }

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        for (pattern, text) in [
            ("*", ""),
            ("*", USER_ARN),
            ("arn:aws:rds-db:*:*:dbuser:*/*", USER_ARN),
            (
                "arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/db_*",
                USER_ARN,
            ),
            (
                "arn:aws:rds-db:us-east-?:123456789012:dbuser:cluster-ABC/db_iam_user",
                USER_ARN,
            ),
            ("a*b*c", "aXbYbZc"),
        ] {
            assert!(wildcard_match(pattern, text), "{pattern} ~ {text}");
        }
        for (pattern, text) in [
            (
                "arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/db_iam_use",
                USER_ARN,
            ),
            (
                "arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/DB_IAM_USER",
                USER_ARN,
            ),
            ("arn:aws:rds-db:*:*:dbuser:*/other", USER_ARN),
            ("?", ""),
            ("a*b*c", "aXbYbZ"),
        ] {
            assert!(!wildcard_match(pattern, text), "{pattern} !~ {text}");
        }
    }

    #[test]
    fn the_policy_admin_iam_policy_prints_allows_exactly_its_user() {
        let printed = authorization(&format!(
            r#"{{"AKIA1": {{"Version": "2012-10-17", "Statement": [{{"Sid": "TasksApiDatabaseConnect",
                "Effect": "Allow", "Action": "rds-db:connect", "Resource": "{USER_ARN}"}}]}}}}"#
        ));

        assert!(printed.allows(["AKIA1"], &printed.dbuser_arn("us-east-1", "db_iam_user")));
        assert!(!printed.allows(["AKIA1"], &printed.dbuser_arn("us-east-1", "postgres")));
        assert!(!printed.allows(["AKIA1"], &printed.dbuser_arn("eu-west-1", "db_iam_user")));
        assert!(!printed.allows(["AKIA2"], USER_ARN), "another key has no policy");
        let other_database = Authorization {
            resource_id: "cluster-XYZ".to_owned(),
            ..printed.clone()
        };
        assert!(!other_database.allows(["AKIA1"], &other_database.dbuser_arn("us-east-1", "db_iam_user")));
    }

    #[test]
    fn a_deny_wins_and_not_action_or_not_resource_invert_the_match() {
        let allow_all = r#"{"Effect": "Allow", "Action": "rds-db:*", "Resource": "*"}"#;
        assert!(statements(allow_all).allows(["AKIA1"], USER_ARN));
        let denied = statements(&format!(
            r#"{allow_all}, {{"Effect": "Deny", "Action": "RDS-DB:Connect", "Resource": "arn:aws:rds-db:*:*:dbuser:*/db_*"}}"#
        ));
        assert!(!denied.allows(["AKIA1"], USER_ARN));
        assert!(denied.allows(
            ["AKIA1"],
            "arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/postgres"
        ));

        let everything_but_s3 = statements(r#"{"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}"#);
        assert!(everything_but_s3.allows(["AKIA1"], USER_ARN));
        let not_rds = statements(r#"{"Effect": "Allow", "NotAction": ["rds-db:connect"], "Resource": "*"}"#);
        assert!(!not_rds.allows(["AKIA1"], USER_ARN));
        let not_this_user = statements(&format!(
            r#"{{"Effect": "Allow", "Action": "*", "NotResource": "{USER_ARN}"}}"#
        ));
        assert!(!not_this_user.allows(["AKIA1"], USER_ARN));
    }

    #[test]
    fn a_principals_documents_and_its_roles_count_together() {
        let file = authorization(&format!(
            r#"{{"ASIA1": [], "arn:aws:iam::123456789012:role/db": [
                {{"Statement": {{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "{USER_ARN}"}}}},
                {{"Statement": [{{"Effect": "Deny", "Action": "rds-db:connect", "Resource": "*/postgres"}}]}}]}}"#
        ));
        assert!(file.allows(["ASIA1", "arn:aws:iam::123456789012:role/db"], USER_ARN));
        assert!(!file.allows(["ASIA1"], USER_ARN));
        assert!(!file.allows(
            ["arn:aws:iam::123456789012:role/db"],
            "arn:aws:rds-db:x:y:dbuser:z/postgres"
        ));
    }

    #[test]
    fn what_cannot_be_evaluated_faithfully_is_refused_when_read() {
        let refused = |file: &str| Authorization::parse(file, "1".to_owned(), "r".to_owned()).expect_err("refused");
        let condition = refused(
            r#"{"AKIA1": {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "true"}}}}}"#,
        );
        assert!(matches!(condition, PolicyError::Condition { .. }), "{condition}");
        let no_resource = refused(r#"{"AKIA1": {"Statement": {"Effect": "Allow", "Action": "*"}}}"#);
        assert!(matches!(no_resource, PolicyError::Incomplete { .. }), "{no_resource}");
        for broken in [
            r#"{"AKIA1": {"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}}}"#,
            r#"{"AKIA1": {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}}}"#,
            r#"["not", "a", "map"]"#,
        ] {
            assert!(matches!(refused(broken), PolicyError::Json(_)), "{broken}");
        }
    }
}
