//! Only IAM users get in: a valid token is refused for a user that has not been granted `rds_iam`, as RDS refuses
//! it for a user that is not an IAM user, and a grant or its revocation counts from the next log-in on.

use std::time::{SystemTime, UNIX_EPOCH};

use rds_iam_emulator::testing::EmulatorOptions;

use crate::support::{self, Engine, refusal};

on_both_engines!(
    a_valid_token_gets_in_only_while_its_user_is_granted_rds_iam,
    the_upstreams_administrator_is_not_an_iam_user,
);

async fn a_valid_token_gets_in_only_while_its_user_is_granted_rds_iam(engine: Engine) {
    let emulator = support::start(engine, EmulatorOptions::default()).await;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let user = format!("emulator_grant_{nanos:x}");
    let account = match engine {
        Engine::Postgres => format!("\"{user}\""),
        Engine::MariaDb => format!("'{user}'@'%'"),
    };
    emulator.administer(&format!("CREATE USER {account}")).await;
    let token = support::token(&emulator, &user).await;

    let before = support::client(engine, &emulator, &user, &token, "SELECT 1").await;
    emulator.administer(&format!("GRANT rds_iam TO {account}")).await;
    let granted = support::client(engine, &emulator, &user, &token, "SELECT 1").await;
    emulator.administer(&format!("REVOKE rds_iam FROM {account}")).await;
    let revoked = support::client(engine, &emulator, &user, &token, "SELECT 1").await;
    emulator.administer(&format!("DROP USER {account}")).await;

    for refused in [before, revoked] {
        let refused = refused.expect_err("not granted rds_iam");
        assert!(refused.contains(&refusal(engine, &user)), "{refused}");
    }
    assert_eq!(granted.as_deref(), Ok("1"));
    assert_eq!((emulator.counts.accepted(), emulator.counts.refused()), (1, 2));
}

async fn the_upstreams_administrator_is_not_an_iam_user(engine: Engine) {
    // A PostgreSQL superuser counts as a member of every role for pg_has_role, but not for RDS; MariaDB records the
    // role's creator (the emulator's user, here the administrator) as granted it WITH ADMIN OPTION.
    let emulator = support::start(engine, EmulatorOptions::default()).await;
    let admin = emulator.upstream().username().to_owned();
    let token = support::token(&emulator, &admin).await;

    let refused = support::client(engine, &emulator, &admin, &token, "SELECT 1")
        .await
        .expect_err("not granted rds_iam");

    assert!(refused.contains(&refusal(engine, &admin)), "{refused}");
    assert_eq!(emulator.counts.refused(), 1);
}
