//! Connections kept between statements instead of going back to the sqlx pool after each one.
//!
//! sqlx 0.9 pings every connection it takes back (`PoolConnection`'s drop runs `return_to_pool`: a Sync/ReadyForQuery
//! round trip on PostgreSQL, `COM_PING` on MySQL) and has no option to skip it, so a request of one statement cost the
//! database and this service two round trips. Here a connection that finished its statement is parked on a stack,
//! and the next statement takes it from there: one round trip per statement. The release ping's jobs are done where
//! they can be seen:
//! - a statement cut off half-way (its future dropped) never parks its connection: the connection goes back through
//!   sqlx, whose ping drains it or closes it;
//! - a connection whose statement failed in a way that may have broken it (I/O, protocol, a lost or FATAL session) is
//!   closed instead of parked;
//! - a parked connection idle for longer than [`RECENTLY_USED`] is pinged before use, as the pool does at checkout,
//!   within the pool's acquire time-out;
//! - the pool's lifetime rules are kept here, for the connections out of it: one as old as the pool's maximum
//!   lifetime, or opened before a failover was noticed, is closed when next taken or when its statement finishes;
//!   one parked for the pool's idle time-out is closed when the next statement is taken;
//! - one that the server closed while it was parked is found when next used: its statement fails as
//!   [`ErrorClass::ConnectionLost`], and `Database::run` runs the operation again on [fresh](Lease::fresh)
//!   connections, after dropping every parked one (they may have been closed by the same restart).
//!
//! Each connection's socket is registered with the Tokio runtime of the thread that opened it, and actix-web runs one
//! runtime per worker thread. A statement that runs on another worker's connection is woken by that worker's reactor,
//! a cross-thread wake-up on every read. So a statement prefers a connection its own thread opened, and takes any
//! other parked one otherwise: every parked connection is open to every worker, so none can be starved. That is why
//! a connection, once out of the pool, stays out until it is closed: handed back and out again, it would be counted
//! as the next taker's, whichever thread drives its socket (handing parked connections back every 5 s cost 4 % more
//! CPU a request, `bench/results/`). Migrations, which use the pool directly, and closing the pool hand every parked
//! connection back first.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rds_iam::{Classify, ErrorClass};
use sea_orm::sea_query::Values;
use sea_orm::{ConnAcquireErr, ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, Executor, MySql, Pool, Postgres, Sqlite};
use tokio::sync::{Notify, oneshot};

use crate::settings::PoolSettings;
use crate::turnover::Turnover;

/// A connection used this recently is known to be alive; older idle ones are pinged before they are handed out.
/// HikariCP makes the same trade (its `aliveBypassWindowMs`): a ping on every checkout would double the round trips
/// of a busy service, and no ping at all would hand out connections the server closed while they sat idle.
pub(crate) const RECENTLY_USED: Duration = Duration::from_millis(500);

/// How much longer than a worker's oldest waiting statement another worker's may wait before the first connection of
/// that worker to finish goes to the other's (see [`next_served`]). Without it, a worker whose statements hold fewer
/// connections than the other's would wait whenever the other has statements waiting, which under load is always:
/// benchmarked requests stalled for up to 1.9 s.
const HOME_PREFERENCE: Duration = Duration::from_millis(2);

/// How often the pool and the waiting statements' deadlines are looked at again while statements wait with every
/// connection out: by one task for the whole pool, see [`watch`].
const RECHECK: Duration = Duration::from_millis(20);

/// The service's connections: one sqlx pool with a stack of parked connections in front of it.
#[derive(Debug)]
pub(crate) enum Connections {
    Postgres(Parking<Postgres>),
    MySql(Parking<MySql>),
    Sqlite(Parking<Sqlite>),
}

/// Runs `$body` with `$parking` bound to whichever backend's [`Parking`] `$connections` holds.
macro_rules! on_backend {
    ($connections:expr, $parking:ident => $body:expr) => {
        match $connections {
            Connections::Postgres($parking) => $body,
            Connections::MySql($parking) => $body,
            Connections::Sqlite($parking) => $body,
        }
    };
}

impl Connections {
    /// The most connections the pool opens at once.
    pub(crate) fn max_connections(&self) -> u32 {
        on_backend!(self, parking => parking.pool.options().get_max_connections())
    }

    /// Closes every parked connection: after a connection was found dead, the others parked beside it may be too.
    pub(crate) fn discard_parked(&self) {
        on_backend!(self, parking => parking.take_parked().for_each(|held| discard(held.connection)));
    }

