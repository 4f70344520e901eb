//! The task that generates one reply: it asks the generator, appends each
//! chunk to the reply's event log, saves the text as it grows, and ends the
//! reply with its final status, whatever happens to the client that asked.
//!
//! Its order of work is a contract with followers: the final save happens
//! before the closing events, so a client that has seen `Done` and then
//! reads the conversation sees the reply as it ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use waiter_domain::{AccountId, ConversationId, Message, MessageMetadata, MessageStatus};
use waiter_ports::conversations::{
    Finish, GenerateError, ReplyChunk, ReplyEvent, ReplyKey, ReplyRequest, ReplyUpdate, Turn,
};

use super::Shared;
use super::codec::encode_event;

/// Replies this instance is generating (a gauge).
const REPLIES_ACTIVE: &str = "waiter_replies_active";
/// Replies by `outcome`: `started`, then one of `finished`, `failed` and
/// `interrupted` (a counter).
const REPLIES_TOTAL: &str = "waiter_replies_total";
/// From a send to the first text of its reply (a histogram).
const FIRST_TEXT_SECONDS: &str = "waiter_reply_first_text_seconds";
/// Generator failures by `kind` (a counter).
const GENERATOR_ERRORS_TOTAL: &str = "waiter_reply_generator_errors_total";
/// How long replies generated here took, from their start to their end
/// (finished, failed or interrupted alike).
const DURATION_SECONDS: &str = "waiter_reply_duration_seconds";

/// Counts a reply under `outcome` in [`REPLIES_TOTAL`].
pub(super) fn count_reply(outcome: &'static str) {
    metrics::counter!(REPLIES_TOTAL, "outcome" => outcome).increment(1);
}

/// The outcome a reply that ended with `status` is counted under.
fn ended_as(status: MessageStatus) -> &'static str {
    match status {
        MessageStatus::FinishedSuccessfully => "finished",
        MessageStatus::Failed => "failed",
        // Not a final status; a reply the store would not take for final.
        MessageStatus::Interrupted | MessageStatus::InProgress => "interrupted",
    }
}

/// The `kind` a generator failure is counted under: what went wrong, never
/// the model's own words.
fn error_kind(err: &GenerateError) -> &'static str {
    match err {
        GenerateError::Unavailable(_) => "unavailable",
        GenerateError::FirstTokenTimeout(_) => "first_token_timeout",
        GenerateError::Stalled(_) => "stalled",
        GenerateError::Rejected { .. } => "rejected",
        GenerateError::Failed(_) => "failed",
        GenerateError::Malformed(_) => "malformed",
        GenerateError::TooLarge { .. } => "too_large",
    }
}

/// How often a final save that failed is tried in all.
const FINAL_SAVE_ATTEMPTS: u32 = 3;
/// How long to wait between those attempts.
const FINAL_SAVE_RETRY: Duration = Duration::from_millis(200);

/// The replies this instance generates, each with the signal that stops it.
#[derive(Default)]
pub(super) struct RunningReplies(Mutex<HashMap<ReplyKey, Arc<watch::Sender<bool>>>>);

impl RunningReplies {
    fn lock(&self) -> MutexGuard<'_, HashMap<ReplyKey, Arc<watch::Sender<bool>>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a reply; it is listed (and counted in
    /// `waiter_replies_active`) until the returned mark is dropped.
    fn register(self: &Arc<Self>, key: ReplyKey) -> Running {
        let (stop, stopped) = watch::channel(false);
        self.lock().insert(key.clone(), Arc::new(stop));
        metrics::gauge!(REPLIES_ACTIVE).increment(1.0);
        Running {
            started: Instant::now(),
            key,
            stopped,
            replies: Arc::clone(self),
        }
    }

    /// True when no reply is generated here.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The replies of a conversation generated here.
    pub(super) fn of_conversation(&self, id: ConversationId) -> Vec<ReplyKey> {
        self.lock()
            .keys()
            .filter(|key| key.conversation == id)
            .cloned()
            .collect()
    }

    /// Signals the reply to stop and waits at most `wait` for its task to
    /// end; false when the reply is not generated here.
    pub(super) async fn stop(&self, key: &ReplyKey, wait: Duration) -> bool {
        let Some(stop) = self.lock().get(key).cloned() else {
            return false;
        };
        // Fails only when the task has already ended.
        let _ = stop.send(true);
        if tokio::time::timeout(wait, stop.closed()).await.is_err() {
            tracing::warn!(reply = %key, ?wait, "a stopped reply is still ending");
        }
        true
    }
}

