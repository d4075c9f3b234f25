//! The `openai-realtime` pipeline: speech to speech through the OpenAI Realtime API
//! (GA protocol), μ-law in and out (`audio/pcmu`), so audio passes through without
//! transcoding.
//!
//! - The session is configured from the agent: instructions are the system prompt
//!   plus the call's `<Parameter>`s, the voice and language come from the
//!   configuration, and the tools are the same [`ToolRegistry`] ConversationRelay
//!   calls use (minus keypad tones, [`super::REALTIME_UNSUPPORTED_TOOLS`]). The
//!   caller is transcribed by the session's input transcription.
//! - The greeting is a `response.create` asking for the configured welcome greeting.
//! - Function calls run through the registry; results go back as
//!   `function_call_output` items followed by one `response.create`. `end_call` and
//!   `transfer_to_human` end the call once the goodbye has played (the model's own
//!   words, or the configured goodbye/handoff message when it said nothing).
//! - `switch_language` (offered when two or more languages are configured): one
//!   partial `session.update` ([`Session::language_switch`]) gives the model the
//!   call's instructions plus a line to speak the new language from now on, and
//!   transcribes the caller in it (same transcription model, ISO 639-1 code); then
//!   the tool's result and `response.create` as for any tool, so the model answers
//!   in the new language. The voice stays the same: OpenAI cannot change it once the
//!   model has spoken. Switching to the language in use changes nothing.
//! - Barge-in: on `input_audio_buffer.speech_started` while agent audio is playing,
//!   the session sends Twilio `clear` and tells us how much was heard; we send
//!   `conversation.item.truncate` with that, clamped to the audio the model
//!   generated, drop late deltas of the truncated item, and record the agent turn as
//!   interrupted with the words heard (estimated by time).
//! - Keypad digits are gathered (until `#` or `DTMF_TIMEOUT_MS`) and sent as a user
//!   message.
//! - Endings nobody asked for: at the caller's first silence the model is asked
//!   to say `STILL_THERE_MESSAGE` word for word, at the second the goodbye, and
//!   the call ends once it has played. Twilio's answering-machine detection, or
//!   the caller's first words read as a voicemail greeting, cancel the response in
//!   flight (`response.cancel` and `clear`) and have the model leave the voicemail
//!   message before the call ends; a screening assistant hears who calls and why.
//! - The upstream closing or breaking mid-call ends the call: an apology through
//!   ElevenLabs TTS when it is configured (Realtime itself is gone), then hang-up.

use crate::agent::Latency;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::bridge::{Outputs, Upstream};
use super::{
    CallEvent, CallLog, CallerAudio, Pipeline, PipelineContext, PipelineError, PipelineOutput,
    PipelineStats, REALTIME_UNSUPPORTED_TOOLS, ToolFollowUp, heard_part,
};
use crate::agent::dtmf::{DigitBuffer, sleep_until_opt};
use crate::agent::{
    AgentSettings, CallOpening, Handoff, Speaker, greeting_instructions, language_instructions,
};
use crate::llm::ToolCall;
use crate::speech::SpeechError;
use crate::speech::realtime::{
    AssistantAudio, ClientEvent, ConversationSettings, FunctionCall, Item, RealtimeClient,
    RealtimeOptions, ResponseParams, ServerEvent, Session,
};
use crate::tools::{ToolContext, ToolRegistry, ToolRun};

/// Tools running at once, at most.
const MAX_RUNNING_TOOLS: usize = 8;
/// Agent items remembered (for transcripts and truncation).
const MAX_ITEMS: usize = 8;
/// Truncated items whose late deltas are dropped.
const MAX_TRUNCATED: usize = 16;
/// How long an ending call waits for the goodbye response.
const GOODBYE_WAIT: Duration = Duration::from_secs(15);

/// An assistant item being spoken.
struct AgentItem {
    item_id: String,
    turn: u64,
    text: String,
    started_at: SystemTime,
    time_to_first_audio: Option<Duration>,
    /// Sequence number once recorded (from its first transcribed words).
    seq: Option<u32>,
    /// When its text so far was last recorded.
    recorded_at: Option<std::time::Instant>,
    /// Its complete transcript has been recorded.
    complete: bool,
    audio_done: bool,
    interrupted: bool,
}

