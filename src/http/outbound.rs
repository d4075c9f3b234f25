//! The call-control API (bearer `API_TOKEN`): `POST /api/calls` places an outbound
//! call whose TwiML (sent inline) connects it to our `/websocket` (or, with
//! `mode: "stream"`, to `/media-stream`); `POST
//! /api/calls/{sid}/end` hangs up; `GET /api/numbers` lists the account's numbers.
//! Compatibility routes for users migrating from other bridges: `POST /make-call`,
//! `POST /api/call`, `POST /api/end-call`.
//!
//! Bodies are size-limited JSON, validated field by field: a bad field answers 400
//! naming it. Twilio's own errors reach the caller as JSON with Twilio's code and
//! message.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::twiml::socket_url;
use super::{PublicBase, auth, limited_body, public_base, with_state};
use crate::agent::GREETING_PARAMETER;
use crate::config::E164;
use crate::state::AppState;
use crate::twilio::admission::unix_now;
use crate::twilio::call_token::Route;
use crate::twilio::client::{MAX_INLINE_TWIML, NewCall, TwilioClient, TwilioError};
use crate::twiml;

/// Longest per-call greeting accepted.
pub const MAX_GREETING_CHARS: usize = 1000;
/// Most `<Parameter>`s accepted on one call.
pub const MAX_PARAMETERS: usize = 20;
const MAX_PARAMETER_NAME: usize = 64;
const MAX_PARAMETER_VALUE: usize = 500;
/// Parameter names starting with this are ours (e.g. the per-call greeting).
const RESERVED_PREFIX: &str = "voxrelay_";

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let api = |state: &AppState| auth::bearer(state.clone()).and(with_state(state.clone()));
    let create = warp::path!("api" / "calls")
        .and(warp::post())
        .and(api(&state))
        .and(limited_body())
        .and(public_base(state.clone()))
        .then(
            |state: AppState, body: Bytes, base: PublicBase| async move {
                respond(create_call(&state, &base, &body, Style::Api).await)
            },
        );
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
    let make_call = warp::path!("make-call")
        .and(warp::post())
        .and(api(&state))
        .and(limited_body())
        .and(public_base(state.clone()))
        .then(
            |state: AppState, body: Bytes, base: PublicBase| async move {
                respond(create_call(&state, &base, &body, Style::MakeCall).await)
            },
        );
    let api_call = warp::path!("api" / "call")
        .and(warp::post())
        .and(api(&state))
        .and(limited_body())
        .and(public_base(state.clone()))
        .then(
            |state: AppState, body: Bytes, base: PublicBase| async move {
                respond(create_call(&state, &base, &body, Style::ApiCall).await)
            },
        );
    let end_compat = warp::path!("api" / "end-call")
        .and(warp::post())
        .and(api(&state))
        .and(limited_body())
        .then(|state: AppState, body: Bytes| async move {
            let sid = JsonBody::parse(&body)
                .and_then(|b| b.required_string("callSid"))
                .map_err(Box::new);
            match sid {
                Ok(sid) => respond(end_call(&state, &sid, "callSid", Style::MakeCall).await),
                Err(e) => e.into_response(),
            }
        });
    create
        .or(end)
        .unify()
        .or(numbers)
        .unify()
        .or(make_call)
        .unify()
        .or(api_call)
        .unify()
        .or(end_compat)
        .unify()
        .boxed()
}

/// Which route's body shape (and answer shape) a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `POST /api/calls`: strict, documented fields.
    Api,
    /// `POST /make-call` `{to, message?}` (and `/api/end-call`): answers carry `success`.
    MakeCall,
    /// `POST /api/call` `{number, fromNumber?}`.
    ApiCall,
}

/// A request the API refuses, or a failure on the way to Twilio.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    /// 400 naming the offending field.
    fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": format!("{field}: {message}"), "field": field}),
        }
    }

    fn body(message: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": message}),
        }
    }

    fn into_response(self) -> Response {
        warp::reply::with_status(warp::reply::json(&self.body), self.status).into_response()
    }
}

