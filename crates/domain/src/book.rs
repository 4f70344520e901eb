//! Books in the catalog, and the rules for their fields.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use thiserror::Error;

use crate::id::prefixed_id;
use crate::{AccountId, Timestamp, ValidationErrors, Version};

/// A calendar date, as books are published on.
pub type Date = time::Date;

prefixed_id!(
    /// Identifies a book: `book_` followed by a ULID.
    BookId,
    "book"
);

/// Why a string is not an acceptable book text field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// Nothing is left after trimming.
    #[error("must not be empty")]
    Empty,
    /// Longer than the field allows after trimming.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The field's limit, in characters, so the message can state it.
        max: usize,
    },
    /// A control character, which could forge lines in logs or break layouts.
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// Trims `raw` and checks it is 1..=`max` characters with no control characters.
pub(crate) fn bounded_text(raw: &str, max: usize) -> Result<String, TextError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    if trimmed.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    Ok(trimmed.to_owned())
}

macro_rules! bounded_text_type {
    ($(#[$meta:meta])* $name:ident, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The longest value, in characters after trimming.
            pub const MAX_CHARS: usize = $max;

            /// Trims `raw` and checks its length and characters.
            pub fn parse(raw: &str) -> Result<Self, TextError> {
                bounded_text(raw, Self::MAX_CHARS).map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

bounded_text_type!(
    /// A book's title: 1 to 200 characters after trimming.
    Title,
    200
);

bounded_text_type!(
    /// A book's author: 1 to 100 characters after trimming.
    Author,
    100
);

/// An ISBN-13 with a valid check digit, stored as its 13 digits.
///
/// An ISBN-10 is accepted and converted (prefix `978`, new check digit), so
/// one book has one ISBN however it was entered.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Isbn(String);

/// Why a string is not an ISBN.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IsbnError {
    /// Not 13 or 10 digits (an ISBN-10 may end in `X`) once separators are removed.
    #[error("must be an ISBN-13 or ISBN-10 (digits, optionally separated by hyphens or spaces)")]
    Malformed,
    /// The digits are well formed but the check digit does not match: most
    /// likely a typo, which is why it is reported apart from `Malformed`.
    #[error("has a wrong check digit")]
    CheckDigit,
}

impl Isbn {
    /// Parses an ISBN-13 or ISBN-10, ignoring hyphens and spaces.
    pub fn parse(raw: &str) -> Result<Self, IsbnError> {
        let compact: Vec<char> = raw.chars().filter(|c| *c != '-' && *c != ' ').collect();
        match compact.len() {
            13 => Self::from_isbn13(&compact),
            10 => Self::from_isbn10(&compact),
            _ => Err(IsbnError::Malformed),
        }
    }

    fn from_isbn13(chars: &[char]) -> Result<Self, IsbnError> {
        let digits = chars
            .iter()
            .map(|c| c.to_digit(10))
            .collect::<Option<Vec<u32>>>()
            .ok_or(IsbnError::Malformed)?;
        if isbn13_check_digit(&digits[..12]) != digits[12] {
            return Err(IsbnError::CheckDigit);
        }
        Ok(Self(chars.iter().collect()))
    }

    fn from_isbn10(chars: &[char]) -> Result<Self, IsbnError> {
        let mut digits = chars[..9]
            .iter()
            .map(|c| c.to_digit(10))
            .collect::<Option<Vec<u32>>>()
            .ok_or(IsbnError::Malformed)?;
        let check = match chars[9] {
            'X' | 'x' => 10,
            c => c.to_digit(10).ok_or(IsbnError::Malformed)?,
        };
        let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        if !(sum + check).is_multiple_of(11) {
            return Err(IsbnError::CheckDigit);
        }
        digits.splice(0..0, [9, 7, 8]);
        let last = isbn13_check_digit(&digits);
        digits.push(last);
        Ok(Self(
            digits
                .iter()
                .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
                .collect(),
        ))
    }

    /// The 13 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The ISBN-13 check digit of its first twelve digits.
fn isbn13_check_digit(first_twelve: &[u32]) -> u32 {
    let sum: u32 = first_twelve
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    (10 - sum % 10) % 10
}

impl fmt::Display for Isbn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Isbn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Isbn({})", self.0)
    }
}

/// A price: an exact decimal, greater than zero, at most 1 000 000, with at
/// most two decimal places. Stored as whole cents, so no floating point is
/// ever involved.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(i64);

/// Why a number is not a price.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PriceError {
    /// Zero or negative: a book is never free or paid for.
    #[error("must be greater than zero")]
    NotPositive,
    /// Above 1 000 000 ([`Price::MAX_CENTS`]), most likely a typo.
    #[error("must be at most 1000000")]
    TooLarge,
    /// Fractions of a cent, which would have to be rounded away silently.
    #[error("must have at most two decimal places")]
    TooPrecise,
}

impl Price {
    /// The highest price, in cents.
    pub const MAX_CENTS: i64 = 100_000_000;

    /// Checks an exact decimal.
    pub fn parse(amount: Decimal) -> Result<Self, PriceError> {
        if amount <= Decimal::ZERO {
            return Err(PriceError::NotPositive);
        }
        if amount.normalize().scale() > 2 {
            return Err(PriceError::TooPrecise);
        }
        let cents = (amount * Decimal::ONE_HUNDRED).normalize().mantissa();
        let cents = i64::try_from(cents).map_err(|_| PriceError::TooLarge)?;
        Self::from_cents(cents)
    }

    /// A price from whole cents, as stored.
    pub fn from_cents(cents: i64) -> Result<Self, PriceError> {
        match cents {
            ..=0 => Err(PriceError::NotPositive),
            c if c > Self::MAX_CENTS => Err(PriceError::TooLarge),
            c => Ok(Self(c)),
        }
    }

    /// The price in whole cents.
    pub fn cents(self) -> i64 {
        self.0
    }

    /// The price as an exact decimal with two places (`19.90`).
    pub fn amount(self) -> Decimal {
        Decimal::new(self.0, 2)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.amount())
    }
}

