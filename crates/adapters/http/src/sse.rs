//! A reply's events as a Server-Sent Events response, in the seed's protocol.
//!
//! Each [`SequencedEvent`] becomes one SSE event whose `id` is its position,
//! so a client that reconnects sends it back as `Last-Event-ID` and resumes
//! after it. The `data` of each is the seed's JSON, compact, on one line
//! (JSON escapes every line break inside strings). While no event comes, a
//! `: ping` comment every 15 seconds keeps proxies from closing the
//! connection and lets actix notice a client that left. The response ends
//! after `[DONE]`; with `event: resume` when the instance serving it shuts
//! down mid-reply (another instance carries the reply on); or when the
//! reply's events end (the log failed). In the last two cases the client
//! follows the reply again with `Last-Event-ID`.
//!
//! This module only renders: which events exist, and in what order, is the
//! conversation use cases' business.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderName};
use actix_web::web::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use waiter_domain::{ConversationId, MessageMetadata, MessageStatus};
use waiter_ports::conversations::{ReplyEvent, ReplyEvents, SequencedEvent};

use crate::dto::{MessageStatusName, SeedMessageBody};
use crate::idempotency::mark_replayed;

/// The media type of an event stream.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// How long the stream may stay silent before a `: ping` comment.
const PING_EVERY: Duration = Duration::from_secs(15);

/// The comment sent while no event comes.
const PING: &[u8] = b": ping\n\n";

/// True when the request's `Accept` asks for an event stream (any media
/// range naming `text/event-stream`, whatever else it lists).
pub(crate) fn wants_event_stream(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            range
                .split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case(EVENT_STREAM))
        })
}

/// The 200 event-stream response carrying `events` of the reply in
/// `conversation`. `replayed` marks the answer to a retried send.
pub(crate) fn response(
    events: ReplyEvents,
    conversation: ConversationId,
    replayed: bool,
) -> HttpResponse {
    let state = Rendering {
        events,
        renderer: Renderer::new(conversation),
        _open: OpenStream::new(),
        done: false,
    };
    let body = futures::stream::unfold(state, next_frame);
    let mut response = HttpResponse::Ok();
    response
        .content_type(EVENT_STREAM)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((HeaderName::from_static("x-accel-buffering"), "no"))
        // Compression would buffer the events; actix's `Compress` leaves a
        // response that names its encoding as it is.
        .insert_header((header::CONTENT_ENCODING, "identity"));
    let mut response = response.streaming(body);
    if replayed {
        mark_replayed(&mut response);
    }
    response
}

/// Where a response's body stands.
struct Rendering {
    events: ReplyEvents,
    renderer: Renderer,
    done: bool,
    _open: OpenStream,
}

/// Event streams being sent.
const STREAMS_OPEN: &str = "waiter_event_streams_open";
/// How long event streams stayed open.
const STREAM_DURATION_SECONDS: &str = "waiter_event_stream_duration_seconds";

/// Counts an event stream in [`STREAMS_OPEN`] while it is sent,
/// and records how long it stayed open when it ends, with its reply's last
/// event or with its client gone: event streams are left out of the request
/// latency histogram, whose durations they would swamp.
struct OpenStream {
    opened: Instant,
}

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!(STREAMS_OPEN).increment(1.0);
        Self {
            opened: Instant::now(),
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(STREAMS_OPEN).decrement(1.0);
        metrics::histogram!(STREAM_DURATION_SECONDS).record(self.opened.elapsed());
    }
}

/// The next chunk of the body: an event, or a ping after a silence.
async fn next_frame(mut state: Rendering) -> Option<(Result<Bytes, Infallible>, Rendering)> {
    if state.done {
        return None;
    }
    loop {
        let event = match actix_web::rt::time::timeout(PING_EVERY, state.events.next()).await {
            Err(_silence) => return Some((Ok(Bytes::from_static(PING)), state)),
            Ok(None) => return None,
            Ok(Some(event)) => event,
        };
        state.done = matches!(event.event, ReplyEvent::Done | ReplyEvent::Resume);
        if let Some(frame) = state.renderer.frame(event) {
            return Some((Ok(Bytes::from(frame)), state));
        }
        if state.done {
            return None;
        }
    }
}

