-- Identity: accounts, their sign-in sessions, and the digests of the
-- sessions' refresh tokens. Ids are ULIDs stored as 16-byte UUID blobs, so
-- ordering by id is ordering by creation time.
--
-- Timestamps are UTC text with exactly six fractional digits
-- (`2026-11-21T09:30:00.123456Z`): fixed width, so comparing and sorting
-- the text compares and sorts the instants.

CREATE TABLE accounts (
    id            BLOB    PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    -- The adapter turns a violation of this constraint into `EmailTaken`.
    email         TEXT    NOT NULL CONSTRAINT accounts_email_key UNIQUE,
    display_name  TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('member', 'admin')),
    password_hash TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
) STRICT;

CREATE TABLE sessions (
    id           BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    account_id   BLOB NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    refreshed_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL
) STRICT;

-- Serves listing an account's sessions newest first, and the cascade from accounts.
CREATE INDEX sessions_account_id_created_at_idx ON sessions (account_id, created_at);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash BLOB PRIMARY KEY NOT NULL CHECK (length(token_hash) = 32),
    session_id BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- Set when the token is rotated away; presenting it again is a replay.
    used_at    TEXT
) STRICT;

-- Serves the cascade from sessions.
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
