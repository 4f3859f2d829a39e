//! Finding a database's endpoint from its RDS identifier (`DescribeDBClusters` / `DescribeDBInstances`) instead of
//! hard-coding host names, and refusing databases whose IAM authentication is off before any token is signed.
//! Needs the `discovery` feature and the `rds:DescribeDBClusters` or `rds:DescribeDBInstances` permission.

use aws_config::SdkConfig;
use aws_sdk_rds::Client;
use aws_sdk_rds::error::ProvideErrorMetadata;

use crate::error::BoxError;
pub use crate::settings::DatabaseResource;

/// Where a resource answers, and what RDS says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredEndpoint {
    pub host: String,
    pub port: u16,
    /// `DbClusterResourceId` or `DbiResourceId`: what `rds-db:connect` policies name.
    pub resource_id: String,
}

/// Why no endpoint could be had for a resource.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    #[error("{0} was not found in this account and region (check the identifier and AWS_REGION)")]
    NotFound(DatabaseResource),
    #[error(
        "{0} has IAM database authentication turned off, so RDS would refuse every token; turn it on with `{cmd}`",
        cmd = .0.enable_iam_command()
    )]
    IamDisabled(DatabaseResource),
    #[error("{0} has no endpoint yet (is it still being created?)")]
    NoEndpoint(DatabaseResource),
    #[error("cannot describe {resource}")]
    Api {
        resource: DatabaseResource,
        #[source]
        source: BoxError,
    },
}

/// What RDS says about a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub endpoint: DiscoveredEndpoint,
    pub iam_enabled: bool,
}

/// Looks `resource` up and returns the endpoint to sign tokens for, refusing one whose IAM authentication is off.
pub async fn discover(aws: &SdkConfig, resource: &DatabaseResource) -> Result<DiscoveredEndpoint, DiscoveryError> {
    let description = describe(aws, resource).await?;
    if !description.iam_enabled {
        return Err(DiscoveryError::IamDisabled(resource.clone()));
    }
    Ok(description.endpoint)
}

/// Looks `resource` up with `DescribeDBClusters` or `DescribeDBInstances`.
pub async fn describe(aws: &SdkConfig, resource: &DatabaseResource) -> Result<Description, DiscoveryError> {
    let client = Client::new(aws);
    let (host, port, resource_id, iam_enabled) = match resource {
        DatabaseResource::Cluster { id, reader } => {
            let output = client
                .describe_db_clusters()
                .db_cluster_identifier(id)
                .send()
                .await
                .map_err(|error| api_error(resource, error, "DBClusterNotFoundFault"))?;
            let cluster = output
                .db_clusters()
                .first()
                .ok_or_else(|| DiscoveryError::NotFound(resource.clone()))?;
            let host = if *reader {
                cluster.reader_endpoint()
            } else {
                cluster.endpoint()
            };
            (
                host.map(str::to_owned),
                cluster.port(),
                cluster.db_cluster_resource_id().map(str::to_owned),
                cluster.iam_database_authentication_enabled() == Some(true),
            )
        }
        DatabaseResource::Instance { id } => {
            let output = client
                .describe_db_instances()
                .db_instance_identifier(id)
                .send()
                .await
                .map_err(|error| api_error(resource, error, "DBInstanceNotFound"))?;
            let instance = output
                .db_instances()
                .first()
                .ok_or_else(|| DiscoveryError::NotFound(resource.clone()))?;
            let address = instance.endpoint();
            (
                address.and_then(|endpoint| endpoint.address()).map(str::to_owned),
                address.and_then(|endpoint| endpoint.port()),
                instance.dbi_resource_id().map(str::to_owned),
                instance.iam_database_authentication_enabled() == Some(true),
            )
        }
    };
    match (host, port.and_then(|port| u16::try_from(port).ok()), resource_id) {
        (Some(host), Some(port), Some(resource_id)) if !host.is_empty() => Ok(Description {
            endpoint: DiscoveredEndpoint {
                host,
                port,
                resource_id,
            },
            iam_enabled,
        }),
        _ => Err(DiscoveryError::NoEndpoint(resource.clone())),
    }
}

fn api_error<E>(resource: &DatabaseResource, error: E, not_found_code: &str) -> DiscoveryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if error.code() == Some(not_found_code) {
        DiscoveryError::NotFound(resource.clone())
    } else {
        DiscoveryError::Api {
            resource: resource.clone(),
            source: error.into(),
        }
    }
}
