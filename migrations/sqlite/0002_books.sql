-- The catalog: books, each owned by the account that created it.
--
-- Deleting an account deletes its books (ON DELETE CASCADE): a book has no
-- meaning without an owner who may change it, and an account's data leaves
-- with it.
--
-- Text compares with the default BINARY collation, the UTF-8 bytes, which
-- orders like code points: sorting by title gives the same order here, in
-- PostgreSQL (COLLATE "C") and in Rust.
--
-- Case-insensitive matching uses `title_folded` and `author_folded`: the
-- adapter's `str::to_lowercase` of the title and the author, written with
-- them, because SQLite's lower() folds ASCII only.
--
-- Dates are `YYYY-MM-DD` text, so comparing and sorting the text compares
-- and sorts the dates; instants are stored as in `0001_identity.sql`.

CREATE TABLE books (
    id             BLOB    PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    title          TEXT    NOT NULL,
    title_folded   TEXT    NOT NULL,
    author         TEXT    NOT NULL,
    author_folded  TEXT    NOT NULL,
    -- The adapter turns a violation of this constraint into `IsbnTaken`.
    isbn           TEXT    NOT NULL CONSTRAINT books_isbn_key UNIQUE
                           CHECK (length(isbn) = 13 AND isbn NOT GLOB '*[^0-9]*'),
    published_date TEXT    NOT NULL
                           CHECK (published_date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    price_cents    INTEGER NOT NULL CHECK (price_cents BETWEEN 1 AND 100000000),
    owner_id       BLOB    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version        INTEGER NOT NULL CHECK (version >= 1),
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
) STRICT;

-- One index per sort key, ending in the id that breaks ties, so every page
-- of every sort is a range scan from the cursor. The one on published_date
-- also serves the date bounds and `recent`.
CREATE INDEX books_published_date_id_idx ON books (published_date, id);
CREATE INDEX books_title_id_idx ON books (title, id);
CREATE INDEX books_price_cents_id_idx ON books (price_cents, id);
CREATE INDEX books_created_at_id_idx ON books (created_at, id);

-- The same per sort key within one author, for `author=` with any sort.
CREATE INDEX books_author_published_date_id_idx ON books (author_folded, published_date, id);
CREATE INDEX books_author_title_id_idx ON books (author_folded, title, id);
CREATE INDEX books_author_price_cents_id_idx ON books (author_folded, price_cents, id);
CREATE INDEX books_author_created_at_id_idx ON books (author_folded, created_at, id);

-- `q` (a substring of the title or the author) scans: SQLite has no
-- trigram index, and an embedded catalogue is small enough for that.

-- Serves the cascade from accounts.
CREATE INDEX books_owner_id_idx ON books (owner_id);
