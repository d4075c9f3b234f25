//! Call state every replica shares through the database: [`SharedState`], its SQL,
//! and [`impl_shared!`], which implements it for a backend's pool.
//!
//! Two parts:
//! - the `call_state` table, short-lived facts keyed by kind and key with an
//!   expiry (a used call token, an outbound call's SID, an armed reconnect, a
//!   Media Streams ending, a socket lease). Insert-if-absent and take-once are
//!   single statements, so two replicas racing for the same key cannot both win;
//! - the `replicas` table, each process's heartbeat, and [`SharedState::reconcile`],
//!   which closes the calls a replica left `in-progress` when it stopped beating.
//!
//! Times are milliseconds since the Unix epoch, as everywhere in the store.

use futures::future::BoxFuture;

use super::{Millis, StoreResult};

/// Shared, expiring facts about calls, and the replicas' heartbeats.
pub trait SharedState: Send + Sync {
    /// Stores `value` under (`kind`, `key`) until `expires_at` unless a live entry
    /// is there already. True when this call stored it (it was absent or expired).
    fn state_insert<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
        value: &'a str,
        expires_at: Millis,
        now: Millis,
    ) -> BoxFuture<'a, StoreResult<bool>>;
    /// Stores `value` under (`kind`, `key`) until `expires_at`, replacing any entry.
    fn state_put<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
        value: &'a str,
        expires_at: Millis,
    ) -> BoxFuture<'a, StoreResult<()>>;
    /// The live value under (`kind`, `key`).
    fn state_get<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, StoreResult<Option<String>>>;
    /// Removes the entry and returns its value if it was live: one caller gets it.
    fn state_take<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, StoreResult<Option<String>>>;
    /// Hands a call token's entry to a new socket (`value`): only when the last
    /// socket dropped (`dropped`) or another replica holding it stopped beating
    /// before `stale_before` (`open:<replica>`), and the entry is live. One caller
    /// wins.
    fn state_reclaim_token<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        stale_before: Millis,
        now: Millis,
    ) -> BoxFuture<'a, StoreResult<bool>>;
    /// Deletes expired entries; returns how many.
    fn state_purge(&self, now: Millis) -> BoxFuture<'_, StoreResult<u64>>;

    /// Records that replica `id` (started at `started_at`) is alive at `now`.
    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        started_at: Millis,
        now: Millis,
    ) -> BoxFuture<'a, StoreResult<()>>;
    /// Removes replica `id` (it stopped cleanly).
    fn retire<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<()>>;
    /// Closes the calls still `in-progress` whose owner has not beaten since
    /// `stale_before`: status `interrupted`, counts from their turns, end time from
    /// their last turn. Returns how many. Forgets replicas long gone.
    fn reconcile(&self, stale_before: Millis, now: Millis) -> BoxFuture<'_, StoreResult<u64>>;
}

pub const STATE_INSERT: &str = "INSERT INTO call_state (kind, key, value, expires_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO UPDATE SET \
     value = excluded.value, expires_at = excluded.expires_at \
     WHERE call_state.expires_at < $5";

pub const STATE_PUT: &str = "INSERT INTO call_state (kind, key, value, expires_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO UPDATE SET \
     value = excluded.value, expires_at = excluded.expires_at";

pub const STATE_GET: &str =
    "SELECT value FROM call_state WHERE kind = $1 AND key = $2 AND expires_at >= $3";

pub const STATE_TAKE: &str =
    "DELETE FROM call_state WHERE kind = $1 AND key = $2 RETURNING value, expires_at";

pub const STATE_RECLAIM_TOKEN: &str = "UPDATE call_state SET value = $2 \
     WHERE kind = 'token' AND key = $1 AND expires_at >= $4 \
     AND (value = 'dropped' OR (value LIKE 'open:%' AND value <> $2 AND substr(value, 6) NOT IN \
       (SELECT id FROM replicas WHERE heartbeat_at >= $3)))";

pub const STATE_PURGE: &str = "DELETE FROM call_state WHERE expires_at < $1";

pub const HEARTBEAT: &str = "INSERT INTO replicas (id, started_at, heartbeat_at) \
     VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at";

pub const RETIRE: &str = "DELETE FROM replicas WHERE id = $1";

/// Replicas silent for a day are forgotten (their calls were reconciled long ago).
pub const FORGET_REPLICAS: &str = "DELETE FROM replicas WHERE heartbeat_at < $1";

/// `$1`: heartbeats older than this are stale; `$2`: now.
pub const RECONCILE: &str = "UPDATE calls SET status = 'interrupted', \
     ended_at = COALESCE((SELECT MAX(t.ended_at) FROM turns t WHERE t.call_sid = calls.call_sid), \
       calls.started_at), \
     duration_ms = COALESCE((SELECT MAX(t.ended_at) FROM turns t \
       WHERE t.call_sid = calls.call_sid), calls.started_at) - calls.started_at, \
     turns = (SELECT COUNT(*) FROM turns t WHERE t.call_sid = calls.call_sid \
       AND t.role = 'caller'), \
     interrupts = (SELECT COUNT(*) FROM turns t WHERE t.call_sid = calls.call_sid \
       AND t.interrupted), \
     updated_at = $2 \
     WHERE status = 'in-progress' AND owner IS NOT NULL \
     AND owner NOT IN (SELECT id FROM replicas WHERE heartbeat_at >= $1)";

