//! The suite's AWS. RDS always comes from moto in server mode (`AWS_ENDPOINT_URL`, default `http://127.0.0.1:5000`),
//! since LocalStack's free edition has none. STS and IAM come from moto or from LocalStack (`TEST_LOCALSTACK_URL`,
//! default `http://127.0.0.1:4566`), and the tests that use them run once against each. Whichever answers there
//! is used; when nothing does, the `test-servers` crate installs the emulator (on first use) and starts it, once
//! for the whole run, and stops it when the run ends.
//!
//! Isolation: moto is reset before each test, under a lock file so that tests do not wipe each other's state, whether
//! they run as threads of one process (cargo) or as processes of their own (nextest). LocalStack cannot be reset
//! without its paid edition, so each test gets an AWS account of its own there instead: LocalStack files everything
//! under the account that a 12-digit access key id names.

use aws_config::SdkConfig;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};
use test_servers::Emulator;
use uuid::Uuid;

use crate::iam::aws_config;
use crate::{Backend, TestEmulator};

/// The account moto puts everything in.
const MOTO_ACCOUNT_ID: &str = "123456789012";
/// Long-term credentials that moto accepts and the RDS IAM emulator does not know: a token the emulator accepts was
/// not signed with these.
const MOTO_ACCESS_KEY_ID: &str = "AKIAMOTOBASEKEY00001";
/// The secret of the base credentials; neither emulator checks it, and the RDS IAM emulator never learns it.
const BASE_SECRET_ACCESS_KEY: &str = "aws/base+secret=never-logged";

/// Which AWS API emulator answers STS and IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsApi {
    Moto,
    LocalStack,
}

/// Exclusive use of a freshly reset moto for RDS, and a clean account on the emulator answering STS and IAM.
#[derive(Debug)]
pub struct Aws {
    /// Where STS and IAM are answered.
    pub endpoint: String,
    /// The account the base credentials belong to.
    pub account_id: String,
    /// The base credentials' access key id.
    pub access_key_id: String,
    moto: String,
    _exclusive: test_servers::Exclusive,
}

/// moto for everything.
pub async fn moto() -> Aws {
    aws(AwsApi::Moto).await
}

