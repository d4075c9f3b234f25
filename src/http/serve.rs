//! The accept loop: serves the routes on an already-bound listener, one hyper
//! HTTP/1 connection per task, until told to stop.
//!
//! Written out instead of `warp::serve` for two guards warp does not expose:
//!
//! - a **header-read timeout** (hyper's, with tokio's timer): a client has that long
//!   to send a request's headers, and an idle keep-alive connection is closed after
//!   it too, since hyper starts the same timer while it waits for the next request;
//! - a **connection cap**: beyond `MAX_CONNECTIONS` open HTTP connections, a new one
//!   is closed at once (and counted in the log), so slow or idle clients cannot use
//!   up the process's file descriptors. An upgraded WebSocket leaves this count and
//!   is bounded by `MAX_CALLS` instead.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Bounds of the HTTP edge.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `routes` on `listener` until `stop` is cancelled, then lets open HTTP
/// connections finish (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    limits: ServeLimits,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if refused % 100 == 1 {
                tracing::warn!(
                    limit = limits.max_connections,
                    refused,
                    "closing a new connection: too many open HTTP connections"
                );
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}
