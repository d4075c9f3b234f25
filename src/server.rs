//! The server process: [`run`], which serves HTTP and WebSocket calls on an
//! already-bound listener until a shutdown signal, then drains live calls; the
//! runtime, the listener and the open-file limit. The shared state is
//! `crate::state` (the HTTP edge imports that, never this module).
//!
//! Draining: warp's own graceful shutdown does not wait for upgraded WebSockets, so
//! every call runs inside a [`TaskTracker`](tokio_util::task::TaskTracker). On shutdown new calls are refused with
//! 503 while `/health` keeps answering; live calls carry on until they end or the
//! drain timeout passes, when they are told to stop and end cleanly.

use std::future::Future;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

pub use crate::state::{AppState, StartError};
use crate::store;

/// How long a shutdown waits for queued call records to reach the store.
pub const STORE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The multi-threaded runtime the server runs on (one worker per core), shared
/// with the benchmarks so they measure the same scheduler.
///
/// Tokio's defaults are kept. Measured alternative: checking timers and I/O every
/// 16 tasks instead of 61 (`event_interval`) cut the Media Streams frames sent more
/// than 5 ms late by about 5x at 200 media calls, but cost ConversationRelay 10-20 %
/// of its turns per second, so it is not the default (BENCHMARKS.md).
pub fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder
}

/// Binds a listener for [`run`]. Accepted sockets inherit `TCP_NODELAY` from it,
/// so a small WebSocket frame (one token) is sent at once instead of waiting for
/// the peer's ACK of the previous one (Nagle's algorithm).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Raises this process's open-file limit towards what `calls` live calls need
/// (each holds a socket to Twilio and one to the LLM), and grows the descriptor
/// table to that size now. Returns the limit in force.
///
/// Why now: Linux doubles a process's descriptor table as descriptors are opened,
/// and in a process with several threads each doubling waits for an RCU grace
/// period (10-15 ms on a 2-vCPU VM) while every other thread opening or
/// accepting a socket waits behind it. Under a ramp of calls both runtime workers
/// stalled together, and every live call's paced audio went out 10-20 ms late
/// (BENCHMARKS.md, issue 17). The table never shrinks, so growing it once before
/// the first call leaves no doubling for later (kernel memory: 8 bytes a slot).
pub fn raise_open_files_limit(calls: usize) -> std::io::Result<u64> {
    let wanted = descriptors_for(calls);
    let limit = rlimit::increase_nofile_limit(wanted)?;
    if let Err(e) = grow_descriptor_table(wanted.min(limit)) {
        tracing::warn!(error = %e, "cannot make room for the calls' sockets in advance");
    }
    Ok(limit)
}

/// Descriptors `calls` live calls need: a socket to Twilio and one to the LLM
/// each, and room for the rest of the process.
fn descriptors_for(calls: usize) -> u64 {
    (calls as u64).saturating_mul(2).saturating_add(256)
}

/// Grows this process's descriptor table to hold `size` descriptors, by opening
/// (and at once closing) one numbered `size - 1`.
fn grow_descriptor_table(size: u64) -> std::io::Result<()> {
    let highest = i32::try_from(size.saturating_sub(1)).unwrap_or(i32::MAX);
    let null = std::fs::File::open("/dev/null")?;
    rustix::io::fcntl_dupfd_cloexec(&null, highest)?;
    Ok(())
}

/// Hands the live-call commands other replicas send through the store (PostgreSQL
/// `NOTIFY`) to the sessions this process carries, until `stop`.
async fn relay_commands(state: AppState, stop: CancellationToken) {
    use futures::StreamExt as _;
    let mut notes = match state.store.listen().await {
        Ok(Some(notes)) => notes,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for live-call commands from other replicas");
            return;
        }
    };
    loop {
        let note = tokio::select! {
            () = stop.cancelled() => return,
            note = notes.next() => match note {
                Some(note) => note,
                None => return,
            },
        };
        if let Some((command, call_sid)) = crate::transport::live::CallCommand::parse(&note)
            && state.live_calls.command(call_sid, command)
        {
            tracing::info!(call_sid, command = ?command, "command for a call carried here");
        }
    }
}

/// Serves until `shutdown` completes, then drains live calls (at most the
/// configured drain timeout) and returns.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let server_stop = CancellationToken::new();
    let routes = crate::http::routes(state.clone());
    let limits = crate::http::serve::ServeLimits {
        header_read_timeout: state.config.limits.header_read_timeout,
        max_connections: state.config.limits.max_connections,
    };
    let server = tokio::spawn(crate::http::serve::serve(
        listener,
        routes,
        limits,
        server_stop.clone(),
    ));

    let replica_stop = CancellationToken::new();
    let replica = tokio::spawn(crate::replica::run(
        state.store.clone(),
        state.config.replicas.clone(),
        store::millis(state.started_at),
        replica_stop.clone(),
    ));

    let commands = tokio::spawn(relay_commands(state.clone(), replica_stop.clone()));

    shutdown.await;
    let live = state.calls.len();
    tracing::info!(live_calls = live, timeout = ?state.config.drain_timeout, "draining: refusing new calls");
    state.draining.cancel();
    state.calls.close();
    if tokio::time::timeout(state.config.drain_timeout, state.calls.wait())
        .await
        .is_err()
    {
        let left = state.calls.len();
        tracing::warn!(calls = left, "drain timeout: ending the remaining calls");
        state.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), state.calls.wait()).await;
    }
    // Every call has ended: what they said must reach the store before we exit.
    if !state.recorder.flush(STORE_FLUSH_TIMEOUT).await {
        tracing::warn!(
            pending = state.recorder.counts().pending,
            "call records still unwritten at shutdown"
        );
    }
    // Every call is over and written: retire this replica from the store.
    replica_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), replica).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), commands).await;
    server_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), state.store.close()).await;
    tracing::info!("server stopped");
}

#[cfg(test)]
mod tests {
    /// The kernel's descriptor-table size (`FDSize`) for this process.
    fn fd_table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("FDSize:"))
            .and_then(|size| size.trim().parse().ok())
            .expect("an FDSize line")
    }

    #[test]
    fn the_descriptor_table_is_grown_for_the_calls_up_front() {
        let calls = 3000;
        let limit = super::raise_open_files_limit(calls).expect("the open-file limit");
        let wanted = super::descriptors_for(calls).min(limit);
        let size = fd_table_size();
        assert!(
            size >= wanted,
            "descriptor table of {size} slots, {wanted} wanted (limit {limit})"
        );
    }
}
