//! The Redis [`ReplyEventLog`]: one Redis stream per reply, so followers on
//! any instance sharing the key prefix see the same events.
//!
//! Event `n` is the stream entry `0-n` with one field, `event`, holding the
//! payload; `close` adds a last entry whose field is `end`. Appending and
//! closing are Lua scripts, so the order check, the write and the expiry are
//! one atomic step: every append sets the stream to expire
//! [`ABANDONED_LOG_TTL`] later, `close` sets it to expire `keep` later.
//! A snapshot reads the stream as a follower reads its backlog, in larger
//! batches, and never waits.
//!
//! # Following without a connection per follower
//!
//! A follower reads with `XRANGE` (in a script) on the shared multiplexed
//! connection, which never blocks. To learn when to read again without
//! polling, it waits on a bell: each adapter has one [`Hub`] task with a
//! connection of its own that waits in `XREAD BLOCK` on every stream any of
//! its followers is waiting on, and rings that stream's followers with the
//! entries that arrive. A follower caught up takes what it lacks from the
//! hub's window of recent entries; one further behind reads for itself.
//!
//! `XREAD BLOCK` must not go through the shared connection: Redis answers a
//! connection's commands in order, so a blocked read would hold up every
//! command queued behind it, and the shared connection's response timeout
//! (a quarter of a second) would cut it. Nor does each follower get a
//! connection of its own: hundreds of followers would cost hundreds of
//! sockets on both sides.
//!
//! So a follower costs no connection and no Redis-side state: reads of its
//! backlog (in batches), then usually none per event, plus one every
//! [`RECHECK`] while nothing arrives. Each adapter costs one extra
//! connection and one `XREAD` per burst of events, whatever the number of
//! followers. The hub learns of a newly watched stream through a wake-up
//! stream of its own, which interrupts its wait at once.
//!
//! # An instance's own replies ring without Redis
//!
//! Most followers follow a reply their own instance generates: the sender's
//! stream, and a reconnection that lands where the reply runs. So an append
//! that succeeds rings the hub's bell for that stream itself, with the
//! entry it just wrote, and the hub leaves a stream appended here in the
//! last [`LOCAL_QUIET`] out of its `XREAD`. Without this, the `XREAD` names
//! every watched stream, and with a thousand replies streaming it returned
//! after almost every append: Redis scanned a thousand keys, and the hub
//! parsed the reply, hundreds of times a second. If another instance takes
//! the reply over, this one stops appending, and the hub waits on the
//! stream again within [`LOCAL_QUIET`]. `close` rings too, with nothing
//! new, so that followers read the end for themselves.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;
use futures::stream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::watch;
use ulid::Ulid;
use waiter_ports::PortError;
use waiter_ports::conversations::{
    ABANDONED_LOG_TTL, LogSnapshot, LoggedEvent, LoggedEvents, ReplyEventLog, ReplyKey,
};

use crate::RedisCache;
use crate::connection::{CALL_BUDGET, Namespace, millis, port_error};

/// Appends `ARGV[2]` as event `ARGV[1]` if that is one more than the last
/// event (1 for a new stream) and the log is not closed, then sets the
/// stream to expire in `ARGV[3]` ms; the last event again, unchanged, is a
/// retry and changes nothing. Redis would itself refuse an entry id not
/// above the last, but not a gap.
const APPEND: &str = r"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local expected = 1
if #last > 0 then
  if last[1][2][1] == 'end' then
    return redis.error_reply('ERR the reply event log is closed')
  end
  expected = tonumber(string.match(last[1][1], '^0%-(%d+)$')) + 1
  if tonumber(ARGV[1]) == expected - 1 and last[1][2][2] == ARGV[2] then
    return 1
  end
end
if tonumber(ARGV[1]) ~= expected then
  return redis.error_reply('ERR expected event ' .. string.format('%.0f', expected) .. ', got ' .. ARGV[1])
