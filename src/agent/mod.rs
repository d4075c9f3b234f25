//! The agent core: one [`Agent`] per call holds the conversation, streams replies
//! from the LLM, cancels them on interruption, gathers keypad digits, and falls back
//! to a spoken apology when the LLM fails. It knows nothing about the transport.
//!
//! A transport drives it with two calls inside its own `select!` loop:
//! [`Agent::handle`] for each [`AgentInput`], and [`Agent::next_output`], a
//! cancel-safe future that yields the next [`AgentOutput`] (a token, the end of a
//! reply) as the LLM produces it. There is no task per agent: the in-flight reply is
//! a stream polled by the transport's loop, so dropping it (on interrupt, on a new
//! prompt, at hang-up) drops the upstream HTTP request at once.

pub mod event;
pub mod history;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::time::Instant;

pub use event::{
    AgentInput, AgentOutput, AppointmentRecord, CallInfo, CallObserver, CallSummary, NoObserver,
    Speaker, ToolCallRecord, TurnRecord,
};
pub use history::History;

use crate::config::Config;
use crate::llm::{ChatMessage, LlmError, LlmEvent, LlmProvider, LlmRequest, LlmStream};
use crate::metrics::Metrics;

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
}

impl AgentSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            system_prompt: config.system_prompt.clone(),
            welcome_greeting: config.relay.welcome_greeting.clone(),
            fallback_message: config.fallback_message.clone(),
            llm_timeout: config.llm.timeout,
            dtmf_timeout: config.dtmf_timeout,
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
}

/// A reply being streamed.
struct Turn {
    stream: LlmStream,
    /// When the reply fails if nothing more arrives.
    deadline: Instant,
    started: Instant,
    /// Text produced so far (and so sent to the transport).
    text: String,
    /// Time from request to the LLM's first token.
    llm_first_token: Option<Duration>,
    /// Wall-clock start, for the transcript.
    started_at: SystemTime,
}

