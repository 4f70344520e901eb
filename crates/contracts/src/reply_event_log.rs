//! The contract every [`ReplyEventLog`] adapter must honour, Redis and in-process alike.
//!
//! Each check takes a fresh log holding no reply; an adapter's test file
//! runs every one as its own `#[tokio::test]` with
//! [`reply_event_log_contract_tests!`](crate::reply_event_log_contract_tests).
//! Isolation is the caller's job (a new in-process log, or a unique Redis
//! key prefix per test). Every wait is bounded, so a follower that never
//! ends fails its check instead of hanging the suite.

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use ulid::Ulid;
use waiter_domain::{ConversationId, MessageId};
use waiter_ports::conversations::{
    LogSnapshot, LoggedEvent, LoggedEvents, ReplyEventLog, ReplyKey,
};

/// Generates one `#[tokio::test]` per reply event log check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn ReplyEventLog))`
/// that sets up a fresh log, runs `check` on it and cleans up.
#[macro_export]
macro_rules! reply_event_log_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(reply_event_log, $fixture:
            events_come_back_in_order_with_their_seqs,
            follow_after_skips_the_events_already_seen,
            a_follower_sees_events_as_they_are_appended,
            many_followers_see_the_same_sequence,
            following_a_closed_log_replays_it_then_ends,
            an_unknown_log_ends_at_once_empty,
            closing_an_unknown_log_creates_nothing,
            logs_are_independent,
            a_closed_log_is_dropped_after_keep,
            a_follower_dropped_midway_does_not_disturb_the_writer,
            payloads_round_trip_byte_for_byte,
            an_append_out_of_order_or_after_close_is_refused,
            appending_the_last_event_again_changes_nothing,
            a_snapshot_of_an_unknown_log_is_empty_and_open,
            a_snapshot_of_an_open_log_holds_its_events_so_far,
            a_snapshot_of_a_closed_log_is_closed_and_holds_only_its_events,
            a_snapshot_of_a_long_log_holds_every_event,
            a_snapshot_disturbs_neither_followers_nor_the_writer,
        );
    };
}

/// How long a closed log is kept in the checks that do not wait for it to go.
const KEEP: Duration = Duration::from_secs(60);
/// The longest any single read may take before the check fails.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a follower is watched to show it is waiting, not ended.
const QUIET: Duration = Duration::from_millis(150);

/// A reply no other check uses.
fn new_key() -> ReplyKey {
    ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: MessageId::generated(Ulid::generate()),
    }
}

fn payload(key: &ReplyKey, seq: u64) -> Vec<u8> {
    format!("{key} event {seq}").into_bytes()
}

fn event(key: &ReplyKey, seq: u64) -> LoggedEvent {
    LoggedEvent {
        seq,
        payload: payload(key, seq),
    }
}

async fn append(log: &dyn ReplyEventLog, key: &ReplyKey, seq: u64) {
    log.append(key, seq, &payload(key, seq))
        .await
        .unwrap_or_else(|error| panic!("append {seq} to {key} failed: {error:?}"));
}

/// Appends events `seqs` with their standard payloads.
async fn append_all(log: &dyn ReplyEventLog, key: &ReplyKey, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        append(log, key, seq).await;
    }
}

async fn close(log: &dyn ReplyEventLog, key: &ReplyKey, keep: Duration) {
    log.close(key, keep)
        .await
        .unwrap_or_else(|error| panic!("close {key} failed: {error:?}"));
}

/// The next event of `events`, `None` when it ended; panics on an error or
/// when nothing comes within [`PATIENCE`].
async fn next(events: &mut LoggedEvents) -> Option<LoggedEvent> {
    match tokio::time::timeout(PATIENCE, events.next()).await {
        Ok(Some(Ok(event))) => Some(event),
        Ok(Some(Err(error))) => panic!("following failed: {error:?}"),
        Ok(None) => None,
        Err(_) => panic!("no event and no end within {PATIENCE:?}"),
    }
}

/// Every event of `events` until it ends, which must be within [`PATIENCE`].
async fn read_to_end(mut events: LoggedEvents) -> Vec<LoggedEvent> {
    let mut read = Vec::new();
    while let Some(event) = next(&mut events).await {
        read.push(event);
    }
    read
}

