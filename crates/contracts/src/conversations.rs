//! The [`ConversationStore`] contract, run against every adapter that implements it.
//!
//! Each check is a `pub async fn` taking an account store and a
//! conversation store over the same empty database (conversations belong to
//! accounts); an adapter's test file runs every one of them as its own test
//! with [`conversation_store_contract_tests!`](crate::conversation_store_contract_tests).
//! Checks pin every instant they care about, so orders never depend on how
//! fast a check runs.

use futures::future::join_all;
use time::Duration;
use ulid::Ulid;
use waiter_domain::{
    AccountId, Conversation, ConversationId, ConversationTitle, Message, MessageId,
    MessageMetadata, MessageRole, MessageStatus, Timestamp, Usage, Version,
};
use waiter_ports::conversations::{
    AppendError, ConversationOrder, ConversationPage, ConversationQuery, ConversationStore,
    InsertConversationError, InterruptedReply, LAST_MESSAGE_CHARS, NewConversationRecord,
    NewExchange, NewOpening, ReplySave, ReplyUpdate, WriteConversationError,
};
use waiter_ports::idempotency::{
    Fingerprint, IdempotencyRecord, KeyTaken, Remembered, StoredResponse,
};
use waiter_ports::identity::AccountStore;

use crate::accounts::{insert_account, now};

/// Generates one `#[tokio::test]` per conversation store check.
///
/// `$fixture` is an
/// `async fn(check: impl AsyncFnOnce(&dyn AccountStore, &dyn ConversationStore))`
/// that sets up fresh, empty stores on one database, runs `check` and cleans up.
#[macro_export]
macro_rules! conversation_store_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(conversations, $fixture:
            insert_then_find_round_trips,
            an_idempotency_key_is_recorded_with_the_conversation,
            list_orders_newest_first_by_updated_or_created_ties_by_id,
            list_pages_by_offset_and_limit_and_counts_the_owners_conversations,
            list_shows_the_start_of_the_newest_message,
            rename_sets_the_title_and_bumps_the_version,
            rename_and_delete_with_a_stale_version_report_the_current_one,
            writes_to_a_missing_conversation_are_not_found,
            delete_removes_the_conversation_and_its_messages,
            messages_come_back_in_the_order_appended,
            append_bumps_the_version_and_sets_updated_at,
            a_resent_message_id_is_already_sent,
            a_reused_retry_key_is_already_sent,
            a_second_reply_while_one_is_in_progress_is_refused,
            of_concurrent_appends_exactly_one_starts_a_reply,
            an_owner_has_at_most_the_limit_of_replies_in_progress,
            of_concurrent_appends_across_an_owners_conversations_at_most_the_limit_start,
            a_full_conversation_refuses_more_messages,
            a_send_refused_for_several_reasons_is_refused_for_the_first,
            save_reply_writes_progress_then_the_final_state,
            save_reply_after_the_final_state_changes_nothing,
            save_reply_of_a_deleted_conversation_changes_nothing,
            save_replies_saves_each_reply_and_reports_true,
            save_replies_leaves_final_and_gone_replies_alone_and_saves_the_others,
            save_replies_of_an_empty_batch_saves_nothing,
            a_final_state_in_a_batch_bumps_the_conversation_like_save_reply,
            a_reply_saved_more_than_once_in_a_batch_is_saved_in_turn,
            a_batch_larger_than_any_one_statement_saves_every_reply,
            concurrent_batches_sharing_replies_all_complete,
            interrupt_abandoned_interrupts_only_replies_left_in_progress,
            start_stores_the_conversation_with_its_first_exchange,
            a_start_with_an_opening_key_already_held_is_already_started,
            of_concurrent_starts_with_one_opening_key_exactly_one_starts,
            a_refused_start_stores_no_conversation,
            deleting_an_account_deletes_its_conversations,
            a_send_to_a_conversation_of_a_deleted_account_is_not_found,
        );
    };
}

/// The most messages the checks' conversations may hold, unless a check
/// is about the limit.
const ROOMY: u32 = 1_000;

/// A new conversation of `owner` with a fresh id, started at `created_at`.
pub fn conversation_at(owner: AccountId, created_at: Timestamp) -> NewConversationRecord {
    NewConversationRecord {
        id: ConversationId::from_ulid(Ulid::generate()),
        owner,
        title: title("Explain Redis caching"),
        created_at,
    }
}

/// A new conversation of `owner` with a fresh id, started at `now()`.
pub fn new_conversation(owner: AccountId) -> NewConversationRecord {
    conversation_at(owner, now())
}

/// Inserts `record`, failing the test if the store refuses it.
pub async fn insert_conversation(
    store: &dyn ConversationStore,
    record: NewConversationRecord,
) -> Conversation {
    store
        .insert(record, None)
        .await
        .expect("inserting a new conversation succeeds")
}

fn title(text: &str) -> ConversationTitle {
    ConversationTitle::parse(text).expect("valid title")
}

fn message_id(text: &str) -> MessageId {
    MessageId::parse(text).expect("valid message id")
}

/// A user message and its reply, both sent at `at`, with fresh ids.
pub fn exchange(conversation: ConversationId, at: Timestamp) -> NewExchange {
    exchange_with_id(
        conversation,
        MessageId::generated(Ulid::generate()),
        "What is a cache stampede?",
        at,
    )
}

/// A user message with id `id` saying `text`, and its reply, both at `at`.
pub fn exchange_with_id(
    conversation: ConversationId,
    id: MessageId,
    text: &str,
    at: Timestamp,
) -> NewExchange {
    let message = Message {
        id,
        conversation_id: conversation,
        role: MessageRole::User,
        text: text.to_owned(),
        status: MessageStatus::FinishedSuccessfully,
        parent_id: None,
        metadata: MessageMetadata {
            temperature: Some(0.7),
            ..MessageMetadata::default()
        },
        created_at: at,
        updated_at: at,
    };
    let reply = Message {
        id: MessageId::generated(Ulid::generate()),
        conversation_id: conversation,
        role: MessageRole::Assistant,
        text: String::new(),
        status: MessageStatus::InProgress,
        parent_id: Some(message.id.clone()),
        metadata: MessageMetadata {
            model_slug: Some("waiter-builtin".to_owned()),
            ..MessageMetadata::default()
        },
        created_at: at,
        updated_at: at,
    };
    NewExchange {
        message,
        reply,
        retry_key: None,
        max_messages: ROOMY,
        max_replies_in_flight: ROOMY,
    }
}

/// Appends `exchange`, failing the test if the store refuses it.
async fn append(store: &dyn ConversationStore, exchange: NewExchange) -> Conversation {
    store
        .append_exchange(exchange)
        .await
        .expect("appending an exchange succeeds")
}

/// A reply's final state: finished with `text` at `at`, with full metadata.
fn finished(text: &str, at: Timestamp) -> ReplyUpdate {
    ReplyUpdate {
        text: text.to_owned(),
        status: MessageStatus::FinishedSuccessfully,
        metadata: MessageMetadata {
            model_slug: Some("waiter-builtin".to_owned()),
            finish_reason: Some("stop".to_owned()),
            usage: Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 34,
                total_tokens: 46,
            }),
            temperature: None,
            error: None,
        },
        updated_at: at,
    }
}

/// Finishes the reply of `exchange`, failing the test if it was not in progress.
async fn finish(store: &dyn ConversationStore, exchange: &NewExchange, at: Timestamp) {
    let saved = store
        .save_reply(
            exchange.reply.conversation_id,
            exchange.reply.id.clone(),
            finished("A stampede is…", at),
        )
        .await
        .expect("save the reply");
    assert!(saved, "the reply was in progress");
}

async fn find(store: &dyn ConversationStore, id: ConversationId) -> Option<Conversation> {
    store.find(id).await.expect("find")
}

async fn messages(store: &dyn ConversationStore, id: ConversationId) -> Vec<Message> {
    store.messages(id).await.expect("messages")
}

