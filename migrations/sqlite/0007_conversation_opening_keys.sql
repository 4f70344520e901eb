-- What tells a retried first send from a new one: a conversation started by
-- a send remembers the send's opening key (from its retry key, or its
-- message id and text), so the retry finds it instead of starting another.
-- An owner's conversations hold a key at most once, whatever the race; a
-- key older than the retry window is given up (set to NULL) when reused.

ALTER TABLE conversations ADD COLUMN opening_key TEXT;

-- Keeps the key once per owner and serves finding it.
CREATE UNIQUE INDEX conversations_owner_id_opening_key_key
    ON conversations (owner_id, opening_key) WHERE opening_key IS NOT NULL;
