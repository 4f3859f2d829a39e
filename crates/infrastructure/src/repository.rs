//! The SeaORM implementation of [`TaskRepository`]: one statement per call, so each call is atomic without an
//! explicit transaction. (A creation may share its INSERT with others, which is atomic too; when it goes row by row,
//! each row is its own creation's.)

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use domain::{Consistency, DomainError, Page, PageRequest, Task, TaskId, TaskName, TaskRepository};
use entity::tasks;
use rds_iam::{Classify, ErrorClass, error_chain};
use sea_orm::prelude::Uuid;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QueryResult, QuerySelect,
    QueryTrait, Set, SqlErr, Statement, Value,
};
use tracing::Instrument;

use crate::batches::{Batches, NotRun};
use crate::{Database, Lease};

/// Tasks kept in the `tasks` table of a PostgreSQL, MySQL/MariaDB or SQLite database. Every call goes through
/// [`Database::run`], so an operation whose connection was lost, or refused for an expired token, runs once more.
///
/// With a reader (an Aurora reader endpoint, a replica), eventual reads go to it and everything else to the writer.
/// A reader that cannot be reached sends its read to the writer, and the reads of the next [`READER_REST`] too, so
/// that an outage of the reader costs one read a short wait, not every read.
#[derive(Debug, Clone)]
pub struct SeaOrmTaskRepository {
    database: Database,
    reader: Option<Reader>,
    /// New tasks, inserted together when they would otherwise wait for one another: see [`crate::batches`].
    inserts: Batches<Task, Result<(), DomainError>>,
}

#[derive(Debug, Clone)]
struct Reader {
    database: Database,
    /// Until when reads skip the reader, after it could not be reached.
    resting_until: Arc<Mutex<Option<Instant>>>,
}

/// How long reads go to the writer after the reader could not be reached, before the reader is tried again.
const READER_REST: Duration = Duration::from_secs(5);

/// The most tasks one INSERT stores. Past a few rows a batch saves little more of the database's work a row, and
/// every task in it waits for the slowest part of the whole statement.
const MAX_INSERT_BATCH: usize = 16;

impl SeaOrmTaskRepository {
    #[must_use]
    pub fn new(database: Database) -> Self {
        let writer = database.clone();
        // One batch a connection: more could only wait for one.
        let runners = usize::try_from(database.max_connections()).unwrap_or(usize::MAX);
        let inserts = Batches::new(
            runners,
            MAX_INSERT_BATCH,
            database.acquire_timeout(),
            Arc::new(move |tasks| Box::pin(insert_batch(writer.clone(), tasks))),
        );
        Self {
            database,
            reader: None,
            inserts,
        }
    }

    /// Sends eventual reads to `reader`.
    #[must_use]
    pub fn with_reader(self, reader: Database) -> Self {
        Self {
            reader: Some(Reader {
                database: reader,
                resting_until: Arc::default(),
            }),
            ..self
        }
    }

    /// Runs a read on the reader when `consistency` allows it and the reader is not resting, else on the writer.
    async fn read<'d, T, F, Fut>(&'d self, consistency: Consistency, operation: F) -> Result<T, DbErr>
    where
        F: Fn(Lease<'d>) -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        match &self.reader {
            Some(reader) if consistency == Consistency::Eventual && !reader.resting() => {
                match reader.database.run(&operation).await {
                    Err(error) if is_unavailable(&error) => {
                        tracing::warn!(
                            error = %error_chain(&error),
                            rest_secs = READER_REST.as_secs(),
                            "the reader cannot be reached: reads go to the writer for now"
                        );
                        reader.rest();
                        self.database.run(operation).await
                    }
                    result => result,
                }
            }
            _ => self.database.run(operation).await,
        }
    }
}

