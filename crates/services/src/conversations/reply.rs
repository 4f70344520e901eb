//! The task that generates one reply: it asks the generator, appends each
//! chunk to the reply's event log, and ends the reply with its final status,
//! whatever happens to the client that asked, and to the instance that
//! started it.
//!
//! Its order of work is a contract with followers: the final save happens
//! before the closing events, so a client that has seen `Done` and then
//! reads the conversation sees the reply as it ended.
//!
//! A task starts in one of two ways: [`ReplyTask::start`] for a new reply,
//! or [`ReplyTask::take_over`] for one whose lease this instance claimed
//! (its instance died, or handed it over when shutting down). Taking over
//! reads the reply's log to learn what its followers have seen, and goes on
//! from there: the same reply, the same log, the positions continuing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use waiter_domain::{
    AccountId, ConversationId, Message, MessageMetadata, MessageRole, MessageStatus, Timestamp,
};
use waiter_ports::PortError;
use waiter_ports::conversations::{
    ClaimedLease, Finish, GenerateError, LogSnapshot, ReplyChunk, ReplyEvent, ReplyKey,
    ReplyRequest, ReplySave, ReplyUpdate, Turn,
};

use super::codec::{decode_event, encode_event};
use super::{Shared, history};

/// Replies this instance is generating (a gauge).
const REPLIES_ACTIVE: &str = "waiter_replies_active";
/// Replies by `outcome`: `started`, then one of `finished`, `failed` and
/// `interrupted` (a counter). A reply another instance takes over is
/// counted `taken_over` there, and `handed_over` by an instance that lets
/// it go on shutting down.
const REPLIES_TOTAL: &str = "waiter_replies_total";
/// From a send to the first text of its reply (a histogram).
const FIRST_TEXT_SECONDS: &str = "waiter_reply_first_text_seconds";
/// Generator failures by `kind` (a counter).
const GENERATOR_ERRORS_TOTAL: &str = "waiter_reply_generator_errors_total";
/// How long replies generated here took, from their start (or their taking
/// over) to their end here, however it ended.
const DURATION_SECONDS: &str = "waiter_reply_duration_seconds";

/// A lease not renewed for this long is taken for its holder's death.
pub(super) const LEASE_TTL: Duration = Duration::from_secs(3);
/// A reply whose lease expired longer ago than this when it was claimed
/// lost its instance while no other could continue it (every instance was
/// down): it is interrupted, not continued. Its client gave up long ago.
pub(super) const CONTINUE_WITHIN: Duration = Duration::from_secs(10);

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

/// What a reply's task is told, besides generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Signal {
    /// Go on.
    #[default]
    Go,
    /// Someone asked to stop it: keep its text, mark it interrupted.
    Stop,
    /// This instance is shutting down, and others share the leases: save
    /// its text and let its lease go, so another instance continues it.
    HandOver,
    /// The store holds it as final already (stopped while this instance
    /// could not hear, its conversation deleted, or marked abandoned): end
    /// its stream, writing nothing more to it.
    Lost,
    /// Another instance holds its lease (this one was taken for dead, being
    /// too slow to renew): the reply, its log and its lease are that
    /// instance's now, and this one leaves them alone.
    Superseded,
}

/// A reply generated here, as the instance's upkeep sees it.
struct Entry {
    signal: Arc<watch::Sender<Signal>>,
    owner: AccountId,
    progress: Arc<Mutex<Progress>>,
}

/// What a reply's regular save writes.
struct Progress {
    text: String,
    metadata: MessageMetadata,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The replies this instance generates: each with the signal its task
/// heeds and its text so far, which the upkeep saves in one batch.
pub(super) struct RunningReplies {
    entries: Mutex<HashMap<ReplyKey, Entry>>,
    /// How many there are, for waiting until none is left.
    count: watch::Sender<usize>,
}

impl Default for RunningReplies {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            count: watch::channel(0).0,
        }
    }
}

