//! Rate limits: how many requests a client may make in a window, by policy.
//!
//! The [`RateLimiter`] is the outbound port: a GCRA ("generic cell rate
//! algorithm", a leaky bucket that stores one timestamp per key) over keys it
//! knows nothing about, in process or shared by every instance. The
//! [`RateLimitUseCases`] are what the HTTP edge drives: it names a
//! [`Policy`] and the subject the policy counts (an account, a client
//! address, an email at an address), and the use cases pick the quota and
//! the key.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;

use crate::PortError;

/// A limit: `limit` requests per `window`, as a GCRA: a fresh key may spend
/// the whole `limit` at once, and one more request fits every
/// `window / limit` after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests allowed in one window (the burst a fresh key may spend at once).
    pub limit: NonZeroU32,
    /// The window the limit is counted over; never zero.
    pub window: Duration,
}

impl Quota {
    /// `limit` requests per `window`; `None` when either is zero.
    pub fn new(limit: u32, window: Duration) -> Option<Self> {
        let limit = NonZeroU32::new(limit)?;
        (!window.is_zero()).then_some(Self { limit, window })
    }

    /// The time one request uses up: the window divided by the limit, and
    /// never less than a nanosecond.
    pub fn emission_interval(&self) -> Duration {
        (self.window / self.limit.get()).max(Duration::from_nanos(1))
    }
}

/// What a limiter decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// True when the request may go on; it then used up one unit of the quota.
    pub allowed: bool,
    /// How many more requests would be allowed right now, after this one.
    pub remaining: u32,
    /// How long until the key has its whole quota again (zero when it has it).
    pub reset_after: Duration,
    /// For a refused request, how long until one more request fits; zero when allowed.
    pub retry_after: Duration,
}

/// Counts requests per key against a [`Quota`]: the GCRA.
///
/// Implementations agree to the contract suite in `waiter-contracts`
/// (`rate_limiter_contract_tests!`).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request for `key` against `quota` and says whether it may
    /// go on. A fresh key allows exactly `quota.limit` requests at once;
    /// after that one more every [`Quota::emission_interval`]. A refused
    /// request is not counted. Concurrent calls for one key never allow
    /// more than the quota between them. The same key is always used with
    /// the same quota.
    ///
    /// Fails with [`PortError::Unavailable`] when the limiter's store cannot
    /// be reached.
    async fn acquire(&self, key: &str, quota: Quota) -> Result<Decision, PortError>;

    /// Forgets everything counted for `key`, so its next request starts a
    /// fresh quota. Resetting an unknown key is not an error.
    async fn reset(&self, key: &str) -> Result<(), PortError>;
}

/// Each thing the API limits, with its own quota and its own subject.
///
/// A new policy is a new variant with a name and a setting, counted by the
/// edge or by the handlers that know its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Policy {
    /// Every request, per client: the account when authenticated, else the client address.
    Client,
    /// Sign-in attempts per (email, client address): guessing one account's
    /// password from one place. A successful sign-in resets it.
    SignIn,
    /// Sign-in attempts per client address, whatever the email: trying many
    /// accounts from one place.
    SignInAddress,
    /// Sign-ups per client address.
    SignUp,
    /// Token refreshes per session.
    Refresh,
    /// User messages sent to the assistant per account: each one starts a
    /// reply, the costliest thing a client can ask for.
    Messages,
}

impl Policy {
    /// Every policy, for configuration and documentation.
    pub const ALL: [Policy; 6] = [
        Policy::Client,
        Policy::SignIn,
        Policy::SignInAddress,
        Policy::SignUp,
        Policy::Refresh,
        Policy::Messages,
    ];

    /// The policy's name in `RateLimit` headers, metrics and keys.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Client => "client",
            Policy::SignIn => "sign-in",
            Policy::SignInAddress => "sign-in-address",
            Policy::SignUp => "sign-up",
            Policy::Refresh => "refresh",
            Policy::Messages => "messages",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy's decision about one request, with the quota it was judged by
/// (what the `RateLimit-Policy` and `RateLimit` headers say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The policy that judged.
    pub policy: Policy,
    /// Its quota.
    pub quota: Quota,
    /// What it decided.
    pub decision: Decision,
}

/// The rate limits the HTTP edge applies.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RateLimitUseCases: Send + Sync {
    /// Counts one request of `subject` (an account id, a client address…)
    /// under `policy`. `None` when the policy is switched off.
    ///
    /// Never refuses because the limiter is unreachable: a limiter that
    /// cannot answer falls back to one that can, and fails with a
    /// [`PortError`] only when none can.
    async fn check(&self, policy: Policy, subject: &str) -> Result<Option<Limited>, PortError>;

    /// Gives `subject` its whole quota under `policy` again (after a
    /// successful sign-in, say).
    async fn reset(&self, policy: Policy, subject: &str) -> Result<(), PortError>;
}
