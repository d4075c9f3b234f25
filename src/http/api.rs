//! The REST API over the store, all behind `Authorization: Bearer $API_TOKEN`:
//!
//! - `GET /api/calls?limit=&before=`: calls, newest first, one page at a time
//!   (`next_before` in the answer is the `before` of the next page).
//! - `GET /api/calls/{sid}`: one call, its record counts and its recording.
//! - `GET /api/calls/{sid}/transcript?format=json|text&limit=&after=` (and the
//!   older `GET /api/transcript/{sid}`): the turns and the tool calls among them,
//!   at most `limit` turns (default and most: 200) a page; `next_after` in the
//!   JSON answer is the `after` of the next page. `text` gives `Caller: …` /
//!   `Agent: …` lines of the page.
//! - `GET /api/appointments?limit=&before=`: booked appointments, newest first.
//!
//! Bad query parameters get 400, unknown calls 404, a failing database 503; every
//! error is JSON.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::HttpError;
use super::{auth, with_state};
use crate::state::AppState;
use crate::store::{Appointment, Call, CallCursor, CallDetail, StoreError, Transcript};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page.
pub const MAX_LIMIT: u32 = 200;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let calls = warp::path!("calls")
        .and(warp::get())
        .and(raw_query())
        .and(with_state(state.clone()))
        .then(list_calls);
    let call = warp::path!("calls" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(get_call);
    let transcript = warp::path!("calls" / String / "transcript")
        .or(warp::path!("transcript" / String))
        .unify()
        .and(warp::get())
        .and(raw_query())
        .and(with_state(state.clone()))
        .then(transcript);
    let appointments = warp::path!("appointments")
        .and(warp::get())
        .and(raw_query())
        .and(with_state(state.clone()))
        .then(list_appointments);
    warp::path("api")
        .and(auth::bearer(state))
        .and(
            calls
                .or(call)
                .unify()
                .or(transcript)
                .unify()
                .or(appointments)
                .unify(),
        )
        .boxed()
}

/// The raw query string, empty when there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// The query parameters we know; anything else is ignored.
#[derive(Debug, Default, PartialEq)]
struct Params {
    /// `None`: not given.
    limit: Option<u32>,
    before: Option<String>,
    after: Option<i64>,
    format: Option<String>,
}

fn parse_params(raw: &str) -> Result<Params, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|_| "malformed query string".to_string())?;
    let mut params = Params::default();
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => {
                params.limit = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| format!("limit must be a number from 1 to {MAX_LIMIT}"))?,
                );
            }
            "before" if !value.is_empty() => params.before = Some(value),
            "after" if !value.is_empty() => {
                params.after = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or("after must be a next_after value from this API")?,
                );
            }
            "format" => params.format = Some(value),
            _ => {}
        }
    }
    Ok(params)
}

fn bad_request(message: &str) -> Response {
    HttpError::BadRequest(message.to_string()).into_response()
}

fn not_found(call_sid: &str) -> Response {
    HttpError::NotFound(format!("no call {call_sid:?}")).into_response()
}

fn store_failed(error: StoreError) -> Response {
    HttpError::Store(error).into_response()
}

async fn list_calls(raw: String, state: AppState) -> Response {
    let params = match parse_params(&raw) {
        Ok(p) => p,
        Err(e) => return bad_request(&e),
    };
    let before = match params.before.as_deref().map(CallCursor::decode) {
        None => None,
        Some(Some(cursor)) => Some(cursor),
        Some(None) => return bad_request("before must be a next_before value from this API"),
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    match state.store.list_calls(limit, before.as_ref()).await {
        Ok(page) => warp::reply::json(&json!({
            "calls": page.calls.iter().map(call_json).collect::<Vec<_>>(),
            "next_before": page.next.map(|c| c.encode()),
        }))
        .into_response(),
        Err(e) => store_failed(e),
    }
}

async fn get_call(call_sid: String, state: AppState) -> Response {
    match state.store.get_call(&call_sid).await {
        Ok(Some(detail)) => warp::reply::json(&call_detail_json(&detail)).into_response(),
        Ok(None) => not_found(&call_sid),
        Err(e) => store_failed(e),
    }
}

async fn transcript(call_sid: String, raw: String, state: AppState) -> Response {
    let params = match parse_params(&raw) {
        Ok(p) => p,
        Err(e) => return bad_request(&e),
    };
    let text = match params.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return bad_request("format must be json or text"),
    };
    let limit = params.limit.unwrap_or(MAX_LIMIT);
    match state
        .store
        .transcript_page(&call_sid, params.after, limit)
        .await
    {
        Ok(Some(transcript)) if text => warp::reply::with_header(
            transcript_text(&transcript),
            "content-type",
            "text/plain; charset=utf-8",
        )
        .into_response(),
        Ok(Some(transcript)) => {
            warp::reply::json(&transcript_json(&call_sid, &transcript)).into_response()
        }
        Ok(None) => not_found(&call_sid),
        Err(e) => store_failed(e),
    }
}

