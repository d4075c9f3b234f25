//! The seam between a Media Streams call ([`super::session`]) and the speech
//! pipeline that gives it a voice.
//!
//! The session owns the Twilio socket, pacing, marks, `clear`, the recording and the
//! call's record (`call_started` / `call_ended`). A pipeline owns its upstream
//! connections and the conversation (turns, tool calls, appointments and
//! interruptions go to the observer from the pipeline). They talk through:
//!
//! - [`Pipeline::caller_audio`]: every inbound 20 ms frame, both as Twilio's base64
//!   text (to forward unchanged) and as decoded μ-law bytes. Synchronous: a
//!   pipeline must never block the call on it (drop the frame if its upstream lags);
//! - [`Pipeline::handle`]: everything else from the call ([`CallEvent`]: DTMF, marks
//!   played, the answer to a `clear`, the caller's silence, a voicemail). May await
//!   briefly (bounded queues, timeouts);
//! - [`Pipeline::next_output`]: what the session must do next ([`PipelineOutput`]:
//!   agent audio, barge-in, the caller speaking, end of call, failure). Cancel-safe:
//!   the session polls it
//!   inside its `select!` and drops the future whenever another branch wins;
//! - [`Pipeline::close`]: the call is over (caller hung up, server stops, the
//!   pipeline asked to end); closes every upstream socket and returns the counters.
//!
//! Audio comes back as raw 8 kHz μ-law bytes tagged with a pipeline-chosen `turn`
//! number (a response, an utterance). The session frames it into 160-byte messages,
//! paces it in real time and answers a [`PipelineOutput::Clear`] with
//! [`CallEvent::Cleared`], saying how much of the interrupted turn had been played,
//! which is what `conversation.item.truncate` and "history keeps only what was
//! played" need.
//!
//! Pipelines, named as `MEDIA_PIPELINE` names them: [`openai_realtime`],
//! [`elevenlabs_agent`],
//! [`cascade`] (STT → our agent → TTS).

pub mod bridge;
pub mod cascade;
pub mod elevenlabs_agent;
pub mod openai_realtime;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::agent::{
    AgentDeps, AppointmentRecord, CallInfo, CallObserver, CallSummary, Handoff, ToolCallRecord,
    TurnRecord,
};
pub use crate::agent::{CallLog, ToolFollowUp};
use crate::config::{BuiltinTool, Config, MediaPipelineKind};
use crate::text::base64::Base64Str;

/// Everything a pipeline may need to start, built by the session after Twilio's
/// `start` message.
#[derive(Clone)]
pub struct PipelineContext {
    /// The call (`mode: "stream"`, `<Parameter>`s in `parameters`).
    pub call: CallInfo,
    pub stream_sid: String,
    pub config: Arc<Config>,
    /// The agent's dependencies, the same as ConversationRelay calls use. Turns,
    /// tool calls, appointments and interruptions go to its observer; the session
    /// itself reports `call_started` and `call_ended` (see [`TurnsOnly`]).
    pub agent: AgentDeps,
}

/// One frame of caller audio (normally 20 ms, 160 bytes).
#[derive(Debug, Clone, Copy)]
pub struct CallerAudio<'a> {
    /// 8 kHz μ-law as base64: Twilio's text, unchanged (checked, not decoded, so
    /// that forwarding costs no re-encoding and no JSON escape check), or a chunk
    /// of frames encoded once.
    pub payload_b64: Base64Str<'a>,
    /// Milliseconds since the stream started (Twilio's `timestamp`), when given.
    pub timestamp_ms: Option<u64>,
}