pub struct RealtimePipeline {
    client: RealtimeClient,
    log: CallLog,
    tools: Arc<ToolRegistry>,
    tool_ctx: ToolContext,
    settings: Arc<AgentSettings>,
    /// The session as configured so far (instructions and transcription language
    /// change with `switch_language`).
    session: ConversationSettings,
    /// The call's instructions before any language switch.
    base_instructions: String,
    /// The configured language code the call speaks now (`pt-BR`).
    language: String,
    /// Control events waiting to go to Realtime; whether it is gone.
    upstream: Upstream<ClientEvent>,
    out: Outputs,
    audio: AssistantAudio,
    items: VecDeque<AgentItem>,
    truncated: VecDeque<String>,
    running: FuturesUnordered<BoxFuture<'static, ToolRun>>,
    /// Whether the response in progress produced audio.
    spoke: bool,
    digits: DigitBuffer,
    /// The call ends after the goodbye response (or at the deadline).
    ending: Option<(Handoff, Instant)>,
    /// The id of the goodbye response, once created (the first response created
    /// after we asked for it).
    goodbye_response: Option<String>,
    speech_stopped_at: Option<Instant>,
    stats: PipelineStats,
    /// Process-wide counters (turns, interrupts, upstream errors).
    metrics: Arc<crate::metrics::Metrics>,
    dropped_audio: u64,
    /// Caller turns so far (the first few are checked for a machine's words).
    caller_turns: u32,
    /// The response in progress ended its words with a goodbye (`END_ON_GOODBYE`).
    said_goodbye: bool,
}

/// Connects to Realtime and asks for the greeting.
pub async fn connect(ctx: PipelineContext) -> Result<Box<dyn Pipeline>, PipelineError> {
    let options = RealtimeOptions::from_config(&ctx.config)?;
    let tool_ctx = ToolContext::for_call(&ctx.call.call_sid, &ctx.call.from);
    let tools = ctx
        .agent
        .realtime_tools(&tool_ctx, REALTIME_UNSUPPORTED_TOOLS);
    // A per-call greeting (outbound API) replaces the configured one.
    let opening = CallOpening::new(&ctx.agent.settings, &ctx.call.parameters);
    let instructions = opening.instructions(&ctx.agent.settings);
    let greeting = opening.greeting;
    let session = ConversationSettings::from_config(&ctx.config, instructions.clone(), tools);
    let client = RealtimeClient::connect_conversation(&options, &session).await?;
    let mut pipeline = RealtimePipeline {
        client,
        log: CallLog::for_call(ctx.call.clone(), ctx.agent.observer.clone()),
        tools: ctx.agent.tools.clone(),
        tool_ctx,
        settings: ctx.agent.settings.clone(),
        session,
        base_instructions: instructions.clone(),
        language: ctx.config.relay.language.clone(),
        upstream: Upstream::new("OpenAI Realtime").apologising(
            ctx.config.clone(),
            &ctx.agent.settings.fallback_message,
            ctx.agent.metrics.clone(),
        ),
        out: Outputs::default(),
        audio: AssistantAudio::default(),
        items: VecDeque::new(),
        truncated: VecDeque::new(),
        running: FuturesUnordered::new(),
        spoke: false,
        digits: DigitBuffer::new(ctx.agent.settings.dtmf_timeout),
        ending: None,
        goodbye_response: None,
        speech_stopped_at: None,
        stats: PipelineStats::default(),
        metrics: ctx.agent.metrics.clone(),
        dropped_audio: 0,
        caller_turns: 0,
        said_goodbye: false,
    };
    let response = (!greeting.is_empty()).then(|| ResponseParams {
        instructions: Some(greeting_instructions(&instructions, &greeting)),
    });
    pipeline.queue(ClientEvent::CreateResponse { response });
    Ok(Box::new(pipeline))
}

impl RealtimePipeline {
    fn queue(&mut self, event: ClientEvent) {
        self.upstream.queue(event);
    }

    /// Sends queued control events (cancel-safe, see [`Upstream::next_to_send`]).
    async fn flush(&mut self) {
        while let Some(event) = self.upstream.next_to_send() {
            let result = self.client.send(event).await;
            if let Err(e) = self.upstream.sent(result) {
                self.upstream_failed(e);
                return;
            }
        }
    }

    fn upstream_failed(&mut self, error: SpeechError) {
        if self.upstream.failed(&error) {
            self.stats.errors += 1;
        }
    }