impl RunningReplies {
    /// Registers a reply; it is listed (and counted in
    /// `waiter_replies_active`) until the returned mark is dropped.
    fn register(
        self: &Arc<Self>,
        key: ReplyKey,
        owner: AccountId,
        text: String,
        metadata: MessageMetadata,
    ) -> Running {
        let (signal, signals) = watch::channel(Signal::Go);
        let progress = Arc::new(Mutex::new(Progress { text, metadata }));
        let entry = Entry {
            signal: Arc::new(signal),
            owner,
            progress: Arc::clone(&progress),
        };
        let mut entries = lock(&self.entries);
        entries.insert(key.clone(), entry);
        self.count.send_replace(entries.len());
        drop(entries);
        metrics::gauge!(REPLIES_ACTIVE).increment(1.0);
        Running {
            started: Instant::now(),
            key,
            signals,
            progress,
            replies: Arc::clone(self),
        }
    }

    /// True when no reply is generated here.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        lock(&self.entries).is_empty()
    }

    /// The replies generated here.
    pub(super) fn keys(&self) -> Vec<ReplyKey> {
        lock(&self.entries).keys().cloned().collect()
    }

    /// The replies of a conversation generated here.
    pub(super) fn of_conversation(&self, id: ConversationId) -> Vec<ReplyKey> {
        lock(&self.entries)
            .keys()
            .filter(|key| key.conversation == id)
            .cloned()
            .collect()
    }

    /// The save of every reply generated here, as of now, with its owner.
    pub(super) fn progress(&self, now: Timestamp) -> Vec<(ReplySave, AccountId)> {
        lock(&self.entries)
            .iter()
            .map(|(key, entry)| {
                let progress = lock(&entry.progress);
                let save = ReplySave {
                    conversation: key.conversation,
                    reply: key.reply.clone(),
                    update: ReplyUpdate {
                        text: progress.text.clone(),
                        status: MessageStatus::InProgress,
                        metadata: progress.metadata.clone(),
                        updated_at: now,
                    },
                };
                (save, entry.owner)
            })
            .collect()
    }

    /// Tells the reply's task `signal`, unless it was told something
    /// already (the first word stands); false when it is not generated here.
    pub(super) fn signal(&self, key: &ReplyKey, signal: Signal) -> bool {
        let Some(sender) = lock(&self.entries).get(key).map(|e| Arc::clone(&e.signal)) else {
            return false;
        };
        sender.send_if_modified(|current| {
            let first = *current == Signal::Go;
            if first {
                *current = signal;
            }
            first
        });
        true
    }

    /// Tells every reply generated here `signal`.
    pub(super) fn signal_all(&self, signal: Signal) {
        for key in self.keys() {
            self.signal(&key, signal);
        }
    }

    /// Signals the reply to stop and waits at most `wait` for its task to
    /// end; false when the reply is not generated here.
    pub(super) async fn stop(&self, key: &ReplyKey, wait: Duration) -> bool {
        let Some(sender) = lock(&self.entries).get(key).map(|e| Arc::clone(&e.signal)) else {
            return false;
        };
        self.signal(key, Signal::Stop);
        if tokio::time::timeout(wait, sender.closed()).await.is_err() {
            tracing::warn!(reply = %key, ?wait, "a stopped reply is still ending");
        }
        true
    }

    /// Waits until no reply is generated here, or `deadline`; true when none is.
    pub(super) async fn wait_until_none(&self, deadline: Instant) -> bool {
        let mut count = self.count.subscribe();
        tokio::time::timeout_at(deadline, count.wait_for(|count| *count == 0))
            .await
            .is_ok()
    }
}

/// Marks a reply as generated here until dropped, and receives its
/// signals. Dropped when the task ends, however it ends (a panic included),
/// which is what a stopper waits for.
struct Running {
    started: Instant,
    key: ReplyKey,
    signals: watch::Receiver<Signal>,
    progress: Arc<Mutex<Progress>>,
    replies: Arc<RunningReplies>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut entries = lock(&self.replies.entries);
        entries.remove(&self.key);
        self.replies.count.send_replace(entries.len());
        drop(entries);
        metrics::gauge!(REPLIES_ACTIVE).decrement(1.0);
        metrics::histogram!(DURATION_SECONDS).record(self.started.elapsed());
    }
}