/// Something that happened on the call, other than caller audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A keypad press (`0-9`, `*`, `#`, `A-D`).
    Dtmf(char),
    /// Twilio confirmed that `played` of `turn`'s audio has been heard (a mark came
    /// back).
    Played { turn: u64, played: Duration },
    /// Every frame of `turn` sent so far has been played and the pipeline had said
    /// [`PipelineOutput::TurnDone`]: the turn was heard in full.
    PlayedOut { turn: u64 },
    /// The answer to [`PipelineOutput::Clear`]: Twilio's buffer was emptied; of the
    /// turn that was playing (if any), `played` had been heard (an estimate from
    /// marks and pacing, never more than what was sent).
    Cleared { turn: Option<u64>, played: Duration },
    /// The caller has said nothing for `SILENCE_TIMEOUT_SECS` since the agent's
    /// audio played out (or since they last spoke): the first time (`goodbye`
    /// false) the agent asks whether they are still there, the second it says
    /// goodbye and ends the call ([`crate::agent::REASON_SILENCE`]). A pipeline
    /// that cannot speak our words may do nothing the first time; if the call is
    /// still up at a third silence, the session ends it.
    Silence { goodbye: bool },
    /// Twilio's answering-machine detection heard a voicemail greeting end: stop
    /// the reply in flight, leave the agent's voicemail message, end the call
    /// ([`crate::agent::REASON_VOICEMAIL`]).
    Voicemail,
}

/// What the session should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineOutput {
    /// Agent audio to play: raw 8 kHz μ-law, any length, in order. A new `turn`
    /// number starts a new turn (the previous one's last partial frame is padded
    /// with silence).
    Audio { turn: u64, mulaw: Vec<u8> },
    /// No more audio will come for `turn` (its last partial frame can go out).
    TurnDone { turn: u64 },
    /// Barge-in: drop every frame not yet played (Twilio `clear`, local queue
    /// emptied). Answered with [`CallEvent::Cleared`].
    Clear,
    /// The caller is speaking (or just spoke): their silence starts over.
    CallerActive,
    /// End the call once the audio already queued has played: hang up
    /// ([`crate::agent::REASON_END_CALL`]) or hand the caller to a person
    /// ([`crate::agent::REASON_LIVE_AGENT`]).
    End(Handoff),
    /// The pipeline cannot go on (upstream gone, an unrecoverable error). Any apology
    /// it could still produce has been sent as audio before this; the session plays
    /// what is queued, then hangs up. The text is for logs only.
    Failed(String),
}

/// A pipeline's counters, returned by [`Pipeline::close`] for the call record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Agent turns started.
    pub turns: u32,
    pub interrupts: u32,
    /// Upstream or LLM errors during the call.
    pub errors: u32,
    pub tool_calls: u32,
}

/// Why a pipeline could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Nothing is configured for the requested pipeline (the message says what).
    #[error("{0}")]
    NotConfigured(String),
    /// The upstream could not be reached or refused us.
    #[error("{0}")]
    Upstream(#[from] crate::speech::SpeechError),
}

/// The speech side of one Media Streams call. See the module docs for the contract.
pub trait Pipeline: Send {
    /// `openai-realtime`, `elevenlabs-agent`, `cascade` (logs).
    fn name(&self) -> &'static str;

