//! The REST API over the store, all behind `Authorization: Bearer $API_TOKEN`:
//!
//! - `GET /api/calls?limit=&before=&status=&mode=&number=&agent=&since=&until=&day=`:
//!   calls, newest first, one page at a time (`next_before` in the answer is the
//!   `before` of the next page, with the same filters); `since`/`until` are RFC
//!   3339 times, `day` a UTC date (`2026-12-05`).
//! - `GET /api/calls/{sid}`: one call, its record counts, its appointments and
//!   its recording.
//! - `GET /api/calls/{sid}/recording`: the call's own WAV recording ([`recording`]).
//! - `GET /api/overview?hours=`: counts for the console ([`overview`]).
//! - `GET /api/calls/{sid}/transcript?format=json|text&limit=&after=` (and the
//!   older `GET /api/transcript/{sid}`): the turns and the tool calls among them,
//!   at most `limit` turns (default and most: 200) a page; `next_after` in the
//!   JSON answer is the `after` of the next page. `text` gives `Caller: …` /
//!   `Agent: …` lines of the page.
//! - `GET /api/appointments?limit=&before=`: booked appointments, newest first.
//! - `GET /api/agents`: the agents this server runs, their numbers, limits and
//!   live calls on this replica.
//!
//! Bad query parameters get 400, unknown calls 404, a failing database 503; every
//! error is JSON.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

mod overview;
mod recording;

use super::error::HttpError;
use super::{auth, with_state};
use crate::state::AppState;
use crate::store::{
    Appointment, Call, CallCursor, CallDetail, CallFilter, Millis, StoreError, Transcript,
};

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
    let recording = warp::path!("calls" / String / "recording")
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(recording::get);
    let overview = warp::path!("overview")
        .and(warp::get())
        .and(raw_query())
        .and(with_state(state.clone()))
        .then(overview::get);
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
    let agents = warp::path!("agents")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| warp::reply::json(&agents_json(&state)).into_response());
    warp::path("api")
        .and(auth::bearer(state))
        .and(
            calls
                .or(call)
                .unify()
                .or(recording)
                .unify()
                .or(overview)
                .unify()
                .or(transcript)
                .unify()
                .or(appointments)
                .unify()
                .or(agents)
                .unify(),
        )
        .map(no_store)
        .boxed()
}

/// The agents, the default first.
fn agents_json(state: &AppState) -> Value {
    let agents: Vec<Value> = state
        .agents
        .iter()
        .map(|agent| {
            let (live, total, refused) = agent.load.counts();
            let config = &agent.config;
            json!({
                "id": agent.id(),
                "name": config.agent_name,
                "numbers": config.agent.numbers.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
                "max_calls": config.agent.max_calls,
                "language": config.relay.language,
                "welcome_greeting": config.relay.welcome_greeting,
                "llm": {"provider": agent.llm.name(), "model": agent.llm.model()},
                "tools": agent.tools.names(),
                "live_calls": live,
                "calls_total": total,
                "calls_refused": refused,
            })
        })
        .collect();
    json!({ "agents": agents })
}

/// API answers are the operator's data: never kept by a browser or a proxy.
fn no_store(response: Response) -> Response {
    let mut response = response;
    response.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    response
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
    filter: CallFilter,
    hours: Option<u32>,
}

