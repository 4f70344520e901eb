//! [`ConversationStore`] on `conversations` and their `messages`.
//!
//! Every transaction that writes a conversation's messages begins by
//! updating the conversation's row (bumping its version), which on
//! PostgreSQL locks it: the writes of one conversation therefore queue one
//! behind the other, each sees the messages of those before it, and all
//! take their locks in one order, the conversation and then its messages,
//! the order in which deleting it (or its account) cascades, so none can
//! deadlock another. (Replies' progress is the one write that skips the
//! conversation: one statement on the replies' rows, saving those of a
//! batch (an instance saves all the replies it generates at once) in the
//! order of their conversations and ids, so two batches never wait for
//! each other in a cycle. A batch that also ends replies first locks their
//! conversations, in the order of their ids. Only deleting an account
//! while a batch saves two or more of its replies can still deadlock, as
//! the cascade reaches their rows in its own order; PostgreSQL then fails
//! one of the two, which the caller sees as unavailable and retries.)
//! SQLite serialises write transactions anyway ([`Dialect::BEGIN_WRITE`]),
//! so the same statements need no dialect of their own, unlike session
//! rotation.
//!
//! A send also counts the replies its owner has in progress, across their
//! conversations, against a limit; so that two sends to two conversations
//! cannot both count below it, it first locks the owner's account row
//! (PostgreSQL's `FOR NO KEY UPDATE`, which inserts referencing the account
//! do not wait for), before the conversation: the order in which deleting
//! the account cascades.
//!
//! A send that starts a conversation stores it with its first exchange in
//! one transaction, under the same lock on the owner, with the send's
//! opening key: a retry of the send, however concurrent, finds the key
//! taken (`AlreadyStarted`), and a refused send leaves no empty
//! conversation behind.
//!
//! What concurrent sends race on is kept by the database itself: the
//! primary key and the retry-key index make a message id or a retry key
//! usable once per conversation, and a partial unique index allows one reply
//! in progress per conversation. Their violations become
//! [`AppendError::AlreadySent`] and [`AppendError::ReplyInFlight`].

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::error::BoxDynError;
use sqlx::{
    Arguments as _, AssertSqlSafe, ColumnIndex, Executor, FromRow, Pool, QueryBuilder, Transaction,
};
use uuid::Uuid;
use waiter_domain::{
    AccountId, Conversation, ConversationId, ConversationTitle, Message, MessageId,
    MessageMetadata, Timestamp, Usage, Version,
};
use waiter_ports::PortError;
use waiter_ports::conversations::{
    AppendError, ConversationOrder, ConversationPage, ConversationQuery, ConversationStore,
    ConversationSummary, InsertConversationError, InterruptedReply, LAST_MESSAGE_CHARS,
    NewConversationRecord, NewExchange, NewOpening, ReplySave, ReplyUpdate, WriteConversationError,
};
use waiter_ports::idempotency::IdempotencyRecord;

use crate::calls::Calls;
use crate::idempotency::begin_creating;
use crate::{Column, Connection, Db, Dialect, Param, Row, UniqueKey, limited, stale_version};

/// The key that makes a message id usable once per conversation.
const MESSAGE_ID_KEY: UniqueKey = UniqueKey {
    name: "messages_pkey",
    table: "messages",
    columns: &["conversation_id", "id"],
};

/// The index that makes a retry key usable once per conversation.
const RETRY_KEY_KEY: UniqueKey = UniqueKey {
    name: "messages_conversation_id_retry_key_key",
    table: "messages",
    columns: &["conversation_id", "retry_key"],
};

/// The index that makes an opening key usable once per owner.
const OPENING_KEY_KEY: UniqueKey = UniqueKey {
    name: "conversations_owner_id_opening_key_key",
    table: "conversations",
    columns: &["owner_id", "opening_key"],
};

/// The partial index that allows one reply in progress per conversation.
const ONE_IN_PROGRESS_KEY: UniqueKey = UniqueKey {
    name: "messages_one_in_progress_key",
    table: "messages",
    columns: &["conversation_id"],
};

/// The columns a [`ConversationRow`] reads, named once so every query selects the same.
macro_rules! conversation_columns {
    () => {
        "id, owner_id, title, version, created_at, updated_at"
    };
}

/// The columns a [`MessageRow`] reads.
macro_rules! message_columns {
    () => {
        "conversation_id, id, role, text, status, parent_id, metadata, created_at, updated_at"
    };
}

/// The conversations of owner `$1`, each with the first `$3` characters of
/// its newest message, from the `$2`th, at most `$limit` (see [`limited`]);
/// the ordering is appended.
macro_rules! list {
    ($order:literal) => {
        concat!(
            "SELECT ",
            conversation_columns!(),
            ", (SELECT substr(text, 1, $3) FROM messages
                WHERE conversation_id = conversations.id
                ORDER BY seq DESC LIMIT 1) AS last_message
             FROM conversations
             WHERE owner_id = $1
             ORDER BY ",
            $order,
            " LIMIT $limit OFFSET $2"
        )
    };
}

const INSERT: &str = concat!(
    "INSERT INTO conversations (id, owner_id, title, version, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $5)
     RETURNING ",
    conversation_columns!()
);
/// Inserts a conversation started by its first exchange, with its opening key `$6`.
const INSERT_OPENED: &str = concat!(
    "INSERT INTO conversations (id, owner_id, title, version, created_at, updated_at, opening_key)
     VALUES ($1, $2, $3, $4, $5, $5, $6)
     RETURNING ",
    conversation_columns!()
);
/// Takes opening key `$2` from owner `$1`'s conversation started before
/// `$3`: past the retry window, the key starts a new conversation.
const GIVE_UP_OPENING_KEY: &str = "UPDATE conversations SET opening_key = NULL
     WHERE owner_id = $1 AND opening_key = $2 AND created_at < $3";
