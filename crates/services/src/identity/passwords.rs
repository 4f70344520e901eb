//! Password hashing with argon2id, kept off the async executor.
//!
//! Hashing is deliberately slow (~20–50 ms of one core) and memory-hard, so
//! it runs on tokio's blocking pool behind a semaphore sized to the CPU count:
//! a flood of sign-ins queues here instead of starving every other request.
//! The wait for a slot (`waiter_password_hash_queue_wait_seconds`), the
//! hashing itself (`waiter_password_hash_duration_seconds`) and the requests
//! turned away after waiting too long (`waiter_password_hash_rejections_total`)
//! are metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash as Phc;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;
use waiter_domain::{Password, PasswordHash};
use waiter_ports::PortError;

/// How long a request waits for a hashing slot before giving up with 503:
/// under a flood of sign-ins, failing fast beats an ever-growing queue.
const QUEUE_DEADLINE: Duration = Duration::from_secs(5);

/// OWASP's minimum for argon2id: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Hashes and verifies passwords with bounded concurrency.
#[derive(Clone)]
pub(crate) struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when an email is unknown
    /// so that "no such account" takes as long as "wrong password".
    dummy: Arc<PasswordHash>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants known to be valid; `Params::new` only fails for out-of-range values.
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> Result<PasswordHash, PortError> {
    let phc = argon2()
        .hash_password(password.as_bytes())
        .map_err(|err| PortError::unexpected(anyhow::anyhow!("argon2 hashing failed: {err}")))?;
    Ok(PasswordHash::new(phc.to_string()))
}

fn verify_blocking(password: &str, hash: &PasswordHash) -> bool {
    match Phc::new(hash.as_str()) {
        Ok(phc) => argon2().verify_password(password.as_bytes(), &phc).is_ok(),
        Err(err) => {
            tracing::error!(%err, "a stored password hash is not a valid PHC string");
            false
        }
    }
}

impl Passwords {
    /// A hasher allowing `max_concurrent` hashes at once (at least one).
    pub(crate) fn new(max_concurrent: usize) -> Result<Self, PortError> {
        let random: [u8; 24] = rand::random();
        let dummy = hash_blocking(&String::from_utf8_lossy(&random))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PortError> {
        let queued = Instant::now();
        let _permit = tokio::time::timeout(QUEUE_DEADLINE, self.permits.acquire())
            .await
            .map_err(|_| {
                metrics::counter!("waiter_password_hash_rejections_total").increment(1);
                PortError::Unavailable(anyhow::anyhow!("too many password hashes queued"))
            })?
            .map_err(PortError::unexpected)?;
        metrics::histogram!("waiter_password_hash_queue_wait_seconds")
            .record(queued.elapsed().as_secs_f64());
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(work)
            .await
            .map_err(PortError::unexpected);
        metrics::histogram!("waiter_password_hash_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Hashes a new password with a fresh salt.
    pub(crate) async fn hash(&self, password: &Password) -> Result<PasswordHash, PortError> {
        let password = password.expose().to_owned();
        self.run(move || hash_blocking(&password)).await?
    }

    /// True when `password` matches `hash`; `None` for the hash verifies
    /// against the dummy and is always false.
    pub(crate) async fn verify(
        &self,
        password: &str,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, PortError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy).clone();
        let password = password.to_owned();
        let matches = self.run(move || verify_blocking(&password, &hash)).await?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_salted_argon2id_with_the_owasp_parameters() {
        let passwords = Passwords::new(2).unwrap();
        let password = Password::parse("correct horse").unwrap();
        let first = passwords.hash(&password).await.unwrap();
        let second = passwords.hash(&password).await.unwrap();
        assert_ne!(first, second, "each hash gets its own salt");
        assert!(
            first
                .as_str()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            first.as_str()
        );
        assert!(
            passwords
                .verify("correct horse", Some(&first))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horsf", Some(&first))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_dummy_hash_never_matches() {
        let passwords = Passwords::new(1).unwrap();
        assert!(!passwords.verify("anything", None).await.unwrap());
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_fails_verification_instead_of_erroring() {
        let passwords = Passwords::new(1).unwrap();
        let corrupt = PasswordHash::new("not a phc string");
        assert!(!passwords.verify("whatever1", Some(&corrupt)).await.unwrap());
    }
}