async fn list(
    store: &dyn ConversationStore,
    owner: AccountId,
    order: ConversationOrder,
    offset: u32,
    limit: u32,
) -> ConversationPage {
    store
        .list(ConversationQuery {
            owner,
            order,
            offset,
            limit,
        })
        .await
        .expect("list")
}

/// The conversations of a page, without their summaries.
fn conversations(page: &ConversationPage) -> Vec<Conversation> {
    page.items
        .iter()
        .map(|summary| summary.conversation.clone())
        .collect()
}

/// `all` in the order a list by `order` gives: newest first, ties by id
/// descending.
fn sorted(mut all: Vec<Conversation>, order: ConversationOrder) -> Vec<Conversation> {
    all.sort_by(|a, b| {
        let by_time = match order {
            ConversationOrder::Updated => a.updated_at.cmp(&b.updated_at),
            ConversationOrder::Created => a.created_at.cmp(&b.created_at),
        };
        by_time.then(a.id.cmp(&b.id)).reverse()
    });
    all
}

/// An inserted conversation comes back exactly as stored, from `insert` and
/// `find`, with no messages.
pub async fn insert_then_find_round_trips(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    for record in [
        new_conversation(owner.id),
        NewConversationRecord {
            title: title("Ångström’s «Ödes» 📚 and 中文"),
            ..conversation_at(owner.id, now() - Duration::days(400))
        },
    ] {
        let inserted = store.insert(record.clone(), None).await.expect("insert");
        assert_eq!(inserted, record.conversation());
        assert_eq!(find(store, record.id).await, Some(inserted));
        assert!(messages(store, record.id).await.is_empty());
    }

    let missing = ConversationId::from_ulid(Ulid::generate());
    assert_eq!(find(store, missing).await, None);
}

/// A record of idempotency key `key` for a request told apart by `seed`.
fn key_record(key: &str, seed: u8, at: Timestamp) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.to_owned(),
        remembered: Remembered {
            fingerprint: Fingerprint([seed; 32]),
            response: StoredResponse {
                status: 201,
                headers: vec![("etag".to_owned(), "\"1\"".to_owned())],
                body: vec![seed],
            },
        },
        created_at: at,
        expires_at: at + Duration::hours(24),
    }
}

/// A conversation inserted with an idempotency record holds its key: a
/// second insert with the key is `KeyTaken` and stores nothing.
pub async fn an_idempotency_key_is_recorded_with_the_conversation(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let first = new_conversation(owner.id);
    let inserted = store
        .insert(first.clone(), Some(key_record("account:a|k", 1, at)))
        .await
        .expect("a conversation with a new key is inserted");
    assert_eq!(inserted, first.conversation());

    let second = new_conversation(owner.id);
    let result = store
        .insert(second.clone(), Some(key_record("account:a|k", 2, at)))
        .await;
    assert!(
        matches!(result, Err(InsertConversationError::KeyTaken(KeyTaken))),
        "{result:?}"
    );
    assert_eq!(find(store, second.id).await, None);
    assert_eq!(find(store, first.id).await, Some(inserted));

    store
        .insert(second.clone(), Some(key_record("account:a|other", 3, at)))
        .await
        .expect("another key is free");
}

/// Lists are newest first by `updated_at` (the default) or `created_at`,
/// ties broken by id, descending too.
pub async fn list_orders_newest_first_by_updated_or_created_ties_by_id(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let start = now() - Duration::hours(1);
    let mut ids = Vec::new();
    // Creation instants with ties: 0, 1, 1, 2, 2, 2 minutes after `start`.
    for minutes in [0, 1, 1, 2, 2, 2] {
        let record = conversation_at(owner.id, start + Duration::minutes(minutes));
        ids.push(insert_conversation(store, record).await.id);
    }
    // Changes that reorder by `updated_at`, with ties of their own.
    let later = start + Duration::minutes(30);
    store
        .rename(ids[0], title("Renamed"), None, later)
        .await
        .expect("rename");
    append(store, exchange(ids[1], later)).await;
    append(store, exchange(ids[3], start + Duration::minutes(10))).await;

    let mut all = Vec::new();
    for id in &ids {
        all.push(find(store, *id).await.expect("stored"));
    }
    for order in [ConversationOrder::Updated, ConversationOrder::Created] {
        let page = list(store, owner.id, order, 0, 100).await;
        assert_eq!(
            conversations(&page),
            sorted(all.clone(), order),
            "order {order:?}"
        );
        assert_eq!(page.total, 6);
    }
    let by_updated = list(store, owner.id, ConversationOrder::Updated, 0, 100).await;
    let mut first_two = [ids[0], ids[1]];
    first_two.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        [
            by_updated.items[0].conversation.id,
            by_updated.items[1].conversation.id
        ],
        first_two,
        "the two changed last, tied, by id descending"
    );
}

/// `offset` and `limit` cut the page out of the whole list; `total` counts
/// every conversation of the owner, on every page, and no one else's.
pub async fn list_pages_by_offset_and_limit_and_counts_the_owners_conversations(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let other = insert_account(accounts).await;
    let nobody = insert_account(accounts).await;
    let start = now() - Duration::hours(1);
    let mut all = Vec::new();
    for minutes in [5, 3, 3, 8, 1, 0, 3] {
        let record = conversation_at(owner.id, start + Duration::minutes(minutes));
        all.push(insert_conversation(store, record).await);
    }
    for _ in 0..2 {
        insert_conversation(store, new_conversation(other.id)).await;
    }

    for order in [ConversationOrder::Updated, ConversationOrder::Created] {
        let whole = sorted(all.clone(), order);
        for limit in 1..=4_u32 {
            let mut pages = Vec::new();
            let mut offset = 0;
            loop {
                let page = list(store, owner.id, order, offset, limit).await;
                assert_eq!(page.total, 7, "the total of every page");
                assert!(page.items.len() <= limit as usize);
                if page.items.is_empty() {
                    break;
                }
                pages.extend(conversations(&page));
                offset += limit;
            }
            assert_eq!(pages, whole, "pages of {limit} in {order:?}");
        }
        let beyond = list(store, owner.id, order, 100, 10).await;
        assert!(beyond.items.is_empty());
        assert_eq!(beyond.total, 7);
    }

    let theirs = list(store, other.id, ConversationOrder::Updated, 0, 100).await;
    assert_eq!(theirs.total, 2);
    assert!(
        theirs
            .items
            .iter()
            .all(|summary| summary.conversation.owner == other.id)
    );
    let none = list(store, nobody.id, ConversationOrder::Updated, 0, 100).await;
    assert_eq!(
        none,
        ConversationPage {
            items: Vec::new(),
            total: 0
        }
    );
}

/// A list shows the start of each conversation's newest message, whatever
/// its role or status: at most [`LAST_MESSAGE_CHARS`] + 1 characters (not
/// bytes), and nothing for a conversation without messages.
pub async fn list_shows_the_start_of_the_newest_message(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let start = now() - Duration::hours(1);
    let quiet = insert_conversation(store, conversation_at(owner.id, start)).await;
    let short = insert_conversation(store, conversation_at(owner.id, start)).await;
    let long = insert_conversation(store, conversation_at(owner.id, start)).await;

    let to_short = exchange(short.id, start + Duration::minutes(1));
    append(store, to_short.clone()).await;
    let to_long = exchange(long.id, start + Duration::minutes(2));
    append(store, to_long.clone()).await;

    let summary_of = async |id: ConversationId| {
        let page = list(store, owner.id, ConversationOrder::Created, 0, 10).await;
        page.items
            .into_iter()
            .find(|summary| summary.conversation.id == id)
            .expect("listed")
            .last_message
    };
    assert_eq!(summary_of(quiet.id).await, None);
    assert_eq!(
        summary_of(short.id).await.as_deref(),
        Some(""),
        "the newest message is the reply, still empty"
    );

    finish(store, &to_short, start + Duration::minutes(3)).await;
    assert_eq!(
        summary_of(short.id).await.as_deref(),
        Some("A stampede is…")
    );

    // Two-, three- and four-byte characters: the cut counts characters.
    let text: String = "é中🦀".repeat(50);
    let saved = store
        .save_reply(
            long.id,
            to_long.reply.id.clone(),
            ReplyUpdate {
                text: text.clone(),
                ..finished("", start + Duration::minutes(4))
            },
        )
        .await
        .expect("save");
    assert!(saved);
    let expected: String = text.chars().take(LAST_MESSAGE_CHARS + 1).collect();
    assert_eq!(summary_of(long.id).await, Some(expected));
}

