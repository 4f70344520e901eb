//! The values requests carry, each declared once: the JSON Schema the document
//! publishes and the check the server applies come from the same place.
//!
//! Where the domain parses a value (`Title::parse`, `Isbn::parse`…), it stays
//! the judge, and the schema states its rule with the domain's own limits;
//! the tests hold each pattern to its parser. Where only the wire has a rule
//! (a price written as a string, an entity tag, a cursor), the pattern the
//! document publishes is the very regular expression the server matches.
//!
//! The few rules no JSON Schema keyword can state (an ISBN's check digit, a
//! publication date not in the future) are given as a `format` and in words.

use std::sync::LazyLock;

use regex::Regex;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use time::macros::format_description;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{Object, Schema};
use waiter_domain::{
    Author, ConversationTitle, Date, DisplayName, Email, Isbn, MessageId, MessageText, Password,
    Price, PriceError, Title, Version,
};

/// Text the domain trims before use (names, titles, search terms): white
/// space around some text that has no control character, where white space is
/// Unicode's `White_Space` (what `str::trim` removes, some control characters
/// among it) and control characters are `char::is_control` (Cc).
pub(crate) const TEXT_PATTERN: &str = concat!(
    r"^[\t-\r\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
    r"(?:[^\u0000-\u001F\u007F-\u009F]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?",
    r"[\t-\r\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
);

/// An ISBN-13, or an ISBN-10 whose check digit may be `X`, its digits
/// optionally separated by hyphens or spaces.
pub(crate) const ISBN_PATTERN: &str =
    r"^[- ]*(?:(?:[0-9][- ]*){13}|(?:[0-9][- ]*){9}[0-9Xx][- ]*)$";

/// A price written as a JSON string: a plain decimal greater than 0 and at
/// most 1000000, with at most two decimal places and no leading zero.
pub(crate) const PRICE_PATTERN: &str =
    r"^(?:[1-9][0-9]{0,5}(?:\.[0-9]{1,2})?|0\.(?:0[1-9]|[1-9][0-9]?)|1000000(?:\.00?)?)$";

/// An `If-Match` value: `*`, one strong entity tag holding a version, or a
/// weak tag (which never matches for a write).
pub(crate) const IF_MATCH_PATTERN: &str = r#"^(?:\*|"([0-9]{1,18})"|W/"[!#-~]*")$"#;

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters, the rule the
/// idempotency use cases apply.
pub(crate) const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!-~]{1,255}$";

/// A pagination cursor: base64url without padding.
pub(crate) const CURSOR_PATTERN: &str = r"^[A-Za-z0-9_-]+$";

/// The text of a message a user sends ([`MessageText::parse`]): at least one
/// character that is not Unicode `White_Space` (the set [`TEXT_PATTERN`]
/// names), and no NUL anywhere.
pub(crate) const MESSAGE_TEXT_PATTERN: &str = concat!(
    r"^[^\u0000]*",
    r"[^\u0000\t-\r\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
    r"[^\u0000]*$",
);

/// A message id a client chooses ([`MessageId::parse`]).
pub(crate) const MESSAGE_ID_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// A `Last-Event-ID`: the position of the last event a client received, a
/// non-negative integer of at most 18 digits (so it always fits).
pub(crate) const LAST_EVENT_ID_PATTERN: &str = r"^[0-9]{1,18}$";

/// `regex` reads these patterns as their JSON Schema (ECMA-262) readers do:
/// they use only classes, `\uXXXX` escapes, anchors and counted repeats.
fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a field pattern compiles")
}

static PRICE: LazyLock<Regex> = LazyLock::new(|| regex(PRICE_PATTERN));
static IF_MATCH: LazyLock<Regex> = LazyLock::new(|| regex(IF_MATCH_PATTERN));
static CURSOR: LazyLock<Regex> = LazyLock::new(|| regex(CURSOR_PATTERN));
static IDEMPOTENCY_KEY: LazyLock<Regex> = LazyLock::new(|| regex(IDEMPOTENCY_KEY_PATTERN));
static LAST_EVENT_ID: LazyLock<Regex> = LazyLock::new(|| regex(LAST_EVENT_ID_PATTERN));

