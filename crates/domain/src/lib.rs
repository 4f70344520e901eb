#![warn(missing_docs)]
//! Waiter's domain: the entities and value objects every other crate speaks in.
//!
//! Everything here is pure: no I/O, no async, no framework, no clock and no
//! randomness. Constructors validate (`Email::parse`, `DisplayName::parse`,
//! `Password::parse`), so past this boundary nothing re-checks a value.

pub mod account;
pub mod book;
pub mod conversation;
pub mod id;
pub mod session;
pub mod validation;

pub use account::{
    Account, AccountId, DisplayName, DisplayNameError, Email, EmailError, Password, PasswordError,
    PasswordHash, Role, RoleError, SignUp,
};
pub use book::{
    Author, Book, BookDraft, BookId, Date, Isbn, IsbnError, Price, PriceError, TextError, Title,
};
pub use conversation::{
    Conversation, ConversationId, ConversationTitle, Message, MessageId, MessageIdError,
    MessageMetadata, MessageRole, MessageStatus, MessageText, MessageTextError, UnknownName, Usage,
};
pub use id::IdError;
pub use session::{Session, SessionId};
pub use validation::{FieldError, ValidationErrors};

/// A resource's revision number, bumped on every change and exposed as its `ETag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(i64);

impl Version {
    /// The version every resource starts at.
    pub const INITIAL: Version = Version(1);

    /// Wraps a stored version number.
    pub fn new(value: i64) -> Self {
        Self(value)
    }

    /// The number itself.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The version after one more change.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// The instant type used throughout Waiter: always UTC.
pub type Timestamp = time::OffsetDateTime;