/// moto for RDS and `api` for STS and IAM, brought up if need be; fails loudly when either cannot be.
pub async fn aws(api: AwsApi) -> Aws {
    let moto = test_servers::moto().await;
    let exclusive = Emulator::Moto
        .exclusive(&moto)
        .await
        .unwrap_or_else(|error| panic!("{}", error.report()));
    let reset = reqwest::Client::new()
        .post(format!("{moto}/moto-api/reset"))
        .send()
        .await;
    if let Err(error) = reset.and_then(reqwest::Response::error_for_status) {
        panic!("moto at {moto} refused the reset: {error}");
    }
    let (endpoint, account_id, access_key_id) = match api {
        AwsApi::Moto => (moto.clone(), MOTO_ACCOUNT_ID.to_owned(), MOTO_ACCESS_KEY_ID.to_owned()),
        AwsApi::LocalStack => {
            let endpoint = test_servers::localstack().await;
            let random = u64::from_be_bytes(Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"));
            let account_id = format!("{}", 100_000_000_000 + random % 900_000_000_000);
            (endpoint, account_id.clone(), account_id)
        }
    };
    Aws {
        endpoint,
        account_id,
        access_key_id,
        moto,
        _exclusive: exclusive,
    }
}

impl Aws {
    /// The ARN of role `name` in this test's account.
    #[must_use]
    pub fn role_arn(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:role/{name}", self.account_id)
    }

    /// An AWS configuration for the base credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.load(&self.access_key_id, BASE_SECRET_ACCESS_KEY, &self.endpoint)
            .await
    }

    /// An AWS configuration for the base credentials whose STS requests go through `emulator`'s STS pass-through,
    /// so that the emulator learns the credentials STS issues.
    pub async fn sdk_config_through(&self, emulator: &TestEmulator) -> SdkConfig {
        let sts = emulator
            .sts
            .as_deref()
            .expect("an emulator started with an STS upstream");
        self.load(&self.access_key_id, BASE_SECRET_ACCESS_KEY, sts).await
    }

    /// An AWS configuration with the given credentials.
    pub async fn sdk_config_signing_as(&self, access_key_id: &str, secret_access_key: &str) -> SdkConfig {
        self.load(access_key_id, secret_access_key, &self.endpoint).await
    }

    /// Gives each service its endpoint, so that every client the service builds from the configuration goes to the
    /// right emulator.
    async fn load(&self, access_key_id: &str, secret_access_key: &str, sts: &str) -> SdkConfig {
        let endpoints = ServiceEndpoints {
            rds: self.moto.clone(),
            sts: sts.to_owned(),
            iam: self.endpoint.clone(),
        };
        aws_config(access_key_id, secret_access_key)
            .await
            .to_builder()
            .service_config(endpoints)
            .build()
    }

    async fn rds(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&self.sdk_config().await)
    }

    /// Creates an Aurora cluster of `backend`'s engine, with IAM database authentication on or off, and returns
    /// its writer endpoint as `host:port`.
    pub async fn create_cluster(&self, id: &str, backend: Backend, iam: bool) -> String {
        let engine = if backend == Backend::MariaDbIam {
            "aurora-mysql"
        } else {
            "aurora-postgresql"
        };
        let cluster = self
            .rds()
            .await
            .create_db_cluster()
            .db_cluster_identifier(id)
            .engine(engine)
            .master_username("admin")
            .master_user_password("admin-password-1")
            .enable_iam_database_authentication(iam)
            .send()
            .await
            .expect("moto creates the cluster")
            .db_cluster
            .expect("a cluster");
        format!(
            "{}:{}",
            cluster.endpoint().expect("a writer endpoint"),
            cluster.port().expect("a port")
        )
    }

    /// Creates an RDS Proxy for PostgreSQL named `name` that requires IAM from its clients, in one of the default VPC's
    /// subnets, and returns its ARN.
    pub async fn create_proxy(&self, name: &str) -> String {
        use aws_sdk_rds::types::{AuthScheme, EngineFamily, IamAuthMode, UserAuthConfig};
        let proxy = self
            .rds()
            .await
            .create_db_proxy()
            .db_proxy_name(name)
            .engine_family(EngineFamily::Postgresql)
            .auth(
                UserAuthConfig::builder()
                    .auth_scheme(AuthScheme::Secrets)
                    .iam_auth(IamAuthMode::Required)
                    .secret_arn(format!(
                        "arn:aws:secretsmanager:us-east-1:{}:secret:tasks-db",
                        self.account_id
                    ))
                    .build(),
            )
            .role_arn(format!("arn:aws:iam::{}:role/tasks-proxy", self.account_id))
            .vpc_subnet_ids(self.default_subnet().await)
            .send()
            .await
            .expect("moto creates the proxy")
            .db_proxy
            .expect("a proxy");
        proxy.db_proxy_arn().expect("an ARN").to_owned()
    }

    /// A subnet of moto's default VPC, from EC2's DescribeSubnets (the suite has no EC2 client; moto does not check
    /// signatures, only which service a request's credential scope names).
    async fn default_subnet(&self) -> String {
        let answer = reqwest::Client::new()
            .post(&self.moto)
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTASKSTESTS/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, \
                 Signature=0",
            )
            .form(&[("Action", "DescribeSubnets"), ("Version", "2016-11-15")])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("moto describes its subnets")
            .text()
            .await
            .expect("an answer");
        let start = answer.find("<subnetId>").expect("moto's default VPC has subnets") + "<subnetId>".len();
        let end = start + answer[start..].find('<').expect("a closed subnetId");
        answer[start..end].to_owned()
    }

    /// Creates an RDS PostgreSQL instance with IAM database authentication on or off, and returns its endpoint as
    /// `host:port`.
    pub async fn create_instance(&self, id: &str, iam: bool) -> String {
        let instance = self
            .rds()
            .await
            .create_db_instance()
            .db_instance_identifier(id)
            .engine("postgres")
            .db_instance_class("db.t3.micro")
            .allocated_storage(20)
            .master_username("admin")
            .master_user_password("admin-password-1")
            .enable_iam_database_authentication(iam)
            .send()
            .await
            .expect("moto creates the instance")
            .db_instance
            .expect("an instance");
        let endpoint = instance.endpoint().expect("an endpoint");
        format!(
            "{}:{}",
            endpoint.address().expect("an address"),
            endpoint.port().expect("a port")
        )
    }

    /// The `DbClusterResourceId` RDS gave a cluster: what IAM policies name.
    pub async fn cluster_resource_id(&self, id: &str) -> String {
        self.rds()
            .await
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
            .expect("moto describes the cluster")
            .db_clusters()[0]
            .db_cluster_resource_id()
            .expect("a resource id")
            .to_owned()
    }
}

/// Service-specific endpoints, which the SDK's clients prefer to a global endpoint URL unless one was set in code:
/// what `AWS_ENDPOINT_URL_STS` or a config file's `services` section give users.
#[derive(Debug)]
struct ServiceEndpoints {
    rds: String,
    sts: String,
    iam: String,
}

impl LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.profile() != "endpoint_url" {
            return None;
        }
        match key.service_id() {
            "RDS" => Some(self.rds.clone()),
            "STS" => Some(self.sts.clone()),
            "IAM" => Some(self.iam.clone()),
            _ => None,
        }
    }
}