impl Running {
    /// Resolves with the first signal other than [`Signal::Go`].
    async fn signalled(&mut self) -> Signal {
        let signal = self
            .signals
            .wait_for(|signal| *signal != Signal::Go)
            .await
            .map(|signal| *signal);
        match signal {
            Ok(signal) => signal,
            // The signal can no longer come.
            Err(_) => std::future::pending().await,
        }
    }

    /// The reply's text so far.
    fn text(&self) -> String {
        lock(&self.progress).text.clone()
    }

    fn push_text(&self, text: &str) {
        lock(&self.progress).text.push_str(text);
    }
}

/// How the generation ended.
enum Outcome {
    Finished(Finish),
    Failed(GenerateError),
    /// The stream ended without saying it was finished.
    Cut,
    /// Asked to stop (or, for a reply taken over from an instance long
    /// dead, judged too old to go on): interrupted, with its text.
    Stopped,
    /// Ended already, as its log or the store says: the status and metadata
    /// to end it with.
    Ended(MessageStatus, MessageMetadata),
    /// Made final by someone else (see [`Signal::Lost`]).
    Lost,
    /// Another instance took it over (see [`Signal::Superseded`]).
    Superseded,
    /// This instance is shutting down (see [`Signal::HandOver`]).
    HandedOver,
}

/// What a reply's log already holds, read by an instance taking it over.
#[derive(Debug, Default)]
struct Logged {
    /// The last event's position.
    seq: u64,
    /// The text of every `Append`, in order.
    text: String,
    /// The kinds of event it holds, for knowing which are still to write.
    opened: bool,
    first_text: bool,
    ended: Option<(MessageStatus, MessageMetadata)>,
    stream_complete: bool,
    done: bool,
}

impl Logged {
    fn read(snapshot: &LogSnapshot, key: &ReplyKey) -> Self {
        let mut logged = Self::default();
        for event in &snapshot.events {
            logged.seq = event.seq;
            match decode_event(&event.payload) {
                Ok(ReplyEvent::ReplyAdded(_)) => logged.opened = true,
                Ok(ReplyEvent::FirstText(_)) => logged.first_text = true,
                Ok(ReplyEvent::Append(text)) => logged.text.push_str(&text),
                Ok(ReplyEvent::Ended { status, metadata }) => {
                    logged.ended = Some((status, metadata));
                }
                Ok(ReplyEvent::StreamComplete) => logged.stream_complete = true,
                Ok(ReplyEvent::Done) => logged.done = true,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(%err, reply = %key, seq = event.seq, "skipping an undecodable reply event");
                }
            }
        }
        logged
    }
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
    /// When the send that started the reply began, for the time to its
    /// first text; `None` for a reply taken over.
    sent_at: Option<Instant>,
    /// The last event's position in the log.
    seq: u64,
    /// Whether the log holds the reply's `FirstText` already.
    first_text: bool,
    /// Which of the closing events the log holds already (a reply taken
    /// over from an instance that died while closing it).
    stream_complete: bool,
    done: bool,
}

