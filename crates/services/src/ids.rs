//! Id generation: time-ordered ULIDs for resources, pure randomness for sessions.

use std::time::SystemTime;

use ulid::Ulid;
use waiter_domain::{AccountId, BookId, SessionId, Timestamp};

/// A new account id whose ULID time part is `now`, so ids sort by creation.
pub(crate) fn new_account_id(now: Timestamp) -> AccountId {
    AccountId::from_ulid(Ulid::from_datetime(SystemTime::from(now)))
}

/// A new session id made of 128 random bits: no creation time to leak.
pub(crate) fn new_session_id() -> SessionId {
    SessionId::from_ulid(Ulid::from(rand::random::<u128>()))
}

/// A new book id whose ULID time part is `now`.
pub(crate) fn new_book_id(now: Timestamp) -> BookId {
    BookId::from_ulid(Ulid::from_datetime(SystemTime::from(now)))
}
