//! Twilio voice webhooks: `GET|POST /twiml` and `POST /incoming-call` answer a call
//! with `<Connect><ConversationRelay>`; `POST /twiml/action` answers the end of the
//! ConversationRelay session: a transfer (`<Dial>` or `<Enqueue>`) when the agent
//! handed off, a fresh `<Connect>` when the socket dropped mid-call (64105), else
//! `<Hangup/>`. Every route checks `X-Twilio-Signature` first.

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{PublicBase, limited_body, public_base, twilio_auth, with_state};
use crate::server::AppState;
use crate::twiml;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let answer_get = warp::path!("twiml")
        .and(warp::get())
        .and(twilio_auth::webhook(state.clone()))
        .and(with_state(state.clone()))
        .and(public_base(state.clone()))
        .map(
            |_form: Vec<(String, String)>, state: AppState, base: PublicBase| {
                answer(&state, &base, &[])
            },
        );
    let answer_post = warp::path!("twiml")
        .or(warp::path!("incoming-call"))
        .unify()
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()))
        .and(with_state(state.clone()))
        .and(public_base(state.clone()))
        .map(
            |form: Vec<(String, String)>, state: AppState, base: PublicBase| {
                answer(&state, &base, &form)
            },
        );
    let action = warp::path!("twiml" / "action")
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()))
        .and(with_state(state.clone()))
        .and(public_base(state.clone()))
        .map(
            |form: Vec<(String, String)>, state: AppState, base: PublicBase| {
                session_ended(&state, &base, &form)
            },
        );
    action
        .or(answer_get)
        .unify()
        .or(answer_post)
        .unify()
        .boxed()
}

/// A form-encoded webhook body, size-limited; a body that is not a form reads as empty.
pub fn form_body()
-> impl Filter<Extract = (Vec<(String, String)>,), Error = warp::Rejection> + Clone {
    limited_body().map(|body: Bytes| parse_form(&body))
}

/// Parses `application/x-www-form-urlencoded`, leniently.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "webhook body is not a form; ignoring it");
        Vec::new()
    })
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A TwiML reply.
pub fn xml(body: String) -> Response {
    warp::reply::with_header(body, CONTENT_TYPE, "text/xml; charset=utf-8").into_response()
}

/// The TwiML that connects a call to our `/websocket`.
fn answer(state: &AppState, base: &PublicBase, form: &[(String, String)]) -> Response {
    tracing::info!(
        call_sid = field(form, "CallSid").unwrap_or(""),
        from = field(form, "From").unwrap_or(""),
        "answering a call with ConversationRelay"
    );
    xml(twiml::connect_relay(
        &state.config.relay,
        &format!("{}/websocket", base.ws),
        &format!("{}/twiml/action", base.http),
        &[],
    ))
}

/// Twilio reports how the ConversationRelay session ended.
fn session_ended(state: &AppState, base: &PublicBase, form: &[(String, String)]) -> Response {
    tracing::info!(
        call_sid = field(form, "CallSid").unwrap_or(""),
        session_status = field(form, "SessionStatus").unwrap_or(""),
        session_duration = field(form, "SessionDuration").unwrap_or(""),
        call_status = field(form, "CallStatus").unwrap_or(""),
        error_code = field(form, "ErrorCode").unwrap_or(""),
        error_message = field(form, "ErrorMessage").unwrap_or(""),
        handoff = field(form, "HandoffData").is_some(),
        "ConversationRelay session ended"
    );
    let call_live =
        field(form, "CallStatus").is_some_and(|s| s.eq_ignore_ascii_case("in-progress"));
    let handoff_data = field(form, "HandoffData").unwrap_or("");
    let reason_code = serde_json::from_str::<serde_json::Value>(handoff_data)
        .ok()
        .and_then(|v| {
            v.get("reasonCode")
                .and_then(|r| r.as_str())
                .map(str::to_string)
        });
    if reason_code.as_deref() == Some(crate::agent::REASON_LIVE_AGENT) && call_live {
        let handoff = &state.config.handoff;
        if let Some(workflow) = &handoff.taskrouter_workflow_sid {
            tracing::info!("handing the caller to TaskRouter");
            return xml(twiml::enqueue(workflow, handoff_data));
        }
        if let Some(number) = &handoff.number {
            tracing::info!("handing the caller to the handoff number");
            return xml(twiml::dial(number));
        }
        tracing::warn!(
            "a transfer was asked for but no HANDOFF_NUMBER or TASKROUTER_WORKFLOW_SID is set; hanging up"
        );
        return xml(twiml::hangup());
    }
    if field(form, "ErrorCode") == Some("64105") && call_live {
        tracing::info!("the WebSocket dropped mid-call; reconnecting the call");
        return xml(twiml::reconnect_relay(
            &state.config.relay,
            &format!("{}/websocket", base.ws),
            &format!("{}/twiml/action", base.http),
        ));
    }
    xml(twiml::hangup())
}