/// The conversation of owner `$1` holding opening key `$2`, and its first message.
const OPENED: &str = "SELECT conversations.id, messages.id FROM conversations
     JOIN messages ON messages.conversation_id = conversations.id AND messages.seq = 1
     WHERE conversations.owner_id = $1 AND conversations.opening_key = $2";
const FIND: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE id = $1"
);
const LIST_BY_UPDATED: &str = list!("updated_at DESC, id DESC");
const LIST_BY_CREATED: &str = list!("created_at DESC, id DESC");
const COUNT: &str = "SELECT COUNT(*) FROM conversations WHERE owner_id = $1";
/// Renames the conversation if the version matches `$2`, or whatever the
/// version when `$2` is `NULL`.
const RENAME: &str = concat!(
    "UPDATE conversations
     SET title = $3, updated_at = $4, version = version + 1
     WHERE id = $1 AND version = COALESCE($2, version)
     RETURNING ",
    conversation_columns!()
);
const DELETE: &str =
    "DELETE FROM conversations WHERE id = $1 AND version = COALESCE($2, version) RETURNING id";
const VERSION: &str = "SELECT version FROM conversations WHERE id = $1";
/// [`TOUCH`], written once for it and [`TOUCH_COUNTING`].
macro_rules! touch {
    () => {
        concat!(
            "UPDATE conversations SET version = version + 1, updated_at = $2
             WHERE id = $1
             RETURNING ",
            conversation_columns!()
        )
    };
}

/// Records a change to conversation `$1` at `$2`, and on PostgreSQL locks it
/// until the transaction ends: the first statement of every transaction
/// that writes its messages.
const TOUCH: &str = touch!();
/// [`TOUCH`] for a send, also returning how many messages the conversation
/// holds and the last `seq` given: one round trip where two were.
///
/// On PostgreSQL the counts are read in the statement's snapshot, taken
/// before it waited for the conversation's lock, so they miss what the
/// holder of that lock changed. They are current all the same: only a send
/// adds messages, and a send holds its owner's lock ([`lock_owner`]),
/// which this transaction holds already; deleting the conversation meanwhile
/// leaves no row to update. The replies in progress are not counted here,
/// as the lock's holder may have ended one; [`INSERT_EXCHANGE`] counts them.
const TOUCH_COUNTING: &str = concat!(
    touch!(),
    ",
     (SELECT COUNT(*) FROM messages WHERE conversation_id = $1) AS message_count,
     (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = $1) AS last_seq"
);
/// Account `$1`; followed by [`Dialect::LOCK_ROWS`], locks it (see [`lock_owner`]).
const ACCOUNT: &str = "SELECT id FROM accounts WHERE id = $1";
/// The account that owns conversation `$1`; followed by
/// [`Dialect::LOCK_ROWS`], locks that account and not the conversation
/// (see [`lock_owner`]): PostgreSQL locks the rows a `SELECT` reads from its
/// `FROM`, not those a sub-select reads. The owner of a conversation never
/// changes, so the sub-select reads it without a lock; a conversation
/// deleted meanwhile is found missing when it is locked next ([`TOUCH`]).
/// One statement where reading the owner and then locking their account
/// would be two round trips on every send.
const OWNER_OF: &str =
    "SELECT id FROM accounts WHERE id = (SELECT owner_id FROM conversations WHERE id = $1)";
/// Inserts an exchange: the user message (`$1` to `$10`), then its reply
/// (`$11` to `$20`), each as [`add_message`] gives it; and returns, on each
/// row, how many replies of owner `$21` are in progress across their
/// conversations, the inserted reply left out. One round trip where three
/// were (two inserts and the count).
///
/// The user message's row goes first so that, as when it was inserted
/// alone first, a unique violation in it is the one reported before any in
/// the reply's: a retry is `AlreadySent` even while its reply is in
/// progress (see [`append_refusal`](SqlConversationStore::append_refusal)).
/// The count is read in a snapshot taken after the conversation's lock,
/// unlike [`TOUCH_COUNTING`]'s. PostgreSQL reads it before the insert;
/// SQLite may read it after the rows are inserted, which leaving the reply
/// out makes the same (the user message is never in progress).
const INSERT_EXCHANGE: &str = "INSERT INTO messages
         (conversation_id, id, seq, role, text, status, parent_id, metadata, retry_key,
          created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10),
            ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20)
     RETURNING (SELECT COUNT(*) FROM messages
                WHERE status = 'in_progress'
                  AND conversation_id IN (SELECT id FROM conversations WHERE owner_id = $21)
                  AND NOT (conversation_id = $11 AND id = $12))";
/// The message of conversation `$1` with id `$2` or retry key `$3`,
/// preferring the id.
const SENT_BEFORE: &str = "SELECT id FROM messages
     WHERE conversation_id = $1 AND (id = $2 OR retry_key = $3)
     ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END, seq
     LIMIT 1";
const MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 ORDER BY seq"
);
/// Writes the replies of the `VALUES` placed between this and
/// [`SAVE_REPLIES_END`], rows of `(conversation_id, id, text, status,
/// metadata, updated_at)`, where they are still in progress, and returns the
/// `(conversation_id, id)` of those it wrote. Both databases name the
/// columns of a `VALUES` `column1`, `column2`…
const SAVE_REPLIES: &str = "UPDATE messages
     SET text = saved.column3, status = saved.column4, metadata = saved.column5,
         updated_at = saved.column6
     FROM (";
const SAVE_REPLIES_END: &str = ") AS saved
     WHERE messages.conversation_id = saved.column1 AND messages.id = saved.column2
       AND messages.status = 'in_progress'
     RETURNING conversation_id, id";
/// Selects the conversations whose ids are listed between this and
/// [`LOCK_CONVERSATIONS_END`], in the order of their ids; followed by
/// [`Dialect::LOCK_ROWS`], locks them in that order.
const LOCK_CONVERSATIONS: &str = "SELECT id FROM conversations WHERE id IN (";
const LOCK_CONVERSATIONS_END: &str = ") ORDER BY id";
/// Records the replies a batch ended in their conversations, given by the
/// `VALUES` placed between this and [`END_REPLIES_END`], rows of
/// `(id, replies ended, updated_at)`: a version per reply, as
/// [`TOUCH`] bumps it for one, and the time of the last.
const END_REPLIES: &str = "UPDATE conversations
     SET version = version + ended.column2, updated_at = ended.column3
     FROM (";
const END_REPLIES_END: &str = ") AS ended WHERE conversations.id = ended.column1";
/// The most rows one statement of a batch of saves carries: at six
/// parameters a row, far below both databases' limits (65 535 parameters on
/// PostgreSQL, 32 766 on SQLite), and room for all the replies an instance
/// generates at once (about a thousand) in one statement.
const ROWS_PER_STATEMENT: usize = 1_000;
const ABANDONED: &str = "SELECT conversation_id, id FROM messages
     WHERE status = 'in_progress' AND updated_at < $1";
const INTERRUPT: &str = "UPDATE messages SET status = 'interrupted', updated_at = $3
     WHERE conversation_id = $1 AND id = $2 AND status = 'in_progress' AND updated_at < $4
     RETURNING id";

/// Conversations in the `conversations` table, their messages in `messages`.
#[derive(Debug)]
pub struct SqlConversationStore<D: Dialect> {
    pub(crate) pool: Pool<D::Database>,
    pub(crate) calls: Calls<D>,
}

/// A `conversations` row, with instants stored as `T`.
#[derive(Debug, FromRow)]
struct ConversationRow<T> {
    id: Uuid,
    owner_id: Uuid,
    title: String,
    version: i64,
    created_at: T,
    updated_at: T,
}

impl<T: Into<Timestamp>> TryFrom<ConversationRow<T>> for Conversation {
    type Error = PortError;

    /// Re-validates what was stored: a bad row is corrupt data, never a panic.
    fn try_from(row: ConversationRow<T>) -> Result<Self, PortError> {
        Ok(Conversation {
            id: ConversationId::from_uuid(row.id),
            owner: AccountId::from_uuid(row.owner_id),
            title: ConversationTitle::parse(&row.title).map_err(PortError::unexpected)?,
            version: Version::new(row.version),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        })
    }
}

/// A row of a list: the conversation and the start of its newest message.
#[derive(Debug, FromRow)]
struct SummaryRow<T> {
    #[sqlx(flatten)]
    conversation: ConversationRow<T>,
    last_message: Option<String>,
}

impl<T: Into<Timestamp>> TryFrom<SummaryRow<T>> for ConversationSummary {
    type Error = PortError;

    fn try_from(row: SummaryRow<T>) -> Result<Self, PortError> {
        Ok(ConversationSummary {
            conversation: row.conversation.try_into()?,
            last_message: row.last_message,
        })
    }
}

/// A conversation as [`TOUCH_COUNTING`] returns it: with how many messages
/// it holds and the last `seq` given.
#[derive(Debug, FromRow)]
struct CountedRow<T> {
    #[sqlx(flatten)]
    conversation: ConversationRow<T>,
    message_count: i64,
    last_seq: i64,
}

/// A `messages` row, with instants stored as `T`.
#[derive(Debug, FromRow)]
struct MessageRow<T> {
    conversation_id: Uuid,
    id: String,
    role: String,
    text: String,
    status: String,
    parent_id: Option<String>,
    metadata: String,
    created_at: T,
    updated_at: T,
}

impl<T: Into<Timestamp>> TryFrom<MessageRow<T>> for Message {
    type Error = PortError;

    /// Re-validates what was stored: a bad row is corrupt data, never a panic.
    fn try_from(row: MessageRow<T>) -> Result<Self, PortError> {
        Ok(Message {
            id: MessageId::parse(&row.id).map_err(PortError::unexpected)?,
            conversation_id: ConversationId::from_uuid(row.conversation_id),
            role: row.role.parse().map_err(PortError::unexpected)?,
            text: row.text,
            status: row.status.parse().map_err(PortError::unexpected)?,
            parent_id: row
                .parent_id
                .as_deref()
                .map(MessageId::parse)
                .transpose()
                .map_err(PortError::unexpected)?,
            metadata: decode_metadata(&row.metadata)?,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        })
    }
}

/// [`MessageMetadata`] as the `metadata` column holds it: a JSON object
/// without the fields that are absent, so a user message's is `{}` or
/// `{"temperature":0.7}`. Unknown fields are ignored when read, so a later
/// release may add some without breaking an earlier one reading its rows.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<StoredUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// [`Usage`] within [`StoredMetadata`].
#[derive(Debug, Serialize, Deserialize)]
struct StoredUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<&MessageMetadata> for StoredMetadata {
    fn from(metadata: &MessageMetadata) -> Self {
        Self {
            model_slug: metadata.model_slug.clone(),
            finish_reason: metadata.finish_reason.clone(),
            usage: metadata.usage.map(|usage| StoredUsage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
            }),
            temperature: metadata.temperature,
            error: metadata.error.clone(),
        }
    }
}

impl From<StoredMetadata> for MessageMetadata {
    fn from(stored: StoredMetadata) -> Self {
        Self {
            model_slug: stored.model_slug,
            finish_reason: stored.finish_reason,
            usage: stored.usage.map(|usage| Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
            }),
            temperature: stored.temperature,
            error: stored.error,
        }
    }
}

fn encode_metadata(metadata: &MessageMetadata) -> Result<String, PortError> {
    serde_json::to_string(&StoredMetadata::from(metadata)).map_err(PortError::unexpected)
}

