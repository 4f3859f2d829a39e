//! What a database error means for the caller: the server refused the credentials (renew the token and retry), the
//! connection died under the statement (retry on another connection), the server is unavailable (retry later), or
//! anything else. One classifier for PostgreSQL and MySQL, for both the retry logic and the code that maps errors to
//! answers.

/// The kind of a database failure, as far as authentication and availability are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The server refused a new connection's credentials: an expired, revoked or wrongly signed token (SQLSTATE class
    /// 28, which MySQL's access-denied errors carry too). Renewing the token may help.
    AuthFailure,
    /// The connection was closed, reset or terminated before the statement's result came back: I/O and TLS errors,
    /// connection exceptions (08, but for 08P01, a protocol violation), an administrator's or a shutdown's
    /// termination (57P01, 57P02, 57P03), an idle session's time-out (57P05), and MySQL's "server gone away" family
    /// (2006, 2013, 4031, 1927). A pooled connection the server closed while it sat idle
    /// fails this way when next used, so running the statement again on a fresh connection usually succeeds; whether
    /// that is safe depends on the statement (it may have been applied before the connection broke).
    ConnectionLost,
    /// The server took the statement but cannot write: a reader, or an old writer that a failover turned into one
    /// and that the client still reaches through a cached DNS answer or a connection opened before the failover.
    /// PostgreSQL's 25006 (`read_only_sql_transaction`, which MySQL's 1792 carries too) and MySQL's 1290
    /// (`--read-only`, what an Aurora MySQL reader answers) and 1836 (`ER_READ_ONLY_MODE`). The connection is alive
    /// but on the wrong instance: a new one, opened after the cluster endpoint has moved, reaches the writer. Nothing
    /// was written, so running the statement again is always safe.
    ReadOnly,
    /// The server refused a new connection because log-ins come too fast: RDS's "IAM authentication failed because of
    /// too many competing requests", RDS Proxy's MySQL error 1040, or PostgreSQL's `too_many_connections` (53300).
    /// Nothing ran; backing off and trying again succeeds once the storm has passed.
    Throttled,
    /// No connection could be had: pool time-outs, a closed pool, insufficient resources (53). Worth retrying later.
    Unavailable,
    /// The transaction lost an optimistic-concurrency race and was rolled back: PostgreSQL's serialization failure
    /// (40001), and Aurora DSQL's OC000 (a conflict at commit) and OC001 (a schema change under the transaction).
    /// Nothing of it was applied; running the whole transaction again, not just its last statement, usually succeeds.
    SerializationConflict,
    /// Everything else: the statement itself failed.
    Other,
}

/// Classifies a sqlx error.
///
/// ```
/// use rds_iam::{ErrorClass, classify};
/// assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Unavailable);
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(classify(&sqlx::Error::Io(reset)), ErrorClass::ConnectionLost);
/// assert_eq!(classify(&sqlx::Error::RowNotFound), ErrorClass::Other);
/// ```
#[must_use]
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => ErrorClass::ConnectionLost,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => ErrorClass::Unavailable,
        sqlx::Error::Database(error) => mysql_class(error.as_ref())
            .unwrap_or_else(|| error.code().map_or(ErrorClass::Other, |code| classify_sqlstate(&code))),
        _ => ErrorClass::Other,
    }
}

/// MySQL errors whose class their number tells and their SQLSTATE does not: HY000 and 70100 are shared with
/// unrelated errors.
/// - Connection lost: 2006 and 2013 are the C client's "server has gone away" and "lost connection", which proxies
///   pass on; 4031 is the server closing an idle session (MySQL 8.0.24 and later; MariaDB gives that number to a DDL
///   error that DML never meets); 1927 is a session killed by `KILL`.
/// - Read-only: 1290 is `--read-only` refusing a statement (an Aurora MySQL reader), 1836 `ER_READ_ONLY_MODE`.
/// - Throttled: 1040, "too many connections", which RDS Proxy answers when IAM log-ins come too fast.
#[cfg(feature = "mysql")]
fn mysql_class(error: &dyn sqlx::error::DatabaseError) -> Option<ErrorClass> {
    match error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()?.number() {
        2006 | 2013 | 4031 | 1927 => Some(ErrorClass::ConnectionLost),
        1290 | 1836 => Some(ErrorClass::ReadOnly),
        1040 => Some(ErrorClass::Throttled),
        _ => None,
    }
}

