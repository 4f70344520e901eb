//! Made-up but plausible books for filling a catalogue (`waiter seed`).
//!
//! The same seed gives the same books on every platform and release: the
//! generator is a splitmix64 written here, not `rand`'s `StdRng`, whose
//! output may change from one release to the next. Each book is derived from
//! its index (and, for its creation instant, the count) alone, so books do
//! not depend on the ones before them.
//!
//! Books come out in the order a catalogue would have gained them: creation
//! instants, and with them ids (whose time part is the creation instant) and
//! ISBNs, increase from one book to the next. Loading them in that order
//! appends to the primary key, the ISBN key and the `created_at` index instead
//! of writing all over them, which is most of what makes `waiter seed` fast;
//! the values themselves (titles, authors, dates, prices) are as varied as
//! ever. [`seed_books`] hands them to the catalog service, never to a store
//! directly, so the catalogue's cached views learn of them.

use std::sync::Arc;

use anyhow::Context as _;
use time::Duration;
use time::macros::date;
use ulid::Ulid;
use waiter_domain::{
    AccountId, Author, BookDraft, BookId, Date, Email, Isbn, Price, Timestamp, Title,
};
use waiter_ports::catalog::NewBookRecord;
use waiter_ports::clock::Clock;
use waiter_services::SystemClock;

use crate::config::{Config, SeedBooks};
use crate::{Database, Wiring};

/// The earliest publication date generated.
const FIRST_PUBLISHED: Date = date!(1900 - 01 - 01);

/// How far back creation instants reach: about three years, in milliseconds.
const CREATED_SPAN_MS: u64 = 3 * 365 * 24 * 60 * 60 * 1_000;

/// How many ISBN numbers there are below the `978` prefix and the check digit.
const ISBN_NUMBERS: u64 = 1_000_000_000;

const ADJECTIVES: [&str; 32] = [
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
    "Wild",
    "Secret",
    "Frozen",
    "Bitter",
    "Shattered",
    "Hollow",
    "Northern",
    "Ancient",
    "Restless",
    "Pale",
    "Savage",
    "Gentle",
    "Iron",
    "Midnight",
    "Scarlet",
    "Wandering",
    "Little",
    "Eternal",
    "Dark",
    "Bright",
];

const NOUNS: [&str; 40] = [
    "War",
    "Garden",
    "River",
    "Kingdom",
    "Shadow",
    "Empire",
    "Winter",
    "Harbour",
    "Sea",
    "Mountain",
    "House",
    "Crown",
    "Forest",
    "City",
    "Storm",
    "Daughter",
    "Son",
    "Queen",
    "King",
    "Stranger",
    "Letter",
    "Island",
    "Dream",
    "Night",
    "Road",
    "Bridge",
    "Fire",
    "Song",
    "Clock",
    "Mirror",
    "Orchard",
    "Lighthouse",
    "Station",
    "Library",
    "Widow",
    "Soldier",
    "Map",
    "Promise",
    "Silence",
    "Journey",
];

const PLACES: [&str; 16] = [
    "Paris",
    "Venice",
    "the North",
    "Samarkand",
    "Lisbon",
    "the Valley",
    "Kyoto",
    "the Desert",
    "Prague",
    "the Steppe",
    "Avalon",
    "Marrakesh",
    "the Moor",
    "Troy",
    "Vienna",
    "the Coast",
];

const FIRST_NAMES: [&str; 20] = [
    "Anna", "James", "Maria", "Olusegun", "Chen", "Sofia", "Henrik", "Amara", "Luis", "Yuki",
    "Elena", "Tomasz", "Priya", "Omar", "Claire", "Mateo", "Ingrid", "Kwame", "Fatima", "Émile",
];

