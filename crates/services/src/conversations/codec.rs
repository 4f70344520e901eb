//! How reply events and conversations are written as bytes: JSON of private
//! mirror types, for the reply event log and for the cache alike.
//!
//! The mirrors hold plain fields and are checked again on the way out, so a
//! corrupt or foreign entry is an error, never a value that skipped the
//! domain's parsers. Nothing outside this service reads these bytes.

use serde::{Deserialize, Serialize};
use waiter_domain::{
    AccountId, Conversation, ConversationId, ConversationTitle, Message, MessageId,
    MessageMetadata, MessageRole, MessageStatus, Timestamp, Usage, Version,
};
use waiter_ports::PortError;
use waiter_ports::conversations::{
    ConversationDetail, ConversationPage, ConversationSummary, ReplyEvent,
};

/// Encodes an event for the reply's log.
pub(super) fn encode_event(event: &ReplyEvent) -> Result<Vec<u8>, PortError> {
    serde_json::to_vec(&EventRecord::try_from(event)?).map_err(PortError::unexpected)
}

/// Decodes an event [`encode_event`] wrote.
pub(super) fn decode_event(payload: &[u8]) -> Result<ReplyEvent, PortError> {
    serde_json::from_slice::<EventRecord>(payload)
        .map_err(PortError::unexpected)?
        .into_event()
}

fn corrupt(what: &str) -> PortError {
    PortError::unexpected(anyhow::anyhow!("stored {what} is invalid"))
}

/// A [`ReplyEvent`] as the log holds it.
///
/// Externally tagged (`"done"`, `{"append":{"text":"…"}}`): an internally
/// tagged enum is buffered before it is read, and serde_json's
/// `arbitrary_precision` numbers (the temperature) cannot be read back from
/// that buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EventRecord {
    DeltaEncoding,
    ResumeToken {
        token: String,
    },
    InputMessage {
        message: MessageRecord,
    },
    ReplyAdded {
        message: MessageRecord,
    },
    FirstText {
        message_id: String,
    },
    Append {
        text: String,
    },
    Ended {
        status: String,
        metadata: MetadataRecord,
    },
    StreamComplete,
    Done,
}

impl TryFrom<&ReplyEvent> for EventRecord {
    type Error = PortError;

    fn try_from(event: &ReplyEvent) -> Result<Self, PortError> {
        Ok(match event {
            ReplyEvent::DeltaEncoding => Self::DeltaEncoding,
            ReplyEvent::ResumeToken(token) => Self::ResumeToken {
                token: token.clone(),
            },
            ReplyEvent::InputMessage(message) => Self::InputMessage {
                message: message.into(),
            },
            ReplyEvent::ReplyAdded(message) => Self::ReplyAdded {
                message: message.into(),
            },
            ReplyEvent::FirstText(id) => Self::FirstText {
                message_id: id.to_string(),
            },
            ReplyEvent::Append(text) => Self::Append { text: text.clone() },
            ReplyEvent::Ended { status, metadata } => Self::Ended {
                status: status.as_str().to_owned(),
                metadata: metadata.into(),
            },
            ReplyEvent::StreamComplete => Self::StreamComplete,
            ReplyEvent::Done => Self::Done,
            ReplyEvent::Resume => {
                return Err(PortError::unexpected(anyhow::anyhow!(
                    "a resume event is never logged"
                )));
            }
        })
    }
}

impl EventRecord {
    fn into_event(self) -> Result<ReplyEvent, PortError> {
        Ok(match self {
            Self::DeltaEncoding => ReplyEvent::DeltaEncoding,
            Self::ResumeToken { token } => ReplyEvent::ResumeToken(token),
            Self::InputMessage { message } => ReplyEvent::InputMessage(message.into_message()?),
            Self::ReplyAdded { message } => ReplyEvent::ReplyAdded(message.into_message()?),
            Self::FirstText { message_id } => ReplyEvent::FirstText(
                MessageId::parse(&message_id).map_err(|_| corrupt("message id"))?,
            ),
            Self::Append { text } => ReplyEvent::Append(text),
            Self::Ended { status, metadata } => ReplyEvent::Ended {
                status: status.parse().map_err(|_| corrupt("status"))?,
                metadata: metadata.into(),
            },
            Self::StreamComplete => ReplyEvent::StreamComplete,
            Self::Done => ReplyEvent::Done,
        })
    }
}