/// Marks a reply as generated here until dropped, and receives its stop
/// signal. Dropped when the task ends, however it ends (a panic included),
/// which is what a stopper waits for.
struct Running {
    started: Instant,
    key: ReplyKey,
    stopped: watch::Receiver<bool>,
    replies: Arc<RunningReplies>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.replies.lock().remove(&self.key);
        metrics::gauge!(REPLIES_ACTIVE).decrement(1.0);
        metrics::histogram!(DURATION_SECONDS).record(self.started.elapsed());
    }
}

impl Running {
    /// Resolves once the reply is asked to stop.
    async fn stop_requested(&mut self) {
        if self.stopped.wait_for(|stopped| *stopped).await.is_err() {
            // The signal can no longer come.
            std::future::pending::<()>().await;
        }
    }
}

/// How the generation ended.
enum Outcome {
    Finished(Finish),
    Failed(GenerateError),
    /// The stream ended without saying it was finished.
    Cut,
    Stopped,
    /// The reply was made final by someone else (stopped from another
    /// instance, marked abandoned, or its conversation deleted).
    Lost,
}

/// One reply being generated.
pub(super) struct ReplyTask {
    shared: Arc<Shared>,
    key: ReplyKey,
    /// The conversation's owner, whose cached lists each save makes stale.
    owner: AccountId,
    reply: Message,
    request: ReplyRequest,
    running: Running,
    /// When the send that started the reply began, for the time to its first text.
    sent_at: Instant,
    /// The last event's position in the log.
    seq: u64,
    text: String,
}

impl ReplyTask {
    /// Registers the reply, makes the conversation's cached views stale (it
    /// has two new messages) and writes the reply's opening events: the
    /// encoding, a resume token, the user's message and the empty reply.
    pub(super) async fn start(
        shared: Arc<Shared>,
        owner: AccountId,
        message: Message,
        reply: Message,
        history: Vec<Turn>,
        temperature: Option<f32>,
        sent_at: Instant,
    ) -> Self {
        let key = ReplyKey {
            conversation: reply.conversation_id,
            reply: reply.id.clone(),
        };
        let running = shared.running.register(key.clone());
        count_reply("started");
        shared.invalidate(owner, key.conversation).await;
        let request = ReplyRequest {
            history,
            temperature,
            continue_from: String::new(),
        };
        let mut task = Self {
            shared,
            key,
            owner,
            reply: reply.clone(),
            request,
            running,
            sent_at,
            seq: 0,
            text: String::new(),
        };
        task.emit(ReplyEvent::DeltaEncoding).await;
        match task
            .shared
            .resume_tokens
            .issue(owner, &task.key, task.shared.clock.now())
        {
            Ok(token) => task.emit(ReplyEvent::ResumeToken(token)).await,
            Err(err) => tracing::error!(%err, reply = %task.key, "cannot issue a resume token"),
        }
        task.emit(ReplyEvent::InputMessage(message)).await;
        task.emit(ReplyEvent::ReplyAdded(reply)).await;
        task
    }

    /// Generates the reply to its end; spawned, it needs no one to poll it.
    pub(super) async fn run(mut self) {
        let outcome = self.generate().await;
        let (status, metadata) = self.finish(outcome).await;
        count_reply(ended_as(status));
        self.shared
            .invalidate(self.owner, self.key.conversation)
            .await;
        self.emit(ReplyEvent::Ended { status, metadata }).await;
        self.emit(ReplyEvent::StreamComplete).await;
        self.emit(ReplyEvent::Done).await;
        if let Err(err) = self
            .shared
            .log
            .close(&self.key, self.shared.settings.log_keep)
            .await
        {
            tracing::warn!(%err, reply = %self.key, "cannot close a reply's event log");
        }
    }