impl Reader {
    fn resting(&self) -> bool {
        let mut until = self.resting_until.lock().unwrap_or_else(PoisonError::into_inner);
        match *until {
            Some(moment) if Instant::now() < moment => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn rest(&self) {
        *self.resting_until.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + READER_REST);
    }
}

impl TaskRepository for SeaOrmTaskRepository {
    #[tracing::instrument(name = "insert task", skip_all, fields(task.id = %task.id))]
    async fn create(&self, task: &Task) -> Result<(), DomainError> {
        self.inserts.submit(task.clone()).await.unwrap_or_else(|not_run| {
            // Waiting that long means the database is the bottleneck (503, as for a connection not had in time); a
            // batch that ended without an answer panicked, a fault of this service's (500).
            let unavailable = matches!(not_run, NotRun::TimedOut);
            Err(domain_error(unavailable, Box::new(not_run)))
        })
    }

    #[tracing::instrument(name = "select task", skip(self))]
    async fn get(&self, id: TaskId, consistency: Consistency) -> Result<Task, DomainError> {
        self.read(consistency, |lease| async move {
            let statement = Templates::of(lease.get_database_backend()).select_by_id(*id.as_uuid());
            lease.query_one_raw(statement).await?.as_ref().map(columns).transpose()
        })
        .await
        .map_err(storage_error)?
        .map(task_from_columns)
        .ok_or(DomainError::NotFound(id))
    }

