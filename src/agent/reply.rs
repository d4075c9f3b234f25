//! A reply in flight and its steps: streaming the model's text, assembling tool
//! calls from their deltas, running a round of tools (with the filler when they are
//! slow), applying their effects (an end, a transfer, keys, a language), and the
//! spoken apology when the LLM fails. The [`Agent`] methods here are driven by
//! `mod.rs`'s `handle` and `next_output`. May import the LLM, tools and metrics.

use super::Latency;
use super::*;

/// Most tool calls taken from one model response.
const MAX_CALLS_PER_ROUND: usize = 16;

/// A tool call being assembled from streamed deltas.
#[derive(Debug, Default)]
pub(super) struct PartialCall {
    pub(super) id: Option<String>,
    pub(super) name: String,
    pub(super) arguments: String,
}

/// Tools running for the reply in flight.
pub(super) struct ToolRound {
    /// The assistant message that asked for them (its text plus any filler spoken).
    pub(super) message: ChatMessage,
    pub(super) running: BoxFuture<'static, Vec<ToolRun>>,
    /// When to speak the filler, if not yet spoken.
    pub(super) filler_at: Option<Instant>,
    /// Whether the model said anything in the round that asked for the tools.
    pub(super) model_spoke: bool,
}

pub(super) enum Phase {
    Streaming(LlmStream),
    Tools(ToolRound),
    /// Between phases (never polled).
    Idle,
}

/// A reply being produced.
pub(super) struct Turn {
    pub(super) phase: Phase,
    /// When the streaming phase fails if nothing more arrives.
    pub(super) deadline: Instant,
    pub(super) started: Instant,
    /// Start of the current LLM round, for the timeout message.
    pub(super) round_started: Instant,
    /// Text spoken so far in this reply, every round and filler included.
    pub(super) text: String,
    /// Text of the current LLM round.
    pub(super) round_text: String,
    /// Tool calls of the current LLM round, by index.
    pub(super) calls: Vec<PartialCall>,
    /// Tool rounds run so far.
    pub(super) rounds: u32,
    /// Time from request to the LLM's first token.
    pub(super) llm_first_token: Option<Duration>,
    /// Time from the caller's turn to the reply's first token out.
    pub(super) first_out: Option<Duration>,
    /// Wall-clock start, for the transcript.
    pub(super) started_at: SystemTime,
    /// The transcript number taken when the first words went out.
    pub(super) seq: Option<u32>,
    /// When the text so far was last recorded.
    pub(super) recorded_at: Option<Instant>,
}

impl Turn {
    /// Both first-token times of this reply, as far as they are known.
    pub(super) fn latency(&self) -> Latency {
        Latency {
            first_token: self.first_out,
            llm_first_token: self.llm_first_token,
        }
    }
}

/// What the reply in flight did next.
pub(super) enum Step {
    Llm(Option<Result<LlmEvent, LlmError>>),
    ToolsDone(Vec<ToolRun>),
    Filler,
}

impl Agent {
    pub(super) fn tool_context(&self) -> ToolContext {
        ToolContext {
            call_sid: self
                .log
                .call()
                .map(|c| c.call_sid.clone())
                .unwrap_or_default(),
            from: self.log.call().map(|c| c.from.clone()).unwrap_or_default(),
            now: SystemTime::now(),
        }
    }

    /// Asks the model to continue the conversation so far, with the tools on offer.
    pub(super) fn request_reply(&self) -> LlmStream {
        let tools = self.tools.specs(&self.tool_context());
        self.llm.stream(LlmRequest {
            messages: self.history.messages(),
            tools: &tools,
        })
    }

