-- An idempotency key is now written in the transaction that creates its
-- resource, together with the response to replay, so a row always holds a
-- response: in-flight claims are kept in the memory of the instance running
-- the request instead, and vanish with it. Claims left by 0004 are dropped
-- (their requests either committed nothing or ran before this release).

DELETE FROM idempotency_keys WHERE claim IS NOT NULL;

ALTER TABLE idempotency_keys
    DROP COLUMN claim,
    ALTER COLUMN status SET NOT NULL,
    ALTER COLUMN headers SET NOT NULL,
    ALTER COLUMN body SET NOT NULL;