    /// Gives up every connection opened before now, for a failover: parked ones at once, the pool's idle ones when
    /// next handed out, and those in use when their statement ends. New ones resolve the endpoint's name again.
    pub(crate) fn evict_older(&self) {
        on_backend!(self, parking => parking.turnover.eviction.evict_older());
        self.discard_parked();
    }

    /// Hands every parked connection back to the pool, for code that uses the pool directly (migrations).
    pub(crate) fn release_parked(&self) {
        on_backend!(self, parking => parking.take_parked().for_each(drop));
    }

    /// Closes every connection once it is idle, within the acquire time-out; see [`crate::Database::close_idle`].
    /// Not SQLite's: each of its connections runs on a thread of its own, whichever thread opened it, and closing the
    /// last one to an in-memory database would lose the database.
    pub(crate) async fn close_idle(&self) {
        match self {
            Self::Postgres(parking) => parking.close_idle().await,
            Self::MySql(parking) => parking.close_idle().await,
            Self::Sqlite(_) => {}
        }
    }

    /// Closes the pool, waiting for connections in use; from then on, finished connections are closed, not parked.
    pub(crate) async fn close(&self) {
        on_backend!(self, parking => parking.close().await);
    }

    /// What the connections are doing at this moment.
    pub(crate) fn occupancy(&self) -> Occupancy {
        on_backend!(self, parking => parking.occupancy())
    }
}

/// Open connections by what they are doing, and statements waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Occupancy {
    /// Running a statement, being checked before one, or being opened.
    pub(crate) in_use: u32,
    /// Idle in the pool or parked between statements.
    pub(crate) idle: u32,
    /// Statements that found nothing parked and wait for a hand-over or for the pool.
    pub(crate) waiting: u32,
}

/// A pool, and the rules its `before_acquire` and `after_release` were made with, which are kept here too.
impl From<(Pool<Postgres>, Arc<Turnover>, PoolSettings)> for Connections {
    fn from((pool, turnover, settings): (Pool<Postgres>, Arc<Turnover>, PoolSettings)) -> Self {
        Self::Postgres(Parking::new(pool, DbBackend::Postgres, turnover, settings))
    }
}

impl From<(Pool<MySql>, Arc<Turnover>, PoolSettings)> for Connections {
    fn from((pool, turnover, settings): (Pool<MySql>, Arc<Turnover>, PoolSettings)) -> Self {
        Self::MySql(Parking::new(pool, DbBackend::MySql, turnover, settings))
    }
}

impl From<(Pool<Sqlite>, Arc<Turnover>, PoolSettings)> for Connections {
    fn from((pool, turnover, settings): (Pool<Sqlite>, Arc<Turnover>, PoolSettings)) -> Self {
        Self::Sqlite(Parking::new(pool, DbBackend::Sqlite, turnover, settings))
    }
}

/// A pool and the connections parked in front of it, most recently used on top, so that a quiet period leaves the
/// ones at the bottom to age out; and the statements waiting for one, first come first served on each worker
/// thread (see [`Parking::hand_on`]).
#[derive(Debug)]
pub(crate) struct Parking<DB: sqlx::Database> {
    pool: Pool<DB>,
    shared: Arc<Mutex<Shared<DB>>>,
    /// Wakes the statements waiting with every connection out, to look at the pool and their deadlines again.
    recheck: Arc<Notify>,
    /// Wakes the [`watch`] task when a statement starts waiting with nobody else waiting, or when the pool closes.
    watchdog: Arc<Notify>,
    /// Dropped with the parking, which ends the [`watch`] task and its handle to the pool.
    _ends_watch: oneshot::Sender<()>,
    backend: DbBackend,
    /// The pool's `idle_timeout`, for the connections out of it.
    idle_timeout: Duration,
    /// When new connections may be opened, and which old ones a failover condemned.
    turnover: Arc<Turnover>,
}

#[derive(Debug)]
struct Shared<DB: sqlx::Database> {
    parked: Vec<Parked<DB>>,
    /// Statements that found nothing parked. Parked connections do not go back to the pool, so a statement waiting
    /// only in the pool's queue could wait until one is closed; each waits here as well, and a finished connection
    /// goes to one of them instead of onto the stack.
    waiting: VecDeque<Waiting<DB>>,
}

/// A statement waiting for a connection, and the thread it waits on.
#[derive(Debug)]
struct Waiting<DB: sqlx::Database> {
    home: usize,
    since: Instant,
    /// When it gives up: the pool's acquire time-out from when it asked.
    deadline: tokio::time::Instant,
    handoff: oneshot::Sender<Held<DB>>,
}

#[derive(Debug)]
struct Parked<DB: sqlx::Database> {
    held: Held<DB>,
    parked_at: Instant,
}