/// A rename sets the title and `updated_at` and bumps the version, with or
/// without an expected version; the rest stays.
pub async fn rename_sets_the_title_and_bumps_the_version(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let original = insert_conversation(store, new_conversation(owner.id)).await;
    let later = original.created_at + Duration::seconds(1);
    let renamed = store
        .rename(original.id, title("Cache stampedes"), None, later)
        .await
        .expect("rename");
    let expected = Conversation {
        title: title("Cache stampedes"),
        version: original.version.next(),
        updated_at: later,
        ..original.clone()
    };
    assert_eq!(renamed, expected);
    assert_eq!(find(store, original.id).await, Some(expected.clone()));

    let even_later = later + Duration::seconds(1);
    let again = store
        .rename(
            original.id,
            title("Thundering herds"),
            Some(expected.version),
            even_later,
        )
        .await
        .expect("rename at the expected version");
    assert_eq!(again.title, title("Thundering herds"));
    assert_eq!(again.version, expected.version.next());
    assert_eq!(again.updated_at, even_later);
    assert_eq!(again.created_at, original.created_at);
    assert_eq!(find(store, original.id).await, Some(again));
}

/// A rename or delete conditional on an old version is refused, names the
/// stored version and changes nothing.
pub async fn rename_and_delete_with_a_stale_version_report_the_current_one(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let current = append(store, exchange(conversation.id, now())).await;
    assert_eq!(current.version, Version::INITIAL.next());

    let result = store
        .rename(
            conversation.id,
            title("Stale"),
            Some(Version::INITIAL),
            now(),
        )
        .await;
    assert!(
        matches!(result, Err(WriteConversationError::VersionMismatch { current: v }) if v == current.version),
        "expected VersionMismatch at {:?}, got {result:?}",
        current.version
    );
    let result = store.delete(conversation.id, Some(Version::INITIAL)).await;
    assert!(
        matches!(result, Err(WriteConversationError::VersionMismatch { current: v }) if v == current.version),
        "expected VersionMismatch at {:?}, got {result:?}",
        current.version
    );
    assert_eq!(find(store, conversation.id).await, Some(current));
    assert_eq!(messages(store, conversation.id).await.len(), 2);
}

/// Renaming, deleting or appending to a conversation that does not exist
/// is `NotFound`, with or without a version; it has no messages.
pub async fn writes_to_a_missing_conversation_are_not_found(
    _accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let missing = ConversationId::from_ulid(Ulid::generate());
    for version in [None, Some(Version::INITIAL)] {
        let result = store.rename(missing, title("Gone"), version, now()).await;
        assert!(
            matches!(result, Err(WriteConversationError::NotFound)),
            "{result:?}"
        );
        let result = store.delete(missing, version).await;
        assert!(
            matches!(result, Err(WriteConversationError::NotFound)),
            "{result:?}"
        );
    }
    let result = store.append_exchange(exchange(missing, now())).await;
    assert!(matches!(result, Err(AppendError::NotFound)), "{result:?}");
    assert!(messages(store, missing).await.is_empty());
}

/// Deleting a conversation, at its version or at any, deletes its messages
/// and no one else's; a second delete is `NotFound`.
pub async fn delete_removes_the_conversation_and_its_messages(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let doomed = insert_conversation(store, new_conversation(owner.id)).await;
    let kept = insert_conversation(store, new_conversation(owner.id)).await;
    let current = append(store, exchange(doomed.id, now())).await;
    let to_kept = exchange(kept.id, now());
    let kept = append(store, to_kept.clone()).await;

    store
        .delete(doomed.id, Some(current.version))
        .await
        .expect("delete at the current version");
    assert_eq!(find(store, doomed.id).await, None);
    assert!(messages(store, doomed.id).await.is_empty());
    let result = store.delete(doomed.id, None).await;
    assert!(
        matches!(result, Err(WriteConversationError::NotFound)),
        "{result:?}"
    );

    assert_eq!(find(store, kept.id).await, Some(kept.clone()));
    assert_eq!(
        messages(store, kept.id).await,
        [to_kept.message, to_kept.reply]
    );
    let page = list(store, owner.id, ConversationOrder::Updated, 0, 10).await;
    assert_eq!(page.total, 1);

    store
        .delete(kept.id, None)
        .await
        .expect("delete at any version");
    assert_eq!(find(store, kept.id).await, None);
}

/// Messages come back exactly as appended, in the order appended (not by
/// id or by time), each user message directly followed by its reply.
pub async fn messages_come_back_in_the_order_appended(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let at = now();
    let mut expected = Vec::new();
    let mut parent = None;
    // Ids out of alphabetical order, instants out of order too.
    for (id, text, seconds) in [
        ("zeta", "First question", 10),
        (
            "690d5b6c-02d8-8321-a91e-65ea55b781f7",
            "Ångström 📚\n  code  ",
            5,
        ),
        ("alpha", "Third", 5),
    ] {
        let mut sent = exchange_with_id(
            conversation.id,
            message_id(id),
            text,
            at + Duration::seconds(seconds),
        );
        sent.message.parent_id = parent;
        append(store, sent.clone()).await;
        let done = at + Duration::seconds(seconds + 1);
        finish(store, &sent, done).await;
        let update = finished("A stampede is…", done);
        let reply = Message {
            text: update.text,
            status: update.status,
            metadata: update.metadata,
            updated_at: done,
            ..sent.reply.clone()
        };
        parent = Some(reply.id.clone());
        expected.push(sent.message);
        expected.push(reply);
    }
    assert_eq!(messages(store, conversation.id).await, expected);
}

/// Appending bumps the conversation's version and sets its `updated_at` to
/// the message's `created_at`, returning it as it now is.
pub async fn append_bumps_the_version_and_sets_updated_at(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let original = insert_conversation(store, new_conversation(owner.id)).await;
    let sent = exchange(original.id, original.created_at + Duration::minutes(1));
    let appended = append(store, sent.clone()).await;
    let expected = Conversation {
        version: original.version.next(),
        updated_at: sent.message.created_at,
        ..original.clone()
    };
    assert_eq!(appended, expected);
    assert_eq!(find(store, original.id).await, Some(expected.clone()));
    assert_eq!(
        messages(store, original.id).await,
        [sent.message, sent.reply]
    );
}

/// Sending a message id the conversation already holds is `AlreadySent`
/// with that id, even while its reply is in progress, and stores nothing;
/// the same id in another conversation is a new message.
pub async fn a_resent_message_id_is_already_sent(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let other = insert_conversation(store, new_conversation(owner.id)).await;
    let first = exchange_with_id(conversation.id, message_id("msg_001"), "Hi", now());
    append(store, first.clone()).await;

    let again = exchange_with_id(conversation.id, message_id("msg_001"), "Hi", now());
    let result = store.append_exchange(again.clone()).await;
    assert!(
        matches!(&result, Err(AppendError::AlreadySent(id)) if *id == first.message.id),
        "while the reply is in progress: {result:?}"
    );

    finish(store, &first, now()).await;
    let current = find(store, conversation.id).await.expect("stored");
    let result = store.append_exchange(again).await;
    assert!(
        matches!(&result, Err(AppendError::AlreadySent(id)) if *id == first.message.id),
        "once the reply is finished: {result:?}"
    );
    assert_eq!(find(store, conversation.id).await, Some(current.clone()));
    assert_eq!(messages(store, conversation.id).await.len(), 2);

    append(
        store,
        exchange_with_id(other.id, message_id("msg_001"), "Hi", now()),
    )
    .await;
    assert_eq!(messages(store, other.id).await.len(), 2);
}