fn decode_metadata(json: &str) -> Result<MessageMetadata, PortError> {
    serde_json::from_str::<StoredMetadata>(json)
        .map(MessageMetadata::from)
        .map_err(PortError::unexpected)
}

/// How many characters of a conversation's newest message a list reads: one
/// more than it shows, so the caller can tell the text was cut.
fn last_message_chars() -> i32 {
    i32::try_from(LAST_MESSAGE_CHARS + 1).unwrap_or(i32::MAX)
}

impl<D: Dialect> SqlConversationStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    for<'n> &'n str: ColumnIndex<Row<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    String: Column<Db<D>>,
    i64: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
    for<'q> Option<&'q str>: Param<'q, Db<D>>,
{
    /// Why a conditional write of conversation `id` matched no row.
    async fn refusal(
        &self,
        id: ConversationId,
        expected_version: Option<Version>,
    ) -> WriteConversationError {
        match stale_version::<D>(self.calls.writer(), VERSION, id.as_uuid(), expected_version).await
        {
            Ok(Some(current)) => WriteConversationError::VersionMismatch { current },
            Ok(None) => WriteConversationError::NotFound,
            Err(error) => error.into(),
        }
    }

    /// Appends `exchange` in `tx`, which holds the lock on the conversation's
    /// owner, and commits; see [`ConversationStore::append_exchange`]. Three
    /// round trips, as a send is on the path to its first token: one
    /// statement locks the conversation and counts its messages
    /// ([`TOUCH_COUNTING`]), one inserts both messages and counts the
    /// owner's replies in progress ([`INSERT_EXCHANGE`]), then the commit.
    async fn append_locked(
        &self,
        mut tx: Transaction<'static, Db<D>>,
        owner: Uuid,
        exchange: NewExchange,
    ) -> Result<Conversation, AppendError> {
        let NewExchange {
            message,
            reply,
            retry_key,
            max_messages,
            max_replies_in_flight,
        } = exchange;
        // Locks the conversation next: concurrent appends to it wait here,
        // then see what the one before them stored.
        let touched = sqlx::query_as::<_, CountedRow<D::Timestamp>>(TOUCH_COUNTING)
            .bind(message.conversation_id.as_uuid())
            .bind(D::Timestamp::from(message.created_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(D::port_error)?;
        let Some(CountedRow {
            conversation,
            message_count,
            last_seq,
        }) = touched
        else {
            return Err(AppendError::NotFound);
        };

        // The messages go in before the limits are checked, so a retry is
        // `AlreadySent` (and a second reply `ReplyInFlight`) even when a
        // limit is reached.
        let inserted = insert_exchange::<D>(
            &mut tx,
            owner,
            &message,
            &reply,
            last_seq,
            retry_key.as_deref(),
        )
        .await;
        let in_flight_before = match inserted {
            Ok(in_flight_before) => in_flight_before,
            Err(error) => {
                drop(tx);
                return Err(self
                    .append_refusal(error, &message, retry_key.as_deref())
                    .await);
            }
        };
        // Dropping `tx` on a refusal rolls the inserts back.
        if message_count + 2 > i64::from(max_messages) {
            return Err(AppendError::TooManyMessages {
                limit: max_messages,
            });
        }
        // This exchange's reply is one more.
        if in_flight_before + 1 > i64::from(max_replies_in_flight) {
            return Err(AppendError::TooManyReplies {
                limit: max_replies_in_flight,
            });
        }
        tx.commit().await.map_err(D::port_error)?;
        Ok(conversation.try_into()?)
    }

    /// Why the messages of an exchange could not be inserted, `error` being
    /// what the database said (after the transaction was abandoned).
    async fn append_refusal(
        &self,
        error: sqlx::Error,
        message: &Message,
        retry_key: Option<&str>,
    ) -> AppendError {
        if D::violates(&error, ONE_IN_PROGRESS_KEY) {
            return AppendError::ReplyInFlight;
        }
        if !D::violates(&error, MESSAGE_ID_KEY) && !D::violates(&error, RETRY_KEY_KEY) {
            return D::port_error(error).into();
        }
        // The message that holds the id or the key has committed (a unique
        // check waits for the outcome of a concurrent insert), so it can be
        // read from outside the abandoned transaction.
        let sent = sqlx::query_scalar::<_, String>(SENT_BEFORE)
            .bind(message.conversation_id.as_uuid())
            .bind(message.id.as_str())
            .bind(retry_key)
            .fetch_optional(self.calls.writer())
            .await;
        match sent {
            Ok(Some(id)) => match MessageId::parse(&id) {
                Ok(id) => AppendError::AlreadySent(id),
                Err(error) => PortError::unexpected(error).into(),
            },
            // The reply's id was taken, which is no retry of the message,
            // or the conversation was deleted meanwhile.
            Ok(None) => D::port_error(error).into(),
            Err(error) => D::port_error(error).into(),
        }
    }

    /// Writes `saves`: what both [`ConversationStore::save_reply`] (a batch
    /// of one) and [`ConversationStore::save_replies`] do.
    ///
    /// A batch of progress only, saving each reply once and small enough
    /// for one statement (every `save_reply` of a reply in progress, and an
    /// instance's usual batch), is that one statement: a transaction of its
    /// own, which locks no conversation. Any other batch is one transaction
    /// that takes its locks in the store's order: first the conversations of
    /// the replies that end, in the order of their ids; then the replies, in
    /// the order of their conversations and ids (see [`rounds`]); last, on
    /// rows it already holds, the version bumps of the conversations whose
    /// replies ended.
    async fn save_batch(&self, saves: &[ReplySave]) -> Result<Vec<bool>, PortError> {
        let metadata = saves
            .iter()
            .map(|save| encode_metadata(&save.update.metadata))
            .collect::<Result<Vec<_>, _>>()?;
        let rounds = rounds(saves);
        let mut ending: Vec<Uuid> = saves
            .iter()
            .filter(|save| save.update.status.is_final())
            .map(|save| save.conversation.as_uuid())
            .collect();
        ending.sort_unstable();
        ending.dedup();
        let mut saved = vec![false; saves.len()];

        if let [round] = rounds.as_slice()
            && round.len() <= ROWS_PER_STATEMENT
            && ending.is_empty()
        {
            let written = save_rows::<D>(self.calls.writer(), saves, &metadata, round).await?;
            mark_saved(&mut saved, saves, round, &written);
            return Ok(saved);
        }

        let mut tx = self
            .calls
            .writer()
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(D::port_error)?;
        for ids in ending.chunks(ROWS_PER_STATEMENT) {
            lock_conversations::<D>(&mut tx, ids).await?;
        }
        for round in &rounds {
            for rows in round.chunks(ROWS_PER_STATEMENT) {
                let written = save_rows::<D>(&mut *tx, saves, &metadata, rows).await?;
                mark_saved(&mut saved, saves, rows, &written);
            }
        }
        let ended = ended_replies(saves, &saved);
        for rows in ended.chunks(ROWS_PER_STATEMENT) {
            end_replies::<D>(&mut tx, rows).await?;
        }
        tx.commit().await.map_err(D::port_error)?;
        Ok(saved)
    }
}

/// The saves of a batch, as indices into it, in rounds written one after
/// the other, a statement per [`ROWS_PER_STATEMENT`] saves of a round.
///
/// Each round is in the order of conversations and replies. That is the
/// order of its `VALUES`, which PostgreSQL's join walks as its outer side
/// (whether it hashes the replies or looks each up), so it is the order in
/// which every batch locks the replies: two batches sharing replies never
/// wait for each other in a cycle. A statement writes a row once only, so
/// a reply the batch saves again goes into the next round, where it finds
/// what the save before it wrote, as it would in the batch's order.
fn rounds(saves: &[ReplySave]) -> Vec<Vec<usize>> {
    let key = |index: &usize| {
        let save = &saves[*index];
        (save.conversation.as_uuid(), save.reply.as_str())
    };
    let mut order: Vec<usize> = (0..saves.len()).collect();
    // Stable: the saves of one reply keep the batch's order.
    order.sort_by_key(key);
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut repeat = 0;
    for (position, index) in order.iter().enumerate() {
        let again = position > 0 && key(&order[position - 1]) == key(index);
        repeat = if again { repeat + 1 } else { 0 };
        if rounds.len() == repeat {
            rounds.push(Vec::new());
        }
        rounds[repeat].push(*index);
    }
    rounds
}

/// Writes the saves `rows` (indices into `saves` and their encoded
/// `metadata`; no reply twice) where their replies are still in progress,
/// in one statement; returns the `(conversation, reply)` of those written.
async fn save_rows<'e, D: Dialect>(
    executor: impl Executor<'e, Database = Db<D>>,
    saves: &[ReplySave],
    metadata: &[String],
    rows: &[usize],
) -> Result<HashSet<(Uuid, String)>, PortError>
where
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    String: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
{
    // `push_bind` panics if a value fails to encode; none of these can
    // (the instants are UTC, whose encodings are total).
    let mut statement = QueryBuilder::<Db<D>>::new(SAVE_REPLIES);
    statement.push_values(rows, |mut row, &index| {
        let save = &saves[index];
        row.push_bind(save.conversation.as_uuid())
            .push_bind(save.reply.as_str())
            .push_bind(save.update.text.as_str())
            .push_bind(save.update.status.as_str())
            .push_bind(metadata[index].as_str())
            .push_bind(D::Timestamp::from(save.update.updated_at));
    });
    statement.push(SAVE_REPLIES_END);
    let written = statement
        .build_query_as::<(Uuid, String)>()
        // The one-row statement (every `save_reply`) is the same text each
        // time, worth keeping prepared; a longer one's text varies with the
        // size of its batch and would only crowd the statement cache.
        .persistent(rows.len() == 1)
        .fetch_all(executor)
        .await
        .map_err(D::port_error)?;
    Ok(written.into_iter().collect())
}

/// Marks in `saved` the saves among `rows` whose replies a statement wrote
/// (`written`, as [`save_rows`] returns them).
fn mark_saved(
    saved: &mut [bool],
    saves: &[ReplySave],
    rows: &[usize],
    written: &HashSet<(Uuid, String)>,
) {
    for &index in rows {
        let save = &saves[index];
        saved[index] =
            written.contains(&(save.conversation.as_uuid(), save.reply.as_str().to_owned()));
    }
}

/// Locks the conversations `ids` (sorted, none twice) until `tx` ends, in
/// that order (PostgreSQL; SQLite's write transactions run one at a time
/// anyway). Those deleted meanwhile are skipped: their replies are gone.
async fn lock_conversations<D: Dialect>(
    tx: &mut Transaction<'static, Db<D>>,
    ids: &[Uuid],
) -> Result<(), PortError>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    Uuid: Column<Db<D>>,
{
    let mut statement = QueryBuilder::<Db<D>>::new(LOCK_CONVERSATIONS);
    let mut listed = statement.separated(", ");
    for id in ids {
        listed.push_bind(*id);
    }
    statement.push(LOCK_CONVERSATIONS_END).push(D::LOCK_ROWS);
    statement
        .build()
        .persistent(false)
        .execute(&mut **tx)
        .await
        .map_err(D::port_error)?;
    Ok(())
}

/// A conversation whose replies a batch ended: how many, and when the last
/// of them (in the batch's order) was written.
struct Ended {
    conversation: Uuid,
    replies: i64,
    at: Timestamp,
}

/// The conversations whose replies `saves` ended, by id: the final saves
/// that were `saved`.
fn ended_replies(saves: &[ReplySave], saved: &[bool]) -> Vec<Ended> {
    let mut ended: BTreeMap<Uuid, Ended> = BTreeMap::new();
    for (save, _) in saves
        .iter()
        .zip(saved)
        .filter(|(save, saved)| **saved && save.update.status.is_final())
    {
        let conversation = save.conversation.as_uuid();
        let entry = ended.entry(conversation).or_insert(Ended {
            conversation,
            replies: 0,
            at: save.update.updated_at,
        });
        entry.replies += 1;
        entry.at = save.update.updated_at;
    }
    ended.into_values().collect()
}

/// Bumps the version and `updated_at` of each conversation of `ended`, as
/// a final [`ConversationStore::save_reply`] does once per reply.
async fn end_replies<D: Dialect>(
    tx: &mut Transaction<'static, Db<D>>,
    ended: &[Ended],
) -> Result<(), PortError>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    Uuid: Column<Db<D>>,
    i64: Column<Db<D>>,
{
    let mut statement = QueryBuilder::<Db<D>>::new(END_REPLIES);
    statement.push_values(ended, |mut row, ended| {
        row.push_bind(ended.conversation)
            .push_bind(ended.replies)
            .push_bind(D::Timestamp::from(ended.at));
    });
    statement.push(END_REPLIES_END);
    statement
        .build()
        .persistent(false)
        .execute(&mut **tx)
        .await
        .map_err(D::port_error)?;
    Ok(())
}

/// Locks the account of a send's owner until `tx` ends (PostgreSQL;
/// SQLite's write transactions run one at a time anyway) and returns its
/// id: the sends of one owner queue one behind the other, so each counts
/// the replies in progress of those before it. An account is locked before
/// its conversations and their messages, the order in which deleting it
/// cascades. `owner` selects the account's id, and only from `accounts`
/// ([`ACCOUNT`] by its id, [`OWNER_OF`] by a conversation's), `$1` being
/// `id`. `None` when there is no such account.
async fn lock_owner<D: Dialect>(
    tx: &mut Transaction<'static, Db<D>>,
    owner: &'static str,
    id: Uuid,
) -> Result<Option<Uuid>, PortError>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
{
    let lock = format!("{owner}{}", D::LOCK_ROWS);
    sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(lock))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(D::port_error)
}

