//! The contract every [`ReplyLeases`] adapter must honour, Redis and in-process alike.
//!
//! Each check takes a fresh store holding no lease; an adapter's test file
//! runs every one as its own `#[tokio::test]` with
//! [`reply_leases_contract_tests!`](crate::reply_leases_contract_tests).
//! Every key and holder is new (random ULIDs) and the stop-request checks
//! ignore keys that are not theirs, but `claim_expired` takes *any* expired
//! lease, so the claiming checks need the store to themselves: isolation is
//! the caller's job (a new in-process store, or a unique Redis key prefix
//! per test).
//!
//! Leases expire in real time, so some checks sleep: a lease meant to run
//! out gets `SHORT` (a quarter of a second) and the check waits a little
//! longer; one that must not run out during the check gets `LONG` (a
//! minute), so no check depends on being scheduled promptly. Every wait on
//! a stream is bounded.
//!
//! What the checks pin down beyond the port's own words:
//! - `acquire` succeeds for the holder that already has the lease (setting
//!   it to `ttl` from now), and fails for any other holder as long as the
//!   lease is listed, expired or not: an expired lease is taken over only
//!   through `claim_expired`, which says how long it had expired.
//! - A lease handed over but not yet claimed is still its holder's: its
//!   `renew` extends it (and it is then no longer claimable).
//! - A stop listener may take a moment to start listening after
//!   `stop_requests` returns (Redis subscribes over the network): the
//!   checks wait until a probe request reaches it before relying on it.

use std::collections::HashMap;
use std::slice;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use ulid::Ulid;
use waiter_domain::{ConversationId, MessageId};
use waiter_ports::conversations::{ClaimedLease, InstanceId, ReplyKey, ReplyLeases, StopRequests};

/// Generates one `#[tokio::test]` per reply lease check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn ReplyLeases))`
/// that sets up a fresh store holding no lease, runs `check` on it and
/// cleans up.
#[macro_export]
macro_rules! reply_leases_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(reply_leases, $fixture:
            a_lease_is_acquired_by_one_holder_only,
            racing_holders_acquire_a_lease_once,
            an_expired_lease_is_left_to_claimers,
            renew_extends_each_lease_to_ttl_from_now,
            renew_reports_leases_another_holder_has_and_takes_back_missing_ones,
            renew_handles_thousands_of_leases_at_once,
            a_lease_claimed_away_is_lost_to_its_old_holder,
            release_ends_the_lease,
            release_or_hand_over_by_another_holder_changes_nothing,
            a_lease_handed_over_is_claimable_at_once,
            a_lease_handed_over_stays_its_holders_until_claimed,
            claims_take_the_longest_expired_first_up_to_max,
            expired_for_is_how_long_ago_the_lease_expired,
            each_expired_lease_goes_to_exactly_one_of_racing_claimers,
            leases_of_different_replies_are_independent,
            stop_requests_reach_every_listener,
            a_stop_request_made_before_listening_is_lost,
            a_listener_dropped_does_not_disturb_the_others,
        );
    };
}

/// The TTL of a lease a check lets run out.
const SHORT: Duration = Duration::from_millis(250);
/// The TTL of a lease that must not run out during a check.
const LONG: Duration = Duration::from_secs(60);
/// How much longer than [`SHORT`] a check waits for a lease to run out.
const MARGIN: Duration = Duration::from_millis(100);
/// The longest any wait for a stop request may take before the check fails.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a listener is watched to show that nothing comes.
const QUIET: Duration = Duration::from_millis(300);
/// How long a probe request is given to reach a new listener before
/// another is sent.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How far apart in time the ordering check expires its leases.
const APART: Duration = Duration::from_millis(30);
/// Slack for a store that counts time in whole milliseconds.
const ROUNDING: Duration = Duration::from_millis(2);

/// A reply no other check uses.
fn new_key() -> ReplyKey {
    ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: MessageId::generated(Ulid::generate()),
    }
}

/// An instance no other check uses; `role` only helps reading failures.
fn new_holder(role: &str) -> InstanceId {
    InstanceId::new(format!("{role}-{}", Ulid::generate()))
}

