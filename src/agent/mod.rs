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

pub mod dtmf;
pub mod event;
pub mod history;
pub mod resume;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

pub use event::{
    AgentInput, AgentOutput, AppointmentRecord, CallInfo, CallObserver, CallSummary, Handoff,
    NoObserver, REASON_END_CALL, REASON_LIVE_AGENT, REASON_MAX_DURATION, Speaker, ToolCallRecord,
    TurnRecord,
};
pub use history::History;
pub use resume::{RecentCalls, Resume, Snapshot};

use crate::config::Config;
use crate::llm::{ChatMessage, LlmError, LlmEvent, LlmProvider, LlmRequest, LlmStream, ToolCall};
use crate::metrics::Metrics;
use crate::tools::{ToolContext, ToolEffect, ToolRegistry, ToolRun};

/// The `<Parameter>` carrying a per-call greeting (set by the outbound-call API):
/// what Twilio spoke first, recorded as the agent's first turn instead of the
/// configured greeting, and never shown to the model as call data.
pub const GREETING_PARAMETER: &str = "voxrelay_greeting";

/// Per-deployment agent settings, shared by every call.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub system_prompt: String,
    /// What Twilio says when the call connects; recorded as the first reply.
    pub welcome_greeting: String,
    /// Spoken when the LLM fails.
    pub fallback_message: String,
    /// No first token (or no further token) within this time fails the reply.
    pub llm_timeout: Duration,
    /// Keypad digits are gathered until `#` or this much time without a key.
    pub dtmf_timeout: Duration,
    /// Tool rounds allowed in one reply.
    pub max_tool_rounds: u32,
    /// Spoken when tools run longer than `tool_filler_after` (empty: never).
    pub tool_filler: String,
    pub tool_filler_after: Duration,
    /// Spoken before hanging up when the model said nothing itself.
    pub goodbye_message: String,
    /// Spoken before a transfer when the model said nothing itself.
    pub handoff_message: String,
    /// The call's main language.
    pub language: String,
    /// Longest caller utterance (or heard part of a reply) kept; longer ones are cut.
    pub max_prompt_bytes: usize,
    /// Conversation bytes sent to the LLM besides the system prompt.
    pub max_history_bytes: usize,
}

impl AgentSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            system_prompt: config.system_prompt.clone(),
            welcome_greeting: config.relay.welcome_greeting.clone(),
            fallback_message: config.fallback_message.clone(),
            llm_timeout: config.llm.timeout,
            dtmf_timeout: config.dtmf_timeout,
            max_tool_rounds: config.tools.max_rounds,
            tool_filler: config.tools.filler.clone(),
            tool_filler_after: config.tools.filler_after,
            goodbye_message: config.tools.goodbye_message.clone(),
            handoff_message: config.tools.handoff_message.clone(),
            language: config.relay.language.clone(),
            max_prompt_bytes: config.limits.max_prompt_bytes,
            max_history_bytes: config.limits.max_history_bytes,
        }
    }
}

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

/// A tool call being assembled from streamed deltas.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Tools running for the reply in flight.
struct ToolRound {
    /// The assistant message that asked for them (its text plus any filler spoken).
    message: ChatMessage,
    running: BoxFuture<'static, Vec<ToolRun>>,
    /// When to speak the filler, if not yet spoken.
    filler_at: Option<Instant>,
    /// Whether the model said anything in the round that asked for the tools.
    model_spoke: bool,
}

enum Phase {
    Streaming(LlmStream),
    Tools(ToolRound),
    /// Between phases (never polled).
    Idle,
}

/// A reply being produced.
struct Turn {
    phase: Phase,
    /// When the streaming phase fails if nothing more arrives.
    deadline: Instant,
    started: Instant,
    /// Start of the current LLM round, for the timeout message.
    round_started: Instant,
    /// Text spoken so far in this reply, every round and filler included.
    text: String,
    /// Text of the current LLM round.
    round_text: String,
    /// Tool calls of the current LLM round, by index.
    calls: Vec<PartialCall>,
    /// Tool rounds run so far.
    rounds: u32,
    /// Time from request to the LLM's first token.
    llm_first_token: Option<Duration>,
    /// Wall-clock start, for the transcript.
    started_at: SystemTime,
    /// The transcript number taken when the first words went out.
    seq: Option<u32>,
    /// When the text so far was last recorded.
    recorded_at: Option<Instant>,
}

