//! The `cascade` pipeline: the caller's speech → a realtime transcriber (OpenAI
//! Realtime transcription or ElevenLabs Scribe, [`stt`]) → the same
//! [`Agent`] and LLM as ConversationRelay mode (history, tools, DTMF, fallback) →
//! ElevenLabs streaming TTS (`ulaw_8000`, one context per reply) → Twilio.
//!
//! One task per call owns the agent and both upstream sockets and runs a single
//! `select!` loop over: messages from the session (caller audio, DTMF, marks, the
//! answer to a `clear`), the transcriber, the TTS, the agent's outputs and two
//! timers. The [`Pipeline`] handle the session holds only talks to that task through
//! bounded channels, so its `next_output` is trivially cancel-safe and nothing the
//! task does is ever cut in half by the session's `select!`.
//!
//! **Turn-taking.** A final transcript (OpenAI `…transcription.completed`, Scribe
//! `committed_transcript`) is the caller's turn: it goes to the agent as
//! [`AgentInput::UserText`]. While the agent is speaking (a reply is being generated,
//! or its audio has not finished playing), the first sign of the caller talking —
//! OpenAI's `speech_started`, or a partial transcript with words — is a barge-in:
//! the TTS context is closed (late audio dropped), the session is told to `clear`,
//! and once it answers with how much of the playing turn was heard, the agent gets
//! [`AgentInput::Interrupt`] with the words played so far ([`heard`] explains the
//! estimate), which drops the LLM stream and cuts the history to what was heard.
//!
//! **Language switches.** When the agent switches language (`switch_language`), the
//! words said so far are flushed in the old voice; the TTS moves to the voice the
//! agent file gives that language (`[[languages]] voice`, else the call's
//! `TTS_VOICE`) and its language code, and the transcriber is told the new language
//! (OpenAI: `session.update` on the same socket; Scribe: a new socket). Voice, model
//! and language are fixed per ElevenLabs socket, so the new one connects in the
//! background while the old one finishes the audio it owes; the agent's next words
//! wait for the swap (at most [`TTS_SWITCH_WAIT`]). A new Scribe socket is swapped
//! in between the caller's utterances (at most [`STT_SWITCH_WAIT`] later). A socket
//! that cannot be opened leaves the old voice or transcriber in place.
//!
//! **Failures.** The LLM's failures are the agent's (it speaks the fallback and the
//! call goes on). When the transcriber fails, the fallback message is spoken through
//! the TTS and the call ends. When the TTS fails, it is reconnected once to speak the
//! fallback, and the call ends (at once if that fails too). The greeting, replies and
//! apology are awaited (their audio must be generated) for a bounded time before the
//! session is told to end, so a silent upstream never holds the call.

mod heard;
mod stt;
mod turns;
mod voice;

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

pub use heard::Spoken;
pub use stt::{Heard, Stt};
use voice::{Replacement, replacement_connected};

use super::{
    CallEvent, CallerAudio, Pipeline, PipelineContext, PipelineError, PipelineOutput,
    PipelineStats, TurnsOnly,
};
use crate::agent::dtmf::sleep_until_opt;
use crate::agent::{
    Agent, AgentInput, AgentOutput, AgentSettings, CallInfo, CallOpening, GREETING_PARAMETER,
    is_call_data,
};
use crate::audio::dtmf;
use crate::config::{Config, LanguageConfig};
use crate::metrics::Metrics;
use crate::speech::SpeechError;
use crate::speech::elevenlabs_tts::{ElevenLabsTts, TtsEvent, TtsOptions, TurnId};
use crate::text::base64::{Base64, Base64Str, ENGINE as BASE64};

/// Caller frames waiting for the task (about 2.5 s); more are dropped.
const INBOX: usize = 128;
/// Outputs waiting for the session.
const OUTBOX: usize = 32;
/// Agent audio held for a session that does not keep up (2 minutes); more is dropped.
const MAX_HELD_AUDIO: usize = 8 * 120_000;
/// How long the session may take to answer a `clear`.
const CLEAR_WAIT: Duration = Duration::from_secs(1);
/// How long the last words (a goodbye, an apology) may take to be generated before
/// the session is told to end anyway.
const END_WAIT: Duration = Duration::from_secs(15);
/// How long closing may take before the task is abandoned.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Turn numbers of keypad tones (never confused with TTS turns).
const TONE_TURNS: u64 = 1 << 62;
/// After a language switch, the longest the agent's next words wait for the new
/// voice's socket (and the old one's last audio) before going on in the old voice.
pub const TTS_SWITCH_WAIT: Duration = Duration::from_secs(5);
/// After a language switch, the longest a new transcriber socket waits for the
/// caller to finish an utterance before it is swapped in anyway.
pub const STT_SWITCH_WAIT: Duration = Duration::from_secs(15);

