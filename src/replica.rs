//! This process as one replica among several sharing the store: its heartbeat,
//! the reconciliation of calls whose replica died, and the purge of expired shared
//! call state. One task, [`run`], for the life of the server.
//!
//! A call row names the replica whose socket carries it (`calls.owner`). A replica
//! beats every `stale_after / 4`; one silent for `stale_after` is dead, and the next
//! replica to reconcile closes its calls still `in-progress` (status `interrupted`,
//! counts and end time from their turns). A call that a new socket picks up (after
//! `64105` or `applicationReconnect`) is owned again by the replica carrying it.
//! A replica that stops cleanly retires at once, so nothing waits for it.
//!
//! May import: the store, the configuration. Nothing of HTTP or the transports.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ReplicasConfig;
use crate::store::{Millis, Store, now_millis};

/// Beats, reconciles and purges until `stop`, then retires this replica.
pub async fn run(
    store: Arc<dyn Store>,
    config: ReplicasConfig,
    started_at: Millis,
    stop: CancellationToken,
) {
    let every = config.heartbeat_every().max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => beat(&*store, &config, started_at).await,
        }
    }
    if let Err(e) = store.retire(&config.id).await {
        tracing::warn!(error = %e, "cannot retire this replica from the store");
    }
}

/// One round: heartbeat, then close the calls of silent replicas, then purge.
pub async fn beat(store: &dyn Store, config: &ReplicasConfig, started_at: Millis) {
    let now = now_millis();
    if let Err(e) = store.heartbeat(&config.id, started_at, now).await {
        // Without our own heartbeat we must not judge others: we may be the one cut
        // off from the database.
        tracing::warn!(error = %e, "replica heartbeat failed");
        return;
    }
    let stale_before = now - config.stale_after.as_millis() as Millis;
    match store.reconcile(stale_before, now).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            calls = n,
            "closed calls left in progress by a replica that stopped (status interrupted)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot reconcile calls of stopped replicas"),
    }
    if let Err(e) = store.state_purge(now).await {
        tracing::debug!(error = %e, "cannot purge expired call state");
    }
}
