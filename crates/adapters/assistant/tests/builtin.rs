//! The built-in generator's own promises: its exact text, its chunks, its
//! continuations and its pace.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use waiter_assistant::BuiltInGenerator;
use waiter_ports::conversations::{
    Finish, FinishReason, ReplyChunk, ReplyGenerator, ReplyRequest, Speaker, Turn,
};

fn asks(text: &str) -> ReplyRequest {
    ReplyRequest::new(vec![Turn::new(Speaker::User, text)])
}

fn continuing(mut request: ReplyRequest, prefix: &str) -> ReplyRequest {
    request.continue_from = prefix.to_owned();
    request
}

/// The text chunks of the reply to `request`, checking that it finished with `stop`.
async fn chunks(generator: &BuiltInGenerator, request: ReplyRequest) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut items = generator.generate(request);
    while let Some(item) = items.next().await {
        match item.expect("the built-in generator never fails") {
            ReplyChunk::Text(text) => chunks.push(text),
            ReplyChunk::Finished(finish) => {
                assert_eq!(
                    finish,
                    Finish {
                        reason: Some(FinishReason::Stop),
                        usage: None
                    }
                );
                assert!(items.next().await.is_none());
                return chunks;
            }
        }
    }
    panic!("the reply ended without a finish");
}

fn instant() -> BuiltInGenerator {
    BuiltInGenerator::new(Duration::ZERO)
}

const REDIS_REPLY: &str = "You wrote: “Hello! Can you explain Redis caching?” That is a question, and it \
deserves a straight answer: I cannot look anything up, so all I can do is think it through with \
you. It is short, 6 words, so let me take it slowly. The word that carries the most weight seems \
to be “explain”. This is where our conversation starts.\n\nI am Waiter's built-in assistant, a \
deterministic stand-in for a language model: the same conversation always gets this same reply. \
Set WAITER_ASSISTANT_URL to talk to a real model.";

#[tokio::test]
async fn the_reply_quotes_and_discusses_the_message_word_by_word() {
    let chunks = chunks(&instant(), asks("Hello! Can you explain Redis caching?")).await;
    assert_eq!(chunks.concat(), REDIS_REPLY);
    assert_eq!(chunks[..4], ["You", " wrote:", " “Hello!", " Can"]);
    assert!(chunks.contains(&"\n\nI".to_owned()), "{chunks:?}");
}

#[tokio::test]
async fn the_reply_follows_the_conversation() {
    let history = vec![
        Turn::new(Speaker::System, "Answer briefly."),
        Turn::new(Speaker::User, "I   like\ttea."),
        Turn::new(Speaker::Assistant, "Noted."),
        Turn::new(Speaker::User, "Tea is wonderful!"),
    ];
    let text = chunks(&instant(), ReplyRequest::new(history))
        .await
        .concat();
    assert!(
        text.starts_with(
            "You wrote: “Tea is wonderful!” You said that with some force, so it clearly matters \
             to you. It is short, 3 words, so let me take it slowly. The word that carries the \
             most weight seems to be “wonderful”. Earlier you wrote “I like tea.”, and this \
             follows on from it.\n\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_long_message_is_quoted_in_part() {
    let message = (1..=40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let text = chunks(&instant(), asks(&message)).await.concat();
    assert!(text.starts_with("You wrote: “w1 w2 "), "{text}");
    assert!(text.contains(" w24…” I read that as a statement"), "{text}");
    assert!(text.contains("It runs to 40 words"), "{text}");
}

#[tokio::test]
async fn temperature_changes_nothing() {
    let mut hot = asks("Hello!");
    hot.temperature = Some(2.0);
    assert_eq!(
        chunks(&instant(), hot).await,
        chunks(&instant(), asks("Hello!")).await
    );
}

#[tokio::test]
async fn a_continuation_from_inside_a_word_gives_the_rest_of_it() {
    let whole = chunks(&instant(), asks("Hello!")).await.concat();
    let prefix = &whole[..5]; // "You w"
    let rest = chunks(&instant(), continuing(asks("Hello!"), prefix)).await;
    assert_eq!(rest[0], "rote:");
    assert_eq!(format!("{prefix}{}", rest.concat()), whole);
}

#[tokio::test]
async fn a_text_it_did_not_write_is_not_continued() {
    let rest = chunks(
        &instant(),
        continuing(asks("Hello!"), "Some other model's words"),
    )
    .await;
    assert_eq!(rest, Vec::<String>::new());
}

#[tokio::test]
async fn the_model_slug_names_the_stand_in() {
    assert_eq!(BuiltInGenerator::default().model_slug(), "waiter-built-in");
}

#[tokio::test(start_paused = true)]
async fn each_chunk_waits_for_the_delay() {
    let delay = Duration::from_millis(20);
    let generator = BuiltInGenerator::new(delay);
    let start = Instant::now();
    let mut items = generator.generate(asks("Hello!"));

    let early = tokio::time::timeout(delay - Duration::from_millis(1), items.next()).await;
    assert!(early.is_err(), "the first chunk came before the delay");

    let mut texts = 0;
    while let Some(item) = items.next().await {
        if let Ok(ReplyChunk::Text(_)) = item {
            texts += 1;
        }
    }
    assert_eq!(texts, chunks(&instant(), asks("Hello!")).await.len());
    // Paused time moves only by the sleeps, so this is exact.
    assert_eq!(start.elapsed(), delay * texts as u32);
}

#[tokio::test(start_paused = true)]
async fn the_default_delay_is_twenty_milliseconds() {
    let start = Instant::now();
    let generator = BuiltInGenerator::default();
    let first = generator.generate(asks("Hello!")).next().await;
    assert!(matches!(first, Some(Ok(ReplyChunk::Text(_)))));
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}