/// A domain text type a client writes: trimmed, not blank, bounded.
pub(crate) trait TrimmedText: Sized {
    /// The most characters a value may have.
    const MAX: usize;
    /// A value shown in the document.
    const EXAMPLE: &'static str;
    /// The domain's parser.
    fn parse_trimmed(raw: &str) -> Result<Self, String>;
}

macro_rules! trimmed_text {
    ($type:ty, $example:literal) => {
        impl TrimmedText for $type {
            const MAX: usize = <$type>::MAX_CHARS;
            const EXAMPLE: &'static str = $example;
            fn parse_trimmed(raw: &str) -> Result<Self, String> {
                <$type>::parse(raw).map_err(|err| err.to_string())
            }
        }
    };
}

trimmed_text!(Title, "Dune");
trimmed_text!(Author, "Frank Herbert");
trimmed_text!(DisplayName, "Ann");
trimmed_text!(ConversationTitle, "Redis caching explained");

/// The schema of a [`TrimmedText`] field.
pub(crate) fn text_schema<T: TrimmedText>() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(T::MAX))
        .pattern(Some(TEXT_PATTERN))
        .description(Some(format!(
            "1 to {} characters, not blank, no control characters; surrounding white space is removed.",
            T::MAX
        )))
        .examples([T::EXAMPLE])
        .build()
}

/// `schema` with `meaning` before its description: what a parameter is for,
/// ahead of the rule its values follow.
pub(crate) fn described(mut schema: Object, meaning: &str) -> Object {
    schema.description = Some(match schema.description {
        Some(rule) => format!("{meaning} {rule}"),
        None => meaning.to_owned(),
    });
    schema
}

/// Parses a [`TrimmedText`] field. The schema's `maxLength` counts the text as
/// sent, the domain counts it trimmed; checking both keeps the two equal.
pub(crate) fn text<T: TrimmedText>(raw: &str) -> Result<T, String> {
    if raw.chars().count() > T::MAX {
        return Err(format!("must be at most {} characters", T::MAX));
    }
    T::parse_trimmed(raw)
}

pub(crate) fn email_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(Email::MAX_LEN))
        .description(Some(
            "An email address; compared and stored trimmed and in lower case.",
        ))
        .examples(["ann@example.com"])
        .build()
}

pub(crate) fn email(raw: &str) -> Result<Email, String> {
    if raw.chars().count() > Email::MAX_LEN {
        return Err(format!("must be at most {} characters", Email::MAX_LEN));
    }
    Email::parse(raw).map_err(|err| err.to_string())
}

/// A new password, taken exactly as sent.
pub(crate) fn password_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(Password::MIN_CHARS))
        .max_length(Some(Password::MAX_CHARS))
        .description(Some(format!(
            "{} to {} characters, taken exactly as sent.",
            Password::MIN_CHARS,
            Password::MAX_CHARS
        )))
        .examples(["correct horse battery staple"])
        .build()
}

pub(crate) fn password(raw: &str) -> Result<Password, String> {
    Password::parse(raw).map_err(|err| err.to_string())
}

pub(crate) fn isbn_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("isbn".to_owned())))
        .pattern(Some(ISBN_PATTERN))
        .description(Some(
            "An ISBN-13, or an ISBN-10 (stored as its ISBN-13), with a correct check digit; \
             hyphens and spaces between digits are ignored.",
        ))
        .examples(["978-0-441-17271-9"])
        .build()
}

pub(crate) fn isbn(raw: &str) -> Result<Isbn, String> {
    Isbn::parse(raw).map_err(|err| err.to_string())
}

/// A `YYYY-MM-DD` date, with what it means.
pub(crate) fn date_schema(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        .description(Some(description))
        .examples(["1965-08-01"])
        .build()
}

