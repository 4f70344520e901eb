//! [`IdempotencyStore`] on `idempotency_keys`: claims and replayable
//! responses kept in the database, so a restart or a cache flush neither
//! forgets a response nor lets a retry run again.
//!
//! Expiry is by the adapter's clock (the system's), as in the cache adapters
//! that implement the same port: a row whose `expires_at` has passed counts
//! as absent, and is deleted by the next claim.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Executor, FromRow, Pool};
use waiter_domain::Timestamp;
use waiter_ports::PortError;
use waiter_ports::idempotency::{
    ClaimOutcome, ClaimToken, Fingerprint, IdempotencyStore, StoredResponse,
};

use crate::{Column, Connection, Db, Dialect, Param, Row};

const PRUNE: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";
const CLAIM: &str = "INSERT INTO idempotency_keys (key, fingerprint, claim, expires_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key) DO NOTHING
                     RETURNING key";
const HOLDER: &str = "SELECT fingerprint, claim, status, headers, body FROM idempotency_keys
                      WHERE key = $1";
const COMPLETE: &str = "UPDATE idempotency_keys
                        SET claim = NULL, status = $3, headers = $4, body = $5, expires_at = $6
                        WHERE key = $1 AND claim = $2 AND expires_at > $7
                        RETURNING key";
const RELEASE: &str = "DELETE FROM idempotency_keys
                       WHERE key = $1 AND claim = $2 AND expires_at > $3
                       RETURNING key";

/// Idempotency keys in the `idempotency_keys` table.
#[derive(Debug)]
pub struct SqlIdempotencyStore<D: Dialect> {
    pub(crate) pool: Pool<D::Database>,
}

/// What holds a key: a claim (`claim` set) or a response (`status` set).
#[derive(Debug, FromRow)]
struct HolderRow {
    fingerprint: Vec<u8>,
    claim: Option<String>,
    status: Option<i32>,
    headers: Option<String>,
    body: Option<Vec<u8>>,
}

impl HolderRow {
    fn into_outcome(self) -> Result<ClaimOutcome, PortError> {
        let fingerprint = Fingerprint(
            self.fingerprint
                .try_into()
                .map_err(|_| corrupt("a fingerprint is not 32 bytes"))?,
        );
        if self.claim.is_some() {
            return Ok(ClaimOutcome::InFlight { fingerprint });
        }
        let (Some(status), Some(headers), Some(body)) = (self.status, self.headers, self.body)
        else {
            return Err(corrupt("a completed key has no response"));
        };
        Ok(ClaimOutcome::Completed {
            fingerprint,
            response: StoredResponse {
                status: u16::try_from(status).map_err(|_| corrupt("a status is out of range"))?,
                headers: decode_headers(&headers)?,
                body,
            },
        })
    }
}

/// A row this adapter could not have written.
fn corrupt(what: &'static str) -> PortError {
    PortError::unexpected(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

/// A claim token as stored: fixed-width hex.
fn claim_text(claim: ClaimToken) -> String {
    format!("{:032x}", claim.0)
}

/// Headers as one line each, `name` and value separated by a colon: names
/// cannot contain a colon, and neither names nor values a line break.
fn encode_headers(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect()
}

fn decode_headers(text: &str) -> Result<Vec<(String, String)>, PortError> {
    text.lines()
        .map(|line| {
            line.split_once(':')
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .ok_or_else(|| corrupt("a stored header has no colon"))
        })
        .collect()
}

/// `now` plus `ttl`, saturating far in the future.
fn after(now: Timestamp, ttl: Duration) -> Timestamp {
    now.checked_add(time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX))
        .unwrap_or(now + time::Duration::days(365 * 100))
}

/// The adapter's clock, at the microsecond precision timestamps are stored with.
fn now() -> Timestamp {
    let now = Timestamp::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

#[async_trait]
impl<D: Dialect> IdempotencyStore for SqlIdempotencyStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    for<'n> &'n str: ColumnIndex<Row<D>>,
    usize: ColumnIndex<Row<D>>,
    String: Column<Db<D>>,
    i32: Column<Db<D>>,
    Vec<u8>: Column<Db<D>>,
    Option<String>: Column<Db<D>>,
    Option<i32>: Column<Db<D>>,
    Option<Vec<u8>>: Column<Db<D>>,
    for<'q> &'q [u8]: Param<'q, Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
{
    async fn claim(
        &self,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        claim_ttl: Duration,
    ) -> Result<ClaimOutcome, PortError> {
        let now = now();
        let mut tx = self
            .pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(D::port_error)?;
        // Whatever has expired is free again; pruning here keeps the table
        // as small as a day of keys without a sweeper.
        sqlx::query(PRUNE)
            .bind(D::Timestamp::from(now))
            .execute(&mut *tx)
            .await
            .map_err(D::port_error)?;
        let claimed = sqlx::query_scalar::<_, String>(CLAIM)
            .bind(key)
            .bind(&fingerprint.0[..])
            .bind(claim_text(claim))
            .bind(D::Timestamp::from(after(now, claim_ttl)))
            .fetch_optional(&mut *tx)
            .await
            .map_err(D::port_error)?;
        let outcome = match claimed {
            Some(_) => ClaimOutcome::Claimed,
            None => sqlx::query_as::<_, HolderRow>(HOLDER)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(D::port_error)?
                .into_outcome()?,
        };
        tx.commit().await.map_err(D::port_error)?;
        Ok(outcome)
    }

    /// A `ttl` under a millisecond keeps the response for no time at all:
    /// the key is freed, as the cache adapters do.
    async fn complete(
        &self,
        key: &str,
        claim: ClaimToken,
        _fingerprint: Fingerprint,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        if ttl < Duration::from_millis(1) {
            return self.release(key, claim).await;
        }
        let now = now();
        let completed = sqlx::query_scalar::<_, String>(COMPLETE)
            .bind(key)
            .bind(claim_text(claim))
            .bind(i32::from(response.status))
            .bind(encode_headers(&response.headers))
            .bind(&response.body[..])
            .bind(D::Timestamp::from(after(now, ttl)))
            .bind(D::Timestamp::from(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(D::port_error)?;
        Ok(completed.is_some())
    }

    async fn release(&self, key: &str, claim: ClaimToken) -> Result<bool, PortError> {
        let released = sqlx::query_scalar::<_, String>(RELEASE)
            .bind(key)
            .bind(claim_text(claim))
            .bind(D::Timestamp::from(now()))
            .fetch_optional(&self.pool)
            .await
            .map_err(D::port_error)?;
        Ok(released.is_some())
    }
}