/// Sending with a retry key the conversation already holds is
/// `AlreadySent` with the id of the message first sent with it; other keys,
/// and the same key in another conversation, are new messages.
pub async fn a_reused_retry_key_is_already_sent(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let other = insert_conversation(store, new_conversation(owner.id)).await;
    let keyed = |id: ConversationId, key: &str| NewExchange {
        retry_key: Some(key.to_owned()),
        ..exchange(id, now())
    };

    let first = keyed(conversation.id, "retry-1");
    append(store, first.clone()).await;
    let result = store
        .append_exchange(keyed(conversation.id, "retry-1"))
        .await;
    assert!(
        matches!(&result, Err(AppendError::AlreadySent(id)) if *id == first.message.id),
        "while the reply is in progress: {result:?}"
    );
    finish(store, &first, now()).await;
    let current = find(store, conversation.id).await.expect("stored");
    let result = store
        .append_exchange(keyed(conversation.id, "retry-1"))
        .await;
    assert!(
        matches!(&result, Err(AppendError::AlreadySent(id)) if *id == first.message.id),
        "once the reply is finished: {result:?}"
    );
    assert_eq!(find(store, conversation.id).await, Some(current));
    assert_eq!(messages(store, conversation.id).await.len(), 2);

    let second = keyed(conversation.id, "retry-2");
    append(store, second.clone()).await;
    finish(store, &second, now()).await;
    // Messages without a key never conflict with each other.
    let unkeyed = exchange(conversation.id, now());
    append(store, unkeyed.clone()).await;
    finish(store, &unkeyed, now()).await;
    append(store, exchange(conversation.id, now())).await;
    assert_eq!(messages(store, conversation.id).await.len(), 8);

    append(store, keyed(other.id, "retry-1")).await;
}

/// While a reply is in progress, another exchange is `ReplyInFlight` and
/// stores nothing; once it ends, the next one is appended.
pub async fn a_second_reply_while_one_is_in_progress_is_refused(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let first = exchange(conversation.id, now());
    let current = append(store, first.clone()).await;

    let second = exchange(conversation.id, now());
    let result = store.append_exchange(second.clone()).await;
    assert!(
        matches!(result, Err(AppendError::ReplyInFlight)),
        "{result:?}"
    );
    assert_eq!(find(store, conversation.id).await, Some(current));
    assert_eq!(
        messages(store, conversation.id).await,
        [first.message.clone(), first.reply.clone()]
    );

    finish(store, &first, now()).await;
    append(store, second.clone()).await;
    let stored = messages(store, conversation.id).await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[2..], [second.message, second.reply]);
}

/// Exchanges sent to one conversation at once: exactly one is appended,
/// every other is `ReplyInFlight`, and message order holds whatever the race.
pub async fn of_concurrent_appends_exactly_one_starts_a_reply(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let mut expected = Vec::new();
    for round in 1..=2_i64 {
        let attempts: Vec<NewExchange> = (0..8).map(|_| exchange(conversation.id, now())).collect();
        let results = join_all(
            attempts
                .iter()
                .map(|attempt| store.append_exchange(attempt.clone())),
        )
        .await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter_map(|(i, result)| result.is_ok().then_some(i))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (i, result) in results.iter().enumerate() {
            if i != winners[0] {
                assert!(
                    matches!(result, Err(AppendError::ReplyInFlight)),
                    "round {round}: {result:?}"
                );
            }
        }
        let winner = &attempts[winners[0]];
        expected.push(winner.message.clone());
        expected.push(winner.reply.clone());
        assert_eq!(messages(store, conversation.id).await, expected);
        let stored = find(store, conversation.id).await.expect("stored");
        // Each round's append and finish bump the version once each.
        assert_eq!(stored.version, Version::new(2 * round));

        finish(store, winner, now()).await;
        let reply = expected.last_mut().expect("the winner's reply");
        *reply = messages(store, conversation.id)
            .await
            .pop()
            .expect("the reply");
    }
}

/// An exchange that would give the owner more replies in progress, across
/// their conversations, than its limit is `TooManyReplies` and stores
/// nothing; other owners are not counted, a retry is still `AlreadySent`,
/// and once a reply ends the next exchange is appended.
pub async fn an_owner_has_at_most_the_limit_of_replies_in_progress(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let other = insert_account(accounts).await;
    let limited = |conversation: ConversationId| NewExchange {
        max_replies_in_flight: 2,
        ..exchange(conversation, now())
    };
    let mut conversations = Vec::new();
    for _ in 0..3 {
        conversations.push(insert_conversation(store, new_conversation(owner.id)).await);
    }
    let first = limited(conversations[0].id);
    append(store, first.clone()).await;
    append(store, limited(conversations[1].id)).await;
    let theirs = insert_conversation(store, new_conversation(other.id)).await;
    append(store, limited(theirs.id)).await;

    let current = find(store, conversations[2].id).await;
    let result = store.append_exchange(limited(conversations[2].id)).await;
    assert!(
        matches!(result, Err(AppendError::TooManyReplies { limit: 2 })),
        "{result:?}"
    );
    assert!(messages(store, conversations[2].id).await.is_empty());
    assert_eq!(find(store, conversations[2].id).await, current);

    let retry = NewExchange {
        message: first.message.clone(),
        ..limited(conversations[0].id)
    };
    let result = store.append_exchange(retry).await;
    assert!(
        matches!(&result, Err(AppendError::AlreadySent(id)) if *id == first.message.id),
        "{result:?}"
    );

    finish(store, &first, now()).await;
    append(store, limited(conversations[2].id)).await;
    let result = store.append_exchange(limited(conversations[0].id)).await;
    assert!(
        matches!(result, Err(AppendError::TooManyReplies { limit: 2 })),
        "{result:?}"
    );
}

/// Exchanges sent at once to as many conversations of one owner: exactly
/// the limit of them are appended, every other is `TooManyReplies`.
pub async fn of_concurrent_appends_across_an_owners_conversations_at_most_the_limit_start(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let mut attempts = Vec::new();
    for _ in 0..8 {
        let conversation = insert_conversation(store, new_conversation(owner.id)).await;
        attempts.push(NewExchange {
            max_replies_in_flight: 3,
            ..exchange(conversation.id, now())
        });
    }
    let results = join_all(
        attempts
            .iter()
            .map(|attempt| store.append_exchange(attempt.clone())),
    )
    .await;
    let appended = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(appended, 3, "{results:?}");
    for result in &results {
        assert!(
            matches!(
                result,
                Ok(_) | Err(AppendError::TooManyReplies { limit: 3 })
            ),
            "{result:?}"
        );
    }
    let mut in_progress = 0;
    for attempt in &attempts {
        in_progress += messages(store, attempt.message.conversation_id)
            .await
            .iter()
            .filter(|message| message.status == MessageStatus::InProgress)
            .count();
    }
    assert_eq!(in_progress, 3);
}

/// An exchange that would take the conversation past its limit is
/// `TooManyMessages` and stores nothing; up to the limit is fine, and a
/// retry of a message in a full conversation is still `AlreadySent`.
pub async fn a_full_conversation_refuses_more_messages(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let limited = |limit: u32| NewExchange {
        max_messages: limit,
        ..exchange(conversation.id, now())
    };

    let result = store.append_exchange(limited(1)).await;
    assert!(
        matches!(result, Err(AppendError::TooManyMessages { limit: 1 })),
        "{result:?}"
    );
    assert!(messages(store, conversation.id).await.is_empty());

    let first = limited(4);
    append(store, first.clone()).await;
    finish(store, &first, now()).await;
    let second = limited(4);
    append(store, second.clone()).await;
    finish(store, &second, now()).await;
    let current = find(store, conversation.id).await.expect("stored");

    let result = store.append_exchange(limited(4)).await;
    assert!(
        matches!(result, Err(AppendError::TooManyMessages { limit: 4 })),
        "{result:?}"
    );
    let result = store.append_exchange(limited(5)).await;
    assert!(
        matches!(result, Err(AppendError::TooManyMessages { limit: 5 })),
        "{result:?}"
    );
    let retry = NewExchange {
        message: first.message.clone(),
        ..limited(4)
    };
    let result = store.append_exchange(retry).await;
    assert!(
        matches!(&result, Err(AppendError::AlreadySent(id)) if *id == first.message.id),
        "{result:?}"
    );
    assert_eq!(find(store, conversation.id).await, Some(current));
    assert_eq!(messages(store, conversation.id).await.len(), 4);

    append(store, limited(6)).await;
}

