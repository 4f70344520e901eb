-- Revocations: ended sessions whose access tokens may still be unexpired.
-- A row is written in the transaction that deletes its session, so the
-- database alone knows every token that must be refused; each instance
-- keeps a copy in memory and reads what is new every second. A row goes
-- once `revoked_until` (its last token's expiry) has passed.

CREATE TABLE session_revocations (
    session_id    UUID        PRIMARY KEY,
    revoked_at    TIMESTAMPTZ NOT NULL,
    revoked_until TIMESTAMPTZ NOT NULL
);

-- Serves the instances' "what is new since" reads.
CREATE INDEX session_revocations_revoked_at_idx ON session_revocations (revoked_at);
-- Serves pruning what has lapsed.
CREATE INDEX session_revocations_revoked_until_idx ON session_revocations (revoked_until);
