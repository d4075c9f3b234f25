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

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

pub use heard::Spoken;
pub use stt::{Heard, Stt};

use super::{
    CallEvent, CallerAudio, Pipeline, PipelineContext, PipelineError, PipelineOutput,
    PipelineStats, TurnsOnly,
};
use crate::agent::{Agent, AgentInput, AgentOutput, AgentSettings, CallInfo, GREETING_PARAMETER};
use crate::audio::dtmf;
use crate::config::{Config, LanguageConfig};
use crate::metrics::Metrics;
use crate::speech::SpeechError;
use crate::speech::elevenlabs_tts::{ElevenLabsTts, TtsEvent, TtsOptions, TurnId};

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

/// Lenient base64 (ElevenLabs pads; accept either).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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
    Audio(String),
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
            .try_send(Inbound::Audio(audio.payload_b64.to_string()))
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

/// A socket that is to replace one in use (a language switch): it connects in the
/// background while the old one carries on, and is swapped in when the call allows,
/// by `deadline` at the latest (or given up if it is not connected by then).
struct Replacement<T> {
    connecting: Option<JoinHandle<Result<T, SpeechError>>>,
    ready: Option<T>,
    deadline: Instant,
}

impl<T: Send + 'static> Replacement<T> {
    fn connect(
        work: impl Future<Output = Result<T, SpeechError>> + Send + 'static,
        wait: Duration,
    ) -> Self {
        Self {
            connecting: Some(tokio::spawn(work.in_current_span())),
            ready: None,
            deadline: Instant::now() + wait,
        }
    }

    /// Records the end of the connection attempt; `false` when it failed.
    fn connected(&mut self, result: Result<T, String>, what: &str) -> bool {
        self.connecting = None;
        match result {
            Ok(socket) => {
                self.ready = Some(socket);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} for the new language could not be connected; keeping the current one");
                false
            }
        }
    }
}

impl<T> Drop for Replacement<T> {
    fn drop(&mut self) {
        if let Some(connecting) = self.connecting.take() {
            connecting.abort();
        }
    }
}

/// Resolves when the replacement's connection attempt ends; pending without one.
/// Cancel-safe.
async fn replacement_connected<T>(replacement: Option<&mut Replacement<T>>) -> Result<T, String> {
    match replacement.and_then(|r| r.connecting.as_mut()) {
        Some(connecting) => match connecting.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the connecting task failed: {e}")),
        },
        None => std::future::pending().await,
    }
}

