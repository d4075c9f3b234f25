//! The agent core: one [`Agent`] per call holds the conversation, streams replies
//! from the LLM, runs the tools the model calls, cancels replies on interruption,
//! gathers keypad digits, and falls back to a spoken apology when the LLM fails. It
//! knows nothing about the transport.
//!
//! A transport drives it with two calls inside its own `select!` loop:
//! [`Agent::handle`] for each [`AgentInput`], and [`Agent::next_output`], a
//! cancel-safe future that yields the next [`AgentOutput`] (a token, the end of a
//! reply, a call action) as the LLM and tools produce it. There is no task per
//! agent: the reply in flight — an LLM stream, or a round of tool futures — is
//! owned by the agent and polled by the transport's loop, so dropping it (on
//! interrupt, on a new prompt, at hang-up) drops the upstream requests at once.
//!
//! A reply is a series of rounds: the model streams text and/or tool calls; the
//! calls are assembled from their deltas, run concurrently under their time limits
//! (a filler is spoken if they take long), their results are added to the history,
//! and the model is asked again — at most `max_tool_rounds` times per reply.
//!
//! Files: this one holds the [`Agent`], its inputs, outputs and records; [`reply`]
//! the reply in flight and its steps (streaming, tool rounds, effects, fallback);
//! [`history`] the conversation sent to the model; [`resume`] conversations kept
//! for a reconnect; [`dtmf`] keypad entries; [`event`] the types a transport and
//! an observer see. The core imports no transport (`.ci/run` checks it).

pub mod call_log;
pub mod dtmf;
pub mod endings;
pub mod event;
pub mod history;
pub mod prompt;
mod reply;
pub mod resume;
pub mod screening;
mod settings;
use reply::{Step, Turn, next_step};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

pub use call_log::{CallLog, ToolFollowUp};
pub use endings::{REASON_GOODBYE, REASON_SILENCE};
pub use event::{
    AgentInput, AgentOutput, AppointmentRecord, CallInfo, CallObserver, CallSummary, Handoff,
    Latency, NoObserver, REASON_END_CALL, REASON_LIVE_AGENT, REASON_MAX_DURATION, Speaker,
    ToolCallRecord, TurnRecord,
};
pub use history::History;
pub use prompt::{
    CallOpening, GREETING_PARAMETER, greeting_instructions, is_call_data, language_instructions,
    prompt_with_parameters,
};
pub use resume::{RecentCalls, Resume, Snapshot};
pub use screening::REASON_VOICEMAIL;
pub use settings::{AgentDeps, AgentSettings};

use crate::llm::{ChatMessage, LlmError, LlmEvent, LlmProvider, LlmRequest, LlmStream, ToolCall};
use crate::metrics::Metrics;
use crate::tools::{ToolContext, ToolRegistry, ToolRun};

/// Counters for the call's summary line and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    /// Replies started.
    pub turns: u32,
    pub interrupts: u32,
    pub llm_errors: u32,
    /// The kind of the most recent LLM error, if any.
    pub last_error: Option<&'static str>,
    /// Tool calls run (including failed ones).
    pub tool_calls: u32,
}

/// How often the text of a reply still going out is recorded: what a crash of the
/// server can lose of a reply (plus the recorder's commit delay).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The conversation of one call.
pub struct Agent {
    llm: Arc<dyn LlmProvider>,
    settings: Arc<AgentSettings>,
    tools: Arc<ToolRegistry>,
    history: History,
    turn: Option<Turn>,
    pending: VecDeque<AgentOutput>,
    digits: dtmf::DigitBuffer,
    stats: CallStats,
    /// Time to the LLM's first token of the most recent reply.
    last_llm_first_token: Option<Duration>,
    /// The call, its transcript numbering and its records.
    log: CallLog,
    recent: Option<Arc<RecentCalls>>,
    /// Set once the agent has ended the call: nothing more is said.
    ended: Option<Handoff>,
    /// The caller was asked whether they are still there (since their last turn).
    asked_still_there: bool,
    /// Caller turns so far (the first ones may be a voicemail or a screening assistant).
    caller_turns: u32,
    /// The language switched to, if not the main one.
    language: Option<String>,
    /// Whether this call resumed an earlier conversation.
    resumed: bool,
    /// The earlier conversation to pick up, found by the transport before the call
    /// started (in memory or in the store).
    resume_with: Option<Resume>,
    /// Process-wide metrics (turns, interrupts, LLM errors, latencies), if wired.
    metrics: Option<Arc<Metrics>>,
    /// When the caller's input that started the current reply arrived; taken when
    /// the reply's first token is handed to the transport (time to first token).
    ttft_from: Option<Instant>,
    /// Outputs still queued from an earlier reply, ahead of the current one's.
    ttft_skip: usize,
}

