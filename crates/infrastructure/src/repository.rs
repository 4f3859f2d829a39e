//! The SeaORM implementation of [`TaskRepository`]: one statement per call, so each call is atomic without an
//! explicit transaction.

use domain::{DomainError, Page, PageRequest, Task, TaskId, TaskName, TaskRepository};
use entity::tasks;
use rds_iam::{Classify, ErrorClass};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr};

use crate::Database;

/// Tasks kept in the `tasks` table of a PostgreSQL or SQLite database. Every call goes through [`Database::run`], so
/// a connection refused for an expired token is retried once with a fresh one.
#[derive(Debug, Clone)]
pub struct SeaOrmTaskRepository {
    database: Database,
}

impl SeaOrmTaskRepository {
    #[must_use]
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

impl TaskRepository for SeaOrmTaskRepository {
    #[tracing::instrument(name = "insert task", skip_all, fields(task.id = %task.id))]
    async fn create(&self, task: &Task) -> Result<(), DomainError> {
        let connection = self.database.connection();
        self.database
            .run(|| {
                let row = tasks::ActiveModel {
                    id: Set(*task.id.as_uuid()),
                    name: Set(task.name.as_str().to_owned()),
                };
                tasks::Entity::insert(row).exec_without_returning(connection)
            })
            .await
            .map(drop)
            .map_err(|error| match error.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => DomainError::AlreadyExists(task.id),
                _ => storage_error(error),
            })
    }

    #[tracing::instrument(name = "select task", skip(self))]
    async fn get(&self, id: TaskId) -> Result<Task, DomainError> {
        let connection = self.database.connection();
        self.database
            .run(|| tasks::Entity::find_by_id(*id.as_uuid()).one(connection))
            .await
            .map_err(storage_error)?
            .map(task_from_row)
            .ok_or(DomainError::NotFound(id))
    }

    #[tracing::instrument(name = "select page of tasks", skip(self))]
    async fn list(&self, request: PageRequest) -> Result<Page, DomainError> {
        let limit = usize::from(request.limit.get());
        let connection = self.database.connection();
        let mut rows = self
            .database
            .run(|| {
                let mut query = tasks::Entity::find().order_by_asc(tasks::Column::Id);
                if let Some(after) = request.after {
                    query = query.filter(tasks::Column::Id.gt(*after.as_uuid()));
                }
                // One row more than asked for tells whether another page follows, without a COUNT over the table.
                query.limit(u64::from(request.limit.get()) + 1).all(connection)
            })
            .await
            .map_err(storage_error)?;
        let next_after = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| TaskId::from_uuid(row.id))
        } else {
            None
        };
        Ok(Page {
            tasks: rows.into_iter().map(task_from_row).collect(),
            next_after,
        })
    }

    #[tracing::instrument(name = "rename task", skip_all, fields(task.id = %id))]
    async fn rename(&self, id: TaskId, name: TaskName) -> Result<Task, DomainError> {
        let connection = self.database.connection();
        let result = self
            .database
            .run(|| {
                tasks::Entity::update_many()
                    .col_expr(tasks::Column::Name, Expr::value(name.as_str()))
                    .filter(tasks::Column::Id.eq(*id.as_uuid()))
                    .exec(connection)
            })
            .await
            .map_err(storage_error)?;
        if result.rows_affected == 0 {
            return Err(DomainError::NotFound(id));
        }
        Ok(Task { id, name })
    }

    #[tracing::instrument(name = "delete task", skip(self))]
    async fn delete(&self, id: TaskId) -> Result<(), DomainError> {
        let connection = self.database.connection();
        let result = self
            .database
            .run(|| tasks::Entity::delete_by_id(*id.as_uuid()).exec(connection))
            .await
            .map_err(storage_error)?;
        if result.rows_affected == 0 {
            return Err(DomainError::NotFound(id));
        }
        Ok(())
    }
}

fn task_from_row(row: tasks::Model) -> Task {
    Task {
        id: TaskId::from_uuid(row.id),
        name: TaskName::lossy(row.name),
    }
}

/// Separates "the database cannot be reached now" (503, worth retrying) from every other failure (500).
fn storage_error(error: DbErr) -> DomainError {
    if is_unavailable(&error) {
        DomainError::Unavailable(Box::new(error))
    } else {
        DomainError::Storage(Box::new(error))
    }
}

/// The server could not be reached, dropped the session or refused the connection's credentials: the classes
/// `rds-iam` sorts errors into, shared with its retry logic.
fn is_unavailable(error: &DbErr) -> bool {
    matches!(error.class(), ErrorClass::Unavailable | ErrorClass::AuthFailure)
}
