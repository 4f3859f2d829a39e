//! What IAM authentication costs: signing a token (once per renewal, never on the request path) and reading the
//! current one (once per new connection). `cargo bench -p rds-iam`.

use std::hint::black_box;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use criterion::{Criterion, criterion_group, criterion_main};
use rds_iam::{RdsTokenSigner, RefreshPolicy, TokenLifetime, TokenRefresher, TokenTarget};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn signer() -> RdsTokenSigner {
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
    RdsTokenSigner::new(target, None, TokenLifetime::MAX, Some(aws))
        .await
        .expect("a token signer")
}

fn token_generation(c: &mut Criterion) {
    let runtime = runtime();
    let signer = runtime.block_on(signer());
    c.bench_function("sign a new IAM token", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(signer.sign().await.expect("a token")) });
    });
}

fn current_token(c: &mut Criterion) {
    let runtime = runtime();
    let refresher = runtime.block_on(async {
        TokenRefresher::start(signer().await, RefreshPolicy::default(), |_| {})
            .await
            .expect("a refresher")
    });
    c.bench_function("read the current IAM token", |b| {
        b.iter(|| black_box(refresher.current()))
    });
}

criterion_group!(benches, token_generation, current_token);
criterion_main!(benches);