/// A connection taken for one statement.
#[derive(Debug)]
struct Held<DB: sqlx::Database> {
    connection: PoolConnection<DB>,
    /// When it was opened, as the pool's hooks said when it was handed out.
    opened_at: Instant,
    /// The thread that took it from the pool: the one that opened it, whose runtime its socket is registered with,
    /// unless the pool had it idle: from a statement cut off half-way, from an acquisition that a hand-over beat
    /// (see [`Parking::wait`]), or, with `database.min_connections` above 0, from before the service started
    /// serving. Such a one keeps the wrong home for its life, which costs wake-ups, not correctness.
    home: usize,
}

impl<DB: sqlx::Database> Shared<DB> {
    /// Drops the places of statements that the pool served first, or that gave up.
    fn drop_served(&mut self) {
        self.waiting.retain(Waiting::is_live);
    }
}

impl<DB: sqlx::Database> Waiting<DB> {
    /// Whether its statement still waits.
    fn is_live(&self) -> bool {
        !self.handoff.is_closed()
    }
}

/// Where the next statement's connection comes from.
enum Next<DB: sqlx::Database> {
    Parked(Parked<DB>),
    /// Nothing was parked: the next connection to finish, unless the pool has one first.
    Queued(oneshot::Receiver<Held<DB>>),
}

static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// A number for this thread, cheaper to compare than a `ThreadId`.
    static THREAD: usize = THREADS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn this_thread() -> usize {
    THREAD.with(|thread| *thread)
}