/// Asserts `events` is waiting for more: neither an event nor its end comes soon.
async fn assert_waiting(events: &mut LoggedEvents) {
    if let Ok(item) = tokio::time::timeout(QUIET, events.next()).await {
        panic!("a follower of an open log must wait, got {item:?}");
    }
}

/// Events come back in the order appended, each with its seq and payload.
pub async fn events_come_back_in_order_with_their_seqs(log: &dyn ReplyEventLog) {
    let key = new_key();
    append_all(log, &key, 1..=5).await;
    close(log, &key, KEEP).await;

    let read = read_to_end(log.follow(&key, 0)).await;
    let expected: Vec<LoggedEvent> = (1..=5).map(|seq| event(&key, seq)).collect();
    assert_eq!(read, expected);
}

/// `follow(after = n)` starts at event n + 1, whether the log is open or
/// closed; at or beyond the last event it has only the end (or the wait)
/// left. A follower asking for more than there is (a client's bad resume
/// position) delays no other follower.
pub async fn follow_after_skips_the_events_already_seen(log: &dyn ReplyEventLog) {
    let key = new_key();
    append_all(log, &key, 1..=5).await;

    let mut ahead = log.follow(&key, 1_000);
    assert_waiting(&mut ahead).await;
    let mut open = log.follow(&key, 2);
    for seq in 3..=5 {
        assert_eq!(next(&mut open).await, Some(event(&key, seq)));
    }
    assert_waiting(&mut open).await;
    let mut caught_up = log.follow(&key, 5);
    assert_waiting(&mut caught_up).await;
    let mut far_ahead = log.follow(&key, u64::MAX);
    assert_waiting(&mut far_ahead).await;

    append(log, &key, 6).await;
    assert_eq!(next(&mut open).await, Some(event(&key, 6)));
    assert_eq!(next(&mut caught_up).await, Some(event(&key, 6)));
    close(log, &key, KEEP).await;
    for (name, mut follower) in [
        ("open", open),
        ("caught up", caught_up),
        ("ahead", ahead),
        ("far ahead", far_ahead),
    ] {
        assert_eq!(next(&mut follower).await, None, "close must end {name}");
    }

    let read = read_to_end(log.follow(&key, 3)).await;
    assert_eq!(
        read,
        (4..=6).map(|seq| event(&key, seq)).collect::<Vec<_>>()
    );
    for beyond in [6, 7, 1_000, u64::MAX] {
        assert_eq!(read_to_end(log.follow(&key, beyond)).await, vec![]);
    }
}

/// A follower that has read the backlog receives each new event as it is
/// appended (before the next one is), and ends once the log is closed.
pub async fn a_follower_sees_events_as_they_are_appended(log: &dyn ReplyEventLog) {
    let key = new_key();
    append(log, &key, 1).await;
    let mut follower = log.follow(&key, 0);
    assert_eq!(next(&mut follower).await, Some(event(&key, 1)));
    assert_waiting(&mut follower).await;

    for seq in 2..=6 {
        append(log, &key, seq).await;
        assert_eq!(
            next(&mut follower).await,
            Some(event(&key, seq)),
            "event {seq} must reach a follower without waiting for another"
        );
    }
    close(log, &key, KEEP).await;
    assert_eq!(next(&mut follower).await, None);
}

