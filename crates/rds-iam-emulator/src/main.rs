use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rds_iam_emulator::credentials::CredentialStore;
use rds_iam_emulator::policy::Authorization;
use rds_iam_emulator::{
    ClusterLayout, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Emulator, EndpointSpec, InstanceSpec, Layout,
    Options, StsPassThrough,
};
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::EnvFilter;

/// Verifies RDS IAM (or Aurora DSQL) authentication tokens like AWS does, then relays the session to a real PostgreSQL
/// or MySQL/MariaDB.
#[derive(Debug, Parser)]
#[command(name = "rds-iam-emulator", version, about)]
struct Cli {
    /// Address to listen on, for a single endpoint (an RDS instance, or an RDS Proxy).
    #[arg(long, default_value = "127.0.0.1:5433", conflicts_with = "instance")]
    listen: SocketAddr,
    /// The real server, postgres://[user[:password]@]host:port[/database] or mysql://[user[:password]@]host:port;
    /// sessions open there as the client's user, so give the emulator trust authentication (PostgreSQL) or users
    /// without a password (MySQL). The URL's user (postgres or root by default) is the emulator's own: it creates the
    /// role rds_iam when absent and asks who has been granted it, as only those users may log in with a token.
    #[arg(long, default_value = "postgres://127.0.0.1:5432")]
    // Parsed in `main`: clap would quote a value it cannot parse, password included, in its error.
    upstream: SecretString,
    /// The region tokens must be signed for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// An `~/.aws/credentials`-style file with the secret keys of the access keys that may sign tokens.
    #[arg(long)]
    credentials: PathBuf,
    /// Where to write `ca.pem`, the CA that signs the emulator's certificate.
    #[arg(long, default_value = ".")]
    tls_dir: PathBuf,
    /// The host:port tokens must be signed for (default: the listen address), such as an RDS Proxy's
    /// name.proxy-xxxx.region.rds.amazonaws.com:5432.
    #[arg(long, conflicts_with = "instance")]
    endpoint: Option<String>,
    /// Cluster mode: an Aurora instance's endpoint, given twice, the writer first. Both front the one upstream; the
    /// reader's sessions are read-only. Tokens are signed for HOST:PORT, by default the listen address.
    #[arg(long, value_name = "NAME=ADDR[@HOST:PORT]")]
    instance: Vec<InstanceSpec>,
    /// Cluster mode: the cluster (writer) endpoint, which relays to the writer.
    #[arg(long, value_name = "ADDR[@HOST:PORT]")]
    cluster_listen: Option<EndpointSpec>,
    /// Cluster mode: the reader endpoint, which relays to the reader.
    #[arg(long, value_name = "ADDR[@HOST:PORT]")]
    reader_listen: Option<EndpointSpec>,
    /// Where the control API listens: POST /failover?downtime_ms=N&stale_dns_ms=M, GET /stats.
    #[arg(long, value_name = "ADDR")]
    control_listen: Option<SocketAddr>,
    /// Refuse log-ins with a valid token beyond this many per second on each instance, with RDS's throttling
    /// message.
    #[arg(long, value_name = "N")]
    max_auth_per_sec: Option<NonZeroU32>,
    /// Refuse tokens older than this many seconds, whatever their own lifetime (RDS's are at most 900), for rotation
    /// tests.
    #[arg(long, default_value_t = 900)]
    max_token_age: u64,
    /// Also accept temporary credentials issued by the STS at this URL (moto, LocalStack): the emulator forwards STS
    /// requests sent to --sts-listen there and learns the credentials in the answers. Point the client's STS
    /// endpoint (AWS_ENDPOINT_URL_STS) at --sts-listen.
    #[arg(long, value_name = "URL")]
    sts_upstream: Option<url::Url>,
    /// Where the STS pass-through listens, with --sts-upstream.
    #[arg(long, default_value = "127.0.0.1:5434", requires = "sts_upstream")]
    sts_listen: SocketAddr,
    /// Seconds a database client may take from connecting until its upstream session is open, and an STS client to
    /// send its request's headers, and again its body.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    handshake_timeout: u64,
    /// Database connections open at once (authenticating or relaying); more are refused as a full server refuses.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// A JSON file mapping access key ids and role ARNs to IAM policy documents: a token is then accepted only when
    /// they allow rds-db:connect on arn:aws:rds-db:REGION:ACCOUNT-ID:dbuser:RESOURCE-ID/USER, as RDS asks IAM.
    /// Without it, any known key may connect as any user.
    #[arg(long, value_name = "FILE", requires_all = ["account_id", "resource_id"])]
    policy: Option<PathBuf>,
    /// With --policy, the account in the database's ARNs.
    #[arg(long, requires = "policy")]
    account_id: Option<String>,
    /// With --policy, the database's resource id (DbiResourceId, or the cluster's DbClusterResourceId).
    #[arg(long, requires = "policy")]
    resource_id: Option<String>,
    /// Stand in for Aurora DSQL: verify DSQL tokens (service dsql; action DbConnectAdmin for the role admin and
    /// DbConnect for others; signed for the host of --endpoint, without its port, such as
    /// CLUSTER.dsql.REGION.on.aws). Any role of the PostgreSQL upstream may log in.
    #[arg(long, conflicts_with_all = ["instance", "policy"])]
    dsql: bool,
    /// With --dsql, answer this share (0 to 1) of COMMITs and of writes outside a transaction with SQLSTATE OC000,
    /// as DSQL answers an optimistic-concurrency conflict, without carrying them out.
    #[arg(long, value_name = "R", default_value_t = 0.0, requires = "dsql")]
    occ_conflict_rate: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Refusals carry client text (a token's Action, a user name): escaped, it cannot forge a line.
    tracing_subscriber::fmt()
        .fmt_fields(log_fields::escaping())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let upstream = url::Url::parse(cli.upstream.expose_secret())
        .map_err(|error| anyhow::anyhow!("--upstream is not a URL: {error}"))?;
    let credentials = CredentialStore::load(&cli.credentials)
        .with_context(|| format!("reading --credentials {}", cli.credentials.display()))?;
    anyhow::ensure!(
        !credentials.is_empty() || cli.sts_upstream.is_some(),
        "--credentials {} has no profile with both aws_access_key_id and aws_secret_access_key",
        cli.credentials.display()
    );
    let authorization = match (cli.policy, cli.account_id, cli.resource_id) {
        (Some(policy), Some(account_id), Some(resource_id)) => Some(
            Authorization::load(&policy, account_id, resource_id)
                .with_context(|| format!("reading --policy {}", policy.display()))?,
        ),
        _ => None,
    };
    // Checked here rather than with clap's `requires`, which gives way to --listen's conflict with --instance and
    // would then start a single endpoint without a word.
    anyhow::ensure!(
        !cli.instance.is_empty() || (cli.cluster_listen.is_none() && cli.reader_listen.is_none()),
        "--cluster-listen and --reader-listen are for cluster mode: give --instance NAME=ADDR twice, the writer first"
    );
    let layout = if cli.instance.is_empty() {
        Layout::Single(EndpointSpec {
            listen: cli.listen,
            signing_name: cli.endpoint,
        })
    } else {
        Layout::Cluster(Box::new(
            ClusterLayout::new(cli.instance, cli.cluster_listen, cli.reader_listen)
                .map_err(|error| anyhow::anyhow!("--instance: {error}"))?,
        ))
    };
    let emulator = Emulator::bind(Options {
        layout,
        upstream,
        region: cli.region,
        credentials,
        tls_dir: cli.tls_dir,
        max_token_age: Duration::from_secs(cli.max_token_age),
        sts: cli.sts_upstream.map(|upstream| StsPassThrough {
            listen: cli.sts_listen,
            upstream,
        }),
        handshake_timeout: Duration::from_secs(cli.handshake_timeout),
        max_connections: cli.max_connections,
        authorization,
        max_auth_per_sec: cli.max_auth_per_sec,
        control_listen: cli.control_listen,
        dsql: cli.dsql,
        occ_conflict_rate: cli.occ_conflict_rate,
    })
    .await?;
    tokio::select! {
        () = emulator.run() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}
