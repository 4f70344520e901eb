//! Waiter's reply generators, the adapters of
//! [`ReplyGenerator`](waiter_ports::conversations::ReplyGenerator):
//!
//! - [`BuiltInGenerator`], the default: a deterministic stand-in for a model
//!   that needs nothing and answers every conversation the same way each
//!   time, so tests (and a reply continued on another instance) can count
//!   on its exact text.

mod builtin;

pub use builtin::BuiltInGenerator;
