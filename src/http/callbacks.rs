//! Twilio's callbacks about calls: `POST /twilio/status` (the call's lifecycle:
//! initiated, ringing, answered, completed, with duration and answering-machine
//! result), `POST /twilio/recording` (the recording's SID, URL and duration) and
//! `POST /twilio/amd` (asynchronous answering-machine detection: stored like a
//! status callback, and a voicemail or a fax is handed to the live session,
//! wherever it runs).
//! Both are signed webhooks (checked first) and are written to the calls table.

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::HttpError;
use super::{twilio_auth, with_state};
use crate::state::AppState;
use crate::store::{Recording, StatusUpdate, StoreError, now_millis};
use crate::transport::live::CallCommand;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let status = warp::path!("twilio" / "status")
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()))
        .and(with_state(state.clone()))
        .then(|form: Vec<(String, String)>, state: AppState| async move {
            match StatusCallback::from_form(&form) {
                Some(update) => on_status(&state, update).await,
                None => missing_call_sid("status"),
            }
        });
    let recording = warp::path!("twilio" / "recording")
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()))
        .and(with_state(state.clone()))
        .then(|form: Vec<(String, String)>, state: AppState| async move {
            match RecordingCallback::from_form(&form) {
                Some(recording) => on_recording(&state, recording).await,
                None => missing_call_sid("recording"),
            }
        });
    let amd = warp::path!("twilio" / "amd")
        .and(warp::post())
        .and(twilio_auth::webhook(state.clone()))
        .and(with_state(state))
        .then(|form: Vec<(String, String)>, state: AppState| async move {
            match StatusCallback::from_form(&form) {
                Some(update) => on_amd(&state, update).await,
                None => missing_call_sid("amd"),
            }
        });
    status.or(recording).unify().or(amd).unify().boxed()
}

fn field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn missing_call_sid(kind: &str) -> Response {
    tracing::warn!(kind, "a Twilio callback without CallSid; ignoring it");
    HttpError::field("CallSid", "is required").into_response()
}

/// What a status callback (or an asynchronous AMD callback) says about a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusCallback {
    pub call_sid: String,
    /// `queued`, `initiated`, `ringing`, `in-progress`, `completed`, `busy`,
    /// `no-answer`, `canceled`, `failed`; absent on an AMD-only callback.
    pub status: Option<String>,
    /// `CallDuration`, in seconds (on `completed`).
    pub duration_secs: Option<i64>,
    /// `human`, `machine_start`, `fax`, `unknown`, … (answering-machine detection).
    pub answered_by: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Option<String>,
}

impl StatusCallback {
    /// The update for the calls table. An answering-machine callback carries no
    /// `CallStatus`; it only comes once the call is answered, so it reads as
    /// `in-progress` (a call already over keeps its final status).
    pub fn to_store(&self) -> StatusUpdate {
        StatusUpdate {
            call_sid: self.call_sid.clone(),
            status: self
                .status
                .clone()
                .unwrap_or_else(|| "in-progress".to_string()),
            duration_secs: self.duration_secs,
            answered_by: self.answered_by.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            direction: self.direction.clone(),
            at: now_millis(),
        }
    }

    pub fn from_form(form: &[(String, String)]) -> Option<Self> {
        Some(Self {
            call_sid: field(form, "CallSid")?,
            status: field(form, "CallStatus"),
            duration_secs: field(form, "CallDuration")
                .or_else(|| field(form, "Duration"))
                .and_then(|d| d.parse().ok()),
            answered_by: field(form, "AnsweredBy"),
            from: field(form, "From"),
            to: field(form, "To"),
            direction: field(form, "Direction"),
        })
    }
}

/// What a recording status callback says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordingCallback {
    pub call_sid: String,
    pub recording_sid: Option<String>,
    pub url: Option<String>,
    /// `completed`, `absent`, `failed`, …
    pub status: Option<String>,
    pub duration_secs: Option<i64>,
}

impl RecordingCallback {
    pub fn from_form(form: &[(String, String)]) -> Option<Self> {
        Some(Self {
            call_sid: field(form, "CallSid")?,
            recording_sid: field(form, "RecordingSid"),
            url: field(form, "RecordingUrl"),
            status: field(form, "RecordingStatus"),
            duration_secs: field(form, "RecordingDuration").and_then(|d| d.parse().ok()),
        })
    }
}

