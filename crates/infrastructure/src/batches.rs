//! Writes that would wait for one another go to the database together.
//!
//! Under write load the database, not this service, bounds how many tasks a second can be created: each INSERT is a
//! statement and a commit of its own. On the benchmark machine PostgreSQL commits about 7,700 one-row INSERTs a second
//! from 16 clients, and 26,000 rows a second as INSERTs of four rows (`bench/results/`). So items are batched when, and
//! only when, they would otherwise queue: up to `runners` batches run at once, shared out evenly among the threads
//! that submit items; an item that comes while all of its thread's run waits, and the next batch to start takes every
//! waiting item, up to `max_batch`, in arrival order. An item that comes while fewer run starts a batch of its own at
//! once: a lone request never waits for company, and a quiet service runs one INSERT a request, as before.
//!
//! Each batch runs on a task of its own, not on a request's: a request whose client went away is dropped wherever it
//! waits, and a batch carrying other requests' items must still finish and answer them. An item whose request was
//! dropped before its batch started is left out, and so is one that a batch could take only after it had waited
//! `max_wait` ([`NotRun::TimedOut`]). Items are batched with those of their own thread only, and their batches run on
//! that thread's runtime: actix-web runs one runtime per worker, a worker with no connection left is stopped first at
//! shutdown, and its runtime drops whatever tasks it holds; it also keeps every answer on the thread that waits for it.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::connections::this_thread;

/// What runs one batch: every item's outcome, in the items' order.
pub(crate) type RunBatch<T, O> = Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync>;

/// Why an item got no outcome.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotRun {
    #[error("it waited longer than the most it may before a batch could take it")]
    TimedOut,
    #[error("its batch ended without answering it")]
    Unanswered,
}

/// Items of type `T` run in batches, each answered with an outcome `O`.
pub(crate) struct Batches<T, O> {
    shared: Arc<Shared<T, O>>,
}

impl<T, O> Clone for Batches<T, O> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, O> std::fmt::Debug for Batches<T, O> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Batches")
            .field("runners", &self.shared.runners)
            .field("max_batch", &self.shared.max_batch)
            .field("max_wait", &self.shared.max_wait)
            .finish_non_exhaustive()
    }
}

struct Shared<T, O> {
    /// One queue a thread that submitted items; a handful, so looked up by a scan.
    queues: Mutex<Vec<Queue<T, O>>>,
    run: RunBatch<T, O>,
    runners: usize,
    max_batch: usize,
    max_wait: Duration,
}

struct Queue<T, O> {
    thread: usize,
    waiting: VecDeque<Waiting<T, O>>,
    /// Tasks running this thread's batches, at most its share of `runners`.
    running: usize,
}

struct Waiting<T, O> {
    item: T,
    since: Instant,
    reply: oneshot::Sender<Result<O, NotRun>>,
}

impl<T: Send + 'static, O: Send + 'static> Batches<T, O> {
    /// At most `runners` batches at once, each of at most `max_batch` items (both at least 1), run by `run`; an item
    /// that a batch could take only after `max_wait` is not run.
    pub(crate) fn new(runners: usize, max_batch: usize, max_wait: Duration, run: RunBatch<T, O>) -> Self {
        Self {
            shared: Arc::new(Shared {
                queues: Mutex::new(Vec::new()),
                run,
                runners: runners.max(1),
                max_batch: max_batch.max(1),
                max_wait,
            }),
        }
    }

    /// Runs `item` in the next batch of this thread that has room and returns its outcome, or why it has none: it
    /// waited too long, or its batch did not finish (it panicked, or the runtime it ran on shut down).
    pub(crate) async fn submit(&self, item: T) -> Result<O, NotRun> {
        let (reply, outcome) = oneshot::channel();
        let thread = this_thread();
        let start_runner = {
            let mut queues = self.shared.lock();
            Queue::of(&mut queues, thread).waiting.push_back(Waiting {
                item,
                since: Instant::now(),
                reply,
            });
            let share = self.shared.share(&queues);
            let queue = Queue::of(&mut queues, thread);
            let start = queue.running < share;
            queue.running += usize::from(start);
            start
        };
        if start_runner {
            tokio::spawn(run_batches(Running {
                shared: Arc::clone(&self.shared),
                thread,
                counted: true,
            }));
        }
        outcome.await.unwrap_or(Err(NotRun::Unanswered))
    }
}

