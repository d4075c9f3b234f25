//! The `elevenlabs-agent` pipeline: a bridge to an ElevenLabs Conversational AI agent
//! (`ELEVENLABS_AGENT_ID`) over its WebSocket, μ-law 8 kHz both ways (the agent must
//! be set to `ulaw_8000` input and output; a call to an agent that is not ends with
//! a clear log line instead of noise).
//!
//! - The call's SID, the caller's number and the `<Parameter>`s go to the agent as
//!   dynamic variables (`call_sid`, `caller_number`, and each parameter by name).
//! - Pings are answered by the client; `interruption` becomes Twilio `clear`.
//! - The caller's and the agent's transcripts go to the observer; an agent turn cut
//!   by an interruption is recorded with the part heard (ElevenLabs' own correction
//!   when it sends one, else an estimate from the audio played).
//! - Client tool calls whose name matches a tool of the registry run through it
//!   (results back as `client_tool_result`); others, and the tools this bridge cannot
//!   carry out ([`super::ELEVENLABS_AGENT_UNSUPPORTED_TOOLS`]: keypad tones, language
//!   switches), get an error result. `end_call` and `transfer_to_human` end the call
//!   once the agent stops talking.
//! - Keypad digits go to the agent as a contextual update.
//! - Upstream failure: an apology through ElevenLabs TTS when configured, then
//!   hang-up.

use crate::agent::Latency;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::bridge::{Outputs, Upstream};
use super::{
    CallEvent, CallLog, CallerAudio, ELEVENLABS_AGENT_UNSUPPORTED_TOOLS, Pipeline, PipelineContext,
    PipelineError, PipelineOutput, PipelineStats, ToolFollowUp, heard_part,
};
use crate::agent::dtmf::{DigitBuffer, sleep_until_opt};
use crate::agent::{CallOpening, GREETING_PARAMETER, Handoff, Speaker};
use crate::audio::frame::{MULAW_RATE, duration_of};
use crate::config::BuiltinTool;
use crate::llm::ToolCall;
use crate::speech::SpeechError;
use crate::speech::elevenlabs_agent::{
    AgentEvent, AgentOptions, ConversationInit, ElevenLabsAgent, formats_fit_twilio,
};
use crate::tools::{ToolContext, ToolRegistry, ToolRun};

const MAX_RUNNING_TOOLS: usize = 8;
/// After a tool ended the call: end once the agent has been silent this long...
const END_AFTER_SILENCE: Duration = Duration::from_millis(1500);
/// ...or at the latest this long after the tool.
const END_MAX_WAIT: Duration = Duration::from_secs(15);
/// The agent's turn is over after this long without audio.
const TURN_QUIET: Duration = Duration::from_millis(400);

enum Outgoing {
    ToolResult {
        id: String,
        result: String,
        is_error: bool,
    },
    Context(String),
}

/// The agent's current spoken turn.
struct Speaking {
    turn: u64,
    text: String,
    seq: Option<u32>,
    bytes: u64,
    /// `TurnDone` was sent (the agent went quiet).
    done: bool,
}

pub struct ElevenLabsPipeline {
    agent: ElevenLabsAgent,
    log: CallLog,
    tools: Arc<ToolRegistry>,
    tool_ctx: ToolContext,
    /// Messages waiting to go to the agent; whether it is gone.
    upstream: Upstream<Outgoing>,
    out: Outputs,
    speaking: Option<Speaking>,
    /// The next audio starts a new turn (a new response began).
    new_turn: bool,
    last_agent_seq: Option<u32>,
    running: FuturesUnordered<BoxFuture<'static, ToolRun>>,
    digits: DigitBuffer,
    ending: Option<(Handoff, Instant)>,
    last_audio_at: Instant,
    stats: PipelineStats,
    /// Process-wide counters (turns, interrupts, upstream errors).
    metrics: Arc<crate::metrics::Metrics>,
    dropped_audio: u64,
    /// Caller turns so far (the first few are checked for a machine's words).
    caller_turns: u32,
    /// A voicemail answered: the call is ending.
    machine: bool,
}