end
redis.call('XADD', KEYS[1], '0-' .. ARGV[1], 'event', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Marks the log's end (once) and sets it to expire in `ARGV[1]` ms,
/// deleting it at once for 0; a log that does not exist stays absent.
const CLOSE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 or last[1][2][1] ~= 'end' then
  local seq = 0
  if #last > 0 then
    seq = tonumber(string.match(last[1][1], '^0%-(%d+)$'))
  end
  redis.call('XADD', KEYS[1], '0-' .. string.format('%.0f', seq + 1), 'end', '1')
end
if tonumber(ARGV[1]) == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
";

/// Reads up to `ARGV[2]` entries after event `ARGV[1]`. Returns
/// `{state, entries, newest}`: state 0 when the log does not exist, 2 when
/// it is closed and nothing is left after `ARGV[1]`, 1 otherwise (the
/// entries may then end with the `end` entry); `newest` is the id of the
/// stream's last entry when no entries are returned, `''` otherwise. One
/// round trip, so a log that expires between two reads is never taken for
/// an open one.
const READ: &str = r"
local entries = redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[1], '+', 'COUNT', ARGV[2])
if #entries > 0 then
  return {1, entries, ''}
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then
  return {0, {}, ''}
end
if last[1][2][1] == 'end' then
  return {2, {}, last[1][1]}
end
return {1, {}, last[1][1]}
";

static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND));
static CLOSE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLOSE));
static READ_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(READ));

/// Entries a follower reads per round trip.
const READ_BATCH: usize = 256;
/// Entries a snapshot reads per round trip: more events than most replies
/// have, so most snapshots take one, yet few enough (at the few hundred
/// bytes an event usually takes, a few hundred kilobytes) that a read stays
/// far within the call budget and holds Redis up for a millisecond or so.
const SNAPSHOT_BATCH: usize = 1_024;
/// How many of each watched stream's latest entries the hub keeps for its
/// followers, so one that falls a little behind need not read.
const RECENT: usize = 256;
/// How long the hub's `XREAD` blocks before it looks again at which streams
/// to watch (a new one interrupts it sooner, through the wake-up stream).
const HUB_BLOCK: Duration = Duration::from_secs(5);
/// How long the hub waits before retrying after Redis failed it.
const HUB_RETRY: Duration = Duration::from_millis(500);
/// How long a waiting follower goes without a ring before it reads anyway:
/// what notices a log dropped while open (which no entry announces), and
/// what bounds a missed ring's cost if the hub is in trouble.
const RECHECK: Duration = Duration::from_secs(10);
/// How long the hub's wake-up stream outlives its last use.
const WAKE_TTL: Duration = Duration::from_secs(60);
/// How long after this instance last appended to a stream the hub leaves it
/// out of its `XREAD`: long enough to span a model's pause between chunks,
/// short enough that a reply another instance takes over reaches the
/// followers here about as soon as a failover does.
const LOCAL_QUIET: Duration = Duration::from_secs(1);
/// The hub's shortest wait: Redis reads `BLOCK 0` as "forever".
const HUB_MIN_BLOCK: Duration = Duration::from_millis(1);

/// A [`ReplyEventLog`] in Redis, shared by every instance configured with
/// the same key prefix.
///
/// Appends, closes and reads share the cache's connection and circuit
/// breaker; waiting followers share one hub connection per adapter (clones
/// share it too): see the module documentation.
#[derive(Clone)]
pub struct RedisReplyEventLog {
    namespace: Namespace,
    hub: Arc<Hub>,
}

impl RedisReplyEventLog {
    /// A log on `cache`'s connection, under its key prefix. The hub's own
    /// connection is opened when a follower first waits.
    pub fn sharing(cache: &RedisCache) -> Self {
        let namespace = cache.namespace().clone();
        let wake_key = namespace.key(&format!("reply-log-wake:{}", Ulid::generate()));
        Self {
            hub: Arc::new(Hub {
                namespace: namespace.clone(),
                wake_key,
                state: Mutex::new(HubState::default()),
            }),
            namespace,
        }
    }

