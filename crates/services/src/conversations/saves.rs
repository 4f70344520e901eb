//! Group commit of replies' saves.
//!
//! Every reply is written at least twice: its progress, every
//! [`save_every`](super::ConversationSettings::save_every), and its end.
//! With a thousand replies streaming, a thousand ends a second written one
//! by one would each be a transaction of their own, queued (on SQLite) with
//! the sends that start new replies. Instead every save is queued here, and
//! whichever saver finds no batch being written writes all that are queued
//! in one [`ConversationStore::save_replies`]; saves that arrive meanwhile
//! form the next batch. A lone save is written at once, as before; under
//! load the batches grow by themselves, and the commits stay few.

use std::mem;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use waiter_ports::conversations::{ConversationStore, ReplySave};

/// The saves waiting for the next batch, and the turn to write one.
pub(super) struct ReplySaves {
    store: Arc<dyn ConversationStore>,
    queued: Mutex<Vec<Queued>>,
    /// Held while a batch is written: one batch at a time.
    writing: tokio::sync::Mutex<()>,
}

/// A save and where its outcome goes.
struct Queued {
    save: ReplySave,
    saved: oneshot::Sender<Option<bool>>,
}

impl ReplySaves {
    pub(super) fn new(store: Arc<dyn ConversationStore>) -> Self {
        Self {
            store,
            queued: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes `saves`, in a batch with whatever else is queued, and returns
    /// in the same order whether each reply was still `InProgress` (see
    /// [`ConversationStore::save_replies`]); `None` for those whose batch
    /// failed (logged once for the batch).
    pub(super) async fn save(&self, saves: Vec<ReplySave>) -> Vec<Option<bool>> {
        let outcomes: Vec<_> = {
            let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
            saves
                .into_iter()
                .map(|save| {
                    let (saved, outcome) = oneshot::channel();
                    queued.push(Queued { save, saved });
                    outcome
                })
                .collect()
        };
        // Fair: each saver gets its turn in order, and finds its saves
        // written already unless it is the first since they were queued.
        let turn = self.writing.lock().await;
        let batch = mem::take(&mut *self.queued.lock().unwrap_or_else(PoisonError::into_inner));
        if !batch.is_empty() {
            self.write(batch).await;
        }
        drop(turn);
        let mut saved = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            // A batch dropped half-written (its saver cancelled) counts as failed.
            saved.push(outcome.await.ok().flatten());
        }
        saved
    }

    /// Saves one reply; see [`Self::save`].
    pub(super) async fn save_one(&self, save: ReplySave) -> Option<bool> {
        self.save(vec![save]).await.pop().flatten()
    }

    async fn write(&self, batch: Vec<Queued>) {
        let (saves, senders): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|queued| (queued.save, queued.saved))
            .unzip();
        let count = saves.len();
        let outcomes = match self.store.save_replies(saves).await {
            Ok(saved) => saved.into_iter().map(Some).collect(),
            Err(err) => {
                tracing::warn!(%err, replies = count, "cannot save replies");
                vec![None; count]
            }
        };
        for (sender, outcome) in senders.into_iter().zip(outcomes) {
            // The saver may have gone; its save is written all the same.
            let _ = sender.send(outcome);
        }
    }
}
