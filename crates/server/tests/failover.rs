//! Replies that outlive their instance, with two real `waiter` processes
//! sharing PostgreSQL and Redis, as behind a load balancer: a reply goes on
//! when the instance generating it is killed or restarted, a stop reaches
//! it from any instance, and a reply nobody could continue is interrupted,
//! never left in progress.
//!
//! The client here does what a careful client does: it remembers the last
//! event id it saw and, when its stream breaks or tells it to resume, asks
//! another instance for the events after it (`Last-Event-ID`).

mod process;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use process::{Server, Setup};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use waiter_assistant::BuiltInGenerator;
use waiter_ports::conversations::{ReplyChunk, ReplyGenerator, ReplyRequest, Speaker, Turn};

/// The built-in assistant's pause before each word: slow enough to act in
/// the middle of a reply, fast enough for a test.
const DELAY: &str = "40ms";
/// What each conversation asks; its reply is some sixty words long.
const QUESTION: &str = "Could a reply being written by one server carry on, word for word, \
    on another server when the first one is suddenly gone, and would the reader notice the seam?";
/// The longest any stream here may take to say something.
const SILENCE: Duration = Duration::from_secs(20);

/// PostgreSQL and Redis for a cluster of instances, `None` when either is
/// unavailable (and not required).
async fn cluster() -> Option<Setup> {
    let mut setup = Setup::postgres_redis(false).await?;
    setup.env.push(("WAITER_ASSISTANT_DELAY", DELAY.to_owned()));
    Some(setup)
}

/// The built-in assistant's whole reply to [`QUESTION`].
async fn whole_reply() -> String {
    let history = vec![Turn::new(Speaker::User, QUESTION)];
    let mut stream = BuiltInGenerator::new(Duration::ZERO).generate(ReplyRequest::new(history));
    let mut reply = String::new();
    while let Some(chunk) = stream.next().await {
        if let ReplyChunk::Text(text) = chunk.expect("the built-in generator never fails") {
            reply.push_str(&text);
        }
    }
    reply
}

/// One Server-Sent Event as received.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<u64>,
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn parse(block: &str) -> Option<Self> {
        let mut event = SseEvent {
            id: None,
            event: None,
            data: String::new(),
        };
        let mut has_data = false;
        for line in block.lines() {
            if let Some(id) = line.strip_prefix("id: ") {
                event.id = Some(id.parse().expect("numeric event ids"));
            } else if let Some(name) = line.strip_prefix("event: ") {
                event.event = Some(name.to_owned());
            } else if let Some(data) = line.strip_prefix("data: ") {
                event.data.push_str(data);
                has_data = true;
            }
        }
        has_data.then_some(event)
    }

    /// The text an `append` delta adds, if it is one.
    fn appended(&self) -> Option<String> {
        if self.event.as_deref() != Some("delta") {
            return None;
        }
        let data: Value = serde_json::from_str(&self.data).ok()?;
        let text: String = data["v"]
            .as_array()?
            .iter()
            .filter(|op| op["o"] == "append" && op["p"] == "/message/content/parts/0")
            .filter_map(|op| op["v"].as_str())
            .collect();
        (!text.is_empty()).then_some(text)
    }

    fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    fn is_resume(&self) -> bool {
        self.event.as_deref() == Some("resume")
    }
}

/// An event stream read as it arrives.
struct EventStream {
    response: Response,
    buffer: String,
}

impl EventStream {
    async fn open(request: RequestBuilder) -> Self {
        let response = request
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("the stream opens");
        assert_eq!(response.status(), StatusCode::OK);
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event; `None` when the stream ended or broke (its server died).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                match SseEvent::parse(&block) {
                    Some(event) => return Some(event),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout(SILENCE, self.response.chunk())
                .await
                .expect("the stream says something");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Events up to and including the `count`th piece of text.
    async fn until_text(&mut self, count: usize) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut texts = 0;
        while texts < count {
            let event = self.next().await.expect("the reply goes on");
            texts += usize::from(event.appended().is_some());
            events.push(event);
        }
        events
    }

    /// Every event to the stream's end, each with when it arrived.
    async fn rest(&mut self) -> Vec<(SseEvent, Instant)> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push((event, Instant::now()));
        }
        events
    }
}

/// The text a run of events adds up to.
fn text_of<'a>(events: impl IntoIterator<Item = &'a SseEvent>) -> String {
    events.into_iter().filter_map(SseEvent::appended).collect()
}