    fn stream_key(&self, key: &ReplyKey) -> String {
        self.namespace.key(&format!("reply-log:{key}"))
    }
}

/// Shows the prefix only; the connection's address may carry a password.
impl fmt::Debug for RedisReplyEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplyEventLog")
            .field("prefix", &self.namespace.prefix())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ReplyEventLog for RedisReplyEventLog {
    /// An append out of order or after `close` fails with
    /// [`PortError::Unexpected`]: it is the writer's bug.
    async fn append(&self, key: &ReplyKey, seq: u64, payload: &[u8]) -> Result<(), PortError> {
        let stream = self.stream_key(key);
        let mut invocation = APPEND_SCRIPT.prepare_invoke();
        invocation
            .key(&stream)
            .arg(seq)
            .arg(payload)
            .arg(millis(ABANDONED_LOG_TTL));
        self.namespace.invoke::<()>(invocation).await?;
        self.hub.appended_here(&stream, seq, payload);
        Ok(())
    }

    /// Closing a log that does not exist does nothing; closing one again
    /// only sets its expiry to `keep` from now. Redis keeps expiry times in
    /// whole milliseconds, so a `keep` under one deletes the log at once
    /// (its waiting followers then end at their next re-check, not at once:
    /// a deleted stream announces nothing).
    async fn close(&self, key: &ReplyKey, keep: Duration) -> Result<(), PortError> {
        let stream = self.stream_key(key);
        let mut invocation = CLOSE_SCRIPT.prepare_invoke();
        invocation.key(&stream).arg(millis(keep));
        self.namespace.invoke::<()>(invocation).await?;
        self.hub.closed_here(&stream);
        Ok(())
    }

    /// Reads the stream with the followers' script, [`SNAPSHOT_BATCH`]
    /// entries a round trip, never blocking. The entries a read returns are
    /// the stream's as they were at that moment, and a stream only grows
    /// until it is dropped, so reads in turn add up to the log as it was at
    /// the last; a log dropped between two reads is reported as it now is:
    /// absent, so empty and open.
    async fn snapshot(&self, key: &ReplyKey) -> Result<LogSnapshot, PortError> {
        let stream = self.stream_key(key);
        let mut snapshot = LogSnapshot::default();
        loop {
            let after = snapshot.events.last().map_or(0, |event| event.seq);
            let read = read(&self.namespace, &stream, after, SNAPSHOT_BATCH).await?;
            if !read.exists {
                return Ok(LogSnapshot::default());
            }
            // Fewer entries than asked for: the read reached the end.
            let complete = read.entries.len() < SNAPSHOT_BATCH;
            snapshot.closed = read.closed;
            for entry in read.entries {
                match entry {
                    Entry::Event(event) => snapshot.events.push(event),
                    Entry::End => snapshot.closed = true,
                }
            }
            if complete || snapshot.closed {
                return Ok(snapshot);
            }
        }
    }

    /// Reads nothing until first polled. Redis failing ends the stream with
    /// an `Err` item ([`PortError::Unavailable`] when it is unreachable).
    fn follow(&self, key: &ReplyKey, after: u64) -> LoggedEvents {
        let follower = Follower {
            log: self.clone(),
            stream: self.stream_key(key),
            last: after,
            pending: VecDeque::new(),
            ended: false,
            bell: None,
            delivered: None,
            newest: None,
            caught_up: false,
        };
        Box::pin(stream::unfold(follower, |mut follower| async move {
            let item = follower.next().await?;
            Some((item, follower))
        }))
    }
}

/// One stream entry, parsed.
#[derive(Debug, Clone)]
enum Entry {
    Event(LoggedEvent),
    /// The mark `close` leaves, at the position after the last event
    /// (entry ids stay contiguous, which [`Recent`] relies on).
    End,
}

/// What [`READ`] found after a follower's position.
struct Read {
    exists: bool,
    closed: bool,
    entries: Vec<Entry>,
    /// The position of the stream's last entry, when `entries` is empty.
    newest: Option<u64>,
}