/// The conversation of one call.
pub struct Agent {
    llm: Arc<dyn LlmProvider>,
    settings: Arc<AgentSettings>,
    history: History,
    turn: Option<Turn>,
    pending: VecDeque<AgentOutput>,
    digits: String,
    digits_deadline: Option<Instant>,
    call: Option<CallInfo>,
    stats: CallStats,
    /// Time to the LLM's first token of the most recent reply.
    last_llm_first_token: Option<Duration>,
    observer: Arc<dyn CallObserver>,
    /// Sequence number of the next transcript turn.
    next_seq: u32,
    /// The newest agent turn recorded, which an interruption refers to.
    last_agent_seq: Option<u32>,
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
        let history = History::new(settings.system_prompt.clone());
        Self {
            llm,
            settings,
            history,
            turn: None,
            pending: VecDeque::new(),
            digits: String::new(),
            digits_deadline: None,
            call: None,
            stats: CallStats::default(),
            last_llm_first_token: None,
            observer: Arc::new(NoObserver),
            next_seq: 0,
            last_agent_seq: None,
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

    /// Ends the call's record: stops any reply and tells the observer how it ended.
    pub fn finish(&mut self, status: &str, handoff_data: Option<String>) {
        self.stop_reply();
        self.clear_pending();
        if let Some(call) = &self.call {
            self.observer.call_ended(
                &call.call_sid,
                &CallSummary {
                    status: status.to_string(),
                    handoff_data,
                    turns: self.stats.turns,
                    interrupts: self.stats.interrupts,
                    llm_errors: self.stats.llm_errors,
                },
            );
        }
    }

    /// Records a finished transcript turn and returns its sequence number.
    fn record_turn(
        &mut self,
        speaker: Speaker,
        text: &str,
        started_at: SystemTime,
        time_to_first_token: Option<Duration>,
    ) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if speaker == Speaker::Agent {
            self.last_agent_seq = Some(seq);
        }
        if let Some(call) = &self.call {
            self.observer.turn(
                &call.call_sid,
                &TurnRecord {
                    seq,
                    speaker,
                    text: text.to_string(),
                    started_at,
                    ended_at: SystemTime::now(),
                    time_to_first_token_ms: time_to_first_token.map(|d| d.as_millis() as u64),
                },
            );
        }
        seq
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

    /// Time to the LLM's first token of the newest reply that produced one.
    pub fn last_llm_first_token(&self) -> Option<Duration> {
        self.last_llm_first_token
    }

    /// Applies one input. Outputs it causes are queued for [`Agent::next_output`].
    pub fn handle(&mut self, input: AgentInput) {
        match input {
            AgentInput::CallStarted(info) => {
                if !info.parameters.is_empty() {
                    let mut params: Vec<_> = info.parameters.iter().collect();
                    params.sort();
                    let listed = params
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    self.history.set_system_prompt(format!(
                        "{}\n\nDados desta ligação: {listed}",
                        self.settings.system_prompt
                    ));
                }
                // Twilio speaks the greeting itself; the model should know it did.
                let greeted = self
                    .history
                    .messages()
                    .iter()
                    .any(|m| m.role == crate::llm::Role::Assistant);
                if !self.settings.welcome_greeting.is_empty() && !greeted {
                    self.history.push(ChatMessage::assistant(
                        self.settings.welcome_greeting.clone(),
                    ));
                }
                self.call = Some(info);
            }
            AgentInput::UserText { text, .. } => {
                let text = text.trim();
                if text.is_empty() {
                    return;
                }
                self.start_reply(ChatMessage::user(text));
            }
            AgentInput::Digit(d) => {
                if !matches!(d, '0'..='9' | '*' | '#') {
                    tracing::warn!(digit = %d, "ignoring an invalid DTMF digit");
                    return;
                }
                self.digits.push(d);
                if d == '#' || self.digits.len() >= 32 {
                    self.flush_digits();
                } else {
                    self.digits_deadline = Some(Instant::now() + self.settings.dtmf_timeout);
                }
            }
            AgentInput::Interrupt { heard } => {
                self.stats.interrupts += 1;
                if let Some(m) = &self.metrics {
                    m.interrupt();
                }
                self.stop_reply();
                // Nothing more of the interrupted reply may reach the caller.
                self.clear_pending();
                let kept = self.history.truncate_to_heard(&heard);
                if let (Some(kept), Some(seq), Some(call)) = (kept, self.last_agent_seq, &self.call)
                {
                    self.observer.turn_interrupted(&call.call_sid, seq, &kept);
                }
            }
            AgentInput::Hangup => {
                self.stop_reply();
                self.clear_pending();
            }
        }
    }

    /// The next thing for the transport to do. Cancel-safe: dropping the future
    /// loses nothing. Pending forever when there is nothing to do.
    pub async fn next_output(&mut self) -> AgentOutput {
        loop {
            if let Some(out) = self.pending.pop_front() {
                self.note_output(&out);
                return out;
            }
            let digits_deadline = self.digits_deadline;
            let digits_due = async move {
                match digits_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = next_event(&mut self.turn) => self.on_event(event),
                () = digits_due => self.flush_digits(),
            }
        }
    }

    /// Drops every queued output (nothing more of a stopped reply may be said).
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

    fn flush_digits(&mut self) {
        self.digits_deadline = None;
        if self.digits.is_empty() {
            return;
        }
        let digits = std::mem::take(&mut self.digits);
        self.start_reply(ChatMessage::user(format!("DTMF: {digits}")));
    }

    /// Adds the caller's words and starts streaming a reply, replacing any reply
    /// still in flight (whose spoken part is kept, and whose talk cycle is closed).
    fn start_reply(&mut self, user: ChatMessage) {
        let prompt_in = Instant::now();
        if self.stop_reply() {
            self.pending.push_back(AgentOutput::TurnEnd);
        }
        self.record_turn(Speaker::Caller, &user.content, SystemTime::now(), None);
        self.history.push(user);
        let request = LlmRequest {
            messages: self.history.messages().to_vec(),
            tools: Vec::new(),
        };
        let now = Instant::now();
        self.stats.turns += 1;
        if let Some(m) = &self.metrics {
            m.turn();
        }
        self.ttft_from = Some(prompt_in);
        self.ttft_skip = self.pending.len();
        self.turn = Some(Turn {
            stream: self.llm.stream(request),
            deadline: now + self.settings.llm_timeout,
            started: now,
            text: String::new(),
            llm_first_token: None,
            started_at: SystemTime::now(),
        });
    }

    /// Drops the reply in flight, keeping what was produced of it in the history.
    /// Returns whether any of it had been sent.
    fn stop_reply(&mut self) -> bool {
        match self.turn.take() {
            Some(turn) if !turn.text.is_empty() => {
                self.record_turn(
                    Speaker::Agent,
                    &turn.text,
                    turn.started_at,
                    turn.llm_first_token,
                );
                self.history.push(ChatMessage::assistant(turn.text));
                true
            }
            _ => false,
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
                self.pending.push_back(AgentOutput::Token(text));
            }
            Some(Ok(LlmEvent::ToolCallDelta { .. })) => {
                // No tools are offered yet; keep the reply alive.
                turn.deadline = Instant::now() + self.settings.llm_timeout;
            }
            Some(Ok(LlmEvent::Finished { .. })) | None => {
                if turn.text.is_empty() {
                    self.fail_reply(LlmError::Empty);
                } else {
                    self.stop_reply();
                    self.pending.push_back(AgentOutput::TurnEnd);
                }
            }
            Some(Err(e)) => self.fail_reply(e),
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
        self.record_turn(Speaker::Agent, &said, turn.started_at, turn.llm_first_token);
        self.history.push(ChatMessage::assistant(said));
    }
}

/// The next event of the reply in flight, or a timeout error once its deadline
/// passes. Pending forever when no reply is in flight.
async fn next_event(turn: &mut Option<Turn>) -> Option<Result<LlmEvent, LlmError>> {
    let Some(turn) = turn.as_mut() else {
        return std::future::pending().await;
    };
    let limit = turn.deadline - turn.started;
    match tokio::time::timeout_at(turn.deadline, turn.stream.next()).await {
        Ok(event) => event,
        Err(_) => Some(Err(LlmError::Timeout(limit.min(Duration::from_secs(3600))))),
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
        })
    }

    async fn collect_reply(agent: &mut Agent) -> String {
        let mut text = String::new();
        loop {
            match agent.next_output().await {
                AgentOutput::Token(t) => text.push_str(&t),
                AgentOutput::TurnEnd => return text,
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
        fn stream(&self, _: LlmRequest) -> LlmStream {
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
}
