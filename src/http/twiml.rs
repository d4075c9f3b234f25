//! Twilio voice webhooks: `GET|POST /twiml` and `POST /incoming-call` answer a call
//! with `<Connect><ConversationRelay>`; `POST /twiml/action` answers the end of the
//! ConversationRelay session: a transfer (`<Dial>` or `<Enqueue>`) when the agent
//! handed off, a fresh `<Connect>` when the socket dropped mid-call (64105), else
//! `<Hangup/>`. `GET|POST /twiml/stream` answers with `<Connect><Stream>` (Media
//! Streams) followed by a `<Redirect>` to `POST /twiml/stream/next`, which transfers
//! the caller when the agent handed off and hangs up otherwise. Every route checks
//! `X-Twilio-Signature` first, and every WebSocket URL we hand out carries a fresh
//! per-call token bound to the webhook's `CallSid` (`/websocket/<token>`).
//!
//! The agent answering is chosen by the webhook's `To` (README "Agents per
//! number"); it travels in the token and, for the follow-up webhooks, as `?agent=`
//! in their URLs, which Twilio's signature covers. A call over the agent's
//! `max_calls` or the server's `MAX_CALLS` is turned away before it is answered.

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{PublicBase, limited_body, public_base, twilio_auth, with_state};
use crate::state::AppState;
use crate::state::roster::{AgentEntry, INBOUND_SLOT_TTL};
use crate::twilio::admission::{RESUME_ARMED, RESUME_ARMED_TTL, unix_now};
use crate::twilio::call_token::Route;
use crate::twiml;

/// A TwiML answer: what a webhook gets, GET or POST, from the fields Twilio sent.
type Answer = fn(&AppState, &PublicBase, &[(String, String)]) -> Response;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let action = warp::path!("twiml" / "action")
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()))
        .and(agent_query())
        .and(with_state(state.clone()))
        .and(public_base(state.clone()))
        .then(
            |form: Vec<(String, String)>, agent: String, state: AppState, base: PublicBase| async move {
                let agent = state.agents.named_or_default(&agent).clone();
                session_ended(&state, &agent, &base, &form).await
            },
        );
    let stream_next = warp::path!("twiml" / "stream" / "next")
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()))
        .and(agent_query())
        .and(with_state(state.clone()))
        .then(
            |form: Vec<(String, String)>, agent: String, state: AppState| async move {
                let agent = state.agents.named_or_default(&agent).clone();
                stream_ended(&state, &agent, &form).await
            },
        );
    let answer_paths = warp::path!("twiml")
        .or(warp::path!("incoming-call"))
        .unify()
        .boxed();
    action
        .or(stream_next)
        .unify()
        .or(get_or_post(
            warp::path!("twiml" / "stream").boxed(),
            &state,
            answer_stream,
        ))
        .unify()
        .or(get_or_post(answer_paths, &state, answer))
        .unify()
        .boxed()
}

/// A signed webhook at `path` answered by `answer`: its fields come from the query
/// of a GET, or from the form of a POST (the query of a POST is only signed).
fn get_or_post(
    path: BoxedFilter<()>,
    state: &AppState,
    answer: Answer,
) -> BoxedFilter<(Response,)> {
    let get = path
        .clone()
        .and(warp::get())
        .and(twilio_auth::webhook(state.clone()))
        .and(warp::query::<Vec<(String, String)>>())
        .map(|_form: Vec<(String, String)>, query: Vec<(String, String)>| query);
    let post = path
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()));
    get.or(post)
        .unify()
        .and(with_state(state.clone()))
        .and(public_base(state.clone()))
        .map(
            move |fields: Vec<(String, String)>, state: AppState, base: PublicBase| {
                answer(&state, &base, &fields)
            },
        )
        .boxed()
}

/// The `agent` of a follow-up webhook's query (signed with its URL); empty for
/// the default agent.
fn agent_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::<Vec<(String, String)>>()
        .map(|query: Vec<(String, String)>| field(&query, "agent").unwrap_or_default().to_string())
        .or(warp::any().map(String::new))
        .unify()
}

