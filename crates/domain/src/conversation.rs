//! Conversations with the assistant, and the messages they are made of.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::book::TextError;
use crate::id::prefixed_id;
use crate::{AccountId, Timestamp, Version};

prefixed_id!(
    /// Identifies a conversation: `conv_` followed by a ULID.
    ConversationId,
    "conv"
);

/// A conversation's title: 1 to 200 characters after trimming, no control
/// characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConversationTitle(String);

impl ConversationTitle {
    /// The longest title, in characters after trimming.
    pub const MAX_CHARS: usize = 200;
    /// The longest title derived from a first message, before its ellipsis:
    /// what fits a sidebar, not the whole question.
    pub const DERIVED_CHARS: usize = 60;

    /// Trims `raw` and checks its length and characters.
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        crate::book::bounded_text(raw, Self::MAX_CHARS).map(Self)
    }

    /// The title a conversation gets when none was given: the first line of
    /// its first message with runs of white space folded, cut at a word
    /// boundary to at most [`Self::DERIVED_CHARS`] characters plus `…`.
    /// `None` when the message has nothing printable.
    pub fn derive_from(text: &MessageText) -> Option<Self> {
        let words: Vec<&str> = text
            .as_str()
            .split_whitespace()
            .map(|word| word.trim_matches(char::is_control))
            .filter(|word| !word.is_empty())
            .collect();
        let mut title = String::new();
        for word in &words {
            let next = if title.is_empty() { 0 } else { 1 } + word.chars().count();
            if title.chars().count() + next > Self::DERIVED_CHARS {
                if title.is_empty() {
                    title = word.chars().take(Self::DERIVED_CHARS).collect();
                }
                title.push('…');
                return Self::parse(&title).ok();
            }
            if !title.is_empty() {
                title.push(' ');
            }
            title.push_str(word);
        }
        Self::parse(&title).ok()
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConversationTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationTitle({:?})", self.0)
    }
}

/// Identifies a message within its conversation.
///
/// The server names messages `msg_` followed by a ULID, but a client may
/// choose the id of the message it sends (the seed's `"id": "msg_001"`, or a
/// UUID): sending again with the same id is then a retry, not a second
/// message. So an id is any 1 to 64 characters of ASCII letters, digits, `_`
/// and `-`, unique within its conversation only.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

/// Why a string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageIdError {
    /// Empty or longer than [`MessageId::MAX_LEN`].
    #[error("must be 1 to {max} characters", max = MessageId::MAX_LEN)]
    Length,
    /// A character other than ASCII letters, digits, `_` and `-`.
    #[error("may contain only ASCII letters, digits, `_` and `-`")]
    Character,
}

impl MessageId {
    /// The longest id, in bytes (all characters are ASCII).
    pub const MAX_LEN: usize = 64;

    /// The id the server gives a message: `msg_` and a ULID.
    pub fn generated(ulid: ulid::Ulid) -> Self {
        Self(format!("msg_{ulid}"))
    }

    /// Checks a client-chosen id.
    pub fn parse(raw: &str) -> Result<Self, MessageIdError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(MessageIdError::Length);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(MessageIdError::Character);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MessageId {
    type Err = MessageIdError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The text of a message a user sends: not blank, and at most a configured
/// number of bytes (32 KiB by default), which the service checks because the
/// limit is configuration, not a rule of the domain.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageText(String);

/// Why a string is not a message a user may send.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageTextError {
    /// Nothing but white space.
    #[error("must not be empty")]
    Empty,
    /// A NUL character, which PostgreSQL cannot store in text.
    #[error("must not contain NUL characters")]
    Nul,
}

impl MessageText {
    /// Checks a message's text, kept as it was typed (not trimmed: white space
    /// may matter in code a user pastes).
    pub fn parse(raw: &str) -> Result<Self, MessageTextError> {
        if raw.trim().is_empty() {
            return Err(MessageTextError::Empty);
        }
        if raw.contains('\0') {
            return Err(MessageTextError::Nul);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in bytes, which is what the configured limit counts.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a message has text. Here for `len`'s sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for MessageText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageText({} bytes)", self.0.len())
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageRole {
    /// The account that owns the conversation.
    User,
    /// The assistant's reply.
    Assistant,
}

impl MessageRole {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }
}

impl FromStr for MessageRole {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "user" => Ok(MessageRole::User),
            "assistant" => Ok(MessageRole::Assistant),
            _ => Err(UnknownName),
        }
    }
}

/// A stored name (a role, a status) that this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown name")]
pub struct UnknownName;

/// Where a message is in its life. A user message is born finished; an
/// assistant reply starts `InProgress` and ends in exactly one of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// The reply is being generated.
    InProgress,
    /// Complete.
    FinishedSuccessfully,
    /// Stopped before it was complete (on request, or its instance died with
    /// nobody to continue it); the partial text is kept.
    Interrupted,
    /// The generator failed part way; the partial text is kept and the
    /// metadata says why.
    Failed,
}

