//! `GET /health` (liveness, no I/O: 200 as long as the process serves, even while
//! draining), `GET /ready` (for load balancers: 503 while draining or while the
//! store writer is too far behind to take new calls) and `GET /status` (version,
//! uptime, calls, LLM, store).

use std::time::Duration;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::with_state;
use crate::state::AppState;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let ready = warp::path!("ready")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| {
            let reason = if state.is_draining() {
                Some("draining")
            } else if state.recorder.busy() {
                Some("store writer behind")
            } else {
                None
            };
            let body = serde_json::json!({"ready": reason.is_none(), "reason": reason});
            let code = match reason {
                None => warp::http::StatusCode::OK,
                Some(_) => warp::http::StatusCode::SERVICE_UNAVAILABLE,
            };
            warp::reply::with_status(warp::reply::json(&body), code).into_response()
        });
    let status = warp::path!("status")
        .and(warp::get())
        .and(with_state(state))
        .then(|state: AppState| async move { status(&state).await.into_response() });
    health.or(ready).unify().or(status).unify().boxed()
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