impl Agent {
    pub fn new(llm: Arc<dyn LlmProvider>, settings: Arc<AgentSettings>) -> Self {
        let dtmf_timeout = settings.dtmf_timeout;
        let history =
            History::new(settings.system_prompt.clone()).with_max_bytes(settings.max_history_bytes);
        Self {
            llm,
            settings,
            tools: Arc::new(ToolRegistry::empty()),
            history,
            turn: None,
            pending: VecDeque::new(),
            digits: dtmf::DigitBuffer::new(dtmf_timeout),
            stats: CallStats::default(),
            last_llm_first_token: None,
            log: CallLog::default(),
            recent: None,
            ended: None,
            asked_still_there: false,
            caller_turns: 0,
            language: None,
            resumed: false,
            resume_with: None,
            metrics: None,
            ttft_from: None,
            ttft_skip: 0,
        }
    }

    /// Records turns, interrupts, LLM errors and latencies into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reports turns, tool calls and the call's end to `observer` (the store).
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.log = CallLog::new(observer);
        self
    }

    /// Offers these tools to the model.
    pub fn with_tools(mut self, tools: Arc<ToolRegistry>) -> Self {
        self.tools = tools;
        self
    }

    /// Leaves this call's conversation in `recent` when it ends without the agent
    /// ending it (a dropped socket may come back to this replica).
    pub fn with_recent_calls(mut self, recent: Arc<RecentCalls>) -> Self {
        self.recent = Some(recent);
        self
    }

    /// Picks up `snapshot` when the call starts, if its [`CallInfo::may_resume`].
    pub fn resume_with(&mut self, resume: Resume) {
        self.resume_with = Some(resume);
    }

    /// Ends the call's record: stops any reply and tells the observer how it ended.
    /// `handoff_data` defaults to what the agent sent when it ended the call.
    pub fn finish(&mut self, status: &str, handoff_data: Option<String>) {
        self.stop_reply();
        self.clear_pending();
        let Some(call_sid) = self.log.call().map(|c| c.call_sid.clone()) else {
            return;
        };
        if self.ended.is_none()
            && let Some(recent) = &self.recent
        {
            recent.save(&call_sid, self.snapshot());
        }
        let (status, handoff_data) = match &self.ended {
            Some(handoff) if handoff.is_live_agent() => (
                "handoff".to_string(),
                handoff_data.or_else(|| Some(handoff.to_json())),
            ),
            Some(handoff) => (
                status.to_string(),
                handoff_data.or_else(|| Some(handoff.to_json())),
            ),
            None => (status.to_string(), handoff_data),
        };
        self.log.ended(&CallSummary {
            status,
            handoff_data,
            turns: self.stats.turns,
            interrupts: self.stats.interrupts,
            llm_errors: self.stats.llm_errors,
        });
    }

    /// The conversation as a resumed call needs it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            history: self.history.clone(),
            next_seq: self.log.next_seq(),
            language: self.language.clone(),
        }
    }

    /// Records a finished transcript turn (numbered `seq`, or the next number) and
    /// returns its sequence number.
    fn record_turn(
        &mut self,
        speaker: Speaker,
        text: &str,
        started_at: SystemTime,
        latency: Latency,
        seq: Option<u32>,
    ) -> u32 {
        let seq = seq.unwrap_or_else(|| self.log.reserve());
        self.log
            .record(seq, speaker, text, started_at, latency, false);
        seq
    }

    /// Records the reply in flight as it stands: when its first words go out (it
    /// takes its transcript number then) and every [`PROGRESS_INTERVAL`] after.
    fn record_progress(&mut self, now: Instant) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        let recent = turn
            .recorded_at
            .is_some_and(|at| now.duration_since(at) < PROGRESS_INTERVAL);
        if turn.seq.is_some() && recent {
            return;
        }
        let seq = *turn.seq.get_or_insert_with(|| self.log.reserve());
        turn.recorded_at = Some(now);
        self.log.record(
            seq,
            Speaker::Agent,
            &turn.text,
            turn.started_at,
            turn.latency(),
            true,
        );
    }

    /// The conversation so far, system prompt first.
    pub fn history(&self) -> &[ChatMessage] {
        self.history.messages()
    }

    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    pub fn call(&self) -> Option<&CallInfo> {
        self.log.call()
    }

    /// Whether a reply is being generated right now.
    pub fn is_replying(&self) -> bool {
        self.turn.is_some()
    }

    /// How the agent ended the call, once it has.
    pub fn ended(&self) -> Option<&Handoff> {
        self.ended.as_ref()
    }

    /// Whether this call picked up an earlier conversation.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Time to the LLM's first token of the newest reply that produced one.
    pub fn last_llm_first_token(&self) -> Option<Duration> {
        self.last_llm_first_token
    }

    /// Applies one input. Outputs it causes are queued for [`Agent::next_output`].
    pub fn handle(&mut self, input: AgentInput) {
        if matches!(input, AgentInput::UserText { .. } | AgentInput::Digit(_)) {
            self.asked_still_there = false;
        }
        match input {
            AgentInput::CallStarted(info) => self.start_call(info),
            AgentInput::UserText { mut text, .. } => {
                if crate::text::cut_to(&mut text, self.settings.max_prompt_bytes) {
                    tracing::warn!(
                        max_bytes = self.settings.max_prompt_bytes,
                        "the caller's utterance was too long; cut"
                    );
                }
                let text = text.trim();
                if text.is_empty() {
                    return;
                }
                if self.ended.is_some() {
                    tracing::debug!("the call is ending; ignoring what the caller said");
                    return;
                }
                self.caller_turns += 1;
                if self.caller_turns <= screening::CHECKED_TURNS
                    && screening::classify(text).is_some()
                {
                    // A machine's words: in the transcript, answered by the agent
                    // without the LLM.
                    self.stop_reply();
                    self.history.push(ChatMessage::user(text));
                    self.record_turn(
                        Speaker::Caller,
                        text,
                        SystemTime::now(),
                        Latency::default(),
                        None,
                    );
                    self.answered_by_machine(text);
                    return;
                }
                self.start_reply(ChatMessage::user(text));
            }
            AgentInput::Digit(d) => {
                if !matches!(d, '0'..='9' | '*' | '#') {
                    tracing::warn!(digit = %d, "ignoring an invalid DTMF digit");
                    return;
                }
                if self.ended.is_some() {
                    return;
                }
                if let Some(entry) = self.digits.push(d) {
                    self.digits_entered(entry);
                }
            }
            AgentInput::Interrupt { mut heard } => {
                if crate::text::cut_to(&mut heard, self.settings.max_prompt_bytes) {
                    tracing::warn!(
                        max_bytes = self.settings.max_prompt_bytes,
                        "the heard part of an interrupted reply was too long; cut"
                    );
                }
                self.stats.interrupts += 1;
                if let Some(m) = &self.metrics {
                    m.interrupt();
                }
                self.ttft_from = None;
                self.ttft_skip = 0;
                self.stop_reply();
                // Nothing more of the interrupted reply may reach the caller; call
                // actions the model already took (an end, digits, a language) stand.
                self.pending
                    .retain(|o| !matches!(o, AgentOutput::Token(_) | AgentOutput::TurnEnd));
                let kept = self.history.truncate_to_heard(&heard);
                if let (Some(kept), Some(seq)) = (kept, self.log.last_agent_seq()) {
                    self.log.interrupted(seq, &kept);
                }
            }
            AgentInput::TimeUp => self.time_up(),
            AgentInput::Silence => self.silence(),
            AgentInput::Voicemail { signal } => self.voicemail(signal),
            AgentInput::Hangup => {
                self.stop_reply();
                self.clear_pending();
            }
        }
    }

    /// Goes on with a resumed conversation: the call is live again and carried by
    /// this session, and the store must know.
    fn continue_call(&mut self, mut info: CallInfo) {
        self.resumed = true;
        info.resumed = true;
        self.log.started(&info);
    }

    /// The system prompt, with the call's TwiML parameters when it has some.
    fn set_call_prompt(&mut self, info: &CallInfo) {
        if !info.parameters.is_empty() {
            self.history.set_system_prompt(prompt_with_parameters(
                &self.settings.system_prompt,
                &info.parameters,
            ));
        }
    }

    fn start_call(&mut self, mut info: CallInfo) {
        // A per-call greeting (an outbound call's) replaces the configured one.
        let opening = CallOpening::new(&self.settings, &info.parameters);
        let greeting = opening.greeting;
        info.parameters = opening.call_data;
        let resume = self.resume_with.take().filter(|_| info.may_resume);
        if let Some(Resume::Snapshot(snapshot)) = resume {
            tracing::info!(
                messages = snapshot.history.messages().len(),
                next_turn = snapshot.next_seq,
                "resuming the conversation of this call"
            );
            self.history = snapshot.history;
            self.log.resume_at(snapshot.next_seq);
            if let Some(language) = snapshot.language {
                self.pending
                    .push_back(AgentOutput::SwitchLanguage(language.clone()));
                self.language = Some(language);
            }
            self.continue_call(info);
            return;
        }
        self.set_call_prompt(&info);
        if let Some(Resume::Transcript { turns, next_seq }) = resume {
            tracing::info!(
                turns = turns.len(),
                next_turn = next_seq,
                "resuming the conversation of this call from the store"
            );
            // Twilio spoke the greeting when the call began; the model knew it then.
            if !greeting.is_empty() {
                self.history.push(ChatMessage::assistant(greeting));
            }
            for (speaker, text) in turns {
                self.history.push(match speaker {
                    Speaker::Caller => ChatMessage::user(text),
                    Speaker::Agent => ChatMessage::assistant(text),
                });
            }
            self.log.resume_at(next_seq);
            self.continue_call(info);
            return;
        }
        // Twilio speaks the greeting itself; the model should know it did.
        let greeted = self
            .history
            .messages()
            .iter()
            .any(|m| m.role == crate::llm::Role::Assistant);
        if !greeting.is_empty() && !greeted {
            self.history.push(ChatMessage::assistant(greeting));
        }
        self.log.started(&info);
    }

    /// The next thing for the transport to do. Cancel-safe: dropping the future
    /// loses nothing. Pending forever when there is nothing to do.
    pub async fn next_output(&mut self) -> AgentOutput {
        loop {
            if let Some(out) = self.pending.pop_front() {
                self.note_output(&out);
                return out;
            }
            let digits_due = dtmf::sleep_until_opt(self.digits.due());
            tokio::select! {
                step = next_step(&mut self.turn, self.settings.llm_timeout) => match step {
                    Step::Llm(event) => self.on_event(event),
                    Step::ToolsDone(runs) => self.on_tools_done(runs),
                    Step::Filler => self.speak_filler(),
                },
                () = digits_due => {
                    if let Some(entry) = self.digits.take() {
                        self.digits_entered(entry);
                    }
                }
            }
        }
    }

    /// Drops every queued output.
    fn clear_pending(&mut self) {
        self.pending.clear();
        self.ttft_skip = 0;
        self.ttft_from = None;
    }

    /// Records the time to first token when the current reply's first token leaves.
    fn note_output(&mut self, out: &AgentOutput) {
        if self.ttft_skip > 0 {
            self.ttft_skip -= 1;
            return;
        }
        if matches!(out, AgentOutput::Token(_))
            && let Some(from) = self.ttft_from.take()
        {
            let elapsed = from.elapsed();
            if let Some(turn) = self.turn.as_mut() {
                turn.first_out.get_or_insert(elapsed);
            }
            if let Some(m) = &self.metrics {
                m.time_to_first_token.observe(elapsed);
            }
        }
    }

    /// A complete keypad entry becomes one user turn.
    fn digits_entered(&mut self, digits: String) {
        self.start_reply(ChatMessage::user(format!("DTMF: {digits}")));
    }
}

#[cfg(test)]
mod tests;