/// A send refused for several reasons is refused for the first of them, in
/// this order: `AlreadySent`, `ReplyInFlight`, `TooManyMessages`,
/// `TooManyReplies`; and stores nothing. The replies' limit counts those in
/// progress before the send, this one added: under a limit of one, a send
/// is appended while none is in progress, and refused while one is.
pub async fn a_send_refused_for_several_reasons_is_refused_for_the_first(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let full = insert_conversation(store, new_conversation(owner.id)).await;
    let other = insert_conversation(store, new_conversation(owner.id)).await;
    // The conversation holds at most 2 messages, the owner one reply in progress.
    let limited = |conversation: ConversationId| NewExchange {
        max_messages: 2,
        max_replies_in_flight: 1,
        ..exchange(conversation, now())
    };
    let first = limited(full.id);
    append(store, first.clone()).await;

    let retry = NewExchange {
        message: first.message.clone(),
        ..limited(full.id)
    };
    let result = store.append_exchange(retry).await;
    assert!(
        matches!(&result, Err(AppendError::AlreadySent(id)) if *id == first.message.id),
        "a retry, while a reply is in progress and both limits are reached: {result:?}"
    );
    let result = store.append_exchange(limited(full.id)).await;
    assert!(
        matches!(result, Err(AppendError::ReplyInFlight)),
        "a reply in progress, and both limits reached: {result:?}"
    );

    finish(store, &first, now()).await;
    let beside = NewExchange {
        max_replies_in_flight: 1,
        ..exchange(other.id, now())
    };
    append(store, beside.clone()).await;
    let current = find(store, full.id).await;
    let result = store.append_exchange(limited(full.id)).await;
    assert!(
        matches!(result, Err(AppendError::TooManyMessages { limit: 2 })),
        "both limits reached: {result:?}"
    );
    let result = store
        .append_exchange(NewExchange {
            max_messages: ROOMY,
            ..limited(full.id)
        })
        .await;
    assert!(
        matches!(result, Err(AppendError::TooManyReplies { limit: 1 })),
        "the replies' limit reached: {result:?}"
    );
    assert_eq!(find(store, full.id).await, current);
    assert_eq!(messages(store, full.id).await.len(), 2);

    finish(store, &beside, now()).await;
    append(
        store,
        NewExchange {
            max_messages: ROOMY,
            ..limited(full.id)
        },
    )
    .await;
}

/// Progress writes a reply's text, metadata and `updated_at` and leaves the
/// conversation alone; the final write also bumps the conversation's
/// version and `updated_at`.
pub async fn save_reply_writes_progress_then_the_final_state(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let at = now();
    let sent = exchange(conversation.id, at);
    let appended = append(store, sent.clone()).await;

    let progress = ReplyUpdate {
        text: "A stamp".to_owned(),
        status: MessageStatus::InProgress,
        metadata: sent.reply.metadata.clone(),
        updated_at: at + Duration::seconds(1),
    };
    let saved = store
        .save_reply(conversation.id, sent.reply.id.clone(), progress.clone())
        .await
        .expect("save progress");
    assert!(saved);
    let stored = messages(store, conversation.id).await;
    assert_eq!(
        stored[1],
        Message {
            text: progress.text,
            updated_at: progress.updated_at,
            ..sent.reply.clone()
        }
    );
    assert_eq!(find(store, conversation.id).await, Some(appended.clone()));

    let failure = ReplyUpdate {
        text: "A stampede".to_owned(),
        status: MessageStatus::Failed,
        metadata: MessageMetadata {
            error: Some("The assistant stopped answering.".to_owned()),
            ..finished("", at).metadata
        },
        updated_at: at + Duration::seconds(2),
    };
    let saved = store
        .save_reply(conversation.id, sent.reply.id.clone(), failure.clone())
        .await
        .expect("save the final state");
    assert!(saved);
    let stored = messages(store, conversation.id).await;
    assert_eq!(stored[0], sent.message);
    assert_eq!(
        stored[1],
        Message {
            text: failure.text,
            status: MessageStatus::Failed,
            metadata: failure.metadata,
            updated_at: failure.updated_at,
            ..sent.reply.clone()
        }
    );
    assert_eq!(
        find(store, conversation.id).await,
        Some(Conversation {
            version: appended.version.next(),
            updated_at: failure.updated_at,
            ..appended
        })
    );
}

/// Once final, a reply is never written again: later saves, in progress or
/// final, return `false` and change nothing. So does saving a reply the
/// conversation does not have.
pub async fn save_reply_after_the_final_state_changes_nothing(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let sent = exchange(conversation.id, now());
    append(store, sent.clone()).await;
    finish(store, &sent, now()).await;
    let current = find(store, conversation.id).await.expect("stored");
    let before = messages(store, conversation.id).await;

    for status in [MessageStatus::InProgress, MessageStatus::Interrupted] {
        let late = ReplyUpdate {
            text: "Overwritten".to_owned(),
            status,
            metadata: MessageMetadata::default(),
            updated_at: now(),
        };
        let saved = store
            .save_reply(conversation.id, sent.reply.id.clone(), late.clone())
            .await
            .expect("save");
        assert!(!saved, "{status:?} after the final state");
        let saved = store
            .save_reply(conversation.id, message_id("no-such-reply"), late)
            .await
            .expect("save");
        assert!(!saved, "{status:?} of a missing reply");
    }
    assert_eq!(messages(store, conversation.id).await, before);
    assert_eq!(find(store, conversation.id).await, Some(current));
}

/// A reply whose conversation was deleted is gone: saving it returns `false`.
pub async fn save_reply_of_a_deleted_conversation_changes_nothing(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(owner.id)).await;
    let sent = exchange(conversation.id, now());
    append(store, sent.clone()).await;
    store.delete(conversation.id, None).await.expect("delete");

    for status in [
        MessageStatus::InProgress,
        MessageStatus::FinishedSuccessfully,
    ] {
        let saved = store
            .save_reply(
                conversation.id,
                sent.reply.id.clone(),
                ReplyUpdate {
                    status,
                    ..finished("Too late", now())
                },
            )
            .await
            .expect("save");
        assert!(!saved, "{status:?}");
    }
    assert_eq!(find(store, conversation.id).await, None);
    assert!(messages(store, conversation.id).await.is_empty());
}

/// A new conversation of `owner` with a reply in progress, both sent at
/// `at`: the conversation as the append left it, and the exchange.
async fn reply_in_progress(
    store: &dyn ConversationStore,
    owner: AccountId,
    at: Timestamp,
) -> (Conversation, NewExchange) {
    let conversation = insert_conversation(store, conversation_at(owner, at)).await;
    let sent = exchange(conversation.id, at);
    let appended = append(store, sent.clone()).await;
    (appended, sent)
}

/// A save of `sent`'s reply, still in progress with `text` at `at`, its
/// usage so far in its metadata.
fn progress(sent: &NewExchange, text: &str, at: Timestamp) -> ReplySave {
    ReplySave {
        conversation: sent.reply.conversation_id,
        reply: sent.reply.id.clone(),
        update: ReplyUpdate {
            text: text.to_owned(),
            status: MessageStatus::InProgress,
            metadata: MessageMetadata {
                usage: Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: text.len() as u64,
                    total_tokens: 12 + text.len() as u64,
                }),
                ..sent.reply.metadata.clone()
            },
            updated_at: at,
        },
    }
}

/// A save of `sent`'s reply in its final state `status`, with `text` at `at`.
fn ending(sent: &NewExchange, text: &str, status: MessageStatus, at: Timestamp) -> ReplySave {
    ReplySave {
        conversation: sent.reply.conversation_id,
        reply: sent.reply.id.clone(),
        update: ReplyUpdate {
            status,
            ..finished(text, at)
        },
    }
}