async fn list_appointments(raw: String, state: AppState) -> Response {
    let params = match parse_params(&raw) {
        Ok(p) => p,
        Err(e) => return bad_request(&e),
    };
    let before = match params.before.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return bad_request("before must be an appointment id"),
    };
    match state
        .store
        .list_appointments(params.limit.unwrap_or(DEFAULT_LIMIT), before)
        .await
    {
        Ok(page) => warp::reply::json(&json!({
            "appointments": page.appointments.iter().map(appointment_json).collect::<Vec<_>>(),
            "next_before": page.next_before,
        }))
        .into_response(),
        Err(e) => store_failed(e),
    }
}

/// Milliseconds since the epoch as RFC 3339 (`2026-05-04T12:00:00.123Z`).
fn time(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Stored JSON text as JSON, or as a string when it is not valid JSON.
fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn call_json(call: &Call) -> Value {
    json!({
        "call_sid": call.call_sid,
        "session_id": call.session_id,
        "from": call.from,
        "to": call.to,
        "direction": call.direction,
        "mode": call.mode,
        "status": call.status,
        "parameters": call.parameters.as_deref().map(json_text),
        "started_at": time(call.started_at),
        "ended_at": call.ended_at.map(time),
        "duration_ms": call.duration_ms,
        "twilio_duration_secs": call.twilio_duration_secs,
        "answered_by": call.answered_by,
        "handoff_data": call.handoff_data.as_deref().map(json_text),
        "turns": call.turns,
        "interrupts": call.interrupts,
        "llm_errors": call.errors,
        "recording": call.recording,
    })
}

fn call_detail_json(detail: &CallDetail) -> Value {
    let mut value = call_json(&detail.call);
    value["records"] = json!({
        "transcript_turns": detail.transcript_turns,
        "tool_calls": detail.tool_calls,
        "appointments": detail.appointments,
    });
    value["transcript"] = json!(format!("/api/calls/{}/transcript", detail.call.call_sid));
    value
}

fn transcript_json(call_sid: &str, transcript: &Transcript) -> Value {
    json!({
        "call_sid": call_sid,
        "turns": transcript.turns.iter().map(|t| json!({
            "seq": t.seq,
            "role": t.role,
            "text": t.text,
            "interrupted": t.interrupted,
            "heard": t.heard,
            "partial": t.partial,
            "started_at": time(t.started_at),
            "ended_at": time(t.ended_at),
            "time_to_first_token_ms": t.time_to_first_token_ms,
        })).collect::<Vec<_>>(),
        "next_after": transcript.next_after,
        "tool_calls": transcript.tool_calls.iter().map(|c| json!({
            "seq": c.seq,
            "name": c.name,
            "arguments": json_text(&c.arguments),
            "result": c.result,
            "ok": c.ok,
            "started_at": time(c.started_at),
            "duration_ms": c.duration_ms,
        })).collect::<Vec<_>>(),
    })
}

/// `Caller: …` / `Agent: …`, one turn a line; an interrupted agent turn shows what
/// the caller heard of it.
pub fn transcript_text(transcript: &Transcript) -> String {
    let mut out = String::new();
    for turn in &transcript.turns {
        let who = if turn.role == "caller" {
            "Caller"
        } else {
            "Agent"
        };
        // One line per turn, whatever the text holds.
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let line = match (turn.interrupted, turn.heard.as_deref().map(flat)) {
            (true, Some(heard)) if !heard.is_empty() => format!("{heard} [interrupted]"),
            (true, _) => "[interrupted before anything was heard]".to_string(),
            (false, _) if turn.partial => format!("{} [cut off]", flat(&turn.text)),
            (false, _) => flat(&turn.text),
        };
        out.push_str(who);
        out.push_str(": ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn appointment_json(a: &Appointment) -> Value {
    json!({
        "id": a.id,
        "call_sid": a.call_sid,
        "caller_number": a.caller_number,
        "name": a.name,
        "email": a.email,
        "preferred_day": a.preferred_day,
        "preferred_time": a.preferred_time,
        "phone": a.phone,
        "notes": a.notes,
        "created_at": time(a.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Turn;

    #[test]
    fn params_are_checked() {
        assert_eq!(parse_params("").unwrap().limit, None);
        let p = parse_params("limit=5&before=12.CA1&after=7&format=text&other=1").unwrap();
        assert_eq!(
            p,
            Params {
                limit: Some(5),
                before: Some("12.CA1".into()),
                after: Some(7),
                format: Some("text".into())
            }
        );
        for bad in [
            "limit=0",
            "limit=201",
            "limit=ten",
            "limit=-1",
            "after=-2",
            "after=x",
        ] {
            assert!(parse_params(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_transcript_shows_what_was_heard() {
        let turn = |role: &str, text: &str, heard: Option<&str>| Turn {
            role: role.into(),
            text: text.into(),
            interrupted: heard.is_some(),
            heard: heard.map(str::to_string),
            ..Turn::default()
        };
        let transcript = Transcript {
            turns: vec![
                turn("caller", "Oi,\nbom dia", None),
                turn(
                    "agent",
                    "Bom dia! Como posso ajudar hoje?",
                    Some("Bom dia!"),
                ),
                turn("agent", "Vou verificar.", Some("")),
            ],
            tool_calls: vec![],
            next_after: None,
        };
        assert_eq!(
            transcript_text(&transcript),
            "Caller: Oi, bom dia\nAgent: Bom dia! [interrupted]\nAgent: [interrupted before anything was heard]\n"
        );
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