/// Asserts the events' ids go up by one from `first`.
fn assert_numbered_from(first: u64, events: &[SseEvent]) {
    let ids: Vec<u64> = events
        .iter()
        .map(|event| event.id.expect("an id"))
        .collect();
    let expected: Vec<u64> = (first..first + ids.len() as u64).collect();
    assert_eq!(ids, expected, "no event lost or repeated");
}

impl Server {
    fn api(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        // No overall timeout: streams last; reads are bounded one by one.
        self.client
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(token)
    }

    async fn signed_in(&self, email: &str) -> String {
        self.sign_up(email).await;
        self.sign_in(email).await.token
    }

    async fn new_conversation(&self, token: &str) -> String {
        let response = self
            .api(Method::POST, "/conversations", token)
            .json(&json!({"title": "Failover"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let conversation: Value = response.json().await.unwrap();
        conversation["id"].as_str().unwrap().to_owned()
    }

    /// Sends [`QUESTION`] and streams its reply.
    async fn ask(&self, token: &str, conversation: &str) -> EventStream {
        let message =
            json!({"role": "user", "content": {"content_type": "text", "parts": [QUESTION]}});
        let path = format!("/conversations/{conversation}/messages");
        EventStream::open(self.api(Method::POST, &path, token).json(&message)).await
    }

    /// Follows the conversation's reply after event `last`.
    async fn resume(&self, token: &str, conversation: &str, last: u64) -> EventStream {
        let path = format!("/conversations/{conversation}/stream");
        let request = self
            .api(Method::GET, &path, token)
            .header("last-event-id", last.to_string());
        EventStream::open(request).await
    }

    /// The conversation's last message, as stored.
    async fn last_message(&self, token: &str, conversation: &str) -> Value {
        let response = self
            .api(
                Method::GET,
                &format!("/conversations/{conversation}"),
                token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let detail: Value = response.json().await.unwrap();
        detail["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone()
    }

    /// SIGTERM, waiting for a clean exit off the async threads; how long
    /// the shutdown took.
    async fn terminate(self) -> Duration {
        let started = Instant::now();
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .unwrap();
        started.elapsed()
    }
}

/// The text of a message's JSON.
fn text(message: &Value) -> &str {
    message["content"]["parts"][0].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_goes_on_when_its_instance_is_killed() {
    let Some(setup) = cluster().await else {
        return;
    };
    let (a, b) = (setup.start().await, setup.start().await);
    let token = a.signed_in("killed@example.com").await;
    let conversation = a.new_conversation(&token).await;
    let mut on_a = a.ask(&token, &conversation).await;
    let seen = on_a.until_text(3).await;
    let last = seen.last().unwrap().id.unwrap();

    let killed = Instant::now();
    a.kill();
    let rest = b.resume(&token, &conversation, last).await.rest().await;
    let gap = rest
        .iter()
        .find(|(event, _)| event.appended().is_some())
        .map(|(_, at)| at.duration_since(killed))
        .expect("the reply goes on");
    eprintln!("failover gap (kill -9 to the next piece of text on B): {gap:?}");
    assert!(gap < Duration::from_secs(5), "{gap:?}");

    let rest: Vec<SseEvent> = rest.into_iter().map(|(event, _)| event).collect();
    assert!(rest.last().unwrap().is_done());
    assert_numbered_from(1, &seen);
    assert_numbered_from(last + 1, &rest);
    let whole = whole_reply().await;
    assert_eq!(text_of(seen.iter().chain(&rest)), whole);
    let stored = b.last_message(&token, &conversation).await;
    assert_eq!(text(&stored), whole);
    assert_eq!(stored["status"], "finished_successfully");
    drop(b);
    setup.cleanup().await;
}

/// Starts replies on `from`, terminates it, and follows each on `to`
/// after the `resume` event `from`'s streams end with: every reply whole,
/// none lost.
async fn restart_under_load(from: Server, to: &Server, token: &str, replies: usize) {
    let mut streams = Vec::new();
    for _ in 0..replies {
        let conversation = from.new_conversation(token).await;
        let stream = from.ask(token, &conversation).await;
        streams.push((conversation, stream));
    }
    let mut seen = Vec::new();
    for (_, stream) in &mut streams {
        seen.push(stream.until_text(2).await);
    }
    let (shutdown, cut) = tokio::join!(from.terminate(), async {
        let mut cut = Vec::new();
        for (_, stream) in &mut streams {
            cut.push(stream.rest().await);
        }
        cut
    });
    eprintln!("a graceful stop with {replies} replies in flight took {shutdown:?}");
    let whole = whole_reply().await;
    for (((conversation, _), mut seen), cut) in streams.into_iter().zip(seen).zip(cut) {
        seen.extend(cut.into_iter().map(|(event, _)| event));
        let resume = seen.pop().expect("the stream ends with an event");
        assert!(resume.is_resume(), "{resume:?}");
        let last = seen.last().unwrap().id.unwrap();
        assert_eq!(resume.id, Some(last), "resume after the last event given");
        assert_numbered_from(1, &seen);
        let rest: Vec<SseEvent> = to
            .resume(token, &conversation, last)
            .await
            .rest()
            .await
            .into_iter()
            .map(|(event, _)| event)
            .collect();
        assert!(rest.last().unwrap().is_done());
        assert_numbered_from(last + 1, &rest);
        assert_eq!(text_of(seen.iter().chain(&rest)), whole);
        let stored = to.last_message(token, &conversation).await;
        assert_eq!(text(&stored), whole);
        assert_eq!(stored["status"], "finished_successfully");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_two_instances_loses_no_reply() {
    let Some(setup) = cluster().await else {
        return;
    };
    let (a, b) = (setup.start().await, setup.start().await);
    let token = a.signed_in("rolling@example.com").await;
    // A restarts first, its replies carried on by B; then B, by the new A.
    restart_under_load(a, &b, &token, 3).await;
    let a = setup.start().await;
    restart_under_load(b, &a, &token, 3).await;
    // A stopping instance refuses no request it accepted, and starts
    // nothing new: the new A serves alone, replies and all.
    let conversation = a.new_conversation(&token).await;
    let events = a.ask(&token, &conversation).await.rest().await;
    assert!(events.last().unwrap().0.is_done());
    drop(a);
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_is_stopped_from_another_instance_at_once() {
    let Some(setup) = cluster().await else {
        return;
    };
    let (a, b) = (setup.start().await, setup.start().await);
    let token = a.signed_in("stopper@example.com").await;
    let conversation = a.new_conversation(&token).await;
    let mut on_a = a.ask(&token, &conversation).await;
    let seen = on_a.until_text(2).await;

    let asked = Instant::now();
    let path = format!("/conversations/{conversation}/generation");
    let (stopped, rest) = tokio::join!(
        async {
            let response = b.api(Method::DELETE, &path, &token).send().await.unwrap();
            (response.status(), asked.elapsed())
        },
        on_a.rest()
    );
    let (status, answered_in) = stopped;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (done, done_at) = rest.last().unwrap();
    assert!(done.is_done());
    let ended_in = done_at.duration_since(asked);
    eprintln!(
        "stop on B of a reply on A: its stream ended {ended_in:?} after the request, answered in {answered_in:?}"
    );
    // Far below the fallback's wait for a writer that does not answer.
    assert!(ended_in < Duration::from_secs(1), "{ended_in:?}");
    let stored = b.last_message(&token, &conversation).await;
    assert_eq!(stored["status"], "interrupted");
    let streamed = text_of(seen.iter().chain(rest.iter().map(|(event, _)| event)));
    assert_eq!(
        text(&stored),
        streamed,
        "what was streamed is what was kept"
    );
    assert!(whole_reply().await.starts_with(&streamed));
    drop((a, b));
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_no_instance_could_continue_is_interrupted_by_the_next_to_start() {
    let Some(setup) = cluster().await else {
        return;
    };
    let a = setup.start().await;
    let token = a.signed_in("orphan@example.com").await;
    let conversation = a.new_conversation(&token).await;
    let seen = a.ask(&token, &conversation).await.until_text(3).await;
    a.kill();
    // Every instance is down for longer than a reply is worth continuing.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let b = setup.start().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let last = b.last_message(&token, &conversation).await;
        if last["status"] != "in_progress" {
            break last;
        }
        assert!(Instant::now() < deadline, "the orphan is still in progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored["status"], "interrupted");
    let kept = text(&stored);
    assert!(kept.starts_with(&text_of(&seen)), "{kept:?}");
    assert!(whole_reply().await.starts_with(kept));
    // Its stream, followed now, ends with the interruption.
    let events = b.resume(&token, &conversation, 0).await.rest().await;
    assert!(events.last().unwrap().0.is_done());
    drop(b);
    setup.cleanup().await;
}
