-- Identity: accounts, their sign-in sessions, and the digests of the
-- sessions' refresh tokens. Ids are ULIDs stored as UUIDs, so ordering by id
-- is ordering by creation time.

CREATE TABLE accounts (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    role          text        NOT NULL,
    password_hash text        NOT NULL,
    version       bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- The adapter turns a violation of this constraint into `EmailTaken`.
    CONSTRAINT accounts_email_key UNIQUE (email),
    CONSTRAINT accounts_role_check CHECK (role IN ('member', 'admin')),
    CONSTRAINT accounts_version_check CHECK (version >= 1)
);

CREATE TABLE sessions (
    id           uuid        PRIMARY KEY,
    account_id   uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- Serves listing an account's sessions newest first, and the cascade from accounts.
CREATE INDEX sessions_account_id_created_at_idx ON sessions (account_id, created_at);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- Set when the token is rotated away; presenting it again is a replay.
    used_at    timestamptz,
    CONSTRAINT refresh_tokens_token_hash_check CHECK (octet_length(token_hash) = 32)
);

-- Serves the cascade from sessions.
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
