//! `GET /health` (no I/O: safe for platform health checks, even while draining) and
//! `GET /status` (version, uptime, calls, LLM).

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
        .map(|state: AppState| status(&state).into_response());
    health.or(status).unify().boxed()
}

fn status(state: &AppState) -> impl Reply + use<> {
    let uptime = Duration::from_secs(state.started.elapsed().as_secs());
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
    }))
}