/// Connects the transcriber and the TTS for this call and starts its task. A
/// missing setting is an error; a transcriber that cannot be reached while the TTS
/// can makes a pipeline that apologises and ends the call; a TTS that cannot be
/// reached is an error (nothing could be said).
pub async fn connect(ctx: PipelineContext) -> Result<Box<dyn Pipeline>, PipelineError> {
    let not_configured = |e: SpeechError| match e {
        SpeechError::NotConfigured { .. } => PipelineError::NotConfigured(e.to_string()),
        other => PipelineError::Upstream(other),
    };
    let tts_options = TtsOptions::from_config(&ctx.config).map_err(not_configured)?;
    stt::check_config(&ctx.config).map_err(not_configured)?;
    let (tts, stt) = tokio::join!(
        ElevenLabsTts::connect(&tts_options),
        Stt::connect(&ctx.config, &ctx.config.relay.language)
    );
    let tts = match tts {
        Ok(tts) => tts,
        Err(e) => {
            if let Ok(stt) = stt {
                stt.close().await;
            }
            return Err(PipelineError::Upstream(e));
        }
    };
    let stt = match stt {
        Ok(stt) => Some(stt),
        Err(e) => {
            tracing::warn!(error = %e, "the transcriber could not be reached; apologising and ending the call");
            None
        }
    };
    tracing::info!(
        stt = ?ctx.config.speech.cascade_stt,
        transcriber_up = stt.is_some(),
        "cascade pipeline connected"
    );
    let agent = ctx
        .agent
        .agent_with(Arc::new(TurnsOnly(ctx.agent.observer.clone())));
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
    let (out_tx, out_rx) = mpsc::channel(OUTBOX);
    let task = Task {
        agent,
        metrics: ctx.agent.metrics.clone(),
        settings: ctx.agent.settings.clone(),
        stt,
        tts: Some(tts),
        base_tts: tts_options.clone(),
        tts_options,
        config: ctx.config.clone(),
        language: ctx.config.relay.language.clone(),
        voice_switch: None,
        stt_switch: None,
        caller_talking: false,
        tts_generation: 0,
        tts_reconnected: false,
        spoken: Spoken::new(),
        unplayed: BTreeSet::new(),
        generating: BTreeSet::new(),
        agent_turn: None,
        newest_turn: None,
        clearing: None,
        after_clear: Vec::new(),
        last_played: None,
        ending: None,
        done: false,
        outbox: VecDeque::new(),
        held_audio: 0,
        out: out_tx,
        errors: 0,
        dropped_frames: 0,
        tones: 0,
        failing: false,
    };
    let call = ctx.call.clone();
    let handle = tokio::spawn(task.run(call, inbox_rx).in_current_span());
    Ok(Box::new(Cascade {
        inbox: Some(inbox_tx),
        outputs: out_rx,
        task: Some(handle),
        finished: false,
        dropped_frames: 0,
    }))
}

/// What the session sends the task.
enum Inbound {
    Audio(Base64),
    Event(CallEvent),
}

/// The session's handle on a cascade call.
pub struct Cascade {
    inbox: Option<mpsc::Sender<Inbound>>,
    outputs: mpsc::Receiver<PipelineOutput>,
    task: Option<JoinHandle<PipelineStats>>,
    /// Whether an end (or failure) was handed to the session.
    finished: bool,
    dropped_frames: u64,
}

impl Pipeline for Cascade {
    fn name(&self) -> &'static str {
        "cascade"
    }

    fn caller_audio(&mut self, audio: CallerAudio<'_>) {
        let Some(inbox) = &self.inbox else {
            return;
        };
        if inbox
            .try_send(Inbound::Audio(audio.payload_b64.to_base64()))
            .is_err()
        {
            self.dropped_frames += 1;
            if self.dropped_frames.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped_frames,
                    "the cascade does not keep up with the caller's audio; frames dropped"
                );
            }
        }
    }

    fn handle(&mut self, event: CallEvent) -> BoxFuture<'_, ()> {
        async move {
            if let Some(inbox) = &self.inbox {
                let sent = tokio::time::timeout(CLEAR_WAIT, inbox.send(Inbound::Event(event)));
                if !matches!(sent.await, Ok(Ok(()))) {
                    tracing::debug!("the cascade task did not take a call event");
                }
            }
        }
        .boxed()
    }

    fn next_output(&mut self) -> BoxFuture<'_, PipelineOutput> {
        async move {
            match self.outputs.recv().await {
                Some(output) => {
                    if matches!(output, PipelineOutput::End(_) | PipelineOutput::Failed(_)) {
                        self.finished = true;
                    }
                    output
                }
                // The task is gone without saying how the call ends (it panicked):
                // say it once, then stay quiet.
                None if !self.finished => {
                    self.finished = true;
                    PipelineOutput::Failed("the cascade task stopped".into())
                }
                None => std::future::pending().await,
            }
        }
        .boxed()
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, PipelineStats> {
        // Closing the channels ends the task's loop; it then closes both upstreams.
        self.inbox = None;
        self.outputs.close();
        let task = self.task.take();
        async move {
            let Some(mut task) = task else {
                return PipelineStats::default();
            };
            match tokio::time::timeout(CLOSE_WAIT, &mut task).await {
                Ok(Ok(stats)) => stats,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the cascade task failed");
                    PipelineStats::default()
                }
                Err(_) => {
                    tracing::warn!("the cascade task did not stop in time; aborting it");
                    task.abort();
                    PipelineStats::default()
                }
            }
        }
        .boxed()
    }
}

