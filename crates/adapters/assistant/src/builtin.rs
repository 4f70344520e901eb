//! The built-in reply generator: a deterministic stand-in for a language model.
//!
//! It does not understand anything. It quotes the latest user message and
//! comments on its shape (a question or not, its length, its longest word,
//! what the user said before), then says what it is. Its only virtue is that
//! it needs nothing and is predictable: the same history always gives the
//! same text, split into the same chunks.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use waiter_ports::conversations::{
    Finish, FinishReason, ReplyChunk, ReplyGenerator, ReplyRequest, ReplyStream, Speaker, Turn,
};

/// Longest quote of the latest message, in words and in characters.
const QUOTE_WORDS: usize = 24;
const QUOTE_CHARS: usize = 240;
/// Longest quote of an earlier message, in words and in characters.
const EARLIER_QUOTE_WORDS: usize = 8;
const EARLIER_QUOTE_CHARS: usize = 80;
/// Longest keyword quoted, in characters.
const KEYWORD_CHARS: usize = 40;

/// A deterministic stand-in for a model, and Waiter's default generator.
///
/// Replies word by word (each chunk a word with the whitespace before it),
/// waiting `delay` before each chunk to feel like a model typing. Continuing
/// from a prefix of a reply it gave yields exactly the rest of that reply;
/// from anything else (a reply of another version of Waiter), nothing more.
#[derive(Debug, Clone)]
pub struct BuiltInGenerator {
    delay: Duration,
}

impl BuiltInGenerator {
    /// The pause before each chunk when none is configured.
    pub const DEFAULT_DELAY: Duration = Duration::from_millis(20);

    /// What assistant messages it writes record as their `model_slug`.
    pub const MODEL_SLUG: &'static str = "waiter-built-in";

    /// A generator pausing `delay` before each chunk; zero streams at once.
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

impl Default for BuiltInGenerator {
    fn default() -> Self {
        Self::new(Self::DEFAULT_DELAY)
    }
}

impl ReplyGenerator for BuiltInGenerator {
    fn model_slug(&self) -> &str {
        Self::MODEL_SLUG
    }

