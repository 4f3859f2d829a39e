//! Which endpoints the emulator serves: one, as an RDS instance or an RDS Proxy, or those of an Aurora cluster of two
//! instances (an endpoint for each instance, and optionally the cluster's writer and reader endpoints). Parsed from
//! the command line at start; a value of these types is always a layout the emulator can serve.

use std::net::SocketAddr;
use std::str::FromStr;

/// The names the cluster's own endpoints go by, in logs and statistics, which no instance may take.
pub(crate) const CLUSTER_ENDPOINT: &str = "cluster";
pub(crate) const READER_ENDPOINT: &str = "reader";
/// The name of the one endpoint, and its instance, in single-endpoint mode.
pub(crate) const SINGLE_INSTANCE: &str = "instance";

/// Why a layout was refused. The texts name the flag's syntax, for the command line's users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "`{0}` is not ADDRESS or ADDRESS@HOST:PORT (for example 127.0.0.1:5440@tasks.cluster-xyz.us-east-1.rds.amazonaws.com:5432)"
    )]
    Endpoint(String),
    #[error("`{0}` is not NAME=ADDRESS or NAME=ADDRESS@HOST:PORT (for example a=127.0.0.1:5441)")]
    Instance(String),
    #[error(
        "instance name `{0}` must be letters, digits, `-` and `_`, and neither `cluster` nor `reader` (the names of \
         the cluster's own endpoints)"
    )]
    InstanceName(String),
    #[error("a cluster has two instances, the writer first: give --instance twice, not {0} times")]
    InstanceCount(usize),
    #[error("both instances are named `{0}`; give them different names")]
    DuplicateInstance(String),
}

/// Where an endpoint listens, and the `host:port` tokens for it must be signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub listen: SocketAddr,
    /// The `host:port` tokens must name; the address actually listened on when `None`. Another name lets clients
    /// sign for an RDS host name (`tasks.cluster-xyz.us-east-1.rds.amazonaws.com:5432`) and reach the emulator
    /// through a tunnel or a hosts-file entry.
    pub signing_name: Option<String>,
}

impl EndpointSpec {
    /// An endpoint whose tokens are signed for its listen address.
    #[must_use]
    pub fn at(listen: SocketAddr) -> Self {
        Self {
            listen,
            signing_name: None,
        }
    }
}

/// `ADDRESS` or `ADDRESS@HOST:PORT`.
impl FromStr for EndpointSpec {
    type Err = LayoutError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || LayoutError::Endpoint(text.to_owned());
        let (listen, signing_name) = match text.split_once('@') {
            Some((listen, signing_name)) => {
                let (host, port) = signing_name.rsplit_once(':').ok_or_else(invalid)?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(invalid());
                }
                (listen, Some(signing_name.to_owned()))
            }
            None => (text, None),
        };
        Ok(Self {
            listen: listen.parse().map_err(|_| invalid())?,
            signing_name,
        })
    }
}

/// One instance of a cluster: its name (in logs, statistics and the control API) and its instance endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    name: String,
    pub endpoint: EndpointSpec,
}

impl InstanceSpec {
    /// # Errors
    ///
    /// When `name` is empty, holds other characters than letters, digits, `-` and `_`, or is one of the cluster
    /// endpoints' names.
    pub fn new(name: &str, endpoint: EndpointSpec) -> Result<Self, LayoutError> {
        let allowed = |character: char| character.is_ascii_alphanumeric() || character == '-' || character == '_';
        if name.is_empty() || !name.chars().all(allowed) || [CLUSTER_ENDPOINT, READER_ENDPOINT].contains(&name) {
            return Err(LayoutError::InstanceName(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            endpoint,
        })
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `NAME=ADDRESS` or `NAME=ADDRESS@HOST:PORT`.
impl FromStr for InstanceSpec {
    type Err = LayoutError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, endpoint) = text
            .split_once('=')
            .ok_or_else(|| LayoutError::Instance(text.to_owned()))?;
        Self::new(name, endpoint.parse()?)
    }
}

/// An Aurora cluster of two instances in front of the one upstream: the first starts as the writer, the second as
/// the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    instances: [InstanceSpec; 2],
    /// The cluster (writer) endpoint, which relays to the writer.
    pub cluster: Option<EndpointSpec>,
    /// The reader endpoint, which relays to the reader.
    pub reader: Option<EndpointSpec>,
}

