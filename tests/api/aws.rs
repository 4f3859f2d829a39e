//! The AWS side: tokens signed with an assumed role's temporary credentials and verified by the RDS IAM emulator,
//! endpoints discovered from cluster and instance identifiers, and the provisioning commands' AWS half. What uses STS
//! and IAM runs against moto and against LocalStack; what needs RDS runs against moto, as LocalStack's free edition
//! has no RDS.

use admin::{AdminError, IamSwitch};
use rds_iam::{AssumeRole, DatabaseResource, RdsTokenSigner, TokenLifetime, TokenTarget};
use secrecy::ExposeSecret;
use test_support::aws::{Aws, AwsApi, aws, moto};
use test_support::iam::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use test_support::{Backend, EmulatorOptions, Stack, TestEmulator};

on_iam_backends!(the_clusters_writer_endpoint_is_discovered_and_named_in_every_token);

/// Generates the STS and IAM tests for one AWS API emulator.
macro_rules! sts_and_iam_tests {
    ($module:ident, $api:ident) => {
        mod $module {
            use test_support::Backend;
            use test_support::aws::AwsApi;

            #[tokio::test]
            async fn the_service_signs_its_tokens_with_the_role_it_assumes_on_postgres() {
                super::the_service_signs_its_tokens_with_the_role_it_assumes(AwsApi::$api, Backend::PostgresIam).await;
            }

            #[tokio::test]
            async fn the_service_signs_its_tokens_with_the_role_it_assumes_on_mariadb() {
                super::the_service_signs_its_tokens_with_the_role_it_assumes(AwsApi::$api, Backend::MariaDbIam).await;
            }

            #[tokio::test]
            async fn an_assumed_roles_token_carries_its_session_token_and_temporary_key() {
                super::an_assumed_roles_token_carries_its_session_token_and_temporary_key(AwsApi::$api).await;
            }

            #[tokio::test]
            async fn the_policy_allows_connect_as_one_user_on_the_clusters_resource_id_and_can_be_created_once() {
                super::the_policy_allows_connect_as_one_user_on_the_clusters_resource_id_and_can_be_created_once(
                    AwsApi::$api,
                )
                .await;
            }
        }
    };
}

sts_and_iam_tests!(moto, Moto);
sts_and_iam_tests!(localstack, LocalStack);

const ROLE: &str = "tasks-db-access";

/// Options for an emulator that also accepts the credentials `aws`'s STS issues through it.
fn trusting_sts_of(aws: &Aws) -> EmulatorOptions {
    EmulatorOptions {
        sts_upstream: Some(aws.endpoint.clone()),
        ..EmulatorOptions::default()
    }
}

async fn the_service_signs_its_tokens_with_the_role_it_assumes(api: AwsApi, backend: Backend) {
    let aws = aws(api).await;
    let stack = Stack::with_emulator(backend, trusting_sts_of(&aws)).await;
    let role_arn = aws.role_arn(ROLE);
    let settings = stack.settings(&[
        ("APP__DATABASE__IAM__ASSUME_ROLE_ARN", role_arn.as_str()),
        ("APP__DATABASE__IAM__EXTERNAL_ID", "tasks-external-id"),
        ("APP__DATABASE__IAM__SESSION_NAME", "tasks-api-test"),
    ]);
    let sdk_config = aws.sdk_config_through(stack.emulator()).await;

    let app = stack
        .start(settings, Some(sdk_config))
        .await
        .map_err(|(error, _)| error)
        .expect("starts with the assumed role's credentials");

    let id = app.create_task("written as the assumed role").await;
    assert_eq!(app.read_task(id).await.name, "written as the assumed role");
    let emulator = app.emulator.as_ref().expect("an emulator");
    assert!(emulator.counts.accepted() >= 1);
    assert_eq!(
        emulator.counts.refused(),
        0,
        "no token was signed with the base credentials"
    );
    let issued = emulator.issued.list();
    assert!(!issued.is_empty());
    for credentials in issued {
        assert_eq!(credentials.action, "AssumeRole");
        assert_eq!(credentials.role_arn.as_deref(), Some(role_arn.as_str()));
        assert_eq!(credentials.role_session_name.as_deref(), Some("tasks-api-test"));
        assert_eq!(credentials.external_id.as_deref(), Some("tasks-external-id"));
    }
}