    /// One frame of caller audio. Must return at once.
    fn caller_audio(&mut self, audio: CallerAudio<'_>);

    /// Something else happened on the call. Bounded time.
    fn handle(&mut self, event: CallEvent) -> BoxFuture<'_, ()>;

    /// The next thing the session must do. Cancel-safe. A pipeline with nothing
    /// left to say stays pending (it must not return a stream of `Failed`).
    fn next_output(&mut self) -> BoxFuture<'_, PipelineOutput>;

    /// The call is over: close every upstream socket (bounded time) and return the
    /// counters.
    fn close(self: Box<Self>) -> BoxFuture<'static, PipelineStats>;
}

/// The pipeline a call uses: the `pipeline` `<Parameter>` when present and valid,
/// else `MEDIA_PIPELINE`.
pub fn choose(config: &Config, call: &CallInfo) -> Result<MediaPipelineKind, PipelineError> {
    if let Some(name) = call.parameters.get("pipeline").filter(|n| !n.is_empty()) {
        return MediaPipelineKind::parse(name).ok_or_else(|| {
            PipelineError::NotConfigured(format!(
                "unknown pipeline {name:?} in the call's parameters (one of {})",
                MediaPipelineKind::NAMES.join(", ")
            ))
        });
    }
    config.media.pipeline.ok_or_else(|| {
        PipelineError::NotConfigured(
            "no media pipeline is configured: set MEDIA_PIPELINE with OPENAI_API_KEY or ElevenLabs keys"
                .into(),
        )
    })
}

/// Connects the pipeline `kind` for this call.
pub async fn connect(
    kind: MediaPipelineKind,
    ctx: PipelineContext,
) -> Result<Box<dyn Pipeline>, PipelineError> {
    match kind {
        MediaPipelineKind::OpenAiRealtime => openai_realtime::connect(ctx).await,
        MediaPipelineKind::ElevenLabsAgent => elevenlabs_agent::connect(ctx).await,
        MediaPipelineKind::Cascade => cascade::connect(ctx).await,
    }
}

/// An observer that passes on everything except `call_started` and `call_ended`,
/// which the media session reports itself. Give it to an [`crate::agent::Agent`]
/// running inside a pipeline so the call record is not written twice.
pub struct TurnsOnly(pub Arc<dyn CallObserver>);

impl CallObserver for TurnsOnly {
    fn answered_by(&self, call_sid: &str, what: &str, signal: &str) {
        self.0.answered_by(call_sid, what, signal)
    }
    fn turn(&self, call_sid: &str, turn: &TurnRecord) {
        self.0.turn(call_sid, turn)
    }
    fn turn_interrupted(&self, call_sid: &str, seq: u32, heard: &str) {
        self.0.turn_interrupted(call_sid, seq, heard)
    }
    fn tool_call(&self, call_sid: &str, record: &ToolCallRecord) {
        self.0.tool_call(call_sid, record)
    }
    fn appointment(&self, call_sid: &str, appointment: &AppointmentRecord) {
        self.0.appointment(call_sid, appointment)
    }
    fn call_started(&self, _call: &CallInfo) {}
    fn call_ended(&self, _call_sid: &str, _summary: &CallSummary) {}
}

/// Built-in tools the `openai-realtime` pipeline does not offer: keypad tones towards
/// the far end (`send_dtmf`) need ConversationRelay or our own audio (`cascade`).
pub const REALTIME_UNSUPPORTED_TOOLS: &[BuiltinTool] = &[BuiltinTool::SendDtmf];

/// Built-in tools the `elevenlabs-agent` pipeline does not offer: keypad tones, and
/// `switch_language` (the agent's voice and language are set on ElevenLabs' side).
pub const ELEVENLABS_AGENT_UNSUPPORTED_TOOLS: &[BuiltinTool] =
    &[BuiltinTool::SendDtmf, BuiltinTool::SwitchLanguage];

/// The first `played` of `generated` of a spoken text, cut at a word boundary: an
/// estimate of what the caller heard of an interrupted turn (speech is close enough
/// to uniform in time for a transcript).
pub fn heard_part(text: &str, played: Duration, generated: Duration) -> String {
    if generated.is_zero() || played >= generated {
        return text.to_string();
    }
    let chars = text.chars().count();
    let keep = (chars as f64 * played.as_secs_f64() / generated.as_secs_f64()).round() as usize;
    let cut: String = text.chars().take(keep).collect();
    if keep >= chars {
        return cut;
    }
    // Whole words only.
    match cut.rfind(char::is_whitespace) {
        Some(at) => cut[..at].trim_end().to_string(),
        None => String::new(),
    }
}

/// Longest apology audio kept (10 s of μ-law).
const MAX_APOLOGY_BYTES: usize = 80_000;
/// The most an apology may take to synthesise.
const APOLOGY_TIMEOUT: Duration = Duration::from_secs(8);

/// Speaks `text` through ElevenLabs TTS (when configured) and returns the μ-law
/// audio: the apology of a pipeline whose own voice is gone. `None` when TTS is not
/// configured, fails or takes too long. Run it in a spawned task (it takes seconds).
pub async fn apology_audio(config: Arc<Config>, text: String) -> Option<Vec<u8>> {
    use crate::speech::elevenlabs_tts::{ElevenLabsTts, TtsEvent, TtsOptions};
    if text.trim().is_empty() {
        return None;
    }
    let options = TtsOptions::from_config(&config).ok()?;
    let work = async {
        let mut tts = ElevenLabsTts::connect(&options).await.ok()?;
        tts.begin_turn().await.ok()?;
        tts.push_text(&text).await.ok()?;
        tts.end_turn().await.ok()?;
        let mut audio = Vec::new();
        loop {
            match tts.next_event().await.ok()? {
                TtsEvent::Audio { audio: b64, .. } => {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .ok()?;
                    audio.extend_from_slice(&bytes);
                    if audio.len() >= MAX_APOLOGY_BYTES {
                        audio.truncate(MAX_APOLOGY_BYTES);
                        break;
                    }
                }
                TtsEvent::TurnDone { .. } => break,
                TtsEvent::Error { message } => {
                    tracing::warn!(error = %message, "apology TTS failed");
                    return None;
                }
            }
        }
        tts.close().await;
        Some(audio)
    };
    match tokio::time::timeout(APOLOGY_TIMEOUT, work).await {
        Ok(Some(audio)) if !audio.is_empty() => Some(audio),
        _ => None,
    }
}

/// The outcome of handing one caller frame to a speech-to-speech upstream. A full
/// send queue (the upstream lags) drops the frame: it is counted in `dropped`,
/// logged thinly, and the call goes on. Any other error is returned for the
/// pipeline to treat as an upstream failure.
pub(crate) fn caller_audio_sent(
    sent: Result<(), crate::speech::SpeechError>,
    dropped: &mut u64,
    upstream: &str,
) -> Result<(), crate::speech::SpeechError> {
    match sent {
        Err(crate::speech::SpeechError::QueueFull { .. }) => {
            *dropped += 1;
            if crate::media::log_due(*dropped, 1, 250) {
                tracing::warn!(
                    dropped = *dropped,
                    upstream,
                    "the upstream lags; dropping caller audio"
                );
            }
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_upstream_queue_drops_the_frame_and_other_errors_fail() {
        use crate::speech::{Service, SpeechError};
        let mut dropped = 0;
        let full = Err(SpeechError::QueueFull {
            service: Service::OpenAiRealtime,
        });
        assert!(caller_audio_sent(full, &mut dropped, "Realtime").is_ok());
        assert!(caller_audio_sent(Ok(()), &mut dropped, "Realtime").is_ok());
        assert_eq!(dropped, 1);
        let gone = Err(SpeechError::Gone {
            service: Service::OpenAiRealtime,
        });
        assert!(matches!(
            caller_audio_sent(gone, &mut dropped, "Realtime"),
            Err(SpeechError::Gone { .. })
        ));
        assert_eq!(dropped, 1);
    }

    #[test]
    fn heard_part_cuts_on_words() {
        let text = "Olá, tudo bem com você hoje?";
        let ms = Duration::from_millis;
        assert_eq!(heard_part(text, ms(0), ms(1000)), "");
        assert_eq!(heard_part(text, ms(500), ms(1000)), "Olá, tudo bem");
        assert_eq!(heard_part(text, ms(1000), ms(1000)), text);
        assert_eq!(heard_part(text, ms(10), Duration::ZERO), text);
    }

    #[test]
    fn pipeline_choice_parameter_then_config() {
        let mut config = Config::from_vars(Default::default()).unwrap();
        let mut call = CallInfo::default();
        assert!(matches!(
            choose(&config, &call),
            Err(PipelineError::NotConfigured(_))
        ));
        config.media.pipeline = Some(MediaPipelineKind::OpenAiRealtime);
        assert_eq!(
            choose(&config, &call),
            Ok(MediaPipelineKind::OpenAiRealtime)
        );
        call.parameters.insert("pipeline".into(), "Cascade".into());
        assert_eq!(choose(&config, &call), Ok(MediaPipelineKind::Cascade));
        call.parameters.insert("pipeline".into(), "nope".into());
        assert!(choose(&config, &call).is_err());
    }
}
