use std::future::Future;

use crate::{DomainError, Page, PageRequest, Task, TaskId, TaskName};

/// What a read may miss. A store with replicas serves eventual reads from them, which may lag behind the writes
/// acknowledged a moment before; a strong read sees every one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Possibly a moment behind: enough for most reads, and it spares the primary.
    #[default]
    Eventual,
    /// Every write acknowledged before the read began, for a client that reads back what it just wrote.
    Strong,
}

/// Where tasks are kept. Implementations must make each call atomic: a call that fails has changed nothing.
pub trait TaskRepository: Send + Sync + 'static {
    /// Stores a new task; [`DomainError::AlreadyExists`] when its id is taken.
    fn create(&self, task: &Task) -> impl Future<Output = Result<(), DomainError>> + Send;

    /// The task with this id, or [`DomainError::NotFound`].
    fn get(&self, id: TaskId, consistency: Consistency) -> impl Future<Output = Result<Task, DomainError>> + Send;

    /// The page of tasks that follows `request.after`, in id order.
    fn list(
        &self,
        request: PageRequest,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Page, DomainError>> + Send;

    /// Gives the task a new name and returns it, or [`DomainError::NotFound`].
    fn rename(&self, id: TaskId, name: TaskName) -> impl Future<Output = Result<Task, DomainError>> + Send;

    /// Removes the task, or [`DomainError::NotFound`] when there was none.
    fn delete(&self, id: TaskId) -> impl Future<Output = Result<(), DomainError>> + Send;
}
