//! Conversation rules over in-memory fakes of the store and the event log,
//! a scripted generator and a fake cache: the reply task's events and final
//! states, stopping, retries, resume tokens, caching and ownership.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream;
use time::macros::datetime;
use tokio::sync::watch;
use waiter_domain::{Role, SessionId, Usage};
use waiter_ports::conversations::{
    ClaimedLease, ConversationSummary, Finish, FinishReason, GenerateError, InterruptedReply,
    LogSnapshot, ReplyChunk, ReplyRequest, ReplySave, ReplyStream, StopRequests,
};

use super::*;
use crate::ManualClock;
use crate::cache_aside::tests::FakeCache;

const OWNER: u128 = 1;
const STRANGER: u128 = 2;
const WAIT: Duration = Duration::from_secs(5);

fn caller(account: u128) -> Caller {
    Caller {
        account_id: AccountId::from_ulid(Ulid::from(account)),
        session_id: SessionId::from_ulid(Ulid::from(9_u128)),
        role: Role::Member,
    }
}

fn title(text: &str) -> ConversationTitle {
    ConversationTitle::parse(text).unwrap()
}

// ---------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------

#[derive(Default)]
struct StoreState {
    conversations: HashMap<ConversationId, Conversation>,
    messages: HashMap<ConversationId, Vec<Message>>,
    retry_keys: HashMap<(ConversationId, String), MessageId>,
    /// The conversation each opening key started, its first message and when.
    opening_keys: HashMap<(AccountId, String), (ConversationId, MessageId, Timestamp)>,
    /// Every reply update asked for, saved or not.
    saves: Vec<ReplyUpdate>,
    /// When set, `save_reply` answers `false`, as if someone else had made the reply final.
    refuse_saves: bool,
    /// When set, `save_replies` fails, as with the database down.
    refuse_batches: bool,
    /// How many batches `save_replies` was given, and their sizes.
    batches: Vec<usize>,
    /// When set, each `save_replies` waits for a permit of it first.
    batch_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// How many times `find` and `messages` were called.
    reads: usize,
}

/// A conversation store in a `HashMap`, keeping the port's contract.
#[derive(Default)]
struct FakeStore(Mutex<StoreState>);

impl FakeStore {
    fn state(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.0.lock().unwrap()
    }

    /// Saves one reply as the port says, recording the update.
    fn save(&self, conversation: ConversationId, reply: &MessageId, update: ReplyUpdate) -> bool {
        let mut state = self.state();
        state.saves.push(update.clone());
        if state.refuse_saves {
            return false;
        }
        let Some(stored) = state
            .messages
            .get_mut(&conversation)
            .and_then(|messages| messages.iter_mut().find(|message| &message.id == reply))
        else {
            return false;
        };
        if stored.status != MessageStatus::InProgress {
            return false;
        }
        stored.text = update.text;
        stored.status = update.status;
        stored.metadata = update.metadata;
        stored.updated_at = update.updated_at;
        if update.status.is_final()
            && let Some(conversation) = state.conversations.get_mut(&conversation)
        {
            conversation.version = conversation.version.next();
            conversation.updated_at = update.updated_at;
        }
        true
    }

    fn message(&self, id: ConversationId, message: &MessageId) -> Message {
        self.state().messages[&id]
            .iter()
            .find(|stored| &stored.id == message)
            .cloned()
            .unwrap()
    }
}

#[async_trait]
impl ConversationStore for FakeStore {
    async fn insert(
        &self,
        record: NewConversationRecord,
        _remember: Option<waiter_ports::idempotency::IdempotencyRecord>,
    ) -> Result<Conversation, InsertConversationError> {
        let conversation = record.conversation();
        let mut state = self.state();
        state
            .conversations
            .insert(conversation.id, conversation.clone());
        state.messages.insert(conversation.id, Vec::new());
        Ok(conversation)
    }

    async fn find(&self, id: ConversationId) -> Result<Option<Conversation>, PortError> {
        let mut state = self.state();
        state.reads += 1;
        Ok(state.conversations.get(&id).cloned())
    }

    async fn list(&self, query: ConversationQuery) -> Result<ConversationPage, PortError> {
        let state = self.state();
        let mut owned: Vec<&Conversation> = state
            .conversations
            .values()
            .filter(|conversation| conversation.owner == query.owner)
            .collect();
        owned.sort_by_key(|conversation| {
            std::cmp::Reverse((conversation.updated_at, conversation.id))
        });
        let items = owned
            .iter()
            .skip(query.offset as usize)
            .take(query.limit as usize)
            .map(|conversation| ConversationSummary {
                conversation: (*conversation).clone(),
                last_message: state.messages[&conversation.id]
                    .last()
                    .map(|message| message.text.chars().take(LAST_MESSAGE_CHARS + 1).collect()),
            })
            .collect();
        Ok(ConversationPage {
            items,
            total: owned.len() as u64,
        })
    }

    async fn rename(
        &self,
        id: ConversationId,
        title: ConversationTitle,
        expected_version: Option<Version>,
        updated_at: Timestamp,
    ) -> Result<Conversation, WriteConversationError> {
        let mut state = self.state();
        let conversation = state
            .conversations
            .get_mut(&id)
            .ok_or(WriteConversationError::NotFound)?;
        if let Some(expected) = expected_version
            && expected != conversation.version
        {
            return Err(WriteConversationError::VersionMismatch {
                current: conversation.version,
            });
        }
        conversation.title = title;
        conversation.version = conversation.version.next();
        conversation.updated_at = updated_at;
        Ok(conversation.clone())
    }

    async fn delete(
        &self,
        id: ConversationId,
        expected_version: Option<Version>,
    ) -> Result<(), WriteConversationError> {
        let mut state = self.state();
        let conversation = state
            .conversations
            .get(&id)
            .ok_or(WriteConversationError::NotFound)?;
        if let Some(expected) = expected_version
            && expected != conversation.version
        {
            return Err(WriteConversationError::VersionMismatch {
                current: conversation.version,
            });
        }
        state.conversations.remove(&id);
        state.messages.remove(&id);
        Ok(())
    }

    async fn messages(&self, id: ConversationId) -> Result<Vec<Message>, PortError> {
        let mut state = self.state();
        state.reads += 1;
        Ok(state.messages.get(&id).cloned().unwrap_or_default())
    }

    async fn append_exchange(&self, exchange: NewExchange) -> Result<Conversation, AppendError> {
        let id = exchange.message.conversation_id;
        let mut state = self.state();
        if !state.conversations.contains_key(&id) {
            return Err(AppendError::NotFound);
        }
        let messages = &state.messages[&id];
        if messages
            .iter()
            .any(|stored| stored.id == exchange.message.id)
        {
            return Err(AppendError::AlreadySent(exchange.message.id));
        }
        if let Some(key) = &exchange.retry_key
            && let Some(first) = state.retry_keys.get(&(id, key.clone()))
        {
            return Err(AppendError::AlreadySent(first.clone()));
        }
        if messages
            .iter()
            .any(|stored| stored.status == MessageStatus::InProgress)
        {
            return Err(AppendError::ReplyInFlight);
        }
        if messages.len() + 2 > exchange.max_messages as usize {
            return Err(AppendError::TooManyMessages {
                limit: exchange.max_messages,
            });
        }
        let owner = state.conversations[&id].owner;
        let in_flight = state
            .messages
            .iter()
            .filter(|(conversation, _)| state.conversations[conversation].owner == owner)
            .flat_map(|(_, messages)| messages)
            .filter(|stored| stored.status == MessageStatus::InProgress)
            .count();
        if in_flight >= exchange.max_replies_in_flight as usize {
            return Err(AppendError::TooManyReplies {
                limit: exchange.max_replies_in_flight,
            });
        }
        if let Some(key) = exchange.retry_key {
            state
                .retry_keys
                .insert((id, key), exchange.message.id.clone());
        }
        let created_at = exchange.message.created_at;
        let messages = state.messages.get_mut(&id).unwrap();
        messages.push(exchange.message);
        messages.push(exchange.reply);
        let conversation = state.conversations.get_mut(&id).unwrap();
        conversation.version = conversation.version.next();
        conversation.updated_at = created_at;
        Ok(conversation.clone())
    }

    async fn save_reply(
        &self,
        conversation: ConversationId,
        reply: MessageId,
        update: ReplyUpdate,
    ) -> Result<bool, PortError> {
        Ok(self.save(conversation, &reply, update))
    }

    async fn save_replies(&self, saves: Vec<ReplySave>) -> Result<Vec<bool>, PortError> {
        let gate = self.state().batch_gate.clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        {
            let mut state = self.state();
            state.batches.push(saves.len());
            if state.refuse_batches {
                return Err(down());
            }
        }
        Ok(saves
            .into_iter()
            .map(|save| self.save(save.conversation, &save.reply, save.update))
            .collect())
    }

    async fn start(&self, opening: NewOpening) -> Result<Conversation, AppendError> {
        let NewOpening {
            conversation: record,
            exchange,
            opening_key,
            opening_key_since,
        } = opening;
        let owner = record.owner;
        let key = opening_key.map(|key| (owner, key));
        {
            let mut state = self.state();
            if let Some(key) = &key
                && let Some((conversation, message, started)) = state.opening_keys.get(key)
                && *started >= opening_key_since
                && state.conversations.contains_key(conversation)
            {
                return Err(AppendError::AlreadyStarted {
                    conversation: *conversation,
                    message: message.clone(),
                });
            }
            let conversation = record.conversation();
            state
                .conversations
                .insert(conversation.id, conversation.clone());
            state.messages.insert(conversation.id, Vec::new());
        }
        let message = exchange.message.id.clone();
        let appended = self.append_exchange(exchange).await;
        let mut state = self.state();
        match appended {
            Ok(conversation) => {
                if let Some(key) = key {
                    state
                        .opening_keys
                        .insert(key, (conversation.id, message, record.created_at));
                }
                Ok(conversation)
            }
            Err(err) => {
                state.conversations.remove(&record.id);
                state.messages.remove(&record.id);
                Err(err)
            }
        }
    }