/// The keys of `claimed`, in the order claimed.
fn keys(claimed: &[ClaimedLease]) -> Vec<ReplyKey> {
    claimed.iter().map(|lease| lease.key.clone()).collect()
}

/// `keys` in a canonical order, for comparing sets of keys.
fn sorted(mut keys: Vec<ReplyKey>) -> Vec<ReplyKey> {
    keys.sort_by_key(|key| key.to_string());
    keys
}

async fn acquire(
    leases: &dyn ReplyLeases,
    key: &ReplyKey,
    holder: &InstanceId,
    ttl: Duration,
) -> bool {
    leases
        .acquire(key, holder, ttl)
        .await
        .unwrap_or_else(|error| panic!("{holder} acquiring {key} failed: {error:?}"))
}

async fn renew(
    leases: &dyn ReplyLeases,
    holder: &InstanceId,
    keys: &[ReplyKey],
    ttl: Duration,
) -> Vec<ReplyKey> {
    leases
        .renew(holder, keys, ttl)
        .await
        .unwrap_or_else(|error| panic!("{holder} renewing {} leases failed: {error:?}", keys.len()))
}

async fn release(leases: &dyn ReplyLeases, key: &ReplyKey, holder: &InstanceId) {
    leases
        .release(key, holder)
        .await
        .unwrap_or_else(|error| panic!("{holder} releasing {key} failed: {error:?}"));
}

async fn hand_over(leases: &dyn ReplyLeases, key: &ReplyKey, holder: &InstanceId) {
    leases
        .hand_over(key, holder)
        .await
        .unwrap_or_else(|error| panic!("{holder} handing {key} over failed: {error:?}"));
}

async fn claim(
    leases: &dyn ReplyLeases,
    holder: &InstanceId,
    ttl: Duration,
    max: usize,
) -> Vec<ClaimedLease> {
    leases
        .claim_expired(holder, ttl, max)
        .await
        .unwrap_or_else(|error| panic!("{holder} claiming up to {max} leases failed: {error:?}"))
}

/// Asserts that nothing is claimable: no lease has expired.
async fn assert_nothing_claimable(leases: &dyn ReplyLeases, why: &str) {
    let claimed = claim(leases, &new_holder("checker"), LONG, 100).await;
    assert!(
        claimed.is_empty(),
        "{why}, yet {:?} were claimed",
        keys(&claimed)
    );
}

/// Waits until a lease given [`SHORT`] when this is called has run out.
async fn outlive_short() {
    tokio::time::sleep(SHORT + MARGIN).await;
}

async fn request_stop(leases: &dyn ReplyLeases, key: &ReplyKey) {
    leases
        .request_stop(key)
        .await
        .unwrap_or_else(|error| panic!("requesting {key} to stop failed: {error:?}"));
}

/// A request sent only to learn that a listener is listening; checks skip
/// every key that is not theirs, probes included.
fn probe() -> ReplyKey {
    ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: MessageId::parse("probe").expect("a valid message id"),
    }
}

/// A stop listener that is known to be listening: one of the probe
/// requests made after it was opened has reached it.
async fn listen(leases: &dyn ReplyLeases) -> StopRequests {
    let mut requests = leases.stop_requests();
    let deadline = Instant::now() + PATIENCE;
    let mut probes = Vec::new();
    loop {
        let probe = probe();
        request_stop(leases, &probe).await;
        probes.push(probe);
        let waited = tokio::time::timeout(PROBE_EVERY, async {
            loop {
                match requests.next().await {
                    Some(key) if probes.contains(&key) => return,
                    Some(_) => {}
                    None => panic!("a stop listener ended"),
                }
            }
        });
        if waited.await.is_ok() {
            return requests;
        }
        assert!(
            Instant::now() < deadline,
            "a stop listener did not start listening within {PATIENCE:?}"
        );
    }
}