/// What the reply in flight did next.
enum Step {
    Llm(Option<Result<LlmEvent, LlmError>>),
    ToolsDone(Vec<ToolRun>),
    Filler,
}

/// The system prompt with the call's TwiML parameters listed after it (sorted),
/// for every pipeline that talks to a model.
pub fn prompt_with_parameters(
    system_prompt: &str,
    parameters: &std::collections::HashMap<String, String>,
) -> String {
    if parameters.is_empty() {
        return system_prompt.to_string();
    }
    let mut params: Vec<_> = parameters.iter().collect();
    params.sort();
    let listed = params
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ");
    format!("{system_prompt}\n\nDados desta ligação: {listed}")
}

/// How often the text of a reply still going out is recorded: what a crash of the
/// server can lose of a reply (plus the recorder's commit delay).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Most tool calls taken from one model response.
const MAX_CALLS_PER_ROUND: usize = 16;

/// The conversation of one call.
pub struct Agent {
    llm: Arc<dyn LlmProvider>,
    settings: Arc<AgentSettings>,
    tools: Arc<ToolRegistry>,
    history: History,
    turn: Option<Turn>,
    pending: VecDeque<AgentOutput>,
    digits: dtmf::DigitBuffer,
    call: Option<CallInfo>,
    stats: CallStats,
    /// Time to the LLM's first token of the most recent reply.
    last_llm_first_token: Option<Duration>,
    observer: Arc<dyn CallObserver>,
    recent: Option<Arc<RecentCalls>>,
    /// Sequence number of the next transcript turn.
    next_seq: u32,
    /// The newest agent turn recorded, which an interruption refers to.
    last_agent_seq: Option<u32>,
    /// Set once the agent has ended the call: nothing more is said.
    ended: Option<Handoff>,
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
            call: None,
            stats: CallStats::default(),
            last_llm_first_token: None,
            observer: Arc::new(NoObserver),
            recent: None,
            next_seq: 0,
            last_agent_seq: None,
            ended: None,
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
        self.observer = observer;
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
        let Some(call) = &self.call else {
            return;
        };
        if self.ended.is_none()
            && let Some(recent) = &self.recent
        {
            recent.save(&call.call_sid, self.snapshot());
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
        self.observer.call_ended(
            &call.call_sid,
            &CallSummary {
                status,
                handoff_data,
                turns: self.stats.turns,
                interrupts: self.stats.interrupts,
                llm_errors: self.stats.llm_errors,
            },
        );
    }