impl ClusterLayout {
    /// # Errors
    ///
    /// Unless there are exactly two instances, with different names.
    pub fn new(
        instances: Vec<InstanceSpec>,
        cluster: Option<EndpointSpec>,
        reader: Option<EndpointSpec>,
    ) -> Result<Self, LayoutError> {
        let count = instances.len();
        let [writer, reader_instance]: [InstanceSpec; 2] =
            instances.try_into().map_err(|_| LayoutError::InstanceCount(count))?;
        if writer.name == reader_instance.name {
            return Err(LayoutError::DuplicateInstance(writer.name));
        }
        Ok(Self {
            instances: [writer, reader_instance],
            cluster,
            reader,
        })
    }

    /// The writer first, then the reader.
    #[must_use]
    pub fn instances(&self) -> &[InstanceSpec; 2] {
        &self.instances
    }
}

/// The endpoints the emulator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One endpoint and one instance behind it, always the writer: an RDS DB instance, or an RDS Proxy (give it the
    /// proxy's `name.proxy-xxxx.region.rds.amazonaws.com:5432` as its signing name).
    Single(EndpointSpec),
    /// An Aurora cluster of two instances.
    Cluster(Box<ClusterLayout>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_an_address_and_perhaps_a_name_to_sign_for() {
        assert_eq!(
            "127.0.0.1:5440".parse(),
            Ok(EndpointSpec::at(SocketAddr::from(([127, 0, 0, 1], 5440))))
        );
        assert_eq!(
            "[::1]:5440@tasks.cluster-xyz.us-east-1.rds.amazonaws.com:5432".parse(),
            Ok(EndpointSpec {
                listen: "[::1]:5440".parse().expect("an address"),
                signing_name: Some("tasks.cluster-xyz.us-east-1.rds.amazonaws.com:5432".to_owned()),
            })
        );
        for invalid in [
            "localhost:5440",
            "127.0.0.1",
            "127.0.0.1:5440@",
            "127.0.0.1:5440@tasks.example",
            "127.0.0.1:5440@:5432",
            "127.0.0.1:5440@tasks.example:port",
        ] {
            assert_eq!(
                invalid.parse::<EndpointSpec>(),
                Err(LayoutError::Endpoint(invalid.to_owned()))
            );
        }
    }

    #[test]
    fn instances_are_named_apart_from_the_cluster_endpoints() {
        let instance: InstanceSpec = "tasks-1=127.0.0.1:5441@tasks-1.xyz.us-east-1.rds.amazonaws.com:5432"
            .parse()
            .expect("an instance");
        assert_eq!(instance.name(), "tasks-1");
        assert_eq!(
            instance.endpoint.signing_name.as_deref(),
            Some("tasks-1.xyz.us-east-1.rds.amazonaws.com:5432")
        );

        assert_eq!(
            "127.0.0.1:5441".parse::<InstanceSpec>(),
            Err(LayoutError::Instance("127.0.0.1:5441".to_owned()))
        );
        for name in ["", "cluster", "reader", "a b", "a.b"] {
            assert_eq!(
                format!("{name}=127.0.0.1:5441").parse::<InstanceSpec>(),
                Err(LayoutError::InstanceName(name.to_owned()))
            );
        }
    }

    #[test]
    fn a_cluster_has_two_differently_named_instances() {
        let instance = |text: &str| text.parse::<InstanceSpec>().expect("an instance");

        let cluster = ClusterLayout::new(vec![instance("a=127.0.0.1:0"), instance("b=127.0.0.1:0")], None, None)
            .expect("a cluster");
        assert_eq!(cluster.instances().each_ref().map(InstanceSpec::name), ["a", "b"]);

        assert_eq!(
            ClusterLayout::new(vec![instance("a=127.0.0.1:0")], None, None),
            Err(LayoutError::InstanceCount(1))
        );
        assert_eq!(
            ClusterLayout::new(vec![instance("a=127.0.0.1:0"), instance("a=127.0.0.1:1")], None, None),
            Err(LayoutError::DuplicateInstance("a".to_owned()))
        );
    }
}