/// `sent`'s reply as `save` writes it.
fn saved_as(sent: &NewExchange, save: &ReplySave) -> Message {
    Message {
        text: save.update.text.clone(),
        status: save.update.status,
        metadata: save.update.metadata.clone(),
        updated_at: save.update.updated_at,
        ..sent.reply.clone()
    }
}

/// The reply of `sent`, as stored.
async fn stored_reply(store: &dyn ConversationStore, sent: &NewExchange) -> Message {
    messages(store, sent.reply.conversation_id)
        .await
        .into_iter()
        .find(|message| message.id == sent.reply.id)
        .expect("the reply is stored")
}

/// A batch writes each reply in progress, in whatever order it lists them,
/// reports `true` for each in the batch's order, and leaves their
/// conversations alone.
pub async fn save_replies_saves_each_reply_and_reports_true(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let mut started = Vec::new();
    for _ in 0..5 {
        started.push(reply_in_progress(store, owner.id, at).await);
    }
    // Newest first: in no particular order of conversations or replies.
    let saves: Vec<ReplySave> = (0..5)
        .rev()
        .map(|i: usize| {
            let text = format!("Part {i} of the answer");
            progress(&started[i].1, &text, at + Duration::seconds(i as i64 + 1))
        })
        .collect();

    let saved = store
        .save_replies(saves.clone())
        .await
        .expect("save the batch");

    assert_eq!(saved, vec![true; 5]);
    for (save, i) in saves.iter().zip((0..5).rev()) {
        let (conversation, sent) = &started[i];
        assert_eq!(
            stored_reply(store, sent).await,
            saved_as(sent, save),
            "reply {i}"
        );
        assert_eq!(
            find(store, conversation.id).await.as_ref(),
            Some(conversation),
            "progress leaves conversation {i} alone"
        );
    }
}

/// In a batch, a reply already final, one the conversation does not have
/// and one whose conversation was deleted report `false` and stay as they
/// were, in progress or final (a final state does not bump the
/// conversation either); the other replies are saved.
pub async fn save_replies_leaves_final_and_gone_replies_alone_and_saves_the_others(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let (first, first_sent) = reply_in_progress(store, owner.id, at).await;
    let (_, done) = reply_in_progress(store, owner.id, at).await;
    finish(store, &done, at).await;
    let done_conversation = find(store, done.reply.conversation_id)
        .await
        .expect("stored");
    let done_before = messages(store, done.reply.conversation_id).await;
    let (deleted, deleted_sent) = reply_in_progress(store, owner.id, at).await;
    store.delete(deleted.id, None).await.expect("delete");
    let (last, last_sent) = reply_in_progress(store, owner.id, at).await;
    let missing = ReplySave {
        reply: message_id("no-such-reply"),
        ..progress(&first_sent, "Nobody's", at)
    };

    let later = at + Duration::seconds(1);
    let saves = vec![
        progress(&first_sent, "A stamp", later),
        progress(&done, "Overwritten", later),
        missing,
        progress(&deleted_sent, "Too late", later),
        ending(&done, "Overwritten", MessageStatus::Interrupted, later),
        progress(&last_sent, "A stampede", later),
        ending(&deleted_sent, "Too late", MessageStatus::Failed, later),
    ];
    let saved = store
        .save_replies(saves.clone())
        .await
        .expect("save the batch");

    assert_eq!(saved, [true, false, false, false, false, true, false]);
    assert_eq!(
        stored_reply(store, &first_sent).await,
        saved_as(&first_sent, &saves[0])
    );
    assert_eq!(
        stored_reply(store, &last_sent).await,
        saved_as(&last_sent, &saves[5])
    );
    assert_eq!(messages(store, first.id).await.len(), 2, "nothing added");
    assert_eq!(find(store, first.id).await, Some(first));
    assert_eq!(find(store, last.id).await, Some(last));
    assert_eq!(
        messages(store, done.reply.conversation_id).await,
        done_before
    );
    assert_eq!(
        find(store, done.reply.conversation_id).await,
        Some(done_conversation)
    );
    assert_eq!(find(store, deleted.id).await, None);
    assert!(messages(store, deleted.id).await.is_empty());
}

/// An empty batch succeeds, reports nothing and changes nothing.
pub async fn save_replies_of_an_empty_batch_saves_nothing(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let (conversation, sent) = reply_in_progress(store, owner.id, now()).await;

    let saved = store.save_replies(Vec::new()).await.expect("save nothing");

    assert_eq!(saved, Vec::<bool>::new());
    assert_eq!(stored_reply(store, &sent).await, sent.reply);
    assert_eq!(find(store, conversation.id).await, Some(conversation));
}

/// A final state in a batch is saved as `save_reply` saves it: the reply
/// takes its text, status and metadata, and its conversation's version is
/// bumped and `updated_at` set to the reply's; progress in the same batch
/// leaves its own conversation alone.
pub async fn a_final_state_in_a_batch_bumps_the_conversation_like_save_reply(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let (finishing, finishing_sent) = reply_in_progress(store, owner.id, at).await;
    let (growing, growing_sent) = reply_in_progress(store, owner.id, at).await;
    let (failing, failing_sent) = reply_in_progress(store, owner.id, at).await;
    let mut failure = ending(
        &failing_sent,
        "A stam",
        MessageStatus::Failed,
        at + Duration::seconds(4),
    );
    failure.update.metadata.error = Some("The assistant stopped answering.".to_owned());

    let saves = vec![
        ending(
            &finishing_sent,
            "A stampede is…",
            MessageStatus::FinishedSuccessfully,
            at + Duration::seconds(2),
        ),
        progress(&growing_sent, "A stamp", at + Duration::seconds(3)),
        failure,
    ];
    let saved = store
        .save_replies(saves.clone())
        .await
        .expect("save the batch");

    assert_eq!(saved, [true, true, true]);
    for (conversation, sent, save) in [
        (&finishing, &finishing_sent, &saves[0]),
        (&failing, &failing_sent, &saves[2]),
    ] {
        assert_eq!(stored_reply(store, sent).await, saved_as(sent, save));
        assert_eq!(
            find(store, conversation.id).await,
            Some(Conversation {
                version: conversation.version.next(),
                updated_at: save.update.updated_at,
                ..conversation.clone()
            })
        );
    }
    assert_eq!(
        stored_reply(store, &growing_sent).await,
        saved_as(&growing_sent, &saves[1])
    );
    assert_eq!(find(store, growing.id).await, Some(growing));
}

/// A reply a batch saves more than once is saved in the batch's order, each
/// save finding what the one before it wrote: progress, then its final
/// state (bumping its conversation once), then nothing more.
pub async fn a_reply_saved_more_than_once_in_a_batch_is_saved_in_turn(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let (ended, ended_sent) = reply_in_progress(store, owner.id, at).await;
    let (growing, growing_sent) = reply_in_progress(store, owner.id, at).await;
    let second = |seconds| at + Duration::seconds(seconds);

    let saves = vec![
        progress(&ended_sent, "A", second(1)),
        progress(&growing_sent, "B", second(1)),
        ending(
            &ended_sent,
            "A stampede",
            MessageStatus::FinishedSuccessfully,
            second(2),
        ),
        progress(&growing_sent, "B stampede", second(2)),
        progress(&ended_sent, "A stampede, late", second(3)),
    ];
    let saved = store
        .save_replies(saves.clone())
        .await
        .expect("save the batch");

    assert_eq!(saved, [true, true, true, true, false]);
    assert_eq!(
        stored_reply(store, &ended_sent).await,
        saved_as(&ended_sent, &saves[2])
    );
    assert_eq!(
        find(store, ended.id).await,
        Some(Conversation {
            version: ended.version.next(),
            updated_at: second(2),
            ..ended
        })
    );
    assert_eq!(
        stored_reply(store, &growing_sent).await,
        saved_as(&growing_sent, &saves[3])
    );
    assert_eq!(find(store, growing.id).await, Some(growing));
}