/// A stream entry as Redis sends it: its id and its fields and values.
type RawEntry = (String, Vec<Vec<u8>>);

/// The `n` of an entry id `0-n`.
fn seq_of(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

/// Parses one entry: `0-n` with `event` and the payload, or `end`.
fn entry((id, fields): RawEntry) -> Result<Entry, PortError> {
    let malformed = || PortError::unexpected(anyhow!("malformed reply event log entry {id}"));
    let seq = seq_of(&id).ok_or_else(malformed)?;
    let mut fields = fields.into_iter();
    match (fields.next().as_deref(), fields.next(), fields.next()) {
        (Some(b"event"), Some(payload), None) => Ok(Entry::Event(LoggedEvent { seq, payload })),
        (Some(b"end"), Some(_), None) => Ok(Entry::End),
        _ => Err(malformed()),
    }
}

/// What the hub rings a bell with: the latest entries it has seen of the
/// stream (at most [`RECENT`]), which directly follow event `after`. A
/// follower within that window takes what it lacks from it without a read
/// of its own; one further behind reads.
#[derive(Debug)]
struct Recent {
    after: u64,
    entries: VecDeque<Entry>,
}

impl Recent {
    /// A window starting after event `after`, empty so far.
    fn starting_after(after: u64) -> Self {
        Self {
            after,
            entries: VecDeque::new(),
        }
    }

    /// The position of the window's last entry.
    fn end(&self) -> u64 {
        self.after + self.entries.len() as u64
    }

    /// Adds `entries`, the first at position `first`, keeping the window
    /// unbroken: entries it already holds are skipped (the hub may see an
    /// entry both from this instance's append and from its `XREAD`), and
    /// entries beyond a gap start it afresh, so a follower that lacks what
    /// fell in the gap reads it. Drops the oldest beyond [`RECENT`].
    /// Returns whether anything was added.
    fn add(&mut self, first: u64, entries: Vec<Entry>) -> bool {
        if first > self.end() + 1 {
            *self = Self::starting_after(first - 1);
        }
        let known = (self.end() + 1).saturating_sub(first);
        let before = self.entries.len();
        self.entries.extend(
            entries
                .into_iter()
                .skip(usize::try_from(known).unwrap_or(usize::MAX)),
        );
        let added = self.entries.len() > before;
        while self.entries.len() > RECENT {
            self.entries.pop_front();
            self.after = self.after.saturating_add(1);
        }
        added
    }

    /// The entries after event `last`, if the window holds every one of
    /// them the hub has seen and there is at least one.
    fn after(&self, last: u64) -> Option<Vec<Entry>> {
        let skip = usize::try_from(last.checked_sub(self.after)?).ok()?;
        if skip >= self.entries.len() {
            return None;
        }
        Some(self.entries.range(skip..).cloned().collect())
    }
}

/// A follower's position and what it has read but not yet yielded.
struct Follower {
    log: RedisReplyEventLog,
    stream: String,
    /// The last event read.
    last: u64,
    pending: VecDeque<LoggedEvent>,
    /// The end was read or the log is gone: only `pending` is left.
    ended: bool,
    /// Rung when the stream may have grown; `None` until the follower has
    /// caught up once, since a replay needs no hub.
    bell: Option<watch::Receiver<Recent>>,
    /// Entries the last ring delivered, to take instead of reading.
    delivered: Option<Vec<Entry>>,
    /// Where the stream ended at the last read that found nothing new.
    newest: Option<u64>,
    /// The entries yielded last were the latest the hub had seen when it
    /// rang, so the follower can wait for the next ring without a read.
    caught_up: bool,
}

/// Reads up to `count` entries of `stream` after event `after`, with
/// [`READ`].
async fn read(
    namespace: &Namespace,
    stream: &str,
    after: u64,
    count: usize,
) -> Result<Read, PortError> {
    let mut invocation = READ_SCRIPT.prepare_invoke();
    invocation.key(stream).arg(after).arg(count);
    let (state, entries, newest): (i64, Vec<RawEntry>, String) =
        namespace.invoke(invocation).await?;
    Ok(Read {
        exists: state != 0,
        closed: state == 2,
        entries: entries.into_iter().map(entry).collect::<Result<_, _>>()?,
        newest: seq_of(&newest),
    })
}

impl Follower {
    async fn read(&self) -> Result<Read, PortError> {
        read(&self.log.namespace, &self.stream, self.last, READ_BATCH).await
    }

    /// The next item: an event, waiting for one when caught up; an error,
    /// after which there is nothing more; `None` at the end.
    async fn next(&mut self) -> Option<Result<LoggedEvent, PortError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            let entries = match self.delivered.take() {
                Some(entries) => {
                    self.caught_up = true;
                    entries
                }
                // Everything delivered is yielded: nothing to read until the
                // next ring, which comes after the bell was marked seen.
                None if self.caught_up => {
                    self.caught_up = false;
                    Vec::new()
                }
                None => match self.read().await {
                    Ok(read) if !read.exists || read.closed => {
                        self.ended = true;
                        continue;
                    }
                    Ok(read) => {
                        self.newest = read.newest;
                        read.entries
                    }
                    Err(error) => {
                        self.ended = true;
                        return Some(Err(error));
                    }
                },
            };
            if !entries.is_empty() {
                for entry in entries {
                    match entry {
                        Entry::Event(event) => {
                            self.last = event.seq;
                            self.pending.push_back(event);
                        }
                        Entry::End => self.ended = true,
                    }
                }
                continue;
            }
            // Caught up. The bell is marked seen before the next read (or
            // delivery taken), so an entry that one misses rings it again.
            match &mut self.bell {
                None => {
                    // Never past the stream's end: the hub reads the stream
                    // from there for every follower on this instance, and a
                    // position beyond the end would have it wait forever.
                    let from = self
                        .newest
                        .map_or(self.last, |newest| newest.min(self.last));
                    self.bell = Some(self.log.hub.watch(&self.stream, from).await);
                }
                Some(bell) => {
                    match tokio::time::timeout(RECHECK, bell.changed()).await {
                        Ok(Ok(())) | Err(_) => {}
                        // The hub dropped the bell: unreachable while this
                        // receiver lives, but never spin on it.
                        Ok(Err(_)) => tokio::time::sleep(RECHECK).await,
                    }
                    self.delivered = bell.borrow_and_update().after(self.last);
                }
            }
        }
    }
}