impl From<TwilioError> for ApiError {
    fn from(e: TwilioError) -> Self {
        let (status, body) = match &e {
            TwilioError::NotConfigured => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": e.to_string()}),
            ),
            TwilioError::Api {
                status,
                code,
                message,
                more_info,
            } => {
                // Twilio's verdict on the request passes through; a problem with our
                // own credentials or Twilio itself is a bad gateway, not the caller's.
                let ours = match *status {
                    400 | 404 | 409 | 422 | 429 => {
                        StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
                    }
                    _ => StatusCode::BAD_GATEWAY,
                };
                (
                    ours,
                    json!({
                        "error": e.to_string(),
                        "code": code,
                        "message": message,
                        "more_info": more_info,
                        "twilio_status": status,
                    }),
                )
            }
            TwilioError::Timeout(_) => {
                (StatusCode::GATEWAY_TIMEOUT, json!({"error": e.to_string()}))
            }
            TwilioError::Network(_) | TwilioError::InvalidResponse(_) => {
                (StatusCode::BAD_GATEWAY, json!({"error": e.to_string()}))
            }
        };
        Self { status, body }
    }
}

fn respond(result: Result<(StatusCode, Value), Box<ApiError>>) -> Response {
    match result {
        Ok((status, body)) => {
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// A JSON object body, read field by field.
struct JsonBody(Map<String, Value>);

impl JsonBody {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::body("the body must be a JSON object")),
            Err(e) => Err(ApiError::body(&format!(
                "the body must be a JSON object: {e}"
            ))),
        }
    }

    fn reject_unknown(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(unknown) => Err(ApiError::field(
                unknown,
                format!("unknown field; accepted fields are {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// A string field; absent or `null` is `None`.
    fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::field(name, "must be a string")),
        }
    }

    fn required_string(&self, name: &str) -> Result<String, ApiError> {
        self.string(name)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::field(name, "is required"))
    }

    fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::field(name, "must be true or false")),
        }
    }

    /// A phone number in E.164.
    fn e164(&self, name: &str, required: bool) -> Result<Option<String>, ApiError> {
        let value = if required {
            Some(self.required_string(name)?)
        } else {
            self.string(name)?
        };
        match value.map(|v| v.trim().to_string()) {
            Some(number) if E164::parse(&number).is_none() => Err(ApiError::field(
                name,
                format!("{number:?} is not an E.164 phone number (like +5511999990000)"),
            )),
            other => Ok(other),
        }
    }
}

/// A validated request to place a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRequest {
    pub to: String,
    pub from: Option<String>,
    /// `None`: the configured greeting. `Some("")`: no greeting.
    pub greeting: Option<String>,
    pub parameters: Vec<(String, String)>,
    pub record: bool,
    pub machine_detection: bool,
    /// Media Streams (`mode: "stream"`) instead of ConversationRelay.
    pub stream: bool,
}

/// Reads and validates a call request in the given route's body shape.
fn parse_call_request(body: &[u8], style: Style) -> Result<CallRequest, ApiError> {
    let body = JsonBody::parse(body)?;
    match style {
        Style::MakeCall => Ok(CallRequest {
            to: body.e164("to", true)?.unwrap_or_default(),
            greeting: body.string("message")?,
            ..CallRequest::default()
        }),
        Style::ApiCall => Ok(CallRequest {
            to: body.e164("number", true)?.unwrap_or_default(),
            from: body.e164("fromNumber", false)?,
            ..CallRequest::default()
        }),
        Style::Api => {
            body.reject_unknown(&[
                "to",
                "from",
                "mode",
                "greeting",
                "parameters",
                "record",
                "machine_detection",
            ])?;
            let stream = match body.string("mode")?.as_deref() {
                None | Some("relay") => false,
                Some("stream") => true,
                Some(other) => {
                    return Err(ApiError::field(
                        "mode",
                        format!("must be \"relay\" or \"stream\", got {other:?}"),
                    ));
                }
            };
            let greeting = body.string("greeting")?;
            if let Some(g) = &greeting
                && g.chars().count() > MAX_GREETING_CHARS
            {
                return Err(ApiError::field(
                    "greeting",
                    format!("is longer than {MAX_GREETING_CHARS} characters"),
                ));
            }
            Ok(CallRequest {
                to: body.e164("to", true)?.unwrap_or_default(),
                from: body.e164("from", false)?,
                greeting,
                parameters: parameters(body.0.get("parameters"))?,
                record: body.bool("record")?,
                machine_detection: body.bool("machine_detection")?,
                stream,
            })
        }
    }
}

