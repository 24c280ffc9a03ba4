//! PostgreSQL's errors in the metadata store's terms.

use tokio_postgres::error::SqlState;

use crate::meta::MetaError;

/// A database error in the store's terms: unreachable is [`MetaError::Unavailable`], a full disk
/// is [`MetaError::Full`].
pub fn db_error(e: tokio_postgres::Error) -> MetaError {
    let unavailable = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CONNECTION_FAILURE,
        SqlState::CONNECTION_EXCEPTION,
    ];
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL => MetaError::Full,
        Some(c) if unavailable.contains(c) => MetaError::Unavailable(e.to_string()),
        Some(_) => MetaError::Db(db_message(&e)),
        // No SQLSTATE: the connection broke, or never opened.
        None if e.is_closed() || std::error::Error::source(&e).is_some() => {
            MetaError::Unavailable(db_message(&e))
        }
        None => MetaError::Db(db_message(&e)),
    }
}

/// The error with its cause (tokio-postgres keeps the interesting part in the source).
fn db_message(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

pub fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// A failed statement inside a transaction: kept whole, so the retry loop can tell a deadlock.
pub enum Failure {
    Db(tokio_postgres::Error),
    Meta(MetaError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<MetaError> for Failure {
    fn from(e: MetaError) -> Self {
        Failure::Meta(e)
    }
}

impl From<Failure> for MetaError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Db(e) => db_error(e),
            Failure::Meta(e) => e,
        }
    }
}

pub type TxResult<T> = std::result::Result<T, Failure>;