/// Longest filter value taken (a number, a status).
const MAX_FILTER_BYTES: usize = 64;

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
            "status" | "mode" | "number" | "agent" if !value.is_empty() => {
                if value.len() > MAX_FILTER_BYTES {
                    return Err(format!("{key} is longer than {MAX_FILTER_BYTES} bytes"));
                }
                let slot = match key.as_str() {
                    "status" => &mut params.filter.status,
                    "mode" => &mut params.filter.mode,
                    "agent" => &mut params.filter.agent,
                    _ => &mut params.filter.number,
                };
                *slot = Some(value.trim().to_string());
            }
            "since" | "until" if !value.is_empty() => {
                let at =
                    parse_time(&value).ok_or_else(|| format!("{key} must be an RFC 3339 time"))?;
                if key == "since" {
                    params.filter.since = Some(at);
                } else {
                    params.filter.until = Some(at);
                }
            }
            "day" if !value.is_empty() => {
                let start = parse_time(&format!("{value}T00:00:00Z"))
                    .ok_or("day must be a date like 2026-12-05")?;
                params.filter.since = Some(start);
                params.filter.until = Some(start + 24 * 3_600_000);
            }
            "hours" => {
                params.hours = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|h| (1..=24 * 31).contains(h))
                        .ok_or("hours must be a number from 1 to 744")?,
                );
            }
            _ => {}
        }
    }
    Ok(params)
}

/// An RFC 3339 time (`2026-12-05T10:00:00Z`, `…-03:00` too) as epoch milliseconds.
fn parse_time(text: &str) -> Option<Millis> {
    let at = humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .or_else(|| offset_time(text.trim()))?;
    at.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// `…±hh:mm` (what a browser's local day start looks like), which humantime does
/// not read: the UTC time it names.
fn offset_time(text: &str) -> Option<std::time::SystemTime> {
    let split = text.len().checked_sub(6)?;
    let (local, offset) = text.split_at(split);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let minutes = sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?);
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(minutes.unsigned_abs() * 60);
    if minutes >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
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
    match state
        .store
        .list_calls(limit, before.as_ref(), &params.filter)
        .await
    {
        Ok(page) => warp::reply::json(&json!({
            "calls": page.calls.iter().map(call_json).collect::<Vec<_>>(),
            "next_before": page.next.map(|c| c.encode()),
        }))
        .into_response(),
        Err(e) => store_failed(e),
    }
}

async fn get_call(call_sid: String, state: AppState) -> Response {
    let detail = match state.store.get_call(&call_sid).await {
        Ok(Some(detail)) => detail,
        Ok(None) => return not_found(&call_sid),
        Err(e) => return store_failed(e),
    };
    let appointments = if detail.appointments > 0 {
        match state.store.call_appointments(&call_sid).await {
            Ok(list) => list,
            Err(e) => return store_failed(e),
        }
    } else {
        Vec::new()
    };
    let mut body = call_detail_json(&detail);
    body["appointments"] = appointments.iter().map(appointment_json).collect();
    warp::reply::json(&body).into_response()
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
        "agent": call.agent,
        "status": call.status,
        "parameters": call.parameters.as_deref().map(json_text),
        "started_at": time(call.started_at),
        "ended_at": call.ended_at.map(time),
        "duration_ms": call.duration_ms,
        "twilio_duration_secs": call.twilio_duration_secs,
        "answered_by": call.answered_by,
        "answered_by_signal": call.answered_by_signal,
        "answered_at": call.answered_at.map(time),
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
            "llm_first_token_ms": t.llm_first_token_ms,
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
                format: Some("text".into()),
                ..Params::default()
            }
        );
        let p = parse_params("status=completed&mode=sip&number=%2B5511&day=2023-11-14").unwrap();
        assert_eq!(p.filter.status.as_deref(), Some("completed"));
        assert_eq!(p.filter.mode.as_deref(), Some("sip"));
        assert_eq!(p.filter.number.as_deref(), Some("+5511"));
        assert_eq!(p.filter.since, Some(1_699_920_000_000));
        assert_eq!(p.filter.until, Some(1_699_920_000_000 + 86_400_000));
        let p = parse_params("since=2023-11-14T00:00:00-03:00&until=2023-11-14T22:13:20Z").unwrap();
        assert_eq!(p.filter.since, Some(1_699_920_000_000 + 3 * 3_600_000));
        assert_eq!(p.filter.until, Some(1_700_000_000_000));
        for bad in [
            "limit=0",
            "limit=201",
            "limit=ten",
            "limit=-1",
            "after=-2",
            "after=x",
            "day=yesterday",
            "since=soon",
            "hours=0",
            "hours=9999",
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
