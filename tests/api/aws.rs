//! The AWS side: tokens signed with an assumed role's temporary credentials and verified by the RDS IAM emulator,
//! endpoints discovered from cluster and instance identifiers, and the provisioning commands' AWS half. What uses STS
//! and IAM runs against moto and against LocalStack; what needs RDS runs against moto, as LocalStack's free edition
//! has no RDS.

use std::path::Path;
use std::time::Duration;

use admin::{AdminError, IamSwitch, PolicyTarget};
use rds_iam::{AssumeRole, DatabaseResource, RdsTokenSigner, TokenLifetime, TokenTarget};
use rds_iam_emulator::policy::Authorization;
use secrecy::ExposeSecret;
use test_support::aws::{Aws, AwsApi, aws, moto};
use test_support::iam::{ACCESS_KEY_ID, IAM_USER, REGION, SECRET_ACCESS_KEY};
use test_support::{Backend, EmulatorOptions, LogCapture, Stack, TestEmulator};

use crate::iam::{log_in, refusal_sqlstate, sign, sqlstate};

on_iam_backends!(
    the_clusters_writer_endpoint_is_discovered_and_named_in_every_token,
    the_printed_policy_lets_in_its_user_of_its_database_in_its_region_and_no_other,
);

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

    let policy = admin::connect_policy(&sdk_config, &PolicyTarget::Database(cluster), "db_iam_user")
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

