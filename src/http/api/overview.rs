//! `GET /api/overview?hours=24`: what the console's overview draws. From the
//! store (all replicas): calls and agent replies per hour, calls by status, and
//! the first-token latencies of recent replies as histogram buckets with p50 and
//! p95. From this process's metrics: live calls by mode and LLM errors by kind.

use serde_json::json;
use warp::Reply;
use warp::reply::Response;

use super::{bad_request, parse_params, store_failed, time};
use crate::metrics::{CallMode, LLM_ERROR_KINDS};
use crate::state::AppState;
use crate::store::now_millis;

/// Upper bounds of the first-token buckets, in milliseconds (the last is open).
const BUCKETS_MS: [i64; 9] = [100, 200, 300, 500, 750, 1000, 1500, 2500, 5000];

pub(super) async fn get(raw: String, state: AppState) -> Response {
    let params = match parse_params(&raw) {
        Ok(p) => p,
        Err(e) => return bad_request(&e),
    };
    let hours = params.hours.unwrap_or(24);
    let since = now_millis() - i64::from(hours) * 3_600_000;
    let overview = match state.store.overview(since).await {
        Ok(o) => o,
        Err(e) => return store_failed(e),
    };
    let mut sorted = overview.first_token_ms.clone();
    sorted.sort_unstable();
    // Nearest rank: the smallest value with at least q of the replies at or below it.
    let quantile = |q: f64| {
        let rank = ((sorted.len() as f64 * q).ceil() as usize).max(1);
        sorted.get(rank - 1).copied()
    };
    let mut counts = [0u64; BUCKETS_MS.len() + 1];
    for ms in &sorted {
        let bucket = BUCKETS_MS
            .iter()
            .position(|b| ms <= b)
            .unwrap_or(BUCKETS_MS.len());
        counts[bucket] += 1;
    }
    let buckets: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"le_ms": BUCKETS_MS.get(i), "count": n}))
        .collect();
    let metrics = &state.metrics;
    let per_hour = |rows: &[(i64, i64)]| {
        rows.iter()
            .map(|(hour, n)| json!({"hour": time(*hour), "count": n}))
            .collect::<Vec<_>>()
    };
    warp::reply::json(&json!({
        "since": time(since),
        "hours": hours,
        "live_calls": CallMode::ALL.iter()
            .map(|mode| (mode.as_str(), metrics.active_calls_in(*mode)))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "live_calls_total": metrics.active_calls(),
        "calls_per_hour": per_hour(&overview.calls_per_hour),
        "replies_per_hour": per_hour(&overview.replies_per_hour),
        "calls_by_status": overview.by_status.iter()
            .map(|(status, n)| json!({"status": status, "count": n}))
            .collect::<Vec<_>>(),
        "first_token": {
            "replies": sorted.len(),
            "p50_ms": quantile(0.5),
            "p95_ms": quantile(0.95),
            "buckets": buckets,
        },
        "llm_errors": LLM_ERROR_KINDS.iter()
            .map(|kind| (*kind, metrics.llm_errors(kind)))
            .collect::<std::collections::BTreeMap<_, _>>(),
    }))
    .into_response()
}