    async fn interrupt_abandoned(
        &self,
        written_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<InterruptedReply>, PortError> {
        let mut state = self.state();
        let owners: HashMap<ConversationId, AccountId> = state
            .conversations
            .values()
            .map(|conversation| (conversation.id, conversation.owner))
            .collect();
        let mut interrupted = Vec::new();
        for message in state.messages.values_mut().flatten() {
            if message.status == MessageStatus::InProgress && message.updated_at < written_before {
                message.status = MessageStatus::Interrupted;
                message.updated_at = now;
                interrupted.push(InterruptedReply {
                    conversation: message.conversation_id,
                    owner: owners[&message.conversation_id],
                    reply: message.id.clone(),
                });
            }
        }
        Ok(interrupted)
    }
}

#[derive(Default)]
struct FakeLogState {
    events: Vec<LoggedEvent>,
    closed: bool,
}

/// A reply event log in memory; followers wake on every append or close.
struct FakeLog {
    logs: Arc<Mutex<HashMap<ReplyKey, FakeLogState>>>,
    changes: watch::Sender<u64>,
    /// When set, every append and close fails, as with the log's server down.
    down: AtomicBool,
}

impl Default for FakeLog {
    fn default() -> Self {
        Self {
            logs: Arc::default(),
            changes: watch::channel(0).0,
            down: AtomicBool::new(false),
        }
    }
}

fn down() -> PortError {
    PortError::Unavailable(anyhow::anyhow!("connection refused"))
}

impl FakeLog {
    fn closed(&self, key: &ReplyKey) -> bool {
        self.logs
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|log| log.closed)
    }
}

#[async_trait]
impl ReplyEventLog for FakeLog {
    async fn append(&self, key: &ReplyKey, seq: u64, payload: &[u8]) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(down());
        }
        let mut logs = self.logs.lock().unwrap();
        let log = logs.entry(key.clone()).or_default();
        if log.closed {
            return Err(PortError::unexpected(anyhow::anyhow!("the log is closed")));
        }
        assert_eq!(seq, log.events.len() as u64 + 1, "seq out of order");
        log.events.push(LoggedEvent {
            seq,
            payload: payload.to_vec(),
        });
        drop(logs);
        self.changes.send_modify(|version| *version += 1);
        Ok(())
    }

    async fn close(&self, key: &ReplyKey, _keep: Duration) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.logs
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .closed = true;
        self.changes.send_modify(|version| *version += 1);
        Ok(())
    }

    async fn snapshot(&self, key: &ReplyKey) -> Result<LogSnapshot, PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(down());
        }
        Ok(self
            .logs
            .lock()
            .unwrap()
            .get(key)
            .map(|log| LogSnapshot {
                events: log.events.clone(),
                closed: log.closed,
            })
            .unwrap_or_default())
    }

    fn follow(&self, key: &ReplyKey, after: u64) -> LoggedEvents {
        let logs = Arc::clone(&self.logs);
        let key = key.clone();
        let changes = self.changes.subscribe();
        Box::pin(stream::unfold(
            (after, changes),
            move |(mut position, mut changes)| {
                let logs = Arc::clone(&logs);
                let key = key.clone();
                async move {
                    loop {
                        changes.borrow_and_update();
                        {
                            let logs = logs.lock().unwrap();
                            let log = logs.get(&key)?;
                            if let Some(event) =
                                log.events.iter().find(|event| event.seq > position)
                            {
                                position = event.seq;
                                return Some((Ok(event.clone()), (position, changes)));
                            }
                            if log.closed {
                                return None;
                            }
                        }
                        changes.changed().await.ok()?;
                    }
                }
            },
        ))
    }
}

/// A lease as [`FakeLeases`] keeps it.
struct FakeLease {
    holder: InstanceId,
    expires: tokio::time::Instant,
}

/// Leases in memory, shared by the services of a test as Redis would be
/// (or not: `shared` says which the services are told).
struct FakeLeases {
    shared: bool,
    leases: Mutex<HashMap<ReplyKey, FakeLease>>,
    stops: tokio::sync::broadcast::Sender<ReplyKey>,
}

