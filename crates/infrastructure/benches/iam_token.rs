//! What IAM authentication costs: signing a token (once per renewal, never on the request path) and reading the
//! current one (once per new connection). `cargo bench -p infrastructure`.

use std::hint::black_box;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use criterion::{Criterion, criterion_group, criterion_main};
use infrastructure::iam::{IamTokenSource, RefreshPolicy, TokenRefresher, TokenTarget};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn source() -> IamTokenSource {
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIABENCHMARK0000001",
            "bench/secret",
            None,
            None,
            "bench",
        ))
        .load()
        .await;
    let target = TokenTarget {
        host: "tasks.cluster-c9di9qmu8xqw.us-east-1.rds.amazonaws.com".to_owned(),
        port: 5432,
        user: "db_iam_user".to_owned(),
    };
    IamTokenSource::new(target, None, Duration::from_secs(900), Some(aws))
        .await
        .expect("a token source")
}

fn token_generation(c: &mut Criterion) {
    let runtime = runtime();
    let source = runtime.block_on(source());
    c.bench_function("sign a new IAM token", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(source.generate().await.expect("a token")) });
    });
}

fn current_token(c: &mut Criterion) {
    let runtime = runtime();
    let policy = RefreshPolicy {
        refresh_fraction: 0.8,
        jitter_fraction: 0.05,
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(30),
    };
    let refresher = runtime.block_on(async {
        TokenRefresher::start(source().await, policy, |_| {})
            .await
            .expect("a refresher")
    });
    c.bench_function("read the current IAM token", |b| {
        b.iter(|| black_box(refresher.current()))
    });
}

criterion_group!(benches, token_generation, current_token);
criterion_main!(benches);