/// `parameters`: an object of names to strings (numbers and booleans are written out).
fn parameters(value: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::field(
                "parameters",
                "must be an object of names to values",
            ));
        }
    };
    if map.len() > MAX_PARAMETERS {
        return Err(ApiError::field(
            "parameters",
            format!("at most {MAX_PARAMETERS} parameters are accepted"),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let field = format!("parameters.{name}");
        if name.is_empty()
            || name.len() > MAX_PARAMETER_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ApiError::field(
                &field,
                format!("names must be 1 to {MAX_PARAMETER_NAME} letters, digits, '_', '-' or '.'"),
            ));
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(ApiError::field(
                &field,
                format!("names starting with {RESERVED_PREFIX:?} are reserved"),
            ));
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ApiError::field(
                    &field,
                    "must be a string, number or boolean",
                ));
            }
        };
        if value.chars().count() > MAX_PARAMETER_VALUE {
            return Err(ApiError::field(
                &field,
                format!("is longer than {MAX_PARAMETER_VALUE} characters"),
            ));
        }
        out.push((name.clone(), value));
    }
    Ok(out)
}

fn twilio(state: &AppState) -> Result<&TwilioClient, Box<ApiError>> {
    state
        .twilio
        .as_deref()
        .ok_or_else(|| Box::new(TwilioError::NotConfigured.into()))
}

/// The TwiML an outbound call runs: `<Connect><ConversationRelay>` to our
/// `/websocket`, or for Media Streams `<Connect><Stream>` to `/media-stream` with the
/// call's numbers as parameters (Media Streams' `start` does not carry them).
///
/// The WebSocket URL carries a per-call token bound to a nonce (the call's SID is
/// not known yet); the returned nonce is bound to the SID once Twilio returns it.
pub fn outbound_twiml(
    state: &AppState,
    base: &PublicBase,
    request: &CallRequest,
    from: &str,
) -> (String, String) {
    let route = if request.stream {
        Route::Media
    } else {
        Route::Relay
    };
    let (token, nonce) = state.tokens.for_outbound(route, unix_now());
    let ws_url = socket_url(base, route, &token);
    let mut relay = state.config.relay.clone();
    let mut parameters = request.parameters.clone();
    if let Some(greeting) = &request.greeting {
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
            &format!("{}/twiml/stream/next", base.http),
            &parameters,
        );
        return (document, nonce);
    }
    let document = twiml::connect_relay(
        &relay,
        &ws_url,
        &format!("{}/twiml/action", base.http),
        &parameters,
    );
    (document, nonce)
}

async fn create_call(
    state: &AppState,
    base: &PublicBase,
    body: &[u8],
    style: Style,
) -> Result<(StatusCode, Value), Box<ApiError>> {
    let request = parse_call_request(body, style)?;
    let client = twilio(state)?;
    if state.config.public_url.is_none() && is_local(&base.http) {
        return Err(Box::new(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({"error": format!(
                "set PUBLIC_URL: this request came to {}, which Twilio cannot reach for the call's WebSocket and callbacks",
                base.http
            )}),
        }));
    }
    let from = match request
        .from
        .clone()
        .or_else(|| state.config.twilio.phone_number.clone().map(String::from))
    {
        Some(from) => from,
        None => client
            .list_numbers()
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|n| n.phone_number)
            .next()
            .ok_or_else(|| {
                ApiError::field(
                    if style == Style::ApiCall { "fromNumber" } else { "from" },
                    "is required: the account has no phone number and TWILIO_PHONE_NUMBER is not set",
                )
            })?,
    };
    let (twiml, nonce) = outbound_twiml(state, base, &request, &from);
    if twiml.len() > MAX_INLINE_TWIML {
        return Err(Box::new(ApiError::field(
            "parameters",
            format!(
                "the call's TwiML would be {} characters; Twilio accepts at most {MAX_INLINE_TWIML}: shorten the greeting or the parameters",
                twiml.len()
            ),
        )));
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
        machine_detection_callback: request.machine_detection.then_some(status_url),
    };
    let created = client.create_call(&call).await.map_err(ApiError::from)?;
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
        parameters = request.parameters.len(),
        "outbound call placed"
    );
    let mut body = json!({"callSid": created.sid, "status": created.status});
    if style != Style::Api {
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
) -> Result<(StatusCode, Value), Box<ApiError>> {
    if !is_call_sid(sid) {
        return Err(Box::new(ApiError::field(
            field,
            format!("{sid:?} is not a call SID (CA followed by 32 hex digits)"),
        )));
    }
    if state.twilio.is_none() {
        return end_through_the_socket(state, sid, style).await;
    }
    let call = twilio(state)?.end_call(sid).await.map_err(ApiError::from)?;
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
) -> Result<(StatusCode, Value), Box<ApiError>> {
    use crate::relay::live::CallCommand;
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
        return Err(Box::new(ApiError {
            status: StatusCode::NOT_FOUND,
            body: json!({"error": format!("no live call {sid} (set TWILIO_ACCOUNT_SID to end calls through Twilio)")}),
        }));
    }
    Err(Box::new(TwilioError::NotConfigured.into()))
}