impl<DB> Parking<DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    SqlxValues: sqlx::IntoArguments<DB>,
    QueryResult: From<DB::Row>,
    ExecResult: From<DB::QueryResult>,
{
    /// Starts the pool's [`watch`] task on the current Tokio runtime: statements waiting with every connection out
    /// rely on it, so that runtime must run as long as the pool is used (the service's main runtime does).
    fn new(pool: Pool<DB>, backend: DbBackend, turnover: Arc<Turnover>, settings: PoolSettings) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            parked: Vec::new(),
            waiting: VecDeque::new(),
        }));
        let (recheck, watchdog) = (Arc::default(), Arc::default());
        let (ends_watch, parking_gone) = oneshot::channel();
        tokio::spawn(watch(
            Arc::downgrade(&shared),
            pool.clone(),
            Arc::clone(&recheck),
            Arc::clone(&watchdog),
            parking_gone,
        ));
        Self {
            pool,
            shared,
            recheck,
            watchdog,
            _ends_watch: ends_watch,
            backend,
            idle_timeout: settings.idle_timeout,
            turnover,
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared<DB>> {
        lock(&self.shared)
    }

    /// A connection for the next statement: the most recently parked one that is still fit, or the next one to
    /// finish, or one from the pool, whichever comes first, within the pool's acquire time-out. `fresh` proves the
    /// connection alive before it is used, for a retry after a lost one.
    async fn take(&self, fresh: bool) -> Result<Held<DB>, DbErr> {
        let home = this_thread();
        let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        // A restart ends every connection, parked or idle in the pool: each may have to be tried and dropped.
        let mut dead = 0;
        loop {
            let (mut held, idle_for) = match self.unpark_or_queue(home, deadline) {
                Next::Parked(Parked { held, parked_at }) => (held, parked_at.elapsed()),
                Next::Queued(handoff) => (self.wait(handoff, deadline).await?, Duration::ZERO),
            };
            if self.turnover.is_spent(held.opened_at.elapsed()) {
                discard(held.connection);
                continue;
            }
            if fresh || idle_for > RECENTLY_USED {
                let error = match tokio::time::timeout_at(deadline, held.connection.ping()).await {
                    Ok(Ok(())) => return Ok(held),
                    Ok(Err(error)) => DbErr::Query(RuntimeErr::SqlxError(error.into())),
                    // A server that stopped answering without closing the connection (a failover's old address).
                    Err(_) => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
                };
                discard(held.connection);
                dead += 1;
                if dead > self.pool.options().get_max_connections() || tokio::time::Instant::now() >= deadline {
                    return Err(error);
                }
                continue;
            }
            return Ok(held);
        }
    }

    /// The most recently parked connection of thread `home`, or else the most recently parked one; with none parked,
    /// a place in the queue. Connections at the bottom of the stack parked for the pool's idle time-out are closed
    /// first, so that a burst's extra connections do not stay open for good.
    fn unpark_or_queue(&self, home: usize, deadline: tokio::time::Instant) -> Next<DB> {
        let mut shared = self.shared();
        let idle = shared
            .parked
            .iter()
            .take_while(|parked| parked.parked_at.elapsed() >= self.idle_timeout)
            .count();
        // Dropping a pooled connection only schedules its closing.
        shared
            .parked
            .drain(..idle)
            .for_each(|parked| discard(parked.held.connection));
        if let Some(index) = shared.parked.iter().rposition(|parked| parked.held.home == home) {
            return Next::Parked(shared.parked.remove(index));
        }
        if let Some(parked) = shared.parked.pop() {
            return Next::Parked(parked);
        }
        shared.drop_served();
        let (sender, receiver) = oneshot::channel();
        // The watch task sleeps only with nobody waiting; a wake-up it does not need costs it one look.
        if shared.waiting.is_empty() {
            self.watchdog.notify_one();
        }
        shared.waiting.push_back(Waiting {
            home,
            since: Instant::now(),
            deadline,
            handoff: sender,
        });
        Next::Queued(receiver)
    }

    /// Waits for a connection handed over by a finishing statement, or one from the pool when it has one idle or
    /// room to open one, whichever comes first; a hand-over wins a tie, since it costs nothing.
    /// - When the pool wins, a connection handed over meanwhile is given to the next statement.
    /// - When the hand-over wins, the pool's acquisition is not cut off: it may be half-way through opening a
    ///   connection, and a server would see an aborted log-in (under load, a stream of them). It finishes on its own
    ///   and its connection goes back to the pool. There are at most as many as the pool has room for.
    /// - When every connection is out, only a hand-over can come soon, so the pool's queue is left alone (each
    ///   place in it would be one more acquisition to finish). The pool's [`watch`] task has the waiting statements
    ///   look at the pool again when it has room or an idle connection (one went back to it, or was closed), and
    ///   when one of them is past its deadline.
    async fn wait(
        &self,
        mut handoff: oneshot::Receiver<Held<DB>>,
        deadline: tokio::time::Instant,
    ) -> Result<Held<DB>, DbErr> {
        let closed = || DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed);
        loop {
            // Asked for before the pool is looked at, so that a recheck in between is not missed.
            let recheck = self.recheck.notified();
            // Closing drops every waiting statement's sender: the receiver is not polled again after that.
            if self.pool.is_closed() {
                return Err(closed());
            }
            if is_full(&self.pool) {
                if tokio::time::Instant::now() >= deadline {
                    // A connection handed over at the last moment is used, not dropped back to the pool.
                    handoff.close();
                    return handoff
                        .try_recv()
                        .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
                }
                tokio::select! {
                    biased;
                    // Without a hand-over, the sender was dropped by the pool's closing.
                    handed = &mut handoff => return handed.map_err(|_| closed()),
                    () = recheck => continue,
                }
            }
            let asked = Arc::new(AtomicBool::new(false));
            let mut acquiring = Box::pin(acquire(
                self.pool.clone(),
                Arc::clone(&self.turnover),
                deadline,
                Arc::clone(&asked),
            ));
            tokio::select! {
                biased;
                Ok(held) = &mut handoff => {
                    // Still waiting for its turn, it has opened nothing and can simply go.
                    if asked.load(Ordering::Acquire) {
                        tokio::spawn(async move { drop(acquiring.await) });
                    }
                    return Ok(held);
                }
                acquired = &mut acquiring => {
                    let acquired = match acquired {
                        // Full again before it was asked (every statement the watch task woke looked at once):
                        // back to waiting for a hand-over, in the same place.
                        Ok(None) => continue,
                        Ok(Some(held)) => Ok(held),
                        Err(error) => Err(error),
                    };
                    handoff.close();
                    if let Ok(held) = handoff.try_recv() {
                        self.hand_on(held);
                    }
                    return acquired;
                }
            }
        }
    }

    /// Hands the connection on after its statement, unless the statement's outcome says it may be broken: a
    /// statement error (a constraint violated, a value that does not decode) leaves the connection ready for the next
    /// one; a lost or FATAL session, or an I/O or protocol error, does not.
    fn finish<T>(&self, held: Held<DB>, outcome: &Result<T, sqlx::Error>) {
        let reusable = match outcome {
            Ok(_) => true,
            Err(error @ sqlx::Error::Database(database_error)) => {
                error.class() != ErrorClass::ConnectionLost && !ends_session(database_error.as_ref())
            }
            Err(
                sqlx::Error::RowNotFound
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Encode(_)
                | sqlx::Error::Decode(_)
                | sqlx::Error::TypeNotFound { .. },
            ) => true,
            Err(_) => false,
        };
        if reusable {
            self.hand_on(held);
        } else {
            discard(held.connection);
        }
    }

    /// Gives a connection fit for use to the first statement waiting for one on the connection's home thread, else
    /// to the first waiting at all, or parks it; or closes it when it is spent, or hands it back to the pool when the
    /// pool is closing.
    ///
    /// Why home first: a connection's socket stays registered with the runtime of the worker that opened it, so a
    /// statement on another worker is woken by that one, through the kernel, for every answer from the server; and
    /// handing the connection over to another worker wakes that worker too. Under load, most of the service's system
    /// time went into those wake-ups. Every worker has statements waiting when the pool is short, so each keeps its
    /// own connections busy; a connection whose worker has none waiting goes to the first statement of any, and so
    /// does one whose worker's statements have waited much less than another's (see [`next_served`]), so that a
    /// worker holding few connections is not left waiting behind one that holds many.
    fn hand_on(&self, mut held: Held<DB>) {
        if self.turnover.is_spent(held.opened_at.elapsed()) {
            discard(held.connection);
            return;
        }
        if self.pool.is_closed() {
            drop(held);
            return;
        }
        let mut shared = self.shared();
        loop {
            let Some(waiting) = next_served(&shared.waiting, held.home).and_then(|index| shared.waiting.remove(index))
            else {
                break;
            };
            match waiting.handoff.send(held) {
                Ok(()) => return,
                // That statement was served by the pool meanwhile, or gave up.
                Err(unwanted) => held = unwanted,
            }
        }
        shared.parked.push(Parked {
            held,
            parked_at: Instant::now(),
        });
    }

    /// Every parked connection, taken off the stack.
    fn take_parked(&self) -> impl Iterator<Item = Held<DB>> {
        std::mem::take(&mut self.shared().parked)
            .into_iter()
            .map(|parked| parked.held)
    }

    /// A parked connection is out of the pool but idle, so it counts as idle here, not as the pool's in use. The
    /// stack and the pool are read one after the other, not at one instant: a connection moving between them as
    /// they are read can be counted twice for a moment, which a gauge can bear.
    fn occupancy(&self) -> Occupancy {
        let (parked, waiting) = {
            let shared = self.shared();
            // Places of statements served or gone stay queued until the next hand-over or look of the watch task.
            let waiting = shared.waiting.iter().filter(|waiting| waiting.is_live()).count();
            (shared.parked.len(), waiting)
        };
        let to_u32 = |count: usize| u32::try_from(count).unwrap_or(u32::MAX);
        let size = self.pool.size();
        let idle = to_u32(self.pool.num_idle().saturating_add(parked)).min(size);
        Occupancy {
            in_use: size - idle,
            idle,
            waiting: to_u32(waiting),
        }
    }

    /// Closes the parked connections and the pool's idle ones, and those on their way back to the pool (the release
    /// ping runs in a task of its own) once they are there, for up to the acquire time-out.
    async fn close_idle(&self) {
        if self.pool.options().get_min_connections() > 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        for held in self.take_parked() {
            // A connection that cannot say goodbye is gone all the same.
            let _ = held.connection.close().await;
        }
        loop {
            while let Some(connection) = self.pool.try_acquire() {
                let _ = connection.close().await;
            }
            if self.pool.size() == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    open = self.pool.size(),
                    "connections opened before serving were still in use at the acquire time-out: left open"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn close(&self) {
        // Closed first, so that nothing is parked again while the pool waits for the connections in use.
        let closing = self.pool.close();
        self.take_parked().for_each(drop);
        self.shared().waiting.clear();
        self.watchdog.notify_one();
        closing.await;
    }

    async fn ping(&self, fresh: bool) -> Result<(), DbErr> {
        let mut held = self.take(fresh).await?;
        let outcome = held.connection.ping().await;
        self.finish(held, &outcome);
        outcome.map_err(query_error)
    }

    async fn execute(&self, fresh: bool, statement: &Statement) -> Result<ExecResult, DbErr> {
        let mut held = self.take(fresh).await?;
        let outcome = query(statement).execute(&mut *held.connection).await;
        self.finish(held, &outcome);
        outcome.map(ExecResult::from).map_err(exec_error)
    }

    async fn execute_unprepared(&self, fresh: bool, sql: &str) -> Result<ExecResult, DbErr> {
        let mut held = self.take(fresh).await?;
        let outcome = held.connection.execute(AssertSqlSafe(sql.to_owned())).await;
        self.finish(held, &outcome);
        outcome.map(ExecResult::from).map_err(exec_error)
    }

    async fn query_one(&self, fresh: bool, statement: &Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut held = self.take(fresh).await?;
        let outcome = query(statement).fetch_optional(&mut *held.connection).await;
        self.finish(held, &outcome);
        outcome.map(|row| row.map(QueryResult::from)).map_err(query_error)
    }

    async fn query_all(&self, fresh: bool, statement: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut held = self.take(fresh).await?;
        let outcome = query(statement).fetch_all(&mut *held.connection).await;
        self.finish(held, &outcome);
        outcome
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
            .map_err(query_error)
    }
}

fn lock<DB: sqlx::Database>(shared: &Mutex<Shared<DB>>) -> std::sync::MutexGuard<'_, Shared<DB>> {
    // Only pushes and pops happen under the lock; a panic elsewhere cannot leave the state half-changed.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One task for the whole pool, instead of a timer for each waiting statement: every [`RECHECK`] while statements
/// wait with every connection out, it wakes them to look at the pool when it has room or an idle connection, and
/// when one is past its deadline; it sleeps while none waits. A timer for each statement cost a system call for most
/// of them, under load most statements wait, and Tokio's timer wakes its runtime's thread up (an `eventfd` write)
/// whenever a timer is set and none was due when the thread last slept: 0.3 system calls a request.
async fn watch<DB: sqlx::Database>(
    shared: Weak<Mutex<Shared<DB>>>,
    pool: Pool<DB>,
    recheck: Arc<Notify>,
    watchdog: Arc<Notify>,
    mut parking_gone: oneshot::Receiver<()>,
) {
    loop {
        if pool.is_closed() {
            // Each sees the pool closed.
            recheck.notify_waiters();
            return;
        }
        let Some(state) = shared.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let (waiting, due) = {
            let mut shared = lock(&state);
            shared.drop_served();
            let due = shared.waiting.iter().any(|waiting| waiting.deadline <= now);
            (!shared.waiting.is_empty(), due)
        };
        drop(state);
        if !waiting {
            tokio::select! {
                () = watchdog.notified() => continue,
                _ = &mut parking_gone => return,
            }
        }
        if due || !is_full(&pool) {
            recheck.notify_waiters();
        }
        tokio::time::sleep(RECHECK).await;
    }
}

tokio::task_local! {
    /// While [`acquire`] waits for the pool: when the connection being handed out was opened, which the pool's hooks
    /// report ([`note_age`]) and nothing else gives.
    static HANDED_OUT_OPENED_AT: Cell<Option<Instant>>;
}

/// For the pool's `after_connect` and `before_acquire` hooks: the age of the connection the pool is about to hand
/// out, or has just opened, turned at once into the moment it was opened (`before_acquire` may ping it afterwards).
/// Outside [`acquire`] (migrations, the pool's own upkeep) there is nobody to tell.
pub(crate) fn note_age(age: Duration) {
    let now = Instant::now();
    // Not set only outside `acquire`, where the age is of no use.
    let _ = HANDED_OUT_OPENED_AT.try_with(|opened_at| opened_at.set(Some(now.checked_sub(age).unwrap_or(now))));
}

/// A connection from `pool` by `deadline`, opened in its turn if the pool has to open one, or `None` when the pool is
/// full: nothing idle, and no room to open one. `asked` is set once the pool has been asked (it may be opening a
/// connection from then on). The pool itself waits out a server that
/// refuses connections while it starts; one that is shutting down or restarting may also accept and then reset them,
/// which is waited out here.
async fn acquire<DB: sqlx::Database>(
    pool: Pool<DB>,
    turnover: Arc<Turnover>,
    deadline: tokio::time::Instant,
    asked: Arc<AtomicBool>,
) -> Result<Option<Held<DB>>, DbErr> {
    let mut pause = Duration::from_millis(20);
    loop {
        if pool.is_closed() {
            return Err(acquire_error(sqlx::Error::PoolClosed));
        }
        // Asked while full, the pool would queue this for a slot and open a connection whenever one frees, however
        // long after any turn taken for it; when a failover closes many connections at once, every acquisition queued
        // so would open at once. So with the pool full, this takes no turn (turns are for openings that can happen)
        // and leaves the waiting to the caller.
        if is_full(&pool) {
            return Ok(None);
        }
        let Some(claim) = turnover.pace.claim_idle(pool.num_idle(), deadline).await else {
            return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
        };
        // Others may have filled the pool while this waited for its turn: the turn is let go.
        if claim.took_turn() && is_full(&pool) {
            continue;
        }
        asked.store(true, Ordering::Release);
        let acquired = HANDED_OUT_OPENED_AT.scope(Cell::new(None), async {
            let acquired = tokio::time::timeout_at(deadline, pool.acquire()).await;
            (acquired, HANDED_OUT_OPENED_AT.with(Cell::get))
        });
        match acquired.await {
            (Ok(Ok(connection)), opened_at) => {
                return Ok(Some(Held {
                    connection,
                    // Both hooks always run, one or the other; without them, it was opened just now.
                    opened_at: opened_at.unwrap_or_else(Instant::now),
                    home: this_thread(),
                }));
            }
            // Not TLS errors: a certificate that does not verify will not verify on the next attempt either.
            (Ok(Err(sqlx::Error::Io(_))), _) if tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            (Ok(Err(error)), _) => return Err(acquire_error(error)),
            (Err(_), _) => return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
        }
    }
}

/// Which of the statements `waiting` (oldest first) a connection of thread `home` goes to: the oldest of its own
/// thread, unless the oldest of all started waiting [`HOME_PREFERENCE`] or more before it; the oldest of all when its
/// thread has none waiting.
///
/// Why the gap between the two, not the wait alone: with the pool short, every statement waits, for about as long as
/// the pool takes to go round, often longer than [`HOME_PREFERENCE`]. A bound on the wait alone then sent every
/// connection to the oldest statement of any thread, half the time another one, and cost a cross-thread wake-up on
/// half the requests. Threads that hold their fair share of connections see their oldest statements wait about as
/// long, and keep their own; a thread holding few sees its own wait grow, and gets the others' connections.
fn next_served<DB: sqlx::Database>(waiting: &VecDeque<Waiting<DB>>, home: usize) -> Option<usize> {
    let oldest = waiting.front()?;
    match waiting.iter().position(|waiting| waiting.home == home) {
        Some(own) if waiting[own].since.duration_since(oldest.since) < HOME_PREFERENCE => Some(own),
        _ => Some(0),
    }
}

/// Whether the server ended the session with this error: PostgreSQL's FATAL and PANIC severities.
fn ends_session(error: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    error
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|error| matches!(error.severity(), PgSeverity::Fatal | PgSeverity::Panic))
}

