//! The contract every [`ReplyGenerator`] adapter must honour: the built-in
//! generator, and the OpenAI-compatible client in front of a well-behaved
//! model.
//!
//! Each check is a separate `pub async fn` taking a generator; an adapter's
//! test file runs every one as its own `#[tokio::test]` with
//! [`reply_generator_contract_tests!`](crate::reply_generator_contract_tests).
//! The checks need a deterministic model (the built-in, or a fake upstream
//! that answers like a model at temperature 0 and continues a trailing
//! partial assistant message as llama.cpp does): only then can a
//! continuation be compared with the reply it continues, which is what
//! makes a reply resumed on another instance equal an uninterrupted one.

use futures::StreamExt;
use futures::future::join_all;
use waiter_ports::conversations::{
    Finish, ReplyChunk, ReplyGenerator, ReplyRequest, Speaker, Turn,
};

/// Generates one `#[tokio::test]` per reply generator check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn ReplyGenerator))`
/// that sets up a generator (and whatever it talks to), runs `check` on it
/// and cleans up.
#[macro_export]
macro_rules! reply_generator_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(reply_generator, $fixture:
            a_reply_is_text_then_one_finish,
            the_same_conversation_gets_the_same_reply,
            the_reply_depends_on_the_whole_conversation,
            a_continuation_is_the_rest_of_the_reply,
            continuing_a_whole_reply_adds_nothing,
            the_model_slug_is_named_and_stable,
            concurrent_replies_do_not_mix,
            a_dropped_reply_leaves_the_generator_working,
        );
    };
}

/// A conversation of a few turns of every kind, ending with `latest` from the user.
fn conversation(earlier: &str, latest: &str) -> Vec<Turn> {
    vec![
        Turn::new(Speaker::System, "You are a helpful assistant."),
        Turn::new(Speaker::User, earlier),
        Turn::new(
            Speaker::Assistant,
            "Happy to help. What would you like to know?",
        ),
        Turn::new(Speaker::User, latest),
    ]
}

fn request(history: Vec<Turn>, continue_from: &str) -> ReplyRequest {
    ReplyRequest {
        history,
        temperature: Some(0.0),
        continue_from: continue_from.to_owned(),
    }
}

/// A reply read to its end.
struct Reply {
    chunks: Vec<String>,
    finish: Finish,
}

impl Reply {
    fn text(&self) -> String {
        self.chunks.concat()
    }
}

/// Reads the whole reply to `request`, checking its shape: non-empty text
/// chunks, then one `Finished`, then the end.
async fn reply(generator: &dyn ReplyGenerator, request: ReplyRequest) -> Reply {
    let mut stream = generator.generate(request);
    let mut chunks = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(ReplyChunk::Text(text))) => {
                assert!(!text.is_empty(), "a text chunk must not be empty");
                chunks.push(text);
            }
            Some(Ok(ReplyChunk::Finished(finish))) => {
                assert!(
                    stream.next().await.is_none(),
                    "nothing may follow the finish"
                );
                return Reply { chunks, finish };
            }
            Some(Err(error)) => panic!("the reply failed after {chunks:?}: {error:?}"),
            None => panic!("the stream ended without a finish after {chunks:?}"),
        }
    }
}

/// A new reply has text, in non-empty chunks, then exactly one finish, then nothing.
pub async fn a_reply_is_text_then_one_finish(generator: &dyn ReplyGenerator) {
    let history = conversation("Hello!", "Can you explain Redis caching?");
    let reply = reply(generator, request(history, "")).await;
    assert!(!reply.chunks.is_empty(), "a new reply must have text");
    assert!(
        !reply.text().trim().is_empty(),
        "a new reply must say something"
    );
    if let Some(usage) = reply.finish.usage {
        assert!(usage.total_tokens >= usage.completion_tokens);
    }
}

/// A deterministic model answers the same conversation with the same chunks.
pub async fn the_same_conversation_gets_the_same_reply(generator: &dyn ReplyGenerator) {
    let history = conversation("Hello!", "What is a cache stampede?");
    let first = reply(generator, request(history.clone(), "")).await;
    let second = reply(generator, request(history, "")).await;
    assert_eq!(first.chunks, second.chunks);
    assert_eq!(first.finish, second.finish);
}