/// Clients of an RDS Proxy with IAM authentication sign for the proxy, and their policy names the proxy's resource
/// id (`prx-...`), not its database's; an unknown proxy is named in the error.
#[tokio::test]
async fn a_proxy_policy_names_the_proxys_resource_id() {
    let moto = moto().await;
    let proxy_arn = moto.create_proxy("tasks-proxy").await;
    let aws = moto.sdk_config().await;

    let policy = admin::connect_policy(&aws, &PolicyTarget::Proxy("tasks-proxy".to_owned()), "db_iam_user")
        .await
        .expect("a policy");
    let unknown = admin::connect_policy(&aws, &PolicyTarget::Proxy("tasks-nowhere".to_owned()), "db_iam_user")
        .await
        .expect_err("no such proxy");

    let proxy_id = proxy_arn.rsplit(':').next().expect("an id");
    assert!(proxy_id.starts_with("prx-"), "{proxy_arn}");
    let account_id = &moto.account_id;
    let expected = format!("arn:aws:rds-db:us-east-1:{account_id}:dbuser:{proxy_id}/db_iam_user");
    assert_eq!(policy.resource_arn, expected);
    assert_eq!(policy.document["Statement"][0]["Resource"], expected.as_str());
    let unknown = rds_iam::error_chain(&unknown);
    assert!(
        unknown.contains("rds:DescribeDBProxies") && unknown.contains("tasks-nowhere"),
        "{unknown}"
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

/// An emulator standing in for the database at `endpoint` with resource id `resource_id` in `region`, with the
/// policy file `policy`, as `rds-iam-emulator --policy FILE --account-id .. --resource-id ..` has it.
fn with_policy(policy: &Path, account_id: &str, resource_id: &str, region: &str, endpoint: &str) -> EmulatorOptions {
    EmulatorOptions {
        region: region.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        authorization: Some(
            Authorization::load(policy, account_id.to_owned(), resource_id.to_owned()).expect("a policy file"),
        ),
        ..EmulatorOptions::default()
    }
}

/// A token for `user` that names `endpoint` (`host:port`), signed for `region` with the known key.
async fn token_naming(endpoint: &str, user: &str, region: &str) -> rds_iam::IamToken {
    let (host, port) = endpoint.rsplit_once(':').expect("host:port");
    let target = TokenTarget {
        host: host.to_owned(),
        port: port.parse().expect("a port"),
        user: user.to_owned(),
    };
    sign(target, Some(region), Duration::from_secs(900)).await
}

/// The operator's steps from README.md, end to end: `admin iam-policy` prints the policy for a cluster's user, the
/// emulator stands in for that cluster with the printed policy given to the service's key, `migrate up` and
/// `admin provision-db-user` prepare the database as its administrator, and the service, told only the cluster,
/// gets in as that user. The same policy lets no other user in, nor that user into another cluster or region.
async fn the_printed_policy_lets_in_its_user_of_its_database_in_its_region_and_no_other(backend: Backend) {
    let moto = moto().await;
    let endpoint = moto.create_cluster("tasks-policy", backend, true).await;
    let other_endpoint = moto.create_cluster("tasks-policy-other", backend, true).await;
    let (resource_id, other_resource_id) = (
        moto.cluster_resource_id("tasks-policy").await,
        moto.cluster_resource_id("tasks-policy-other").await,
    );
    let db_user = format!("tasks_app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let cluster = DatabaseResource::Cluster {
        id: "tasks-policy".to_owned(),
        reader: false,
    };
    let policy = admin::connect_policy(&moto.sdk_config().await, &PolicyTarget::Database(cluster), &db_user)
        .await
        .expect("a policy");
    // What `admin iam-policy` prints, given to the service's key as README.md shows.
    let printed = serde_json::to_string_pretty(&policy.document).expect("JSON");
    let policy_file = std::env::temp_dir().join(format!("tasks-policy-{db_user}.json"));
    std::fs::write(&policy_file, format!("{{\"{ACCESS_KEY_ID}\": {printed}}}")).expect("write the policy file");
    let account_id = moto.account_id.clone();
    let options = |resource_id: &str, region: &str, endpoint: &str| {
        with_policy(&policy_file, &account_id, resource_id, region, endpoint)
    };
    let stack = Stack::with_emulator(backend, options(&resource_id, REGION, &endpoint)).await;
    stack.database.migrate().await;
    let admin_url = match backend {
        Backend::MariaDbIam => {
            // Outside RDS, the MySQL user is made by hand, without a password; the local MariaDB has no TLS.
            stack.database.execute(format!("CREATE USER '{db_user}'@'%'")).await;
            format!("{}?ssl-mode=DISABLED", stack.database.url())
        }
        _ => stack.database.url().to_owned(),
    };
    admin::provision_db_user(&admin_url, &db_user)
        .await
        .expect("provisioned");
    let refused_arn = |region: &str, resource_id: &str, user: &str| {
        format!("arn:aws:rds-db:{region}:{account_id}:dbuser:{resource_id}/{user}")
    };
    let refusals = [
        refused_arn(REGION, &resource_id, IAM_USER),
        refused_arn(REGION, &other_resource_id, &db_user),
        refused_arn("eu-west-1", &resource_id, &db_user),
    ]
    .map(|arn| (LogCapture::containing(format!("on `{arn}`")), arn));

    let url = stack.emulator().url(&db_user, stack.database.name());
    let tunnel = stack.emulator().address.to_string();
    let settings = stack.settings(&[
        ("APP__DATABASE__URL", url.as_str()),
        ("APP__DATABASE__MIGRATE_ON_START", "false"),
        ("APP__DATABASE__IAM__CLUSTER_ID", "tasks-policy"),
        ("APP__DATABASE__IAM__TUNNEL", tunnel.as_str()),
    ]);
    let aws = moto.sdk_config_signing_as(ACCESS_KEY_ID, SECRET_ACCESS_KEY).await;
    let app = stack
        .start(settings, Some(aws))
        .await
        .map_err(|(error, _)| error)
        .expect("the printed policy lets the service in");
    let id = app.create_task("allowed by the printed policy").await;
    let emulator = app.emulator.as_ref().expect("an emulator");
    let another_user = log_in(
        backend,
        emulator,
        IAM_USER,
        &token_naming(&endpoint, IAM_USER, REGION).await,
    )
    .await;
    let other_database = TestEmulator::start(backend, options(&other_resource_id, REGION, &other_endpoint)).await;
    let another_database = log_in(
        backend,
        &other_database,
        &db_user,
        &token_naming(&other_endpoint, &db_user, REGION).await,
    )
    .await;
    let other_region = TestEmulator::start(backend, options(&resource_id, "eu-west-1", &endpoint)).await;
    let another_region = log_in(
        backend,
        &other_region,
        &db_user,
        &token_naming(&endpoint, &db_user, "eu-west-1").await,
    )
    .await;

    assert_eq!(app.read_task(id).await.name, "allowed by the printed policy");
    assert_eq!(emulator.counts.refused(), 1, "only the other user's token");
    for refused in [another_user, another_database, another_region] {
        let error = refused.expect_err("refused");
        assert_eq!(sqlstate(&error).as_deref(), Some(refusal_sqlstate(backend)), "{error}");
    }
    // Each for want of a policy allowing its ARN: a valid token, for a user granted rds_iam.
    for (capture, arn) in refusals {
        let events = capture.events();
        assert!(
            events
                .iter()
                .any(|event| event.contains("no policy of") && event.contains("token refused")),
            "{arn}: {events:?}"
        );
    }
    std::fs::remove_file(&policy_file).expect("remove the policy file");
    let drop_user = match backend {
        Backend::MariaDbIam => format!("DROP USER '{db_user}'@'%'"),
        _ => format!("DROP OWNED BY {db_user}; DROP ROLE {db_user}"),
    };
    app.database.execute(drop_user).await;
}
