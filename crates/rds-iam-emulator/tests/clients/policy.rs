//! `--policy`: a valid token also needs its principal's policies to allow `rds-db:connect` as its user.

use rds_iam_emulator::policy::Authorization;
use rds_iam_emulator::testing::EmulatorOptions;

use crate::support::{self, ACCESS_KEY_ID, Engine, IAM_USER, refusal, run_refused};

on_both_engines!(only_what_the_policy_allows_connects);

const ACCOUNT_ID: &str = "123456789012";
const RESOURCE_ID: &str = "cluster-EMULATORTESTS";

/// The policy `tasks-api admin iam-policy` prints for `resource`, given to the emulator's known key.
fn allowing(resource: &str) -> Authorization {
    let file = format!(
        r#"{{"{ACCESS_KEY_ID}": {{"Version": "2012-10-17", "Statement": [{{"Sid": "TasksApiDatabaseConnect",
            "Effect": "Allow", "Action": "rds-db:connect", "Resource": "{resource}"}}]}}}}"#
    );
    Authorization::parse(&file, ACCOUNT_ID.to_owned(), RESOURCE_ID.to_owned()).expect("a policy file")
}

async fn only_what_the_policy_allows_connects(engine: Engine) {
    let arn = |region: &str, resource_id: &str, user: &str| {
        format!("arn:aws:rds-db:{region}:{ACCOUNT_ID}:dbuser:{resource_id}/{user}")
    };

    for (resource, allowed) in [
        (arn("us-east-1", RESOURCE_ID, IAM_USER), true),
        (arn("us-east-1", RESOURCE_ID, "*"), true),
        (arn("us-east-1", RESOURCE_ID, "db_iam_user"), false),
        (arn("eu-west-1", RESOURCE_ID, IAM_USER), false),
        (arn("us-east-1", "cluster-ANOTHERONE", IAM_USER), false),
    ] {
        let emulator = support::start(
            engine,
            EmulatorOptions {
                authorization: Some(allowing(&resource)),
                ..EmulatorOptions::default()
            },
        )
        .await;
        let user = support::iam_user(&emulator).await;
        let token = support::token(&emulator, user).await;

        let output = support::client(engine, &emulator, user, &token, "SELECT 1").await;

        if allowed {
            assert_eq!(output.as_deref(), Ok("1"), "{resource}");
        } else {
            let refused = output.expect_err(&resource);
            assert!(refused.contains(&refusal(engine, user)), "{resource}: {refused}");
            assert_eq!(emulator.counts.refused(), 1);
        }
    }
}

#[test]
fn a_policy_the_emulator_cannot_evaluate_stops_it_at_start() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let policy = directory.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"AKIAEXAMPLE": {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "rds-db:connect",
            "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}}}"#,
    )
    .expect("write the policy");
    let policy = policy.to_str().expect("a UTF-8 path");

    let messages = run_refused(&[
        "--policy",
        policy,
        "--account-id",
        ACCOUNT_ID,
        "--resource-id",
        RESOURCE_ID,
    ]);
    assert!(
        messages.contains("--policy") && messages.contains("Condition"),
        "{messages}"
    );

    let messages = run_refused(&["--policy", policy]);
    assert!(
        messages.contains("--account-id") && messages.contains("--resource-id"),
        "{messages}"
    );
}
