//! Waiter's reply generators, the adapters of
//! [`ReplyGenerator`](waiter_ports::conversations::ReplyGenerator):
//!
//! - [`BuiltInGenerator`], the default: a deterministic stand-in for a model
//!   that needs nothing and answers every conversation the same way each
//!   time, so tests (and a reply continued on another instance) can count
//!   on its exact text;
//! - [`OpenAiCompatibleGenerator`]: a streaming client of any server that
//!   speaks OpenAI's chat-completions API, bounded in time and size so that
//!   a slow, broken or hostile upstream can fail a reply but never hang it.

mod builtin;
mod openai;

pub use builtin::BuiltInGenerator;
pub use openai::{ApiKey, ConfigError, OpenAiCompatibleGenerator, OpenAiConfig, Url};
