//! Fake upstreams for the OpenAI-compatible generator: a well-behaved model
//! on wiremock, chunk builders for scripted streams, and a raw TCP server
//! for what wiremock cannot do (stall mid-body, break a connection).

#![allow(dead_code)] // each test file uses part of this module

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use waiter_assistant::{ApiKey, OpenAiCompatibleGenerator, OpenAiConfig, Url};
use waiter_ports::conversations::{
    GenerateError, ReplyChunk, ReplyGenerator, ReplyRequest, Speaker, Turn,
};
use wiremock::matchers::{bearer_token, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const MODEL: &str = "fake-model-1";
pub const API_KEY: &str = "sk-test-4f1c9d2e7b";
pub const COMPLETIONS: &str = "/v1/chat/completions";

/// Long enough never to fire on a slow machine when the upstream is well.
pub const PATIENT: Duration = Duration::from_secs(10);
/// Short, for upstreams that never answer: the only way such a test ends.
pub const IMPATIENT: Duration = Duration::from_millis(300);

/// A configuration for `base` (`http://…/v1`) with the test key and patient timeouts.
pub fn config(base: &str) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(
        Url::parse(base).expect("a valid URL"),
        MODEL,
        Some(ApiKey::new(API_KEY)),
    );
    config.first_token_timeout = PATIENT;
    config.idle_timeout = PATIENT;
    config.connect_timeout = PATIENT;
    config
}

pub fn generator(config: OpenAiConfig) -> OpenAiCompatibleGenerator {
    OpenAiCompatibleGenerator::new(config).expect("a valid configuration")
}

pub fn user_asks(text: &str) -> ReplyRequest {
    ReplyRequest::new(vec![Turn::new(Speaker::User, text)])
}

/// Every item of the reply to `request`, the error that ended it included.
pub async fn items(
    generator: &dyn ReplyGenerator,
    request: ReplyRequest,
) -> Vec<Result<ReplyChunk, GenerateError>> {
    generator.generate(request).collect().await
}

/// The texts of a reply, and what ended it.
pub type Answer = (Vec<String>, Option<Result<ReplyChunk, GenerateError>>);

/// The texts of `items` and what ended them.
pub fn texts_then(items: Vec<Result<ReplyChunk, GenerateError>>) -> Answer {
    let mut texts = Vec::new();
    let mut end = None;
    for item in items {
        assert!(end.is_none(), "nothing may follow the end of a reply");
        match item {
            Ok(ReplyChunk::Text(text)) => texts.push(text),
            other => end = Some(other),
        }
    }
    (texts, end)
}

/// One `data:` event carrying a `chat.completion.chunk` with `choices`.
pub fn chunk(choices: Value) -> String {
    event(&json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_762_484_547,
        "model": MODEL,
        "choices": choices,
    }))
}

/// A chunk whose one choice adds `content`.
pub fn text(content: &str) -> String {
    chunk(json!([{"index": 0, "delta": {"content": content}, "finish_reason": null}]))
}

/// The opening chunk OpenAI sends: a role and no text.
pub fn role() -> String {
    chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    )
}

/// A chunk with an empty delta and `reason`.
pub fn finish(reason: &str) -> String {
    chunk(json!([{"index": 0, "delta": {}, "finish_reason": reason}]))
}

/// The usage chunk `stream_options.include_usage` asks for: no choices.
pub fn usage(prompt: u64, completion: u64) -> String {
    event(&json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }))
}

pub fn event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

pub const DONE: &str = "data: [DONE]\n\n";

/// A 200 event-stream response with `body`.
pub fn sse(body: impl Into<String>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.into(), "text/event-stream")
}

/// A wiremock server answering every chat completion with `response`.
pub async fn upstream(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(COMPLETIONS))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// A deterministic model, as at temperature 0, that continues a trailing
/// assistant message as llama.cpp does. Its reply quotes the last two user
/// messages, streamed a word (with its trailing space) at a time, the way
/// OpenAI streams: a role chunk, the text, a finish, usage, `[DONE]`.
pub struct FakeModel;