    fn generate(&self, request: ReplyRequest) -> ReplyStream {
        let reply = compose(&request.history);
        let rest = reply
            .strip_prefix(request.continue_from.as_str())
            .unwrap_or_default();
        let chunks: Vec<String> = word_chunks(rest).map(str::to_owned).collect();
        let delay = self.delay;
        let text = stream::iter(chunks).then(move |chunk| async move {
            // Even a zero sleep waits for the timer's next millisecond tick.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(ReplyChunk::Text(chunk))
        });
        let finish = Finish {
            reason: Some(FinishReason::Stop),
            usage: None,
        };
        Box::pin(text.chain(stream::once(async { Ok(ReplyChunk::Finished(finish)) })))
    }
}

/// The whole reply to `history`.
fn compose(history: &[Turn]) -> String {
    let mut said = history
        .iter()
        .rev()
        .filter(|turn| turn.speaker == Speaker::User)
        .map(|turn| turn.text.split_whitespace().collect::<Vec<_>>());
    let Some(latest) = said.next().filter(|words| !words.is_empty()) else {
        return "There is nothing to answer yet: send me a message and I will reply to it."
            .to_owned();
    };
    let earlier = said.find(|words| !words.is_empty());

    let quoted = quote(&latest, QUOTE_WORDS, QUOTE_CHARS);
    let mut reply = format!("You wrote: “{quoted}”");
    if !quoted.ends_with(['.', '?', '!', '…']) {
        reply.push('.');
    }
    let last_word = latest.last().copied().unwrap_or_default();
    reply.push(' ');
    reply.push_str(if last_word.ends_with('?') {
        "That is a question, and it deserves a straight answer: I cannot look anything up, \
         so all I can do is think it through with you."
    } else if last_word.ends_with('!') {
        "You said that with some force, so it clearly matters to you."
    } else {
        "I read that as a statement rather than a question."
    });
    reply.push(' ');
    reply.push_str(&match latest.len() {
        1 => "A single word says a lot when it is well chosen.".to_owned(),
        n @ 2..=12 => format!("It is short, {n} words, so let me take it slowly."),
        n => format!("It runs to {n} words, so let me pick out what stands out."),
    });
    if let Some(keyword) = keyword(&latest) {
        reply.push_str(&format!(
            " The word that carries the most weight seems to be “{keyword}”."
        ));
    }
    match earlier {
        Some(earlier) => reply.push_str(&format!(
            " Earlier you wrote “{}”, and this follows on from it.",
            quote(&earlier, EARLIER_QUOTE_WORDS, EARLIER_QUOTE_CHARS)
        )),
        None => reply.push_str(" This is where our conversation starts."),
    }
    reply.push_str(
        "\n\nI am Waiter's built-in assistant, a deterministic stand-in for a language model: \
         the same conversation always gets this same reply. Set WAITER_ASSISTANT_URL to talk \
         to a real model.",
    );
    reply
}

/// The first `max_words` of `words`, at most `max_chars` long, with an
/// ellipsis when anything was left out.
fn quote(words: &[&str], max_words: usize, max_chars: usize) -> String {
    let joined = words[..words.len().min(max_words)].join(" ");
    let mut quote = truncate(&joined, max_chars).to_owned();
    if quote.len() < joined.len() || words.len() > max_words {
        quote.push('…');
    }
    quote
}

/// The longest word without its surrounding punctuation (the first of
/// equals), cut to a readable length; `None` when no word has a letter or digit.
fn keyword(words: &[&str]) -> Option<String> {
    let word = words
        .iter()
        .map(|word| word.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|word| !word.is_empty())
        .fold(None, |longest: Option<&str>, word| match longest {
            Some(longest) if longest.chars().count() >= word.chars().count() => Some(longest),
            _ => Some(word),
        })?;
    let cut = truncate(word, KEYWORD_CHARS);
    Some(if cut.len() < word.len() {
        format!("{cut}…")
    } else {
        cut.to_owned()
    })
}

/// `text` cut to at most `max_chars` characters.
fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// `text` split before each run of whitespace that follows a non-space, so
/// each chunk is a word with the whitespace before it (`"Redis"`, `" caching"`).
/// Splitting the rest of a text cut at a chunk boundary gives the text's
/// remaining chunks, which is what makes continuations chunk for chunk equal.
fn word_chunks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let word_start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        let end = rest[word_start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |end| word_start + end);
        let (chunk, after) = rest.split_at(end);
        rest = after;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Turn {
        Turn::new(Speaker::User, text)
    }

    #[test]
    fn chunks_are_words_with_the_whitespace_before_them() {
        let chunks: Vec<&str> = word_chunks("Redis caching\n\nstores  data.").collect();
        assert_eq!(chunks, ["Redis", " caching", "\n\nstores", "  data."]);
        let chunks: Vec<&str> = word_chunks(" rest of it ").collect();
        assert_eq!(chunks, [" rest", " of", " it", " "]);
        assert_eq!(word_chunks("").count(), 0);
    }

    #[test]
    fn chunks_put_back_together_are_the_text() {
        let text = compose(&[user("Can you explain   Redis\tcaching?")]);
        assert_eq!(word_chunks(&text).collect::<String>(), text);
        assert!(word_chunks(&text).all(|chunk| !chunk.is_empty()));
    }

    #[test]
    fn quotes_are_cut_to_a_readable_length() {
        let long: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
        let words: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(quote(&words[..3], 24, 240), "w0 w1 w2");
        assert_eq!(quote(&words, 3, 240), "w0 w1 w2…");
        assert_eq!(quote(&["ééééé"], 24, 3), "ééé…");
    }

    #[test]
    fn the_keyword_is_the_first_longest_word_without_punctuation() {
        assert_eq!(
            keyword(&["Why", "(caching)", "matters,", "really?"]).as_deref(),
            Some("caching")
        );
        assert_eq!(keyword(&["?!", "…"]), None);
        let long = "x".repeat(100);
        assert_eq!(keyword(&[&long]), Some(format!("{}…", "x".repeat(40))));
    }

    #[test]
    fn a_conversation_without_user_words_gets_a_prompt() {
        let prompt = "There is nothing to answer yet: send me a message and I will reply to it.";
        assert_eq!(compose(&[]), prompt);
        assert_eq!(compose(&[Turn::new(Speaker::System, "Be nice.")]), prompt);
        assert_eq!(compose(&[user("  \n ")]), prompt);
    }
}