/// Two hundred followers, started at different points, all see the same
/// whole sequence while the writer appends concurrently, then all end.
pub async fn many_followers_see_the_same_sequence(log: &dyn ReplyEventLog) {
    const FOLLOWERS: usize = 200;
    const EVENTS: u64 = 20;
    let key = new_key();
    append(log, &key, 1).await;

    let followers = join_all((0..FOLLOWERS).map(|i| {
        let key = &key;
        async move {
            // Let the followers join while the writer is already going.
            tokio::time::sleep(Duration::from_millis((i % 10) as u64 * 5)).await;
            read_to_end(log.follow(key, 0)).await
        }
    }));
    let writer = async {
        for seq in 2..=EVENTS {
            append(log, &key, seq).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        close(log, &key, KEEP).await;
    };
    let (read, ()) = tokio::join!(followers, writer);

    let expected: Vec<LoggedEvent> = (1..=EVENTS).map(|seq| event(&key, seq)).collect();
    for (i, read) in read.iter().enumerate() {
        assert_eq!(read, &expected, "follower {i}");
    }
}

/// A closed log is replayed whole to a follower arriving later, which then
/// ends without waiting.
pub async fn following_a_closed_log_replays_it_then_ends(log: &dyn ReplyEventLog) {
    let key = new_key();
    append_all(log, &key, 1..=3).await;
    close(log, &key, KEEP).await;
    for _ in 0..2 {
        let read = read_to_end(log.follow(&key, 0)).await;
        assert_eq!(read, vec![event(&key, 1), event(&key, 2), event(&key, 3)]);
    }
}

/// Following a log never written ends at once, with nothing.
pub async fn an_unknown_log_ends_at_once_empty(log: &dyn ReplyEventLog) {
    let mut events = log.follow(&new_key(), 0);
    let first = tokio::time::timeout(QUIET, events.next()).await;
    assert!(
        matches!(first, Ok(None)),
        "an unknown log must end at once, got {first:?}"
    );
}

/// Closing a log never written succeeds and leaves nothing to follow.
pub async fn closing_an_unknown_log_creates_nothing(log: &dyn ReplyEventLog) {
    let key = new_key();
    close(log, &key, KEEP).await;
    assert_eq!(read_to_end(log.follow(&key, 0)).await, vec![]);
}

/// Appending to or closing one log leaves the others alone: other replies
/// of the same conversation, and the reply with the same id in another
/// conversation (message ids are unique within a conversation only).
pub async fn logs_are_independent(log: &dyn ReplyEventLog) {
    let first = new_key();
    let sibling = ReplyKey {
        conversation: first.conversation,
        reply: MessageId::generated(Ulid::generate()),
    };
    let namesake = ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: first.reply.clone(),
    };
    append_all(log, &first, 1..=3).await;
    append_all(log, &sibling, 1..=2).await;
    append(log, &namesake, 1).await;
    close(log, &first, KEEP).await;

    assert_eq!(
        read_to_end(log.follow(&first, 0)).await,
        vec![event(&first, 1), event(&first, 2), event(&first, 3)]
    );
    for (key, count) in [(&sibling, 2), (&namesake, 1)] {
        let mut open = log.follow(key, 0);
        for seq in 1..=count {
            assert_eq!(next(&mut open).await, Some(event(key, seq)), "{key}");
        }
        assert_waiting(&mut open).await;
    }
    append(log, &sibling, 3).await;
    append(log, &namesake, 2).await;
}

/// A closed log is still there just after `close`, and gone `keep` later:
/// a new follower then ends at once with nothing.
///
/// The one check that sleeps, because dropping in real time is the
/// behaviour under test.
pub async fn a_closed_log_is_dropped_after_keep(log: &dyn ReplyEventLog) {
    let keep = Duration::from_millis(200);
    let key = new_key();
    append_all(log, &key, 1..=2).await;
    // Whatever expires the log has now settled on the hour an open log gets;
    // `close` must bring that forward.
    tokio::time::sleep(Duration::from_millis(20)).await;
    close(log, &key, keep).await;
    assert_eq!(
        read_to_end(log.follow(&key, 0)).await,
        vec![event(&key, 1), event(&key, 2)]
    );

    tokio::time::sleep(keep * 2).await;

    assert_eq!(
        read_to_end(log.follow(&key, 0)).await,
        vec![],
        "a log must be dropped once `keep` has passed"
    );
}

/// A follower dropped part way stops following; the writer goes on
/// unaffected, and a later follower sees the whole log.
pub async fn a_follower_dropped_midway_does_not_disturb_the_writer(log: &dyn ReplyEventLog) {
    let key = new_key();
    append_all(log, &key, 1..=2).await;
    let mut leaving = log.follow(&key, 0);
    assert_eq!(next(&mut leaving).await, Some(event(&key, 1)));
    drop(leaving);
    let mut waiting = log.follow(&key, 2);
    assert_waiting(&mut waiting).await;
    drop(waiting);

    append_all(log, &key, 3..=5).await;
    close(log, &key, KEEP).await;
    let read = read_to_end(log.follow(&key, 0)).await;
    assert_eq!(
        read,
        (1..=5).map(|seq| event(&key, seq)).collect::<Vec<_>>()
    );
}