/// The next request of `requests` for one of `ours`, skipping the others
/// (probes, other checks' keys); panics if none comes within [`PATIENCE`].
async fn next_stop(requests: &mut StopRequests, ours: &[&ReplyKey]) -> ReplyKey {
    let wanted = async {
        loop {
            match requests.next().await {
                Some(key) if ours.contains(&&key) => return key,
                Some(_) => {}
                None => panic!("a stop listener ended"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wanted)
        .await
        .unwrap_or_else(|_| panic!("no stop request came within {PATIENCE:?}"))
}

/// Asserts that no request for one of `ours` comes for a while.
async fn assert_no_stop(requests: &mut StopRequests, ours: &[&ReplyKey]) {
    let unwanted = async {
        loop {
            match requests.next().await {
                Some(key) if ours.contains(&&key) => return key,
                Some(_) => {}
                None => panic!("a stop listener ended"),
            }
        }
    };
    if let Ok(key) = tokio::time::timeout(QUIET, unwanted).await {
        panic!("no stop request was due, got {key}");
    }
}

/// A lease goes to its first holder; another holder is refused while it
/// lasts, and the holder acquiring again keeps it. Once released, anyone
/// may acquire it.
pub async fn a_lease_is_acquired_by_one_holder_only(leases: &dyn ReplyLeases) {
    let (first, second) = (new_holder("first"), new_holder("second"));
    let key = new_key();
    assert!(acquire(leases, &key, &first, LONG).await);
    assert!(
        !acquire(leases, &key, &second, LONG).await,
        "the lease is taken"
    );
    assert!(
        acquire(leases, &key, &first, LONG).await,
        "the holder acquiring again keeps its lease"
    );
    assert!(!acquire(leases, &key, &second, LONG).await, "still taken");
    assert_eq!(
        renew(leases, &first, slice::from_ref(&key), LONG).await,
        vec![]
    );
    assert_nothing_claimable(leases, "a lease given a minute has not expired").await;

    release(leases, &key, &first).await;
    assert!(
        acquire(leases, &key, &second, LONG).await,
        "a released lease is free"
    );
    assert!(!acquire(leases, &key, &first, LONG).await);
}

/// Eight holders acquiring the same new lease at once: exactly one gets it.
pub async fn racing_holders_acquire_a_lease_once(leases: &dyn ReplyLeases) {
    let key = new_key();
    let holders: Vec<InstanceId> = (0..8).map(|i| new_holder(&format!("racer{i}"))).collect();
    let outcomes = join_all(
        holders
            .iter()
            .map(|holder| acquire(leases, &key, holder, LONG)),
    )
    .await;
    let winners: Vec<&InstanceId> = holders
        .iter()
        .zip(&outcomes)
        .filter_map(|(holder, won)| won.then_some(holder))
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    for holder in &holders {
        let lost = renew(leases, holder, slice::from_ref(&key), LONG).await;
        assert_eq!(lost.is_empty(), *holder == *winners[0], "{holder}");
    }
}

/// An expired lease is not free for the taking: `acquire` by another
/// holder is refused until a claimer has taken it over (and then refused
/// for the claimer's lease).
pub async fn an_expired_lease_is_left_to_claimers(leases: &dyn ReplyLeases) {
    let (first, second) = (new_holder("first"), new_holder("second"));
    let key = new_key();
    assert!(acquire(leases, &key, &first, SHORT).await);
    outlive_short().await;

    assert!(
        !acquire(leases, &key, &second, LONG).await,
        "an expired lease is claimed, not acquired"
    );
    assert_eq!(
        keys(&claim(leases, &second, LONG, 10).await),
        vec![key.clone()]
    );
    assert!(
        !acquire(leases, &key, &first, LONG).await,
        "the claimer has it now"
    );
}

/// `renew` sets each of the holder's leases to expire `ttl` from now:
/// later than they would have (not claimable once their first TTL is past),
/// or sooner (claimable once the new, short TTL is past). Renewing nothing
/// is fine.
pub async fn renew_extends_each_lease_to_ttl_from_now(leases: &dyn ReplyLeases) {
    let holder = new_holder("holder");
    let (renewed, shortened) = (new_key(), new_key());
    assert!(acquire(leases, &renewed, &holder, SHORT).await);
    assert!(acquire(leases, &shortened, &holder, SHORT).await);
    assert_eq!(renew(leases, &holder, &[], LONG).await, vec![]);
    let both = [renewed.clone(), shortened.clone()];
    assert_eq!(renew(leases, &holder, &both, LONG).await, vec![]);
    outlive_short().await;
    assert_nothing_claimable(leases, "renewed leases outlive their first TTL").await;

    assert_eq!(
        renew(leases, &holder, slice::from_ref(&shortened), SHORT).await,
        vec![]
    );
    outlive_short().await;
    let claimed = claim(leases, &new_holder("claimer"), LONG, 10).await;
    assert_eq!(
        keys(&claimed),
        vec![shortened],
        "only the lease renewed for a short TTL has expired"
    );
}

/// `renew` returns the keys another holder has, and leaves those leases
/// alone; a lease that is missing (released, or lost by the store) it takes
/// again for the renewing holder instead of reporting it.
pub async fn renew_reports_leases_another_holder_has_and_takes_back_missing_ones(
    leases: &dyn ReplyLeases,
) {
    let (holder, other) = (new_holder("holder"), new_holder("other"));
    let (kept, released, others, never_acquired) = (new_key(), new_key(), new_key(), new_key());
    assert!(acquire(leases, &kept, &holder, LONG).await);
    assert!(acquire(leases, &released, &holder, LONG).await);
    assert!(acquire(leases, &others, &other, SHORT).await);
    release(leases, &released, &holder).await;

    let all = [
        kept.clone(),
        released.clone(),
        others.clone(),
        never_acquired.clone(),
    ];
    assert_eq!(
        renew(leases, &holder, &all, LONG).await,
        vec![others.clone()]
    );

    for key in [&kept, &released, &never_acquired] {
        assert!(
            !acquire(leases, key, &other, LONG).await,
            "{key} is the holder's"
        );
    }
    assert!(
        !acquire(leases, &others, &holder, LONG).await,
        "still the other's"
    );
    outlive_short().await;
    assert_eq!(
        keys(&claim(leases, &new_holder("claimer"), LONG, 10).await),
        vec![others],
        "a renew that reported a lease must not extend it"
    );
}

/// One `renew` of thousands of leases (an instance renews all its replies
/// at once), some of them another holder's, reports exactly those, takes
/// the missing ones and sets every one of its own to the new TTL.
pub async fn renew_handles_thousands_of_leases_at_once(leases: &dyn ReplyLeases) {
    const LEASES: usize = 2_500;
    let (holder, other) = (new_holder("holder"), new_holder("other"));
    let all: Vec<ReplyKey> = (0..LEASES).map(|_| new_key()).collect();
    let others: Vec<ReplyKey> = all.iter().step_by(7).cloned().collect();
    assert_eq!(renew(leases, &other, &others, LONG).await, vec![]);

    let lost = renew(leases, &holder, &all, SHORT).await;
    assert_eq!(sorted(lost), sorted(others.clone()));
    outlive_short().await;
    let claimed = claim(leases, &new_holder("claimer"), LONG, 2 * LEASES).await;
    assert_eq!(
        claimed.len(),
        LEASES - others.len(),
        "every lease of the holder, and no other, expired"
    );
    let holders: Vec<ReplyKey> = all
        .into_iter()
        .filter(|key| !others.contains(key))
        .collect();
    assert_eq!(sorted(keys(&claimed)), sorted(holders));
    assert_eq!(renew(leases, &other, &others, LONG).await, vec![]);
}

/// Once another instance has claimed a lease, the old holder's `renew`
/// reports it and neither extends nor takes it back; the claimer holds it
/// for the `ttl` it claimed with, renews it, and loses it in turn when it
/// lets it expire.
pub async fn a_lease_claimed_away_is_lost_to_its_old_holder(leases: &dyn ReplyLeases) {
    let (dead, claimer, next) = (
        new_holder("dead"),
        new_holder("claimer"),
        new_holder("next"),
    );
    let key = new_key();
    assert!(acquire(leases, &key, &dead, SHORT).await);
    outlive_short().await;
    assert_eq!(
        keys(&claim(leases, &claimer, SHORT, 10).await),
        vec![key.clone()]
    );
    assert_nothing_claimable(leases, "a lease just claimed is held for the claim's TTL").await;

    let one = [key.clone()];
    assert_eq!(renew(leases, &dead, &one, LONG).await, one, "claimed away");
    assert!(!acquire(leases, &key, &dead, LONG).await);
    outlive_short().await;
    assert_eq!(
        keys(&claim(leases, &next, LONG, 10).await),
        one,
        "the old holder's renew must not have extended the claimer's lease"
    );
    assert_eq!(
        renew(leases, &claimer, &one, LONG).await,
        one,
        "claimed away in turn"
    );
    assert_eq!(renew(leases, &next, &one, LONG).await, vec![]);
}

/// A released lease is gone: never claimable, free for anyone to acquire.
/// Releasing a lease that does not exist is fine.
pub async fn release_ends_the_lease(leases: &dyn ReplyLeases) {
    let (holder, other) = (new_holder("holder"), new_holder("other"));
    let key = new_key();
    assert!(acquire(leases, &key, &holder, SHORT).await);
    release(leases, &key, &holder).await;
    release(leases, &key, &holder).await;
    release(leases, &new_key(), &holder).await;
    outlive_short().await;
    assert_nothing_claimable(leases, "a released lease is never claimable").await;
    assert!(acquire(leases, &key, &other, LONG).await);
}

/// `release` and `hand_over` by a holder that does not have the lease
/// change nothing: the holder keeps it, unexpired.
pub async fn release_or_hand_over_by_another_holder_changes_nothing(leases: &dyn ReplyLeases) {
    let (holder, other) = (new_holder("holder"), new_holder("other"));
    let key = new_key();
    assert!(acquire(leases, &key, &holder, LONG).await);
    release(leases, &key, &other).await;
    hand_over(leases, &key, &other).await;
    hand_over(leases, &new_key(), &other).await;

    assert_nothing_claimable(leases, "only the holder may hand a lease over").await;
    assert!(
        !acquire(leases, &key, &other, LONG).await,
        "only the holder may release"
    );
    assert_eq!(renew(leases, &holder, &[key], LONG).await, vec![]);
}

/// A lease handed over is claimable at once, having expired for no longer
/// than it took to claim it; the claimer then holds it.
pub async fn a_lease_handed_over_is_claimable_at_once(leases: &dyn ReplyLeases) {
    let (holder, claimer) = (new_holder("holder"), new_holder("claimer"));
    let key = new_key();
    assert!(acquire(leases, &key, &holder, LONG).await);

    let started = Instant::now();
    hand_over(leases, &key, &holder).await;
    let claimed = claim(leases, &claimer, LONG, 10).await;
    let took = started.elapsed();
    assert_eq!(keys(&claimed), vec![key.clone()]);
    assert!(
        claimed[0].expired_for <= took + ROUNDING,
        "handed over {took:?} ago, yet expired for {:?}",
        claimed[0].expired_for
    );

    assert_nothing_claimable(leases, "the claimer holds it now").await;
    assert_eq!(
        renew(leases, &holder, slice::from_ref(&key), LONG).await,
        vec![key.clone()]
    );
    assert_eq!(renew(leases, &claimer, &[key], LONG).await, vec![]);
}

/// Handing over only makes the lease expire: until someone claims it, it
/// is still its holder's, whose `renew` extends it again.
pub async fn a_lease_handed_over_stays_its_holders_until_claimed(leases: &dyn ReplyLeases) {
    let (holder, other) = (new_holder("holder"), new_holder("other"));
    let key = new_key();
    assert!(acquire(leases, &key, &holder, LONG).await);
    hand_over(leases, &key, &holder).await;
    assert!(!acquire(leases, &key, &other, LONG).await);
    assert_eq!(renew(leases, &holder, &[key], LONG).await, vec![]);
    assert_nothing_claimable(leases, "renewed after being handed over").await;
}

/// `claim_expired` takes at most `max` leases (none for 0), those expired
/// longest first, each reported with how long it had expired (longest
/// first too); the rest wait for the next claim.
pub async fn claims_take_the_longest_expired_first_up_to_max(leases: &dyn ReplyLeases) {
    let holder = new_holder("holder");
    let claimer = new_holder("claimer");
    let keys_in_expiry_order: Vec<ReplyKey> = (0..3).map(|_| new_key()).collect();
    // Acquired in the other order, so the order of acquiring is not the answer.
    for key in keys_in_expiry_order.iter().rev() {
        assert!(acquire(leases, key, &holder, LONG).await);
    }
    for key in &keys_in_expiry_order {
        hand_over(leases, key, &holder).await;
        tokio::time::sleep(APART).await;
    }

    assert_eq!(claim(leases, &claimer, LONG, 0).await, vec![]);
    let first = claim(leases, &claimer, LONG, 2).await;
    assert_eq!(keys(&first), keys_in_expiry_order[..2].to_vec());
    assert!(
        first[0].expired_for >= first[1].expired_for + APART - ROUNDING,
        "expired at least {APART:?} apart: {first:?}"
    );
    let rest = claim(leases, &claimer, LONG, 10).await;
    assert_eq!(keys(&rest), keys_in_expiry_order[2..].to_vec());
    assert_nothing_claimable(leases, "every expired lease was claimed").await;
}

/// `expired_for` is the time from the lease's expiry to its claim, as far
/// as the check can bound it from outside.
pub async fn expired_for_is_how_long_ago_the_lease_expired(leases: &dyn ReplyLeases) {
    let key = new_key();
    let before_acquire = Instant::now();
    assert!(acquire(leases, &key, &new_holder("holder"), SHORT).await);
    let after_acquire = Instant::now();
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;

    let before_claim = Instant::now();
    let claimed = claim(leases, &new_holder("claimer"), LONG, 10).await;
    let after_claim = Instant::now();
    assert_eq!(keys(&claimed), vec![key]);
    let at_least = (before_claim - after_acquire).saturating_sub(SHORT + ROUNDING);
    let at_most = (after_claim - before_acquire).saturating_sub(SHORT) + ROUNDING;
    let expired_for = claimed[0].expired_for;
    assert!(
        at_least <= expired_for && expired_for <= at_most,
        "expired for {expired_for:?}, not within {at_least:?}..={at_most:?}"
    );
}

/// Eight claimers racing, each claiming a few at a time until nothing is
/// left: each of forty expired leases goes to exactly one of them, and is
/// that one's (its `renew` keeps it, the old holder's reports it).
pub async fn each_expired_lease_goes_to_exactly_one_of_racing_claimers(leases: &dyn ReplyLeases) {
    const LEASES: usize = 40;
    let dead = new_holder("dead");
    let all: Vec<ReplyKey> = (0..LEASES).map(|_| new_key()).collect();
    for key in &all {
        assert!(acquire(leases, key, &dead, LONG).await);
        hand_over(leases, key, &dead).await;
    }
    let claimers: Vec<InstanceId> = (0..8).map(|i| new_holder(&format!("claimer{i}"))).collect();
    let takings = join_all(claimers.iter().map(|claimer| async move {
        let mut taken = Vec::new();
        loop {
            let claimed = claim(leases, claimer, LONG, 7).await;
            assert!(claimed.len() <= 7, "max was 7, got {}", claimed.len());
            if claimed.is_empty() {
                return taken;
            }
            taken.extend(keys(&claimed));
            tokio::task::yield_now().await;
        }
    }))
    .await;

    let mut owners: HashMap<&ReplyKey, Vec<&InstanceId>> = HashMap::new();
    for (claimer, taken) in claimers.iter().zip(&takings) {
        for key in taken {
            owners.entry(key).or_default().push(claimer);
        }
    }
    for key in &all {
        let claimed_by = owners.get(key).map_or(0, Vec::len);
        assert_eq!(claimed_by, 1, "{key} was claimed by {:?}", owners.get(key));
    }
    assert_eq!(owners.len(), LEASES, "only these leases existed");
    for (claimer, taken) in claimers.iter().zip(&takings) {
        assert_eq!(
            renew(leases, claimer, taken, LONG).await,
            vec![],
            "{claimer}"
        );
    }
    assert_eq!(sorted(renew(leases, &dead, &all, LONG).await), sorted(all));
}

/// Leases of other replies of the same conversation, and of the reply with
/// the same id in another conversation (message ids are unique within a
/// conversation only, and may be chosen by the client), are apart.
pub async fn leases_of_different_replies_are_independent(leases: &dyn ReplyLeases) {
    let (holder, other) = (new_holder("holder"), new_holder("other"));
    let first = ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: MessageId::parse("msg_001").expect("a valid message id"),
    };
    let sibling = ReplyKey {
        conversation: first.conversation,
        reply: MessageId::generated(Ulid::generate()),
    };
    let namesake = ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: first.reply.clone(),
    };
    assert!(acquire(leases, &first, &holder, LONG).await);
    assert!(acquire(leases, &sibling, &other, LONG).await);
    assert!(acquire(leases, &namesake, &other, LONG).await);

    hand_over(leases, &first, &holder).await;
    let claimed = claim(leases, &new_holder("claimer"), LONG, 10).await;
    assert_eq!(
        keys(&claimed),
        vec![first.clone()],
        "the claimed key comes back as it was"
    );
    release(leases, &sibling, &other).await;
    assert_eq!(
        renew(leases, &other, slice::from_ref(&namesake), LONG).await,
        vec![],
        "releasing the sibling left the namesake alone"
    );
    assert!(acquire(leases, &sibling, &holder, LONG).await);
    assert!(!acquire(leases, &namesake, &holder, LONG).await);
}

/// Every listener open when a stop is requested yields that reply's key
/// (the key exactly, a client-chosen message id included), whether or not
/// anyone holds its lease; each request arrives once.
pub async fn stop_requests_reach_every_listener(leases: &dyn ReplyLeases) {
    let mut first = listen(leases).await;
    let mut second = listen(leases).await;
    let held = new_key();
    assert!(acquire(leases, &held, &new_holder("holder"), LONG).await);
    let unheld = ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: MessageId::parse("0d9f-Client_Chosen").expect("a valid message id"),
    };
    let ours = [&held, &unheld];

    request_stop(leases, &held).await;
    request_stop(leases, &unheld).await;
    for (name, listener) in [("first", &mut first), ("second", &mut second)] {
        assert_eq!(next_stop(listener, &ours).await, held, "{name}");
        assert_eq!(next_stop(listener, &ours).await, unheld, "{name}");
        assert_no_stop(listener, &ours).await;
    }
}

/// A request made before a listener was opened never reaches it (nobody
/// was listening: it is lost, not kept); the next one does.
pub async fn a_stop_request_made_before_listening_is_lost(leases: &dyn ReplyLeases) {
    let (early, late) = (new_key(), new_key());
    request_stop(leases, &early).await;
    let mut listener = listen(leases).await;
    request_stop(leases, &late).await;
    assert_eq!(next_stop(&mut listener, &[&early, &late]).await, late);
    assert_no_stop(&mut listener, &[&early]).await;
}

/// Dropping one listener leaves the others (and one opened after) hearing
/// every request.
pub async fn a_listener_dropped_does_not_disturb_the_others(leases: &dyn ReplyLeases) {
    let leaving = listen(leases).await;
    let mut staying = listen(leases).await;
    drop(leaving);
    let key = new_key();
    request_stop(leases, &key).await;
    assert_eq!(next_stop(&mut staying, &[&key]).await, key);

    let mut joining = listen(leases).await;
    let next = new_key();
    request_stop(leases, &next).await;
    assert_eq!(next_stop(&mut staying, &[&next]).await, next);
    assert_eq!(next_stop(&mut joining, &[&next]).await, next);
}