/// Closes a connection that may be broken instead of handing it back to the pool for its release ping.
fn discard<DB: sqlx::Database>(mut connection: PoolConnection<DB>) {
    connection.close_on_drop();
}

/// The statement SeaORM built, with its values bound as sqlx arguments (SeaORM's own drivers do the same).
fn query<DB>(statement: &Statement) -> sqlx::query::Query<'_, DB, SqlxValues>
where
    DB: sqlx::Database,
    SqlxValues: sqlx::IntoArguments<DB>,
{
    let values = statement.values.clone().unwrap_or_else(|| Values(Vec::new()));
    sqlx::query_with(AssertSqlSafe(statement.sql.as_str()), SqlxValues(values))
}

/// Whether `pool` has nothing idle and no room to open a connection: every connection is out.
fn is_full<DB: sqlx::Database>(pool: &Pool<DB>) -> bool {
    pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0
}

/// The same errors SeaORM's own drivers give, so callers classify them alike.
fn acquire_error(error: sqlx::Error) -> DbErr {
    match error {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        error => DbErr::Conn(RuntimeErr::SqlxError(error.into())),
    }
}

fn exec_error(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(error.into()))
}

fn query_error(error: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(error.into()))
}

/// What one attempt of an operation runs its statements on: SeaORM accepts it wherever it takes a connection.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'d> {
    connections: &'d Connections,
    /// A retry: its statements run on connections just proven alive.
    prove_alive: bool,
    /// An earlier attempt's connection was lost before its result came back.
    after_loss: bool,
}