async fn an_assumed_roles_token_carries_its_session_token_and_temporary_key(api: AwsApi) {
    let aws = aws(api).await;
    let emulator = TestEmulator::start(Backend::PostgresIam, trusting_sts_of(&aws)).await;
    let target = TokenTarget {
        host: "tasks.cluster-c9di9qmu8xqw.us-east-1.rds.amazonaws.com".to_owned(),
        port: 5432,
        user: "db_iam_user".to_owned(),
    };
    let role = AssumeRole {
        session_name: "tasks-api".parse().expect("a session name"),
        ..AssumeRole::new(aws.role_arn(ROLE).parse().expect("a role ARN"))
    };
    let signer = RdsTokenSigner::new(
        target,
        None,
        TokenLifetime::MAX,
        Some(aws.sdk_config_through(&emulator).await),
    )
    .await
    .expect("a token signer")
    .assuming(&role)
    .await;

    let token = signer.sign().await.expect("a token");

    let token = token.secret().expose_secret();
    let access_key_id = rds_iam_emulator::sigv4::access_key_id(token).expect("a credential");
    assert_ne!(access_key_id, aws.access_key_id, "not the base credentials");
    assert!(token.contains("X-Amz-Security-Token="));
    let issued = emulator.issued.list();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].access_key_id, access_key_id);
    assert_eq!(issued[0].role_arn.as_deref(), Some(role.arn.as_str()));
    assert_eq!(issued[0].role_session_name.as_deref(), Some("tasks-api"));
    assert_eq!(issued[0].external_id, None);
}

/// The service behind `stack`, told only an RDS identifier (`..._CLUSTER_ID` or `..._INSTANCE_ID`): it reaches the
/// emulator standing in for the endpoint through a "tunnel", and must name the endpoint RDS reports.
async fn start_discovering(moto: &Aws, stack: Stack, identifier: (&str, &str)) -> test_support::TestApp {
    let tunnel = stack.emulator().address.to_string();
    let settings = stack.settings(&[identifier, ("APP__DATABASE__IAM__TUNNEL", tunnel.as_str())]);
    let aws = moto.sdk_config_signing_as(ACCESS_KEY_ID, SECRET_ACCESS_KEY).await;
    stack
        .start(settings, Some(aws))
        .await
        .map_err(|(error, _)| error)
        .expect("starts with the discovered endpoint")
}

/// A stack whose emulator only accepts tokens that name `endpoint`.
async fn stack_for_endpoint(backend: Backend, endpoint: String) -> Stack {
    let options = EmulatorOptions {
        endpoint: Some(endpoint),
        ..EmulatorOptions::default()
    };
    Stack::with_emulator(backend, options).await
}

async fn the_clusters_writer_endpoint_is_discovered_and_named_in_every_token(backend: Backend) {
    let moto = moto().await;
    let endpoint = moto.create_cluster("tasks-cluster", backend, true).await;
    let stack = stack_for_endpoint(backend, endpoint).await;

    let app = start_discovering(&moto, stack, ("APP__DATABASE__IAM__CLUSTER_ID", "tasks-cluster")).await;

    let id = app.create_task("through the discovered endpoint").await;
    assert_eq!(app.read_task(id).await.name, "through the discovered endpoint");
    assert_eq!(app.emulator.as_ref().expect("an emulator").counts.refused(), 0);
}

#[tokio::test]
async fn an_instances_endpoint_is_discovered_too() {
    let moto = moto().await;
    let endpoint = moto.create_instance("tasks-instance", true).await;
    let stack = stack_for_endpoint(Backend::PostgresIam, endpoint).await;

    let app = start_discovering(&moto, stack, ("APP__DATABASE__IAM__INSTANCE_ID", "tasks-instance")).await;

    app.create_task("through the instance endpoint").await;
}