    /// The conversation as a resumed call needs it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            history: self.history.clone(),
            next_seq: self.next_seq,
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
        time_to_first_token: Option<Duration>,
        seq: Option<u32>,
    ) -> u32 {
        let seq = seq.unwrap_or_else(|| self.take_seq());
        if speaker == Speaker::Agent {
            self.last_agent_seq = Some(seq);
        }
        if let Some(call) = &self.call {
            let record =
                TurnRecord::now(seq, speaker, text, started_at, time_to_first_token, false);
            self.observer.turn(&call.call_sid, &record);
        }
        seq
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Records the reply in flight as it stands: when its first words go out (it
    /// takes its transcript number then) and every [`PROGRESS_INTERVAL`] after.
    fn record_progress(&mut self, now: Instant) {
        let due = match &self.turn {
            Some(turn) if turn.seq.is_none() => true,
            Some(turn) => turn
                .recorded_at
                .is_none_or(|at| now.duration_since(at) >= PROGRESS_INTERVAL),
            None => false,
        };
        if !due {
            return;
        }
        let fresh = self.next_seq;
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        let seq = *turn.seq.get_or_insert(fresh);
        if seq == fresh {
            self.next_seq += 1;
        }
        turn.recorded_at = Some(now);
        self.last_agent_seq = Some(seq);
        if let Some(call) = &self.call {
            let record = TurnRecord::now(
                seq,
                Speaker::Agent,
                &turn.text,
                turn.started_at,
                turn.llm_first_token,
                true,
            );
            self.observer.turn(&call.call_sid, &record);
        }
    }

    /// The conversation so far, system prompt first.
    pub fn history(&self) -> &[ChatMessage] {
        self.history.messages()
    }

    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    pub fn call(&self) -> Option<&CallInfo> {
        self.call.as_ref()
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
                if let (Some(kept), Some(seq), Some(call)) = (kept, self.last_agent_seq, &self.call)
                {
                    self.observer.turn_interrupted(&call.call_sid, seq, &kept);
                }
            }
            AgentInput::TimeUp => self.time_up(),
            AgentInput::Hangup => {
                self.stop_reply();
                self.clear_pending();
            }
        }
    }

    /// The call reached its maximum duration: whatever is being said stops, the
    /// goodbye is spoken as a turn of its own, and the call ends.
    fn time_up(&mut self) {
        if self.ended.is_some() {
            return;
        }
        self.stop_reply();
        self.pending
            .retain(|o| !matches!(o, AgentOutput::Token(_) | AgentOutput::TurnEnd));
        let goodbye = self.settings.goodbye_message.clone();
        if !goodbye.is_empty() {
            for word in crate::llm::scripted::split_words(&goodbye) {
                self.pending.push_back(AgentOutput::Token(word));
            }
            self.pending.push_back(AgentOutput::TurnEnd);
            self.history.push(ChatMessage::assistant(goodbye.clone()));
            self.record_turn(Speaker::Agent, &goodbye, SystemTime::now(), None, None);
        }
        self.digits.take();
        let handoff = Handoff {
            reason_code: REASON_MAX_DURATION.into(),
            reason: Some("the call reached its maximum duration".into()),
            call_sid: self.call.as_ref().map(|c| c.call_sid.clone()),
            ..Handoff::default()
        };
        self.pending.push_back(AgentOutput::End(handoff.clone()));
        self.ended = Some(handoff);
    }

    /// Goes on with a resumed conversation: the call is live again and carried by
    /// this session, and the store must know.
    fn continue_call(&mut self, mut info: CallInfo) {
        self.resumed = true;
        info.resumed = true;
        self.observer.call_started(&info);
        self.call = Some(info);
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
        let greeting = info
            .parameters
            .remove(GREETING_PARAMETER)
            .unwrap_or_else(|| self.settings.welcome_greeting.clone());
        let resume = self.resume_with.take().filter(|_| info.may_resume);
        if let Some(Resume::Snapshot(snapshot)) = resume {
            tracing::info!(
                messages = snapshot.history.messages().len(),
                next_turn = snapshot.next_seq,
                "resuming the conversation of this call"
            );
            self.history = snapshot.history;
            self.next_seq = snapshot.next_seq;
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
            self.next_seq = next_seq;
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
        self.observer.call_started(&info);
        self.call = Some(info);
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
            && let Some(m) = &self.metrics
        {
            m.time_to_first_token.observe(from.elapsed());
        }
    }

    /// A complete keypad entry becomes one user turn.
    fn digits_entered(&mut self, digits: String) {
        self.start_reply(ChatMessage::user(format!("DTMF: {digits}")));
    }

    fn tool_context(&self) -> ToolContext {
        ToolContext {
            call_sid: self
                .call
                .as_ref()
                .map(|c| c.call_sid.clone())
                .unwrap_or_default(),
            from: self
                .call
                .as_ref()
                .map(|c| c.from.clone())
                .unwrap_or_default(),
            now: SystemTime::now(),
        }
    }

    /// Asks the model to continue the conversation so far, with the tools on offer.
    fn request_reply(&self) -> LlmStream {
        let tools = self.tools.specs(&self.tool_context());
        self.llm.stream(LlmRequest {
            messages: self.history.messages(),
            tools: &tools,
        })
    }

    /// Adds the caller's words and starts streaming a reply, replacing any reply
    /// still in flight (whose spoken part is kept, and whose talk cycle is closed).
    fn start_reply(&mut self, user: ChatMessage) {
        let prompt_in = Instant::now();
        if self.stop_reply() {
            self.pending.push_back(AgentOutput::TurnEnd);
        }
        self.record_turn(
            Speaker::Caller,
            &user.content,
            SystemTime::now(),
            None,
            None,
        );
        self.history.push(user);
        let now = Instant::now();
        self.stats.turns += 1;
        if let Some(m) = &self.metrics {
            m.turn();
        }
        self.ttft_from = Some(prompt_in);
        self.ttft_skip = self.pending.len();
        self.turn = Some(Turn {
            phase: Phase::Streaming(self.request_reply()),
            deadline: now + self.settings.llm_timeout,
            started: now,
            round_started: now,
            text: String::new(),
            round_text: String::new(),
            calls: Vec::new(),
            rounds: 0,
            llm_first_token: None,
            started_at: SystemTime::now(),
            seq: None,
            recorded_at: None,
        });
    }

    /// Drops the reply in flight, keeping what was said of it in the history (and
    /// answering any tool calls it had started, so the history stays valid).
    /// Returns whether any of it had been sent.
    fn stop_reply(&mut self) -> bool {
        let Some(turn) = self.turn.take() else {
            return false;
        };
        match turn.phase {
            Phase::Tools(round) => {
                tracing::info!(
                    tools = round.message.tool_calls.len(),
                    "cancelling the tools in flight"
                );
                let calls = round.message.tool_calls.clone();
                self.history.push(round.message);
                for call in calls {
                    let content = serde_json::json!({"error": "cancelled: the caller spoke before the tool finished; it may not have completed"}).to_string();
                    self.report_tool(&call, &content, false, SystemTime::now(), Duration::ZERO);
                    self.history.push(ChatMessage::tool(call.id, content));
                }
            }
            Phase::Streaming(_) | Phase::Idle => {
                if !turn.round_text.is_empty() {
                    self.history.push(ChatMessage::assistant(turn.round_text));
                }
            }
        }
        if turn.text.is_empty() {
            return false;
        }
        self.record_turn(
            Speaker::Agent,
            &turn.text,
            turn.started_at,
            turn.llm_first_token,
            turn.seq,
        );
        true
    }

    /// Ends the reply normally: keeps its last round and closes the talk cycle.
    fn complete_reply(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        if !turn.round_text.is_empty() {
            self.history.push(ChatMessage::assistant(turn.round_text));
        }
        if !turn.text.is_empty() {
            self.record_turn(
                Speaker::Agent,
                &turn.text,
                turn.started_at,
                turn.llm_first_token,
                turn.seq,
            );
            self.pending.push_back(AgentOutput::TurnEnd);
        }
    }

    fn on_event(&mut self, event: Option<Result<LlmEvent, LlmError>>) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        match event {
            Some(Ok(LlmEvent::Text(text))) => {
                let now = Instant::now();
                if turn.llm_first_token.is_none() {
                    let latency = now - turn.started;
                    turn.llm_first_token = Some(latency);
                    self.last_llm_first_token = Some(latency);
                    if let Some(m) = &self.metrics {
                        m.llm_first_token.observe(latency);
                    }
                }
                turn.deadline = now + self.settings.llm_timeout;
                turn.text.push_str(&text);
                turn.round_text.push_str(&text);
                self.pending.push_back(AgentOutput::Token(text));
                self.record_progress(now);
            }
            Some(Ok(LlmEvent::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            })) => {
                turn.deadline = Instant::now() + self.settings.llm_timeout;
                add_delta(&mut turn.calls, index, id, name, &arguments);
            }
            Some(Ok(LlmEvent::Finished { .. })) | None => self.finish_round(),
            Some(Err(e)) => self.fail_reply(e),
        }
    }

    /// The model finished a response: end the reply, or run the tools it asked for.
    fn finish_round(&mut self) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        if turn.calls.is_empty() {
            if turn.text.is_empty() && turn.rounds == 0 {
                self.fail_reply(LlmError::Empty);
            } else {
                self.complete_reply();
            }
            return;
        }
        let round_no = turn.rounds;
        let calls: Vec<ToolCall> = std::mem::take(&mut turn.calls)
            .into_iter()
            .enumerate()
            .map(|(i, c)| ToolCall {
                // Some servers (Ollama) send no ids; the history needs them.
                id: c
                    .id
                    .unwrap_or_else(|| format!("call_{}_{round_no}_{i}", self.next_seq)),
                name: c.name,
                arguments: c.arguments,
            })
            .collect();
        let content = std::mem::take(&mut turn.round_text);
        let mut message = ChatMessage::assistant(content.clone());
        message.tool_calls = calls.clone();
        if turn.rounds >= self.settings.max_tool_rounds {
            tracing::warn!(
                rounds = turn.rounds,
                "the model asked for more tool rounds than allowed; speaking the fallback"
            );
            turn.round_text = String::new();
            self.history.push(message);
            for call in calls {
                let content =
                    serde_json::json!({"error": "not run: too many tool calls in one reply"})
                        .to_string();
                self.report_tool(&call, &content, false, SystemTime::now(), Duration::ZERO);
                self.history.push(ChatMessage::tool(call.id, content));
            }
            self.speak_apology();
            return;
        }
        turn.rounds += 1;
        let ctx = self.tool_context();
        let runs: Vec<_> = calls
            .iter()
            .map(|c| self.tools.run(c.clone(), &ctx))
            .collect();
        tracing::info!(
            tools = ?calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            round = round_no + 1,
            "running tools"
        );
        let filler_at = (!self.settings.tool_filler.is_empty())
            .then(|| Instant::now() + self.settings.tool_filler_after);
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.phase = Phase::Tools(ToolRound {
            message,
            running: futures::future::join_all(runs).boxed(),
            filler_at,
            model_spoke: !content.is_empty(),
        });
    }

    /// Tools are slow: say the filler while they finish.
    fn speak_filler(&mut self) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        let Phase::Tools(round) = &mut turn.phase else {
            return;
        };
        round.filler_at = None;
        // A trailing space keeps the model's next words apart from the filler.
        let mut filler = format!("{} ", self.settings.tool_filler.trim_end());
        if !turn.text.is_empty() && !turn.text.ends_with(char::is_whitespace) {
            filler.insert(0, ' ');
        }
        if !round.message.content.is_empty()
            && !round.message.content.ends_with(char::is_whitespace)
        {
            round.message.content.push(' ');
        }
        round.message.content.push_str(filler.trim());
        turn.text.push_str(&filler);
        for word in crate::llm::scripted::split_words(&filler) {
            self.pending.push_back(AgentOutput::Token(word));
        }
    }

    /// The tools of this round finished: record them, carry out their effects, and
    /// ask the model again (or end the call).
    fn on_tools_done(&mut self, runs: Vec<ToolRun>) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        let Phase::Tools(round) = std::mem::replace(&mut turn.phase, Phase::Idle) else {
            return;
        };
        self.history.push(round.message);
        let mut ending: Option<Handoff> = None;
        for run in &runs {
            let content = run.content();
            self.report_tool(
                &run.call,
                &content,
                run.result.is_ok(),
                run.started_at,
                run.duration,
            );
            if let Err(e) = &run.result {
                tracing::info!(tool = %run.call.name, error = %e, "tool call failed; the model is told");
            }
            self.history
                .push(ChatMessage::tool(run.call.id.clone(), content));
            if let Some(effect) = run.effect() {
                self.apply_effect(effect.clone(), &mut ending);
            }
        }
        match ending {
            Some(handoff) => self.end_call(handoff, round.model_spoke),
            None => {
                let stream = self.request_reply();
                let Some(turn) = self.turn.as_mut() else {
                    return;
                };
                let now = Instant::now();
                turn.phase = Phase::Streaming(stream);
                turn.deadline = now + self.settings.llm_timeout;
                turn.round_started = now;
            }
        }
    }

    fn apply_effect(&mut self, effect: ToolEffect, ending: &mut Option<Handoff>) {
        let call = self.call.clone().unwrap_or_default();
        match effect {
            ToolEffect::SendDigits(digits) => {
                self.pending.push_back(AgentOutput::SendDigits(digits));
            }
            ToolEffect::SwitchLanguage(code) => {
                self.language = (code != self.settings.language).then(|| code.clone());
                self.pending.push_back(AgentOutput::SwitchLanguage(code));
            }
            ToolEffect::Appointment(a) => {
                tracing::info!(day = %a.day, "appointment booked");
                self.observer.appointment(
                    &call.call_sid,
                    &AppointmentRecord {
                        name: a.name,
                        email: a.email,
                        preferred_day: a.day,
                        preferred_time: a.time,
                        phone: a
                            .phone
                            .or_else(|| Some(call.from.clone()).filter(|f| !f.is_empty())),
                        notes: a.notes,
                        created_at: Some(SystemTime::now()),
                    },
                );
            }
            ToolEffect::EndCall { reason } if ending.is_none() => {
                *ending = Some(Handoff {
                    reason_code: REASON_END_CALL.into(),
                    reason,
                    summary: None,
                    call_sid: Some(call.call_sid).filter(|s| !s.is_empty()),
                    from: Some(call.from).filter(|s| !s.is_empty()),
                });
            }
            ToolEffect::Handoff { reason, summary } if ending.is_none() => {
                *ending = Some(Handoff {
                    reason_code: REASON_LIVE_AGENT.into(),
                    reason: Some(reason),
                    summary,
                    call_sid: Some(call.call_sid).filter(|s| !s.is_empty()),
                    from: Some(call.from).filter(|s| !s.is_empty()),
                });
            }
            ToolEffect::EndCall { .. } | ToolEffect::Handoff { .. } => {
                tracing::warn!("the model ended the call twice; keeping the first");
            }
        }
    }

    /// Says goodbye (unless the model already did), closes the talk cycle, and ends
    /// the call. Nothing more is said afterwards.
    fn end_call(&mut self, handoff: Handoff, model_spoke: bool) {
        tracing::info!(reason_code = %handoff.reason_code, "the agent is ending the call");
        if !model_spoke && let Some(turn) = self.turn.as_mut() {
            let mut words = if handoff.is_live_agent() {
                self.settings.handoff_message.clone()
            } else {
                self.settings.goodbye_message.clone()
            };
            if !words.is_empty() {
                self.history.push(ChatMessage::assistant(words.clone()));
                if !turn.text.is_empty() && !turn.text.ends_with(char::is_whitespace) {
                    words.insert(0, ' ');
                }
                turn.text.push_str(&words);
                for word in crate::llm::scripted::split_words(&words) {
                    self.pending.push_back(AgentOutput::Token(word));
                }
            }
        }
        self.complete_reply();
        // Keys pressed during the goodbye are not an entry any more.
        self.digits.take();
        self.pending.push_back(AgentOutput::End(handoff.clone()));
        self.ended = Some(handoff);
    }

    fn report_tool(
        &mut self,
        call: &ToolCall,
        result: &str,
        ok: bool,
        started_at: SystemTime,
        duration: Duration,
    ) {
        self.stats.tool_calls += 1;
        if let Some(info) = &self.call {
            self.observer.tool_call(
                &info.call_sid,
                &ToolCallRecord {
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                    result: result.to_string(),
                    ok,
                    started_at,
                    duration_ms: duration.as_millis() as u64,
                },
            );
        }
    }

    /// Ends the reply in flight with the spoken apology; the call goes on.
    fn fail_reply(&mut self, error: LlmError) {
        self.stats.llm_errors += 1;
        self.stats.last_error = Some(error.kind());
        if let Some(m) = &self.metrics {
            m.llm_error(error.kind());
        }
        tracing::warn!(error = %error, kind = error.kind(), "LLM reply failed; speaking the fallback");
        self.speak_apology();
    }

    /// Speaks the fallback message as the end of the reply in flight.
    fn speak_apology(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        let mut apology = self.settings.fallback_message.clone();
        if !turn.text.is_empty() && !turn.text.ends_with(char::is_whitespace) {
            apology.insert(0, ' ');
        }
        for word in crate::llm::scripted::split_words(&apology) {
            self.pending.push_back(AgentOutput::Token(word));
        }
        self.pending.push_back(AgentOutput::TurnEnd);
        let said = format!("{}{apology}", turn.text);
        self.record_turn(
            Speaker::Agent,
            &said,
            turn.started_at,
            turn.llm_first_token,
            turn.seq,
        );
        let round_said = format!("{}{apology}", turn.round_text);
        self.history
            .push(ChatMessage::assistant(round_said.trim_start().to_string()));
    }
}

