-- Idempotency keys of creating requests: a claim while the first request
-- runs, then its response, replayed to retries until `expires_at`. Kept in
-- the database, so a restart never lets a retry run twice. `key` is already
-- scoped to its caller (`account:…|<key>`).

CREATE TABLE idempotency_keys (
    key         TEXT    PRIMARY KEY NOT NULL,
    fingerprint BLOB    NOT NULL CHECK (length(fingerprint) = 32),
    -- The holder's claim token while in flight; NULL once completed.
    claim       TEXT,
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    expires_at  TEXT    NOT NULL,
    CHECK ((claim IS NULL) = (status IS NOT NULL AND headers IS NOT NULL AND body IS NOT NULL))
) STRICT;

CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
