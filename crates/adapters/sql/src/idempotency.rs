//! Idempotency keys in `idempotency_keys`: [`IdempotencyStore`] reads and prunes them;
//! the creating stores write them with [`begin_creating`], in the transaction
//! that creates the resource, so "created" and "remembered" commit together
//! or not at all.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Executor, FromRow, Pool, Transaction};
use waiter_domain::Timestamp;
use waiter_ports::PortError;
use waiter_ports::idempotency::{
    Fingerprint, IdempotencyRecord, IdempotencyStore, KeyTaken, Remembered, StoredResponse,
};

use crate::calls::Calls;
use crate::{Column, Connection, Db, Dialect, Param, Row};

const FIND: &str = "SELECT fingerprint, status, headers, body FROM idempotency_keys
                    WHERE key = $1 AND expires_at > $2";
/// Records a key unless it holds a record that has not expired by `$7`.
/// A concurrent transaction recording the same key makes this one wait for
/// its outcome: a commit leaves no row returned here, a rollback the key free.
const REMEMBER: &str =
    "INSERT INTO idempotency_keys (key, fingerprint, status, headers, body, expires_at)
                        VALUES ($1, $2, $3, $4, $5, $6)
                        ON CONFLICT (key) DO UPDATE
                        SET fingerprint = excluded.fingerprint, status = excluded.status,
                            headers = excluded.headers, body = excluded.body,
                            expires_at = excluded.expires_at
                        WHERE idempotency_keys.expires_at <= $7
                        RETURNING key";
const PRUNE: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";

/// Idempotency keys in the `idempotency_keys` table.
#[derive(Debug)]
pub struct SqlIdempotencyStore<D: Dialect> {
    pub(crate) pool: Pool<D::Database>,
    pub(crate) calls: Calls<D>,
}

/// A row of `idempotency_keys`.
#[derive(Debug, FromRow)]
struct RememberedRow {
    fingerprint: Vec<u8>,
    status: i32,
    headers: String,
    body: Vec<u8>,
}

impl TryFrom<RememberedRow> for Remembered {
    type Error = PortError;

    fn try_from(row: RememberedRow) -> Result<Self, PortError> {
        Ok(Remembered {
            fingerprint: Fingerprint(
                row.fingerprint
                    .try_into()
                    .map_err(|_| corrupt("a fingerprint is not 32 bytes"))?,
            ),
            response: StoredResponse {
                status: u16::try_from(row.status)
                    .map_err(|_| corrupt("a status is out of range"))?,
                headers: decode_headers(&row.headers)?,
                body: row.body,
            },
        })
    }
}

/// A row this adapter could not have written.
fn corrupt(what: &'static str) -> PortError {
    PortError::unexpected(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
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

/// Begins the writing transaction a creating store inserts its resource in
/// and commits, holding `remember` when the request has an idempotency key;
/// `KeyTaken`, with nothing written, when that key holds a record that has
/// not expired.
///
/// The key is written before the resource, so of two requests racing with
/// one key the second waits here for the first and, once it commits, gets
/// `KeyTaken` (and replays it) rather than tripping over the resource's own
/// unique constraints.
pub(crate) async fn begin_creating<D: Dialect>(
    pool: &Pool<Db<D>>,
    remember: Option<&IdempotencyRecord>,
) -> Result<Result<Transaction<'static, Db<D>>, KeyTaken>, PortError>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    usize: ColumnIndex<Row<D>>,
    String: Column<Db<D>>,
    i32: Column<Db<D>>,
    for<'q> &'q [u8]: Param<'q, Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
{
    let mut tx = pool
        .begin_with(D::BEGIN_WRITE)
        .await
        .map_err(D::port_error)?;
    let Some(IdempotencyRecord {
        key,
        remembered,
        created_at,
        expires_at,
    }) = remember
    else {
        return Ok(Ok(tx));
    };
    let recorded = sqlx::query_scalar::<_, String>(REMEMBER)
        .bind(key.as_str())
        .bind(&remembered.fingerprint.0[..])
        .bind(i32::from(remembered.response.status))
        .bind(encode_headers(&remembered.response.headers))
        .bind(&remembered.response.body[..])
        .bind(D::Timestamp::from(*expires_at))
        .bind(D::Timestamp::from(*created_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(D::port_error)?;
    Ok(match recorded {
        Some(_) => Ok(tx),
        None => Err(KeyTaken),
    })
}

#[async_trait]
impl<D: Dialect> IdempotencyStore for SqlIdempotencyStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    for<'n> &'n str: ColumnIndex<Row<D>>,
    i32: Column<Db<D>>,
    String: Column<Db<D>>,
    Vec<u8>: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
{
    async fn find(&self, key: &str, now: Timestamp) -> Result<Option<Remembered>, PortError> {
        let (pool, key) = (self.pool.clone(), key.to_owned());
        self.calls
            .read("idempotency.find", async move {
                sqlx::query_as::<_, RememberedRow>(FIND)
                    .bind(key.as_str())
                    .bind(D::Timestamp::from(now))
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?
                    .map(Remembered::try_from)
                    .transpose()
            })
            .await
    }

    async fn prune(&self, now: Timestamp) -> Result<(), PortError> {
        let store = self.clone();
        self.calls
            .write("idempotency.prune", async move {
                sqlx::query(PRUNE)
                    .bind(D::Timestamp::from(now))
                    .execute(store.calls.writer())
                    .await
                    .map_err(D::port_error)?;
                Ok(())
            })
            .await
    }
}