/// Waits on every stream its followers are waiting on, over a connection of
/// its own, and rings their bells with what arrives.
struct Hub {
    namespace: Namespace,
    /// A stream only this hub reads: an entry there interrupts its `XREAD`
    /// so it starts watching a new stream at once.
    wake_key: String,
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    /// The streams watched, by Redis key.
    streams: HashMap<String, Watched>,
    /// Whether the hub task runs; it stops when nothing is watched.
    running: bool,
    /// The hub's connection, kept across its runs once opened.
    connection: Option<ConnectionManager>,
}

struct Watched {
    /// The id of the last entry the hub has seen (or was told of).
    last_id: String,
    /// Until when the hub leaves the stream out of its `XREAD`: this
    /// instance appended to it [`LOCAL_QUIET`] before.
    appended_here_until: Option<Instant>,
    bell: watch::Sender<Recent>,
}

impl Hub {
    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A bell for `stream`, rung whenever entries after event `last` (or
    /// after the last the hub has already seen) arrive; starts the hub if
    /// needed. The returned bell counts as seen.
    async fn watch(self: &Arc<Self>, stream: &str, last: u64) -> watch::Receiver<Recent> {
        let (bell, new) = {
            let mut state = self.state();
            let new = !state.streams.contains_key(stream);
            let watched = state
                .streams
                .entry(stream.to_owned())
                .or_insert_with(|| Watched {
                    last_id: format!("0-{last}"),
                    appended_here_until: None,
                    bell: watch::Sender::new(Recent::starting_after(last)),
                });
            let bell = watched.bell.subscribe();
            if !state.running {
                state.running = true;
                tokio::spawn(self.clone().run());
            }
            (bell, new)
        };
        if new {
            // If this fails Redis is failing the follower's reads too; at
            // worst the hub sees the stream when its current wait ends.
            let _ = self.wake().await;
        }
        bell
    }

    /// Rings `stream`'s followers, if it has any here, with event `seq`
    /// this instance just appended, and leaves the stream out of the hub's
    /// `XREAD` for a while.
    fn appended_here(&self, stream: &str, seq: u64, payload: &[u8]) {
        let mut state = self.state();
        let Some(watched) = state.streams.get_mut(stream) else {
            return;
        };
        if seq_of(&watched.last_id).is_some_and(|last| last < seq) {
            watched.last_id = format!("0-{seq}");
        }
        watched.appended_here_until = Some(Instant::now() + LOCAL_QUIET);
        let event = Entry::Event(LoggedEvent {
            seq,
            payload: payload.to_vec(),
        });
        watched
            .bell
            .send_if_modified(|recent| recent.add(seq, vec![event]));
    }

    /// Rings `stream`'s followers, if it has any here, with nothing new, so
    /// that they read the end this instance just wrote (or find the log
    /// dropped).
    fn closed_here(&self, stream: &str) {
        if let Some(watched) = self.state().streams.get(stream) {
            watched.bell.send_modify(|_| {});
        }
    }

    /// Interrupts the hub's wait, so that it starts watching a new stream.
    async fn wake(&self) -> Result<(), PortError> {
        self.namespace
            .query::<()>(
                redis::cmd("XADD")
                    .arg(&self.wake_key)
                    .arg("MAXLEN")
                    .arg(1)
                    .arg("*")
                    .arg("wake")
                    .arg(1),
            )
            .await?;
        self.namespace
            .query(
                redis::cmd("PEXPIRE")
                    .arg(&self.wake_key)
                    .arg(millis(WAKE_TTL)),
            )
            .await
    }

    /// Rings every bell with nothing new, so that each follower reads
    /// again (and meets the error itself if Redis is down).
    fn ring_all(&self) {
        for watched in self.state().streams.values() {
            watched.bell.send_modify(|_| {});
        }
    }

    async fn connect(&self) -> Result<ConnectionManager, PortError> {
        if let Some(connection) = &self.state().connection {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_BUDGET))
            .set_response_timeout(Some(HUB_BLOCK + CALL_BUDGET * 4))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(self.namespace.client(), config)
            .await
            .map_err(port_error)?;
        self.state().connection = Some(connection.clone());
        Ok(connection)
    }