/// A batch of thousands of saves (most of replies that do not exist, so
/// that setting it up stays cheap) reports each in its place and saves the
/// replies that exist, wherever they are in it.
pub async fn a_batch_larger_than_any_one_statement_saves_every_reply(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    const SAVES: usize = 2_500;
    let owner = insert_account(accounts).await;
    let at = now();
    let later = at + Duration::seconds(1);
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(reply_in_progress(store, owner.id, at).await);
    }
    let mut saves: Vec<ReplySave> = (0..SAVES)
        .map(|i| ReplySave {
            reply: message_id(&format!("missing-{i}")),
            ..progress(&started[i % 3].1, "Nobody's", later)
        })
        .collect();
    let real = [0, 1_234, SAVES - 1];
    saves[real[0]] = progress(&started[0].1, "First", later);
    saves[real[1]] = ending(
        &started[1].1,
        "Middle",
        MessageStatus::FinishedSuccessfully,
        later,
    );
    saves[real[2]] = progress(&started[2].1, "Last", later);

    let saved = store
        .save_replies(saves.clone())
        .await
        .expect("save the batch");

    let expected: Vec<bool> = (0..SAVES).map(|i| real.contains(&i)).collect();
    assert_eq!(saved, expected);
    for ((conversation, sent), index) in started.iter().zip(real) {
        assert_eq!(
            stored_reply(store, sent).await,
            saved_as(sent, &saves[index])
        );
        assert_eq!(messages(store, conversation.id).await.len(), 2);
    }
    let middle = &started[1].0;
    assert_eq!(
        find(store, middle.id).await.map(|found| found.version),
        Some(middle.version.next())
    );
}

/// Batches saving the same replies at once, each listing them in an order
/// of its own and each ending a reply the others keep saving as in
/// progress, all complete (none deadlocks another or fails): every ended
/// reply is final, with its conversation bumped once, and every other is
/// still in progress with one of the batches' texts.
pub async fn concurrent_batches_sharing_replies_all_complete(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    const BATCHES: usize = 6;
    const REPLIES: usize = 12;
    let owner = insert_account(accounts).await;
    let at = now();
    let mut started = Vec::new();
    for _ in 0..REPLIES {
        started.push(reply_in_progress(store, owner.id, at).await);
    }
    let batches: Vec<Vec<ReplySave>> = (0..BATCHES)
        .map(|batch| {
            let later = at + Duration::seconds(batch as i64 + 1);
            let mut order: Vec<usize> = (0..REPLIES).map(|i| (i * 5 + batch) % REPLIES).collect();
            if batch % 2 == 1 {
                order.reverse();
            }
            order
                .into_iter()
                .map(|i| {
                    let sent = &started[i].1;
                    if i == batch {
                        let text = format!("Ended by batch {batch}");
                        ending(sent, &text, MessageStatus::Interrupted, later)
                    } else {
                        progress(sent, &format!("Saved by batch {batch}"), later)
                    }
                })
                .collect()
        })
        .collect();

    let outcomes = join_all(
        batches
            .iter()
            .map(|batch| store.save_replies(batch.clone())),
    )
    .await;

    let never_ended: Vec<&MessageId> = started[BATCHES..]
        .iter()
        .map(|(_, sent)| &sent.reply.id)
        .collect();
    for (batch, (saves, outcome)) in batches.iter().zip(outcomes).enumerate() {
        let saved = outcome.unwrap_or_else(|error| panic!("batch {batch} failed: {error:?}"));
        assert_eq!(
            saved.len(),
            saves.len(),
            "batch {batch}: one answer per save"
        );
        for (save, saved) in saves.iter().zip(saved) {
            // Its own final state, or a reply no batch ends: nothing can
            // have made it final first.
            if save.update.status.is_final() || never_ended.contains(&&save.reply) {
                assert!(saved, "batch {batch}: {:?} must be saved", save.update.text);
            }
        }
    }
    for (i, (conversation, sent)) in started.iter().enumerate() {
        let reply = stored_reply(store, sent).await;
        let found = find(store, conversation.id).await.expect("stored");
        if i < BATCHES {
            assert_eq!(reply.status, MessageStatus::Interrupted, "reply {i}");
            assert_eq!(reply.text, format!("Ended by batch {i}"));
            assert_eq!(found.version, conversation.version.next(), "reply {i}");
        } else {
            assert_eq!(reply.status, MessageStatus::InProgress, "reply {i}");
            assert!(
                (0..BATCHES).any(|batch| reply.text == format!("Saved by batch {batch}")),
                "reply {i}: {:?}",
                reply.text
            );
            assert_eq!(&found, conversation, "reply {i}");
        }
    }
}

/// Replies in progress last written before the cutoff become `Interrupted`
/// with their text kept, and their conversations change; replies written
/// since (or at) the cutoff, and finished ones, stay as they are.
pub async fn interrupt_abandoned_interrupts_only_replies_left_in_progress(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let start = now() - Duration::hours(1);
    let cutoff = start + Duration::minutes(5);
    let at_now = start + Duration::minutes(6);

    let mut sent = Vec::new();
    for written in [
        start,                         // abandoned
        start + Duration::minutes(10), // still being written
        cutoff,                        // written at the cutoff: not before it
        start,                         // finished, long ago
        start - Duration::minutes(1),  // abandoned, with some text
    ] {
        let conversation = insert_conversation(store, conversation_at(owner.id, start)).await;
        let sending = exchange(conversation.id, written);
        append(store, sending.clone()).await;
        sent.push(sending);
    }
    finish(store, &sent[3], start).await;
    let partial = ReplyUpdate {
        text: "A stamp".to_owned(),
        status: MessageStatus::InProgress,
        metadata: sent[4].reply.metadata.clone(),
        updated_at: start,
    };
    let saved = store
        .save_reply(
            sent[4].reply.conversation_id,
            sent[4].reply.id.clone(),
            partial,
        )
        .await
        .expect("save progress");
    assert!(saved);

    let mut before = Vec::new();
    for exchange in &sent {
        let id = exchange.reply.conversation_id;
        before.push((
            find(store, id).await.expect("stored"),
            messages(store, id).await,
        ));
    }

    let mut interrupted = store
        .interrupt_abandoned(cutoff, at_now)
        .await
        .expect("interrupt");
    interrupted.sort_by_key(|reply| reply.conversation);
    let mut expected: Vec<InterruptedReply> = [&sent[0], &sent[4]]
        .into_iter()
        .map(|exchange| InterruptedReply {
            conversation: exchange.reply.conversation_id,
            owner: owner.id,
            reply: exchange.reply.id.clone(),
        })
        .collect();
    expected.sort_by_key(|reply| reply.conversation);
    assert_eq!(interrupted, expected, "the replies it changed, and whose");

    for (index, exchange) in sent.iter().enumerate() {
        let id = exchange.reply.conversation_id;
        let (conversation, stored) = &before[index];
        if [0, 4].contains(&index) {
            let now_stored = messages(store, id).await;
            assert_eq!(now_stored[0], stored[0]);
            assert_eq!(
                now_stored[1],
                Message {
                    status: MessageStatus::Interrupted,
                    updated_at: at_now,
                    ..stored[1].clone()
                },
                "reply {index}"
            );
            let changed = find(store, id).await.expect("stored");
            assert_eq!(changed.version, conversation.version.next());
            assert_eq!(changed.updated_at, at_now);
        } else {
            assert_eq!(&messages(store, id).await, stored, "reply {index}");
            assert_eq!(find(store, id).await.as_ref(), Some(conversation));
        }
    }

    assert_eq!(
        store
            .interrupt_abandoned(cutoff, at_now)
            .await
            .expect("interrupt again"),
        []
    );
    append(store, exchange(sent[0].reply.conversation_id, at_now)).await;
}

/// A new conversation of `owner` and its first exchange, both at `at`,
/// opened with `key`, whose retry window starts an hour before `at`.
pub fn opening(owner: AccountId, key: Option<&str>, at: Timestamp) -> NewOpening {
    let conversation = conversation_at(owner, at);
    NewOpening {
        exchange: exchange(conversation.id, at),
        conversation,
        opening_key: key.map(str::to_owned),
        opening_key_since: at - Duration::hours(1),
    }
}

