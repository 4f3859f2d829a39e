//! The suite's AWS: moto in server mode (`AWS_ENDPOINT_URL`, default `http://127.0.0.1:5000`), which `.ci/run`
//! installs and starts. Tests that reset its state hold a lock, so that they do not wipe each other's.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::Backend;
use crate::iam::REGION;

/// The account moto puts everything in.
pub const ACCOUNT_ID: &str = "123456789012";
/// Long-term credentials that moto accepts and the RDS IAM emulator does not know: a token the emulator accepts was
/// not signed with these.
pub const BASE_ACCESS_KEY_ID: &str = "AKIAMOTOBASEKEY00001";
pub const BASE_SECRET_ACCESS_KEY: &str = "moto/base+secret=never-logged";

static MOTO: Mutex<()> = Mutex::const_new(());

/// Exclusive use of a freshly reset moto.
#[derive(Debug)]
pub struct Moto {
    pub endpoint: String,
    client: reqwest::Client,
    _exclusive: MutexGuard<'static, ()>,
}

/// Waits for moto to be free, resets it, and hands it over; fails loudly when moto is not running.
pub async fn moto() -> Moto {
    let exclusive = MOTO.lock().await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let client = reqwest::Client::new();
    let reset = client.post(format!("{endpoint}/moto-api/reset")).send().await;
    if let Err(error) = reset.and_then(reqwest::Response::error_for_status) {
        panic!(
            "moto must be running at {endpoint} for this test (.ci/run starts it; by hand: pip install \
             'moto[server]' && moto_server -H 127.0.0.1 -p 5000): {error}"
        );
    }
    Moto {
        endpoint,
        client,
        _exclusive: exclusive,
    }
}

impl Moto {
    /// An AWS configuration whose every service is moto, with [`BASE_ACCESS_KEY_ID`] as credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_signing_as(BASE_ACCESS_KEY_ID, BASE_SECRET_ACCESS_KEY)
            .await
    }

    /// An AWS configuration whose every service is moto, with the given credentials (moto accepts any).
    pub async fn sdk_config_signing_as(&self, access_key_id: &str, secret_access_key: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "moto-tests",
            ))
            .load()
            .await
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

    /// The roles moto's STS has handed out credentials for: each with `role_arn`, `session_name`, `external_id`
    /// and `access_key_id`.
    pub async fn assumed_roles(&self) -> Vec<Value> {
        let state: Value = self
            .client
            .get(format!("{}/moto-api/data.json", self.endpoint))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("moto's state")
            .json()
            .await
            .expect("moto's state is JSON");
        state["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default()
    }
}
