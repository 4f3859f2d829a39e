//! What a database error means for the caller: the server refused the credentials (renew the token and retry), the
//! connection or server is unavailable (retry later), or anything else. One classifier for PostgreSQL and MySQL, for
//! both the retry logic and the code that maps errors to answers.

/// The kind of a database failure, as far as authentication and availability are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The server refused a new connection's credentials: an expired, revoked or wrongly signed token (SQLSTATE class
    /// 28, which MySQL's access-denied errors carry too). Renewing the token may help.
    AuthFailure,
    /// The server could not be reached or dropped the session: I/O and TLS errors, pool time-outs, connection
    /// exceptions (08), insufficient resources (53), shutdowns and restarts (57P). Worth retrying later.
    Unavailable,
    /// Everything else: the statement itself failed.
    Other,
}

/// Classifies a sqlx error.
///
/// ```
/// use rds_iam::{ErrorClass, classify};
/// assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Unavailable);
/// assert_eq!(classify(&sqlx::Error::RowNotFound), ErrorClass::Other);
/// ```
#[must_use]
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorClass::Unavailable,
        sqlx::Error::Database(error) => error.code().map_or(ErrorClass::Other, |code| classify_sqlstate(&code)),
        _ => ErrorClass::Other,
    }
}

/// Classifies a SQLSTATE.
#[must_use]
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    if code.starts_with("28") {
        ErrorClass::AuthFailure
    } else if ["08", "53", "57P"].iter().any(|class| code.starts_with(class)) {
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
            // Any failure to obtain a connection, whether the pool is exhausted or a new connection is refused.
            DbErr::ConnectionAcquire(_) => ErrorClass::Unavailable,
            DbErr::Conn(RuntimeErr::SqlxError(error))
            | DbErr::Exec(RuntimeErr::SqlxError(error))
            | DbErr::Query(RuntimeErr::SqlxError(error)) => match classify(error) {
                ErrorClass::Other if matches!(self, DbErr::Conn(_)) => ErrorClass::Unavailable,
                class => class,
            },
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
            ("08006", ErrorClass::Unavailable),
            ("53300", ErrorClass::Unavailable),
            ("57P01", ErrorClass::Unavailable),
            ("57P03", ErrorClass::Unavailable),
            ("23505", ErrorClass::Other),
            ("42P01", ErrorClass::Other),
            ("57014", ErrorClass::Other),
        ] {
            assert_eq!(classify_sqlstate(code), class, "{code}");
        }
    }
}