    #[tracing::instrument(name = "select page of tasks", skip(self))]
    async fn list(&self, request: PageRequest, consistency: Consistency) -> Result<Page, DomainError> {
        let limit = usize::from(request.limit.get());
        let mut rows = self
            .read(consistency, |lease| async move {
                // One row more than asked for tells whether another page follows, without a COUNT over the table.
                let limit = u64::from(request.limit.get()) + 1;
                let after = request.after.map(|after| *after.as_uuid());
                let statement = Templates::of(lease.get_database_backend()).page(after, limit);
                lease
                    .query_all_raw(statement)
                    .await?
                    .iter()
                    .map(columns)
                    .collect::<Result<Vec<_>, DbErr>>()
            })
            .await
            .map_err(storage_error)?;
        let next_after = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|&(id, _)| TaskId::from_uuid(id))
        } else {
            None
        };
        Ok(Page {
            tasks: rows.into_iter().map(task_from_columns).collect(),
            next_after,
        })
    }

    #[tracing::instrument(name = "rename task", skip_all, fields(task.id = %id))]
    async fn rename(&self, id: TaskId, name: TaskName) -> Result<Task, DomainError> {
        let new_name = name.as_str();
        let result = self
            .database
            .run(|lease| async move {
                tasks::Entity::update_many()
                    .col_expr(tasks::Column::Name, Expr::value(new_name))
                    .filter(tasks::Column::Id.eq(*id.as_uuid()))
                    .exec(&lease)
                    .await
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
        let deleted = self
            .database
            .run(|lease| async move {
                let result = tasks::Entity::delete_by_id(*id.as_uuid()).exec(&lease).await?;
                // A retry cannot tell whether the attempt whose connection was lost removed the row first: either
                // way the task is gone, which is what the client asked for.
                Ok(result.rows_affected > 0 || lease.fresh())
            })
            .await
            .map_err(storage_error)?;
        if deleted {
            Ok(())
        } else {
            Err(DomainError::NotFound(id))
        }
    }
}

/// Stores `tasks` and says, for each, whether it was stored: [`DomainError::AlreadyExists`] for one whose id was
/// taken, and every task the error that stopped the batch, once `Database::run` gave up retrying it.
async fn insert_batch(database: Database, tasks: Vec<Task>) -> Vec<Result<(), DomainError>> {
    let span = tracing::debug_span!("insert tasks", tasks = tasks.len());
    let outcome = database.run(|lease| insert_all(lease, &tasks)).instrument(span).await;
    match outcome {
        Ok(outcomes) => outcomes
            .into_iter()
            .zip(&tasks)
            .map(|(outcome, task)| outcome.map_err(|_| DomainError::AlreadyExists(task.id)))
            .collect(),
        Err(error) => {
            let unavailable = is_unavailable(&error);
            // One error answers every task of the batch: each request's error holds it through its own `Arc`.
            let error = Arc::new(error);
            tasks
                .iter()
                .map(|_| Err(domain_error(unavailable, Box::new(Arc::clone(&error)))))
                .collect()
        }
    }
}

/// Inserts `tasks` in one statement, or one by one when that statement found an id taken, to tell which. Each task's
/// outcome is `Err` only for an id taken by another task; any other failure stops them all, as the operation's
/// error, for `Database::run` to retry where it can. Running it again is safe: ids are made by this service, so an
/// attempt that finds a task already stored under its id, with the same name, finds what an earlier attempt stored.
async fn insert_all(lease: Lease<'_>, tasks: &[Task]) -> Result<Vec<Result<(), DbErr>>, DbErr> {
    let templates = Templates::of(lease.get_database_backend());
    if tasks.len() > 1 {
        match lease.execute_raw(build_insert_many(templates.backend, tasks)).await {
            Ok(_) => return Ok(tasks.iter().map(|_| Ok(())).collect()),
            // The statement stored none of them: one by one tells which ids are taken, and stores the others.
            Err(error) if is_unique_violation(&error) => {}
            Err(error) => return Err(error),
        }
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(match insert_one(&lease, &templates, task).await {
            Err(error) if !is_unique_violation(&error) => return Err(error),
            outcome => outcome,
        });
    }
    Ok(outcomes)
}

/// Inserts one task. An earlier attempt may have stored it already: one whose connection was lost after its commit,
/// or one that stored the first rows of its batch before a later row failed. The id is this service's own, so finding
/// it stored with this name means it was; on a first attempt the look costs nothing, as an id is never taken then.
async fn insert_one(lease: &Lease<'_>, templates: &Templates, task: &Task) -> Result<(), DbErr> {
    let (id, name) = (*task.id.as_uuid(), task.name.as_str());
    match lease.execute_raw(templates.insert(id, name)).await {
        Err(error) if is_unique_violation(&error) => {
            let stored = lease.query_one_raw(templates.select_by_id(id)).await?;
            match stored.as_ref().map(columns).transpose()? {
                Some((_, stored)) if stored == name => Ok(()),
                _ => Err(error),
            }
        }
        result => result.map(drop),
    }
}

/// The SQL of the statements run on every request, as SeaORM renders it for one backend, rendered once per backend.
/// SeaORM builds a query's tree and renders it to SQL on every call, about a twentieth of the CPU a read by id costs,
/// and only the values change from call to call. Each statement's values are given in the order SeaORM renders them,
/// which `templates_are_what_seaorm_builds` holds to what SeaORM builds for the same values, on every backend.
#[derive(Debug, Clone)]
struct Templates {
    backend: DbBackend,
    insert: String,
    select_by_id: String,
    first_page: String,
    page_after: String,
}

impl Templates {
    /// The templates for `backend`, rendered the first time they are asked for.
    fn of(backend: DbBackend) -> Cow<'static, Self> {
        static POSTGRES: OnceLock<Templates> = OnceLock::new();
        static MYSQL: OnceLock<Templates> = OnceLock::new();
        static SQLITE: OnceLock<Templates> = OnceLock::new();
        let rendered = match backend {
            DbBackend::Postgres => &POSTGRES,
            DbBackend::MySql => &MYSQL,
            DbBackend::Sqlite => &SQLITE,
            // A backend SeaORM adds later is rendered on every call, as SeaORM itself would.
            _ => return Cow::Owned(Self::new(backend)),
        };
        Cow::Borrowed(rendered.get_or_init(|| Self::new(backend)))
    }

    fn new(backend: DbBackend) -> Self {
        let placeholder = Uuid::nil();
        Self {
            backend,
            insert: build_insert(backend, placeholder, "").sql,
            select_by_id: build_select_by_id(backend, placeholder).sql,
            first_page: build_page(backend, None, 1).sql,
            page_after: build_page(backend, Some(placeholder), 1).sql,
        }
    }

    fn insert(&self, id: Uuid, name: &str) -> Statement {
        self.statement(&self.insert, [id.into(), name.into()])
    }

    fn select_by_id(&self, id: Uuid) -> Statement {
        self.statement(&self.select_by_id, [id.into(), 1_u64.into()])
    }

    fn page(&self, after: Option<Uuid>, limit: u64) -> Statement {
        match after {
            None => self.statement(&self.first_page, [limit.into()]),
            Some(after) => self.statement(&self.page_after, [after.into(), limit.into()]),
        }
    }

    fn statement<const N: usize>(&self, sql: &str, values: [Value; N]) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, values)
    }
}