impl FakeModel {
    /// A server running the model, which only answers the test key.
    pub async fn start() -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(COMPLETIONS))
            .and(bearer_token(API_KEY))
            .respond_with(FakeModel)
            .mount(&server)
            .await;
        server
    }

    fn reply(messages: &[Value]) -> String {
        let said: Vec<&str> = messages
            .iter()
            .filter(|message| message["role"] == "user")
            .filter_map(|message| message["content"].as_str())
            .collect();
        let latest = said.last().copied().unwrap_or_default();
        let earlier = said.iter().rev().nth(1).copied().unwrap_or("nothing");
        format!(
            "You asked “{latest}” after saying “{earlier}”. A well-behaved model answers \
             in words, streamed one small chunk at a time, until it is done."
        )
    }
}

impl Respond for FakeModel {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = request.body_json().expect("a JSON request");
        assert_eq!(body["model"], MODEL);
        assert_eq!(body["stream"], true);
        let mut messages = body["messages"].as_array().cloned().unwrap_or_default();
        let prefix = match messages.last() {
            Some(last) if last["role"] == "assistant" => messages
                .pop()
                .and_then(|last| last["content"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let reply = Self::reply(&messages);
        let rest = reply.strip_prefix(prefix.as_str()).unwrap_or_default();
        let mut stream = role();
        let words: Vec<&str> = rest.split_inclusive(' ').collect();
        for word in &words {
            stream.push_str(&text(word));
        }
        stream.push_str(&finish("stop"));
        stream.push_str(&usage(messages.len() as u64 * 10, words.len() as u64));
        stream.push_str(DONE);
        sse(stream)
    }
}

/// What a scripted upstream does, step by step, on every connection once
/// it has read the request.
#[derive(Clone)]
pub enum Step {
    Write(String),
    /// Writes the same bytes again and again, at this interval, forever.
    Drip(String, Duration),
    /// Keeps the connection open and says nothing more, forever.
    Hang,
}

/// The head of a 200 event-stream response whose body ends when the connection closes.
pub const STREAM_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

/// The head of a 200 event-stream response with a chunked body.
pub const CHUNKED_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// `data` as one chunk of a chunked body.
pub fn http_chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// A TCP server on loopback that answers each connection with a script,
/// byte for byte. Dropping it stops it.
pub struct ScriptedUpstream {
    address: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl ScriptedUpstream {
    pub async fn start(script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(play(socket, script.clone()));
            }
        });
        Self { address, acceptor }
    }

    /// The base URL to configure, `http://127.0.0.1:…/v1`.
    pub fn base(&self) -> String {
        format!("http://{}/v1", self.address)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn play(mut socket: TcpStream, script: Vec<Step>) {
    if read_request(&mut socket).await.is_none() {
        return;
    }
    for step in script {
        match step {
            Step::Write(bytes) => {
                if socket.write_all(bytes.as_bytes()).await.is_err() {
                    return;
                }
            }
            Step::Drip(bytes, every) => loop {
                tokio::time::sleep(every).await;
                if socket.write_all(bytes.as_bytes()).await.is_err() {
                    return;
                }
            },
            Step::Hang => {
                // Reads until the client goes away, so the socket stays open till then.
                let mut sink = [0; 1024];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// Reads one request's head and its `content-length` body.
async fn read_request(socket: &mut TcpStream) -> Option<()> {
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    let head_end = loop {
        let n = socket.read(&mut buffer).await.ok().filter(|&n| n > 0)?;
        received.extend_from_slice(&buffer[..n]);
        if let Some(at) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while received.len() < head_end + length {
        let n = socket.read(&mut buffer).await.ok().filter(|&n| n > 0)?;
        received.extend_from_slice(&buffer[..n]);
    }
    Some(())
}