    /// Waits for entries on every watched stream until none is watched.
    async fn run(self: Arc<Self>) {
        let mut wake_id = String::from("0-0");
        loop {
            let Some((waited_on, block)) = self.to_wait_on() else {
                return;
            };
            match self.wait(&waited_on, block, &wake_id).await {
                Ok(arrived) => self.ring(arrived, &mut wake_id),
                Err(_) => {
                    self.ring_all();
                    tokio::time::sleep(HUB_RETRY).await;
                }
            }
        }
    }

    /// The streams to wait on, each with the id of the last entry seen, and how long to block: until the first stream appended here
    /// must be waited on again, at most [`HUB_BLOCK`]. Forgets the streams
    /// nobody follows any more; `None`, and the hub marked stopped, when
    /// none is left.
    fn to_wait_on(&self) -> Option<(Vec<(String, String)>, Duration)> {
        let mut state = self.state();
        state
            .streams
            .retain(|_, watched| watched.bell.receiver_count() > 0);
        if state.streams.is_empty() {
            state.running = false;
            return None;
        }
        let now = Instant::now();
        let mut block = HUB_BLOCK;
        let mut waited_on = Vec::new();
        for (key, watched) in &state.streams {
            match watched.appended_here_until {
                Some(until) if until > now => block = block.min(until - now),
                _ => waited_on.push((key.clone(), watched.last_id.clone())),
            }
        }
        Some((waited_on, block.max(HUB_MIN_BLOCK)))
    }

