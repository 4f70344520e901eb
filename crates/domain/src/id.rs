//! Prefixed, ULID-based identifiers (`acct_01J…`, `sess_01J…`).
//!
//! The prefix makes an id self-describing in logs and URLs and stops one kind
//! of id from being accepted where another is expected.

use thiserror::Error;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// An id of another kind (or no id at all): a session id where an account id belongs.
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix {
        /// The prefix this kind of id starts with.
        expected: &'static str,
    },
    /// The right prefix, followed by something that is not a ULID.
    #[error("the part after `{prefix}_` is not a valid ULID")]
    Malformed {
        /// The prefix that was found, and was right.
        prefix: &'static str,
    },
}

/// Defines a prefixed id newtype around a [`ulid::Ulid`].
macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(::ulid::Ulid);

        impl $name {
            /// The prefix before the underscore in this id's text form.
            pub const PREFIX: &'static str = $prefix;

            /// Wraps a ULID; generating one is the caller's job (see the services' id generator).
            pub fn from_ulid(ulid: ::ulid::Ulid) -> Self {
                Self(ulid)
            }

            /// The underlying ULID.
            pub fn ulid(self) -> ::ulid::Ulid {
                self.0
            }

            /// The id as a UUID, which is how the databases store it.
            pub fn as_uuid(self) -> ::uuid::Uuid {
                ::uuid::Uuid::from(self.0)
            }

            /// Rebuilds the id from its stored UUID.
            pub fn from_uuid(uuid: ::uuid::Uuid) -> Self {
                Self(::ulid::Ulid::from(uuid))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}_{}", $prefix, self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let rest = text
                    .strip_prefix($prefix)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .ok_or($crate::id::IdError::WrongPrefix { expected: $prefix })?;
                ::ulid::Ulid::from_string(rest)
                    .map(Self)
                    .map_err(|_| $crate::id::IdError::Malformed { prefix: $prefix })
            }
        }
    };
}

pub(crate) use prefixed_id;

#[cfg(test)]
mod tests {
    use crate::{AccountId, SessionId};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn account_ids_round_trip_through_text(bits in any::<u128>()) {
            let id = AccountId::from_ulid(ulid::Ulid::from(bits));
            prop_assert_eq!(id.to_string().parse::<AccountId>(), Ok(id));
        }

        #[test]
        fn ids_round_trip_through_uuid(bits in any::<u128>()) {
            let id = SessionId::from_ulid(ulid::Ulid::from(bits));
            prop_assert_eq!(SessionId::from_uuid(id.as_uuid()), id);
        }
    }

    #[test]
    fn an_id_of_another_kind_is_refused() {
        let session = SessionId::from_ulid(ulid::Ulid::from(7_u128));
        let err = session.to_string().parse::<AccountId>().unwrap_err();
        assert_eq!(err, crate::IdError::WrongPrefix { expected: "acct" });
    }

    #[test]
    fn garbage_after_the_prefix_is_refused() {
        let err = "acct_not-a-ulid".parse::<AccountId>().unwrap_err();
        assert_eq!(err, crate::IdError::Malformed { prefix: "acct" });
        assert!("acct".parse::<AccountId>().is_err());
        assert!("".parse::<AccountId>().is_err());
    }
}
