//! Fan-out of the events one feature announces to every feature that subscribes.

use std::sync::Arc;

use async_trait::async_trait;
use waiter_domain::AccountId;
use waiter_ports::PortError;
use waiter_ports::identity::AccountEvents;

/// Tells every subscriber about each account event, in order.
///
/// The identity service holds one `Arc<dyn AccountEvents>`; the server wires
/// this in front of the subscribers (the catalog, conversations…), so no
/// service names another. Every subscriber hears the event even when an
/// earlier one fails; the first failure is returned.
pub struct AccountEventsFanOut {
    subscribers: Vec<Arc<dyn AccountEvents>>,
}

impl AccountEventsFanOut {
    pub fn new(subscribers: Vec<Arc<dyn AccountEvents>>) -> Self {
        Self { subscribers }
    }
}

#[async_trait]
impl AccountEvents for AccountEventsFanOut {
    async fn account_deleted(&self, id: AccountId) -> Result<(), PortError> {
        let mut first_failure = None;
        for subscriber in &self.subscribers {
            if let Err(err) = subscriber.account_deleted(id).await {
                first_failure.get_or_insert(err);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use waiter_ports::identity::MockAccountEvents;

    use super::*;

    fn subscriber(outcome: fn() -> Result<(), PortError>) -> Arc<dyn AccountEvents> {
        let mut mock = MockAccountEvents::new();
        mock.expect_account_deleted()
            .times(1)
            .returning(move |_| outcome());
        Arc::new(mock)
    }

    #[tokio::test]
    async fn every_subscriber_hears_the_event_even_after_a_failure() {
        let fan_out = AccountEventsFanOut::new(vec![
            subscriber(|| Err(PortError::unexpected(anyhow::anyhow!("down")))),
            subscriber(|| Ok(())),
        ]);
        let outcome = fan_out
            .account_deleted(AccountId::from_ulid(ulid::Ulid::nil()))
            .await;
        assert!(matches!(outcome, Err(PortError::Unexpected(_))));
    }

    #[tokio::test]
    async fn no_failure_means_success() {
        let fan_out = AccountEventsFanOut::new(vec![subscriber(|| Ok(())), subscriber(|| Ok(()))]);
        assert!(
            fan_out
                .account_deleted(AccountId::from_ulid(ulid::Ulid::nil()))
                .await
                .is_ok()
        );
    }
}