/// The ElevenLabs voice the agent file gives `language`, unless that voice belongs
/// to another TTS provider (ConversationRelay languages may use Google or Amazon).
fn elevenlabs_voice(language: &LanguageConfig) -> Option<String> {
    let elevenlabs = language
        .tts_provider
        .as_deref()
        .is_none_or(|p| p.eq_ignore_ascii_case("elevenlabs"));
    language
        .voice
        .clone()
        .filter(|v| elevenlabs && !crate::speech::elevenlabs_tts::voice_id(v).is_empty())
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
        let greeting = call
            .parameters
            .get(GREETING_PARAMETER)
            .cloned()
            .unwrap_or_else(|| self.settings.welcome_greeting.clone());
        call.parameters.retain(|name, _| {
            name == GREETING_PARAMETER || (!name.starts_with("voxrelay_") && name != "pipeline")
        });
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
                    Some(Inbound::Audio(payload)) => self.caller_audio(&payload),
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
                () = sleep_until(clearing) => {
                    tracing::warn!("the session did not answer the clear in time");
                    self.finish_clear(None);
                }
                () = sleep_until(ending) => {
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
                () = sleep_until(switch_due) => {}
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

    fn caller_audio(&mut self, payload: &str) {
        let Some(stt) = &self.stt else {
            return;
        };
        match stt.send_audio(payload) {
            Ok(()) => {}
            Err(SpeechError::QueueFull { .. }) => {
                self.dropped_frames += 1;
                if self.dropped_frames.is_power_of_two() {
                    tracing::warn!(
                        dropped = self.dropped_frames,
                        "the transcriber lags; caller frames dropped"
                    );
                }
            }
            // A broken socket shows up on the read side.
            Err(_) => {}
        }
    }

    async fn on_call_event(&mut self, event: CallEvent) {
        match event {
            CallEvent::Dtmf(digit) => {
                if !self.done && self.ending.is_none() {
                    self.agent.handle(AgentInput::Digit(digit));
                }
            }
            CallEvent::Played { turn, played } => self.last_played = Some((turn, played)),
            CallEvent::PlayedOut { turn } => {
                self.unplayed.remove(&turn);
            }
            CallEvent::Cleared { turn, played } => {
                if self.clearing.is_some() {
                    self.finish_clear(Some((turn, played)));
                }
            }
        }
    }

    /// Whether the caller talking now would talk over the agent.
    fn agent_speaking(&self) -> bool {
        self.agent.is_replying() || self.agent_turn.is_some() || !self.unplayed.is_empty()
    }

    async fn on_heard(&mut self, heard: Result<Heard, SpeechError>) {
        match heard {
            Err(e) => {
                self.errors += 1;
                self.metrics.llm_error("upstream");
                tracing::warn!(error = %e, "the transcriber failed; apologising and ending the call");
                self.stt_switch = None;
                if let Some(stt) = self.stt.take() {
                    stt.close().await;
                }
                self.fail("the transcriber failed").await;
            }
            Ok(Heard::SpeechStarted) => {
                self.caller_talking = true;
                if self.agent_speaking() {
                    self.barge_in("speech started").await;
                }
            }
            Ok(Heard::Partial(text)) => {
                if !stt::has_words(&text) {
                    return;
                }
                self.caller_talking = true;
                if self.agent_speaking() {
                    self.barge_in("partial transcript").await;
                }
            }
            Ok(Heard::Final(text)) => {
                self.caller_talking = false;
                let text = text.trim().to_string();
                if text.is_empty() {
                    return;
                }
                tracing::debug!(chars = text.len(), "caller spoke");
                if self.clearing.is_none() && self.agent_speaking() {
                    self.barge_in("final transcript").await;
                }
                if self.done || self.ending.is_some() {
                    // The barge-in found the TTS broken: the call is ending.
                    return;
                }
                if self.clearing.is_some() {
                    if self.after_clear.len() < 8 {
                        self.after_clear.push(text);
                    }
                } else {
                    self.agent.handle(AgentInput::UserText { text, lang: None });
                }
            }
            Ok(Heard::Nothing) => {}
        }
    }

    /// The caller talks over the agent: stop the TTS, clear Twilio, and wait for the
    /// session to say how much was heard.
    async fn barge_in(&mut self, why: &'static str) {
        if self.clearing.is_some() {
            return;
        }
        tracing::info!(trigger = why, "caller barged in");
        if let Some(tts) = &mut self.tts
            && let Err(e) = tts.cancel().await
        {
            self.tts_failed(e).await;
            return;
        }
        self.agent_turn = None;
        self.generating.clear();
        self.outbox.retain(|o| {
            !matches!(
                o,
                PipelineOutput::Audio { .. } | PipelineOutput::TurnDone { .. }
            )
        });
        self.held_audio = 0;
        self.outbox.push_back(PipelineOutput::Clear);
        self.clearing = Some(Instant::now() + CLEAR_WAIT);
    }

    /// The session cleared Twilio (or did not answer in time): tell the agent what
    /// the caller heard of the newest turn.
    fn finish_clear(&mut self, answer: Option<(Option<u64>, Duration)>) {
        self.clearing = None;
        let heard = match self.newest_turn {
            None => String::new(),
            Some(newest) => {
                let played = match answer {
                    Some((Some(turn), played)) if turn == newest => Some(played),
                    Some(_) => None,
                    None => self
                        .last_played
                        .filter(|(turn, _)| *turn == newest)
                        .map(|(_, played)| played),
                };
                match played {
                    Some(played) => self.spoken.heard(newest, played.as_millis() as u64),
                    // Heard in full already, or not started.
                    None if !self.unplayed.contains(&newest) => {
                        self.spoken.heard(newest, u64::MAX / 16)
                    }
                    None => String::new(),
                }
            }
        };
        tracing::info!(heard_chars = heard.len(), "interrupting the agent");
        self.unplayed.clear();
        self.agent.handle(AgentInput::Interrupt { heard });
        for text in std::mem::take(&mut self.after_clear) {
            self.agent.handle(AgentInput::UserText { text, lang: None });
        }
    }

    async fn on_tts(&mut self, event: Result<TtsEvent, SpeechError>) {
        match event {
            Err(e) => self.tts_failed(e).await,
            Ok(TtsEvent::Audio {
                turn,
                audio,
                alignment,
            }) => {
                let turn = self.turn_number(turn);
                let mulaw = match BASE64.decode(audio.as_bytes()) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping TTS audio that is not base64");
                        return;
                    }
                };
                if mulaw.is_empty() {
                    return;
                }
                self.spoken.audio(turn, mulaw.len() as u64, alignment);
                self.push_audio(turn, mulaw);
            }
            Ok(TtsEvent::TurnDone { turn }) => {
                let turn = self.turn_number(turn);
                self.spoken.generated(turn);
                self.generating.remove(&turn);
                if self.spoken.audio_of(turn) == 0 {
                    // Nothing to play: never reported as played out.
                    self.unplayed.remove(&turn);
                }
                self.outbox.push_back(PipelineOutput::TurnDone { turn });
            }
            Ok(TtsEvent::Error { message }) => {
                self.errors += 1;
                tracing::debug!(message = %message, "TTS error message");
            }
        }
    }

    async fn on_agent(&mut self, output: AgentOutput) {
        match output {
            AgentOutput::Token(text) => {
                let turn = match self.agent_turn {
                    Some(turn) => Some(turn),
                    None => self.begin_turn().await,
                };
                if let Some(turn) = turn {
                    self.agent_turn = Some(turn);
                    self.say(turn, &text).await;
                }
            }
            AgentOutput::TurnEnd => self.end_turn().await,
            AgentOutput::End(handoff) => {
                tracing::info!(reason_code = %handoff.reason_code, "the agent ends the call");
                self.end_turn().await;
                self.ending = Some(Ending {
                    output: PipelineOutput::End(handoff),
                    deadline: Instant::now() + END_WAIT,
                });
            }
            AgentOutput::SendDigits(digits) => {
                let tones = dtmf::tones(&digits);
                tracing::info!(digits = digits.len(), "pressing keys as tones");
                if !tones.is_empty() {
                    self.tones += 1;
                    let turn = TONE_TURNS + self.tones;
                    self.push_audio(turn, tones);
                    self.outbox.push_back(PipelineOutput::TurnDone { turn });
                }
            }
            AgentOutput::SwitchLanguage(code) => self.switch_language(code).await,
        }
    }

    /// Moves the TTS and the transcriber to `code` (see the module docs).
    async fn switch_language(&mut self, code: String) {
        if code.eq_ignore_ascii_case(&self.language) {
            tracing::debug!(language = %code, "already speaking this language");
            return;
        }
        let configured = self
            .config
            .relay
            .languages
            .iter()
            .find(|l| l.code.eq_ignore_ascii_case(&code));
        let voice = configured
            .and_then(elevenlabs_voice)
            .unwrap_or_else(|| self.base_tts.voice_id.clone());
        let options = self.base_tts.with_voice_and_language(&voice, &code);
        tracing::info!(
            language = %code,
            from = %self.language,
            voice = %options.voice_id,
            "switching language"
        );
        self.language = code;
        // A switch still under way is superseded.
        self.voice_switch = None;
        if !options.same_socket(&self.tts_options) {
            // What was said so far stays in the old voice.
            self.end_turn().await;
            let connect = options.clone();
            let replacement = Replacement::connect(
                async move { ElevenLabsTts::connect(&connect).await },
                TTS_SWITCH_WAIT,
            );
            self.voice_switch = Some((replacement, options));
        }
        self.stt_switch = None;
        if let Some(stt) = self.stt.as_mut() {
            match stt.set_language(&self.language).await {
                Ok(true) => tracing::debug!("the transcriber listens in the new language"),
                Ok(false) => {
                    let config = self.config.clone();
                    let language = self.language.clone();
                    self.stt_switch = Some(Replacement::connect(
                        async move { Stt::connect(&config, &language).await },
                        STT_SWITCH_WAIT,
                    ));
                }
                // A broken socket shows up on the read side.
                Err(e) => {
                    tracing::warn!(error = %e, "could not tell the transcriber the new language")
                }
            }
        }
    }

    /// Swaps in the sockets of a language switch once the call allows: the voice
    /// when the old socket has generated everything it owes, the transcriber between
    /// the caller's utterances; either at its deadline at the latest.
    fn check_switches(&mut self) {
        let now = Instant::now();
        let voice_due = self.voice_switch.as_ref().is_some_and(|(r, _)| {
            (r.ready.is_some() && (self.generating.is_empty() || self.tts.is_none()))
                || now >= r.deadline
        });
        if voice_due && let Some((mut replacement, options)) = self.voice_switch.take() {
            match replacement.ready.take() {
                Some(tts) => self.swap_tts(tts, options),
                None => tracing::warn!(
                    "the new language's voice did not connect in time; keeping the current voice"
                ),
            }
        }
        let stt_due = self
            .stt_switch
            .as_ref()
            .is_some_and(|r| (r.ready.is_some() && !self.caller_talking) || now >= r.deadline);
        if stt_due && let Some(mut replacement) = self.stt_switch.take() {
            match replacement.ready.take() {
                Some(stt) => {
                    tracing::info!(language = %self.language, "the transcriber now listens in the new language");
                    self.caller_talking = false;
                    if let Some(old) = self.stt.replace(stt) {
                        tokio::spawn(old.close().in_current_span());
                    }
                }
                None => tracing::warn!(
                    "the new language's transcriber did not connect in time; keeping the current one"
                ),
            }
        }
    }

    /// The new voice's socket takes over; the old one is closed.
    fn swap_tts(&mut self, tts: ElevenLabsTts, options: TtsOptions) {
        // Turns the old socket did not finish in time end here.
        for turn in std::mem::take(&mut self.generating) {
            self.spoken.generated(turn);
            self.outbox.push_back(PipelineOutput::TurnDone { turn });
        }
        self.agent_turn = None;
        if let Some(old) = self.tts.replace(tts) {
            tokio::spawn(old.close().in_current_span());
        }
        self.tts_generation += 1;
        self.tts_options = options;
        tracing::info!(voice = %self.tts_options.voice_id, "speaking with the new language's voice");
    }

    /// Queues agent audio for the session (dropped past [`MAX_HELD_AUDIO`]).
    fn push_audio(&mut self, turn: u64, mulaw: Vec<u8>) {
        if self.held_audio + mulaw.len() > MAX_HELD_AUDIO {
            tracing::warn!("the session does not take the agent's audio; dropping some");
            return;
        }
        self.held_audio += mulaw.len();
        self.outbox.push_back(PipelineOutput::Audio { turn, mulaw });
    }

    /// The session's number for a TTS turn (unique across TTS reconnections).
    fn turn_number(&self, turn: TurnId) -> u64 {
        (self.tts_generation << 32) | turn.0
    }

    async fn begin_turn(&mut self) -> Option<u64> {
        let tts = self.tts.as_mut()?;
        match tts.begin_turn().await {
            Ok(turn) => {
                let turn = self.turn_number(turn);
                self.unplayed.insert(turn);
                self.generating.insert(turn);
                self.newest_turn = Some(turn);
                Some(turn)
            }
            Err(e) => {
                self.tts_failed(e).await;
                None
            }
        }
    }

    async fn say(&mut self, turn: u64, text: &str) {
        let Some(tts) = self.tts.as_mut() else {
            return;
        };
        self.spoken.text_sent(turn, text);
        if let Err(e) = tts.push_text(text).await {
            self.tts_failed(e).await;
        }
    }

    async fn end_turn(&mut self) {
        self.agent_turn = None;
        let Some(tts) = self.tts.as_mut() else {
            return;
        };
        if let Err(e) = tts.end_turn().await {
            self.tts_failed(e).await;
        }
    }

    /// The TTS broke: reconnect once to apologise, then end the call.
    fn tts_failed(&mut self, error: SpeechError) -> BoxFuture<'_, ()> {
        async move {
            self.errors += 1;
            self.metrics.llm_error("upstream");
            tracing::warn!(error = %error, "the TTS failed; ending the call");
            self.tts = None;
            // A language switch under way: the apology uses its settings.
            if let Some((_, options)) = self.voice_switch.take() {
                self.tts_options = options;
            }
            self.agent_turn = None;
            self.generating.clear();
            if self.done {
                return;
            }
            if !self.tts_reconnected {
                self.tts_reconnected = true;
                match ElevenLabsTts::connect(&self.tts_options).await {
                    Ok(tts) => {
                        self.tts_generation += 1;
                        self.tts = Some(tts);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the TTS could not be reconnected to apologise");
                    }
                }
            }
            self.fail("the TTS failed").await;
        }
        .boxed()
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