const LAST_NAMES: [&str; 20] = [
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "García",
    "O'Brien",
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

/// `waiter seed books`: generates `args.count` books owned by the account
/// whose email is `args.owner` and imports them through the catalog, which
/// then makes its cached views stale; returns how many were stored.
///
/// The import locks the books until it is done (about half a minute for a
/// million on PostgreSQL): seed a catalogue nobody is using. Only a shared
/// cache (Redis) reaches running servers; with the in-process cache, a
/// running server's cached views catch up within their TTL.
pub async fn seed_books(config: &Config, args: &SeedBooks) -> anyhow::Result<u64> {
    let email = Email::parse(&args.owner).context("--owner")?;
    let database = Database::connect(config).await?;
    let owner = database
        .stores()
        .accounts
        .find_credentials_by_email(&email)
        .await?
        .with_context(|| {
            format!("no account has the email {email}; sign up or `waiter admin create` first")
        })?
        .account;
    let now = SystemClock.now();
    let wiring = Wiring::with_database(config, &database, Arc::new(SystemClock)).await?;
    let books = generate_books(args.count, owner.id, args.seed, now);
    tracing::info!(
        count = args.count,
        "seeding books; the catalogue is locked until they are all in"
    );
    Ok(wiring.catalog().import_books(Box::new(books)).await?)
}

/// `count` books of `owner`, the same ones for the same `seed`, oldest first.
///
/// ISBNs are consecutive numbers from a place that depends on the seed, so
/// they are distinct for the first billion indices, and ids for the first
/// 2³² (the index is part of each id): any number of books a catalogue could
/// hold is free of collisions. Publication dates fall between 1900 and
/// `now`'s date, more of them recent; prices from 1.00 to 199.99. Creation
/// instants spread evenly, each at a random point of its own slot, over the
/// three years before `now`, so they increase with the index, and the id's
/// time part equals them.
pub fn generate_books(
    count: usize,
    owner: AccountId,
    seed: u64,
    now: Timestamp,
) -> impl Iterator<Item = NewBookRecord> {
    // Whole milliseconds, the precision of a ULID's time part.
    let now = now - Duration::nanoseconds(i64::from(now.nanosecond() % 1_000_000));
    let isbn_offset = mix(seed) % ISBN_NUMBERS;
    let first_created = now - Duration::milliseconds(CREATED_SPAN_MS as i64);
    (0..count).map(move |index| {
        let index = index as u64;
        let mut random = SplitMix64(mix(seed ^ mix(index)));
        let created_at = first_created
            + Duration::milliseconds(created_offset_ms(index, count as u64, &mut random) as i64);
        let created_ms =
            u64::try_from(created_at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        // 48 random bits, then the index: unique even within one millisecond.
        let id_bits = (u128::from(random.next_u64() >> 16) << 32) | u128::from(index as u32);
        NewBookRecord {
            id: BookId::from_ulid(Ulid::from_parts(created_ms, id_bits)),
            draft: BookDraft {
                title: Title::parse(&title(&mut random))
                    .expect("titles from the word lists are short and printable"),
                author: Author::parse(&author(&mut random))
                    .expect("author names from the lists are short and printable"),
                isbn: isbn(isbn_offset + index),
                published_date: published_date(&mut random, now.date()),
                price: Price::from_cents(price_cents(&mut random))
                    .expect("generated prices are between 1.00 and 199.99"),
            },
            owner,
            created_at,
        }
    })
}

/// How long after the start of the creation span book `index` of `count`
/// was created: a random point of its slot, the `index`th of `count` equal
/// parts of the span, so that later books are never created earlier.
fn created_offset_ms(index: u64, count: u64, random: &mut SplitMix64) -> u64 {
    let slot_start = |index: u64| {
        let start = u128::from(index) * u128::from(CREATED_SPAN_MS) / u128::from(count.max(1));
        u64::try_from(start).unwrap_or(CREATED_SPAN_MS)
    };
    let (start, end) = (slot_start(index), slot_start(index + 1));
    start + random.below((end - start).max(1))
}

/// A title in one of several common shapes.
fn title(random: &mut SplitMix64) -> String {
    let adjective = random.pick(&ADJECTIVES);
    let noun = random.pick(&NOUNS);
    let other = random.pick(&NOUNS);
    let place = random.pick(&PLACES);
    match random.below(8) {
        0 => format!("The {adjective} {noun}"),
        1 => format!("{noun} of {place}"),
        2 => format!("The {noun} and the {other}"),
        3 => format!("A {noun} in {place}"),
        4 => format!("{adjective} {noun}s"),
        5 => format!("The {noun} of the {adjective} {other}"),
        6 => noun.to_owned(),
        _ => format!("The Last {noun} of {place}"),
    }
}

/// One of the 400 combinations of a first and a last name.
fn author(random: &mut SplitMix64) -> String {
    format!("{} {}", random.pick(&FIRST_NAMES), random.pick(&LAST_NAMES))
}

/// The ISBN-13 `978` + the nine digits of `n` modulo 10⁹ + the check digit.
fn isbn(n: u64) -> Isbn {
    let digits: Vec<u32> = format!("978{:09}", n % ISBN_NUMBERS)
        .chars()
        .filter_map(|c| c.to_digit(10))
        .collect();
    let sum: u32 = digits
        .iter()
        .zip([1, 3].into_iter().cycle())
        .map(|(digit, weight)| digit * weight)
        .sum();
    let text: String = digits
        .iter()
        .chain(&[(10 - sum % 10) % 10])
        .filter_map(|digit| char::from_digit(*digit, 10))
        .collect();
    Isbn::parse(&text).expect("twelve digits and their check digit are an ISBN-13")
}

/// A day from 1900 to `today`, the later of two uniform draws so that recent
/// years have more books, as real catalogues do.
fn published_date(random: &mut SplitMix64, today: Date) -> Date {
    let span = u64::try_from((today - FIRST_PUBLISHED).whole_days()).unwrap_or(0);
    let days = random.below(span + 1).max(random.below(span + 1));
    FIRST_PUBLISHED + Duration::days(days as i64)
}

/// Mostly between 5 and 30 units, sometimes up to 199, with the usual endings.
fn price_cents(random: &mut SplitMix64) -> i64 {
    let units = match random.below(10) {
        0 => 1 + random.below(5),
        1..=7 => 5 + random.below(26),
        _ => 30 + random.below(170),
    };
    let cents = match random.below(5) {
        0 => 0,
        1 => 50,
        2 => 95,
        3 => 99,
        _ => random.below(100),
    };
    (units * 100 + cents) as i64
}

/// The splitmix64 finaliser: spreads every bit of `x` over the result.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// splitmix64 (Steele, Lea and Flood, 2014): tiny, fast and statistically
/// good enough for test data; not for anything secret.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..bound` (`bound` > 0), with a negligible bias for small bounds.
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use time::macros::datetime;

    use super::*;

    const NOW: Timestamp = datetime!(2026-11-21 09:30:00.123_456_789 UTC);

    fn owner() -> AccountId {
        AccountId::from_ulid(Ulid::from(42_u128))
    }

    #[test]
    fn a_hundred_thousand_books_are_distinct_valid_and_in_range() {
        let books: Vec<NewBookRecord> = generate_books(100_000, owner(), 7, NOW).collect();
        assert_eq!(books.len(), 100_000);

        let ids: HashSet<BookId> = books.iter().map(|book| book.id).collect();
        assert_eq!(ids.len(), books.len(), "ids are unique");
        let isbns: HashSet<&str> = books.iter().map(|book| book.draft.isbn.as_str()).collect();
        assert_eq!(isbns.len(), books.len(), "ISBNs are unique");

        let earliest_created = NOW - Duration::days(3 * 365 + 1);
        for book in &books {
            let draft = &book.draft;
            assert_eq!(Isbn::parse(draft.isbn.as_str()).as_ref(), Ok(&draft.isbn));
            assert!(draft.published_date >= FIRST_PUBLISHED);
            assert!(
                draft.published_date <= NOW.date(),
                "{draft:?} is not in the future"
            );
            assert!((100..=20_000).contains(&draft.price.cents()), "{draft:?}");
            assert!(book.created_at <= NOW && book.created_at > earliest_created);
            assert_eq!(
                book.created_at.nanosecond() % 1_000_000,
                0,
                "whole milliseconds"
            );
            let created_ms = (book.created_at.unix_timestamp_nanos() / 1_000_000) as u64;
            assert_eq!(book.id.ulid().timestamp_ms(), created_ms);
            assert_eq!(book.owner, owner());
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_books_and_another_seed_others() {
        let drafts = |seed| -> Vec<(BookId, BookDraft, Timestamp)> {
            generate_books(1_000, owner(), seed, NOW)
                .map(|book| (book.id, book.draft, book.created_at))
                .collect()
        };
        assert_eq!(drafts(1), drafts(1));
        let (first, second) = (drafts(1), drafts(2));
        let same = first
            .iter()
            .zip(&second)
            .filter(|(a, b)| a.1 == b.1)
            .count();
        assert_eq!(same, 0, "different seeds give different books");
    }

    #[test]
    fn isbns_are_check_digited_and_wrap_at_a_billion() {
        assert_eq!(isbn(30_640_615).as_str(), "9780306406157");
        assert_eq!(isbn(ISBN_NUMBERS + 30_640_615).as_str(), "9780306406157");
    }

    #[test]
    fn books_come_oldest_first_with_increasing_ids_and_isbns() {
        // Seed 11 numbers its ISBNs from far enough below 10⁹ not to wrap here.
        assert!(mix(11) % ISBN_NUMBERS < ISBN_NUMBERS - 100_000);
        let books: Vec<NewBookRecord> = generate_books(100_000, owner(), 11, NOW).collect();
        for pair in books.windows(2) {
            assert!(pair[0].created_at < pair[1].created_at, "{pair:?}");
            assert!(pair[0].id < pair[1].id, "{pair:?}");
            assert!(pair[0].draft.isbn.as_str() < pair[1].draft.isbn.as_str());
        }
        let span = books[books.len() - 1].created_at - books[0].created_at;
        assert!(
            span > Duration::days(3 * 365 - 1),
            "spread over three years"
        );

        // However many books there are, they are created within the span.
        for count in [1, 2, 7] {
            let books: Vec<NewBookRecord> = generate_books(count, owner(), 11, NOW).collect();
            assert!(books.windows(2).all(|pair| pair[0].id < pair[1].id));
            assert!(books.iter().all(|book| book.created_at <= NOW));
        }
    }

    #[test]
    fn authors_repeat_so_filters_return_many_but_not_all() {
        let mut per_author: HashMap<String, usize> = HashMap::new();
        for book in generate_books(20_000, owner(), 3, NOW) {
            *per_author
                .entry(book.draft.author.as_str().to_owned())
                .or_default() += 1;
        }
        assert!(
            (300..=400).contains(&per_author.len()),
            "{} authors",
            per_author.len()
        );
        let most = per_author.values().max().copied().unwrap_or_default();
        assert!(
            most < 200,
            "no author has more than 1% of the books ({most})"
        );
    }

    #[test]
    fn titles_vary_and_some_mention_war() {
        let titles: Vec<String> = generate_books(10_000, owner(), 5, NOW)
            .map(|book| book.draft.title.as_str().to_owned())
            .collect();
        let distinct: HashSet<&String> = titles.iter().collect();
        assert!(distinct.len() > 5_000, "{} distinct titles", distinct.len());
        let war = titles.iter().filter(|title| title.contains("War")).count();
        assert!((100..2_000).contains(&war), "{war} titles mention War");
    }
}
