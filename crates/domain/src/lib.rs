//! The tasks domain: what a task is, which names are acceptable, how pages of tasks are asked for, and the contract a
//! task store must honour. Nothing here knows about SQL or HTTP, so every rule is testable on its own.

mod error;
mod page;
mod repository;
mod task;

pub use error::DomainError;
pub use page::{Page, PageLimit, PageLimitError, PageRequest};
pub use repository::{Consistency, TaskRepository};
pub use task::{Task, TaskId, TaskIdError, TaskName, TaskNameError};
