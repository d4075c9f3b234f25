//! The `[replicas]` part of the configuration: how this process names itself among
//! several replicas sharing one PostgreSQL database, and how soon a silent
//! replica's calls are closed (README "Scaling out").

use std::time::Duration;

use super::Vars;

#[derive(Clone, Debug)]
pub struct ReplicasConfig {
    /// This process's id in `replicas` and `calls.owner`: `REPLICA_ID` (or
    /// Railway's `RAILWAY_REPLICA_ID`, or the host name) plus a random suffix, so a
    /// restarted process never inherits the calls its predecessor left.
    pub id: String,
    /// `REPLICAS`: how many replicas the deployment runs (1 unless told). More than
    /// one needs PostgreSQL: replicas cannot share a SQLite file.
    pub expected: usize,
    /// `REPLICA_STALE_SECS`: a replica silent this long is dead; any other closes
    /// its calls. Heartbeats go out four times as often.
    pub stale_after: Duration,
}

impl ReplicasConfig {
    pub fn heartbeat_every(&self) -> Duration {
        self.stale_after / 4
    }
}

pub(super) fn read(env: &mut Vars, database_url: &str) -> ReplicasConfig {
    let expected: usize = env.parse("REPLICAS", 1);
    if expected > 1 && database_url.starts_with("sqlite:") {
        env.errors.push(format!(
            "REPLICAS={expected} needs a shared database: set DATABASE_URL=postgres://… (each replica would have a SQLite file of its own, and a call that moves to another replica would lose its conversation)"
        ));
    }
    let stale: u64 = env.parse("REPLICA_STALE_SECS", 10);
    if stale < 2 {
        env.errors
            .push("REPLICA_STALE_SECS must be at least 2".into());
    }
    let base = env
        .get("REPLICA_ID")
        .or_else(|| env.get("RAILWAY_REPLICA_ID"))
        .or_else(|| env.get("HOSTNAME"))
        .unwrap_or_else(|| "voxrelay".into());
    let base: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    ReplicasConfig {
        id: format!("{base}-{suffix}"),
        expected: expected.max(1),
        stale_after: Duration::from_secs(stale.max(2)),
    }
}
