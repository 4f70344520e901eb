//! The HTTP routes, one module per resource. Handlers translate HTTP to
//! use-case calls and results back; they hold no business rule.

pub mod accounts;
pub mod books;
pub mod conversations;
pub mod health;
pub mod sessions;
