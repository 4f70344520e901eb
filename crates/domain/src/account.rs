//! Accounts: who can sign in, under which email, with which role.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::id::prefixed_id;
use crate::{Timestamp, ValidationErrors, Version};

prefixed_id!(
    /// Identifies an account: `acct_` followed by a ULID.
    AccountId,
    "acct"
);

/// A normalised email address: trimmed, lower-cased and syntactically valid.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Why a string is not an acceptable email address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmailError {
    /// Nothing but whitespace was given, which deserves a clearer word than "invalid".
    #[error("must not be empty")]
    Empty,
    /// Longer than any mail system will deliver to ([`Email::MAX_LEN`]).
    #[error("must be at most {max} characters", max = Email::MAX_LEN)]
    TooLong,
    /// Not of the form `local@domain.tld`.
    #[error("is not a valid email address")]
    Invalid,
}

impl Email {
    /// RFC 5321 limits a forward path to 256 octets including the angle brackets.
    pub const MAX_LEN: usize = 254;

    /// Trims and lower-cases `raw`, then checks it is a plausible address.
    ///
    /// Lower-casing the local part is technically lossy, but no mail system in
    /// practice distinguishes case there, and treating `Ann@x.io` and
    /// `ann@x.io` as two accounts would be a far worse surprise.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err(EmailError::Empty);
        }
        if normalised.len() > Self::MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let options = email_address::Options::default().without_display_text();
        let valid = email_address::EmailAddress::parse_with_options(&normalised, options)
            .is_ok_and(|address| address.domain().contains('.'));
        if !valid {
            return Err(EmailError::Invalid);
        }
        Ok(Self(normalised))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.0)
    }
}

/// A person's public name: trimmed, 1 to 64 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DisplayName(String);

/// Why a string is not an acceptable display name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DisplayNameError {
    /// Nothing is left after trimming.
    #[error("must not be empty")]
    Empty,
    /// More than [`DisplayName::MAX_CHARS`] characters after trimming.
    #[error("must be at most {max} characters", max = DisplayName::MAX_CHARS)]
    TooLong,
    /// A control character, which could forge lines in logs or break layouts.
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl DisplayName {
    /// The longest display name, counted in characters after trimming.
    pub const MAX_CHARS: usize = 64;

    /// Trims `raw` and checks its length and characters.
    pub fn parse(raw: &str) -> Result<Self, DisplayNameError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(DisplayNameError::Empty);
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(DisplayNameError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(DisplayNameError::ControlCharacter);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplayName({:?})", self.0)
    }
}

/// A plaintext password a person chose: 8 to 128 characters, nothing else imposed.
///
/// Composition rules are deliberately absent (NIST SP 800-63B §5.1.1.2).
/// `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// Why a string is not an acceptable new password.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PasswordError {
    /// Fewer than [`Password::MIN_CHARS`] characters: too easy to guess.
    #[error("must be at least {min} characters", min = Password::MIN_CHARS)]
    TooShort,
    /// More than [`Password::MAX_CHARS`] characters, which would only make hashing costly.
    #[error("must be at most {max} characters", max = Password::MAX_CHARS)]
    TooLong,
}

impl Password {
    /// The shortest acceptable password, in characters.
    pub const MIN_CHARS: usize = 8;
    /// The longest acceptable password, in characters; bounds the hashing cost.
    pub const MAX_CHARS: usize = 128;

    /// Checks the length of a password being chosen. Passwords are never trimmed.
    pub fn parse(raw: &str) -> Result<Self, PasswordError> {
        match raw.chars().count() {
            n if n < Self::MIN_CHARS => Err(PasswordError::TooShort),
            n if n > Self::MAX_CHARS => Err(PasswordError::TooLong),
            _ => Ok(Self(raw.to_owned())),
        }
    }

    /// The secret itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A password hash in PHC string format (`$argon2id$v=19$…`), as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by the hasher or read from a store.
    pub fn new(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// What an account may do beyond its own resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// An ordinary account; the role every sign-up gets.
    #[default]
    Member,
    /// May list, change and delete any account and any resource.
    Admin,
}

/// Why a string is not a role.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be one of: member, admin")]
pub struct RoleError;

impl Role {
    /// The role's wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    /// True for roles that may administer accounts.
    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }
}

impl FromStr for Role {
    type Err = RoleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            _ => Err(RoleError),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account as the rest of the system sees it; its password hash stays in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Assigned at sign-up and never changed, so it can key everything the account owns.
    pub id: AccountId,
    /// What the account signs in with; unique among accounts, and changeable.
    pub email: Email,
    /// How the account is shown to others; not unique.
    pub display_name: DisplayName,
    /// What the account may do beyond its own resources.
    pub role: Role,
    /// Bumped by every change, for conditional updates (`If-Match`).
    pub version: Version,
    /// When the account signed up.
    pub created_at: Timestamp,
    /// When the account last changed; `created_at` until then.
    pub updated_at: Timestamp,
}

