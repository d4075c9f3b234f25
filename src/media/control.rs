//! Carrying out the agent's ending of a media call through Twilio's REST API.
//!
//! Media Streams has no `end` message: all the server can do is close the stream,
//! after which Twilio runs the TwiML that follows `</Connect>` (ours has a
//! `<Redirect>` to `/twiml/stream/next`, which answers the transfer or `<Hangup/>`).
//! When Twilio REST credentials are configured, the session does better once the
//! goodbye (or handoff words) has played: it updates the live call
//! (`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`) with
//! `Status=completed` after `end_call`, or with `Twiml=` the same `<Dial>` /
//! `<Enqueue>` `/twiml/stream/next` would answer after `transfer_to_human`. That
//! works whatever TwiML started the stream (a TwiML Bin without the `<Redirect>`
//! included).
//!
//! The stream is closed afterwards in every case, and the ending is always recorded
//! for `/twiml/stream/next` first, so when there are no credentials, the call SID is
//! not a Twilio call SID, or Twilio refuses, fails or does not answer within
//! [`REST_END_TIMEOUT`], the `<Redirect>` still carries the ending: a call never
//! hangs. Failures are logged with Twilio's error code and message (never the
//! credentials).

use std::time::Duration;

use crate::agent::Handoff;
use crate::config::HandoffConfig;
use crate::twilio::client::{MAX_INLINE_TWIML, TwilioClient, TwilioError};

/// The longest the REST update may take before the stream is closed anyway.
pub const REST_END_TIMEOUT: Duration = Duration::from_secs(5);

/// How the agent's ending reached Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedVia {
    /// The REST API hung up the call or gave it the handoff TwiML.
    Rest,
    /// The stream was closed and the TwiML after `</Connect>` carries the ending.
    Redirect,
}

impl EndedVia {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Redirect => "redirect",
        }
    }
}

/// What to ask Twilio for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestEnding {
    /// `Status=completed`.
    Hangup,
    /// `Twiml=…` (a transfer).
    Twiml(String),
}

/// The update that carries out `handoff`: the handoff TwiML for a transfer (the same
/// document `/twiml/stream/next` answers), else a hang-up. A transfer with no
/// destination configured hangs up, as `/twiml/stream/next` does.
pub fn rest_ending(config: &HandoffConfig, handoff: &Handoff) -> RestEnding {
    if !handoff.is_live_agent() {
        return RestEnding::Hangup;
    }
    match crate::twiml::handoff(config, &handoff.to_json()) {
        Some(twiml) => RestEnding::Twiml(twiml),
        None => {
            tracing::warn!(
                "a transfer was asked for but no HANDOFF_NUMBER or TASKROUTER_WORKFLOW_SID is set; hanging up"
            );
            RestEnding::Hangup
        }
    }
}

/// Whether `sid` looks like a Twilio call SID (`CA` and 32 hex digits), so it can
/// go into a REST path as is.
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Ends `call_sid` as `handoff` says through the REST API; returns how the ending
/// reached Twilio ([`EndedVia::Redirect`] when the REST update did not happen).
/// Bounded by [`REST_END_TIMEOUT`].
pub async fn end_call(
    twilio: &TwilioClient,
    config: &HandoffConfig,
    call_sid: &str,
    handoff: &Handoff,
) -> EndedVia {
    if !is_call_sid(call_sid) {
        tracing::warn!(
            call_sid,
            "not a Twilio call SID; ending the call through the stream's <Redirect>"
        );
        return EndedVia::Redirect;
    }
    let ending = rest_ending(config, handoff);
    if let RestEnding::Twiml(twiml) = &ending
        && twiml.len() > MAX_INLINE_TWIML
    {
        tracing::warn!(
            chars = twiml.len(),
            "the handoff TwiML is too long for the REST API; transferring through the stream's <Redirect>"
        );
        return EndedVia::Redirect;
    }
    let request = async {
        match &ending {
            RestEnding::Hangup => twilio.end_call(call_sid).await,
            RestEnding::Twiml(twiml) => twilio.update_call_twiml(call_sid, twiml).await,
        }
    };
    let what = match ending {
        RestEnding::Hangup => "hang-up",
        RestEnding::Twiml(_) => "transfer",
    };
    match tokio::time::timeout(REST_END_TIMEOUT, request).await {
        Ok(Ok(call)) => {
            tracing::info!(
                action = what,
                call_status = %call.status,
                "Twilio's REST API carried out the agent's ending"
            );
            EndedVia::Rest
        }
        Ok(Err(e)) => {
            let (code, message) = match &e {
                TwilioError::Api { code, message, .. } => (*code, message.as_str()),
                _ => (None, ""),
            };
            tracing::warn!(
                action = what,
                error = %e,
                twilio_code = code,
                twilio_message = message,
                "Twilio's REST API could not end the call; falling back to the stream's <Redirect>"
            );
            EndedVia::Redirect
        }
        Err(_) => {
            tracing::warn!(
                action = what,
                timeout_ms = REST_END_TIMEOUT.as_millis() as u64,
                "Twilio's REST API did not answer in time; falling back to the stream's <Redirect>"
            );
            EndedVia::Redirect
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff(reason_code: &str) -> Handoff {
        Handoff {
            reason_code: reason_code.into(),
            summary: Some("quer falar com alguém".into()),
            ..Handoff::default()
        }
    }

    #[test]
    fn end_call_hangs_up_and_a_transfer_gets_the_handoff_twiml() {
        let mut config = HandoffConfig::default();
        assert_eq!(
            rest_ending(&config, &handoff(crate::agent::REASON_END_CALL)),
            RestEnding::Hangup
        );
        // A transfer with nowhere to go hangs up, as /twiml/stream/next does.
        assert_eq!(
            rest_ending(&config, &handoff(crate::agent::REASON_LIVE_AGENT)),
            RestEnding::Hangup
        );
        config.number = Some("sip:fila@pbx.example.com".into());
        assert_eq!(
            rest_ending(&config, &handoff(crate::agent::REASON_LIVE_AGENT)),
            RestEnding::Twiml(crate::twiml::dial("sip:fila@pbx.example.com"))
        );
        config.taskrouter_workflow_sid = Some("WW1".into());
        let h = handoff(crate::agent::REASON_LIVE_AGENT);
        assert_eq!(
            rest_ending(&config, &h),
            RestEnding::Twiml(crate::twiml::enqueue("WW1", &h.to_json()))
        );
    }

    #[test]
    fn only_real_call_sids_go_into_a_rest_path() {
        assert!(is_call_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!is_call_sid("CA100"));
        assert!(!is_call_sid("CA0123456789abcdef0123456789abcde/"));
        assert!(!is_call_sid("XX0123456789abcdef0123456789abcdef"));
        assert!(!is_call_sid(""));
    }
}
