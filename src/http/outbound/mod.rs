//! The call-control API (bearer `API_TOKEN`): `POST /api/calls` places an outbound
//! call whose TwiML (sent inline) connects it to our `/websocket` (or, with
//! `mode: "stream"`, to `/media-stream`); `POST
//! /api/calls/{sid}/end` hangs up; `GET /api/numbers` lists the account's numbers.
//! Compatibility routes for users migrating from other bridges: `POST /make-call`,
//! `POST /api/call`, `POST /api/end-call`.
//!
//! Bodies are size-limited JSON read into the serde structs of [`request`]: a bad
//! field answers 400 naming it. Errors become statuses in `http::error`, so
//! Twilio's own refusals reach the caller as JSON with Twilio's code and message.

mod request;
pub use request::{CallRequest, MAX_GREETING_CHARS, MAX_PARAMETERS, Style, parse_call_request};

use bytes::Bytes;
use serde_json::{Value, json};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::{HttpError, respond};
use super::twiml::{follow_up_url, socket_url};
use super::{PublicBase, auth, limited_body, public_base, with_state};
use crate::agent::GREETING_PARAMETER;
use crate::state::AppState;
use crate::state::roster::{AgentEntry, OUTBOUND_SLOT_TTL};
use crate::twilio::admission::unix_now;
use crate::twilio::call_token::Route;
use crate::twilio::client::{MAX_INLINE_TWIML, NewCall, TwilioClient, TwilioError};
use crate::twiml;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let api = |state: &AppState| auth::bearer(state.clone()).and(with_state(state.clone()));
    let end = warp::path!("api" / "calls" / String / "end")
        .and(warp::post())
        .and(api(&state))
        .then(|sid: String, state: AppState| async move {
            respond(end_call(&state, &sid, "sid", Style::Api).await)
        });
    let numbers = warp::path!("api" / "numbers")
        .and(warp::get())
        .and(api(&state))
        .then(|state: AppState| async move { respond(list_numbers(&state).await) });
    let end_compat = warp::path!("api" / "end-call")
        .and(warp::post())
        .and(api(&state))
        .and(limited_body())
        .then(|state: AppState, body: Bytes| async move {
            match request::parse_end_call(&body) {
                Ok(sid) => respond(end_call(&state, &sid, "callSid", Style::MakeCall).await),
                Err(e) => e.into_response(),
            }
        });
    let place = |path: BoxedFilter<()>, style: Style| {
        path.and(warp::post())
            .and(api(&state))
            .and(limited_body())
            .and(public_base(state.clone()))
            .then(
                move |state: AppState, body: Bytes, base: PublicBase| async move {
                    respond(create_call(&state, &base, &body, style).await)
                },
            )
    };
    place(warp::path!("api" / "calls").boxed(), Style::Api)
        .or(end)
        .unify()
        .or(numbers)
        .unify()
        .or(place(warp::path!("make-call").boxed(), Style::MakeCall))
        .unify()
        .or(place(warp::path!("api" / "call").boxed(), Style::ApiCall))
        .unify()
        .or(end_compat)
        .unify()
        .boxed()
}

fn twilio(state: &AppState) -> Result<&TwilioClient, HttpError> {
    state
        .twilio
        .as_deref()
        .ok_or(HttpError::Twilio(TwilioError::NotConfigured))
}