impl<T, O> Shared<T, O> {
    fn lock(&self) -> MutexGuard<'_, Vec<Queue<T, O>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many batches each thread may run at once: `runners` shared out among the threads that ever submitted (the
    /// workers, in the service), so that together they run about one a pool connection. A thread alone may run them
    /// all; a second one's first item brings the first's share down as its batches end.
    fn share(&self, queues: &[Queue<T, O>]) -> usize {
        self.runners.div_ceil(queues.len().max(1))
    }
}

impl<T, O> Queue<T, O> {
    /// Thread `thread`'s queue, made when it first submits.
    fn of(queues: &mut Vec<Self>, thread: usize) -> &mut Self {
        let index = match queues.iter().position(|queue| queue.thread == thread) {
            Some(index) => index,
            None => {
                queues.push(Self {
                    thread,
                    waiting: VecDeque::new(),
                    running: 0,
                });
                queues.len() - 1
            }
        };
        &mut queues[index]
    }
}

/// One of a thread's `running` count, given back when its task ends however it ends: a task dropped with its
/// runtime leaves no place taken. (That runtime's requests, whose items wait in the same queue, are dropped with it.)
struct Running<T, O> {
    shared: Arc<Shared<T, O>>,
    thread: usize,
    /// Still counted in `running`.
    counted: bool,
}

impl<T, O> Drop for Running<T, O> {
    fn drop(&mut self) {
        if self.counted {
            Queue::of(&mut self.shared.lock(), self.thread).running -= 1;
        }
    }
}