/// Adds one streamed fragment to the calls being assembled.
fn add_delta(
    calls: &mut Vec<PartialCall>,
    index: usize,
    id: Option<String>,
    name: Option<String>,
    arguments: &str,
) {
    if index >= MAX_CALLS_PER_ROUND {
        tracing::warn!(index, "ignoring a tool call past the per-response limit");
        return;
    }
    // A fragment with a new id at a taken index is a new call (servers that send
    // whole calls without an index).
    let slot = match (&id, calls.get(index)) {
        (Some(new), Some(existing))
            if existing.id.as_ref().is_some_and(|old| old != new)
                && calls.len() < MAX_CALLS_PER_ROUND =>
        {
            calls.push(PartialCall::default());
            calls.len() - 1
        }
        _ => {
            while calls.len() <= index {
                calls.push(PartialCall::default());
            }
            index
        }
    };
    let call = &mut calls[slot];
    if let Some(id) = id {
        call.id.get_or_insert(id);
    }
    if let Some(name) = name
        && call.name != name
    {
        call.name.push_str(&name);
    }
    call.arguments.push_str(arguments);
}

/// The next step of the reply in flight: an LLM event (or a timeout error once the
/// deadline passes), the tools finishing, or the time to speak a filler. Pending
/// forever when no reply is in flight.
async fn next_step(turn: &mut Option<Turn>, llm_timeout: Duration) -> Step {
    let Some(turn) = turn.as_mut() else {
        return std::future::pending().await;
    };
    match &mut turn.phase {
        Phase::Streaming(stream) => {
            match tokio::time::timeout_at(turn.deadline, stream.next()).await {
                Ok(event) => Step::Llm(event),
                Err(_) => Step::Llm(Some(Err(LlmError::Timeout(llm_timeout)))),
            }
        }
        Phase::Tools(round) => {
            let filler_at = round.filler_at;
            let filler = async move {
                match filler_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                runs = &mut round.running => Step::ToolsDone(runs),
                () = filler => Step::Filler,
            }
        }
        Phase::Idle => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::scripted::ScriptedProvider;
    use crate::llm::{LlmProvider, LlmRequest, LlmStream, Role};
    use futures::stream;

    fn settings() -> Arc<AgentSettings> {
        Arc::new(AgentSettings {
            system_prompt: "sys".into(),
            welcome_greeting: "Olá!".into(),
            fallback_message: "Desculpe.".into(),
            llm_timeout: Duration::from_millis(500),
            dtmf_timeout: Duration::from_millis(1500),
            max_tool_rounds: 3,
            tool_filler: "Um momento.".into(),
            tool_filler_after: Duration::from_millis(1000),
            goodbye_message: "Tchau!".into(),
            handoff_message: "Transferindo.".into(),
            language: "pt-BR".into(),
            max_prompt_bytes: 64,
            max_history_bytes: 64 * 1024,
        })
    }

    #[tokio::test]
    async fn time_up_says_goodbye_and_ends_the_call() {
        let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
        agent.handle(AgentInput::CallStarted(CallInfo::default()));
        agent.handle(AgentInput::TimeUp);
        assert_eq!(collect_reply(&mut agent).await, "Tchau!");
        match agent.next_output().await {
            AgentOutput::End(handoff) => assert_eq!(handoff.reason_code, REASON_MAX_DURATION),
            other => panic!("unexpected {other:?}"),
        }
        agent.handle(AgentInput::UserText {
            text: "ainda aí?".into(),
            lang: None,
        });
        assert!(!agent.is_replying(), "nothing more is said");
    }

    #[tokio::test]
    async fn an_oversized_utterance_is_cut() {
        let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
        agent.handle(AgentInput::CallStarted(CallInfo::default()));
        agent.handle(AgentInput::UserText {
            text: "ã".repeat(1000),
            lang: None,
        });
        let user = agent
            .history()
            .iter()
            .rfind(|m| m.role == Role::User)
            .unwrap();
        assert_eq!(
            user.content,
            "ã".repeat(32),
            "64 bytes, on a character boundary"
        );
    }

    async fn collect_reply(agent: &mut Agent) -> String {
        let mut text = String::new();
        loop {
            match agent.next_output().await {
                AgentOutput::Token(t) => text.push_str(&t),
                AgentOutput::TurnEnd => return text,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A provider whose stream never yields.
    struct Silent;
    impl LlmProvider for Silent {
        fn name(&self) -> &'static str {
            "silent"
        }
        fn model(&self) -> &str {
            "silent"
        }
        fn stream(&self, _: LlmRequest<'_>) -> LlmStream {
            stream::pending().boxed()
        }
    }

    #[tokio::test]
    async fn reply_is_streamed_and_recorded() {
        let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
        agent.handle(AgentInput::CallStarted(CallInfo::default()));
        agent.handle(AgentInput::UserText {
            text: "oi".into(),
            lang: None,
        });
        let reply = collect_reply(&mut agent).await;
        assert_eq!(reply, crate::llm::scripted::reply_to("oi"));
        let roles: Vec<_> = agent.history().iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            vec![Role::System, Role::Assistant, Role::User, Role::Assistant]
        );
        assert_eq!(agent.history()[1].content, "Olá!");
    }

    #[test]
    fn a_per_call_greeting_replaces_the_configured_one() {
        let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
        let parameters = [
            (
                GREETING_PARAMETER.to_string(),
                "Oi Ana, aqui é a Clínica Sol!".to_string(),
            ),
            ("lead".to_string(), "Ana".to_string()),
        ];
        agent.handle(AgentInput::CallStarted(CallInfo {
            parameters: parameters.into_iter().collect(),
            ..CallInfo::default()
        }));
        let history = agent.history();
        assert_eq!(history[1].content, "Oi Ana, aqui é a Clínica Sol!");
        assert!(
            history[0].content.contains("lead: Ana"),
            "{}",
            history[0].content
        );
        assert!(!history[0].content.contains(GREETING_PARAMETER));
        assert!(
            !agent
                .call()
                .unwrap()
                .parameters
                .contains_key(GREETING_PARAMETER)
        );

        // An empty per-call greeting means Twilio said nothing first.
        let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
        agent.handle(AgentInput::CallStarted(CallInfo {
            parameters: [(GREETING_PARAMETER.to_string(), String::new())]
                .into_iter()
                .collect(),
            ..CallInfo::default()
        }));
        assert_eq!(agent.history().len(), 1);
        assert_eq!(agent.history()[0].content, "sys");
    }

    #[tokio::test(start_paused = true)]
    async fn digits_are_flushed_after_the_timeout() {
        let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
        agent.handle(AgentInput::Digit('4'));
        agent.handle(AgentInput::Digit('2'));
        let reply = collect_reply(&mut agent).await;
        assert!(reply.contains("4 2"), "{reply}");
        assert_eq!(agent.history()[1].content, "DTMF: 42");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_llm_times_out_into_the_fallback() {
        let mut agent = Agent::new(Arc::new(Silent), settings());
        agent.handle(AgentInput::UserText {
            text: "oi".into(),
            lang: None,
        });
        assert_eq!(collect_reply(&mut agent).await, "Desculpe.");
        assert_eq!(agent.stats().llm_errors, 1);
        assert_eq!(agent.stats().last_error, Some("timeout"));
        assert!(!agent.is_replying());
    }

    /// A provider that asks for `end_call` on every request.
    struct Hangs;
    impl LlmProvider for Hangs {
        fn name(&self) -> &'static str {
            "hangs"
        }
        fn model(&self) -> &str {
            "hangs"
        }
        fn stream(&self, _: LlmRequest<'_>) -> LlmStream {
            stream::iter([
                Ok(LlmEvent::ToolCallDelta {
                    index: 0,
                    id: Some("c1".into()),
                    name: Some("end_call".into()),
                    arguments: "{\"rea".into(),
                }),
                Ok(LlmEvent::ToolCallDelta {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: "son\":\"fim\"}".into(),
                }),
                Ok(LlmEvent::Finished {
                    reason: Some("tool_calls".into()),
                }),
            ])
            .boxed()
        }
    }

    #[tokio::test]
    async fn the_end_survives_an_interrupt_during_the_goodbye() {
        let config = Config::from_vars(Default::default()).unwrap();
        let mut agent = Agent::new(Arc::new(Hangs), settings())
            .with_tools(Arc::new(ToolRegistry::from_config(&config)));
        agent.handle(AgentInput::CallStarted(CallInfo {
            call_sid: "CA1".into(),
            ..CallInfo::default()
        }));
        agent.handle(AgentInput::UserText {
            text: "tchau".into(),
            lang: None,
        });
        assert_eq!(
            agent.next_output().await,
            AgentOutput::Token("Tchau!".into())
        );
        agent.handle(AgentInput::Interrupt {
            heard: String::new(),
        });
        let AgentOutput::End(handoff) = agent.next_output().await else {
            panic!("the end was lost")
        };
        assert_eq!(handoff.reason_code, REASON_END_CALL);
        assert_eq!(handoff.reason.as_deref(), Some("fim"));
        // Nothing more is said once the call is ending.
        agent.handle(AgentInput::UserText {
            text: "espera".into(),
            lang: None,
        });
        assert!(!agent.is_replying());
        assert!(agent.ended().is_some());
    }
}
