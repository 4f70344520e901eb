//! The Redis [`IdempotencyStore`], sharing a [`RedisCache`]'s connection.
//!
//! Each key holds one JSON record, tagged by `state`: `in_flight` while a
//! request holds the claim (with its claim token, as 32 lower-case hex
//! digits), `completed` once its response is stored. Binary fields (the
//! fingerprint, the body) are standard base64. Every transition is a single
//! atomic Redis command or script, so concurrent instances never both win a
//! claim, and only the holder of a claim can complete or release it.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redis::Script;
use serde::{Deserialize, Serialize};
use waiter_ports::PortError;
use waiter_ports::idempotency::{
    ClaimOutcome, ClaimToken, Fingerprint, IdempotencyStore, StoredResponse,
};

use crate::RedisCache;
use crate::connection::{Namespace, millis};

/// Appended to the cache's prefix, so idempotency records never collide with
/// cache entries (whose keys must therefore not start with it).
const KEY_PREFIX: &str = "idempotency:";

/// Deletes `KEYS[1]` only while it holds the claim `ARGV[1]`, in one atomic
/// step, so a late release can discard neither a later request's claim nor a
/// response. Replies 1 when it deleted, else 0. A record that is not JSON
/// makes the script fail, which surfaces as `Unexpected`.
static RELEASE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local record = redis.call('GET', KEYS[1])
        if not record then
            return 0
        end
        local held = cjson.decode(record)
        if held.state ~= 'in_flight' or held.claim ~= ARGV[1] then
            return 0
        end
        redis.call('DEL', KEYS[1])
        return 1
        ",
    )
});

/// Replaces `KEYS[1]` with the completed record `ARGV[2]`, kept for `ARGV[3]`
/// milliseconds (deleted when that is 0), only while it holds the claim
/// `ARGV[1]`, in one atomic step, so a request that outlived its claim never
/// overwrites a later request's claim or response. Replies 1 when it acted,
/// else 0. A record that is not JSON makes the script fail (`Unexpected`).
static COMPLETE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local record = redis.call('GET', KEYS[1])
        if not record then
            return 0
        end
        local held = cjson.decode(record)
        if held.state ~= 'in_flight' or held.claim ~= ARGV[1] then
            return 0
        end
        if ARGV[3] == '0' then
            redis.call('DEL', KEYS[1])
        else
            redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
        end
        return 1
        ",
    )
});

/// An [`IdempotencyStore`] in Redis, shared by every instance configured with
/// the same key prefix.
///
/// Redis may evict records early under a `maxmemory` policy (each has a TTL,
/// so `volatile-*` policies count too); an evicted response means a retry
/// runs again, so size the memory for the keys expected within the response TTL.
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    namespace: Namespace,
}

impl RedisIdempotencyStore {
    /// A store on `cache`'s connection, keeping its records under the cache's
    /// key prefix followed by `idempotency:`; [`RedisCache::clear_prefix`]
    /// therefore clears them too.
    pub fn new(cache: &RedisCache) -> Self {
        Self {
            namespace: cache.namespace().within(KEY_PREFIX),
        }
    }
}

/// Shows the prefix only; the connection's address may carry a password.
impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("prefix", &self.namespace.prefix())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    /// One `SET … NX GET PX`: stores the claim only if the key is free and
    /// replies with whatever held it, so there is no window between the
    /// attempt and the read. A `claim_ttl` under a millisecond is rounded up
    /// to one, as `PX` cannot express less.
    async fn claim(
        &self,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        claim_ttl: Duration,
    ) -> Result<ClaimOutcome, PortError> {
        let record = encode(&Record::InFlight {
            fingerprint: fingerprint.0,
            claim: claim_text(claim),
        })?;
        let holder: Option<Vec<u8>> = self
            .namespace
            .query(
                redis::cmd("SET")
                    .arg(self.namespace.key(key))
                    .arg(record)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(millis(claim_ttl).max(1)),
            )
            .await?;
        match holder {
            None => Ok(ClaimOutcome::Claimed),
            Some(record) => decode(&record).map(Record::into_outcome),
        }
    }

    /// Replaces the claim with the response and its own TTL, by script. A
    /// `ttl` under a millisecond keeps the response for no time at all: the
    /// key is freed (and `true` returned, as the claim was there to replace).
    async fn complete(
        &self,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let millis = millis(ttl);
        // No use encoding a response that is not going to be kept.
        let record = if millis == 0 {
            Vec::new()
        } else {
            encode(&Record::Completed {
                fingerprint: fingerprint.0,
                status: response.status,
                headers: response.headers,
                body: response.body,
            })?
        };
        self.namespace
            .invoke(
                COMPLETE_CLAIM
                    .key(self.namespace.key(key))
                    .arg(claim_text(claim))
                    .arg(record)
                    .arg(millis),
            )
            .await
    }

    async fn release(&self, key: &str, claim: ClaimToken) -> Result<bool, PortError> {
        self.namespace
            .invoke(
                RELEASE_CLAIM
                    .key(self.namespace.key(key))
                    .arg(claim_text(claim)),
            )
            .await
    }
}

