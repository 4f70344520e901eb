-- Revocations: ended sessions whose access tokens may still be unexpired.
-- A row is written in the transaction that deletes its session, so the
-- database alone knows every token that must be refused; the server keeps a
-- copy in memory. A row goes once `revoked_until` (its last token's expiry)
-- has passed. Timestamps are fixed-width UTC text, as in 0001.

CREATE TABLE session_revocations (
    session_id    BLOB PRIMARY KEY NOT NULL CHECK (length(session_id) = 16),
    revoked_at    TEXT NOT NULL,
    revoked_until TEXT NOT NULL
) STRICT;

CREATE INDEX session_revocations_revoked_at_idx ON session_revocations (revoked_at);
CREATE INDEX session_revocations_revoked_until_idx ON session_revocations (revoked_until);