    /// Adds the caller's words and starts streaming a reply, replacing any reply
    /// still in flight (whose spoken part is kept, and whose talk cycle is closed).
    pub(super) fn start_reply(&mut self, user: ChatMessage) {
        let prompt_in = Instant::now();
        if self.stop_reply() {
            self.pending.push_back(AgentOutput::TurnEnd);
        }
        self.record_turn(
            Speaker::Caller,
            &user.content,
            SystemTime::now(),
            Latency::default(),
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
            first_out: None,
            started_at: SystemTime::now(),
            seq: None,
            recorded_at: None,
        });
    }

    /// Drops the reply in flight, keeping what was said of it in the history (and
    /// answering any tool calls it had started, so the history stays valid).
    /// Returns whether any of it had been sent.
    pub(super) fn stop_reply(&mut self) -> bool {
        let Some(mut turn) = self.turn.take() else {
            return false;
        };
        match std::mem::replace(&mut turn.phase, Phase::Idle) {
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
                    let said = std::mem::take(&mut turn.round_text);
                    self.history.push(ChatMessage::assistant(said));
                }
            }
        }
        if turn.text.is_empty() {
            return false;
        }
        self.record_reply(&turn);
        true
    }

    /// Records a reply that is over (complete, or cut short) under its number.
    fn record_reply(&mut self, turn: &Turn) {
        self.record_turn(
            Speaker::Agent,
            &turn.text,
            turn.started_at,
            turn.latency(),
            turn.seq,
        );
    }

    /// Ends the reply normally: keeps its last round and closes the talk cycle.
    pub(super) fn complete_reply(&mut self) {
        let Some(mut turn) = self.turn.take() else {
            return;
        };
        if !turn.round_text.is_empty() {
            let said = std::mem::take(&mut turn.round_text);
            self.history.push(ChatMessage::assistant(said));
        }
        if !turn.text.is_empty() {
            self.record_reply(&turn);
            self.pending.push_back(AgentOutput::TurnEnd);
            self.end_if_goodbye(&turn.text);
        }
    }

    pub(super) fn on_event(&mut self, event: Option<Result<LlmEvent, LlmError>>) {
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
    pub(super) fn finish_round(&mut self) {
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
                    .unwrap_or_else(|| format!("call_{}_{round_no}_{i}", self.log.next_seq())),
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
    pub(super) fn speak_filler(&mut self) {
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
            round.message.content.to_mut().push(' ');
        }
        round.message.content.to_mut().push_str(filler.trim());
        turn.text.push_str(&filler);
        for word in crate::llm::scripted::split_words(&filler) {
            self.pending.push_back(AgentOutput::Token(word));
        }
    }

    /// The tools of this round finished: record them, carry out their effects, and
    /// ask the model again (or end the call).
    pub(super) fn on_tools_done(&mut self, runs: Vec<ToolRun>) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        let Phase::Tools(round) = std::mem::replace(&mut turn.phase, Phase::Idle) else {
            return;
        };
        self.history.push(round.message);
        let mut ending: Option<Handoff> = None;
        for run in &runs {
            self.stats.tool_calls += 1;
            let follow_up = self.log.tool_run(run);
            if let Err(e) = &run.result {
                tracing::info!(tool = %run.call.name, error = %e, "tool call failed; the model is told");
            }
            self.history
                .push(ChatMessage::tool(run.call.id.clone(), run.content()));
            if let Some(follow_up) = follow_up {
                self.follow_up(follow_up, &mut ending);
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

    /// Carries out what a tool run asked of the call; the first ending wins.
    pub(super) fn follow_up(&mut self, follow_up: ToolFollowUp, ending: &mut Option<Handoff>) {
        match follow_up {
            ToolFollowUp::SendDigits(digits) => {
                self.pending.push_back(AgentOutput::SendDigits(digits));
            }
            ToolFollowUp::SwitchLanguage(code) => {
                self.language = (code != self.settings.language).then(|| code.clone());
                self.pending.push_back(AgentOutput::SwitchLanguage(code));
            }
            ToolFollowUp::End(handoff) if ending.is_none() => *ending = Some(handoff),
            ToolFollowUp::End(_) => {
                tracing::warn!("the model ended the call twice; keeping the first");
            }
        }
    }

    /// Says goodbye (unless the model already did), closes the talk cycle, and ends
    /// the call. Nothing more is said afterwards.
    pub(super) fn end_call(&mut self, handoff: Handoff, model_spoke: bool) {
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
        // Ending already: the goodbye check of `complete_reply` must not end it again.
        self.ended = Some(handoff.clone());
        self.complete_reply();
        // Keys pressed during the goodbye are not an entry any more.
        self.digits.take();
        self.pending.push_back(AgentOutput::End(Box::new(handoff)));
    }

    /// Records a tool call that did not run (cancelled or refused).
    pub(super) fn report_tool(
        &mut self,
        call: &ToolCall,
        result: &str,
        ok: bool,
        started_at: SystemTime,
        duration: Duration,
    ) {
        self.stats.tool_calls += 1;
        self.log.tool_call(call, result, ok, started_at, duration);
    }

    /// Ends the reply in flight with the spoken apology; the call goes on.
    pub(super) fn fail_reply(&mut self, error: LlmError) {
        self.stats.llm_errors += 1;
        self.stats.last_error = Some(error.kind());
        if let Some(m) = &self.metrics {
            m.llm_error(error.kind());
        }
        tracing::warn!(error = %error, kind = error.kind(), "LLM reply failed; speaking the fallback");
        self.speak_apology();
    }

    /// Speaks the fallback message as the end of the reply in flight.
    pub(super) fn speak_apology(&mut self) {
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
            turn.latency(),
            turn.seq,
        );
        let round_said = format!("{}{apology}", turn.round_text);
        self.history
            .push(ChatMessage::assistant(round_said.trim_start().to_string()));
    }
}

/// Adds one streamed fragment to the calls being assembled.
pub(super) fn add_delta(
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
pub(super) async fn next_step(turn: &mut Option<Turn>, llm_timeout: Duration) -> Step {
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