    /// One `XREAD BLOCK` on the wake-up stream and `watched`; returns each
    /// stream that got entries, with them.
    async fn wait(
        &self,
        watched: &[(String, String)],
        block: Duration,
        wake_id: &str,
    ) -> Result<Vec<(String, Vec<RawEntry>)>, PortError> {
        let mut connection = self.connect().await?;
        let mut command = redis::cmd("XREAD");
        command
            .arg("BLOCK")
            .arg(millis(block))
            .arg("STREAMS")
            .arg(&self.wake_key);
        for (key, _) in watched {
            command.arg(key);
        }
        command.arg(wake_id);
        for (_, id) in watched {
            command.arg(id);
        }
        let reply: Value = command
            .query_async(&mut connection)
            .await
            .map_err(port_error)?;
        streams(reply)
    }

    /// Records where each stream now is and rings its followers with what
    /// arrived. A stream whose entries cannot be parsed restarts its window
    /// after them: its followers' own reads then fail and report it.
    fn ring(&self, arrived: Vec<(String, Vec<RawEntry>)>, wake_id: &mut String) {
        let mut state = self.state();
        for (key, entries) in arrived {
            let Some((first_id, last_id)) = entries.first().zip(entries.last()) else {
                continue;
            };
            if key == self.wake_key {
                wake_id.clone_from(&last_id.0);
                continue;
            }
            let Some(watched) = state.streams.get_mut(&key) else {
                continue;
            };
            let (first, last) = (seq_of(&first_id.0), seq_of(&last_id.0));
            // Entries this instance appended may have moved it further.
            if seq_of(&watched.last_id) < last || last.is_none() {
                watched.last_id.clone_from(&last_id.0);
            }
            let entries = entries.into_iter().map(entry).collect::<Result<_, _>>();
            match (entries, first) {
                (Ok(entries), Some(first)) => {
                    watched
                        .bell
                        .send_if_modified(|recent| recent.add(first, entries));
                }
                _ => watched.bell.send_modify(|recent| {
                    *recent = Recent::starting_after(last.unwrap_or(u64::MAX));
                }),
            }
        }
    }
}