/// The conversation of `owner` holding opening key `key`, as the refusal of
/// a start that retries it.
async fn opened<'e, D: Dialect>(
    executor: impl Executor<'e, Database = Db<D>>,
    owner: Uuid,
    key: &str,
) -> Result<Option<AppendError>, PortError>
where
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    String: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
{
    let started = sqlx::query_as::<_, (Uuid, String)>(OPENED)
        .bind(owner)
        .bind(key)
        .fetch_optional(executor)
        .await
        .map_err(D::port_error)?;
    started
        .map(|(conversation, message)| {
            Ok(AppendError::AlreadyStarted {
                conversation: ConversationId::from_uuid(conversation),
                message: MessageId::parse(&message).map_err(PortError::unexpected)?,
            })
        })
        .transpose()
}

/// Inserts `message` and its `reply` as messages `last_seq + 1` and
/// `last_seq + 2` of their conversation, in `tx` ([`INSERT_EXCHANGE`]);
/// returns how many other replies of `owner` are in progress.
async fn insert_exchange<D: Dialect>(
    tx: &mut Transaction<'static, Db<D>>,
    owner: Uuid,
    message: &Message,
    reply: &Message,
    last_seq: i64,
    retry_key: Option<&str>,
) -> Result<i64, sqlx::Error>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    i64: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
    for<'q> Option<&'q str>: Param<'q, Db<D>>,
{
    let mut arguments = <Db<D> as sqlx::Database>::Arguments::default();
    add_message::<D>(&mut arguments, message, last_seq + 1, retry_key)
        .and_then(|()| add_message::<D>(&mut arguments, reply, last_seq + 2, None))
        .and_then(|()| arguments.add(owner))
        .map_err(sqlx::Error::Encode)?;
    let in_flight = sqlx::query_scalar_with::<_, i64, _>(INSERT_EXCHANGE, arguments)
        .fetch_all(&mut **tx)
        .await?;
    // One count per row inserted, the same on each.
    in_flight.first().copied().ok_or(sqlx::Error::RowNotFound)
}