#[tokio::test]
async fn a_cluster_without_iam_authentication_or_an_unknown_one_is_refused_by_name() {
    let moto = moto().await;
    moto.create_cluster("tasks-no-iam", Backend::PostgresIam, false).await;
    let aws = moto.sdk_config_signing_as(ACCESS_KEY_ID, SECRET_ACCESS_KEY).await;
    let stack = Stack::new(Backend::PostgresIam).await;

    let (disabled, stack) = crate::iam::refused_start(
        stack,
        &[("APP__DATABASE__IAM__CLUSTER_ID", "tasks-no-iam")],
        Some(aws.clone()),
    )
    .await;
    let (unknown, stack) =
        crate::iam::refused_start(stack, &[("APP__DATABASE__IAM__CLUSTER_ID", "tasks-nowhere")], Some(aws)).await;

    assert!(
        disabled.contains("`tasks-no-iam` has IAM database authentication turned off")
            && disabled.contains("--enable-iam-database-authentication"),
        "{disabled}"
    );
    assert!(unknown.contains("`tasks-nowhere` was not found"), "{unknown}");
    let counts = &stack.emulator().counts;
    assert_eq!(counts.accepted() + counts.refused(), 0, "no token was ever sent");
    assert_eq!(stack.database.count_tables().await, 0);
}

async fn the_policy_allows_connect_as_one_user_on_the_clusters_resource_id_and_can_be_created_once(api: AwsApi) {
    let aws = aws(api).await;
    aws.create_cluster("tasks-policy", Backend::PostgresIam, false).await;
    let sdk_config = aws.sdk_config().await;
    let cluster = DatabaseResource::Cluster {
        id: "tasks-policy".to_owned(),
        reader: false,
    };

    let policy = admin::connect_policy(&sdk_config, &cluster, "db_iam_user")
        .await
        .expect("a policy");
    let created = admin::create_policy(&sdk_config, "tasks-db-connect", &policy)
        .await
        .expect("created");
    let again = admin::create_policy(&sdk_config, "tasks-db-connect", &policy).await;

    let resource_id = aws.cluster_resource_id("tasks-policy").await;
    let account_id = &aws.account_id;
    let expected = format!("arn:aws:rds-db:us-east-1:{account_id}:dbuser:{resource_id}/db_iam_user");
    assert_eq!(policy.resource_arn, expected);
    let statements = policy.document["Statement"].as_array().expect("statements");
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Effect"], "Allow");
    assert_eq!(statements[0]["Action"], "rds-db:connect");
    assert_eq!(statements[0]["Resource"], expected.as_str());
    assert_eq!(created, format!("arn:aws:iam::{account_id}:policy/tasks-db-connect"));
    let again = rds_iam::error_chain(&again.expect_err("the name is taken"));
    assert!(
        again.contains("iam:CreatePolicy") && again.contains("EntityAlreadyExists"),
        "{again}"
    );
}

#[tokio::test]
async fn enabling_iam_authentication_turns_it_on_once() {
    let moto = moto().await;
    moto.create_instance("tasks-switch", false).await;
    let aws = moto.sdk_config().await;
    let instance = DatabaseResource::Instance {
        id: "tasks-switch".to_owned(),
    };
    let discovered_before = rds_iam::discovery::discover(&aws, &instance).await;

    let first = admin::enable_iam(&aws, &instance).await.expect("enabled");
    let second = admin::enable_iam(&aws, &instance).await.expect("idempotent");

    assert!(discovered_before.is_err(), "refused while IAM authentication was off");
    assert_eq!(first, IamSwitch::TurnedOn);
    assert_eq!(second, IamSwitch::AlreadyOn);
    rds_iam::discovery::discover(&aws, &instance)
        .await
        .expect("discoverable now");
    // moto accepts ModifyDBCluster but leaves the cluster's IAM flag as it was: the command must say it asked,
    // not claim success.
    moto.create_cluster("tasks-switch-cluster", Backend::PostgresIam, false)
        .await;
    let cluster = DatabaseResource::Cluster {
        id: "tasks-switch-cluster".to_owned(),
        reader: false,
    };
    assert_eq!(
        admin::enable_iam(&aws, &cluster).await.expect("requested"),
        IamSwitch::Requested
    );
    let unknown = DatabaseResource::Cluster {
        id: "tasks-nowhere".to_owned(),
        reader: false,
    };
    let error = admin::enable_iam(&aws, &unknown).await.expect_err("unknown");
    assert!(matches!(error, AdminError::Discovery(_)) && error.to_string().contains("`tasks-nowhere` was not found"));
}