impl fmt::Debug for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Price({})", self.amount())
    }
}

impl FromStr for Price {
    type Err = PriceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let amount = Decimal::from_str_exact(text.trim()).map_err(|_| PriceError::TooPrecise)?;
        Self::parse(amount)
    }
}

/// The fields of a book its owner chooses; everything else the system assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookDraft {
    /// The title, as printed on the cover.
    pub title: Title,
    /// The author or authors, as one credit line.
    pub author: Author,
    /// The edition's ISBN; no two books in the catalog share one.
    pub isbn: Isbn,
    /// When the edition came out; never after today.
    pub published_date: Date,
    /// What the book costs.
    pub price: Price,
}

impl BookDraft {
    /// Checks that the book is not published after `today`: a rule that needs
    /// the clock, so the service applies it rather than the parser.
    pub fn check_published(&self, today: Date) -> Result<(), ValidationErrors> {
        if self.published_date > today {
            return Err(ValidationErrors::single(
                "published_date",
                "must not be in the future",
            ));
        }
        Ok(())
    }
}

/// A book in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// Assigned when the book is added and never changed.
    pub id: BookId,
    /// See [`BookDraft::title`].
    pub title: Title,
    /// See [`BookDraft::author`].
    pub author: Author,
    /// See [`BookDraft::isbn`].
    pub isbn: Isbn,
    /// See [`BookDraft::published_date`].
    pub published_date: Date,
    /// See [`BookDraft::price`].
    pub price: Price,
    /// The account that created it; with admins, the only one that may change it.
    pub owner: AccountId,
    /// Bumped by every change, for conditional writes (`If-Match`).
    pub version: Version,
    /// When the book was added to the catalog.
    pub created_at: Timestamp,
    /// When the book last changed; `created_at` until then.
    pub updated_at: Timestamp,
}