/// The statements as SeaORM builds them; [`Templates`] keeps their SQL.
fn build_insert(backend: DbBackend, id: Uuid, name: &str) -> Statement {
    tasks::Entity::insert(row(id, name)).build(backend)
}

/// Several tasks in one statement. Its SQL depends on how many there are, so it is rendered for each batch, whose
/// requests share the cost.
fn build_insert_many(backend: DbBackend, tasks: &[Task]) -> Statement {
    let rows = tasks.iter().map(|task| row(*task.id.as_uuid(), task.name.as_str()));
    tasks::Entity::insert_many(rows).build(backend)
}

/// A task as the row SeaORM inserts.
fn row(id: Uuid, name: &str) -> tasks::ActiveModel {
    tasks::ActiveModel {
        id: Set(id),
        name: Set(name.to_owned()),
    }
}

/// The task with this id, selected as [`columns`] reads it.
fn build_select_by_id(backend: DbBackend, id: Uuid) -> Statement {
    select_columns()
        .filter(tasks::Column::Id.eq(id))
        .limit(1)
        .build(backend)
}

/// A page in id order, selected as [`columns`] reads it.
fn build_page(backend: DbBackend, after: Option<Uuid>, limit: u64) -> Statement {
    let mut query = select_columns().order_by_asc(tasks::Column::Id);
    if let Some(after) = after {
        query = query.filter(tasks::Column::Id.gt(after));
    }
    query.limit(limit).build(backend)
}

/// A task's columns in the order [`columns`] reads them back.
fn select_columns() -> sea_orm::Select<tasks::Entity> {
    tasks::Entity::find()
        .select_only()
        .columns([tasks::Column::Id, tasks::Column::Name])
}

/// A row's id and name, read by position: a page is up to a thousand rows, and reading a `Model` looks every column
/// up by name in every row.
fn columns(row: &QueryResult) -> Result<(Uuid, String), DbErr> {
    row.try_get_many_by_index()
}

fn task_from_columns((id, name): (Uuid, String)) -> Task {
    Task {
        id: TaskId::from_uuid(id),
        name: TaskName::lossy(name),
    }
}

fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Separates "the database cannot be reached now" (503, worth retrying) from every other failure (500).
fn storage_error(error: DbErr) -> DomainError {
    domain_error(is_unavailable(&error), Box::new(error))
}

/// The domain's word for a failure whose cause is `cause`: unavailable (503) or not (500).
fn domain_error(unavailable: bool, cause: Box<dyn std::error::Error + Send + Sync>) -> DomainError {
    if unavailable {
        DomainError::Unavailable(cause)
    } else {
        DomainError::Storage(cause)
    }
}

/// The server could not be reached, dropped the session, refused the connection's credentials or log-ins for
/// coming too fast, could not write because no writer was reachable (a failover), or kept losing
/// optimistic-concurrency races, even after the retries: the classes `rds-iam` sorts errors into, shared with the
/// retry logic.
fn is_unavailable(error: &DbErr) -> bool {
    matches!(
        error.class(),
        ErrorClass::Unavailable
            | ErrorClass::ConnectionLost
            | ErrorClass::AuthFailure
            | ErrorClass::ReadOnly
            | ErrorClass::Throttled
            | ErrorClass::SerializationConflict
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_what_seaorm_builds() {
        let (id, after) = (Uuid::now_v7(), Uuid::now_v7());
        for backend in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            let templates = Templates::of(backend);
            assert_eq!(
                templates.insert(id, "a name"),
                build_insert(backend, id, "a name"),
                "{backend:?}"
            );
            assert_eq!(
                templates.select_by_id(id),
                build_select_by_id(backend, id),
                "{backend:?}"
            );
            assert_eq!(templates.page(None, 51), build_page(backend, None, 51), "{backend:?}");
            assert_eq!(
                templates.page(Some(after), 51),
                build_page(backend, Some(after), 51),
                "{backend:?}"
            );
        }
    }
}