#[cfg(not(feature = "mysql"))]
fn mysql_class(_: &dyn sqlx::error::DatabaseError) -> Option<ErrorClass> {
    None
}

/// Classifies a SQLSTATE.
#[must_use]
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    if code.len() != 5 {
        // Not a SQLSTATE: SQLite's numeric result codes (2835 is not an authentication failure).
        ErrorClass::Other
    } else if ["40001", "OC000", "OC001"].contains(&code) {
        ErrorClass::SerializationConflict
    } else if code.starts_with("28") {
        ErrorClass::AuthFailure
    } else if code == "08P01" {
        // A protocol violation (a wrong number of bind parameters, say): the statement's fault, and the session
        // usually stays up.
        ErrorClass::Other
    } else if code.starts_with("08") || ["57P01", "57P02", "57P03", "57P05"].contains(&code) {
        ErrorClass::ConnectionLost
    } else if code == "25006" {
        ErrorClass::ReadOnly
    } else if code == "53300" {
        ErrorClass::Throttled
    } else if code.starts_with("53") || code.starts_with("57P") {
        ErrorClass::Unavailable
    } else {
        ErrorClass::Other
    }
}

/// Errors that can say whether they are a refused credential; implemented for `sqlx::Error` and, with the `sea-orm`
/// feature, `sea_orm::DbErr`.
pub trait Classify {
    /// The error's class.
    fn class(&self) -> ErrorClass;

    /// Whether the server refused a new connection's credentials.
    fn is_auth_failure(&self) -> bool {
        self.class() == ErrorClass::AuthFailure
    }
}

impl Classify for sqlx::Error {
    fn class(&self) -> ErrorClass {
        classify(self)
    }
}

#[cfg(feature = "sea-orm")]
impl Classify for sea_orm::DbErr {
    fn class(&self) -> ErrorClass {
        use sea_orm::{DbErr, RuntimeErr};
        match self {
            // Any failure to obtain a connection, whether the pool is exhausted or a new connection is refused: no
            // statement was sent, and the pool has already waited and retried as long as it was allowed to.
            DbErr::ConnectionAcquire(_) => ErrorClass::Unavailable,
            // A new connection refused for its credentials or for coming too fast, or cut off or turned away while
            // the server restarts (MySQL's 1053, 08S01, where PostgreSQL's 57P03 is waited out by the pool): each
            // has its own remedy. Anything else that stops a connection opening is the server's lasting state.
            DbErr::Conn(RuntimeErr::SqlxError(error)) => match classify(error) {
                class @ (ErrorClass::AuthFailure | ErrorClass::Throttled | ErrorClass::ConnectionLost) => class,
                _ => ErrorClass::Unavailable,
            },
            DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => classify(error),
            DbErr::Conn(_) => ErrorClass::Unavailable,
            _ => ErrorClass::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_fall_into_their_classes() {
        for (code, class) in [
            ("28P01", ErrorClass::AuthFailure),
            ("28000", ErrorClass::AuthFailure),
            ("08006", ErrorClass::ConnectionLost),
            ("08P01", ErrorClass::Other),
            ("53300", ErrorClass::Throttled),
            ("53200", ErrorClass::Unavailable),
            ("25006", ErrorClass::ReadOnly),
            ("25001", ErrorClass::Other),
            ("57P01", ErrorClass::ConnectionLost),
            ("57P02", ErrorClass::ConnectionLost),
            ("57P03", ErrorClass::ConnectionLost),
            ("57P04", ErrorClass::Unavailable),
            ("57P05", ErrorClass::ConnectionLost),
            ("2835", ErrorClass::Other),
            ("5", ErrorClass::Other),
            ("23505", ErrorClass::Other),
            ("42P01", ErrorClass::Other),
            ("57014", ErrorClass::Other),
            ("40001", ErrorClass::SerializationConflict),
            ("OC000", ErrorClass::SerializationConflict),
            ("OC001", ErrorClass::SerializationConflict),
            ("40P01", ErrorClass::Other),
        ] {
            assert_eq!(classify_sqlstate(code), class, "{code}");
        }
    }
}