/// The TwiML an outbound call runs: `<Connect><ConversationRelay>` to our
/// `/websocket`, or for Media Streams `<Connect><Stream>` to `/media-stream` with the
/// call's numbers as parameters (Media Streams' `start` does not carry them).
///
/// The WebSocket URL carries a per-call token bound to a nonce (the call's SID is
/// not known yet); the returned nonce is bound to the SID once Twilio returns it.
pub fn outbound_twiml(
    state: &AppState,
    agent: &AgentEntry,
    base: &PublicBase,
    request: &CallRequest,
    from: &str,
) -> (String, String) {
    let route = if request.stream {
        Route::Media
    } else {
        Route::Relay
    };
    let (token, nonce) = state.tokens.for_outbound(route, agent.id(), unix_now());
    let ws_url = socket_url(base, route, &token);
    let mut relay = agent.config.relay.clone();
    let mut parameters = request.parameters.clone();
    // The agent's own greeting may name the call's parameters ("Olá {name}!").
    let filled = (request.greeting.is_none() && relay.welcome_greeting.contains('{')).then(|| {
        let values = parameters.iter().cloned().collect();
        crate::agent::screening::fill(&relay.welcome_greeting, &agent.config.agent_name, &values)
    });
    if let Some(greeting) = request.greeting.as_ref().or(filled.as_ref()) {
        relay.welcome_greeting = greeting.clone();
        // Tells the agent what Twilio said first (see `agent::GREETING_PARAMETER`);
        // a media pipeline speaks it itself.
        parameters.push((GREETING_PARAMETER.to_string(), greeting.clone()));
    }
    if request.stream {
        for (name, value) in [
            ("from", from),
            ("to", request.to.as_str()),
            ("direction", "outbound-api"),
        ] {
            parameters.retain(|(n, _)| n != name);
            parameters.push((name.to_string(), value.to_string()));
        }
        let document = twiml::connect_stream(
            &ws_url,
            &follow_up_url(base, "/twiml/stream/next", agent),
            &parameters,
        );
        return (document, nonce);
    }
    let document = twiml::connect_relay(
        &relay,
        &ws_url,
        &follow_up_url(base, "/twiml/action", agent),
        &parameters,
    );
    (document, nonce)
}

async fn create_call(
    state: &AppState,
    base: &PublicBase,
    body: &[u8],
    style: Style,
) -> Result<(StatusCode, Value), HttpError> {
    let request = parse_call_request(body, style)?;
    if state.calls.len() >= state.config.max_calls {
        state.metrics.call_refused();
        return Err(HttpError::TooManyCalls(format!(
            "the server carries its maximum of {} live calls (MAX_CALLS); try again later",
            state.config.max_calls
        )));
    }
    let client = twilio(state)?;
    if state.config.public_url.is_none() && is_local(&base.http) {
        return Err(HttpError::unavailable(format!(
            "set PUBLIC_URL: this request came to {}, which Twilio cannot reach for the call's WebSocket and callbacks",
            base.http
        )));
    }
    // The agent named, else the one of the number calling from.
    let agent = match &request.agent {
        Some(id) => state.agents.named(id).ok_or_else(|| {
            let known: Vec<&str> = state.agents.iter().map(|a| a.id()).collect();
            HttpError::field(
                "agent",
                format!(
                    "there is no agent {id:?}; the agents are {}",
                    known.join(", ")
                ),
            )
        })?,
        None => state.agents.for_number(request.from.as_deref()),
    }
    .clone();
    // Without a `from`, the agent's own first number, else the server's.
    let from = match request
        .from
        .clone()
        .or_else(|| agent.config.agent.numbers.first().map(|n| n.to_string()))
        .or_else(|| state.config.twilio.phone_number.clone().map(String::from))
    {
        Some(from) => from,
        None => client
            .list_numbers()
            .await
            ?
            .into_iter()
            .map(|n| n.phone_number)
            .next()
            .ok_or_else(|| {
                HttpError::field(
                    if style == Style::ApiCall { "fromNumber" } else { "from" },
                    "is required: the account has no phone number and TWILIO_PHONE_NUMBER is not set",
                )
            })?,
    };
    let (twiml, nonce) = outbound_twiml(state, &agent, base, &request, &from);
    if twiml.len() > MAX_INLINE_TWIML {
        return Err(HttpError::field(
            "parameters",
            format!(
                "the call's TwiML would be {} characters; Twilio accepts at most {MAX_INLINE_TWIML}: shorten the greeting or the parameters",
                twiml.len()
            ),
        ));
    }
    let status_url = format!("{}/twilio/status", base.http);
    let call = NewCall {
        to: request.to.clone(),
        from: from.clone(),
        twiml,
        status_callback: Some(status_url.clone()),
        record: request.record,
        recording_status_callback: request
            .record
            .then(|| format!("{}/twilio/recording", base.http)),
        machine_detection_callback: request
            .machine_detection
            .then(|| format!("{}/twilio/amd", base.http)),
    };
    // The call's slot is promised under its token's nonce until it is answered.
    if !agent
        .load
        .reserve(&nonce, std::time::Instant::now(), OUTBOUND_SLOT_TTL)
    {
        state.metrics.call_refused();
        agent.load.refused();
        return Err(HttpError::TooManyCalls(format!(
            "the agent {:?} carries its maximum of {} live calls (max_calls); try again later",
            agent.id(),
            agent.load.max().unwrap_or_default()
        )));
    }
    let created = match client.create_call(&call).await {
        Ok(created) => created,
        Err(e) => {
            agent.load.cancel(&nonce);
            return Err(e.into());
        }
    };
    state
        .tokens
        .bind_outbound(&nonce, &created.sid, unix_now())
        .await;
    tracing::info!(
        call_sid = %created.sid,
        status = %created.status,
        to = %request.to,
        %from,
        record = request.record,
        machine_detection = request.machine_detection,
        agent = agent.id(),
        parameters = request.parameters.len(),
        "outbound call placed"
    );
    let mut body = json!({"callSid": created.sid, "status": created.status});
    if style == Style::Api {
        body["agent"] = json!(agent.id());
    } else {
        body["success"] = json!(true);
    }
    Ok((StatusCode::CREATED, body))
}

