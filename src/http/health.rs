//! `GET /health` (no I/O: safe for platform health checks, even while draining) and
//! `GET /status` (version, uptime, calls, LLM, store).

use std::time::Duration;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::with_state;
use crate::server::AppState;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let status = warp::path!("status")
        .and(warp::get())
        .and(with_state(state))
        .then(|state: AppState| async move { status(&state).await.into_response() });
    health.or(status).unify().boxed()
}

/// How long `/status` waits for the database to answer.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

async fn status(state: &AppState) -> impl Reply + use<> {
    let uptime = Duration::from_secs(state.started.elapsed().as_secs());
    let store_ok = matches!(
        tokio::time::timeout(STORE_PING_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    warp::reply::json(&serde_json::json!({
        "status": if state.is_draining() { "draining" } else { "ok" },
        "draining": state.is_draining(),
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": humantime::format_rfc3339_seconds(state.started_at).to_string(),
        "uptime": humantime::format_duration(uptime).to_string(),
        "uptime_seconds": uptime.as_secs(),
        "active_sessions": state.metrics.active_calls(),
        "total_sessions": state.metrics.total_calls(),
        "llm": {"provider": state.llm.name(), "model": state.llm.model()},
        "store": {
            "backend": state.store.backend(),
            "ok": store_ok,
            "writes": state.recorder.counts(),
        },
    }))
}