/// How the call is to end once the last words are generated.
struct Ending {
    output: PipelineOutput,
    deadline: Instant,
}

/// Everything one cascade call owns.
struct Task {
    agent: Agent,
    metrics: Arc<Metrics>,
    settings: Arc<AgentSettings>,
    config: Arc<Config>,
    stt: Option<Stt>,
    tts: Option<ElevenLabsTts>,
    /// The call's TTS settings at the start (voice `TTS_VOICE`, language `LANGUAGE`).
    base_tts: TtsOptions,
    /// The settings the current TTS socket was opened with.
    tts_options: TtsOptions,
    /// The language the call speaks now.
    language: String,
    /// A TTS socket in the new language's voice, and its settings.
    voice_switch: Option<(Replacement<ElevenLabsTts>, TtsOptions)>,
    /// A transcriber socket in the new language (Scribe).
    stt_switch: Option<Replacement<Stt>>,
    /// The caller is in the middle of an utterance (words heard, none final yet).
    caller_talking: bool,
    /// Connections made to the TTS before the current one (turn numbering).
    tts_generation: u64,
    tts_reconnected: bool,
    spoken: Spoken,
    /// TTS turns begun and not yet heard in full.
    unplayed: BTreeSet<u64>,
    /// TTS turns whose audio is not all generated.
    generating: BTreeSet<u64>,
    /// The TTS turn receiving the agent's words.
    agent_turn: Option<u64>,
    /// The newest TTS turn (what a barge-in cuts).
    newest_turn: Option<u64>,
    /// A `clear` was sent; the session's answer is due by then.
    clearing: Option<Instant>,
    /// What the caller said while the barge-in was being settled.
    after_clear: Vec<String>,
    /// The newest mark echo: (turn, played).
    last_played: Option<(u64, Duration)>,
    ending: Option<Ending>,
    /// The end was handed on: nothing more is said.
    done: bool,
    outbox: VecDeque<PipelineOutput>,
    /// Audio bytes in `outbox`.
    held_audio: usize,
    out: mpsc::Sender<PipelineOutput>,
    errors: u32,
    dropped_frames: u64,
    tones: u64,
    /// An upstream failed: the apology is under way.
    failing: bool,
}

