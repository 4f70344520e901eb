//! How instants are stored: UTC text with exactly six fractional digits.
//!
//! `2026-11-21T09:30:00.123456Z` is readable in the `sqlite3` shell and
//! understood by SQLite's date functions, and because every value has the
//! same width, comparing or sorting the text compares or sorts the instants.
//! (sqlx's own encoding drops trailing zeros, which breaks that.) Anything
//! finer than a microsecond is cut off, as PostgreSQL does.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Sqlite, Type};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{PrimitiveDateTime, UtcOffset};
use waiter_domain::Timestamp;

/// The one format timestamps are written and read in.
const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A [`Timestamp`] as a query parameter or column, in the format above.
#[derive(Debug, Clone, Copy)]
pub struct StoredTimestamp(Timestamp);

impl From<Timestamp> for StoredTimestamp {
    fn from(instant: Timestamp) -> Self {
        Self(instant)
    }
}

impl From<StoredTimestamp> for Timestamp {
    fn from(stored: StoredTimestamp) -> Self {
        stored.0
    }
}

impl Type<Sqlite> for StoredTimestamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for StoredTimestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        let utc = self
            .0
            .checked_to_offset(UtcOffset::UTC)
            .ok_or("timestamp out of range in UTC")?;
        Encode::<Sqlite>::encode(utc.format(FORMAT)?, buf)
    }
}

impl Decode<'_, Sqlite> for StoredTimestamp {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(PrimitiveDateTime::parse(text, FORMAT)?.assume_utc()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_text_has_a_fixed_width_and_cuts_off_nanoseconds() {
        let at = datetime!(2026-11-21 09:30:00.123_456_789 UTC);
        assert_eq!(at.format(FORMAT).unwrap(), "2026-11-21T09:30:00.123456Z");
        let whole = datetime!(2026-11-21 09:30:00 +01:00).to_offset(UtcOffset::UTC);
        assert_eq!(whole.format(FORMAT).unwrap(), "2026-11-21T08:30:00.000000Z");
    }

    #[test]
    fn the_text_parses_back_to_the_same_instant() {
        let at = datetime!(2026-11-21 09:30:00.123_456 UTC);
        let text = at.format(FORMAT).unwrap();
        assert_eq!(
            PrimitiveDateTime::parse(&text, FORMAT)
                .unwrap()
                .assume_utc(),
            at
        );
    }
}
