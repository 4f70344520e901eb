//! Where a database's calls run: threads of their own, and, on a
//! database that takes one writer at a time, a queue for the writes.
//!
//! Every store call runs on the database's runtime ([`DatabaseRuntime`]).
//! Each statement is a round trip to the database (or, for SQLite, to the
//! connection's thread), and a call resumes after each one only when a
//! runtime polls it again. On the HTTP workers, busy with a thousand event
//! streams, that wait was most of a call's time, and the call held its
//! connection all along, so the calls queued behind for the pool's few
//! connections waited for it too: with 1 000 replies streaming on
//! PostgreSQL, a conversation read took 170 ms on average, nearly all of it
//! spent waiting for a connection. The database's runtime polls nothing
//! but store calls, so a connection is held for the database's time only.
//! It has two threads: with one, on two cores shared with the HTTP workers,
//! the calls got one thread's fair share of the CPU, and the first page of
//! books (rows decoded and checked there) ran 15–30 % slower.
//!
//! SQLite takes one writer at a time. Left to SQLite, this server's own
//! writers would queue on the file's lock, each for up to its busy timeout,
//! and a lock held by another process (a `sqlite3` shell in a transaction,
//! a `VACUUM`) would look the same as a busy moment: requests would wait
//! seconds before a 503. So on such a database the stores' writes queue
//! here instead, one at a time, and only a lock held *elsewhere* ever meets
//! SQLite's (then short) busy timeout. When it does, the writers queued
//! behind fail at once rather than each waiting the timeout in turn. The
//! write whose turn it is writes on a connection of its own
//! ([`Pools::writer`]): were it to wait for one of the readers'
//! connections, it would wait behind every read queued for them, and under
//! load the whole queue of writes with it.
//!
//! PostgreSQL locks rows, not the database: its writes do not queue here.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::Pool;
use tokio::runtime::{self, Handle};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use waiter_ports::PortError;

use crate::timed::{StoreError, timed};
use crate::{Dialect, Pools};

/// How long a write waits for its turn: far longer than a queue of this
/// server's own writes takes to drain (each takes milliseconds), so only a
/// stuck database ever times it out.
const TURN_WAIT: Duration = Duration::from_secs(5);

/// After a write failed as unavailable (the file locked elsewhere, the disk
/// full), writes that get their turn within this long fail at once: they
/// would meet the same lock.
const FAIL_FAST_FOR: Duration = Duration::from_secs(1);

/// One database's runtime, its writers' queue and their connections; cloned
/// into each store.
pub(crate) struct Calls<D: Dialect> {
    writer: Pool<D::Database>,
    runtime: Arc<DatabaseRuntime>,
    /// `None` where the database takes many writers at once.
    queue: Option<Arc<Queue>>,
}

impl<D: Dialect> Clone for Calls<D> {
    fn clone(&self) -> Self {
        Self {
            writer: self.writer.clone(),
            runtime: self.runtime.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<D: Dialect> fmt::Debug for Calls<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calls")
            .field("queued", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Queue {
    turn: Semaphore,
    /// Until when writes fail at once, after one failed as unavailable.
    failing_until: Mutex<Option<Instant>>,
}

/// How many threads a database's runtime has.
const THREADS: usize = 2;

/// A runtime of the database's own, where its calls run; it ends when the
/// last store of its database is dropped.
#[derive(Debug)]
struct DatabaseRuntime {
    handle: Handle,
    /// Dropped with the last store, which tells the runtime to end.
    _stop: oneshot::Sender<()>,
}

impl DatabaseRuntime {
    fn start() -> Result<Self, PortError> {
        let runtime = runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("database")
            .enable_all()
            .build()
            .map_err(PortError::unexpected)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        // A thread that owns the runtime and drops it when told: a runtime
        // cannot be dropped from within asynchronous code, where the last
        // store may well be.
        std::thread::Builder::new()
            .name("database".to_owned())
            .spawn(move || runtime.block_on(async move { stopped.await.ok() }))
            .map_err(PortError::unexpected)?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }
}

impl<D: Dialect> Calls<D> {
    /// Calls on a new [`DatabaseRuntime`], writing on `pools`' writer,
    /// queued if dialect `D` takes one writer at a time.
    pub(crate) fn new(pools: &Pools<D::Database>) -> Result<Self, PortError> {
        let queue = if D::ONE_WRITER {
            Some(Arc::new(Queue {
                turn: Semaphore::new(1),
                failing_until: Mutex::new(None),
            }))
        } else {
            None
        };
        Ok(Self {
            writer: pools.writer.clone(),
            runtime: Arc::new(DatabaseRuntime::start()?),
            queue,
        })
    }

    /// The connections writes use: only within [`Self::write`].
    pub(crate) fn writer(&self) -> &Pool<D::Database> {
        &self.writer
    }

    /// Runs the store method `operation` (recorded like [`timed`]) once it
    /// is this write's turn, on the database's runtime. A write that waited
    /// [`TURN_WAIT`], or that follows a write the database refused as
    /// unavailable within [`FAIL_FAST_FOR`], fails as `Unavailable` without
    /// running. Once started, a write runs to its end even if its caller
    /// stops waiting for it.
    pub(crate) async fn write<T, E>(
        &self,
        operation: &'static str,
        write: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: StoreError + From<PortError> + Send + 'static,
    {
        let Some(queue) = &self.queue else {
            return self.on_runtime(timed(operation, write)).await;
        };
        self.on_runtime(timed(operation, Arc::clone(queue).write_in_turn(write)))
            .await
    }

    /// Runs the store method `operation` (recorded like [`timed`]) on the
    /// database's runtime, at once: reads never queue.
    pub(crate) async fn read<T, E>(
        &self,
        operation: &'static str,
        read: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: StoreError + From<PortError> + Send + 'static,
    {
        self.on_runtime(timed(operation, read)).await
    }

    /// Runs `call` on the database's runtime; it runs to its end even if
    /// its caller stops waiting for it.
    async fn on_runtime<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PortError> + Send + 'static,
    {
        match self.runtime.handle.spawn(call).await {
            Ok(outcome) => outcome,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(unavailable("the database runtime has ended").into()),
        }
    }
}

impl Queue {
    /// Waits for `write`'s turn, then runs it: what a queued write does on
    /// the database's runtime.
    async fn write_in_turn<T, E>(
        self: Arc<Self>,
        write: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E>
    where
        E: StoreError + From<PortError>,
    {
        let _turn = tokio::time::timeout(TURN_WAIT, self.turn.acquire())
            .await
            .map_err(|_| unavailable("no turn to write within the wait"))?
            .map_err(|_| unavailable("the write queue is closed"))?;
        if self
            .failing_until()
            .is_some_and(|until| Instant::now() < until)
        {
            return Err(unavailable("the database refused the write before this one").into());
        }
        let outcome = write.await;
        if let Some(PortError::Unavailable(_)) = outcome.as_ref().err().and_then(E::failure) {
            self.fail_fast();
        }
        outcome
    }

    fn failing_until(&self) -> Option<Instant> {
        *self
            .failing_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fail_fast(&self) {
        *self
            .failing_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + FAIL_FAST_FOR);
    }
}

fn unavailable(reason: &'static str) -> PortError {
    PortError::Unavailable(anyhow::anyhow!(reason))
}