pub async fn connect(ctx: PipelineContext) -> Result<Box<dyn Pipeline>, PipelineError> {
    let options = AgentOptions::from_config(&ctx.config)?;
    let opening = CallOpening::new(&ctx.agent.settings, &ctx.call.parameters);
    let mut variables: BTreeMap<String, String> = opening.call_data.into_iter().collect();
    variables.insert("call_sid".into(), ctx.call.call_sid.clone());
    variables.insert("caller_number".into(), ctx.call.from.clone());
    // A per-call greeting (outbound API) as the agent's first message; ElevenLabs
    // applies it only when the agent allows overriding `first_message`.
    let conversation_config_override = ctx
        .call
        .parameters
        .get(GREETING_PARAMETER)
        .map(|greeting| serde_json::json!({"agent": {"first_message": greeting}}));
    let init = ConversationInit {
        dynamic_variables: variables,
        conversation_config_override,
    };
    let agent = ElevenLabsAgent::connect(&options, &init).await?;
    Ok(Box::new(ElevenLabsPipeline {
        agent,
        log: CallLog::for_call(ctx.call.clone(), ctx.agent.observer.clone()),
        tools: ctx.agent.tools.clone(),
        tool_ctx: ToolContext::for_call(&ctx.call.call_sid, &ctx.call.from),
        upstream: Upstream::new("the ElevenLabs agent").apologising(
            ctx.config.clone(),
            &ctx.agent.settings.fallback_message,
            ctx.agent.metrics.clone(),
        ),
        out: Outputs::default(),
        speaking: None,
        new_turn: true,
        last_agent_seq: None,
        running: FuturesUnordered::new(),
        digits: DigitBuffer::new(ctx.agent.settings.dtmf_timeout),
        ending: None,
        last_audio_at: Instant::now(),
        stats: PipelineStats::default(),
        metrics: ctx.agent.metrics.clone(),
        dropped_audio: 0,
        caller_turns: 0,
        machine: false,
    }))
}

impl ElevenLabsPipeline {
    fn queue(&mut self, message: Outgoing) {
        self.upstream.queue(message);
    }

    /// Sends queued messages (cancel-safe, see [`Upstream::next_to_send`]).
    async fn flush(&mut self) {
        while let Some(message) = self.upstream.next_to_send() {
            let result = match message {
                Outgoing::ToolResult {
                    id,
                    result,
                    is_error,
                } => self.agent.send_tool_result(id, result, *is_error).await,
                Outgoing::Context(text) => self.agent.send_contextual_update(text).await,
            };
            if let Err(e) = self.upstream.sent(result) {
                self.upstream_failed(e);
                return;
            }
        }
    }

    /// A voicemail answered: the ElevenLabs agent cannot leave our message (it
    /// speaks its own words), so what is playing stops and the call ends.
    fn machine_answered(&mut self, why: &str) {
        if self.out.is_finished() || self.machine {
            return;
        }
        self.machine = true;
        tracing::info!(why, "a voicemail answered; ending the ElevenLabs call");
        if self.speaking.is_some() {
            self.out.push(PipelineOutput::Clear);
        }
        self.out.push(PipelineOutput::End(Handoff {
            reason_code: crate::agent::REASON_VOICEMAIL.into(),
            reason: Some(why.to_string()),
            ..Handoff::default()
        }));
    }

    fn upstream_failed(&mut self, error: SpeechError) {
        if self.upstream.failed(&error) {
            self.stats.errors += 1;
        }
    }