/// `{base}{path}`, with `?agent=<id>` for an agent other than the default, so the
/// follow-up webhook reaches the same agent (on whichever replica).
pub fn follow_up_url(base: &PublicBase, path: &str, agent: &AgentEntry) -> String {
    if agent.id() == crate::config::DEFAULT_AGENT {
        format!("{}{path}", base.http)
    } else {
        format!("{}{path}?agent={}", base.http, agent.id())
    }
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

/// The TwiML that turns a call away when the server already carries `MAX_CALLS`
/// live calls, or `agent` its `max_calls` (before it is answered, so the caller
/// hears busy, not a failure). Otherwise the call's slot is promised to it.
fn turned_away(
    state: &AppState,
    agent: &AgentEntry,
    form: &[(String, String)],
) -> Option<Response> {
    let call_sid = field(form, "CallSid").unwrap_or("");
    let server_full = state.calls.len() >= state.config.max_calls;
    if !server_full
        && agent
            .load
            .reserve(call_sid, std::time::Instant::now(), INBOUND_SLOT_TTL)
    {
        return None;
    }
    state.metrics.call_refused();
    agent.load.refused();
    tracing::warn!(
        call_sid,
        agent = agent.id(),
        limit = if server_full {
            state.config.max_calls
        } else {
            agent.load.max().unwrap_or_default()
        },
        "turning a call away: {}",
        if server_full {
            "the server is full"
        } else {
            "the agent is at its max_calls"
        }
    );
    Some(xml(twiml::busy(
        agent.config.endings.busy_message.as_deref(),
        &agent.config.relay.language,
    )))
}

/// The TwiML that connects a call to our `/websocket`, for the agent of its `To`.
fn answer(state: &AppState, base: &PublicBase, form: &[(String, String)]) -> Response {
    let agent = state.agents.for_number(field(form, "To"));
    if let Some(busy) = turned_away(state, agent, form) {
        return busy;
    }
    tracing::info!(
        call_sid = field(form, "CallSid").unwrap_or(""),
        from = field(form, "From").unwrap_or(""),
        agent = agent.id(),
        "answering a call with ConversationRelay"
    );
    let call_sid = field(form, "CallSid").unwrap_or("");
    let token = state
        .tokens
        .for_call(Route::Relay, call_sid, agent.id(), false, unix_now());
    xml(twiml::connect_relay(
        &agent.config.relay,
        &socket_url(base, Route::Relay, &token),
        &follow_up_url(base, "/twiml/action", agent),
        &[],
    ))
}

/// The WebSocket URL of `route` carrying a per-call token (see `twilio::call_token`).
pub fn socket_url(base: &PublicBase, route: Route, token: &str) -> String {
    format!("{}/{}/{token}", base.ws, route.path())
}

/// The TwiML that connects a call to our `/media-stream`. The caller's number and
/// direction travel as `<Parameter>`s (`from`, `to`, `direction`), and so does a
/// `pipeline` field of the webhook (or query string) when given.
fn answer_stream(state: &AppState, base: &PublicBase, form: &[(String, String)]) -> Response {
    let agent = state.agents.for_number(field(form, "To"));
    if let Some(busy) = turned_away(state, agent, form) {
        return busy;
    }
    tracing::info!(
        call_sid = field(form, "CallSid").unwrap_or(""),
        from = field(form, "From").unwrap_or(""),
        agent = agent.id(),
        "answering a call with Media Streams"
    );
    let mut parameters = Vec::new();
    for (param, name) in [("From", "from"), ("To", "to"), ("Direction", "direction")] {
        if let Some(value) = field(form, param).filter(|v| !v.is_empty()) {
            parameters.push((name.to_string(), value.to_string()));
        }
    }
    if let Some(pipeline) = field(form, "pipeline").filter(|v| !v.is_empty()) {
        parameters.push(("pipeline".to_string(), pipeline.to_string()));
    }
    let token = state.tokens.for_call(
        Route::Media,
        field(form, "CallSid").unwrap_or(""),
        agent.id(),
        false,
        unix_now(),
    );
    xml(twiml::connect_stream(
        &socket_url(base, Route::Media, &token),
        &follow_up_url(base, "/twiml/stream/next", agent),
        &parameters,
    ))
}

/// The media stream is over (our server closed it): transfer the caller when the
/// agent handed off, else hang up.
async fn stream_ended(state: &AppState, agent: &AgentEntry, form: &[(String, String)]) -> Response {
    let call_sid = field(form, "CallSid").unwrap_or("");
    let ending = state.media_endings.take(call_sid).await;
    let transfer = ending.as_deref().is_some_and(is_live_agent_handoff);
    tracing::info!(
        call_sid,
        call_status = field(form, "CallStatus").unwrap_or(""),
        transfer,
        "media stream ended"
    );
    match ending {
        Some(handoff_data) if transfer => handoff_twiml(agent, &handoff_data),
        _ => xml(twiml::hangup()),
    }
}

/// Whether handoff JSON asks for a person.
fn is_live_agent_handoff(handoff_data: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(handoff_data)
        .ok()
        .and_then(|v| v.get("reasonCode")?.as_str().map(str::to_string))
        .is_some_and(|code| code == crate::agent::REASON_LIVE_AGENT)
}

/// `<Enqueue>` or `<Dial>` to a person, as configured; `<Hangup/>` when neither is.
fn handoff_twiml(agent: &AgentEntry, handoff_data: &str) -> Response {
    match twiml::handoff(&agent.config.handoff, handoff_data) {
        Some(document) => {
            tracing::info!(
                agent = agent.id(),
                taskrouter = agent.config.handoff.taskrouter_workflow_sid.is_some(),
                "handing the caller to a person"
            );
            xml(document)
        }
        None => {
            tracing::warn!(
                "a transfer was asked for but no HANDOFF_NUMBER or TASKROUTER_WORKFLOW_SID is set; hanging up"
            );
            xml(twiml::hangup())
        }
    }
}

/// Twilio reports how the ConversationRelay session ended.
async fn session_ended(
    state: &AppState,
    agent: &AgentEntry,
    base: &PublicBase,
    form: &[(String, String)],
) -> Response {
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
        return handoff_twiml(agent, handoff_data);
    }
    if field(form, "ErrorCode") == Some("64105") && call_live {
        tracing::info!("the WebSocket dropped mid-call; reconnecting the call");
        // This answer, and only this one, lets the next session of the call resume
        // its conversation: a fresh token that says so, bound to the call.
        let call_sid = field(form, "CallSid").unwrap_or("");
        let until = crate::store::now_millis() + RESUME_ARMED_TTL.as_millis() as i64;
        if let Err(e) = state
            .store
            .state_put(RESUME_ARMED, call_sid, "1", until)
            .await
        {
            tracing::warn!(error = %e, "cannot record the reconnect; the call will start afresh");
        }
        let token = state
            .tokens
            .for_call(Route::Relay, call_sid, agent.id(), true, unix_now());
        return xml(twiml::reconnect_relay(
            &agent.config.relay,
            &socket_url(base, Route::Relay, &token),
            &follow_up_url(base, "/twiml/action", agent),
        ));
    }
    xml(twiml::hangup())
}
