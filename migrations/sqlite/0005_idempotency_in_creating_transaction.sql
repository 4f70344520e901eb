-- An idempotency key is now written in the transaction that creates its
-- resource, together with the response to replay, so a row always holds a
-- response: in-flight claims are kept in the memory of the instance running
-- the request instead, and vanish with it. Claims left by 0004 are dropped
-- (their requests either committed nothing or ran before this release).
-- SQLite cannot add NOT NULL to a column, so the table is rebuilt.

CREATE TABLE idempotency_keys_0005 (
    key         TEXT    PRIMARY KEY NOT NULL,
    fingerprint BLOB    NOT NULL CHECK (length(fingerprint) = 32),
    status      INTEGER NOT NULL,
    headers     TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    expires_at  TEXT    NOT NULL
) STRICT;

INSERT INTO idempotency_keys_0005 (key, fingerprint, status, headers, body, expires_at)
SELECT key, fingerprint, status, headers, body, expires_at
FROM idempotency_keys
WHERE claim IS NULL;

DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_0005 RENAME TO idempotency_keys;

CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