    fn on_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::Metadata { .. } => {
                if !formats_fit_twilio(&event) {
                    // Logged by the client in detail.
                    self.out.push(PipelineOutput::Failed(
                        "the ElevenLabs agent does not use ulaw_8000".into(),
                    ));
                }
            }
            AgentEvent::Audio { audio, .. } => {
                let bytes = match base64::engine::general_purpose::STANDARD.decode(audio.as_bytes())
                {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping agent audio that is not base64");
                        return;
                    }
                };
                self.last_audio_at = Instant::now();
                if self.new_turn || self.speaking.as_ref().is_none_or(|s| s.done) {
                    self.start_turn();
                }
                let Some(speaking) = self.speaking.as_mut() else {
                    return;
                };
                speaking.bytes += bytes.len() as u64;
                self.out.push(PipelineOutput::Audio {
                    turn: speaking.turn,
                    mulaw: bytes,
                });
            }
            AgentEvent::Interruption { .. } => {
                self.out.push(PipelineOutput::CallerActive);
                if self.speaking.is_some() {
                    tracing::debug!("barge-in: the agent was interrupted");
                    self.stats.interrupts += 1;
                    self.metrics.interrupt();
                    self.out.push(PipelineOutput::Clear);
                }
                self.new_turn = true;
            }
            AgentEvent::AgentResponse { text } => {
                self.new_turn = true;
                let seq =
                    self.log
                        .turn(Speaker::Agent, &text, SystemTime::now(), Latency::default());
                self.last_agent_seq = Some(seq);
                // The audio following belongs to this response.
                self.start_turn();
                if let Some(speaking) = self.speaking.as_mut() {
                    speaking.text = text;
                    speaking.seq = Some(seq);
                }
                self.new_turn = false;
            }
            AgentEvent::AgentResponseCorrection { corrected, .. } => {
                if let Some(seq) = self.last_agent_seq {
                    self.log.interrupted(seq, &corrected);
                }
            }
            AgentEvent::UserTranscript { text } => {
                let text = text.trim();
                if !text.is_empty() {
                    self.out.push(PipelineOutput::CallerActive);
                    self.log
                        .turn(Speaker::Caller, text, SystemTime::now(), Latency::default());
                    self.caller_turns += 1;
                    if self.caller_turns <= crate::agent::screening::CHECKED_TURNS {
                        match crate::agent::screening::classify(text) {
                            Some(crate::agent::screening::Answered::Voicemail) => {
                                self.log.answered_by("voicemail", "transcript");
                                self.machine_answered("voicemail detected by transcript");
                            }
                            Some(crate::agent::screening::Answered::ScreeningAssistant) => {
                                // The ElevenLabs agent answers it in its own words.
                                self.log.answered_by("screening", "transcript");
                            }
                            None => {}
                        }
                    }
                }
            }
            AgentEvent::ClientToolCall {
                tool_call_id,
                tool_name,
                parameters,
            } => self.start_tool(tool_call_id, tool_name, parameters),
            AgentEvent::Unknown { .. } => {}
        }
    }

    /// Closes the current turn (its last partial frame can go) and opens the next.
    fn start_turn(&mut self) {
        if let Some(old) = self.speaking.take().filter(|s| !s.done) {
            self.out.push(PipelineOutput::TurnDone { turn: old.turn });
        }
        let turn = self.out.new_turn();
        self.stats.turns += 1;
        self.metrics.turn();
        self.speaking = Some(Speaking {
            turn,
            text: String::new(),
            seq: None,
            bytes: 0,
            done: false,
        });
        self.new_turn = false;
    }

    fn start_tool(&mut self, id: String, name: String, parameters: serde_json::Value) {
        tracing::info!(tool = %name, "the ElevenLabs agent calls a client tool");
        self.stats.tool_calls += 1;
        let known = self.tools.names().contains(&name)
            && !BuiltinTool::listed(ELEVENLABS_AGENT_UNSUPPORTED_TOOLS, &name);
        if !known || self.running.len() >= MAX_RUNNING_TOOLS {
            let error = if known {
                "too many tools running".to_string()
            } else {
                format!("unknown tool {name:?}")
            };
            tracing::warn!(tool = %name, error = %error, "refusing a client tool call");
            self.queue(Outgoing::ToolResult {
                id,
                result: serde_json::json!({ "error": error }).to_string(),
                is_error: true,
            });
            return;
        }
        let arguments = match parameters {
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let ctx = ToolContext {
            now: SystemTime::now(),
            ..self.tool_ctx.clone()
        };
        self.running.push(self.tools.run(
            ToolCall {
                id,
                name,
                arguments,
            },
            &ctx,
        ));
    }

    fn on_tool_done(&mut self, run: ToolRun) {
        let follow_up = self.log.tool_run(&run);
        self.queue(Outgoing::ToolResult {
            id: run.call.id.clone(),
            result: run.content(),
            is_error: run.result.is_err(),
        });
        let handoff = match follow_up {
            Some(ToolFollowUp::End(handoff)) => Some(handoff),
            // Never offered (ELEVENLABS_AGENT_UNSUPPORTED_TOOLS).
            Some(ToolFollowUp::SwitchLanguage(_) | ToolFollowUp::SendDigits(_)) => {
                tracing::warn!(tool = %run.call.name, "this tool's action is not available in this media pipeline");
                None
            }
            None => None,
        };
        if let Some(handoff) = handoff
            && self.ending.is_none()
        {
            self.ending = Some((handoff, Instant::now() + END_MAX_WAIT));
            // Count silence from now: the agent usually says goodbye next.
            self.last_audio_at = Instant::now();
        }
    }

    fn on_cleared(&mut self, turn: Option<u64>, played: Duration) {
        let Some(speaking) = self.speaking.take() else {
            return;
        };
        let played = if turn == Some(speaking.turn) {
            played
        } else {
            Duration::ZERO
        };
        let generated = duration_of(speaking.bytes as usize, MULAW_RATE);
        if let Some(seq) = speaking.seq {
            self.log
                .interrupted(seq, &heard_part(&speaking.text, played, generated));
        }
    }

    /// Hands a complete keypad entry to the upstream.
    fn digits_entered(&mut self, digits: String) {
        tracing::info!(digits = digits.len(), "keypad digits to the agent");
        self.queue(Outgoing::Context(format!(
            "The caller pressed these keys on the keypad: {digits}"
        )));
    }

    async fn next(&mut self) -> PipelineOutput {
        loop {
            if let Some(output) = self.out.next_queued().await {
                return output;
            }
            self.flush().await;
            if self.upstream.is_dead() {
                self.upstream.say_last(&mut self.out).await;
                continue;
            }
            let digits_due = self.digits.due();
            let quiet_due = self
                .speaking
                .as_ref()
                .filter(|s| !s.done && s.bytes > 0)
                .map(|_| self.last_audio_at + TURN_QUIET);
            let end_due = self
                .ending
                .as_ref()
                .map(|(_, max)| (self.last_audio_at + END_AFTER_SILENCE).min(*max));
            tokio::select! {
                event = self.agent.next_event() => match event {
                    Ok(event) => self.on_event(event),
                    Err(e) => self.upstream_failed(e),
                },
                Some(run) = self.running.next(), if !self.running.is_empty() => self.on_tool_done(run),
                () = sleep_until_opt(digits_due) => {
                    if let Some(entry) = self.digits.take() {
                        self.digits_entered(entry);
                    }
                }
                () = sleep_until_opt(quiet_due) => {
                    // The agent went quiet: let the turn's last partial frame go.
                    if let Some(speaking) = self.speaking.as_mut() {
                        speaking.done = true;
                        let turn = speaking.turn;
                        self.out.push(PipelineOutput::TurnDone { turn });
                    }
                }
                () = sleep_until_opt(end_due) => {
                    let now = Instant::now();
                    let ready = self.ending.as_ref().is_some_and(|(_, max)| {
                        now >= *max || now >= self.last_audio_at + END_AFTER_SILENCE
                    });
                    if ready && let Some((handoff, _)) = self.ending.take() {
                        if let Some(speaking) = self.speaking.take().filter(|s| !s.done) {
                            self.out.push(PipelineOutput::TurnDone { turn: speaking.turn });
                        }
                        self.out.push(PipelineOutput::End(handoff));
                    }
                }
            }
        }
    }
}