/// Starts `opening`, failing the test if the store refuses it.
async fn start(store: &dyn ConversationStore, opening: NewOpening) -> Conversation {
    store
        .start(opening)
        .await
        .expect("starting a conversation succeeds")
}

/// A started conversation is stored as an insert then an append would
/// store it: at the version after one append, with both messages.
pub async fn start_stores_the_conversation_with_its_first_exchange(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    for key in [None, Some("key:retry-1")] {
        let opened = opening(owner.id, key, now());
        let started = start(store, opened.clone()).await;
        assert_eq!(
            started,
            Conversation {
                version: Version::INITIAL.next(),
                ..opened.conversation.conversation()
            }
        );
        assert_eq!(find(store, started.id).await, Some(started.clone()));
        assert_eq!(
            messages(store, started.id).await,
            [opened.exchange.message, opened.exchange.reply]
        );
    }
    let page = list(store, owner.id, ConversationOrder::Updated, 0, 10).await;
    assert_eq!(page.total, 2);
}

/// A start whose opening key a conversation of the owner holds is
/// `AlreadyStarted`, naming it and its first message, and stores nothing;
/// the key is the owner's alone, starts without a key never conflict, and
/// a conversation started before the retry window gives its key up.
pub async fn a_start_with_an_opening_key_already_held_is_already_started(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let other = insert_account(accounts).await;
    let at = now();
    let first = opening(owner.id, Some("id:msg_001:digest"), at);
    let started = start(store, first.clone()).await;

    let retry = opening(
        owner.id,
        Some("id:msg_001:digest"),
        at + Duration::seconds(5),
    );
    let result = store.start(retry.clone()).await;
    match result {
        Err(AppendError::AlreadyStarted {
            conversation,
            message,
        }) => {
            assert_eq!(conversation, started.id);
            assert_eq!(message, first.exchange.message.id);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(find(store, retry.conversation.id).await, None);
    assert_eq!(find(store, started.id).await, Some(started.clone()));
    assert_eq!(messages(store, started.id).await.len(), 2);

    start(store, opening(other.id, Some("id:msg_001:digest"), at)).await;
    start(store, opening(owner.id, None, at)).await;
    start(store, opening(owner.id, None, at)).await;

    // Past the window (an hour in `opening`), the key starts a new one,
    // which then holds it.
    let later = opening(owner.id, Some("id:msg_001:digest"), at + Duration::hours(2));
    let restarted = start(store, later.clone()).await;
    assert_ne!(restarted.id, started.id);
    let result = store
        .start(opening(
            owner.id,
            Some("id:msg_001:digest"),
            at + Duration::hours(2),
        ))
        .await;
    assert!(
        matches!(&result, Err(AppendError::AlreadyStarted { conversation, .. }) if *conversation == restarted.id),
        "{result:?}"
    );
    let page = list(store, owner.id, ConversationOrder::Updated, 0, 10).await;
    assert_eq!(page.total, 4);
}

/// Starts with one opening key sent at once: exactly one conversation is
/// stored, and every other start is `AlreadyStarted` naming it.
pub async fn of_concurrent_starts_with_one_opening_key_exactly_one_starts(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    let attempts: Vec<NewOpening> = (0..8)
        .map(|_| opening(owner.id, Some("key:same"), now()))
        .collect();
    let results = join_all(attempts.iter().map(|attempt| store.start(attempt.clone()))).await;
    let winners: Vec<&Conversation> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0].id;
    let first_message = attempts
        .iter()
        .find(|attempt| attempt.conversation.id == winner)
        .map(|attempt| attempt.exchange.message.id.clone())
        .expect("the winner was attempted");
    for result in &results {
        match result {
            Ok(_) => {}
            Err(AppendError::AlreadyStarted {
                conversation,
                message,
            }) => {
                assert_eq!(*conversation, winner);
                assert_eq!(*message, first_message);
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let page = list(store, owner.id, ConversationOrder::Updated, 0, 10).await;
    assert_eq!(page.total, 1);
}

/// A start refused over a limit, or for an account that does not exist,
/// stores no conversation.
pub async fn a_refused_start_stores_no_conversation(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let owner = insert_account(accounts).await;
    start(store, opening(owner.id, None, now())).await;
    let mut limited = opening(owner.id, Some("key:limited"), now());
    limited.exchange.max_replies_in_flight = 1;
    let result = store.start(limited.clone()).await;
    assert!(
        matches!(result, Err(AppendError::TooManyReplies { limit: 1 })),
        "{result:?}"
    );
    let mut full = opening(owner.id, Some("key:full"), now());
    full.exchange.max_messages = 1;
    let result = store.start(full.clone()).await;
    assert!(
        matches!(result, Err(AppendError::TooManyMessages { limit: 1 })),
        "{result:?}"
    );
    for refused in [&limited, &full] {
        assert_eq!(find(store, refused.conversation.id).await, None);
    }
    let page = list(store, owner.id, ConversationOrder::Updated, 0, 10).await;
    assert_eq!(page.total, 1);
    // The key of a refused start is free.
    limited.exchange.max_replies_in_flight = 2;
    start(store, limited).await;

    let nobody = AccountId::from_ulid(Ulid::generate());
    let result = store.start(opening(nobody, None, now())).await;
    assert!(matches!(result, Err(AppendError::NotFound)), "{result:?}");
}

/// Deleting an account deletes its conversations and their messages, and
/// no one else's.
pub async fn deleting_an_account_deletes_its_conversations(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let leaving = insert_account(accounts).await;
    let staying = insert_account(accounts).await;
    let theirs = [
        insert_conversation(store, new_conversation(leaving.id)).await,
        insert_conversation(store, new_conversation(leaving.id)).await,
    ];
    append(store, exchange(theirs[0].id, now())).await;
    let kept = insert_conversation(store, new_conversation(staying.id)).await;
    let kept = append(store, exchange(kept.id, now())).await;

    assert!(accounts.delete(leaving.id).await.expect("delete account"));
    for conversation in &theirs {
        assert_eq!(find(store, conversation.id).await, None);
        assert!(messages(store, conversation.id).await.is_empty());
    }
    let page = list(store, leaving.id, ConversationOrder::Updated, 0, 10).await;
    assert_eq!(page.total, 0);
    assert_eq!(find(store, kept.id).await, Some(kept.clone()));
    assert_eq!(messages(store, kept.id).await.len(), 2);
}

/// A send to a conversation of an account deleted before it, or at the same
/// time, is `NotFound` (or appended, before the account was deleted): never
/// another error, and nothing of the account's is left.
pub async fn a_send_to_a_conversation_of_a_deleted_account_is_not_found(
    accounts: &dyn AccountStore,
    store: &dyn ConversationStore,
) {
    let leaving = insert_account(accounts).await;
    let conversation = insert_conversation(store, new_conversation(leaving.id)).await;
    assert!(accounts.delete(leaving.id).await.expect("delete account"));
    let result = store
        .append_exchange(exchange(conversation.id, now()))
        .await;
    assert!(matches!(result, Err(AppendError::NotFound)), "{result:?}");

    let leaving = insert_account(accounts).await;
    let mut sends = Vec::new();
    for _ in 0..4 {
        let conversation = insert_conversation(store, new_conversation(leaving.id)).await;
        sends.push(exchange(conversation.id, now()));
    }
    let (deleted, results) = futures::join!(
        accounts.delete(leaving.id),
        join_all(sends.iter().map(|send| store.append_exchange(send.clone())))
    );
    assert!(deleted.expect("delete account"));
    for result in &results {
        assert!(
            matches!(result, Ok(_) | Err(AppendError::NotFound)),
            "{result:?}"
        );
    }
    for send in &sends {
        let id = send.message.conversation_id;
        assert_eq!(find(store, id).await, None);
        assert!(messages(store, id).await.is_empty());
    }
}