/// Turns the events of one conversation's reply into SSE frames.
#[derive(Debug)]
pub(crate) struct Renderer {
    conversation: String,
}

impl Renderer {
    pub(crate) fn new(conversation: ConversationId) -> Self {
        Self {
            conversation: conversation.to_string(),
        }
    }

    /// The SSE frame of one event: `id`, then `event` where the seed names
    /// one, then `data`, and the blank line that ends it. `None` only if the
    /// event cannot be encoded, which is logged and skipped.
    pub(crate) fn frame(&self, event: SequencedEvent) -> Option<String> {
        let conversation_id = self.conversation.as_str();
        let (name, data) = match event.event {
            ReplyEvent::DeltaEncoding => (Some("delta_encoding"), encode(&"v1")),
            ReplyEvent::ResumeToken(token) => (
                None,
                encode(&ResumeTokenData {
                    kind: "resume_conversation_token",
                    token: &token,
                    conversation_id,
                }),
            ),
            ReplyEvent::InputMessage(message) => (
                None,
                encode(&InputMessageData {
                    kind: "input_message",
                    input_message: SeedMessageBody::from(message),
                    conversation_id,
                }),
            ),
            ReplyEvent::ReplyAdded(message) => (
                Some("delta"),
                encode(&AddData {
                    o: "add",
                    v: AddedMessage {
                        message: SeedMessageBody::from(message),
                        conversation_id,
                    },
                }),
            ),
            ReplyEvent::FirstText(reply) => (
                None,
                encode(&MarkerData {
                    kind: "message_marker",
                    conversation_id,
                    message_id: reply.as_str(),
                    marker: "user_visible_token",
                    event: "first",
                }),
            ),
            ReplyEvent::Append(text) => (
                Some("delta"),
                encode(&PatchData {
                    v: vec![Patch {
                        p: "/message/content/parts/0",
                        o: "append",
                        v: PatchValue::Text(&text),
                    }],
                }),
            ),
            ReplyEvent::Ended { status, metadata } => {
                (Some("delta"), encode(&ended(status, metadata)))
            }
            ReplyEvent::StreamComplete => (
                None,
                encode(&StreamCompleteData {
                    kind: "message_stream_complete",
                    conversation_id,
                }),
            ),
            ReplyEvent::Done => (None, Some("[DONE]".to_owned())),
            ReplyEvent::Resume => (
                Some("resume"),
                encode(&ResumeData {
                    kind: "resume",
                    conversation_id,
                    last_event_id: event.seq,
                }),
            ),
        };
        let data = data?;
        let mut frame = format!("id: {}\n", event.seq);
        if let Some(name) = name {
            frame.push_str("event: ");
            frame.push_str(name);
            frame.push('\n');
        }
        frame.push_str("data: ");
        frame.push_str(&data);
        frame.push_str("\n\n");
        Some(frame)
    }
}

/// The compact JSON of `value`.
fn encode(value: &impl Serialize) -> Option<String> {
    serde_json::to_string(value)
        .inspect_err(|err| tracing::error!(%err, "cannot encode a reply event"))
        .ok()
}

/// The closing delta: the final status, `end_turn`, and the metadata the
/// reply ended with.
fn ended(status: MessageStatus, metadata: MessageMetadata) -> PatchData<'static> {
    PatchData {
        v: vec![
            Patch {
                p: "/message/status",
                o: "replace",
                v: PatchValue::Status(status.into()),
            },
            Patch {
                p: "/message/end_turn",
                o: "replace",
                v: PatchValue::Flag(true),
            },
            Patch {
                p: "/message/metadata",
                o: "append",
                v: PatchValue::Metadata(EndMetadata {
                    is_complete: true,
                    finish_reason: metadata.finish_reason,
                    error: metadata.error,
                }),
            },
        ],
    }
}

#[derive(Serialize)]
struct ResumeTokenData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    token: &'a str,
    conversation_id: &'a str,
}

#[derive(Serialize)]
struct InputMessageData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    input_message: SeedMessageBody,
    conversation_id: &'a str,
}