impl FakeLeases {
    fn new(shared: bool) -> Self {
        Self {
            shared,
            leases: Mutex::default(),
            stops: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// Makes every lease expire `ago`, as if its holder had died then.
    fn expire_all(&self, ago: Duration) {
        let expired = tokio::time::Instant::now() - ago;
        for lease in self.leases.lock().unwrap().values_mut() {
            lease.expires = expired;
        }
    }

    fn holder(&self, key: &ReplyKey) -> Option<InstanceId> {
        self.leases
            .lock()
            .unwrap()
            .get(key)
            .map(|lease| lease.holder.clone())
    }
}

#[async_trait]
impl ReplyLeases for FakeLeases {
    fn is_shared(&self) -> bool {
        self.shared
    }

    async fn acquire(
        &self,
        key: &ReplyKey,
        holder: &InstanceId,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let now = tokio::time::Instant::now();
        let mut leases = self.leases.lock().unwrap();
        if leases
            .get(key)
            .is_some_and(|lease| &lease.holder != holder && lease.expires > now)
        {
            return Ok(false);
        }
        let lease = FakeLease {
            holder: holder.clone(),
            expires: now + ttl,
        };
        leases.insert(key.clone(), lease);
        Ok(true)
    }

    async fn renew(
        &self,
        holder: &InstanceId,
        keys: &[ReplyKey],
        ttl: Duration,
    ) -> Result<Vec<ReplyKey>, PortError> {
        let expires = tokio::time::Instant::now() + ttl;
        let mut leases = self.leases.lock().unwrap();
        let mut lost = Vec::new();
        for key in keys {
            match leases.get_mut(key) {
                Some(lease) if &lease.holder != holder => lost.push(key.clone()),
                Some(lease) => lease.expires = expires,
                None => {
                    let lease = FakeLease {
                        holder: holder.clone(),
                        expires,
                    };
                    leases.insert(key.clone(), lease);
                }
            }
        }
        Ok(lost)
    }

    async fn release(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError> {
        let mut leases = self.leases.lock().unwrap();
        if leases.get(key).is_some_and(|lease| &lease.holder == holder) {
            leases.remove(key);
        }
        Ok(())
    }

    async fn hand_over(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError> {
        if let Some(lease) = self.leases.lock().unwrap().get_mut(key)
            && &lease.holder == holder
        {
            lease.expires = tokio::time::Instant::now();
        }
        Ok(())
    }

    async fn claim_expired(
        &self,
        holder: &InstanceId,
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<ClaimedLease>, PortError> {
        let now = tokio::time::Instant::now();
        let mut leases = self.leases.lock().unwrap();
        let mut expired: Vec<_> = leases
            .iter()
            .filter(|(_, lease)| lease.expires <= now)
            .map(|(key, lease)| (lease.expires, key.clone()))
            .collect();
        expired.sort_by_key(|(expires, _)| *expires);
        Ok(expired
            .into_iter()
            .take(max)
            .map(|(expires, key)| {
                let lease = FakeLease {
                    holder: holder.clone(),
                    expires: now + ttl,
                };
                leases.insert(key.clone(), lease);
                ClaimedLease {
                    key,
                    expired_for: now - expires,
                }
            })
            .collect())
    }

    async fn request_stop(&self, key: &ReplyKey) -> Result<(), PortError> {
        // Nobody listening is no error: the request is simply lost.
        let _ = self.stops.send(key.clone());
        Ok(())
    }

    fn stop_requests(&self) -> StopRequests {
        let requests = self.stops.subscribe();
        Box::pin(stream::unfold(requests, |mut requests| async move {
            loop {
                match requests.recv().await {
                    Ok(key) => return Some((key, requests)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

/// What a scripted generator does next.
#[derive(Debug, Clone, Copy)]
enum Step {
    Text(&'static str),
    Finish,
    Fail,
    /// Sends nothing more, ever (until dropped).
    Hang,
}

/// Replies with the same script every time, recording what it was asked.
struct ScriptedGenerator {
    script: Vec<Step>,
    requests: Mutex<Vec<ReplyRequest>>,
}

fn finish() -> Finish {
    Finish {
        reason: Some(FinishReason::Stop),
        usage: Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
        }),
    }
}

impl ReplyGenerator for ScriptedGenerator {
    fn model_slug(&self) -> &str {
        "scripted-1"
    }

    fn generate(&self, request: ReplyRequest) -> ReplyStream {
        self.requests.lock().unwrap().push(request);
        let mut items = Vec::new();
        let mut hang = false;
        for step in &self.script {
            match step {
                Step::Text(text) => items.push(Ok(ReplyChunk::Text((*text).to_owned()))),
                Step::Finish => items.push(Ok(ReplyChunk::Finished(finish()))),
                Step::Fail => items.push(Err(GenerateError::Stalled(Duration::from_secs(30)))),
                Step::Hang => hang = true,
            }
        }
        let chunks = stream::iter(items);
        if hang {
            Box::pin(chunks.chain(stream::pending()))
        } else {
            Box::pin(chunks)
        }
    }
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

struct Harness {
    service: Arc<ConversationService>,
    store: Arc<FakeStore>,
    log: Arc<FakeLog>,
    leases: Arc<FakeLeases>,
    generator: Arc<ScriptedGenerator>,
    clock: Arc<ManualClock>,
    /// The service's upkeep, stopped with the harness.
    upkeep: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.upkeep.abort();
    }
}

fn settings() -> ConversationSettings {
    ConversationSettings {
        save_every: Duration::from_millis(20),
        ..ConversationSettings::new(JwtSecret::new(vec![7; 32]).unwrap())
    }
}

fn harness(script: &[Step]) -> Harness {
    harness_with(script, settings())
}

fn harness_with(script: &[Step], settings: ConversationSettings) -> Harness {
    let store = Arc::new(FakeStore::default());
    let log = Arc::new(FakeLog::default());
    let leases = Arc::new(FakeLeases::new(false));
    let clock = Arc::new(ManualClock::new(datetime!(2026-12-01 12:00 UTC)));
    Harness::instance(store, log, leases, clock, script, settings)
}

impl Harness {
    /// A service (an instance) over the given fakes, with a generator of
    /// its own following `script`, and its upkeep running.
    fn instance(
        store: Arc<FakeStore>,
        log: Arc<FakeLog>,
        leases: Arc<FakeLeases>,
        clock: Arc<ManualClock>,
        script: &[Step],
        settings: ConversationSettings,
    ) -> Self {
        let generator = Arc::new(ScriptedGenerator {
            script: script.to_vec(),
            requests: Mutex::default(),
        });
        let ports = ConversationPorts {
            store: Arc::clone(&store) as Arc<dyn ConversationStore>,
            log: Arc::clone(&log) as Arc<dyn ReplyEventLog>,
            leases: Arc::clone(&leases) as Arc<dyn ReplyLeases>,
            generator: Arc::clone(&generator) as Arc<dyn ReplyGenerator>,
            cache: Arc::new(FakeCache::default()),
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
        };
        let service = Arc::new(ConversationService::new(ports, settings));
        let upkeep = tokio::spawn(Arc::clone(&service).keep_replies_going());
        Self {
            service,
            store,
            log,
            leases,
            generator,
            clock,
            upkeep,
        }
    }

    /// Another instance sharing this one's store, log, leases and clock,
    /// with a generator of its own.
    fn sibling(&self, script: &[Step]) -> Self {
        Self::instance(
            Arc::clone(&self.store),
            Arc::clone(&self.log),
            Arc::clone(&self.leases),
            Arc::clone(&self.clock),
            script,
            settings(),
        )
    }
}

/// Two instances sharing their store, log and leases, as with Redis: the
/// first generates with `first`, the second with `second`.
fn cluster(first: &[Step], second: &[Step]) -> (Harness, Harness) {
    let a = Harness::instance(
        Arc::new(FakeStore::default()),
        Arc::new(FakeLog::default()),
        Arc::new(FakeLeases::new(true)),
        Arc::new(ManualClock::new(datetime!(2026-12-01 12:00 UTC))),
        first,
        settings(),
    );
    let b = a.sibling(second);
    (a, b)
}

fn message(conversation: Option<ConversationId>, text: &str) -> SendMessage {
    SendMessage {
        conversation,
        title: None,
        id: None,
        retry_key: None,
        text: waiter_domain::MessageText::parse(text).unwrap(),
        temperature: None,
    }
}

impl Harness {
    async fn send(&self, conversation: Option<ConversationId>, text: &str) -> Sent {
        self.service
            .send_message(caller(OWNER), message(conversation, text))
            .await
            .unwrap()
    }

    /// Every event of the latest reply after `after`, to its end.
    async fn events(&self, id: ConversationId, after: u64) -> Vec<SequencedEvent> {
        let events = self
            .service
            .follow_reply(Follower::Caller(caller(OWNER)), id, after)
            .await
            .unwrap()
            .expect("a reply to follow");
        tokio::time::timeout(WAIT, events.collect())
            .await
            .expect("the reply ends")
    }

    /// Every event of the reply of `sent`, as its sender's stream gives them.
    async fn sent_events(&self, sent: &Sent) -> Vec<SequencedEvent> {
        let events = self
            .service
            .follow_sent(sent)
            .await
            .unwrap()
            .expect("the reply's events are kept");
        tokio::time::timeout(WAIT, events.collect())
            .await
            .expect("the reply ends")
    }

    /// Waits until the latest reply has some text.
    async fn wait_for_text(&self, id: ConversationId) {
        let mut events = self
            .service
            .follow_reply(Follower::Caller(caller(OWNER)), id, 0)
            .await
            .unwrap()
            .unwrap();
        let appended = async {
            while let Some(event) = events.next().await {
                if matches!(event.event, ReplyEvent::Append(_)) {
                    return;
                }
            }
            panic!("the reply ended without text");
        };
        tokio::time::timeout(WAIT, appended).await.unwrap();
    }

    /// Waits until the reply has ended and returns it as stored.
    async fn finished(&self, sent: &Sent) -> Message {
        tokio::time::timeout(
            WAIT,
            self.service
                .wait_for_reply(caller(OWNER), sent.conversation.id, sent.reply.id.clone()),
        )
        .await
        .expect("the reply ends")
        .unwrap()
    }

    fn generations(&self) -> usize {
        self.generator.requests.lock().unwrap().len()
    }
}

fn kinds(events: &[SequencedEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|event| match &event.event {
            ReplyEvent::DeltaEncoding => "delta_encoding",
            ReplyEvent::ResumeToken(_) => "resume_token",
            ReplyEvent::InputMessage(_) => "input_message",
            ReplyEvent::ReplyAdded(_) => "reply_added",
            ReplyEvent::FirstText(_) => "first_text",
            ReplyEvent::Append(_) => "append",
            ReplyEvent::Ended { .. } => "ended",
            ReplyEvent::StreamComplete => "stream_complete",
            ReplyEvent::Done => "done",
            ReplyEvent::Resume => "resume",
        })
        .collect()
}

fn closing(events: &[SequencedEvent]) -> (MessageStatus, MessageMetadata) {
    let [.., ended, complete, done] = events else {
        panic!("too few events: {events:?}");
    };
    assert_eq!(complete.event, ReplyEvent::StreamComplete);
    assert_eq!(done.event, ReplyEvent::Done);
    match &ended.event {
        ReplyEvent::Ended { status, metadata } => (*status, metadata.clone()),
        other => panic!("expected Ended, got {other:?}"),
    }
}

fn resume_token(events: &[SequencedEvent]) -> String {
    events
        .iter()
        .find_map(|event| match &event.event {
            ReplyEvent::ResumeToken(token) => Some(token.clone()),
            _ => None,
        })
        .unwrap()
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_reply_streams_the_seed_protocol_in_order() {
    let app = harness(&[Step::Text("Hello"), Step::Text(" world"), Step::Finish]);
    let sent = app.send(None, "Explain Redis caching").await;
    assert!(!sent.replayed);
    assert_eq!(sent.reply.status, MessageStatus::InProgress);
    assert_eq!(sent.reply.parent_id, Some(sent.message.id.clone()));

    let events = app.events(sent.conversation.id, 0).await;
    assert_eq!(
        kinds(&events),
        [
            "delta_encoding",
            "resume_token",
            "input_message",
            "reply_added",
            "first_text",
            "append",
            "append",
            "ended",
            "stream_complete",
            "done"
        ]
    );
    assert_eq!(
        events.iter().map(|event| event.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        events[2].event,
        ReplyEvent::InputMessage(sent.message.clone())
    );
    let ReplyEvent::ReplyAdded(added) = &events[3].event else {
        panic!("expected ReplyAdded");
    };
    assert_eq!(added, &sent.reply);
    assert_eq!(added.text, "");
    assert_eq!(added.metadata.model_slug.as_deref(), Some("scripted-1"));
    assert_eq!(events[5].event, ReplyEvent::Append("Hello".into()));
    assert_eq!(events[6].event, ReplyEvent::Append(" world".into()));
    let (status, metadata) = closing(&events);
    assert_eq!(status, MessageStatus::FinishedSuccessfully);
    assert_eq!(metadata.finish_reason.as_deref(), Some("stop"));
    assert_eq!(metadata.usage, finish().usage);
    assert_eq!(metadata.model_slug.as_deref(), Some("scripted-1"));
}

/// The sender's own stream is the reply's log from its first event, found
/// without reading the conversation again: the send checked it and names
/// the reply.
#[tokio::test]
async fn the_senders_stream_is_its_reply_read_from_the_log_alone() {
    let app = harness(&[Step::Text("Hello"), Step::Text(" world"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    let reads = app.store.state().reads;
    let events = app.sent_events(&sent).await;
    assert_eq!(app.store.state().reads, reads, "no store read");
    assert_eq!(events, app.events(sent.conversation.id, 0).await);
    assert!(
        events
            .iter()
            .any(|event| event.event == ReplyEvent::Append("Hello".into()))
    );
}

/// A retry that comes after later sends streams the reply to its own
/// message, as the first send did, not the conversation's latest.
#[tokio::test]
async fn a_retried_send_streams_its_own_reply_not_a_later_one() {
    let app = harness(&[Step::Text("Hi!"), Step::Finish]);
    let mut first_send = message(None, "Hello");
    first_send.id = Some(MessageId::parse("msg_001").unwrap());
    let first = app
        .service
        .send_message(caller(OWNER), first_send.clone())
        .await
        .unwrap();
    app.finished(&first).await;
    let later = app.send(Some(first.conversation.id), "And then?").await;
    app.finished(&later).await;

    let mut retry = first_send;
    retry.conversation = Some(first.conversation.id);
    let retry = app
        .service
        .send_message(caller(OWNER), retry)
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.reply.id, first.reply.id);
    let events = app.sent_events(&retry).await;
    let added: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.event {
            ReplyEvent::ReplyAdded(reply) => Some(reply.id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(added, std::slice::from_ref(&first.reply.id));
    assert_eq!(app.generations(), 2);
}

#[tokio::test]
async fn a_finished_reply_is_stored_before_its_stream_ends() {
    let app = harness(&[Step::Text("Hello"), Step::Text(" world"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    app.events(sent.conversation.id, 0).await;
    // Right after `Done`, with no waiting: the final save came first.
    let stored = app.store.message(sent.conversation.id, &sent.reply.id);
    assert_eq!(stored.text, "Hello world");
    assert_eq!(stored.status, MessageStatus::FinishedSuccessfully);
    assert_eq!(stored.metadata.finish_reason.as_deref(), Some("stop"));
    assert_eq!(stored.metadata.usage, finish().usage);
    assert_eq!(
        app.service
            .shared
            .running
            .of_conversation(sent.conversation.id),
        []
    );
    let key = ReplyKey {
        conversation: sent.conversation.id,
        reply: sent.reply.id.clone(),
    };
    assert!(app.log.closed(&key));
    assert_eq!(app.finished(&sent).await, stored);
}

#[tokio::test]
async fn nul_characters_from_the_model_are_dropped() {
    let app = harness(&[Step::Text("\0"), Step::Text("a\0b"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    let events = app.events(sent.conversation.id, 0).await;
    let appended: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.event {
            ReplyEvent::Append(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(appended, ["ab"]);
    let stored = app.store.message(sent.conversation.id, &sent.reply.id);
    assert_eq!(stored.text, "ab");
}

#[tokio::test]
async fn the_generator_gets_the_history_and_the_temperature() {
    let app = harness(&[Step::Text("Sure."), Step::Finish]);
    let first = app.send(None, "First question").await;
    app.finished(&first).await;
    let mut second = message(Some(first.conversation.id), "Second question");
    second.temperature = Some(0.5);
    let sent = app
        .service
        .send_message(caller(OWNER), second)
        .await
        .unwrap();
    app.finished(&sent).await;
    assert_eq!(sent.message.parent_id, Some(first.reply.id.clone()));
    assert_eq!(sent.message.metadata.temperature, Some(0.5));
    let requests = app.generator.requests.lock().unwrap();
    assert_eq!(
        requests[1].history,
        [
            Turn::new(Speaker::User, "First question"),
            Turn::new(Speaker::Assistant, "Sure."),
            Turn::new(Speaker::User, "Second question"),
        ]
    );
    assert_eq!(requests[1].temperature, Some(0.5));
    assert_eq!(requests[1].continue_from, "");
}

#[tokio::test]
async fn a_generator_failure_keeps_the_partial_text_and_closes_the_stream() {
    let app = harness(&[Step::Text("Hal"), Step::Fail]);
    let sent = app.send(None, "Hi").await;
    let events = app.events(sent.conversation.id, 0).await;
    let (status, metadata) = closing(&events);
    assert_eq!(status, MessageStatus::Failed);
    let error = metadata.error.clone().unwrap();
    assert!(!error.contains("30s"), "{error}");
    let stored = app.finished(&sent).await;
    assert_eq!(stored.status, MessageStatus::Failed);
    assert_eq!(stored.text, "Hal");
    assert_eq!(stored.metadata, metadata);
}

#[tokio::test]
async fn a_reply_goes_on_when_its_log_is_down() {
    let app = harness(&[Step::Text("Hello"), Step::Finish]);
    app.log.down.store(true, Ordering::SeqCst);
    let sent = app.send(None, "Hi").await;
    let id = sent.conversation.id;
    // Nothing to follow, but the reply is generated and stored all the same.
    assert!(
        app.service
            .follow_reply(Follower::Caller(caller(OWNER)), id, 0)
            .await
            .unwrap()
            .is_none()
    );
    let stored = tokio::time::timeout(WAIT, async {
        loop {
            let stored = app.store.message(id, &sent.reply.id);
            if stored.status.is_final() {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(stored.status, MessageStatus::FinishedSuccessfully);
    assert_eq!(stored.text, "Hello");
}

#[tokio::test]
async fn a_stopped_reply_is_interrupted_with_its_text_kept() {
    let app = harness(&[Step::Text("Once upon"), Step::Hang]);
    let sent = app.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    app.wait_for_text(id).await;
    app.service.stop_reply(caller(OWNER), id).await.unwrap();
    // Stopping waits for the task: the stream has ended already.
    let key = ReplyKey {
        conversation: id,
        reply: sent.reply.id.clone(),
    };
    assert!(app.log.closed(&key));
    let events = app.events(id, 0).await;
    assert_eq!(closing(&events).0, MessageStatus::Interrupted);
    let stored = app.store.message(id, &sent.reply.id);
    assert_eq!(stored.status, MessageStatus::Interrupted);
    assert_eq!(stored.text, "Once upon");
    assert!(matches!(
        app.service.stop_reply(caller(OWNER), id).await,
        Err(ConversationError::NoReplyInProgress)
    ));
}

#[tokio::test]
async fn a_reply_made_final_elsewhere_stops_generating() {
    let app = harness(&[Step::Text("Once upon"), Step::Hang]);
    let sent = app.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    app.wait_for_text(id).await;
    app.store.state().refuse_saves = true;
    let events = app.events(id, 0).await;
    assert_eq!(closing(&events).0, MessageStatus::Interrupted);
    assert_eq!(app.service.shared.running.of_conversation(id), []);
}

#[tokio::test]
async fn a_reply_stopped_from_another_instance_is_marked_interrupted() {
    let app = harness(&[Step::Finish]);
    // Another instance's reply: stored in progress, unknown to this one.
    let conversation = app
        .service
        .create_conversation(caller(OWNER), title("Elsewhere"), None)
        .await
        .unwrap();
    let now = app.clock.now();
    let user = Message {
        id: MessageId::parse("msg_1").unwrap(),
        conversation_id: conversation.id,
        role: MessageRole::User,
        text: "Hi".into(),
        status: MessageStatus::FinishedSuccessfully,
        parent_id: None,
        metadata: MessageMetadata::default(),
        created_at: now,
        updated_at: now,
    };
    let reply = Message {
        id: MessageId::parse("msg_2").unwrap(),
        role: MessageRole::Assistant,
        text: String::new(),
        status: MessageStatus::InProgress,
        parent_id: Some(user.id.clone()),
        ..user.clone()
    };
    app.store
        .append_exchange(NewExchange {
            message: user,
            reply: reply.clone(),
            retry_key: None,
            max_messages: 10,
            max_replies_in_flight: 10,
        })
        .await
        .unwrap();
    // Its log lives on the other instance's side of a failure: nothing to follow.
    assert!(
        app.service
            .follow_reply(Follower::Caller(caller(OWNER)), conversation.id, 0)
            .await
            .unwrap()
            .is_none()
    );
    app.service
        .stop_reply(caller(OWNER), conversation.id)
        .await
        .unwrap();
    assert_eq!(
        app.store.message(conversation.id, &reply.id).status,
        MessageStatus::Interrupted
    );
    assert_eq!(app.generations(), 0);
}

#[tokio::test]
async fn a_silent_reply_is_still_saved_regularly() {
    let app = harness(&[Step::Hang]);
    let sent = app.send(None, "Hi").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let saves = app.store.state().saves.len();
    assert!(saves >= 3, "only {saves} saves");
    assert!(
        app.store
            .state()
            .saves
            .iter()
            .all(|save| save.status == MessageStatus::InProgress)
    );
    app.service
        .stop_reply(caller(OWNER), sent.conversation.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn abandoned_replies_are_interrupted_and_live_ones_are_not() {
    let app = harness(&[Step::Hang]);
    let live = app.send(None, "Hi").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.service.interrupt_abandoned().await;
    assert_eq!(
        app.store
            .message(live.conversation.id, &live.reply.id)
            .status,
        MessageStatus::InProgress
    );
    app.service
        .stop_reply(caller(OWNER), live.conversation.id)
        .await
        .unwrap();
    // A reply whose writer is gone: not written for longer than allowed.
    let dead = {
        let mut stale = app.store.state();
        let messages = stale.messages.get_mut(&live.conversation.id).unwrap();
        let reply = messages.last_mut().unwrap();
        reply.status = MessageStatus::InProgress;
        reply.id.clone()
    };
    // Read (and cached) while it still shows in progress.
    let cached = app
        .service
        .get_conversation(caller(OWNER), live.conversation.id)
        .await
        .unwrap();
    assert_eq!(
        cached.messages.last().unwrap().status,
        MessageStatus::InProgress
    );
    app.clock.advance(ABANDONED_AFTER + Duration::from_secs(1));
    app.service.interrupt_abandoned().await;
    assert_eq!(
        app.store.message(live.conversation.id, &dead).status,
        MessageStatus::Interrupted
    );
    // The cached history went stale with it.
    let read = app
        .service
        .get_conversation(caller(OWNER), live.conversation.id)
        .await
        .unwrap();
    assert_eq!(
        read.messages.last().unwrap().status,
        MessageStatus::Interrupted
    );
}

#[tokio::test]
async fn deleting_a_conversation_stops_its_reply() {
    let app = harness(&[Step::Text("Once"), Step::Hang]);
    let sent = app.send(None, "Hi").await;
    let id = sent.conversation.id;
    app.wait_for_text(id).await;
    app.service
        .delete_conversation(caller(OWNER), id, None)
        .await
        .unwrap();
    let key = ReplyKey {
        conversation: id,
        reply: sent.reply.id.clone(),
    };
    assert!(app.log.closed(&key));
    assert_eq!(app.service.shared.running.of_conversation(id), []);
    assert!(matches!(
        app.service.get_conversation(caller(OWNER), id).await,
        Err(ConversationError::NotFound)
    ));
}

// ---------------------------------------------------------------------------
// Instances: batched saves, leases, failover, shutdown
// ---------------------------------------------------------------------------

/// The text of every `Append` among `events`, in order.
fn text_of(events: &[SequencedEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match &event.event {
            ReplyEvent::Append(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

impl Harness {
    /// The reply's events up to and including its first `Append`.
    async fn events_until_text(&self, id: ConversationId) -> Vec<SequencedEvent> {
        let mut events = self
            .service
            .follow_reply(Follower::Caller(caller(OWNER)), id, 0)
            .await
            .unwrap()
            .unwrap();
        let mut seen = Vec::new();
        let until_text = async {
            while let Some(event) = events.next().await {
                let text = matches!(event.event, ReplyEvent::Append(_));
                seen.push(event);
                if text {
                    return;
                }
            }
            panic!("the reply ended without text");
        };
        tokio::time::timeout(WAIT, until_text).await.unwrap();
        seen
    }

    /// Stops this instance's upkeep, as its death would: no more renewals,
    /// saves or claims. Its reply tasks stay, silent, like a stalled process.
    fn die(&self) {
        self.upkeep.abort();
    }
}

/// Every event the log holds for the reply, checked to be numbered 1, 2, 3…
fn whole_log(app: &Harness, sent: &Sent) -> Vec<SequencedEvent> {
    let key = ReplyKey {
        conversation: sent.conversation.id,
        reply: sent.reply.id.clone(),
    };
    let events: Vec<SequencedEvent> = app.log.logs.lock().unwrap()[&key]
        .events
        .iter()
        .map(|logged| SequencedEvent {
            seq: logged.seq,
            event: decode_event(&logged.payload).unwrap(),
        })
        .collect();
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    events
}

#[tokio::test]
async fn replies_in_progress_are_saved_together_in_one_batch() {
    let app = harness(&[Step::Text("Working"), Step::Hang]);
    let first = app.send(None, "One").await;
    let second = app.send(None, "Two").await;
    app.wait_for_text(first.conversation.id).await;
    app.wait_for_text(second.conversation.id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let batches = app.store.state().batches.clone();
    assert!(batches.len() >= 2, "{batches:?}");
    assert_eq!(batches.last(), Some(&2));
    for sent in [&first, &second] {
        let stored = app.store.message(sent.conversation.id, &sent.reply.id);
        assert_eq!(stored.text, "Working");
        assert_eq!(stored.status, MessageStatus::InProgress);
    }
}

#[tokio::test]
async fn saves_queued_while_a_batch_is_written_go_together_in_the_next() {
    let store = Arc::new(FakeStore::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    store.state().batch_gate = Some(Arc::clone(&gate));
    let saves = Arc::new(super::saves::ReplySaves::new(
        Arc::clone(&store) as Arc<dyn ConversationStore>
    ));
    let save = |n: u128| ReplySave {
        conversation: ConversationId::from_ulid(Ulid::from(n)),
        reply: MessageId::generated(Ulid::from(n)),
        update: ReplyUpdate {
            text: format!("reply {n}"),
            status: MessageStatus::FinishedSuccessfully,
            metadata: MessageMetadata::default(),
            updated_at: datetime!(2026-12-01 12:00 UTC),
        },
    };
    let first = tokio::spawn({
        let saves = Arc::clone(&saves);
        async move { saves.save_one(save(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later: Vec<_> = [vec![save(2)], vec![save(3)], vec![save(4), save(5)]]
        .into_iter()
        .map(|batch| {
            let saves = Arc::clone(&saves);
            tokio::spawn(async move { saves.save(batch).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.state().batches, Vec::<usize>::new());
    gate.add_permits(10);
    // None of these replies is stored, so none was still in progress.
    assert_eq!(first.await.unwrap(), Some(false));
    for saver in later {
        assert!(
            saver
                .await
                .unwrap()
                .iter()
                .all(|saved| *saved == Some(false))
        );
    }
    assert_eq!(store.state().batches, vec![1, 4]);
}

#[tokio::test]
async fn a_failed_batch_fails_each_of_its_saves() {
    let store = Arc::new(FakeStore::default());
    store.state().refuse_batches = true;
    let saves = super::saves::ReplySaves::new(Arc::clone(&store) as Arc<dyn ConversationStore>);
    let update = ReplyUpdate {
        text: String::new(),
        status: MessageStatus::InProgress,
        metadata: MessageMetadata::default(),
        updated_at: datetime!(2026-12-01 12:00 UTC),
    };
    let saved = saves
        .save(
            (1..=3u128)
                .map(|n| ReplySave {
                    conversation: ConversationId::from_ulid(Ulid::from(n)),
                    reply: MessageId::generated(Ulid::from(n)),
                    update: update.clone(),
                })
                .collect(),
        )
        .await;
    assert_eq!(saved, vec![None, None, None]);
}

#[tokio::test]
async fn replies_go_on_while_their_batch_saves_fail() {
    let app = harness(&[Step::Text("Still"), Step::Hang]);
    app.store.state().refuse_batches = true;
    let sent = app.send(None, "Hi").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.store.state().batches.len() >= 2);
    assert_eq!(
        app.service
            .shared
            .running
            .of_conversation(sent.conversation.id)
            .len(),
        1
    );
    app.store.state().refuse_batches = false;
    app.service
        .stop_reply(caller(OWNER), sent.conversation.id)
        .await
        .unwrap();
    let stored = app.finished(&sent).await;
    assert_eq!(stored.status, MessageStatus::Interrupted);
    assert_eq!(stored.text, "Still");
}

#[tokio::test]
async fn a_reply_holds_its_lease_until_it_ends() {
    let app = harness(&[Step::Text("Hi"), Step::Hang]);
    let sent = app.send(None, "Hello").await;
    let key = ReplyKey {
        conversation: sent.conversation.id,
        reply: sent.reply.id.clone(),
    };
    assert_eq!(
        app.leases.holder(&key).as_ref(),
        Some(&app.service.shared.instance)
    );
    app.service
        .stop_reply(caller(OWNER), sent.conversation.id)
        .await
        .unwrap();
    assert_eq!(app.leases.holder(&key), None);
}

#[tokio::test]
async fn a_reply_whose_instance_died_is_continued_by_another() {
    let (a, b) = cluster(
        &[Step::Text("Once"), Step::Hang],
        &[Step::Text(" upon"), Step::Text(" a time."), Step::Finish],
    );
    let sent = a.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    let seen = a.events_until_text(id).await;
    a.die();
    a.leases.expire_all(Duration::from_secs(1));
    b.service.keep_leases().await;
    // The client resumes on B after the last event it saw.
    let last = seen.last().unwrap().seq;
    let rest = b.events(id, last).await;
    assert_eq!(rest.first().unwrap().seq, last + 1);
    assert_eq!(
        format!("{}{}", text_of(&seen), text_of(&rest)),
        "Once upon a time."
    );
    assert_eq!(closing(&rest).0, MessageStatus::FinishedSuccessfully);
    // B was asked to go on from what the followers had seen.
    let requests = b.generator.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].continue_from, "Once");
    assert_eq!(
        requests[0].history,
        vec![Turn::new(Speaker::User, "Tell me a story")]
    );
    // One reply: every event once, in order, the opening ones not repeated.
    let log = whole_log(&b, &sent);
    assert_eq!(
        kinds(&log),
        [
            "delta_encoding",
            "resume_token",
            "input_message",
            "reply_added",
            "first_text",
            "append",
            "append",
            "append",
            "ended",
            "stream_complete",
            "done"
        ]
    );
    let stored = b.store.message(id, &sent.reply.id);
    assert_eq!(stored.text, "Once upon a time.");
    assert_eq!(stored.status, MessageStatus::FinishedSuccessfully);
    // A, merely stalled, learns at its next save that the reply ended
    // without it, and leaves it without writing anything.
    a.service.save_progress().await;
    tokio::time::timeout(WAIT, async {
        while !a.service.shared.running.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(whole_log(&b, &sent).len(), log.len());
}

#[tokio::test]
async fn text_saved_but_never_logged_reaches_the_followers_of_the_next_instance() {
    let (a, b) = cluster(&[Step::Text("Once"), Step::Hang], &[Step::Finish]);
    let sent = a.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    a.wait_for_text(id).await;
    a.die();
    // The store has more than the log: appends failed while saves went on.
    a.store
        .state()
        .messages
        .get_mut(&id)
        .unwrap()
        .last_mut()
        .unwrap()
        .text = "Once upon".into();
    a.leases.expire_all(Duration::from_secs(1));
    b.service.keep_leases().await;
    let events = b.events(id, 0).await;
    assert_eq!(text_of(&events), "Once upon");
    assert_eq!(
        b.generator.requests.lock().unwrap()[0].continue_from,
        "Once upon"
    );
    assert_eq!(b.store.message(id, &sent.reply.id).text, "Once upon");
}

#[tokio::test]
async fn a_reply_orphaned_while_every_instance_was_down_is_interrupted() {
    let (a, b) = cluster(&[Step::Text("Once"), Step::Hang], &[Step::Finish]);
    let sent = a.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    a.wait_for_text(id).await;
    a.die();
    a.leases
        .expire_all(reply::CONTINUE_WITHIN + Duration::from_secs(1));
    b.service.keep_leases().await;
    let events = b.events(id, 0).await;
    assert_eq!(closing(&events).0, MessageStatus::Interrupted);
    assert_eq!(text_of(&events), "Once");
    let stored = b.store.message(id, &sent.reply.id);
    assert_eq!(stored.status, MessageStatus::Interrupted);
    assert_eq!(stored.text, "Once");
    assert_eq!(b.generations(), 0);
    let key = ReplyKey {
        conversation: id,
        reply: sent.reply.id.clone(),
    };
    assert_eq!(b.leases.holder(&key), None);
}

#[tokio::test]
async fn a_claimed_reply_that_already_ended_only_gets_its_missing_closing_events() {
    let (a, b) = cluster(&[Step::Text("Once"), Step::Hang], &[Step::Finish]);
    let sent = a.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    a.wait_for_text(id).await;
    a.die();
    // Made final in the store (stopped elsewhere), but its log never closed.
    a.store
        .save_reply(
            id,
            sent.reply.id.clone(),
            ReplyUpdate {
                text: "Once".into(),
                status: MessageStatus::Interrupted,
                metadata: sent.reply.metadata.clone(),
                updated_at: a.clock.now(),
            },
        )
        .await
        .unwrap();
    a.leases.expire_all(Duration::from_secs(1));
    b.service.keep_leases().await;
    let events = b.events(id, 0).await;
    assert_eq!(closing(&events).0, MessageStatus::Interrupted);
    assert_eq!(b.generations(), 0);
    assert_eq!(
        kinds(&whole_log(&b, &sent))
            .iter()
            .filter(|kind| **kind == "ended")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_shutting_down_instance_hands_its_replies_over() {
    let (a, b) = cluster(
        &[Step::Text("Once"), Step::Hang],
        &[Step::Text(" upon a time."), Step::Finish],
    );
    let sent = a.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    a.wait_for_text(id).await;
    let mut on_a = a
        .service
        .follow_reply(Follower::Caller(caller(OWNER)), id, 0)
        .await
        .unwrap()
        .unwrap();
    let mut seen = Vec::new();
    while let Some(event) = on_a.next().await {
        let text = matches!(event.event, ReplyEvent::Append(_));
        seen.push(event);
        if text {
            break;
        }
    }
    tokio::time::timeout(WAIT, a.service.shut_down(WAIT))
        .await
        .unwrap();
    // A's follower is told to reconnect, after the last event it was given.
    let last = seen.last().unwrap().seq;
    let rest_on_a: Vec<SequencedEvent> = tokio::time::timeout(WAIT, on_a.collect()).await.unwrap();
    assert_eq!(
        rest_on_a,
        [SequencedEvent {
            seq: last,
            event: ReplyEvent::Resume
        }]
    );
    assert!(a.service.shared.running.is_empty());
    // A starts nothing more.
    assert!(matches!(
        a.service
            .send_message(caller(OWNER), message(Some(id), "More?"))
            .await,
        Err(ConversationError::Port(PortError::Unavailable(_)))
    ));
    // B takes it over at once and the client, reconnecting, gets the rest.
    b.service.keep_leases().await;
    let rest = b.events(id, last).await;
    assert_eq!(
        format!("{}{}", text_of(&seen), text_of(&rest)),
        "Once upon a time."
    );
    assert_eq!(
        b.generator.requests.lock().unwrap()[0].continue_from,
        "Once"
    );
    whole_log(&b, &sent);
}

#[tokio::test]
async fn a_lone_instance_shutting_down_lets_its_replies_finish_or_interrupts_them() {
    let app = harness(&[Step::Text("Once"), Step::Hang]);
    let sent = app.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    app.wait_for_text(id).await;
    let follower = app
        .service
        .follow_reply(Follower::Caller(caller(OWNER)), id, 0)
        .await
        .unwrap()
        .unwrap();
    // No other instance could take the reply: it may run until shortly
    // before the grace period ends, then it is stopped.
    let started = tokio::time::Instant::now();
    app.service
        .shut_down(STOP_WAIT + Duration::from_millis(300))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let events: Vec<SequencedEvent> = tokio::time::timeout(WAIT, follower.collect())
        .await
        .unwrap();
    assert_eq!(closing(&events).0, MessageStatus::Interrupted);
    assert!(!kinds(&events).contains(&"resume"));
    assert_eq!(
        app.store.message(id, &sent.reply.id).status,
        MessageStatus::Interrupted
    );
}

#[tokio::test]
async fn a_reply_is_stopped_from_any_instance_at_once() {
    let (a, b) = cluster(&[Step::Text("Once"), Step::Hang], &[Step::Finish]);
    let sent = a.send(None, "Tell me a story").await;
    let id = sent.conversation.id;
    a.wait_for_text(id).await;
    let started = tokio::time::Instant::now();
    b.service.stop_reply(caller(OWNER), id).await.unwrap();
    // Stopped by A, which heard the request, not by B's fallback.
    assert!(started.elapsed() < STOP_WAIT / 2, "{:?}", started.elapsed());
    assert!(a.service.shared.running.is_empty());
    let stored = a.store.message(id, &sent.reply.id);
    assert_eq!(stored.status, MessageStatus::Interrupted);
    assert_eq!(stored.text, "Once");
    let events = b.events(id, 0).await;
    assert_eq!(closing(&events).0, MessageStatus::Interrupted);
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_retry_by_id_returns_the_first_send_and_starts_nothing() {
    let app = harness(&[Step::Text("Hi!"), Step::Finish]);
    let first = app.send(None, "Hello").await;
    app.finished(&first).await;
    let mut again = message(Some(first.conversation.id), "Hello");
    again.id = Some(first.message.id.clone());
    let retry = app
        .service
        .send_message(caller(OWNER), again)
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.message, first.message);
    assert_eq!(retry.reply.id, first.reply.id);
    assert_eq!(retry.reply.text, "Hi!");
    assert_eq!(app.generations(), 1);
    assert_eq!(app.store.state().messages[&first.conversation.id].len(), 2);
}

#[tokio::test]
async fn a_retry_by_key_returns_the_first_send() {
    let app = harness(&[Step::Text("Hi!"), Step::Finish]);
    let conversation = app
        .service
        .create_conversation(caller(OWNER), title("Keyed"), None)
        .await
        .unwrap();
    let mut keyed = message(Some(conversation.id), "Hello");
    keyed.retry_key = Some("key-1".into());
    let first = app
        .service
        .send_message(caller(OWNER), keyed.clone())
        .await
        .unwrap();
    app.finished(&first).await;
    let retry = app
        .service
        .send_message(caller(OWNER), keyed)
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.message.id, first.message.id);
    assert_eq!(app.generations(), 1);
}

#[tokio::test]
async fn an_account_has_at_most_its_limit_of_replies_in_progress() {
    let app = harness_with(
        &[Step::Hang],
        ConversationSettings {
            max_replies_in_flight: 2,
            ..settings()
        },
    );
    let first = app.send(None, "One").await;
    app.send(None, "Two").await;
    let third = app
        .service
        .send_message(caller(OWNER), message(None, "Three"))
        .await;
    assert!(
        matches!(third, Err(ConversationError::TooManyReplies { limit: 2 })),
        "{third:?}"
    );
    let to_a_conversation = app
        .service
        .send_message(caller(OWNER), message(Some(first.conversation.id), "Three"))
        .await;
    assert!(
        matches!(
            to_a_conversation,
            // The conversation's own reply is checked first.
            Err(ConversationError::ReplyInProgress)
        ),
        "{to_a_conversation:?}"
    );
    app.service
        .send_message(caller(STRANGER), message(None, "Mine"))
        .await
        .expect("another account has its own limit");

    app.service
        .stop_reply(caller(OWNER), first.conversation.id)
        .await
        .unwrap();
    app.send(Some(first.conversation.id), "Three").await;
    assert_eq!(app.generations(), 4);
}

#[tokio::test]
async fn a_retried_first_send_by_id_finds_the_conversation_it_started() {
    let app = harness(&[Step::Text("Hello"), Step::Finish]);
    let mut first_send = message(None, "Hello");
    first_send.id = Some(MessageId::parse("msg_001").unwrap());
    let first = app
        .service
        .send_message(caller(OWNER), first_send.clone())
        .await
        .unwrap();
    assert!(!first.replayed);
    let retry = app
        .service
        .send_message(caller(OWNER), first_send.clone())
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.conversation.id, first.conversation.id);
    assert_eq!(retry.message.id, first.message.id);
    assert_eq!(retry.reply.id, first.reply.id);
    assert_eq!(app.generations(), 1);
    app.finished(&first).await;

    // The same id with other text, or from another account, is no retry.
    let mut other_text = first_send.clone();
    other_text.text = waiter_domain::MessageText::parse("Something else").unwrap();
    let new = app
        .service
        .send_message(caller(OWNER), other_text)
        .await
        .unwrap();
    assert!(!new.replayed);
    assert_ne!(new.conversation.id, first.conversation.id);
    app.finished(&new).await;
    let theirs = app
        .service
        .send_message(caller(STRANGER), first_send.clone())
        .await
        .unwrap();
    assert!(!theirs.replayed);

    // Past the retry window, the same send starts a new conversation.
    app.clock
        .advance(OPENING_RETENTION + Duration::from_secs(1));
    let late = app
        .service
        .send_message(caller(OWNER), first_send)
        .await
        .unwrap();
    assert!(!late.replayed);
    assert_ne!(late.conversation.id, first.conversation.id);
    assert_eq!(app.generations(), 4);
}

#[tokio::test]
async fn a_retried_first_send_by_key_finds_the_conversation_it_started() {
    let app = harness(&[Step::Hang]);
    let mut keyed = message(None, "Hello");
    keyed.retry_key = Some("start-1".into());
    let first = app
        .service
        .send_message(caller(OWNER), keyed.clone())
        .await
        .unwrap();
    // A retry while the reply is still in progress is a retry, not a 409.
    let mut retry = keyed.clone();
    retry.text = waiter_domain::MessageText::parse("Hello again").unwrap();
    let retry = app
        .service
        .send_message(caller(OWNER), retry)
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.conversation.id, first.conversation.id);
    assert_eq!(retry.message, first.message);
    assert_eq!(app.generations(), 1);
    let page = app
        .service
        .list_conversations(caller(OWNER), ConversationOrder::Updated, 0, 10)
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    app.service
        .stop_reply(caller(OWNER), first.conversation.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refused_first_send_leaves_no_conversation() {
    let app = harness_with(
        &[Step::Hang],
        ConversationSettings {
            max_replies_in_flight: 1,
            ..settings()
        },
    );
    let first = app.send(None, "One").await;
    let refused = app
        .service
        .send_message(caller(OWNER), message(None, "Two"))
        .await;
    assert!(
        matches!(refused, Err(ConversationError::TooManyReplies { limit: 1 })),
        "{refused:?}"
    );
    let page = app
        .service
        .list_conversations(caller(OWNER), ConversationOrder::Updated, 0, 10)
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    app.service
        .stop_reply(caller(OWNER), first.conversation.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn one_reply_at_a_time() {
    let app = harness(&[Step::Hang]);
    let sent = app.send(None, "Hi").await;
    assert!(matches!(
        app.service
            .send_message(caller(OWNER), message(Some(sent.conversation.id), "Again"))
            .await,
        Err(ConversationError::ReplyInProgress)
    ));
    app.service
        .stop_reply(caller(OWNER), sent.conversation.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_full_conversation_takes_no_more_messages() {
    let app = harness_with(
        &[Step::Finish],
        ConversationSettings {
            max_messages: 2,
            ..settings()
        },
    );
    let sent = app.send(None, "Hi").await;
    app.finished(&sent).await;
    assert!(matches!(
        app.service
            .send_message(caller(OWNER), message(Some(sent.conversation.id), "Again"))
            .await,
        Err(ConversationError::TooManyMessages { limit: 2 })
    ));
}

#[tokio::test]
async fn messages_longer_than_the_limit_are_refused() {
    let app = harness_with(
        &[Step::Finish],
        ConversationSettings {
            max_message_bytes: 4,
            ..settings()
        },
    );
    // Four characters, eight bytes: the limit counts bytes.
    assert!(matches!(
        app.service
            .send_message(caller(OWNER), message(None, "éééé"))
            .await,
        Err(ConversationError::MessageTooLong { limit: 4 })
    ));
    assert!(app.store.state().conversations.is_empty());
    app.send(None, "abcd").await;
}

#[tokio::test]
async fn temperatures_outside_zero_to_two_are_refused() {
    let app = harness(&[Step::Finish]);
    for temperature in [-0.1, 2.01, f32::NAN, f32::INFINITY] {
        let mut send = message(None, "Hi");
        send.temperature = Some(temperature);
        assert!(
            matches!(
                app.service.send_message(caller(OWNER), send).await,
                Err(ConversationError::InvalidTemperature)
            ),
            "{temperature}"
        );
    }
    let mut send = message(None, "Hi");
    send.temperature = Some(2.0);
    app.service.send_message(caller(OWNER), send).await.unwrap();
}

#[tokio::test]
async fn a_new_conversation_is_titled_after_its_first_message() {
    let app = harness(&[Step::Finish]);
    let derived = app.send(None, "  Explain   Redis\ncaching ").await;
    assert_eq!(derived.conversation.title.as_str(), "Explain Redis caching");
    let mut titled = message(None, "Hi");
    titled.title = Some(title("Given"));
    let titled = app
        .service
        .send_message(caller(OWNER), titled)
        .await
        .unwrap();
    assert_eq!(titled.conversation.title.as_str(), "Given");
    let fallback = app.send(None, "\u{7}").await;
    assert_eq!(fallback.conversation.title.as_str(), FALLBACK_TITLE);
    assert_eq!(fallback.conversation.owner, caller(OWNER).account_id);
    assert!(fallback.message.id.as_str().starts_with("msg_"));
    assert_ne!(fallback.message.id, fallback.reply.id);
}

// ---------------------------------------------------------------------------
// Following
// ---------------------------------------------------------------------------

#[tokio::test]
async fn following_after_n_skips_n_events() {
    let app = harness(&[Step::Text("a"), Step::Text("b"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    let all = app.events(sent.conversation.id, 0).await;
    let rest = app.events(sent.conversation.id, 4).await;
    assert_eq!(rest, all[4..]);
    assert_eq!(rest[0].seq, 5);
}

#[tokio::test]
async fn following_nothing_is_none() {
    let app = harness(&[Step::Finish]);
    let empty = app
        .service
        .create_conversation(caller(OWNER), title("Empty"), None)
        .await
        .unwrap();
    assert!(
        app.service
            .follow_reply(Follower::Caller(caller(OWNER)), empty.id, 0)
            .await
            .unwrap()
            .is_none()
    );
    let sent = app.send(None, "Hi").await;
    app.events(sent.conversation.id, 0).await;
    assert!(
        app.service
            .follow_reply(Follower::Caller(caller(OWNER)), sent.conversation.id, 9)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_undecodable_event_ends_the_stream() {
    let app = harness(&[Step::Text("a"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    app.finished(&sent).await;
    let key = ReplyKey {
        conversation: sent.conversation.id,
        reply: sent.reply.id.clone(),
    };
    app.log.logs.lock().unwrap().get_mut(&key).unwrap().events[2].payload = b"{}".to_vec();
    let events = app.events(sent.conversation.id, 0).await;
    assert_eq!(kinds(&events), ["delta_encoding", "resume_token"]);
}

#[tokio::test]
async fn a_resume_token_follows_its_own_conversation_until_it_expires() {
    let app = harness(&[Step::Text("a"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    let id = sent.conversation.id;
    let token = resume_token(&app.events(id, 0).await);
    let followed = app
        .service
        .follow_reply(Follower::ResumeToken(token.clone()), id, 3)
        .await
        .unwrap()
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(followed[0].seq, 4);

    let other = app.send(None, "Another").await;
    app.finished(&other).await;
    assert!(matches!(
        app.service
            .follow_reply(
                Follower::ResumeToken(token.clone()),
                other.conversation.id,
                0
            )
            .await,
        Err(ConversationError::InvalidResumeToken)
    ));
    for garbage in ["", "garbage", "a.b.c"] {
        assert!(matches!(
            app.service
                .follow_reply(Follower::ResumeToken(garbage.into()), id, 0)
                .await,
            Err(ConversationError::InvalidResumeToken)
        ));
    }
    app.clock.advance(Duration::from_secs(3600));
    assert!(matches!(
        app.service
            .follow_reply(Follower::ResumeToken(token), id, 0)
            .await,
        Err(ConversationError::InvalidResumeToken)
    ));
}

#[tokio::test]
async fn a_resume_token_signed_with_another_key_is_refused() {
    let app = harness(&[Step::Text("a"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    let forged = ResumeTokens::new(
        &JwtSecret::new(vec![8; 32]).unwrap(),
        Duration::from_secs(3600),
    )
    .issue(
        caller(OWNER).account_id,
        &ReplyKey {
            conversation: sent.conversation.id,
            reply: sent.reply.id.clone(),
        },
        app.clock.now(),
    )
    .unwrap();
    assert!(matches!(
        app.service
            .follow_reply(Follower::ResumeToken(forged), sent.conversation.id, 0)
            .await,
        Err(ConversationError::InvalidResumeToken)
    ));
}

#[tokio::test]
async fn a_resume_token_dies_with_its_conversation() {
    let app = harness(&[Step::Text("a"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    let id = sent.conversation.id;
    let token = resume_token(&app.events(id, 0).await);
    app.service
        .delete_conversation(caller(OWNER), id, None)
        .await
        .unwrap();
    assert!(matches!(
        app.service
            .follow_reply(Follower::ResumeToken(token), id, 0)
            .await,
        Err(ConversationError::NotFound)
    ));
}

// ---------------------------------------------------------------------------
// Ownership
// ---------------------------------------------------------------------------

#[tokio::test]
async fn another_accounts_conversation_is_not_found_everywhere() {
    let app = harness(&[Step::Text("a"), Step::Hang]);
    let sent = app.send(None, "Mine").await;
    let id = sent.conversation.id;
    let stranger = caller(STRANGER);
    let not_found = |result: Result<(), ConversationError>, what: &str| {
        assert!(
            matches!(result, Err(ConversationError::NotFound)),
            "{what}: {result:?}"
        );
    };
    not_found(
        app.service.get_conversation(stranger, id).await.map(drop),
        "get",
    );
    not_found(
        app.service
            .rename_conversation(stranger, id, title("Theirs"), None)
            .await
            .map(drop),
        "rename",
    );
    not_found(
        app.service
            .send_message(stranger, message(Some(id), "Hijack"))
            .await
            .map(drop),
        "send",
    );
    not_found(
        app.service
            .follow_reply(Follower::Caller(stranger), id, 0)
            .await
            .map(drop),
        "follow",
    );
    not_found(
        app.service
            .wait_for_reply(stranger, id, sent.reply.id.clone())
            .await
            .map(drop),
        "wait",
    );
    not_found(app.service.stop_reply(stranger, id).await, "stop");
    not_found(
        app.service.delete_conversation(stranger, id, None).await,
        "delete",
    );
    let page = app
        .service
        .list_conversations(stranger, ConversationOrder::Updated, 0, 20)
        .await
        .unwrap();
    assert_eq!(page.total, 0);
    // Nothing of it changed.
    let detail = app
        .service
        .get_conversation(caller(OWNER), id)
        .await
        .unwrap();
    assert_eq!(detail.conversation.title, sent.conversation.title);
    assert_eq!(detail.messages.len(), 2);
    app.service.stop_reply(caller(OWNER), id).await.unwrap();
}

// ---------------------------------------------------------------------------
// Reads and caching
// ---------------------------------------------------------------------------

/// A reply of 150 characters, more than a list shows.
const LONG_REPLY: &str = "ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

#[tokio::test]
async fn lists_show_the_start_of_the_last_message() {
    let app = harness(&[Step::Text(LONG_REPLY), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    app.finished(&sent).await;
    let page = app
        .service
        .list_conversations(caller(OWNER), ConversationOrder::Updated, 0, 20)
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    let shown = page.items[0].last_message.clone().unwrap();
    let expected: String = LONG_REPLY.chars().take(LAST_MESSAGE_CHARS).collect();
    assert_eq!(shown, format!("{expected}…"));
    assert_eq!(shorten("y".repeat(100)), "y".repeat(100));
}

#[tokio::test]
async fn reads_are_cached_until_a_write() {
    let app = harness(&[Step::Text("a"), Step::Finish]);
    let conversation = app
        .service
        .create_conversation(caller(OWNER), title("Before"), None)
        .await
        .unwrap();
    let id = conversation.id;
    let owner = caller(OWNER);
    let list = || {
        app.service
            .list_conversations(owner, ConversationOrder::Updated, 0, 20)
    };
    assert_eq!(
        list().await.unwrap().items[0].conversation.title,
        title("Before")
    );
    app.service.get_conversation(owner, id).await.unwrap();

    // Behind the service's back: the cached reads do not see it.
    app.store
        .rename(id, title("Sneaky"), None, app.clock.now())
        .await
        .unwrap();
    assert_eq!(
        list().await.unwrap().items[0].conversation.title,
        title("Before")
    );
    assert_eq!(
        app.service
            .get_conversation(owner, id)
            .await
            .unwrap()
            .conversation
            .title,
        title("Before")
    );

    // Through the service: both are fresh.
    app.service
        .rename_conversation(owner, id, title("After"), None)
        .await
        .unwrap();
    assert_eq!(
        list().await.unwrap().items[0].conversation.title,
        title("After")
    );
    assert_eq!(
        app.service
            .get_conversation(owner, id)
            .await
            .unwrap()
            .conversation
            .title,
        title("After")
    );

    // A reply's end is a write too.
    let sent = app.send(Some(id), "Hi").await;
    app.service.get_conversation(owner, id).await.unwrap();
    app.events(id, 0).await;
    let detail = app.service.get_conversation(owner, id).await.unwrap();
    assert_eq!(
        detail.messages[1].status,
        MessageStatus::FinishedSuccessfully
    );
    assert_eq!(detail.messages[1].id, sent.reply.id);
    assert_eq!(detail.messages[1].text, "a");

    // A deleted account's conversations are gone from the cache.
    app.store
        .rename(id, title("Gone"), None, app.clock.now())
        .await
        .unwrap();
    app.service.account_deleted(owner.account_id).await.unwrap();
    assert_eq!(
        list().await.unwrap().items[0].conversation.title,
        title("Gone")
    );
    assert_eq!(
        app.service
            .get_conversation(owner, id)
            .await
            .unwrap()
            .conversation
            .title,
        title("Gone")
    );
}

#[tokio::test]
async fn renames_and_deletes_honour_the_expected_version() {
    let app = harness(&[Step::Finish]);
    let conversation = app
        .service
        .create_conversation(caller(OWNER), title("One"), None)
        .await
        .unwrap();
    let stale = Some(Version::new(7));
    assert!(matches!(
        app.service
            .rename_conversation(caller(OWNER), conversation.id, title("Two"), stale)
            .await,
        Err(ConversationError::VersionMismatch { current }) if current == Version::INITIAL
    ));
    assert!(matches!(
        app.service
            .delete_conversation(caller(OWNER), conversation.id, stale)
            .await,
        Err(ConversationError::VersionMismatch { .. })
    ));
    let renamed = app
        .service
        .rename_conversation(
            caller(OWNER),
            conversation.id,
            title("Two"),
            Some(Version::INITIAL),
        )
        .await
        .unwrap();
    app.service
        .delete_conversation(caller(OWNER), conversation.id, Some(renamed.version))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// The codec
// ---------------------------------------------------------------------------

#[test]
fn every_event_survives_the_codec() {
    let now = datetime!(2026-12-01 12:00:00.123456 UTC);
    let message = Message {
        id: MessageId::parse("msg_001").unwrap(),
        conversation_id: ConversationId::from_ulid(Ulid::from(5_u128)),
        role: MessageRole::Assistant,
        text: "héllo\n".into(),
        status: MessageStatus::InProgress,
        parent_id: Some(MessageId::parse("msg_000").unwrap()),
        metadata: MessageMetadata {
            model_slug: Some("m".into()),
            finish_reason: Some("length".into()),
            usage: finish().usage,
            temperature: Some(0.7),
            error: Some("oops".into()),
        },
        created_at: now,
        updated_at: now,
    };
    for event in [
        ReplyEvent::DeltaEncoding,
        ReplyEvent::ResumeToken("t".into()),
        ReplyEvent::InputMessage(message.clone()),
        ReplyEvent::ReplyAdded(message.clone()),
        ReplyEvent::FirstText(message.id.clone()),
        ReplyEvent::Append("chunk".into()),
        ReplyEvent::Ended {
            status: MessageStatus::Failed,
            metadata: message.metadata.clone(),
        },
        ReplyEvent::StreamComplete,
        ReplyEvent::Done,
    ] {
        let bytes = codec::encode_event(&event).unwrap();
        assert_eq!(decode_event(&bytes).unwrap(), event);
    }
    assert!(decode_event(br#"{"ended":{"status":"exploded","metadata":{}}}"#).is_err());
}

#[tokio::test]
async fn store_failures_are_port_errors() {
    let mut store = waiter_ports::conversations::MockConversationStore::new();
    store.expect_find().returning(|_| Err(down()));
    store.expect_list().returning(|_| Err(down()));
    let ports = ConversationPorts {
        store: Arc::new(store),
        log: Arc::new(waiter_ports::conversations::MockReplyEventLog::new()),
        leases: Arc::new(FakeLeases::new(false)),
        generator: Arc::new(waiter_ports::conversations::MockReplyGenerator::new()),
        cache: Arc::new(FakeCache::default()),
        clock: Arc::new(ManualClock::new(datetime!(2026-12-01 12:00 UTC))),
    };
    let service = ConversationService::new(ports, settings());
    let id = ConversationId::from_ulid(Ulid::from(5_u128));
    let owner = caller(OWNER);
    assert!(matches!(
        service.get_conversation(owner, id).await,
        Err(ConversationError::Port(PortError::Unavailable(_)))
    ));
    assert!(matches!(
        service
            .list_conversations(owner, ConversationOrder::Created, 0, 5)
            .await,
        Err(ConversationError::Port(_))
    ));
    assert!(matches!(
        service.stop_reply(owner, id).await,
        Err(ConversationError::Port(_))
    ));
    assert!(matches!(
        service.send_message(owner, message(Some(id), "Hi")).await,
        Err(ConversationError::Port(_))
    ));
}

/// Records metrics in memory, each under `name{label=value,…}`, for one
/// test's thread ([`metrics::set_default_local_recorder`]): the current-thread
/// runtime of `#[tokio::test]` runs the reply tasks there too.
#[derive(Default)]
struct MetricsProbe {
    counters: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn rendered(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl MetricsProbe {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |value| value.load(Ordering::SeqCst))
    }

    fn gauge(&self, key: &str) -> f64 {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map_or(0.0, |value| f64::from_bits(value.load(Ordering::SeqCst)))
    }

    fn samples(&self, key: &str) -> Vec<f64> {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map(|samples| samples.0.lock().unwrap().clone())
            .unwrap_or_default()
    }
}

impl metrics::Recorder for MetricsProbe {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let counter = self
            .counters
            .lock()
            .unwrap()
            .entry(rendered(key))
            .or_default()
            .clone();
        metrics::Counter::from_arc(counter)
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let gauge = self
            .gauges
            .lock()
            .unwrap()
            .entry(rendered(key))
            .or_default()
            .clone();
        metrics::Gauge::from_arc(gauge)
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let samples = self
            .histograms
            .lock()
            .unwrap()
            .entry(rendered(key))
            .or_default()
            .clone();
        metrics::Histogram::from_arc(samples)
    }
}

/// Waits (boundedly) until no reply task of the harness is running.
async fn no_reply_running(app: &Harness) {
    for _ in 0..100 {
        if app.service.shared.running.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a reply task is still running");
}

#[tokio::test]
async fn replies_are_counted_timed_and_their_failures_classified() {
    let probe = MetricsProbe::default();
    let _recording = metrics::set_default_local_recorder(&probe);

    let app = harness(&[Step::Text("Hello"), Step::Finish]);
    let sent = app.send(None, "Hi").await;
    app.finished(&sent).await;
    no_reply_running(&app).await;
    assert_eq!(probe.counter("waiter_replies_total{outcome=started}"), 1);
    assert_eq!(probe.counter("waiter_replies_total{outcome=finished}"), 1);
    assert_eq!(probe.gauge("waiter_replies_active"), 0.0);
    let first_text = probe.samples("waiter_reply_first_text_seconds");
    assert_eq!(first_text.len(), 1);
    assert!((0.0..5.0).contains(&first_text[0]), "{first_text:?}");

    let failing = harness(&[Step::Text("Hel"), Step::Fail]);
    let sent = failing.send(None, "Hi").await;
    failing.finished(&sent).await;
    assert_eq!(probe.counter("waiter_replies_total{outcome=failed}"), 1);
    assert_eq!(
        probe.counter("waiter_reply_generator_errors_total{kind=stalled}"),
        1
    );

    let stopped = harness(&[Step::Hang]);
    let sent = stopped.send(None, "Hi").await;
    assert_eq!(probe.gauge("waiter_replies_active"), 1.0);
    stopped
        .service
        .stop_reply(caller(OWNER), sent.conversation.id)
        .await
        .unwrap();
    no_reply_running(&stopped).await;
    assert_eq!(
        probe.counter("waiter_replies_total{outcome=interrupted}"),
        1
    );
    assert_eq!(probe.counter("waiter_replies_total{outcome=started}"), 3);
    assert_eq!(probe.gauge("waiter_replies_active"), 0.0);
    // A reply that waited for no text has no time to its first.
    assert_eq!(probe.samples("waiter_reply_first_text_seconds").len(), 2);
}