impl ReplyTask {
    /// Takes the reply's lease, registers it, makes the conversation's
    /// cached views stale (it has two new messages) and writes the reply's
    /// opening events: the encoding, a resume token, the user's message and
    /// the empty reply.
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
        // A reply is generated whether or not its lease could be taken:
        // the next renewal takes it.
        if let Err(err) = shared
            .leases
            .acquire(&key, &shared.instance, LEASE_TTL)
            .await
        {
            tracing::warn!(%err, reply = %key, "cannot take a new reply's lease");
        }
        let running =
            shared
                .running
                .register(key.clone(), owner, String::new(), reply.metadata.clone());
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
            sent_at: Some(sent_at),
            seq: 0,
            first_text: false,
            stream_complete: false,
            done: false,
        };
        task.open(&message, &Logged::default()).await;
        task
    }

    /// Continues (or, for one orphaned long ago, ends) a reply whose lease
    /// this instance claimed; a failure to read it hands the lease back,
    /// so that the next claim tries again.
    pub(super) async fn take_over(shared: Arc<Shared>, lease: ClaimedLease) {
        let key = lease.key.clone();
        match Self::resume(Arc::clone(&shared), lease).await {
            Ok(Some((task, outcome))) => match outcome {
                Some(outcome) => task.end(outcome).await,
                None => task.run().await,
            },
            Ok(None) => {
                if let Err(err) = shared.leases.release(&key, &shared.instance).await {
                    tracing::warn!(%err, reply = %key, "cannot release the lease of a reply that is gone");
                }
            }
            Err(err) => {
                tracing::warn!(%err, reply = %key, "cannot take over a reply; handing it back");
                if let Err(err) = shared.leases.hand_over(&key, &shared.instance).await {
                    tracing::warn!(%err, reply = %key, "cannot hand a reply's lease back");
                }
            }
        }
    }

    /// The task of a claimed reply, set where its log stands, and the
    /// outcome it already has when it is not to be generated further;
    /// `None` when the reply is gone.
    async fn resume(
        shared: Arc<Shared>,
        lease: ClaimedLease,
    ) -> Result<Option<(Self, Option<Outcome>)>, PortError> {
        let key = lease.key;
        let Some(conversation) = shared.store.find(key.conversation).await? else {
            return Ok(None);
        };
        let messages = shared.store.messages(key.conversation).await?;
        let Some(at) = messages
            .iter()
            .position(|m| m.id == key.reply && m.role == MessageRole::Assistant)
        else {
            return Ok(None);
        };
        let reply = messages[at].clone();
        let asked = reply
            .parent_id
            .as_ref()
            .and_then(|parent| messages[..at].iter().rposition(|m| &m.id == parent));
        let Some(asked) = asked else {
            return Err(PortError::unexpected(anyhow::anyhow!(
                "reply {key} answers no message of its conversation"
            )));
        };
        let message = messages[asked].clone();
        let logged = Logged::read(&shared.log.snapshot(&key).await?, &key);
        // The log is what followers saw; the store may hold a little more
        // if appending failed for a while. The longer text is the reply's,
        // as long as one begins with the other.
        let text = if reply.text.len() > logged.text.len() && reply.text.starts_with(&logged.text) {
            reply.text.clone()
        } else {
            logged.text.clone()
        };
        let running = shared.running.register(
            key.clone(),
            conversation.owner,
            text.clone(),
            reply.metadata.clone(),
        );
        count_reply("taken_over");
        let request = ReplyRequest {
            history: history(&messages[..asked], &message),
            temperature: message.metadata.temperature,
            continue_from: text.clone(),
        };
        let mut task = Self {
            shared,
            key,
            owner: conversation.owner,
            reply: reply.clone(),
            request,
            running,
            sent_at: None,
            seq: logged.seq,
            first_text: logged.first_text,
            stream_complete: logged.stream_complete,
            done: logged.done,
        };
        tracing::info!(reply = %task.key, expired_for = ?lease.expired_for, seq = task.seq, "taking over a reply");
        if reply.status != MessageStatus::InProgress {
            // Made final already; its log may lack the closing events.
            let outcome = Outcome::Ended(reply.status, reply.metadata);
            return Ok(Some((task, Some(outcome))));
        }
        if let Some((status, metadata)) = logged.ended.clone() {
            return Ok(Some((task, Some(Outcome::Ended(status, metadata)))));
        }
        task.open(&message, &logged).await;
        if let Some(missing) = text.strip_prefix(logged.text.as_str())
            && !missing.is_empty()
        {
            task.append(missing.to_owned(), false).await;
        }
        if lease.expired_for >= CONTINUE_WITHIN {
            return Ok(Some((task, Some(Outcome::Stopped))));
        }
        Ok(Some((task, None)))
    }

    /// Writes the opening events the log lacks: all of them for a new
    /// reply, none for one whose log has its `ReplyAdded`.
    async fn open(&mut self, message: &Message, logged: &Logged) {
        if logged.opened {
            return;
        }
        // A log that lost its opening events lost them all: they are the
        // first four, written before the send answers.
        if self.seq == 0 {
            self.emit(ReplyEvent::DeltaEncoding).await;
            match self
                .shared
                .resume_tokens
                .issue(self.owner, &self.key, self.shared.clock.now())
            {
                Ok(token) => self.emit(ReplyEvent::ResumeToken(token)).await,
                Err(err) => tracing::error!(%err, reply = %self.key, "cannot issue a resume token"),
            }
            self.emit(ReplyEvent::InputMessage(message.clone())).await;
        }
        let mut added = self.reply.clone();
        added.text = String::new();
        added.status = MessageStatus::InProgress;
        self.emit(ReplyEvent::ReplyAdded(added)).await;
    }

    /// Generates the reply to its end; spawned, it needs no one to poll it.
    pub(super) async fn run(mut self) {
        let outcome = self.generate().await;
        self.end(outcome).await;
    }

    /// Ends the reply here as `outcome` says: leaving it to another
    /// instance, or saving its final state and closing its stream.
    async fn end(mut self, outcome: Outcome) {
        match outcome {
            Outcome::Superseded => {
                tracing::warn!(reply = %self.key, "another instance took this reply over; leaving it");
                return;
            }
            Outcome::HandedOver => {
                self.hand_over().await;
                return;
            }
            Outcome::Lost => {
                // Whoever made it final may have closed its stream too
                // (an instance that took it over and finished it).
                match self.shared.log.snapshot(&self.key).await {
                    Ok(snapshot) if snapshot.closed => {
                        self.release().await;
                        return;
                    }
                    Ok(snapshot) => {
                        let logged = Logged::read(&snapshot, &self.key);
                        self.seq = logged.seq;
                        self.stream_complete = logged.stream_complete;
                        self.done = logged.done;
                    }
                    Err(err) => {
                        tracing::warn!(%err, reply = %self.key, "cannot read the log of a reply lost");
                    }
                }
            }
            _ => {}
        }
        let counted = !matches!(outcome, Outcome::Ended(..));
        let (status, metadata) = self.finish(outcome).await;
        if counted {
            count_reply(ended_as(status));
        }
        self.shared
            .invalidate(self.owner, self.key.conversation)
            .await;
        if !self.stream_complete {
            self.emit(ReplyEvent::Ended { status, metadata }).await;
            self.emit(ReplyEvent::StreamComplete).await;
        }
        if !self.done {
            self.emit(ReplyEvent::Done).await;
        }
        if let Err(err) = self
            .shared
            .log
            .close(&self.key, self.shared.settings.log_keep)
            .await
        {
            tracing::warn!(%err, reply = %self.key, "cannot close a reply's event log");
        }
        self.release().await;
    }

    /// Ends the reply's lease: it needs no instance any more.
    async fn release(&self) {
        if let Err(err) = self
            .shared
            .leases
            .release(&self.key, &self.shared.instance)
            .await
        {
            tracing::warn!(%err, reply = %self.key, "cannot release a reply's lease");
        }
    }

    /// Saves the text so far and lets the lease go, for another instance to
    /// continue the reply at once. Should the save fail, the text is in
    /// the log, which the next instance reads.
    async fn hand_over(&self) {
        self.save(MessageStatus::InProgress, self.reply.metadata.clone())
            .await;
        match self
            .shared
            .leases
            .hand_over(&self.key, &self.shared.instance)
            .await
        {
            Ok(()) => count_reply("handed_over"),
            // Then it expires, and is taken over a few seconds later.
            Err(err) => tracing::warn!(%err, reply = %self.key, "cannot hand a reply over"),
        }
    }

    /// Streams the generator's text into the log until the generator ends
    /// or the task is told otherwise.
    async fn generate(&mut self) -> Outcome {
        let mut chunks = self.shared.generator.generate(self.request.clone());
        loop {
            tokio::select! {
                biased;
                signal = self.running.signalled() => return match signal {
                    Signal::Go | Signal::Stop => Outcome::Stopped,
                    Signal::HandOver => Outcome::HandedOver,
                    Signal::Lost => Outcome::Lost,
                    Signal::Superseded => Outcome::Superseded,
                },
                chunk = chunks.next() => match chunk {
                    Some(Ok(ReplyChunk::Text(mut text))) => {
                        // A model may emit NUL, which PostgreSQL cannot store in text.
                        text.retain(|c| c != '\0');
                        if !text.is_empty() {
                            self.append(text, true).await;
                        }
                    }
                    Some(Ok(ReplyChunk::Finished(finish))) => return Outcome::Finished(finish),
                    Some(Err(err)) => return Outcome::Failed(err),
                    None => return Outcome::Cut,
                },
            }
        }
    }

    /// Adds text to the reply, announcing its first text first. `fresh`
    /// text was just generated (and times the first text), rather than
    /// found in the store by an instance taking over.
    async fn append(&mut self, text: String, fresh: bool) {
        if !self.first_text {
            if fresh && let Some(sent_at) = self.sent_at {
                metrics::histogram!(FIRST_TEXT_SECONDS).record(sent_at.elapsed().as_secs_f64());
            }
            self.first_text = true;
            self.emit(ReplyEvent::FirstText(self.reply.id.clone()))
                .await;
        }
        if fresh {
            self.running.push_text(&text);
        }
        self.emit(ReplyEvent::Append(text)).await;
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
            Outcome::Ended(status, ended) => {
                metadata = ended;
                status
            }
            Outcome::Lost | Outcome::Superseded | Outcome::HandedOver => {
                return (MessageStatus::Interrupted, metadata);
            }
        };
        for attempt in 1..=FINAL_SAVE_ATTEMPTS {
            match self.save(status, metadata.clone()).await {
                Some(true) => return (status, metadata),
                // Made final by someone else meanwhile: stopped, most likely.
                Some(false) => return self.as_stored(status, metadata).await,
                None if attempt < FINAL_SAVE_ATTEMPTS => {
                    tokio::time::sleep(FINAL_SAVE_RETRY).await;
                }
                None => {}
            }
        }
        tracing::error!(reply = %self.key, status = status.as_str(), "cannot save a reply's end; it will be marked interrupted when abandoned");
        (status, metadata)
    }

    /// The final status and metadata the store holds for the reply, which
    /// someone else made final; `Interrupted` if it cannot be read.
    async fn as_stored(
        &self,
        status: MessageStatus,
        metadata: MessageMetadata,
    ) -> (MessageStatus, MessageMetadata) {
        let stored = self
            .shared
            .store
            .messages(self.key.conversation)
            .await
            .ok()
            .and_then(|messages| messages.into_iter().find(|m| m.id == self.key.reply));
        match stored {
            Some(reply) if reply.status == status => (status, metadata),
            Some(reply) if reply.status != MessageStatus::InProgress => {
                (reply.status, reply.metadata)
            }
            _ => (MessageStatus::Interrupted, self.reply.metadata.clone()),
        }
    }

    /// Writes the text so far (in a batch with other replies' saves);
    /// `None` when the store failed (logged).
    async fn save(&self, status: MessageStatus, metadata: MessageMetadata) -> Option<bool> {
        let save = ReplySave {
            conversation: self.key.conversation,
            reply: self.key.reply.clone(),
            update: ReplyUpdate {
                text: self.running.text(),
                status,
                metadata,
                updated_at: self.shared.clock.now(),
            },
        };
        let saved = self.shared.saves.save_one(save).await;
        if saved == Some(true) {
            self.shared
                .invalidate(self.owner, self.key.conversation)
                .await;
        }
        saved
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
