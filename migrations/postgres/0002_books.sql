-- The catalog: books, each owned by the account that created it.
--
-- Deleting an account deletes its books (ON DELETE CASCADE): a book has no
-- meaning without an owner who may change it, and an account's data leaves
-- with it.
--
-- Text comparisons are by code point everywhere (COLLATE "C" compares the
-- UTF-8 bytes, which orders like code points), so sorting by title gives the
-- same order here, in SQLite and in Rust.
--
-- Case-insensitive matching uses `title_folded` and `author_folded`: the
-- adapter's `str::to_lowercase` of the title and the author, written with
-- them. Folding in Rust rather than with lower() makes the comparison
-- identical in every store (lower() is ASCII-only in SQLite and under
-- COLLATE "C", and locale-dependent otherwise), and lets plain indexes serve it.

-- Trigram indexes serve `q`, a substring search; pg_trgm is a trusted
-- extension, so a database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE books (
    id             uuid        PRIMARY KEY,
    title          text        COLLATE "C" NOT NULL,
    title_folded   text        COLLATE "C" NOT NULL,
    author         text        COLLATE "C" NOT NULL,
    author_folded  text        COLLATE "C" NOT NULL,
    isbn           text        NOT NULL,
    published_date date        NOT NULL,
    price_cents    bigint      NOT NULL,
    owner_id       uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version        bigint      NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- The adapter turns a violation of this constraint into `IsbnTaken`.
    CONSTRAINT books_isbn_key UNIQUE (isbn),
    CONSTRAINT books_isbn_check CHECK (isbn ~ '^[0-9]{13}$'),
    CONSTRAINT books_price_cents_check CHECK (price_cents BETWEEN 1 AND 100000000),
    CONSTRAINT books_version_check CHECK (version >= 1)
);

-- `BookStore::bulk_insert` (`waiter seed`) drops every index below and
-- recreates it from PostgreSQL's own definition after loading, so an index
-- added here needs no change there; the primary key and the ISBN constraint
-- stay throughout.

-- One index per sort key, ending in the id that breaks ties, so every page
-- of every sort is a range scan (forwards or backwards) from the cursor.
-- The one on published_date also serves the date bounds and `recent`.
CREATE INDEX books_published_date_id_idx ON books (published_date, id);
CREATE INDEX books_title_id_idx ON books (title, id);
CREATE INDEX books_price_cents_id_idx ON books (price_cents, id);
CREATE INDEX books_created_at_id_idx ON books (created_at, id);

-- The same per sort key within one author, for `author=` with any sort.
CREATE INDEX books_author_published_date_id_idx ON books (author_folded, published_date, id);
CREATE INDEX books_author_title_id_idx ON books (author_folded, title, id);
CREATE INDEX books_author_price_cents_id_idx ON books (author_folded, price_cents, id);
CREATE INDEX books_author_created_at_id_idx ON books (author_folded, created_at, id);

-- Serve `q`: `title_folded LIKE '%…%' OR author_folded LIKE '%…%'` becomes
-- a BitmapOr of the two (for queries of three characters or more).
CREATE INDEX books_title_folded_trgm_idx ON books USING gin (title_folded gin_trgm_ops);
CREATE INDEX books_author_folded_trgm_idx ON books USING gin (author_folded gin_trgm_ops);

-- Serves the cascade from accounts.
CREATE INDEX books_owner_id_idx ON books (owner_id);