/// Payloads come back byte for byte: empty, not UTF-8, every byte value,
/// field-like text, large.
pub async fn payloads_round_trip_byte_for_byte(log: &dyn ReplyEventLog) {
    let every_byte: Vec<u8> = (0..=u8::MAX).collect();
    let large: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let payloads: Vec<&[u8]> = vec![
        b"",
        &[0xff, 0xfe, 0x00, 0xc3, 0x28],
        &every_byte,
        b"end",
        b"\r\n*1\r\n$3\r\nend\r\n",
        &large,
    ];
    let key = new_key();
    for (seq, payload) in (1..).zip(&payloads) {
        log.append(&key, seq, payload).await.expect("append");
    }
    let mut live = log.follow(&key, 0);
    close(log, &key, KEEP).await;

    let expected: Vec<LoggedEvent> = (1..)
        .zip(&payloads)
        .map(|(seq, payload)| LoggedEvent {
            seq,
            payload: payload.to_vec(),
        })
        .collect();
    let mut read = Vec::new();
    while let Some(event) = next(&mut live).await {
        read.push(event);
    }
    assert_eq!(read, expected);
}

/// An append whose seq is not one more than the last (a repeat, a gap, or
/// not 1 for a new log), or made after `close`, is refused and changes
/// nothing.
pub async fn an_append_out_of_order_or_after_close_is_refused(log: &dyn ReplyEventLog) {
    let key = new_key();
    assert!(
        log.append(&key, 2, b"first").await.is_err(),
        "a log must start at 1"
    );
    append_all(log, &key, 1..=2).await;
    assert!(
        log.append(&key, 2, b"again").await.is_err(),
        "a repeated seq must be refused"
    );
    assert!(
        log.append(&key, 1, b"earlier").await.is_err(),
        "an earlier seq must be refused"
    );
    assert!(
        log.append(&key, 4, b"gap").await.is_err(),
        "a gap must be refused"
    );
    append(log, &key, 3).await;
    close(log, &key, KEEP).await;
    assert!(
        log.append(&key, 4, b"late").await.is_err(),
        "an append after close must be refused"
    );

    let read = read_to_end(log.follow(&key, 0)).await;
    assert_eq!(read, vec![event(&key, 1), event(&key, 2), event(&key, 3)]);
}

/// A writer whose append timed out retries it: the log took it or not,
/// and either way the retry leaves one copy.
pub async fn appending_the_last_event_again_changes_nothing(log: &dyn ReplyEventLog) {
    let key = new_key();
    append_all(log, &key, 1..=2).await;
    log.append(&key, 2, &payload(&key, 2))
        .await
        .expect("the last event again must be taken as a retry");
    append(log, &key, 3).await;
    log.append(&key, 3, &payload(&key, 3))
        .await
        .expect("the last event again must be taken as a retry");
    assert!(
        log.append(&key, 2, &payload(&key, 2)).await.is_err(),
        "an event before the last must be refused, even unchanged"
    );
    close(log, &key, KEEP).await;

    let read = read_to_end(log.follow(&key, 0)).await;
    assert_eq!(read, vec![event(&key, 1), event(&key, 2), event(&key, 3)]);
}

async fn snapshot(log: &dyn ReplyEventLog, key: &ReplyKey) -> LogSnapshot {
    log.snapshot(key)
        .await
        .unwrap_or_else(|error| panic!("snapshot of {key} failed: {error:?}"))
}

/// A log of events `seqs` with their standard payloads, `closed` or not.
fn snapshot_of(key: &ReplyKey, seqs: std::ops::RangeInclusive<u64>, closed: bool) -> LogSnapshot {
    LogSnapshot {
        events: seqs.map(|seq| event(key, seq)).collect(),
        closed,
    }
}