/// A day, in milliseconds.
const DAY_MS: Millis = 24 * 3600 * 1000;

/// Implements [`SharedState`] for `$store`: the calls' state (tokens, reconnect
/// answers, handoffs) goes through its field `$calls`, the replica's rounds
/// (heartbeat, reconcile, purge, retire) through `$rounds`, each a
/// `sqlx::Pool<$db>`.
macro_rules! impl_shared {
    ($store:ty, calls: $calls:ident, rounds: $rounds:ident) => {
        impl $crate::store::shared::SharedState for $store {
            fn state_insert<'a>(
                &'a self,
                kind: &'a str,
                key: &'a str,
                value: &'a str,
                expires_at: i64,
                now: i64,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<bool>> {
                Box::pin(async move {
                    let done = sqlx::query($crate::store::shared::STATE_INSERT)
                        .bind(kind)
                        .bind(key)
                        .bind(value)
                        .bind(expires_at)
                        .bind(now)
                        .execute(&self.$calls)
                        .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn state_put<'a>(
                &'a self,
                kind: &'a str,
                key: &'a str,
                value: &'a str,
                expires_at: i64,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<()>> {
                Box::pin(async move {
                    sqlx::query($crate::store::shared::STATE_PUT)
                        .bind(kind)
                        .bind(key)
                        .bind(value)
                        .bind(expires_at)
                        .execute(&self.$calls)
                        .await?;
                    Ok(())
                })
            }

            fn state_get<'a>(
                &'a self,
                kind: &'a str,
                key: &'a str,
                now: i64,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<Option<String>>> {
                Box::pin(async move {
                    let value: Option<(String,)> = sqlx::query_as($crate::store::shared::STATE_GET)
                        .bind(kind)
                        .bind(key)
                        .bind(now)
                        .fetch_optional(&self.$calls)
                        .await?;
                    Ok(value.map(|(v,)| v))
                })
            }

            fn state_take<'a>(
                &'a self,
                kind: &'a str,
                key: &'a str,
                now: i64,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<Option<String>>> {
                Box::pin(async move {
                    let row: Option<(String, i64)> =
                        sqlx::query_as($crate::store::shared::STATE_TAKE)
                            .bind(kind)
                            .bind(key)
                            .fetch_optional(&self.$calls)
                            .await?;
                    Ok(row.filter(|(_, expires)| *expires >= now).map(|(v, _)| v))
                })
            }

            fn state_reclaim_token<'a>(
                &'a self,
                key: &'a str,
                value: &'a str,
                stale_before: i64,
                now: i64,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<bool>> {
                Box::pin(async move {
                    let done = sqlx::query($crate::store::shared::STATE_RECLAIM_TOKEN)
                        .bind(key)
                        .bind(value)
                        .bind(stale_before)
                        .bind(now)
                        .execute(&self.$calls)
                        .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn state_purge(
                &self,
                now: i64,
            ) -> futures::future::BoxFuture<'_, $crate::store::StoreResult<u64>> {
                Box::pin(async move {
                    let done = sqlx::query($crate::store::shared::STATE_PURGE)
                        .bind(now)
                        .execute(&self.$rounds)
                        .await?;
                    Ok(done.rows_affected())
                })
            }

            fn heartbeat<'a>(
                &'a self,
                id: &'a str,
                started_at: i64,
                now: i64,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<()>> {
                Box::pin(async move {
                    sqlx::query($crate::store::shared::HEARTBEAT)
                        .bind(id)
                        .bind(started_at)
                        .bind(now)
                        .execute(&self.$rounds)
                        .await?;
                    Ok(())
                })
            }

            fn retire<'a>(
                &'a self,
                id: &'a str,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<()>> {
                Box::pin(async move {
                    sqlx::query($crate::store::shared::RETIRE)
                        .bind(id)
                        .execute(&self.$rounds)
                        .await?;
                    Ok(())
                })
            }

            fn reconcile(
                &self,
                stale_before: i64,
                now: i64,
            ) -> futures::future::BoxFuture<'_, $crate::store::StoreResult<u64>> {
                Box::pin(async move {
                    let done = sqlx::query($crate::store::shared::RECONCILE)
                        .bind(stale_before)
                        .bind(now)
                        .execute(&self.$rounds)
                        .await?;
                    sqlx::query($crate::store::shared::FORGET_REPLICAS)
                        .bind(now - $crate::store::shared::day_ms())
                        .execute(&self.$rounds)
                        .await?;
                    Ok(done.rows_affected())
                })
            }
        }
    };
}

/// A day, in milliseconds (for [`impl_shared!`]).
pub const fn day_ms() -> Millis {
    DAY_MS
}

pub(crate) use impl_shared;
