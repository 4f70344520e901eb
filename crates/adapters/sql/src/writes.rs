//! The queue a database's writers wait in, inside the process, and the
//! connection they write on.
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
//! connections, it would wait behind every read queued for them, and
//! under load the whole queue of writes with it.
//!
//! PostgreSQL locks rows, not the database: its writes do not queue here.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::Pool;
use tokio::sync::Semaphore;
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

/// One database's queue of writers and their connection; cloned into each
/// store.
pub(crate) struct Writes<D: Dialect> {
    writer: Pool<D::Database>,
    /// `None` where the database takes many writers at once.
    queue: Option<Arc<Queue>>,
}

impl<D: Dialect> Clone for Writes<D> {
    fn clone(&self) -> Self {
        Self {
            writer: self.writer.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<D: Dialect> fmt::Debug for Writes<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writes")
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

impl<D: Dialect> Writes<D> {
    /// Writes on `pools`' writer, queued if dialect `D` takes one writer
    /// at a time.
    pub(crate) fn new(pools: &Pools<D::Database>) -> Self {
        Self {
            writer: pools.writer.clone(),
            queue: D::ONE_WRITER.then(|| {
                Arc::new(Queue {
                    turn: Semaphore::new(1),
                    failing_until: Mutex::new(None),
                })
            }),
        }
    }

    /// The connections writes use: only within [`Self::run`].
    pub(crate) fn pool(&self) -> &Pool<D::Database> {
        &self.writer
    }

    /// Runs the store method `operation` (recorded like [`timed`]) once it
    /// is this write's turn. A write that waited [`TURN_WAIT`], or that
    /// follows a write the database refused as unavailable within
    /// [`FAIL_FAST_FOR`], fails as `Unavailable` without running.
    pub(crate) async fn run<T, E>(
        &self,
        operation: &'static str,
        write: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E>
    where
        E: StoreError + From<PortError>,
    {
        let Some(queue) = &self.queue else {
            return timed(operation, write).await;
        };
        timed(operation, async {
            let _turn = tokio::time::timeout(TURN_WAIT, queue.turn.acquire())
                .await
                .map_err(|_| unavailable("no turn to write within the wait"))?
                .map_err(|_| unavailable("the write queue is closed"))?;
            if queue
                .failing_until()
                .is_some_and(|until| Instant::now() < until)
            {
                return Err(unavailable("the database refused the write before this one").into());
            }
            let outcome = write.await;
            if let Some(PortError::Unavailable(_)) = outcome.as_ref().err().and_then(E::failure) {
                queue.fail_fast();
            }
            outcome
        })
        .await
    }
}

impl Queue {
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