impl Task {
    async fn run(
        mut self,
        mut call: CallInfo,
        mut inbox: mpsc::Receiver<Inbound>,
    ) -> PipelineStats {
        // A per-call greeting (an outbound call's) replaces the configured one; the
        // agent takes it from the parameters too. Our own parameters are not call data
        // for the model.
        let greeting = CallOpening::new(&self.settings, &call.parameters).greeting;
        call.parameters
            .retain(|name, _| name == GREETING_PARAMETER || is_call_data(name));
        self.agent.handle(AgentInput::CallStarted(call));
        if self.stt.is_none() {
            self.fail("the transcriber is unreachable").await;
        } else {
            self.greet(&greeting).await;
        }
        let out = self.out.clone();
        loop {
            self.check_switches();
            self.check_ending();
            let can_send = !self.outbox.is_empty();
            let clearing = self.clearing;
            let ending = self.ending.as_ref().map(|e| e.deadline);
            let switch_due = [
                self.voice_switch.as_ref().map(|(r, _)| r.deadline),
                self.stt_switch.as_ref().map(|r| r.deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            let listening = !self.done && self.ending.is_none();
            // After a language switch, the next words wait for the new voice.
            let agent_turns = listening && clearing.is_none() && self.voice_switch.is_none();
            tokio::select! {
                biased;
                message = inbox.recv() => match message {
                    None => break,
                    Some(Inbound::Audio(payload)) => self.caller_audio(payload.as_b64()),
                    Some(Inbound::Event(event)) => self.on_call_event(event).await,
                },
                permit = out.reserve(), if can_send => match permit {
                    Ok(permit) => {
                        if let Some(output) = self.outbox.pop_front() {
                            if let PipelineOutput::Audio { mulaw, .. } = &output {
                                self.held_audio = self.held_audio.saturating_sub(mulaw.len());
                            }
                            permit.send(output);
                        }
                    }
                    Err(_) => break,
                },
                heard = next_heard(&mut self.stt), if listening => self.on_heard(heard).await,
                event = next_tts(&mut self.tts), if !self.done => self.on_tts(event).await,
                output = self.agent.next_output(), if agent_turns => self.on_agent(output).await,
                () = sleep_until_opt(clearing) => {
                    tracing::warn!("the session did not answer the clear in time");
                    self.finish_clear(None);
                }
                () = sleep_until_opt(ending) => {
                    tracing::warn!("the last words were not generated in time; ending the call");
                    if let Some(ending) = self.ending.take() {
                        self.hand_on_end(ending.output);
                    }
                }
                result = replacement_connected(self.voice_switch.as_mut().map(|(r, _)| r)) => {
                    if let Some((replacement, _)) = self.voice_switch.as_mut()
                        && !replacement.connected(result, "the voice")
                    {
                        self.voice_switch = None;
                    }
                }
                result = replacement_connected(self.stt_switch.as_mut()) => {
                    if let Some(replacement) = self.stt_switch.as_mut()
                        && !replacement.connected(result, "the transcriber")
                    {
                        self.stt_switch = None;
                    }
                }
                // Handled by `check_switches` at the top of the loop.
                () = sleep_until_opt(switch_due) => {}
            }
        }
        self.shutdown().await
    }

    /// Speaks the welcome greeting (the agent already has it in its history).
    async fn greet(&mut self, greeting: &str) {
        let greeting = greeting.trim();
        if greeting.is_empty() {
            return;
        }
        if let Some(turn) = self.begin_turn().await {
            self.say(turn, &format!("{greeting} ")).await;
            self.end_turn().await;
        }
    }

    /// Stops the agent, speaks the fallback (if the TTS is up) and ends the call
    /// once it is generated.
    fn fail(&mut self, why: &'static str) -> BoxFuture<'_, ()> {
        async move {
            if self.done || self.failing {
                return;
            }
            self.failing = true;
            self.agent.handle(AgentInput::Hangup);
            self.end_turn().await;
            let apology = self.settings.fallback_message.trim().to_string();
            if !apology.is_empty()
                && let Some(turn) = self.begin_turn().await
            {
                self.say(turn, &format!("{apology} ")).await;
                self.end_turn().await;
            }
            self.ending = Some(Ending {
                output: PipelineOutput::Failed(why.to_string()),
                deadline: Instant::now() + END_WAIT,
            });
        }
        .boxed()
    }

    /// Hands the end on once the last words are generated.
    fn check_ending(&mut self) {
        let ready = self.ending.is_some()
            && (self.generating.is_empty() || self.tts.is_none())
            && self.agent_turn.is_none();
        if ready && let Some(ending) = self.ending.take() {
            self.hand_on_end(ending.output);
        }
    }

    fn hand_on_end(&mut self, output: PipelineOutput) {
        self.done = true;
        self.outbox.push_back(output);
    }

    /// Closes both upstreams and reports the call's counters.
    async fn shutdown(mut self) -> PipelineStats {
        self.agent.handle(AgentInput::Hangup);
        // Sockets of a language switch not yet swapped in close on drop.
        self.voice_switch = None;
        self.stt_switch = None;
        let stt = self.stt.take();
        let tts = self.tts.take();
        tokio::join!(
            async {
                if let Some(stt) = stt {
                    stt.close().await;
                }
            },
            async {
                if let Some(tts) = tts {
                    tts.close().await;
                }
            }
        );
        let stats = self.agent.stats();
        tracing::info!(
            turns = stats.turns,
            interrupts = stats.interrupts,
            upstream_errors = self.errors,
            dropped_frames = self.dropped_frames,
            "cascade closed"
        );
        PipelineStats {
            turns: stats.turns,
            interrupts: stats.interrupts,
            errors: self.errors + stats.llm_errors,
            tool_calls: stats.tool_calls,
        }
    }
}

async fn next_heard(stt: &mut Option<Stt>) -> Result<Heard, SpeechError> {
    match stt {
        Some(stt) => stt.next().await,
        None => std::future::pending().await,
    }
}

async fn next_tts(tts: &mut Option<ElevenLabsTts>) -> Result<TtsEvent, SpeechError> {
    match tts {
        Some(tts) => tts.next_event().await,
        None => std::future::pending().await,
    }
}