/// A claim token as the record and the scripts hold it: a string, because
/// Lua's cjson reads JSON numbers as doubles, which cannot hold 128 bits.
fn claim_text(claim: ClaimToken) -> String {
    format!("{:032x}", claim.0)
}

/// A record as stored, in a JSON layout the scripts also read: the `state`
/// tags and the `claim` field must not change without them.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    InFlight {
        #[serde(with = "base64_bytes")]
        fingerprint: [u8; 32],
        /// The holder's [`ClaimToken`], as [`claim_text`] writes it. Only the
        /// scripts compare it; a claim without one (written before claims
        /// carried tokens) still reads as in flight, and no token matches it.
        #[serde(default)]
        claim: String,
    },
    Completed {
        #[serde(with = "base64_bytes")]
        fingerprint: [u8; 32],
        status: u16,
        /// Pairs rather than a map: order and repeated names must survive.
        headers: Vec<(String, String)>,
        #[serde(with = "base64_bytes")]
        body: Vec<u8>,
    },
}

impl Record {
    fn into_outcome(self) -> ClaimOutcome {
        match self {
            Self::InFlight { fingerprint, .. } => ClaimOutcome::InFlight {
                fingerprint: Fingerprint(fingerprint),
            },
            Self::Completed {
                fingerprint,
                status,
                headers,
                body,
            } => ClaimOutcome::Completed {
                fingerprint: Fingerprint(fingerprint),
                response: StoredResponse {
                    status,
                    headers,
                    body,
                },
            },
        }
    }
}

fn encode(record: &Record) -> Result<Vec<u8>, PortError> {
    serde_json::to_vec(record)
        .context("cannot encode an idempotency record")
        .map_err(PortError::Unexpected)
}

/// A record that does not decode was written by something else (or a
/// corrupted write): a bug to report, not a free key to overwrite.
fn decode(bytes: &[u8]) -> Result<Record, PortError> {
    serde_json::from_slice(bytes)
        .context("undecodable idempotency record")
        .map_err(PortError::Unexpected)
}

/// Serialises bytes as a standard base64 string, and back into any type
/// built from a `Vec<u8>` (a fixed-size array rejects the wrong length).
mod base64_bytes {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &impl AsRef<[u8]>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64_STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<Vec<u8>>,
    {
        let text = String::deserialize(deserializer)?;
        let bytes = BASE64_STANDARD.decode(text).map_err(D::Error::custom)?;
        let length = bytes.len();
        T::try_from(bytes)
            .map_err(|_| D::Error::invalid_length(length, &"the expected number of bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::{Record, claim_text, decode, encode};
    use waiter_ports::PortError;
    use waiter_ports::idempotency::ClaimToken;

    fn completed() -> Record {
        Record::Completed {
            fingerprint: [7; 32],
            status: 201,
            headers: vec![
                ("Location".to_owned(), "/books/1".to_owned()),
                ("ETag".to_owned(), "\"v1\"".to_owned()),
            ],
            body: vec![0xff, 0x00, b'{'],
        }
    }

    #[test]
    fn records_round_trip() {
        for record in [
            Record::InFlight {
                fingerprint: [1; 32],
                claim: claim_text(ClaimToken(u128::MAX)),
            },
            completed(),
        ] {
            let bytes = encode(&record).expect("encode");
            assert_eq!(decode(&bytes).expect("decode"), record);
        }
    }

    /// The scripts match on this exact tag and on the claim as a string of
    /// fixed width, which a claim passed to them as an argument must equal.
    #[test]
    fn claims_are_tagged_in_flight_with_their_token_as_text() {
        let bytes = encode(&Record::InFlight {
            fingerprint: [1; 32],
            claim: claim_text(ClaimToken(0xab)),
        })
        .expect("encode");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(json["state"], "in_flight");
        assert_eq!(json["claim"], format!("{}ab", "0".repeat(30)));
        assert_eq!(claim_text(ClaimToken(u128::MAX)), "f".repeat(32));
    }

    /// A claim written before claims carried tokens is still in flight.
    #[test]
    fn claims_without_a_token_still_decode() {
        let fingerprint = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let bytes = format!(r#"{{"state":"in_flight","fingerprint":"{fingerprint}"}}"#);
        assert_eq!(
            decode(bytes.as_bytes()).expect("decode"),
            Record::InFlight {
                fingerprint: [1; 32],
                claim: String::new(),
            }
        );
    }

    #[test]
    fn undecodable_records_are_unexpected() {
        let short_fingerprint = br#"{"state":"in_flight","fingerprint":"AAEC"}"#;
        for bytes in [&b"not json"[..], br#"{"state":"lost"}"#, short_fingerprint] {
            assert!(
                matches!(decode(bytes), Err(PortError::Unexpected(_))),
                "{bytes:?}"
            );
        }
    }
}
