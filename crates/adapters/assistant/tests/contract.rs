//! Runs the reply generator contract against the built-in generator.

use std::time::Duration;

use waiter_assistant::BuiltInGenerator;
use waiter_ports::conversations::ReplyGenerator;

/// Runs `check` on a built-in generator that does not pause between chunks.
async fn with_built_in(check: impl AsyncFnOnce(&dyn ReplyGenerator)) {
    check(&BuiltInGenerator::new(Duration::ZERO)).await;
}

mod built_in {
    waiter_contracts::reply_generator_contract_tests!(super::with_built_in);
}