impl MessageStatus {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::InProgress => "in_progress",
            MessageStatus::FinishedSuccessfully => "finished_successfully",
            MessageStatus::Interrupted => "interrupted",
            MessageStatus::Failed => "failed",
        }
    }

    /// True once nothing more will be added to the message.
    pub fn is_final(self) -> bool {
        self != MessageStatus::InProgress
    }
}

impl FromStr for MessageStatus {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "in_progress" => Ok(MessageStatus::InProgress),
            "finished_successfully" => Ok(MessageStatus::FinishedSuccessfully),
            "interrupted" => Ok(MessageStatus::Interrupted),
            "failed" => Ok(MessageStatus::Failed),
            _ => Err(UnknownName),
        }
    }
}

/// Tokens a reply cost, when the model said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Tokens of the conversation sent to the model.
    pub prompt_tokens: u64,
    /// Tokens the model generated.
    pub completion_tokens: u64,
    /// Their total, as the model reported it.
    pub total_tokens: u64,
}

/// What is known about how a message was made. Empty for user messages
/// except for the temperature they asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageMetadata {
    /// The model that wrote an assistant reply.
    pub model_slug: Option<String>,
    /// Why the model stopped (`stop`, `length`, …), when it said.
    pub finish_reason: Option<String>,
    /// What the reply cost, when the model said.
    pub usage: Option<Usage>,
    /// The sampling temperature a user message asked for (0 to 2).
    pub temperature: Option<f32>,
    /// Why a `Failed` reply failed, in words fit for the user (never a
    /// credential or an internal detail).
    pub error: Option<String>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Unique within the conversation.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Who wrote it.
    pub role: MessageRole,
    /// The text: one part. (The seed's content has a list of parts; Waiter
    /// writes and accepts text only, so there is always exactly one.)
    pub text: String,
    /// See [`MessageStatus`].
    pub status: MessageStatus,
    /// The message it answers: a reply's user message, or a user message's
    /// preceding reply. `None` for the first message.
    pub parent_id: Option<MessageId>,
    /// See [`MessageMetadata`].
    pub metadata: MessageMetadata,
    /// When it was sent, or when the reply started.
    pub created_at: Timestamp,
    /// When its text or status last changed.
    pub updated_at: Timestamp,
}

/// A conversation between an account and the assistant. Its messages are
/// read separately: a list of conversations never loads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Assigned when it starts and never changed.
    pub id: ConversationId,
    /// The only account that may see or change it.
    pub owner: AccountId,
    /// Given by the owner, or derived from the first message.
    pub title: ConversationTitle,
    /// Bumped by every change, a new message included, for `If-Match`.
    pub version: Version,
    /// When it started.
    pub created_at: Timestamp,
    /// When it last changed: a rename or a new message.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(raw: &str) -> MessageText {
        MessageText::parse(raw).unwrap()
    }

    #[test]
    fn a_short_first_message_is_its_own_title() {
        let title = ConversationTitle::derive_from(&text("  Explain   Redis\ncaching ")).unwrap();
        assert_eq!(title.as_str(), "Explain Redis caching");
    }

    #[test]
    fn a_long_first_message_is_cut_at_a_word_with_an_ellipsis() {
        let long = "word ".repeat(40);
        let title = ConversationTitle::derive_from(&text(&long)).unwrap();
        assert!(title.as_str().ends_with("word…"), "{title}");
        assert!(title.as_str().chars().count() <= ConversationTitle::DERIVED_CHARS + 1);
    }

    #[test]
    fn one_endless_word_is_cut_inside_it() {
        let title = ConversationTitle::derive_from(&text(&"x".repeat(500))).unwrap();
        assert_eq!(
            title.as_str().chars().count(),
            ConversationTitle::DERIVED_CHARS + 1
        );
    }

    #[test]
    fn message_ids_are_short_and_url_safe() {
        assert!(MessageId::parse("msg_001").is_ok());
        assert!(MessageId::parse("690d5b6c-02d8-8321-a91e-65ea55b781f7").is_ok());
        assert_eq!(MessageId::parse(""), Err(MessageIdError::Length));
        assert_eq!(
            MessageId::parse(&"a".repeat(65)),
            Err(MessageIdError::Length)
        );
        assert_eq!(MessageId::parse("a/b"), Err(MessageIdError::Character));
        assert_eq!(MessageId::parse("é"), Err(MessageIdError::Character));
    }

    #[test]
    fn blank_or_nul_text_is_not_a_message() {
        assert_eq!(MessageText::parse(" \n\t"), Err(MessageTextError::Empty));
        assert_eq!(MessageText::parse("a\0b"), Err(MessageTextError::Nul));
        assert_eq!(text(" keep  spacing ").as_str(), " keep  spacing ");
    }

    #[test]
    fn statuses_and_roles_round_trip_through_their_names() {
        for status in [
            MessageStatus::InProgress,
            MessageStatus::FinishedSuccessfully,
            MessageStatus::Interrupted,
            MessageStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse(), Ok(status));
        }
        for role in [MessageRole::User, MessageRole::Assistant] {
            assert_eq!(role.as_str().parse(), Ok(role));
        }
        assert_eq!("system".parse::<MessageRole>(), Err(UnknownName));
    }
}