impl<'d> Lease<'d> {
    /// The first attempt's lease.
    pub(crate) fn first(connections: &'d Connections) -> Self {
        Self {
            connections,
            prove_alive: false,
            after_loss: false,
        }
    }

    /// A retry's lease; `after_loss` when an earlier attempt's connection was lost.
    pub(crate) fn retry(connections: &'d Connections, after_loss: bool) -> Self {
        Self {
            connections,
            prove_alive: true,
            after_loss,
        }
    }

    /// Whether this is the retry of an attempt whose connection was lost, so that a write of that attempt may
    /// already be stored. (A statement a read-only server or a refused log-in stopped wrote nothing.)
    #[must_use]
    pub fn fresh(&self) -> bool {
        self.after_loss
    }

    /// Round-trips to the server.
    pub async fn ping(&self) -> Result<(), DbErr> {
        on_backend!(self.connections, parking => parking.ping(self.prove_alive).await)
    }

    /// Whether the server can write, in one round trip. PostgreSQL: a hot standby (an Aurora reader) is in
    /// recovery, and a session can be read-only by default (`default_transaction_read_only`). MySQL and MariaDB: an
    /// Aurora MySQL reader has `innodb_read_only` on, a replica `read_only`, and a session can be read-only
    /// (`transaction_read_only`, called `tx_read_only` before MySQL 8 and MariaDB 11.1), so all four are asked for by
    /// name, and those a server does not have are simply not listed. SQLite always writes.
    pub async fn role(&self) -> Result<ServerRole, DbErr> {
        let backend = self.get_database_backend();
        let read_only = match backend {
            DbBackend::Postgres => {
                let sql = "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'";
                let row = self.query_one_raw(Statement::from_string(backend, sql)).await?;
                row.map(|row| row.try_get_by_index::<bool>(0))
                    .transpose()?
                    .unwrap_or(false)
            }
            DbBackend::MySql => {
                let sql = "SHOW VARIABLES WHERE Variable_name IN \
                           ('read_only', 'innodb_read_only', 'tx_read_only', 'transaction_read_only')";
                let rows = self.query_all_raw(Statement::from_string(backend, sql)).await?;
                rows.iter().any(|row| {
                    row.try_get_by_index::<String>(1)
                        .is_ok_and(|value| value.eq_ignore_ascii_case("on") || value == "1")
                })
            }
            // SQLite, and whatever else SeaORM may add: a server that cannot say is taken to write.
            _ => {
                self.ping().await?;
                false
            }
        };
        Ok(if read_only {
            ServerRole::Reader
        } else {
            ServerRole::Writer
        })
    }
}