impl Book {
    /// The writable fields, as a draft to merge changes into.
    pub fn draft(&self) -> BookDraft {
        BookDraft {
            title: self.title.clone(),
            author: self.author.clone(),
            isbn: self.isbn.clone(),
            published_date: self.published_date,
            price: self.price,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn isbn13_check_digits_are_verified() {
        assert_eq!(
            Isbn::parse("978-0-306-40615-7").unwrap().as_str(),
            "9780306406157"
        );
        assert_eq!(Isbn::parse("978 0 306 40615 6"), Err(IsbnError::CheckDigit));
        assert_eq!(Isbn::parse("97803064061"), Err(IsbnError::Malformed));
        assert_eq!(Isbn::parse("978030640615X"), Err(IsbnError::Malformed));
    }

    #[test]
    fn isbn10_becomes_its_isbn13() {
        assert_eq!(
            Isbn::parse("0-306-40615-2").unwrap(),
            Isbn::parse("9780306406157").unwrap()
        );
        assert_eq!(Isbn::parse("080442957X").unwrap().as_str(), "9780804429573");
        assert_eq!(Isbn::parse("0306406153"), Err(IsbnError::CheckDigit));
    }

    #[test]
    fn prices_are_exact_positive_and_bounded() {
        let price = Price::parse(Decimal::from_str_exact("19.99").unwrap()).unwrap();
        assert_eq!(price.cents(), 1999);
        assert_eq!(price.amount().to_string(), "19.99");
        assert_eq!("19.90".parse::<Price>().unwrap().cents(), 1990);
        assert_eq!("20".parse::<Price>().unwrap().amount().to_string(), "20.00");
        assert_eq!("0".parse::<Price>(), Err(PriceError::NotPositive));
        assert_eq!("-1".parse::<Price>(), Err(PriceError::NotPositive));
        assert_eq!("0.001".parse::<Price>(), Err(PriceError::TooPrecise));
        assert_eq!(
            "1.230".parse::<Price>().unwrap().cents(),
            123,
            "trailing zeros are not precision"
        );
        assert_eq!(
            "1000000".parse::<Price>().unwrap().cents(),
            Price::MAX_CENTS
        );
        assert_eq!("1000000.01".parse::<Price>(), Err(PriceError::TooLarge));
        assert_eq!(
            "99999999999999999999".parse::<Price>(),
            Err(PriceError::TooLarge)
        );
    }

    #[test]
    fn titles_and_authors_are_trimmed_and_bounded() {
        assert_eq!(Title::parse("  Dune ").unwrap().as_str(), "Dune");
        assert_eq!(Title::parse(""), Err(TextError::Empty));
        assert!(Title::parse(&"t".repeat(200)).is_ok());
        assert_eq!(
            Title::parse(&"t".repeat(201)),
            Err(TextError::TooLong { max: 200 })
        );
        assert_eq!(
            Author::parse(&"a".repeat(101)),
            Err(TextError::TooLong { max: 100 })
        );
    }

    #[test]
    fn future_publication_is_refused() {
        let draft = BookDraft {
            title: Title::parse("Dune").unwrap(),
            author: Author::parse("Frank Herbert").unwrap(),
            isbn: Isbn::parse("9780441172719").unwrap(),
            published_date: time::macros::date!(2026 - 11 - 22),
            price: "9.99".parse().unwrap(),
        };
        assert!(
            draft
                .check_published(time::macros::date!(2026 - 11 - 22))
                .is_ok()
        );
        assert!(
            draft
                .check_published(time::macros::date!(2026 - 11 - 21))
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn every_valid_isbn13_round_trips(first in proptest::collection::vec(0_u32..10, 12)) {
            let check = isbn13_check_digit(&first);
            let text: String = first.iter().chain([check].iter()).map(|d| char::from_digit(*d, 10).unwrap()).collect();
            let isbn = Isbn::parse(&text).unwrap();
            prop_assert_eq!(isbn.as_str(), text.as_str());
            let wrong = (check + 1) % 10;
            let mut bad = text.clone();
            bad.replace_range(12.., &wrong.to_string());
            prop_assert_eq!(Isbn::parse(&bad), Err(IsbnError::CheckDigit));
        }

        #[test]
        fn cents_round_trip_through_decimals(cents in 1_i64..=Price::MAX_CENTS) {
            let price = Price::from_cents(cents).unwrap();
            prop_assert_eq!(Price::parse(price.amount()), Ok(price));
            prop_assert_eq!(price.to_string().parse::<Price>(), Ok(price));
        }
    }
}
