-- Conversations with the assistant and their messages, each conversation
-- owned by the account that started it. Ids of conversations and accounts
-- are 16-byte UUID blobs and instants fixed-width UTC text, as in 0001.
--
-- Deleting an account deletes its conversations, and deleting a
-- conversation its messages (ON DELETE CASCADE).
--
-- The database itself keeps the rules that concurrent requests race on: a
-- message id and a retry key are used once per conversation (a second send
-- is a retry, `AlreadySent`), and at most one reply per conversation is in
-- progress (`ReplyInFlight`). SQLite reports a violation by its columns,
-- which the adapter turns into those errors.

CREATE TABLE conversations (
    id         BLOB    PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    owner_id   BLOB    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    title      TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;

-- Serve an owner's list in either order, ties broken by id, newest first;
-- the first also serves the cascade from accounts and counting an owner's
-- conversations.
CREATE INDEX conversations_owner_id_updated_at_id_idx
    ON conversations (owner_id, updated_at DESC, id DESC);
CREATE INDEX conversations_owner_id_created_at_id_idx
    ON conversations (owner_id, created_at DESC, id DESC);

CREATE TABLE messages (
    conversation_id BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- Chosen by the client or the server, unique within the conversation only.
    id              TEXT    NOT NULL,
    -- The order messages were appended in, from 1 within each conversation.
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    role            TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    text            TEXT    NOT NULL,
    status          TEXT    NOT NULL
                            CHECK (status IN ('in_progress', 'finished_successfully',
                                              'interrupted', 'failed')),
    parent_id       TEXT,
    -- `MessageMetadata` as a JSON object, absent fields omitted.
    metadata        TEXT    NOT NULL,
    -- The idempotency key a user message was sent with, if any.
    retry_key       TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    -- The adapter turns a violation of this key into `AlreadySent`.
    PRIMARY KEY (conversation_id, id),
    -- Serves reading the messages in order and the newest one.
    UNIQUE (conversation_id, seq)
) STRICT;

-- The adapter turns a violation of this index into `AlreadySent`.
CREATE UNIQUE INDEX messages_conversation_id_retry_key_key
    ON messages (conversation_id, retry_key) WHERE retry_key IS NOT NULL;

-- At most one reply in progress per conversation, whatever the race; the
-- adapter turns a violation into `ReplyInFlight`. Also serves finding the
-- replies in progress.
CREATE UNIQUE INDEX messages_one_in_progress_key
    ON messages (conversation_id) WHERE status = 'in_progress';

-- Serves finding replies abandoned in progress.
CREATE INDEX messages_in_progress_updated_at_idx
    ON messages (updated_at) WHERE status = 'in_progress';