/// The reply answers the conversation it is given: the latest message and
/// the earlier ones both count.
pub async fn the_reply_depends_on_the_whole_conversation(generator: &dyn ReplyGenerator) {
    let base = reply(generator, request(conversation("Hello!", "Why Rust?"), "")).await;
    let other_latest = reply(generator, request(conversation("Hello!", "Why Go?"), "")).await;
    let other_earlier = reply(
        generator,
        request(conversation("Hi there.", "Why Rust?"), ""),
    )
    .await;
    assert_ne!(
        base.text(),
        other_latest.text(),
        "the latest message counts"
    );
    assert_ne!(base.text(), other_earlier.text(), "earlier messages count");
}

/// Continuing from the first chunks of a reply, at every cut, yields the
/// rest of it: the prefix is never repeated and nothing is lost.
pub async fn a_continuation_is_the_rest_of_the_reply(generator: &dyn ReplyGenerator) {
    let history = conversation("Hello!", "How do I size a connection pool?");
    let whole = reply(generator, request(history.clone(), "")).await;
    assert!(
        whole.chunks.len() >= 2,
        "the reply must have chunks to cut between"
    );
    for cut in 1..whole.chunks.len() {
        let prefix = whole.chunks[..cut].concat();
        let rest = reply(generator, request(history.clone(), &prefix)).await;
        assert_eq!(
            rest.chunks,
            whole.chunks[cut..],
            "continuing after chunk {cut}"
        );
        assert_eq!(rest.finish.reason, whole.finish.reason);
    }
}

/// Continuing a reply that was already whole (its instance died before
/// recording the finish) adds no text and finishes.
pub async fn continuing_a_whole_reply_adds_nothing(generator: &dyn ReplyGenerator) {
    let history = conversation("Hello!", "Thanks, that is all.");
    let whole = reply(generator, request(history.clone(), "")).await;
    let rest = reply(generator, request(history, &whole.text())).await;
    assert_eq!(rest.chunks, Vec::<String>::new());
    assert_eq!(rest.finish.reason, whole.finish.reason);
}

/// The model slug names the model, without spaces, and does not change
/// from one reply to the next.
pub async fn the_model_slug_is_named_and_stable(generator: &dyn ReplyGenerator) {
    let slug = generator.model_slug().to_owned();
    assert!(!slug.is_empty(), "the model slug must not be empty");
    assert!(
        !slug.contains(char::is_whitespace),
        "the model slug {slug:?} has whitespace"
    );
    reply(generator, request(conversation("Hello!", "Hi?"), "")).await;
    assert_eq!(generator.model_slug(), slug);
}

/// Replies generated at once each come out as they would alone.
pub async fn concurrent_replies_do_not_mix(generator: &dyn ReplyGenerator) {
    const REPLIES: usize = 8;
    let histories: Vec<Vec<Turn>> = (0..REPLIES)
        .map(|i| conversation("Hello!", &format!("Tell me about topic {i}, please.")))
        .collect();
    let mut alone = Vec::new();
    for history in &histories {
        alone.push(reply(generator, request(history.clone(), "")).await);
    }
    let at_once = join_all(
        histories
            .iter()
            .map(|history| reply(generator, request(history.clone(), ""))),
    )
    .await;
    for (i, (alone, at_once)) in alone.iter().zip(&at_once).enumerate() {
        assert_eq!(alone.chunks, at_once.chunks, "reply {i}");
    }
}

/// A reply stopped after its first chunk (its stream dropped) disturbs
/// nothing: the next reply is whole.
pub async fn a_dropped_reply_leaves_the_generator_working(generator: &dyn ReplyGenerator) {
    let history = conversation("Hello!", "Write me something long.");
    let whole = reply(generator, request(history.clone(), "")).await;
    let mut stopped = generator.generate(request(history.clone(), ""));
    match stopped.next().await {
        Some(Ok(ReplyChunk::Text(text))) => assert_eq!(text, whole.chunks[0]),
        other => panic!("expected the first chunk, got {other:?}"),
    }
    drop(stopped);
    let again = reply(generator, request(history, "")).await;
    assert_eq!(again.chunks, whole.chunks);
}
