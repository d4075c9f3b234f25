//! `GET /metrics`: Prometheus text exposition of [`crate::metrics::Metrics`],
//! behind the API bearer token (call volumes are nobody else's business). Answers
//! during a drain too. The per-agent series (`agent` label) come from the
//! roster's loads.

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{auth, with_state};
use crate::state::AppState;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(auth::bearer(state.clone()))
        .and(with_state(state))
        .map(|state: AppState| {
            let mut body = state.metrics.render(state.is_draining());
            render_agents(&state, &mut body);
            warp::reply::with_header(
                body,
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        })
        .boxed()
}

/// Each agent's live, started and turned-away calls (agent ids are letters,
/// digits, `-` and `_`, so they need no escaping in a label).
fn render_agents(state: &AppState, out: &mut String) {
    use std::fmt::Write as _;
    let series = [
        (
            "voxrelay_agent_active_calls",
            "gauge",
            "Live calls, by agent.",
        ),
        (
            "voxrelay_agent_calls_total",
            "counter",
            "Calls taken since start, by agent.",
        ),
        (
            "voxrelay_agent_calls_refused_total",
            "counter",
            "Calls turned away before they were answered (max_calls or MAX_CALLS), by agent.",
        ),
    ];
    for (i, (name, kind, help)) in series.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for agent in state.agents.iter() {
            let (live, total, refused) = agent.load.counts();
            let value = [live as u64, total, refused][i];
            let _ = writeln!(out, "{name}{{agent=\"{}\"}} {value}", agent.id());
        }
    }
}