pub(crate) fn published_date_schema() -> Object {
    date_schema("`YYYY-MM-DD`, not after today (UTC).")
}

/// A date as `YYYY-MM-DD` (RFC 3339 `full-date`).
pub(crate) fn date(raw: &str) -> Result<Date, String> {
    Date::parse(raw, format_description!("[year]-[month]-[day]"))
        .map_err(|_| "must be a date as YYYY-MM-DD".to_owned())
}

pub(crate) fn price_schema() -> Schema {
    let number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .exclusive_minimum(Some(0))
        .maximum(Some(1_000_000))
        .multiple_of(Some(0.01))
        .examples([9.99]);
    let string = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(PRICE_PATTERN))
        .examples(["9.99"]);
    OneOfBuilder::new()
        .item(number)
        .item(string)
        .description(Some(
            "Greater than 0, at most 1000000, with at most two decimal places: a JSON number, \
             read exactly as written (never through a float), or the same as a string.",
        ))
        .build()
        .into()
}

/// Parses a price from a JSON number (its exact text) or a string matching [`PRICE_PATTERN`].
pub(crate) fn price(value: &Value) -> Result<Price, String> {
    match value {
        Value::Number(number) => exact_decimal(&number.to_string())
            .and_then(Price::parse)
            .map_err(|err| err.to_string()),
        Value::String(text) if PRICE.is_match(text) => {
            text.parse().map_err(|err: PriceError| err.to_string())
        }
        Value::String(_) => {
            Err("must be a decimal such as 9.99, greater than 0 and at most 1000000".to_owned())
        }
        Value::Null => Err("cannot be removed".to_owned()),
        _ => Err("must be a number".to_owned()),
    }
}

/// The exact value of a JSON number's text, exponent included (`1.5e2` is 150).
/// A value too large or too fine for a `Decimal` is no price either.
fn exact_decimal(text: &str) -> Result<Decimal, PriceError> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (
            mantissa,
            exponent
                .parse::<i32>()
                .map_err(|_| PriceError::TooPrecise)?,
        ),
        None => (text, 0),
    };
    let mut value = Decimal::from_str_exact(mantissa).map_err(|_| PriceError::TooPrecise)?;
    if value.is_zero() {
        return Ok(value);
    }
    if exponent < 0 {
        let scale = value.scale() + exponent.unsigned_abs();
        value.set_scale(scale).map_err(|_| PriceError::TooPrecise)?;
    } else if exponent > 0 {
        let power = 10_i64
            .checked_pow(exponent.unsigned_abs())
            .ok_or(PriceError::TooLarge)?;
        value = value
            .checked_mul(Decimal::from(power))
            .ok_or(PriceError::TooLarge)?;
    }
    Ok(value)
}

pub(crate) fn if_match_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("entity-tag".to_owned())))
        .pattern(Some(IF_MATCH_PATTERN))
        .description(Some(
            "Apply only if the resource's `ETag` still matches: `*`, or one strong tag such as \
             `\"3\"`. A weak tag never matches a write (412).",
        ))
        .examples([r#""1""#])
        .build()
}

/// What an `If-Match` value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// `*`: any current version.
    Any,
    /// One strong tag: this version.
    Version(Version),
    /// A weak tag, which the strong comparison of a write never matches.
    Weak,
}

/// Parses an `If-Match` value; `None` when it does not match [`IF_MATCH_PATTERN`].
pub(crate) fn if_match(value: &str) -> Option<IfMatch> {
    let captures = IF_MATCH.captures(value)?;
    Some(match captures.get(1) {
        Some(digits) => IfMatch::Version(Version::new(digits.as_str().parse().ok()?)),
        None if value == "*" => IfMatch::Any,
        None => IfMatch::Weak,
    })
}