/// Whether a base URL points at this machine (Twilio could never reach it).
fn is_local(base: &str) -> bool {
    let host = base.split_once("://").map_or(base, |(_, rest)| rest);
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "localhost" | "0.0.0.0" | "[::1]" | "[::]") || host.starts_with("127.")
}

/// Whether `sid` looks like a call SID (`CA` + 32 hex digits).
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

async fn end_call(
    state: &AppState,
    sid: &str,
    field: &str,
    style: Style,
) -> Result<(StatusCode, Value), HttpError> {
    if !is_call_sid(sid) {
        return Err(HttpError::field(
            field,
            format!("{sid:?} is not a call SID (CA followed by 32 hex digits)"),
        ));
    }
    if state.twilio.is_none() {
        return end_through_the_socket(state, sid, style).await;
    }
    let call = twilio(state)?.end_call(sid).await?;
    tracing::info!(call_sid = %call.sid, status = %call.status, "call ended through the API");
    let mut body = json!({"callSid": call.sid, "status": call.status});
    if style != Style::Api {
        body["success"] = json!(true);
    }
    Ok((StatusCode::OK, body))
}

/// Without Twilio's REST API: the session carrying the call sends `end`, here or,
/// told through the store, on another replica. 202: the call is being ended.
async fn end_through_the_socket(
    state: &AppState,
    sid: &str,
    style: Style,
) -> Result<(StatusCode, Value), HttpError> {
    use crate::transport::live::CallCommand;
    let ending = |via: &str| {
        tracing::info!(call_sid = %sid, via, "ending a call through its socket, as the API asked");
        let mut body = json!({"callSid": sid, "status": "ending"});
        if style != Style::Api {
            body["success"] = json!(true);
        }
        Ok((StatusCode::ACCEPTED, body))
    };
    if state.live_calls.command(sid, CallCommand::End) {
        return ending("this replica");
    }
    let live = match state.store.get_call(sid).await {
        Ok(Some(detail)) => detail.call.status == "in-progress",
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the call to end it");
            false
        }
    };
    if live && let Ok(true) = state.store.notify(&CallCommand::End.payload(sid)).await {
        return ending("another replica");
    }
    if !live {
        return Err(HttpError::NotFound(format!(
            "no live call {sid} (set TWILIO_ACCOUNT_SID to end calls through Twilio)"
        )));
    }
    Err(HttpError::Twilio(TwilioError::NotConfigured))
}

async fn list_numbers(state: &AppState) -> Result<(StatusCode, Value), HttpError> {
    let numbers = twilio(state)?.list_numbers().await?;
    let numbers: Vec<Value> = numbers
        .into_iter()
        .map(|n| {
            json!({
                "sid": n.sid,
                "phoneNumber": n.phone_number,
                "friendlyName": n.friendly_name,
                "voiceUrl": n.voice_url,
                "capabilities": n.capabilities,
            })
        })
        .collect();
    Ok((StatusCode::OK, json!({ "numbers": numbers })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_bases_are_recognised() {
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1:40123",
            "http://[::1]:80",
            "http://localhost",
        ] {
            assert!(is_local(local), "{local}");
        }
        for public in [
            "https://voz.example.com",
            "https://voz.up.railway.app",
            "http://10.0.0.5:8080",
        ] {
            assert!(!is_local(public), "{public}");
        }
    }

    #[test]
    fn call_sids() {
        assert!(is_call_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!is_call_sid("CA0123456789abcdef0123456789abcde"));
        assert!(!is_call_sid("XX0123456789abcdef0123456789abcdef"));
        assert!(!is_call_sid("CA0123456789abcdef0123456789abcdeg"));
    }
}
