use crate::TaskId;

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong when tasks are stored or read, in terms the caller can act on. The storage layer keeps its own
/// details in the source chain, for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("task {0} was not found")]
    NotFound(TaskId),
    #[error("task {0} already exists")]
    AlreadyExists(TaskId),
    /// The store cannot be reached now; retrying later may succeed.
    #[error("the task store is unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else the store reported.
    #[error("the task store failed")]
    Storage(#[source] Cause),
}