/// Adds the ten parameters of `message`'s row of [`INSERT_EXCHANGE`] to
/// `arguments`, as message `seq` of its conversation, sent with `retry_key`.
fn add_message<D: Dialect>(
    arguments: &mut <Db<D> as sqlx::Database>::Arguments,
    message: &Message,
    seq: i64,
    retry_key: Option<&str>,
) -> Result<(), BoxDynError>
where
    Uuid: Column<Db<D>>,
    i64: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
    for<'q> Option<&'q str>: Param<'q, Db<D>>,
{
    let metadata = encode_metadata(&message.metadata)?;
    arguments.add(message.conversation_id.as_uuid())?;
    arguments.add(message.id.as_str())?;
    arguments.add(seq)?;
    arguments.add(message.role.as_str())?;
    arguments.add(message.text.as_str())?;
    arguments.add(message.status.as_str())?;
    arguments.add(message.parent_id.as_ref().map(MessageId::as_str))?;
    arguments.add(metadata.as_str())?;
    arguments.add(retry_key)?;
    arguments.add(D::Timestamp::from(message.created_at))
}

#[async_trait]
impl<D: Dialect> ConversationStore for SqlConversationStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    for<'n> &'n str: ColumnIndex<Row<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    String: Column<Db<D>>,
    i64: Column<Db<D>>,
    i32: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
    for<'q> &'q [u8]: Param<'q, Db<D>>,
    for<'q> Option<&'q str>: Param<'q, Db<D>>,
    for<'q> Option<i64>: Param<'q, Db<D>>,
{
    async fn insert(
        &self,
        record: NewConversationRecord,
        remember: Option<IdempotencyRecord>,
    ) -> Result<Conversation, InsertConversationError> {
        let store = self.clone();
        self.calls
            .write("conversations.insert", async move {
                let mut tx = begin_creating::<D>(store.calls.writer(), remember.as_ref()).await??;
                let stored = sqlx::query_as::<_, ConversationRow<D::Timestamp>>(INSERT)
                    .bind(record.id.as_uuid())
                    .bind(record.owner.as_uuid())
                    .bind(record.title.as_str())
                    .bind(Version::INITIAL.get())
                    .bind(D::Timestamp::from(record.created_at))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                tx.commit().await.map_err(D::port_error)?;
                Ok(stored.try_into()?)
            })
            .await
    }

    async fn find(&self, id: ConversationId) -> Result<Option<Conversation>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("conversations.find", async move {
                sqlx::query_as::<_, ConversationRow<D::Timestamp>>(FIND)
                    .bind(id.as_uuid())
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?
                    .map(Conversation::try_from)
                    .transpose()
            })
            .await
    }

    async fn list(&self, query: ConversationQuery) -> Result<ConversationPage, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("conversations.list", async move {
                let statement = match query.order {
                    ConversationOrder::Updated => LIST_BY_UPDATED,
                    ConversationOrder::Created => LIST_BY_CREATED,
                };
                let items =
                    sqlx::query_as::<_, SummaryRow<D::Timestamp>>(limited(statement, query.limit))
                        .bind(query.owner.as_uuid())
                        .bind(i64::from(query.offset))
                        .bind(last_message_chars())
                        .fetch_all(&pool)
                        .await
                        .map_err(D::port_error)?
                        .into_iter()
                        .map(ConversationSummary::try_from)
                        .collect::<Result<_, _>>()?;
                let total = sqlx::query_scalar::<_, i64>(COUNT)
                    .bind(query.owner.as_uuid())
                    .fetch_one(&pool)
                    .await
                    .map_err(D::port_error)?;
                Ok(ConversationPage {
                    items,
                    total: u64::try_from(total).map_err(PortError::unexpected)?,
                })
            })
            .await
    }

    async fn rename(
        &self,
        id: ConversationId,
        title: ConversationTitle,
        expected_version: Option<Version>,
        updated_at: Timestamp,
    ) -> Result<Conversation, WriteConversationError> {
        let store = self.clone();
        self.calls
            .write("conversations.rename", async move {
                let renamed = sqlx::query_as::<_, ConversationRow<D::Timestamp>>(RENAME)
                    .bind(id.as_uuid())
                    .bind(expected_version.map(Version::get))
                    .bind(title.as_str())
                    .bind(D::Timestamp::from(updated_at))
                    .fetch_optional(store.calls.writer())
                    .await
                    .map_err(D::port_error)?;
                match renamed {
                    Some(row) => Ok(row.try_into()?),
                    None => Err(store.refusal(id, expected_version).await),
                }
            })
            .await
    }

    async fn delete(
        &self,
        id: ConversationId,
        expected_version: Option<Version>,
    ) -> Result<(), WriteConversationError> {
        let store = self.clone();
        self.calls
            .write("conversations.delete", async move {
                let deleted = sqlx::query_scalar::<_, Uuid>(DELETE)
                    .bind(id.as_uuid())
                    .bind(expected_version.map(Version::get))
                    .fetch_optional(store.calls.writer())
                    .await
                    .map_err(D::port_error)?;
                match deleted {
                    Some(_) => Ok(()),
                    None => Err(store.refusal(id, expected_version).await),
                }
            })
            .await
    }

    async fn messages(&self, id: ConversationId) -> Result<Vec<Message>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("conversations.messages", async move {
                sqlx::query_as::<_, MessageRow<D::Timestamp>>(MESSAGES)
                    .bind(id.as_uuid())
                    .fetch_all(&pool)
                    .await
                    .map_err(D::port_error)?
                    .into_iter()
                    .map(Message::try_from)
                    .collect()
            })
            .await
    }

    async fn append_exchange(&self, exchange: NewExchange) -> Result<Conversation, AppendError> {
        let store = self.clone();
        self.calls
            .write("conversations.append_exchange", async move {
                let mut tx = store
                    .calls
                    .writer()
                    .begin_with(D::BEGIN_WRITE)
                    .await
                    .map_err(D::port_error)?;
                let conversation = exchange.message.conversation_id.as_uuid();
                // No owner: the conversation is gone, or its account (and the
                // conversation with it).
                let Some(owner) = lock_owner::<D>(&mut tx, OWNER_OF, conversation).await? else {
                    return Err(AppendError::NotFound);
                };
                store.append_locked(tx, owner, exchange).await
            })
            .await
    }

    async fn start(&self, opening: NewOpening) -> Result<Conversation, AppendError> {
        let store = self.clone();
        self.calls
            .write("conversations.start", async move {
                let NewOpening {
                    conversation: record,
                    exchange,
                    opening_key,
                    opening_key_since,
                } = opening;
                let owner = record.owner.as_uuid();
                let mut tx = store
                    .calls
                    .writer()
                    .begin_with(D::BEGIN_WRITE)
                    .await
                    .map_err(D::port_error)?;
                // The owner's lock also queues concurrent starts with one key: each
                // sees whether one before it took the key.
                if lock_owner::<D>(&mut tx, ACCOUNT, owner).await?.is_none() {
                    return Err(AppendError::NotFound);
                }
                if let Some(key) = opening_key.as_deref() {
                    sqlx::query(GIVE_UP_OPENING_KEY)
                        .bind(owner)
                        .bind(key)
                        .bind(D::Timestamp::from(opening_key_since))
                        .execute(&mut *tx)
                        .await
                        .map_err(D::port_error)?;
                    if let Some(started) = opened::<D>(&mut *tx, owner, key).await? {
                        return Err(started);
                    }
                }
                let inserted = sqlx::query(INSERT_OPENED)
                    .bind(record.id.as_uuid())
                    .bind(owner)
                    .bind(record.title.as_str())
                    .bind(Version::INITIAL.get())
                    .bind(D::Timestamp::from(record.created_at))
                    .bind(opening_key.as_deref())
                    .execute(&mut *tx)
                    .await;
                if let Err(error) = inserted {
                    drop(tx);
                    // Only if the lock did not queue the starts (it always does on
                    // the databases here): the key's holder has committed.
                    if let Some(key) = opening_key.as_deref()
                        && D::violates(&error, OPENING_KEY_KEY)
                        && let Some(started) = opened::<D>(store.calls.writer(), owner, key).await?
                    {
                        return Err(started);
                    }
                    return Err(D::port_error(error).into());
                }
                store.append_locked(tx, owner, exchange).await
            })
            .await
    }

    async fn save_reply(
        &self,
        conversation: ConversationId,
        reply: MessageId,
        update: ReplyUpdate,
    ) -> Result<bool, PortError> {
        let save = [ReplySave {
            conversation,
            reply,
            update,
        }];
        let store = self.clone();
        let saved = self
            .calls
            .write("conversations.save_reply", async move {
                store.save_batch(&save).await
            })
            .await?;
        Ok(saved == [true])
    }

    /// An empty batch asks nothing of the database.
    async fn save_replies(&self, saves: Vec<ReplySave>) -> Result<Vec<bool>, PortError> {
        if saves.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.clone();
        self.calls
            .write("conversations.save_replies", async move {
                store.save_batch(&saves).await
            })
            .await
    }

    async fn interrupt_abandoned(
        &self,
        written_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<InterruptedReply>, PortError> {
        let store = self.clone();
        self.calls
            .write("conversations.interrupt_abandoned", async move {
                let abandoned = sqlx::query_as::<_, (Uuid, String)>(ABANDONED)
                    .bind(D::Timestamp::from(written_before))
                    .fetch_all(store.calls.writer())
                    .await
                    .map_err(D::port_error)?;
                let mut interrupted = Vec::new();
                // One transaction per reply, locking its conversation first like
                // every other write of its messages; interrupting a reply is a
                // final status, so it bumps the conversation's version too.
                for (conversation, reply) in abandoned {
                    let mut tx = store
                        .calls
                        .writer()
                        .begin_with(D::BEGIN_WRITE)
                        .await
                        .map_err(D::port_error)?;
                    let touched = sqlx::query_as::<_, ConversationRow<D::Timestamp>>(TOUCH)
                        .bind(conversation)
                        .bind(D::Timestamp::from(now))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(D::port_error)?;
                    let Some(touched) = touched else {
                        continue;
                    };
                    // Written again, or ended, since it was found: left alone.
                    let changed = sqlx::query_scalar::<_, String>(INTERRUPT)
                        .bind(conversation)
                        .bind(reply.as_str())
                        .bind(D::Timestamp::from(now))
                        .bind(D::Timestamp::from(written_before))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(D::port_error)?;
                    if let Some(reply) = changed {
                        tx.commit().await.map_err(D::port_error)?;
                        interrupted.push(InterruptedReply {
                            conversation: ConversationId::from_uuid(conversation),
                            owner: AccountId::from_uuid(touched.owner_id),
                            reply: MessageId::parse(&reply).map_err(PortError::unexpected)?,
                        });
                    }
                }
                Ok(interrupted)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(conversation: u128, reply: &str) -> ReplySave {
        ReplySave {
            conversation: ConversationId::from_uuid(Uuid::from_u128(conversation)),
            reply: MessageId::parse(reply).unwrap(),
            update: ReplyUpdate {
                text: String::new(),
                status: waiter_domain::MessageStatus::InProgress,
                metadata: MessageMetadata::default(),
                updated_at: Timestamp::UNIX_EPOCH,
            },
        }
    }

    #[test]
    fn a_batch_is_written_in_key_order_each_repeat_a_round_later_in_batch_order() {
        let saves = [
            save(2, "msg_a"),
            save(1, "msg_b"),
            save(2, "msg_a"),
            save(1, "msg_a"),
            save(2, "msg_a"),
            save(1, "msg_b"),
        ];
        assert_eq!(rounds(&saves), vec![vec![3, 1, 0], vec![5, 2], vec![4]]);
        assert_eq!(rounds(&saves[..1]), vec![vec![0]]);
        assert!(rounds(&[]).is_empty());
    }

    #[test]
    fn absent_metadata_fields_are_omitted_and_read_back_as_absent() {
        assert_eq!(encode_metadata(&MessageMetadata::default()).unwrap(), "{}");
        let user = MessageMetadata {
            temperature: Some(0.7),
            ..MessageMetadata::default()
        };
        assert_eq!(encode_metadata(&user).unwrap(), r#"{"temperature":0.7}"#);
        assert_eq!(decode_metadata(r#"{"temperature":0.7}"#).unwrap(), user);
        assert_eq!(decode_metadata("{}").unwrap(), MessageMetadata::default());
    }

    #[test]
    fn full_metadata_round_trips_and_unknown_fields_are_ignored() {
        let reply = MessageMetadata {
            model_slug: Some("gpt-4o-mini".to_owned()),
            finish_reason: Some("stop".to_owned()),
            usage: Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 34,
                total_tokens: 46,
            }),
            temperature: Some(1.25),
            error: Some("the model is unavailable".to_owned()),
        };
        let json = encode_metadata(&reply).unwrap();
        assert_eq!(decode_metadata(&json).unwrap(), reply);
        let later = r#"{"model_slug":"m","citations":[1,2]}"#;
        assert_eq!(
            decode_metadata(later).unwrap().model_slug.as_deref(),
            Some("m")
        );
        assert!(decode_metadata("not json").is_err());
    }
}
