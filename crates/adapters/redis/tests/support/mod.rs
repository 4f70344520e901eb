//! What the Redis test files share: fresh reply keys, and knowing when a
//! stop listener (which subscribes in the background) is listening.

use std::time::{Duration, Instant};

use futures::StreamExt;
use ulid::Ulid;
use waiter_domain::{ConversationId, MessageId};
use waiter_ports::conversations::{ReplyKey, ReplyLeases, StopRequests};

/// How long a listener may take to (re)subscribe before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A reply key no other test uses.
pub fn new_reply_key() -> ReplyKey {
    ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: MessageId::generated(Ulid::generate()),
    }
}

/// Requests stops for fresh keys through `leases` until one reaches
/// `listener`, and returns that key. Everything `listener` yields must be
/// one of these probes: a test calls this when nothing else may arrive (a
/// request made while the listener was not subscribed must stay lost).
pub async fn stop_reaching(leases: &dyn ReplyLeases, listener: &mut StopRequests) -> ReplyKey {
    let deadline = Instant::now() + PATIENCE;
    let mut probes = Vec::new();
    loop {
        let probe = new_reply_key();
        leases.request_stop(&probe).await.expect("request a stop");
        probes.push(probe);
        if let Ok(heard) = tokio::time::timeout(Duration::from_millis(100), listener.next()).await {
            let heard = heard.expect("a stop listener never ends");
            assert!(probes.contains(&heard), "{heard} was not due");
            return heard;
        }
        assert!(
            Instant::now() < deadline,
            "no stop request reached the listener within {PATIENCE:?}"
        );
    }
}