    fn item_mut(&mut self, item_id: &str) -> Option<&mut AgentItem> {
        self.items.iter_mut().find(|i| i.item_id == item_id)
    }

    /// The item, created on its first delta (audio or transcript).
    fn item_or_new(&mut self, item_id: &str) -> &mut AgentItem {
        if let Some(at) = self.items.iter().position(|i| i.item_id == item_id) {
            return &mut self.items[at];
        }
        if self.items.len() >= MAX_ITEMS {
            self.items.pop_front();
        }
        let turn = self.out.new_turn();
        self.stats.turns += 1;
        self.metrics.turn();
        self.items.push_back(AgentItem {
            item_id: item_id.to_string(),
            turn,
            text: String::new(),
            started_at: SystemTime::now(),
            time_to_first_audio: self.speech_stopped_at.take().map(|t| t.elapsed()),
            seq: None,
            recorded_at: None,
            complete: false,
            audio_done: false,
            interrupted: false,
        });
        self.items.back_mut().expect("just pushed")
    }

    /// Records the reply `item_id` as transcribed so far: at its first words (it
    /// takes its turn number then) and every `PROGRESS_INTERVAL` after.
    fn record_progress(&mut self, item_id: &str, now: std::time::Instant) {
        let Some(item) = self.item_mut(item_id) else {
            return;
        };
        let due = !item.complete
            && item
                .recorded_at
                .is_none_or(|at| now.duration_since(at) >= crate::agent::PROGRESS_INTERVAL);
        if !due {
            return;
        }
        let fresh = item.seq.is_none();
        let (text, started_at, ttfa) =
            (item.text.clone(), item.started_at, item.time_to_first_audio);
        let seq = match self.item_mut(item_id).and_then(|i| i.seq) {
            Some(seq) => seq,
            None => self.log.reserve(),
        };
        self.log.record(
            seq,
            Speaker::Agent,
            &text,
            started_at,
            Latency::first_out(ttfa),
            true,
        );
        if let Some(item) = self.item_mut(item_id) {
            item.recorded_at = Some(now);
            if fresh {
                item.seq = Some(seq);
            }
        }
    }

    /// Records the reply `item_id` as complete (numbering it if it had no words
    /// recorded yet); returns its number.
    fn record_final(&mut self, item_id: &str) -> Option<u32> {
        let item = self.item_mut(item_id)?;
        let (text, started_at, ttfa, seq) = (
            item.text.clone(),
            item.started_at,
            item.time_to_first_audio,
            item.seq,
        );
        let seq = seq.unwrap_or_else(|| self.log.reserve());
        self.log.record(
            seq,
            Speaker::Agent,
            &text,
            started_at,
            Latency::first_out(ttfa),
            false,
        );
        let item = self.item_mut(item_id)?;
        item.seq = Some(seq);
        item.complete = true;
        Some(seq)
    }

    fn is_truncated(&self, item_id: &str) -> bool {
        self.truncated.iter().any(|t| t == item_id)
    }

