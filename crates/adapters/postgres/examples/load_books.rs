//! Loads made-up books into PostgreSQL through `BookStore::bulk_insert` (or,
//! given a batch size, `BookStore::insert_batch`) and reports how long it
//! took: the measure behind the adapter's bulk path.
//!
//! ```text
//! createdb -h 127.0.0.1 -U postgres waiter_bench_books
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/waiter_bench_books \
//!     cargo run --release -p waiter-postgres --example load_books -- 1000000
//! ```
//!
//! Arguments: how many books (default 1 000 000) and, to insert batch by
//! batch with every index kept up to date instead, the batch size. The
//! database is migrated first and the books get a new owner. Books come
//! oldest first with increasing ISBNs, as `waiter seed` makes them.
//! Then it times a few lists through the adapter, each run ten times, since
//! a statement's plan may change after its fifth run.
//! The generator is deliberately simple; the server's `seed` module makes
//! nicer books.

use std::time::Instant;

use uuid::Uuid;
use waiter_contracts::accounts::insert_account;
use waiter_contracts::books::isbn;
use waiter_domain::{AccountId, Author, BookDraft, BookId, Date, Price, Timestamp, Title};
use waiter_ports::catalog::{BookFilter, BookQuery, BookSort, BookStore, NewBookRecord};
use waiter_postgres::PostgresDatabase;

const ADJECTIVES: [&str; 12] = [
    "Silent",
    "Broken",
    "Golden",
    "Hidden",
    "Last",
    "Lost",
    "Burning",
    "Distant",
    "Crimson",
    "Forgotten",
    "Quiet",
    "Endless",
];
const NOUNS: [&str; 12] = [
    "War", "Garden", "River", "Kingdom", "Shadow", "Empire", "Winter", "Harbour", "Sea",
    "Mountain", "House", "Crown",
];
const FIRST_NAMES: [&str; 15] = [
    "Anna", "James", "Maria", "Chen", "Sofia", "Henrik", "Amara", "Luis", "Yuki", "Elena",
    "Tomasz", "Priya", "Omar", "Claire", "Mateo",
];
const LAST_NAMES: [&str; 20] = [
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "García",
    "Brien",
    "Novak",
    "Haddad",
    "Rossi",
    "Kowalski",
    "Mensah",
    "Fischer",
    "Iyer",
    "Dubois",
    "Petrova",
    "Walsh",
    "Sato",
    "Nakamura",
    "Herbert",
    "Tolstoy",
];
/// One book in this many gets a word found nowhere else, for a rare-word search.
const RARE_EVERY: u64 = 10_000;
/// The Julian day of 1900-01-01; dates run from it for about 125 years.
const JULIAN_1900: i32 = 2_415_021;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |arg| arg.parse())?;
    let batch: Option<u64> = args.next().map(|arg| arg.parse()).transpose()?;
    let url = std::env::var("DATABASE_URL")?;

    let database = PostgresDatabase::connect(&url).await?;
    database.migrate().await?;
    let owner = insert_account(&database.accounts()).await.id;
    let books = database.books();
    let now = Timestamp::now_utc();

    let started = Instant::now();
    let mut stored = 0;
    if let Some(batch) = batch {
        for first in (0..count).step_by(usize::try_from(batch)?) {
            let records = (first..count.min(first + batch))
                .map(|index| book(index, count, owner, now))
                .collect::<anyhow::Result<Vec<_>>>()?;
            stored += books.insert_batch(records).await?;
        }
    } else {
        let records = (0..count)
            .map(|index| book(index, count, owner, now))
            .collect::<anyhow::Result<Vec<_>>>()?;
        stored = books.bulk_insert(Box::new(records.into_iter())).await?;
    }
    let elapsed = started.elapsed();
    let how = batch.map_or("in bulk".to_owned(), |batch| {
        format!("in batches of {batch}")
    });
    println!(
        "stored {stored} of {count} books {how} in {:.1} s ({:.0} books/s)",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64()
    );
    time_lists(&books).await?;
    database.close().await;
    Ok(())
}

/// Prints the fastest and the slowest of ten runs of some lists: a rare and a common `q`
/// and an author, each with the default sort.
async fn time_lists(books: &dyn BookStore) -> anyhow::Result<()> {
    let cases = [
        (
            "q=zephyrine",
            BookFilter {
                q: Some("zephyrine".to_owned()),
                ..BookFilter::default()
            },
        ),
        (
            "q=war",
            BookFilter {
                q: Some("war".to_owned()),
                ..BookFilter::default()
            },
        ),
        (
            "q=nowhere",
            BookFilter {
                q: Some("nowhere".to_owned()),
                ..BookFilter::default()
            },
        ),
        (
            "author=Sofia Tanaka",
            BookFilter {
                author: Some("Sofia Tanaka".to_owned()),
                ..BookFilter::default()
            },
        ),
    ];
    for (name, filter) in cases {
        let (mut fastest, mut slowest) = (std::time::Duration::MAX, std::time::Duration::ZERO);
        for _ in 0..10 {
            let query = BookQuery {
                filter: filter.clone(),
                sort: BookSort::default(),
                after: None,
                limit: 21,
            };
            let started = Instant::now();
            books.list(query).await?;
            fastest = fastest.min(started.elapsed());
            slowest = slowest.max(started.elapsed());
        }
        println!(
            "{name}: {:.2} ms to {:.2} ms over 10 runs",
            fastest.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// The book at `index` of `count`: every field a different hash of the
/// index, except that creation instants (and so ids) and ISBNs increase with it.
fn book(index: u64, count: u64, owner: AccountId, now: Timestamp) -> anyhow::Result<NewBookRecord> {
    let hash = |salt: u64| mix(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt);
    let pick = |words: &[&'static str], salt| words[(hash(salt) % words.len() as u64) as usize];
    let rare = if index.is_multiple_of(RARE_EVERY) {
        " Zephyrine"
    } else {
        ""
    };
    let title = format!("The {} {}{rare}", pick(&ADJECTIVES, 1), pick(&NOUNS, 2));
    let author = format!("{} {}", pick(&FIRST_NAMES, 3), pick(&LAST_NAMES, 4));
    // Spread over the three years back, in whole milliseconds like a ULID.
    let now_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000)?;
    let span_ms: u64 = 3 * 365 * 86_400_000;
    let created_ms = now_ms - span_ms + index * (span_ms / count.max(1));
    let id_bits =
        (u128::from(created_ms) << 80) | u128::from(hash(6) >> 16) << 32 | u128::from(index as u32);
    let days = i32::try_from(hash(7) % (125 * 365))?;
    Ok(NewBookRecord {
        id: BookId::from_uuid(Uuid::from_u128(id_bits)),
        draft: BookDraft {
            title: Title::parse(&title)?,
            author: Author::parse(&author)?,
            isbn: isbn(index),
            published_date: Date::from_julian_day(JULIAN_1900 + days)?,
            price: Price::from_cents(100 + i64::try_from(hash(8) % 19_900)?)?,
        },
        owner,
        created_at: Timestamp::from_unix_timestamp_nanos(i128::from(created_ms) * 1_000_000)?,
    })
}

/// The splitmix64 finaliser.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
