//! `GET /metrics`: Prometheus text exposition of [`crate::metrics::Metrics`],
//! behind the API bearer token (call volumes are nobody else's business). Answers
//! during a drain too.

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
            let body = state.metrics.render(state.is_draining());
            warp::reply::with_header(
                body,
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        })
        .boxed()
}
