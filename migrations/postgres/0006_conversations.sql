-- Conversations with the assistant and their messages, each conversation
-- owned by the account that started it.
--
-- Deleting an account deletes its conversations, and deleting a
-- conversation its messages (ON DELETE CASCADE).
--
-- The database itself keeps the rules that concurrent requests race on: a
-- message id and a retry key are used once per conversation (a second send
-- is a retry, `AlreadySent`), and at most one reply per conversation is in
-- progress (`ReplyInFlight`). The adapter turns violations of the
-- constraints named below into those errors.

CREATE TABLE conversations (
    id         uuid        PRIMARY KEY,
    owner_id   uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    title      text        NOT NULL,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT conversations_version_check CHECK (version >= 1)
);

-- Serve an owner's list in either order, ties broken by id, newest first;
-- the first also serves the cascade from accounts and counting an owner's
-- conversations.
CREATE INDEX conversations_owner_id_updated_at_id_idx
    ON conversations (owner_id, updated_at DESC, id DESC);
CREATE INDEX conversations_owner_id_created_at_id_idx
    ON conversations (owner_id, created_at DESC, id DESC);

CREATE TABLE messages (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- Chosen by the client or the server, unique within the conversation only.
    id              text        NOT NULL,
    -- The order messages were appended in, from 1 within each conversation.
    seq             bigint      NOT NULL,
    role            text        NOT NULL,
    text            text        NOT NULL,
    status          text        NOT NULL,
    parent_id       text,
    -- `MessageMetadata` as a JSON object, absent fields omitted.
    metadata        text        NOT NULL,
    -- The idempotency key a user message was sent with, if any.
    retry_key       text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- The adapter turns a violation of this constraint into `AlreadySent`.
    CONSTRAINT messages_pkey PRIMARY KEY (conversation_id, id),
    -- Serves reading the messages in order and the newest one.
    CONSTRAINT messages_conversation_id_seq_key UNIQUE (conversation_id, seq),
    CONSTRAINT messages_seq_check CHECK (seq >= 1),
    CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant')),
    CONSTRAINT messages_status_check
        CHECK (status IN ('in_progress', 'finished_successfully', 'interrupted', 'failed'))
);

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