/// A [`Message`] as the log and the cache hold it.
#[derive(Debug, Serialize, Deserialize)]
struct MessageRecord {
    id: String,
    conversation_id: String,
    role: String,
    text: String,
    status: String,
    parent_id: Option<String>,
    metadata: MetadataRecord,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<&Message> for MessageRecord {
    fn from(message: &Message) -> Self {
        Self {
            id: message.id.to_string(),
            conversation_id: message.conversation_id.to_string(),
            role: message.role.as_str().to_owned(),
            text: message.text.clone(),
            status: message.status.as_str().to_owned(),
            parent_id: message.parent_id.as_ref().map(ToString::to_string),
            metadata: (&message.metadata).into(),
            created_at: message.created_at,
            updated_at: message.updated_at,
        }
    }
}

impl MessageRecord {
    fn into_message(self) -> Result<Message, PortError> {
        Ok(Message {
            id: MessageId::parse(&self.id).map_err(|_| corrupt("message id"))?,
            conversation_id: self
                .conversation_id
                .parse::<ConversationId>()
                .map_err(|_| corrupt("conversation id"))?,
            role: self
                .role
                .parse::<MessageRole>()
                .map_err(|_| corrupt("role"))?,
            text: self.text,
            status: self
                .status
                .parse::<MessageStatus>()
                .map_err(|_| corrupt("status"))?,
            parent_id: self
                .parent_id
                .map(|id| MessageId::parse(&id))
                .transpose()
                .map_err(|_| corrupt("parent id"))?,
            metadata: self.metadata.into(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// [`MessageMetadata`] as the log and the cache hold it.
#[derive(Debug, Serialize, Deserialize)]
struct MetadataRecord {
    model_slug: Option<String>,
    finish_reason: Option<String>,
    usage: Option<UsageRecord>,
    temperature: Option<f32>,
    error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct UsageRecord {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<&MessageMetadata> for MetadataRecord {
    fn from(metadata: &MessageMetadata) -> Self {
        Self {
            model_slug: metadata.model_slug.clone(),
            finish_reason: metadata.finish_reason.clone(),
            usage: metadata.usage.map(|usage| UsageRecord {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
            }),
            temperature: metadata.temperature,
            error: metadata.error.clone(),
        }
    }
}

impl From<MetadataRecord> for MessageMetadata {
    fn from(record: MetadataRecord) -> Self {
        Self {
            model_slug: record.model_slug,
            finish_reason: record.finish_reason,
            usage: record.usage.map(|usage| Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
            }),
            temperature: record.temperature,
            error: record.error,
        }
    }
}

/// A [`Conversation`] as the cache holds it.
#[derive(Debug, Serialize, Deserialize)]
struct ConversationRecord {
    id: String,
    owner: String,
    title: String,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<&Conversation> for ConversationRecord {
    fn from(conversation: &Conversation) -> Self {
        Self {
            id: conversation.id.to_string(),
            owner: conversation.owner.to_string(),
            title: conversation.title.to_string(),
            version: conversation.version.get(),
            created_at: conversation.created_at,
            updated_at: conversation.updated_at,
        }
    }
}

impl ConversationRecord {
    fn into_conversation(self) -> Result<Conversation, PortError> {
        Ok(Conversation {
            id: self.id.parse().map_err(|_| corrupt("conversation id"))?,
            owner: self
                .owner
                .parse::<AccountId>()
                .map_err(|_| corrupt("owner"))?,
            title: ConversationTitle::parse(&self.title).map_err(|_| corrupt("title"))?,
            version: Version::new(self.version),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A [`ConversationDetail`] as the cache holds it (`conv:{id}:history`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CachedDetail {
    conversation: ConversationRecord,
    messages: Vec<MessageRecord>,
}

impl From<&ConversationDetail> for CachedDetail {
    fn from(detail: &ConversationDetail) -> Self {
        Self {
            conversation: (&detail.conversation).into(),
            messages: detail.messages.iter().map(MessageRecord::from).collect(),
        }
    }
}

impl CachedDetail {
    pub(super) fn into_detail(self) -> Result<ConversationDetail, PortError> {
        Ok(ConversationDetail {
            conversation: self.conversation.into_conversation()?,
            messages: self
                .messages
                .into_iter()
                .map(MessageRecord::into_message)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A [`ConversationPage`] as the cache holds it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CachedPage {
    items: Vec<CachedSummary>,
    total: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedSummary {
    conversation: ConversationRecord,
    last_message: Option<String>,
}

impl From<&ConversationPage> for CachedPage {
    fn from(page: &ConversationPage) -> Self {
        Self {
            items: page
                .items
                .iter()
                .map(|summary| CachedSummary {
                    conversation: (&summary.conversation).into(),
                    last_message: summary.last_message.clone(),
                })
                .collect(),
            total: page.total,
        }
    }
}

impl CachedPage {
    pub(super) fn into_page(self) -> Result<ConversationPage, PortError> {
        Ok(ConversationPage {
            items: self
                .items
                .into_iter()
                .map(|summary| {
                    Ok(ConversationSummary {
                        conversation: summary.conversation.into_conversation()?,
                        last_message: summary.last_message,
                    })
                })
                .collect::<Result<_, PortError>>()?,
            total: self.total,
        })
    }
}
