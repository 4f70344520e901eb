//! Runs the reply generator contract against both adapters: the built-in
//! generator, and the OpenAI-compatible client in front of a fake model.

mod support;

use std::time::Duration;

use waiter_assistant::BuiltInGenerator;
use waiter_ports::conversations::ReplyGenerator;

use support::FakeModel;

/// Runs `check` on a built-in generator that does not pause between chunks.
async fn with_built_in(check: impl AsyncFnOnce(&dyn ReplyGenerator)) {
    check(&BuiltInGenerator::new(Duration::ZERO)).await;
}

/// Runs `check` on a client of a fresh fake model.
async fn with_openai_compatible(check: impl AsyncFnOnce(&dyn ReplyGenerator)) {
    let model = FakeModel::start().await;
    let generator = support::generator(support::config(&format!("{}/v1", model.uri())));
    check(&generator).await;
}

mod built_in {
    waiter_contracts::reply_generator_contract_tests!(super::with_built_in);
}

mod openai_compatible {
    waiter_contracts::reply_generator_contract_tests!(super::with_openai_compatible);
}