    /// Streams the generator's text into the log, saving it as it grows,
    /// until the generator ends or the reply is stopped or lost.
    async fn generate(&mut self) -> Outcome {
        let mut chunks = self.shared.generator.generate(self.request.clone());
        let save_every = self.shared.settings.save_every;
        let mut saves = tokio::time::interval_at(Instant::now() + save_every, save_every);
        saves.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.running.stop_requested() => return Outcome::Stopped,
                _ = saves.tick() => {
                    // A save with no new text still tells the sweeper the writer lives.
                    if self.save(MessageStatus::InProgress, self.reply.metadata.clone()).await == Some(false) {
                        return Outcome::Lost;
                    }
                }
                chunk = chunks.next() => match chunk {
                    Some(Ok(ReplyChunk::Text(mut text))) => {
                        // A model may emit NUL, which PostgreSQL cannot store in text.
                        text.retain(|c| c != '\0');
                        if text.is_empty() {
                            continue;
                        }
                        if self.text.is_empty() {
                            metrics::histogram!(FIRST_TEXT_SECONDS)
                                .record(self.sent_at.elapsed().as_secs_f64());
                            self.emit(ReplyEvent::FirstText(self.reply.id.clone()))
                                .await;
                        }
                        self.text.push_str(&text);
                        self.emit(ReplyEvent::Append(text)).await;
                    }
                    Some(Ok(ReplyChunk::Finished(finish))) => return Outcome::Finished(finish),
                    Some(Err(err)) => return Outcome::Failed(err),
                    None => return Outcome::Cut,
                },
            }
        }
    }

    /// Saves the reply's final state; returns the status and metadata the
    /// stream ends with.
    async fn finish(&mut self, outcome: Outcome) -> (MessageStatus, MessageMetadata) {
        let mut metadata = self.reply.metadata.clone();
        let status = match outcome {
            Outcome::Finished(finish) => {
                metadata.finish_reason = finish.reason.map(|reason| reason.as_str().to_owned());
                metadata.usage = finish.usage;
                MessageStatus::FinishedSuccessfully
            }
            Outcome::Failed(err) => {
                tracing::warn!(err = %err, reply = %self.key, "the reply generator failed");
                metrics::counter!(GENERATOR_ERRORS_TOTAL, "kind" => error_kind(&err)).increment(1);
                metadata.error = Some(user_message(&err).to_owned());
                MessageStatus::Failed
            }
            Outcome::Cut => {
                tracing::warn!(reply = %self.key, "the reply generator's stream ended unfinished");
                metrics::counter!(GENERATOR_ERRORS_TOTAL, "kind" => "ended_early").increment(1);
                metadata.error = Some("The assistant's reply ended unexpectedly.".to_owned());
                MessageStatus::Failed
            }
            Outcome::Stopped => MessageStatus::Interrupted,
            Outcome::Lost => return (MessageStatus::Interrupted, metadata),
        };
        for attempt in 1..=FINAL_SAVE_ATTEMPTS {
            match self.save(status, metadata.clone()).await {
                Some(true) => return (status, metadata),
                // Made final by someone else meanwhile: stopped, most likely.
                Some(false) => return (MessageStatus::Interrupted, self.reply.metadata.clone()),
                None if attempt < FINAL_SAVE_ATTEMPTS => {
                    tokio::time::sleep(FINAL_SAVE_RETRY).await;
                }
                None => {}
            }
        }
        tracing::error!(reply = %self.key, status = status.as_str(), "cannot save a reply's end; it will be marked interrupted when abandoned");
        (status, metadata)
    }

    /// Writes the text so far; `None` when the store failed (logged).
    async fn save(&self, status: MessageStatus, metadata: MessageMetadata) -> Option<bool> {
        let update = ReplyUpdate {
            text: self.text.clone(),
            status,
            metadata,
            updated_at: self.shared.clock.now(),
        };
        match self
            .shared
            .store
            .save_reply(self.key.conversation, self.key.reply.clone(), update)
            .await
        {
            Ok(saved) => {
                if saved {
                    self.shared
                        .invalidate(self.owner, self.key.conversation)
                        .await;
                }
                Some(saved)
            }
            Err(err) => {
                tracing::warn!(%err, reply = %self.key, "cannot save a reply");
                None
            }
        }
    }

    /// Appends the next event to the log, trying a few times. The log
    /// takes events only in unbroken order, so the position advances only
    /// when one is in; an event the log still refuses is logged and
    /// skipped, and the reply goes on: it is stored whatever its followers
    /// miss.
    async fn emit(&mut self, event: ReplyEvent) {
        let payload = match encode_event(&event) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(%err, reply = %self.key, "cannot encode a reply event");
                return;
            }
        };
        let seq = self.seq + 1;
        for attempt in 1..=APPEND_ATTEMPTS {
            match self.shared.log.append(&self.key, seq, &payload).await {
                Ok(()) => {
                    self.seq = seq;
                    return;
                }
                Err(err) if attempt == APPEND_ATTEMPTS => {
                    tracing::warn!(%err, reply = %self.key, seq, "cannot append to a reply's event log");
                }
                Err(_) => tokio::time::sleep(APPEND_RETRY_PAUSE).await,
            }
        }
    }
}

/// How often an event is offered to a failing log before it is skipped.
const APPEND_ATTEMPTS: u32 = 3;
/// The pause between those attempts.
const APPEND_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why a reply failed, in words fit for its reader: never the model's own
/// message, which may name internals.
fn user_message(err: &GenerateError) -> &'static str {
    match err {
        GenerateError::Unavailable(_) => "The assistant could not be reached. Please try again.",
        GenerateError::FirstTokenTimeout(_) | GenerateError::Stalled(_) => {
            "The assistant took too long to answer. Please try again."
        }
        GenerateError::Rejected { .. } => "The assistant refused the request.",
        GenerateError::Failed(_) => "The assistant failed while answering. Please try again.",
        GenerateError::Malformed(_) => "The assistant's answer could not be read.",
        GenerateError::TooLarge { .. } => "The reply grew too long and was cut short.",
    }
}