/// What the server a pool reaches can do, as its readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// It takes writes.
    Writer,
    /// It refuses writes: an Aurora reader, a replica, or an old writer that a failover demoted and that this
    /// service still reaches.
    Reader,
}

#[async_trait::async_trait]
impl ConnectionTrait for Lease<'_> {
    fn get_database_backend(&self) -> DbBackend {
        on_backend!(self.connections, parking => parking.backend)
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        on_backend!(self.connections, parking => parking.execute(self.prove_alive, &statement).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        on_backend!(self.connections, parking => parking.execute_unprepared(self.prove_alive, sql).await)
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        on_backend!(self.connections, parking => parking.query_one(self.prove_alive, &statement).await)
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        on_backend!(self.connections, parking => parking.query_all(self.prove_alive, &statement).await)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::database::pool_options;

    /// A connection goes to the oldest statement of its own thread, unless another thread's oldest has waited
    /// [`HOME_PREFERENCE`] longer; to the oldest of any when its thread has none waiting.
    #[test]
    fn a_connection_stays_on_its_thread_unless_another_waited_much_longer() {
        let start = Instant::now();
        let queue = |waits: &[(usize, u64)]| -> VecDeque<Waiting<Sqlite>> {
            waits
                .iter()
                .map(|&(home, after_ms)| Waiting {
                    home,
                    since: start + Duration::from_millis(after_ms),
                    deadline: tokio::time::Instant::now(),
                    handoff: oneshot::channel().0,
                })
                .collect()
        };
        let gap = u64::try_from(HOME_PREFERENCE.as_millis()).expect("a few milliseconds");
        assert_eq!(next_served(&queue(&[]), 1), None);
        assert_eq!(next_served(&queue(&[(2, 0), (1, gap - 1), (1, gap)]), 1), Some(1));
        assert_eq!(next_served(&queue(&[(2, 0), (1, gap), (2, gap)]), 1), Some(0));
        assert_eq!(next_served(&queue(&[(2, 0), (2, 1)]), 1), Some(0));
        assert_eq!(next_served(&queue(&[(1, 0), (2, 1)]), 1), Some(0));
    }

    /// A connection the pool had idle keeps its age, which only the pool's hooks know; one opened for the
    /// acquisition is new. Without the hooks' word both would look opened when taken, and the first would outlive
    /// the maximum lifetime by as long as it sat in the pool.
    #[tokio::test]
    async fn a_connection_is_as_old_as_the_pool_says() {
        let settings = PoolSettings {
            max_connections: 2,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
            max_new_per_sec: NonZeroU32::new(100).expect("non-zero"),
        };
        let turnover = Arc::new(Turnover::new(&settings));
        let pool: Pool<Sqlite> = pool_options(&settings, &Arc::default(), &turnover)
            .connect_lazy_with(SqliteConnectOptions::from_str("sqlite::memory:").expect("a SQLite URL"));
        let deadline = || tokio::time::Instant::now() + settings.acquire_timeout;

        let before_opening = Instant::now();
        drop(pool.acquire().await.expect("opened"));
        let opened = Instant::now();
        // Long enough for the dropped connection to be back in the pool, idle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = acquire(pool.clone(), Arc::clone(&turnover), deadline(), Arc::default())
            .await
            .expect("taken")
            .expect("idle in the pool");
        assert!(idle.opened_at >= before_opening && idle.opened_at <= opened);

        let asked = Instant::now();
        let new = acquire(pool.clone(), turnover, deadline(), Arc::default())
            .await
            .expect("opened")
            .expect("room in the pool");
        assert!(new.opened_at >= asked);
    }
}