/// A log never written, or closed without ever being written, snapshots
/// as empty and open; taking the snapshot creates nothing.
pub async fn a_snapshot_of_an_unknown_log_is_empty_and_open(log: &dyn ReplyEventLog) {
    let never_written = new_key();
    assert_eq!(snapshot(log, &never_written).await, LogSnapshot::default());
    let closed_unwritten = new_key();
    close(log, &closed_unwritten, KEEP).await;
    assert_eq!(
        snapshot(log, &closed_unwritten).await,
        LogSnapshot::default()
    );

    assert_eq!(read_to_end(log.follow(&never_written, 0)).await, vec![]);
    append(log, &never_written, 1).await;
    assert_eq!(
        snapshot(log, &never_written).await,
        snapshot_of(&never_written, 1..=1, false)
    );
}

/// An open log snapshots as every event so far, in order from the first,
/// and open; a later snapshot also holds the events appended since.
pub async fn a_snapshot_of_an_open_log_holds_its_events_so_far(log: &dyn ReplyEventLog) {
    let key = new_key();
    append_all(log, &key, 1..=5).await;
    assert_eq!(snapshot(log, &key).await, snapshot_of(&key, 1..=5, false));

    append(log, &key, 6).await;
    assert_eq!(snapshot(log, &key).await, snapshot_of(&key, 1..=6, false));
}

/// A closed log snapshots as closed with exactly its events: whatever marks
/// its end is never one of them, not even after an event whose payload
/// reads like that mark.
pub async fn a_snapshot_of_a_closed_log_is_closed_and_holds_only_its_events(
    log: &dyn ReplyEventLog,
) {
    let key = new_key();
    append_all(log, &key, 1..=2).await;
    log.append(&key, 3, b"end").await.expect("append");
    close(log, &key, KEEP).await;
    let expected = LogSnapshot {
        events: vec![
            event(&key, 1),
            event(&key, 2),
            LoggedEvent {
                seq: 3,
                payload: b"end".to_vec(),
            },
        ],
        closed: true,
    };
    assert_eq!(snapshot(log, &key).await, expected);

    close(log, &key, KEEP).await;
    assert_eq!(snapshot(log, &key).await, expected, "closed twice");
    let other = new_key();
    append(log, &other, 1).await;
    close(log, &other, KEEP).await;
    assert_eq!(
        snapshot(log, &other).await,
        snapshot_of(&other, 1..=1, true)
    );
}

/// A log of thousands of events snapshots whole, open and then closed.
/// (Two thousand and forty-eight: a multiple of any batch size up to it
/// that is a power of two, so a read in batches also meets a batch that
/// ends exactly where the events do.)
pub async fn a_snapshot_of_a_long_log_holds_every_event(log: &dyn ReplyEventLog) {
    const EVENTS: u64 = 2_048;
    let key = new_key();
    append_all(log, &key, 1..=EVENTS).await;
    assert_eq!(
        snapshot(log, &key).await,
        snapshot_of(&key, 1..=EVENTS, false)
    );

    close(log, &key, KEEP).await;
    assert_eq!(
        snapshot(log, &key).await,
        snapshot_of(&key, 1..=EVENTS, true)
    );
}

/// Taking snapshots, however often, disturbs nothing: a waiting follower
/// still waits, then sees each event as it comes and ends at the close;
/// the writer appends where it was; a new follower replays the same log.
pub async fn a_snapshot_disturbs_neither_followers_nor_the_writer(log: &dyn ReplyEventLog) {
    let key = new_key();
    append_all(log, &key, 1..=2).await;
    let mut waiting = log.follow(&key, 0);
    for seq in 1..=2 {
        assert_eq!(next(&mut waiting).await, Some(event(&key, seq)));
    }
    assert_waiting(&mut waiting).await;

    for _ in 0..3 {
        assert_eq!(snapshot(log, &key).await, snapshot_of(&key, 1..=2, false));
    }
    assert_waiting(&mut waiting).await;
    append(log, &key, 3).await;
    assert_eq!(snapshot(log, &key).await, snapshot_of(&key, 1..=3, false));
    assert_eq!(next(&mut waiting).await, Some(event(&key, 3)));
    assert_waiting(&mut waiting).await;

    close(log, &key, KEEP).await;
    assert_eq!(snapshot(log, &key).await, snapshot_of(&key, 1..=3, true));
    assert_eq!(next(&mut waiting).await, None);
    assert_eq!(
        read_to_end(log.follow(&key, 0)).await,
        (1..=3).map(|seq| event(&key, seq)).collect::<Vec<_>>()
    );
}