/// Runs batches of the thread's waiting items until none is left.
async fn run_batches<T, O>(mut running: Running<T, O>) {
    loop {
        let (items, replies): (Vec<T>, Vec<oneshot::Sender<Result<O, NotRun>>>) = {
            let mut queues = running.shared.lock();
            let queue = Queue::of(&mut queues, running.thread);
            if queue.waiting.is_empty() {
                // Given back under the same lock as the look that found nothing: an item queued after it sees room
                // and starts a runner of its own.
                queue.running -= 1;
                running.counted = false;
                return;
            }
            let take = queue.waiting.len().min(running.shared.max_batch);
            let max_wait = running.shared.max_wait;
            queue
                .waiting
                .drain(..take)
                .filter(|waiting| !waiting.reply.is_closed())
                .filter_map(|waiting| {
                    if waiting.since.elapsed() < max_wait {
                        Some((waiting.item, waiting.reply))
                    } else {
                        let _ = waiting.reply.send(Err(NotRun::TimedOut));
                        None
                    }
                })
                .unzip()
        };
        if items.is_empty() {
            continue;
        }
        // A batch that panicked answers none of its items (each gets `NotRun::Unanswered`), and this task goes on
        // with the next.
        let Ok(outcomes) = AssertUnwindSafe((running.shared.run)(items)).catch_unwind().await else {
            continue;
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A request dropped while its batch ran no longer wants the answer.
            let _ = reply.send(Ok(outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;

    /// Batches of numbers, each answered with ten times itself, that record their sizes and wait for a permit of
    /// `gate` before they finish; a batch with a 0 panics. An item waits for its batch for at most [`MAX_WAIT`].
    struct Gated {
        batches: Batches<u32, u32>,
        gate: Arc<Semaphore>,
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    fn gated(runners: usize, max_batch: usize) -> Gated {
        let gate = Arc::new(Semaphore::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (batch_gate, batch_sizes) = (Arc::clone(&gate), Arc::clone(&sizes));
        let run: RunBatch<u32, u32> = Arc::new(move |items: Vec<u32>| {
            let (gate, sizes) = (Arc::clone(&batch_gate), Arc::clone(&batch_sizes));
            Box::pin(async move {
                sizes.lock().expect("not poisoned").push(items.len());
                gate.acquire().await.expect("open").forget();
                assert!(!items.contains(&0), "a batch with a 0");
                items.into_iter().map(|item| item * 10).collect()
            })
        });
        Gated {
            batches: Batches::new(runners, max_batch, MAX_WAIT, run),
            gate,
            sizes,
        }
    }

    const MAX_WAIT: Duration = Duration::from_millis(200);

    /// Submits `item` from a task of its own, which runs when the test next waits.
    fn spawn_submit(batches: &Batches<u32, u32>, item: u32) -> tokio::task::JoinHandle<Result<u32, NotRun>> {
        let batches = batches.clone();
        tokio::spawn(async move { batches.submit(item).await })
    }

    /// This thread's batches running.
    fn running(batches: &Batches<u32, u32>) -> usize {
        Queue::of(&mut batches.shared.lock(), this_thread()).running
    }

    /// Lets every task that can run, run until it waits.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn items_that_would_wait_go_together_up_to_the_most_a_batch_takes() {
        let Gated { batches, gate, sizes } = gated(1, 3);
        let submit = |item| spawn_submit(&batches, item);
        // The first runs alone; the others come while it runs.
        let mut submitted = vec![submit(1)];
        settle().await;
        submitted.extend((2..=5).map(submit));
        settle().await;
        gate.add_permits(3);
        let mut outcomes = Vec::new();
        for submission in submitted {
            outcomes.push(submission.await.expect("not cancelled").ok());
        }
        assert_eq!(outcomes, [10, 20, 30, 40, 50].map(Some));
        assert_eq!(*sizes.lock().expect("not poisoned"), [1, 3, 1]);
        assert_eq!(running(&batches), 0, "the runner ended when nothing was left");
    }

    #[tokio::test]
    async fn with_a_runner_free_an_item_runs_alone_at_once() {
        let Gated { batches, gate, sizes } = gated(2, 8);
        let first = spawn_submit(&batches, 1);
        settle().await;
        let second = spawn_submit(&batches, 2);
        settle().await;
        assert_eq!(
            *sizes.lock().expect("not poisoned"),
            [1, 1],
            "each started a batch of its own"
        );
        gate.add_permits(2);
        assert_eq!(first.await.expect("not cancelled").ok(), Some(10));
        assert_eq!(second.await.expect("not cancelled").ok(), Some(20));
    }

    #[tokio::test]
    async fn an_item_whose_request_was_dropped_before_its_batch_is_left_out() {
        let Gated { batches, gate, sizes } = gated(1, 8);
        let first = spawn_submit(&batches, 1);
        settle().await;
        let dropped = spawn_submit(&batches, 2);
        let kept = spawn_submit(&batches, 3);
        settle().await;
        dropped.abort();
        settle().await;
        gate.add_permits(2);
        assert_eq!(first.await.expect("not cancelled").ok(), Some(10));
        assert_eq!(kept.await.expect("not cancelled").ok(), Some(30));
        assert_eq!(*sizes.lock().expect("not poisoned"), [1, 1]);
    }

    /// A runtime shut down with a batch in flight drops its task: the batch's items get no outcome, and the place it
    /// held goes back, so that the next item starts a batch instead of waiting for ever.
    #[test]
    fn a_batch_dropped_unfinished_gives_its_place_back() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
        };
        let Gated { batches, gate, .. } = gated(1, 8);
        let shut_down = runtime();
        let stranded = shut_down.spawn({
            let batches = batches.clone();
            async move { batches.submit(1).await }
        });
        shut_down.block_on(settle());
        assert_eq!(running(&batches), 1);
        drop(shut_down);
        assert_eq!(running(&batches), 0);

        runtime().block_on(async {
            assert!(stranded.await.is_err(), "its task was dropped with the runtime");
            gate.add_permits(1);
            assert_eq!(batches.submit(2).await.ok(), Some(20));
        });
    }

    /// An item that a batch could take only after it waited longer than the most it may is not run.
    #[tokio::test]
    async fn an_item_that_waited_too_long_is_not_run() {
        let Gated { batches, gate, sizes } = gated(1, 8);
        let first = spawn_submit(&batches, 1);
        settle().await;
        let late = spawn_submit(&batches, 2);
        settle().await;
        tokio::time::sleep(MAX_WAIT * 2).await;
        gate.add_permits(1);
        assert_eq!(first.await.expect("not cancelled").ok(), Some(10));
        assert!(matches!(late.await.expect("not cancelled"), Err(NotRun::TimedOut)));
        assert_eq!(*sizes.lock().expect("not poisoned"), [1]);
        assert_eq!(running(&batches), 0);
    }

    /// A batch that panicked answers none of its items, and the items after it still run.
    #[tokio::test]
    async fn a_batch_that_panicked_leaves_the_next_ones_running() {
        let Gated { batches, gate, sizes } = gated(1, 1);
        let panicking = spawn_submit(&batches, 0);
        settle().await;
        let next = spawn_submit(&batches, 3);
        settle().await;
        gate.add_permits(2);
        assert!(matches!(
            panicking.await.expect("not cancelled"),
            Err(NotRun::Unanswered)
        ));
        assert_eq!(next.await.expect("not cancelled").ok(), Some(30));
        assert_eq!(*sizes.lock().expect("not poisoned"), [1, 1]);
        assert_eq!(running(&batches), 0);
    }
}