/// The streams of an `XREAD` reply, each with its entries (none when the
/// wait timed out; an array of pairs in RESP2, a map in RESP3).
fn streams(reply: Value) -> Result<Vec<(String, Vec<RawEntry>)>, PortError> {
    let malformed = || PortError::unexpected(anyhow!("malformed XREAD reply"));
    let streams: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(streams) => streams,
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(pair) => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(key), Some(entries)) => Ok((key, entries)),
                        _ => Err(malformed()),
                    }
                }
                _ => Err(malformed()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(malformed()),
    };
    streams
        .into_iter()
        .map(|(key, entries)| {
            Ok((
                redis::from_redis_value(key).map_err(|_| malformed())?,
                redis::from_redis_value(entries).map_err(|_| malformed())?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Entry {
        Entry::Event(LoggedEvent {
            seq,
            payload: seq.to_string().into_bytes(),
        })
    }

    fn seqs(entries: Option<Vec<Entry>>) -> Option<Vec<Option<u64>>> {
        entries.map(|entries| {
            entries
                .iter()
                .map(|entry| match entry {
                    Entry::Event(event) => Some(event.seq),
                    Entry::End => None,
                })
                .collect()
        })
    }

    #[test]
    fn the_window_gives_what_a_follower_lacks_only_when_it_holds_all_of_it() {
        let mut recent = Recent::starting_after(2);
        assert_eq!(seqs(recent.after(2)), None, "nothing arrived yet");
        assert!(recent.add(3, vec![event(3), event(4)]));
        assert_eq!(seqs(recent.after(2)), Some(vec![Some(3), Some(4)]));
        assert_eq!(seqs(recent.after(3)), Some(vec![Some(4)]));
        assert_eq!(seqs(recent.after(4)), None, "caught up");
        assert_eq!(seqs(recent.after(1)), None, "event 2 is not in the window");

        assert!(recent.add(5, (5..=RECENT as u64 + 4).map(event).collect()));
        assert!(recent.add(RECENT as u64 + 5, vec![Entry::End]));
        let newest = RECENT as u64 + 4;
        assert_eq!(recent.entries.len(), RECENT);
        assert_eq!(
            seqs(recent.after(newest - RECENT as u64 + 1)).map(|s| s.len()),
            Some(RECENT)
        );
        assert_eq!(
            seqs(recent.after(newest - RECENT as u64)),
            None,
            "fell out of the window"
        );
        assert_eq!(
            seqs(recent.after(newest)),
            Some(vec![None]),
            "only the end is left"
        );
    }

    #[test]
    fn an_entry_seen_twice_is_added_once() {
        let mut recent = Recent::starting_after(0);
        assert!(recent.add(1, vec![event(1)]), "appended here");
        assert!(
            recent.add(1, vec![event(1), event(2)]),
            "read by the hub, with one more"
        );
        assert!(!recent.add(2, vec![event(2)]), "nothing new");
        assert_eq!(seqs(recent.after(0)), Some(vec![Some(1), Some(2)]));
    }

    #[test]
    fn entries_beyond_a_gap_start_the_window_afresh() {
        let mut recent = Recent::starting_after(0);
        recent.add(1, vec![event(1)]);
        assert!(recent.add(4, vec![event(4)]));
        assert_eq!(
            seqs(recent.after(1)),
            None,
            "a follower at 1 lacks 2 and 3, so it reads them itself"
        );
        assert_eq!(seqs(recent.after(3)), Some(vec![Some(4)]));
    }

    #[test]
    fn entries_parse_or_are_malformed() {
        let raw = |id: &str, fields: &[&[u8]]| -> RawEntry {
            (
                id.to_owned(),
                fields.iter().map(|field| field.to_vec()).collect(),
            )
        };
        assert!(matches!(
            entry(raw("0-7", &[b"event", b"\xff\x00"])),
            Ok(Entry::Event(LoggedEvent { seq: 7, ref payload })) if payload == b"\xff\x00"
        ));
        assert!(matches!(entry(raw("0-8", &[b"end", b"1"])), Ok(Entry::End)));
        for malformed in [
            raw("1-7", &[b"event", b"x"]),
            raw("0-x", &[b"event", b"x"]),
            raw("0-7", &[b"other", b"x"]),
            raw("0-7", &[b"event"]),
            raw("0-7", &[b"event", b"x", b"end", b"1"]),
        ] {
            assert!(entry(malformed).is_err());
        }
    }

    #[test]
    fn xread_replies_parse_in_resp2_and_resp3() {
        let entries = || {
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"0-1".to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"event".to_vec()),
                    Value::BulkString(b"x".to_vec()),
                ]),
            ])])
        };
        let key = || Value::BulkString(b"stream".to_vec());
        let resp2 = Value::Array(vec![Value::Array(vec![key(), entries()])]);
        let resp3 = Value::Map(vec![(key(), entries())]);
        for reply in [resp2, resp3] {
            let parsed = streams(reply).expect("a valid reply");
            assert_eq!(parsed.len(), 1);
            assert_eq!(parsed[0].0, "stream");
            assert_eq!(parsed[0].1, vec![raw_entry()]);
        }
        assert!(streams(Value::Nil).expect("a timeout").is_empty());
        assert!(streams(Value::Int(1)).is_err());

        fn raw_entry() -> RawEntry {
            ("0-1".to_owned(), vec![b"event".to_vec(), b"x".to_vec()])
        }
    }
}