/// A validated sign-up request.
#[derive(Debug, Clone)]
pub struct SignUp {
    /// The email the account will sign in with.
    pub email: Email,
    /// The password chosen, to be hashed before anything stores it.
    pub password: Password,
    /// The name others will see.
    pub display_name: DisplayName,
}

impl SignUp {
    /// Validates every field, reporting all failures together.
    pub fn parse(
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let email = errors.check("email", Email::parse(email));
        let password = errors.check("password", Password::parse(password));
        let display_name = errors.check("display_name", DisplayName::parse(display_name));
        match (email, password, display_name) {
            (Some(email), Some(password), Some(display_name)) => Ok(Self {
                email,
                password,
                display_name,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        let email = Email::parse("  Ann.Lee@Example.COM \n").unwrap();
        assert_eq!(email.as_str(), "ann.lee@example.com");
    }

    #[test]
    fn implausible_emails_are_refused() {
        for raw in [
            "",
            "   ",
            "ann",
            "ann@",
            "@example.com",
            "ann@localhost",
            "a b@example.com",
            "Ann <ann@example.com>",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} was accepted");
        }
        assert_eq!(Email::parse(" ").unwrap_err(), EmailError::Empty);
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long).unwrap_err(), EmailError::TooLong);
    }

    #[test]
    fn passwords_are_bounded_by_characters_not_bytes() {
        assert_eq!(
            Password::parse("1234567").unwrap_err(),
            PasswordError::TooShort
        );
        assert!(Password::parse("12345678").is_ok());
        assert!(
            Password::parse(&"é".repeat(128)).is_ok(),
            "128 two-byte characters are allowed"
        );
        assert_eq!(
            Password::parse(&"x".repeat(129)).unwrap_err(),
            PasswordError::TooLong
        );
        assert!(
            Password::parse("        ").is_ok(),
            "passwords are not trimmed"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let password = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
        let hash = PasswordHash::new("$argon2id$secret");
        assert!(!format!("{hash:?}").contains("secret"));
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ann  ").unwrap().as_str(), "Ann");
        assert_eq!(
            DisplayName::parse(" \t ").unwrap_err(),
            DisplayNameError::Empty
        );
        assert!(DisplayName::parse(&"ü".repeat(64)).is_ok());
        assert_eq!(
            DisplayName::parse(&"ü".repeat(65)).unwrap_err(),
            DisplayNameError::TooLong
        );
        assert_eq!(
            DisplayName::parse("a\u{0}b").unwrap_err(),
            DisplayNameError::ControlCharacter
        );
    }

    #[test]
    fn roles_round_trip_and_reject_unknown_names() {
        for role in [Role::Member, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn sign_up_reports_every_bad_field_at_once() {
        let errors = SignUp::parse("nope", "short", " ").unwrap_err();
        let fields: Vec<_> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["email", "password", "display_name"]);
    }

    proptest! {
        #[test]
        fn a_plausible_address_parses_to_itself_lower_cased(
            local in "[a-zA-Z0-9+_-]{1,12}(\\.[a-zA-Z0-9+_-]{1,12}){0,2}",
            domain in "[a-zA-Z0-9]([a-zA-Z0-9-]{0,18}[a-zA-Z0-9])?\\.[a-zA-Z]{2,6}",
            padding in "[ \t]{0,3}",
        ) {
            let address = format!("{local}@{domain}").to_lowercase();
            let email = Email::parse(&format!("{padding}{local}@{domain}{padding}"));
            prop_assert_eq!(email.as_ref().map(Email::as_str), Ok(address.as_str()));
            let email = email.expect("just asserted");
            prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
        }

        #[test]
        fn display_names_are_kept_without_outer_whitespace(
            name in "[^\\s\\p{C}]([^\\p{C}]{0,62}[^\\s\\p{C}])?",
            before in "\\s{0,3}",
            after in "\\s{0,3}",
        ) {
            let parsed = DisplayName::parse(&format!("{before}{name}{after}"));
            prop_assert_eq!(parsed.as_ref().map(DisplayName::as_str), Ok(name.as_str()));
        }

        #[test]
        fn display_names_over_the_limit_are_refused(name in "[^\\s\\p{C}]{65,80}") {
            prop_assert_eq!(DisplayName::parse(&name), Err(DisplayNameError::TooLong));
        }

        #[test]
        fn password_length_decides_acceptance(raw in "\\PC{0,140}") {
            let chars = raw.chars().count();
            prop_assert_eq!(Password::parse(&raw).is_ok(), (8..=128).contains(&chars));
        }
    }
}