async fn list_numbers(state: &AppState) -> Result<(StatusCode, Value), Box<ApiError>> {
    let numbers = twilio(state)?
        .list_numbers()
        .await
        .map_err(ApiError::from)?;
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

    fn error_field(result: Result<CallRequest, ApiError>) -> String {
        let error = result.expect_err("must be refused");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        error.body["field"].as_str().unwrap_or("").to_string()
    }

    #[test]
    fn a_full_request_is_read() {
        let request = parse_call_request(
            br#"{"to":"+5511999990000","from":"+5511333330000","mode":"relay","greeting":"Oi Ana!",
                "parameters":{"lead":"Ana","score":7,"vip":true},"record":true,"machine_detection":true}"#,
            Style::Api,
        )
        .unwrap();
        assert_eq!(request.to, "+5511999990000");
        assert_eq!(request.from.as_deref(), Some("+5511333330000"));
        assert_eq!(request.greeting.as_deref(), Some("Oi Ana!"));
        assert!(request.parameters.contains(&("score".into(), "7".into())));
        assert!(request.parameters.contains(&("vip".into(), "true".into())));
        assert!(request.record && request.machine_detection);
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, field) in [
            (r#"{}"#, "to"),
            (r#"{"to":"11999990000"}"#, "to"),
            (r#"{"to":5511999990000}"#, "to"),
            (r#"{"to":"+5511999990000","from":"abc"}"#, "from"),
            (r#"{"to":"+5511999990000","mode":"video"}"#, "mode"),
            (r#"{"to":"+5511999990000","record":"yes"}"#, "record"),
            (r#"{"to":"+5511999990000","parameters":[1]}"#, "parameters"),
            (
                r#"{"to":"+5511999990000","parameters":{"a b":"x"}}"#,
                "parameters.a b",
            ),
            (
                r#"{"to":"+5511999990000","parameters":{"voxrelay_greeting":"x"}}"#,
                "parameters.voxrelay_greeting",
            ),
            (
                r#"{"to":"+5511999990000","parameters":{"x":{"y":1}}}"#,
                "parameters.x",
            ),
            (
                r#"{"to":"+5511999990000","machineDetection":true}"#,
                "machineDetection",
            ),
        ] {
            assert_eq!(
                error_field(parse_call_request(body.as_bytes(), Style::Api)),
                field,
                "{body}"
            );
        }
        let long = format!(
            r#"{{"to":"+5511999990000","greeting":"{}"}}"#,
            "a".repeat(1001)
        );
        assert_eq!(
            error_field(parse_call_request(long.as_bytes(), Style::Api)),
            "greeting"
        );
        let error = parse_call_request(b"[1]", Style::Api).unwrap_err();
        assert!(
            error.body["error"]
                .as_str()
                .unwrap()
                .contains("JSON object")
        );
    }

    #[test]
    fn stream_mode_is_accepted() {
        let request =
            parse_call_request(br#"{"to":"+5511999990000","mode":"stream"}"#, Style::Api).unwrap();
        assert!(request.stream);
        let request = parse_call_request(br#"{"to":"+5511999990000"}"#, Style::Api).unwrap();
        assert!(!request.stream);
    }

    #[test]
    fn compatibility_shapes() {
        let r = parse_call_request(
            br#"{"to":"+5511999990000","message":"Oi","extra":1}"#,
            Style::MakeCall,
        )
        .unwrap();
        assert_eq!(r.greeting.as_deref(), Some("Oi"));
        let r = parse_call_request(
            br#"{"number":"+5511999990000","fromNumber":"+5511333330000"}"#,
            Style::ApiCall,
        )
        .unwrap();
        assert_eq!(r.from.as_deref(), Some("+5511333330000"));
        assert_eq!(
            error_field(parse_call_request(
                br#"{"to":"+5511999990000"}"#,
                Style::ApiCall
            )),
            "number"
        );
    }

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