pub(crate) fn idempotency_key_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
        .description(Some(
            "Makes retries safe: a retry with the same key and request gets the first response \
             (`Idempotent-Replayed: true`); the same key with another request is 422, and while \
             the first is still running, 409. Keys are the caller's own and kept for 24 hours.",
        ))
        .build()
}

/// True for a key the idempotency use cases would accept
/// ([`IDEMPOTENCY_KEY_PATTERN`]); a message's retry key is checked here, as
/// it goes to the conversation use cases, not through the idempotency ones.
pub(crate) fn is_idempotency_key(text: &str) -> bool {
    IDEMPOTENCY_KEY.is_match(text)
}

pub(crate) fn message_text_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(MESSAGE_TEXT_PATTERN))
        .description(Some(
            "The message, taken as typed (not trimmed): not blank, no NUL character, and at \
             most the server's configured size (32 KiB by default, counted in UTF-8 bytes; \
             longer is 422).",
        ))
        .examples(["Hello! Can you explain Redis caching?"])
        .build()
}

/// Parses a message's text.
pub(crate) fn message_text(raw: &str) -> Result<MessageText, String> {
    MessageText::parse(raw).map_err(|err| err.to_string())
}

pub(crate) fn message_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MessageId::MAX_LEN))
        .pattern(Some(MESSAGE_ID_PATTERN))
        .description(Some(
            "The client's id for the message, unique within its conversation: sending a \
             message with an id already sent is a retry, answered with what the first send \
             stored. Absent: the server names it `msg_…`.",
        ))
        .examples(["msg_001"])
        .build()
}

/// Parses a client-chosen message id.
pub(crate) fn message_id(raw: &str) -> Result<MessageId, String> {
    MessageId::parse(raw).map_err(|err| err.to_string())
}

pub(crate) fn last_event_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(LAST_EVENT_ID_PATTERN))
        .description(Some(
            "Resume after this event: the `id` of the last event received (browsers' \
             `EventSource` sends it when reconnecting). Absent: from the first event.",
        ))
        .examples(["7"])
        .build()
}

/// Parses a `Last-Event-ID` value; `None` when it does not match [`LAST_EVENT_ID_PATTERN`].
pub(crate) fn last_event_id(value: &str) -> Option<u64> {
    LAST_EVENT_ID
        .is_match(value)
        .then(|| value.parse().ok())
        .flatten()
}

pub(crate) fn cursor_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CURSOR_PATTERN))
        .description(Some(
            "The `next_cursor` of the previous page, as it was given. A cursor that is not \
             base64url is malformed (400); one this list did not issue, or issued for another \
             sort, names no page (404).",
        ))
        .build()
}

/// True for text shaped like a cursor ([`CURSOR_PATTERN`]).
pub(crate) fn is_cursor(text: &str) -> bool {
    CURSOR.is_match(text)
}

