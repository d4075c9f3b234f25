//! SIP mode's webhook: `POST /webhooks/openai` (and `/webhooks/azure-realtime`,
//! the path Azure's sample uses). OpenAI (or Azure OpenAI) posts it when a call
//! reaches its SIP endpoint. The delivery is verified and de-duplicated by
//! `sip::decide`; a new call is then accepted (or rejected when the server is
//! draining or full) by a task of its own, so the webhook is answered at once.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::HttpError;
use super::{limited_body, with_state};
use crate::sip::protocol::{SipHeader, Surface, call_parties};
use crate::sip::session::{self, call_info};
use crate::sip::signature::Delivery;
use crate::sip::{Decision, decide};
use crate::state::AppState;
use crate::state::roster::INBOUND_SLOT_TTL;

/// SIP status for a full server: busy here, so the trunk may try elsewhere.
const SIP_BUSY: u16 = 486;
/// SIP status while draining: this server is going away.
const SIP_UNAVAILABLE: u16 = 503;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("webhooks" / "openai")
        .or(warp::path!("webhooks" / "azure-realtime"))
        .unify()
        .and(warp::post())
        .and(warp::header::optional::<String>("webhook-id"))
        .and(warp::header::optional::<String>("webhook-timestamp"))
        .and(warp::header::optional::<String>("webhook-signature"))
        .and(limited_body())
        .and(with_state(state))
        .then(on_webhook)
        .boxed()
}

async fn on_webhook(
    id: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
    body: Bytes,
    state: AppState,
) -> Response {
    let delivery = Delivery {
        id: id.as_deref(),
        timestamp: timestamp.as_deref(),
        signature: signature.as_deref(),
    };
    let secret = state.config.sip.webhook_secret.as_ref().map(|s| s.expose());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    match decide(secret, &state.store, delivery, &body, now).await {
        Err(refusal) => {
            tracing::warn!(reason = %refusal, "refusing an OpenAI webhook");
            HttpError::from(refusal).into_response()
        }
        Ok(Decision::Duplicate) => {
            tracing::info!("an OpenAI webhook delivered again; already taken");
            answer("duplicate")
        }
        Ok(Decision::Ignored) => {
            tracing::info!("ignoring an OpenAI webhook of a type SIP mode does not handle");
            answer("ignored")
        }
        Ok(Decision::Call { surface, headers }) => take_call(&state, surface, &headers),
    }
}

fn answer(status: &str) -> Response {
    warp::reply::json(&json!({ "status": status })).into_response()
}

/// Starts the call's task (or a rejection) and answers the webhook.
/// The agent is the one of the number called (the SIP `To`).
fn take_call(state: &AppState, surface: Surface, headers: &[SipHeader]) -> Response {
    let (from, to, data) = call_parties(headers);
    let agent = state.agents.for_number(Some(&to)).clone();
    let refusal = if state.is_draining() {
        Some((SIP_UNAVAILABLE, "the server is shutting down"))
    } else if state.calls.len() >= state.config.max_calls {
        Some((SIP_BUSY, "too many live calls"))
    } else if state.recorder.busy() {
        Some((SIP_BUSY, "call records are being written"))
    } else if !agent
        .load
        .reserve(surface.id(), std::time::Instant::now(), INBOUND_SLOT_TTL)
    {
        Some((SIP_BUSY, "the agent is at its max_calls"))
    } else {
        None
    };
    if let Some((status, why)) = refusal {
        if status == SIP_BUSY {
            state.metrics.call_refused();
            agent.load.refused();
        }
        tracing::warn!(
            call = surface.id(),
            agent = agent.id(),
            status,
            why,
            "rejecting a SIP call"
        );
        let control = state.sip_control.clone();
        tokio::spawn(async move {
            if let Err(e) = control.reject(&surface, status).await {
                tracing::warn!(error = %e, "could not reject the SIP call");
            }
        });
        return answer("rejected");
    }
    let info = call_info(&surface, agent.id(), from, to, data);
    let deps = state.sip_deps_for(&agent);
    let slot = agent.load.start(surface.id());
    let span = tracing::info_span!("sip_call", call = %surface.id(), agent = agent.id());
    let session = session::run(deps, surface, info);
    state.calls.spawn(tracing::Instrument::instrument(
        async move {
            session.await;
            drop(slot);
        },
        span,
    ));
    answer("accepted")
}