async fn on_status(state: &AppState, update: StatusCallback) -> Response {
    tracing::info!(
        call_sid = %update.call_sid,
        status = update.status.as_deref().unwrap_or(""),
        duration_secs = update.duration_secs,
        answered_by = update.answered_by.as_deref().unwrap_or(""),
        "call status"
    );
    let stored = update.to_store();
    stored_or_503(state.store.upsert_status(&stored).await, &update.call_sid)
}

/// What the detection heard, for the live session: a voicemail whose greeting
/// ended leaves the agent's message; a fax ends the call; anything else (a person,
/// `unknown`, `machine_start`) changes nothing.
pub fn amd_command(answered_by: &str) -> Option<CallCommand> {
    match answered_by {
        "machine_end_beep" | "machine_end_silence" | "machine_end_other" => {
            Some(CallCommand::Voicemail)
        }
        "fax" => Some(CallCommand::Fax),
        _ => None,
    }
}

async fn on_amd(state: &AppState, update: StatusCallback) -> Response {
    let answer = on_status(state, update.clone()).await;
    let Some(command) = update.answered_by.as_deref().and_then(amd_command) else {
        return answer;
    };
    let sid = &update.call_sid;
    if state.live_calls.command(sid, command) {
        tracing::info!(call_sid = %sid, command = ?command, "answering-machine result handed to the call's session");
    } else if let Ok(true) = state.store.notify(&command.payload(sid)).await {
        tracing::info!(call_sid = %sid, command = ?command, "answering-machine result sent to the replica carrying the call");
    } else {
        tracing::warn!(call_sid = %sid, command = ?command, "no live session for an answering-machine result");
    }
    answer
}

async fn on_recording(state: &AppState, recording: RecordingCallback) -> Response {
    tracing::info!(
        call_sid = %recording.call_sid,
        recording_sid = recording.recording_sid.as_deref().unwrap_or(""),
        status = recording.status.as_deref().unwrap_or(""),
        duration_secs = recording.duration_secs,
        "call recording"
    );
    if recording
        .status
        .as_deref()
        .is_some_and(|s| s != "completed")
    {
        // `absent` (no audio) or `failed`: nothing to point at.
        return StatusCode::NO_CONTENT.into_response();
    }
    let stored = Recording {
        sid: recording.recording_sid.clone(),
        url: recording.url.clone(),
        duration_secs: recording.duration_secs,
        path: None,
    };
    stored_or_503(
        state
            .store
            .set_recording(&recording.call_sid, &stored)
            .await,
        &recording.call_sid,
    )
}

/// 204 once stored; 503 (logged) when the store failed, so Twilio's debugger
/// shows it.
fn stored_or_503(result: Result<(), StoreError>, call_sid: &str) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!(%call_sid, "cannot store a Twilio callback");
            HttpError::Store(e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detection_results_become_commands() {
        use super::{CallCommand, amd_command};
        for voicemail in [
            "machine_end_beep",
            "machine_end_silence",
            "machine_end_other",
        ] {
            assert_eq!(amd_command(voicemail), Some(CallCommand::Voicemail));
        }
        assert_eq!(amd_command("fax"), Some(CallCommand::Fax));
        for nothing in ["human", "unknown", "machine_start", ""] {
            assert_eq!(amd_command(nothing), None);
        }
    }

    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn status_fields_are_read() {
        let update = StatusCallback::from_form(&form(&[
            ("CallSid", "CA1"),
            ("CallStatus", "completed"),
            ("CallDuration", "42"),
            ("AnsweredBy", "human"),
            ("Direction", "outbound-api"),
        ]))
        .unwrap();
        assert_eq!(update.status.as_deref(), Some("completed"));
        assert_eq!(update.duration_secs, Some(42));
        assert_eq!(update.answered_by.as_deref(), Some("human"));
        assert!(StatusCallback::from_form(&form(&[("CallStatus", "ringing")])).is_none());
    }

    #[test]
    fn recording_fields_are_read() {
        let recording = RecordingCallback::from_form(&form(&[
            ("CallSid", "CA1"),
            ("RecordingSid", "RE1"),
            ("RecordingUrl", "https://api.twilio.com/x/Recordings/RE1"),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "17"),
        ]))
        .unwrap();
        assert_eq!(recording.recording_sid.as_deref(), Some("RE1"));
        assert_eq!(recording.duration_secs, Some(17));
    }
}