impl Pipeline for ElevenLabsPipeline {
    fn name(&self) -> &'static str {
        "elevenlabs-agent"
    }

    fn caller_audio(&mut self, audio: CallerAudio<'_>) {
        if self.upstream.is_dead() || self.out.is_finished() {
            return;
        }
        let sent = self.agent.send_audio(audio.payload_b64);
        if let Err(e) = super::caller_audio_sent(sent, &mut self.dropped_audio, "ElevenLabs agent")
        {
            self.upstream_failed(e);
        }
    }

    fn handle(&mut self, event: CallEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match event {
                CallEvent::Dtmf(digit) => {
                    if let Some(entry) = self.digits.push(digit) {
                        self.digits_entered(entry);
                    }
                }
                CallEvent::Cleared { turn, played } => self.on_cleared(turn, played),
                CallEvent::PlayedOut { .. } | CallEvent::Played { .. } => {}
                // The ElevenLabs agent speaks its own words, not ours: the first
                // silence is its own to handle (its turn timeout), the second ends.
                CallEvent::Silence { goodbye: false } => {
                    tracing::debug!("the caller is silent; the ElevenLabs agent handles it");
                }
                CallEvent::Silence { goodbye: true } => {
                    self.out.push(PipelineOutput::End(Handoff {
                        reason_code: crate::agent::REASON_SILENCE.into(),
                        reason: Some("the caller stayed silent".into()),
                        ..Handoff::default()
                    }));
                }
                CallEvent::Voicemail => self.machine_answered("voicemail detected by amd"),
            }
            self.flush().await;
        })
    }

    fn next_output(&mut self) -> BoxFuture<'_, PipelineOutput> {
        Box::pin(self.next())
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, PipelineStats> {
        Box::pin(async move {
            let mut this = *self;
            this.upstream.abandon();
            this.agent.close().await;
            this.stats
        })
    }
}