    fn on_event(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::AudioDelta { item_id, delta, .. } => {
                if self.is_truncated(&item_id) {
                    return;
                }
                let bytes = match base64::engine::general_purpose::STANDARD.decode(delta.as_bytes())
                {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an audio delta that is not base64");
                        return;
                    }
                };
                self.audio.on_delta(&item_id, &delta);
                self.spoke = true;
                let turn = self.item_or_new(&item_id).turn;
                self.out.push(PipelineOutput::Audio { turn, mulaw: bytes });
            }
            ServerEvent::AudioDone { item_id } => {
                if self.is_truncated(&item_id) {
                    return;
                }
                if let Some(item) = self.item_mut(&item_id) {
                    item.audio_done = true;
                    let turn = item.turn;
                    self.out.push(PipelineOutput::TurnDone { turn });
                }
            }
            ServerEvent::TranscriptDelta { item_id, delta } => {
                if !self.is_truncated(&item_id) {
                    self.item_or_new(&item_id).text.push_str(&delta);
                    self.record_progress(&item_id, std::time::Instant::now());
                }
            }
            ServerEvent::TranscriptDone {
                item_id,
                transcript,
            } => {
                let Some(item) = self.item_mut(&item_id) else {
                    return;
                };
                if item.interrupted || item.complete {
                    return;
                }
                let goodbye = crate::agent::endings::is_goodbye(&transcript);
                item.text = transcript;
                self.said_goodbye |= goodbye;
                self.record_final(&item_id);
            }
            ServerEvent::InputTranscriptCompleted { transcript, .. } => {
                let text = transcript.trim();
                if !text.is_empty() {
                    tracing::debug!(chars = text.len(), "caller spoke");
                    self.out.push(PipelineOutput::CallerActive);
                    self.log
                        .turn(Speaker::Caller, text, SystemTime::now(), Latency::default());
                    self.check_machine(&transcript);
                }
            }
            ServerEvent::InputTranscriptFailed { message, .. } => {
                tracing::warn!(error = %message, "the caller's speech could not be transcribed");
            }
            ServerEvent::SpeechStarted { .. } => {
                self.out.push(PipelineOutput::CallerActive);
                if self.audio.item_id().is_some() {
                    tracing::debug!("barge-in: the caller speaks over the agent");
                    self.stats.interrupts += 1;
                    self.metrics.interrupt();
                    self.out.push(PipelineOutput::Clear);
                }
            }
            ServerEvent::SpeechStopped { .. } => {
                self.out.push(PipelineOutput::CallerActive);
                self.speech_stopped_at = Some(Instant::now());
            }
            ServerEvent::ResponseCreated { response_id } => {
                self.spoke = false;
                self.said_goodbye = false;
                if self.ending.is_some() && self.goodbye_response.is_none() {
                    self.goodbye_response = Some(response_id);
                }
            }
            ServerEvent::FunctionCallDone(call) => self.start_tool(call),
            ServerEvent::ResponseDone {
                response_id,
                status,
                reason,
                function_calls,
            } => {
                let called_tools = !function_calls.is_empty();
                for call in function_calls {
                    self.start_tool(call);
                }
                // A goodbye the model said without `end_call` ends the call too,
                // once it has played.
                if std::mem::take(&mut self.said_goodbye)
                    && self.settings.end_on_goodbye
                    && !called_tools
                    && self.running.is_empty()
                    && self.ending.is_none()
                    && status == "completed"
                {
                    tracing::info!("the model said goodbye without end_call; ending the call");
                    self.end(Handoff {
                        reason_code: crate::agent::REASON_GOODBYE.into(),
                        reason: Some("the agent said goodbye".into()),
                        ..Handoff::default()
                    });
                    return;
                }
                if status == "failed" {
                    self.stats.errors += 1;
                    tracing::warn!(
                        reason = reason.as_deref().unwrap_or(""),
                        "a Realtime response failed"
                    );
                }
                // The goodbye was said: the call can end once it has played.
                if self.goodbye_response.as_deref() == Some(response_id.as_str())
                    && let Some((handoff, _)) = self.ending.take()
                {
                    self.end(handoff);
                }
            }
            ServerEvent::Error { .. } => {
                // Logged by the client; most errors leave the session usable.
                self.stats.errors += 1;
            }
            ServerEvent::SessionCreated { .. }
            | ServerEvent::SessionUpdated { .. }
            | ServerEvent::InputTranscriptDelta { .. }
            | ServerEvent::ItemTruncated { .. }
            | ServerEvent::Dtmf { .. }
            | ServerEvent::Unknown { .. } => {}
        }
    }

    fn start_tool(&mut self, call: FunctionCall) {
        tracing::info!(tool = %call.name, "the model calls a tool");
        self.stats.tool_calls += 1;
        if self.running.len() >= MAX_RUNNING_TOOLS {
            tracing::warn!(tool = %call.name, "too many tools running; refusing this call");
            self.queue(ClientEvent::CreateItem {
                item: Item::FunctionCallOutput {
                    call_id: call.call_id,
                    output: serde_json::json!({"error": "too many tools running"}).to_string(),
                },
            });
            return;
        }
        let ctx = ToolContext {
            now: SystemTime::now(),
            ..self.tool_ctx.clone()
        };
        self.running.push(self.tools.run(
            ToolCall {
                id: call.call_id,
                name: call.name,
                arguments: call.arguments,
            },
            &ctx,
        ));
    }

    fn on_tool_done(&mut self, run: ToolRun) {
        let handoff = match self.log.tool_run(&run) {
            Some(ToolFollowUp::End(handoff)) => Some(handoff),
            Some(ToolFollowUp::SwitchLanguage(code)) => {
                // Before the result, so that the model answers in the new language.
                self.switch_language(code);
                None
            }
            // Never offered (REALTIME_UNSUPPORTED_TOOLS).
            Some(ToolFollowUp::SendDigits(_)) => {
                tracing::warn!(tool = %run.call.name, "this tool's action is not available in this media pipeline");
                None
            }
            None => None,
        };
        self.queue(ClientEvent::CreateItem {
            item: Item::FunctionCallOutput {
                call_id: run.call.id.clone(),
                output: run.content(),
            },
        });
        if let Some(handoff) = handoff {
            if self.ending.is_some() {
                tracing::warn!("the model ended the call twice; keeping the first");
            } else if self.spoke {
                // The model already said goodbye in this response.
                self.end(handoff);
                return;
            } else {
                let words = if handoff.is_live_agent() {
                    self.settings.handoff_message.clone()
                } else {
                    self.settings.goodbye_message.clone()
                };
                self.say(&words, Some(handoff));
                return;
            }
        }
        if self.running.is_empty() && self.ending.is_none() {
            self.queue(ClientEvent::CreateResponse { response: None });
        }
    }

    /// Has the model say `words` as they are; with `end`, the call ends once they
    /// have played (or at [`GOODBYE_WAIT`]).
    fn say(&mut self, words: &str, end: Option<Handoff>) {
        let instructions = crate::agent::prompt::verbatim_instructions(words);
        self.queue(ClientEvent::CreateResponse {
            response: Some(ResponseParams {
                instructions: Some(instructions),
            }),
        });
        if let Some(handoff) = end {
            self.goodbye_response = None;
            self.ending = Some((handoff, Instant::now() + GOODBYE_WAIT));
        }
    }

    /// Stops what the model is saying: the response in flight is cancelled and
    /// Twilio's buffer cleared (the session answers with `Cleared`, which
    /// truncates the item to what was heard).
    fn stop_speaking(&mut self) {
        self.queue(ClientEvent::CancelResponse { response_id: None });
        if self.audio.item_id().is_some() {
            self.out.push(PipelineOutput::Clear);
        }
    }

    /// The caller's first words, read for a voicemail greeting or a screening
    /// assistant (the model is not asked to answer a machine).
    fn check_machine(&mut self, words: &str) {
        use crate::agent::screening::{Answered, CHECKED_TURNS, classify};
        self.caller_turns += 1;
        if self.caller_turns > CHECKED_TURNS || self.ending.is_some() {
            return;
        }
        match classify(words) {
            Some(Answered::Voicemail) => self.voicemail("transcript"),
            Some(Answered::ScreeningAssistant) => {
                tracing::info!("a call-screening assistant answered; introducing the call");
                self.log.answered_by("screening", "transcript");
                self.stop_speaking();
                let words = self.filled(&self.settings.screening_message.clone());
                self.say(&words, None);
            }
            None => {}
        }
    }

    /// A voicemail answered (`signal`: `amd` or `transcript`): leave the message
    /// and end.
    fn voicemail(&mut self, signal: &str) {
        if self.ending.is_some() || self.out.is_finished() {
            return;
        }
        tracing::info!(signal, "a voicemail answered; leaving the message");
        if signal != "amd" {
            self.log.answered_by("voicemail", signal);
        }
        self.stop_speaking();
        let words = self.filled(&self.settings.voicemail_message.clone());
        self.say(
            &words,
            Some(Handoff {
                reason_code: crate::agent::REASON_VOICEMAIL.into(),
                reason: Some(format!("voicemail detected by {signal}")),
                ..Handoff::default()
            }),
        );
    }

    /// The caller is silent: ask once, then say goodbye and end.
    fn silence(&mut self, goodbye: bool) {
        if self.ending.is_some() {
            return;
        }
        if goodbye {
            let words = self.settings.goodbye_message.clone();
            self.say(
                &words,
                Some(Handoff {
                    reason_code: crate::agent::REASON_SILENCE.into(),
                    reason: Some("the caller stayed silent".into()),
                    ..Handoff::default()
                }),
            );
        } else {
            let words = self.settings.still_there_message.clone();
            self.say(&words, None);
        }
    }

    /// A message with the call's parameters and the agent's name filled in.
    fn filled(&self, template: &str) -> String {
        let parameters = self
            .log
            .call()
            .map(|c| c.parameters.clone())
            .unwrap_or_default();
        crate::agent::screening::fill(template, &self.settings.agent_name, &parameters)
    }

    /// Moves the session to the configured language `code` (see the module docs).
    fn switch_language(&mut self, code: String) {
        if code.eq_ignore_ascii_case(&self.language) {
            tracing::debug!(language = %code, "already speaking this language");
            return;
        }
        // The configuration has codes only (no display names): the model knows them.
        tracing::info!(language = %code, from = %self.language, "switching language");
        self.session.instructions = language_instructions(&self.base_instructions, &code);
        self.session.language = Some(crate::speech::language_code(&code));
        self.queue(ClientEvent::SessionUpdate {
            session: Box::new(Session::language_switch(&self.session)),
        });
        self.language = code;
    }

    fn end(&mut self, handoff: Handoff) {
        self.out.push(PipelineOutput::End(handoff));
        self.ending = None;
    }

    fn on_cleared(&mut self, turn: Option<u64>, played: Duration) {
        let generated_ms = self.audio.generated_ms();
        let Some(item_id) = self.audio.item_id().map(str::to_string) else {
            return;
        };
        let item_turn = self.item_mut(&item_id).map(|i| i.turn);
        // What was played belongs to this item only if the session was playing it.
        let played = if turn.is_some() && turn == item_turn {
            played
        } else {
            Duration::ZERO
        };
        let Some(truncate) = self.audio.truncate(played.as_millis() as u64) else {
            return;
        };
        if self.truncated.len() >= MAX_TRUNCATED {
            self.truncated.pop_front();
        }
        self.truncated.push_back(item_id.clone());
        if let ClientEvent::TruncateItem { audio_end_ms, .. } = &truncate {
            tracing::debug!(
                audio_end_ms,
                generated_ms,
                "truncating the interrupted item"
            );
        }
        self.queue(truncate);
        let Some(item) = self.item_mut(&item_id) else {
            return;
        };
        item.interrupted = true;
        let heard = heard_part(
            &item.text,
            played,
            Duration::from_millis(generated_ms.max(1)),
        );
        let complete = item.complete;
        let seq = match (item.seq, complete) {
            (Some(seq), true) => Some(seq),
            _ => self.record_final(&item_id),
        };
        if let Some(seq) = seq {
            self.log.interrupted(seq, &heard);
        }
    }

    /// Hands a complete keypad entry to the upstream.
    fn digits_entered(&mut self, digits: String) {
        tracing::info!(digits = digits.len(), "keypad digits to the model");
        self.queue(ClientEvent::CreateItem {
            item: Item::user_text(format!("[keypad] {digits}")),
        });
        self.queue(ClientEvent::CreateResponse { response: None });
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
            let ending_due = self.ending.as_ref().map(|(_, at)| *at);
            tokio::select! {
                event = self.client.next_event() => match event {
                    Ok(event) => self.on_event(event),
                    Err(e) => self.upstream_failed(e),
                },
                Some(run) = self.running.next(), if !self.running.is_empty() => self.on_tool_done(run),
                () = sleep_until_opt(digits_due) => {
                    if let Some(entry) = self.digits.take() {
                        self.digits_entered(entry);
                    }
                }
                () = sleep_until_opt(ending_due) => {
                    if let Some((handoff, _)) = self.ending.take() {
                        tracing::info!("no goodbye from the model in time; ending the call");
                        self.end(handoff);
                    }
                }
            }
        }
    }
}

impl Pipeline for RealtimePipeline {
    fn name(&self) -> &'static str {
        "openai-realtime"
    }

    fn caller_audio(&mut self, audio: CallerAudio<'_>) {
        if self.upstream.is_dead() || self.out.is_finished() {
            return;
        }
        let sent = self.client.append_audio(audio.payload_b64);
        if let Err(e) = super::caller_audio_sent(sent, &mut self.dropped_audio, "Realtime") {
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
                CallEvent::PlayedOut { turn } => {
                    let current = self
                        .audio
                        .item_id()
                        .and_then(|id| self.items.iter().find(|i| i.item_id == id));
                    if current.is_some_and(|i| i.turn == turn && i.audio_done) {
                        self.audio.reset();
                    }
                }
                CallEvent::Played { .. } => {}
                CallEvent::Silence { goodbye } => self.silence(goodbye),
                CallEvent::Voicemail => self.voicemail("amd"),
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
            this.client.close().await;
            this.stats
        })
    }
}