#[derive(Serialize)]
struct AddData<'a> {
    o: &'static str,
    v: AddedMessage<'a>,
}

#[derive(Serialize)]
struct AddedMessage<'a> {
    message: SeedMessageBody,
    conversation_id: &'a str,
}

#[derive(Serialize)]
struct MarkerData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    conversation_id: &'a str,
    message_id: &'a str,
    marker: &'static str,
    event: &'static str,
}

#[derive(Serialize)]
struct PatchData<'a> {
    v: Vec<Patch<'a>>,
}

/// One operation of a delta: at path `p`, do `o` with `v`.
#[derive(Serialize)]
struct Patch<'a> {
    p: &'static str,
    o: &'static str,
    v: PatchValue<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PatchValue<'a> {
    Text(&'a str),
    Status(MessageStatusName),
    Flag(bool),
    Metadata(EndMetadata),
}

/// What the closing delta appends to the reply's metadata.
#[derive(Serialize)]
struct EndMetadata {
    is_complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Why the stream ends early: follow the reply again after `last_event_id`.
#[derive(Serialize)]
struct ResumeData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    conversation_id: &'a str,
    last_event_id: u64,
}

#[derive(Serialize)]
struct StreamCompleteData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    conversation_id: &'a str,
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use waiter_domain::MessageId;

    use super::*;

    fn conversation() -> ConversationId {
        "conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC".parse().unwrap()
    }

    #[test]
    fn an_event_stream_is_wanted_whatever_else_accept_lists() {
        for (accept, wanted) in [
            ("text/event-stream", true),
            ("TEXT/Event-Stream", true),
            ("application/json, text/event-stream;q=0.5", true),
            ("application/json", false),
            ("text/*", false),
            ("text/event-streams", false),
        ] {
            let req = TestRequest::default()
                .insert_header((header::ACCEPT, accept))
                .to_http_request();
            assert_eq!(wants_event_stream(&req), wanted, "{accept}");
        }
        assert!(!wants_event_stream(
            &TestRequest::default().to_http_request()
        ));
    }

    #[test]
    fn a_failed_reply_ends_with_its_reason() {
        let frame = Renderer::new(conversation()).frame(SequencedEvent {
            seq: 12,
            event: ReplyEvent::Ended {
                status: MessageStatus::Failed,
                metadata: MessageMetadata {
                    error: Some("the model is unreachable".to_owned()),
                    ..MessageMetadata::default()
                },
            },
        });
        assert_eq!(
            frame.as_deref(),
            Some(concat!(
                "id: 12\nevent: delta\ndata: {\"v\":[",
                "{\"p\":\"/message/status\",\"o\":\"replace\",\"v\":\"failed\"},",
                "{\"p\":\"/message/end_turn\",\"o\":\"replace\",\"v\":true},",
                "{\"p\":\"/message/metadata\",\"o\":\"append\",\"v\":",
                "{\"is_complete\":true,\"error\":\"the model is unreachable\"}}]}\n\n"
            ))
        );
    }

    #[test]
    fn a_stream_cut_by_a_shutdown_says_where_to_resume() {
        let frame = Renderer::new(conversation()).frame(SequencedEvent {
            seq: 9,
            event: ReplyEvent::Resume,
        });
        assert_eq!(
            frame.as_deref(),
            Some(concat!(
                "id: 9\nevent: resume\ndata: {\"type\":\"resume\",",
                "\"conversation_id\":\"conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC\",",
                "\"last_event_id\":9}\n\n"
            ))
        );
    }

    #[test]
    fn a_marker_names_its_reply() {
        let frame = Renderer::new(conversation()).frame(SequencedEvent {
            seq: 5,
            event: ReplyEvent::FirstText(MessageId::parse("msg_2").unwrap()),
        });
        assert_eq!(
            frame.as_deref(),
            Some(concat!(
                "id: 5\ndata: {\"type\":\"message_marker\",",
                "\"conversation_id\":\"conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC\",",
                "\"message_id\":\"msg_2\",\"marker\":\"user_visible_token\",\"event\":\"first\"}\n\n"
            ))
        );
    }
}