/// For an optional field of a merge patch: absent is `None`, and `null` is
/// refused like any other value of the wrong type, since no field of ours
/// can be removed. (Serde's own `Option` would read `null` as absent.)
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(pattern: &str, text: &str) -> bool {
        regex(pattern).is_match(text)
    }

    /// Characters that sit on the edges of the text rule.
    fn tricky_char() -> impl Strategy<Value = char> {
        prop_oneof![
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('\u{85}'),
            Just('\u{a0}'),
            Just('\u{1680}'),
            Just('\u{2007}'),
            Just('\u{2028}'),
            Just('\u{3000}'),
            Just('\u{feff}'),
            Just('\u{7f}'),
            Just('\u{9f}'),
            Just('\u{0}'),
            Just('\u{200b}'),
            any::<char>(),
            proptest::char::range('a', 'z'),
        ]
    }

    proptest! {
        #[test]
        fn the_text_pattern_is_the_domain_rule(chars in proptest::collection::vec(tricky_char(), 0..8)) {
            let raw: String = chars.into_iter().collect();
            prop_assert_eq!(matches(TEXT_PATTERN, &raw), text::<Title>(&raw).is_ok(), "{:?}", raw);
        }

        #[test]
        fn the_isbn_pattern_is_the_domain_shape(
            chars in proptest::collection::vec(prop_oneof![Just('-'), Just(' '), Just('X'), Just('x'), Just('a'), proptest::char::range('0', '9')], 8..20)
        ) {
            let text: String = chars.into_iter().collect();
            let shaped = !matches!(Isbn::parse(&text), Err(waiter_domain::IsbnError::Malformed));
            prop_assert_eq!(matches(ISBN_PATTERN, &text), shaped, "{:?}", text);
        }

        #[test]
        fn a_price_string_is_valid_exactly_when_it_matches(
            int in "(0|[1-9][0-9]{0,7})", frac in proptest::option::of("[0-9]{0,3}")
        ) {
            let text = match frac { Some(frac) => format!("{int}.{frac}"), None => int };
            let exact = Decimal::from_str_exact(&text).ok().map(Price::parse);
            let valid = matches!(exact, Some(Ok(_))) && !text.ends_with('.') && text.split('.').nth(1).is_none_or(|f| f.len() <= 2);
            prop_assert_eq!(matches(PRICE_PATTERN, &text), valid, "{}", text);
            prop_assert_eq!(price(&Value::String(text.clone())).is_ok(), valid, "{}", text);
        }
    }

    #[test]
    fn a_price_number_is_read_exactly_as_written() {
        let cents = |text: &str| {
            let value: Value = serde_json::from_str(text).unwrap();
            price(&value).map(Price::cents)
        };
        assert_eq!(cents("19.9"), Ok(1990));
        assert_eq!(cents("19.900"), Ok(1990));
        assert_eq!(cents("1.5e2"), Ok(15000));
        assert_eq!(cents("1E+2"), Ok(10000));
        assert_eq!(cents("1999e-2"), Ok(1999));
        assert_eq!(cents("1000000"), Ok(100_000_000));
        for refused in [
            "0",
            "-1",
            "0.001",
            "19.999999999999999999999",
            "1000000.01",
            "1e7",
            "1e-40",
            "1e400",
        ] {
            assert!(cents(refused).is_err(), "{refused}");
        }
    }

    proptest! {
        #[test]
        fn the_message_text_pattern_is_the_domain_rule(chars in proptest::collection::vec(tricky_char(), 0..8)) {
            let raw: String = chars.into_iter().collect();
            prop_assert_eq!(matches(MESSAGE_TEXT_PATTERN, &raw), message_text(&raw).is_ok(), "{:?}", raw);
        }

        #[test]
        fn the_message_id_pattern_is_the_domain_rule(raw in "[a-z_/ é-]{0,3}|[A-Za-z0-9_-]{60,70}") {
            prop_assert_eq!(matches(MESSAGE_ID_PATTERN, &raw), message_id(&raw).is_ok(), "{:?}", raw);
        }
    }

    #[test]
    fn last_event_ids_are_small_non_negative_integers() {
        assert_eq!(last_event_id("0"), Some(0));
        assert_eq!(last_event_id("42"), Some(42));
        assert_eq!(
            last_event_id(&"9".repeat(18)),
            Some(999_999_999_999_999_999)
        );
        for malformed in ["", "-1", "+1", " 1", "1.0", "x", &"9".repeat(19)] {
            assert_eq!(last_event_id(malformed), None, "{malformed}");
        }
    }

    #[test]
    fn if_match_values_parse_as_the_pattern_says() {
        assert_eq!(if_match("*"), Some(IfMatch::Any));
        assert_eq!(if_match("\"3\""), Some(IfMatch::Version(Version::new(3))));
        assert_eq!(if_match("W/\"3\""), Some(IfMatch::Weak));
        for malformed in [
            "",
            "3",
            "\"-1\"",
            "\"+1\"",
            "\"1234567890123456789\"",
            "\"1\", \"2\"",
            "W/3",
            "**",
        ] {
            assert_eq!(if_match(malformed), None, "{malformed}");
        }
    }
}
