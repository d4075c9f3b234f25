//! One SIP call after its webhook: accept it with the agent's session, open the
//! sideband WebSocket, and run one `select!` loop over the sideband's events, the
//! tools in flight, the keypad, the goodbye deadline, the call's time limit and the
//! server's stop signal. OpenAI plays the audio; we keep the records (through the
//! agent core's [`CallLog`]), run the tools and end or transfer the call through
//! call control. May import `agent`, `tools`, `speech` (the sideband plumbing and
//! the Realtime protocol), `metrics` and `config`.

use crate::agent::Latency;
use crate::agent::endings::SPEECH_PER_CHAR;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::control::{Control, refer_target};
use super::protocol::Surface;
use crate::agent::dtmf::{DigitBuffer, sleep_until_opt};
use crate::agent::{
    AgentDeps, CallInfo, CallLog, CallOpening, CallSummary, Handoff, REASON_END_CALL,
    REASON_MAX_DURATION, Speaker, ToolFollowUp, greeting_instructions, language_instructions,
};
use crate::config::{BuiltinTool, Config};
use crate::llm::ToolCall;
use crate::metrics::CallMode;
use crate::speech::realtime::{
    ClientEvent, ConversationSettings, FunctionCall, Item, ResponseParams, ServerEvent, Session,
};
use crate::speech::ws::{self, WsLink};
use crate::speech::{Service, SpeechError};
use crate::tools::{ToolContext, ToolRun};

/// Built-in tools a SIP call cannot carry out: OpenAI plays the audio, so we
/// cannot press keys towards the far end.
pub const SIP_UNSUPPORTED_TOOLS: &[BuiltinTool] = &[BuiltinTool::SendDtmf];
/// How long an ending call waits for its goodbye to be spoken.
const GOODBYE_WAIT: Duration = Duration::from_secs(15);
/// Tools running at once in one call, at most.
const MAX_RUNNING_TOOLS: usize = 8;
/// Longest transcript kept from one event.
const MAX_TRANSCRIPT_BYTES: usize = 16 * 1024;

/// Everything a SIP call needs from the server.
#[derive(Clone)]
pub struct SipDeps {
    pub config: Arc<Config>,
    pub agent: AgentDeps,
    pub control: Control,
    /// Cancelled when the server's drain time is up: end the call now.
    pub stop: CancellationToken,
}

impl SipDeps {
    /// When the caller's silence is due if its clock starts `after` from now
    /// (`SILENCE_TIMEOUT_SECS` of the call's agent; `None` when it is off).
    fn silence_due(&self, after: Duration) -> Option<Instant> {
        self.config
            .endings
            .silence_timeout
            .map(|timeout| Instant::now() + after + timeout)
    }
}

/// How a SIP call went, for its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipCallStats {
    pub accepted: bool,
    pub turns: u32,
    pub tool_calls: u32,
    pub errors: u32,
    /// How it ended: `completed`, `handoff`, `failed`.
    pub status: String,
}

/// Accepts the call on `surface` and runs it to its end.
pub async fn run(deps: SipDeps, surface: Surface, info: CallInfo) -> SipCallStats {
    let opening = CallOpening::new(&deps.agent.settings, &info.parameters);
    let instructions = opening.instructions(&deps.agent.settings);
    let tool_ctx = ToolContext::for_call(&info.call_sid, &info.from);
    let tools = deps.agent.realtime_tools(&tool_ctx, SIP_UNSUPPORTED_TOOLS);
    let language = crate::speech::language_code(&deps.config.relay.language);
    let body = surface.accept_body(&deps.config.sip, &instructions, &language, &tools);
    if let Err(e) = deps.control.accept(&surface, body).await {
        tracing::error!(error = %e, "could not accept the SIP call");
        return SipCallStats {
            status: "failed".into(),
            ..SipCallStats::default()
        };
    }
    tracing::info!(from = %info.from, to = %info.to, "SIP call accepted");
    let metrics = deps.agent.metrics.clone();
    let _active = metrics.call_started(CallMode::Sip);
    let mut log = CallLog::new(deps.agent.observer.clone());
    log.started(&info);
    // Armed from the start; the greeting's response holds it until heard.
    let first_silence = deps.silence_due(Duration::ZERO);
    let call = SipCall {
        surface,
        log,
        instructions,
        tool_ctx,
        digits: DigitBuffer::new(deps.agent.settings.dtmf_timeout),
        running: FuturesUnordered::new(),
        ending: None,
        goodbye_asked: false,
        goodbye_response: None,
        stats: SipCallStats {
            accepted: true,
            ..SipCallStats::default()
        },
        reconnected: false,
        silence_due: first_silence,
        silences: 0,
        reply_chars: 0,
        said_goodbye: false,
        deps,
    };
    let greeting = (!opening.greeting.is_empty()).then_some(opening.greeting);
    call.run(greeting).await
}

/// One call in progress.
struct SipCall {
    deps: SipDeps,
    surface: Surface,
    log: CallLog,
    /// The session's instructions at accept (system prompt and call data).
    instructions: String,
    tool_ctx: ToolContext,
    digits: DigitBuffer,
    running: FuturesUnordered<BoxFuture<'static, ToolRun>>,
    /// The call ends after the goodbye (or by the deadline).
    ending: Option<(Handoff, Instant)>,
    /// A goodbye response was asked for; its id once created.
    goodbye_asked: bool,
    goodbye_response: Option<String>,
    stats: SipCallStats,
    /// The sideband was opened a second time already.
    reconnected: bool,
    /// When the caller's silence is due (`SILENCE_TIMEOUT_SECS` after the
    /// model's words had time to be heard, or after the caller last spoke).
    silence_due: Option<Instant>,
    /// Silences in a row: the first asks, the second says goodbye, a third ends.
    silences: u8,
    /// Characters of the model's reply in progress.
    reply_chars: usize,
    /// The reply in progress ended its words with a goodbye (`END_ON_GOODBYE`).
    said_goodbye: bool,
}

/// What ended the loop.
enum Finish {
    /// Hang up, or transfer when the handoff says so.
    End(Handoff),
    /// The sideband is gone for good: hang up.
    Lost,
    /// OpenAI closed the sideband normally: the call is over (the caller hung up).
    Over,
}

impl SipCall {
    async fn run(mut self, greeting: Option<String>) -> SipCallStats {
        let finish = match self.open().await {
            Ok(mut link) => {
                if let Some(greeting) = greeting {
                    let response = ResponseParams {
                        instructions: Some(greeting_instructions(&self.instructions, &greeting)),
                    };
                    self.send(
                        &link,
                        ClientEvent::CreateResponse {
                            response: Some(response),
                        },
                    );
                    // Its words are recorded from the model's transcript.
                }
                let finish = self.serve(&mut link).await;
                link.close().await;
                finish
            }
            Err(e) => {
                tracing::error!(error = %e, "the SIP sideband could not be opened");
                self.stats.errors += 1;
                Finish::Lost
            }
        };
        self.finish(finish).await
    }

    /// Opens the call's sideband (a free function's future, so the call's
    /// non-`Sync` parts are not borrowed across the wait).
    fn open(&self) -> impl Future<Output = Result<WsLink, SpeechError>> + Send + use<> {
        open_sideband(self.deps.config.clone(), self.surface.clone())
    }

    /// Queues an event on the sideband (a full queue drops it, logged).
    fn send(&self, link: &WsLink, event: ClientEvent) {
        if let Err(e) = link.try_send_text(event.to_json()) {
            tracing::warn!(error = %e, "could not queue a sideband event");
        }
    }

    /// The call's loop, until it must end.
    async fn serve(&mut self, link: &mut WsLink) -> Finish {
        let time_up = tokio::time::sleep(self.deps.config.limits.max_call);
        tokio::pin!(time_up);
        loop {
            if let Some((handoff, at)) = &self.ending
                && Instant::now() >= *at
            {
                tracing::info!("no goodbye in time; ending the SIP call");
                return Finish::End(handoff.clone());
            }
            let ending_due = self.ending.as_ref().map(|(_, at)| *at);
            let digits_due = self.digits.due();
            let silence_due = self.silence_due.filter(|_| self.ending.is_none());
            tokio::select! {
                () = self.deps.stop.cancelled() => {
                    return Finish::End(self.log.handoff(REASON_END_CALL, Some("the server is stopping".into()), None));
                }
                () = &mut time_up, if self.ending.is_none() => {
                    tracing::info!("the SIP call reached its maximum duration");
                    let handoff = self.log.handoff(REASON_MAX_DURATION, None, None);
                    self.say_goodbye(link, handoff);
                }
                text = link.next_text() => match text {
                    Ok(text) => {
                        if let Some(finish) = self.on_text(link, text.as_str()) {
                            return finish;
                        }
                    }
                    Err(SpeechError::Closed { code: Some(1000), .. }) if self.ending.is_none() => {
                        tracing::info!("the SIP sideband closed: the call is over");
                        return Finish::Over;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the SIP sideband dropped");
                        self.stats.errors += 1;
                        if let Some((handoff, _)) = &self.ending {
                            return Finish::End(handoff.clone());
                        }
                        if self.reconnected {
                            return Finish::Lost;
                        }
                        self.reconnected = true;
                        match self.open().await {
                            Ok(new_link) => {
                                tracing::info!("the SIP sideband is open again");
                                *link = new_link;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "the SIP sideband could not be reopened; hanging up");
                                return Finish::Lost;
                            }
                        }
                    }
                },
                Some(run) = self.running.next(), if !self.running.is_empty() => self.on_tool_done(link, run),
                () = sleep_until_opt(digits_due) => {
                    if let Some(entry) = self.digits.take() {
                        self.digits_entered(link, entry);
                    }
                }
                () = sleep_until_opt(ending_due) => {}
                () = sleep_until_opt(silence_due) => {
                    if let Some(finish) = self.silence(link) {
                        return finish;
                    }
                }
            }
        }
    }

    /// One sideband message. Malformed or unknown ones are logged and skipped.
    fn on_text(&mut self, link: &WsLink, text: &str) -> Option<Finish> {
        let event = match ServerEvent::parse(text) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a malformed sideband message");
                return None;
            }
        };
        match event {
            ServerEvent::SpeechStarted { .. } | ServerEvent::SpeechStopped { .. } => {
                self.caller_spoke();
            }
            ServerEvent::InputTranscriptCompleted { transcript, .. } => {
                let text = bounded(transcript);
                if !text.trim().is_empty() {
                    self.caller_spoke();
                    self.log.turn(
                        Speaker::Caller,
                        &text,
                        SystemTime::now(),
                        Latency::default(),
                    );
                }
            }
            ServerEvent::TranscriptDone { transcript, .. } => {
                let text = bounded(transcript);
                if !text.trim().is_empty() {
                    self.reply_chars += text.chars().count();
                    self.said_goodbye |= crate::agent::endings::is_goodbye(&text);
                    self.stats.turns += 1;
                    self.log
                        .turn(Speaker::Agent, &text, SystemTime::now(), Latency::default());
                }
            }
            ServerEvent::FunctionCallDone(call) => self.start_tool(link, call),
            ServerEvent::Dtmf { digits } => {
                for key in digits
                    .chars()
                    .filter(|c| c.is_ascii_digit() || "*#".contains(*c))
                {
                    if let Some(entry) = self.digits.push(key) {
                        self.digits_entered(link, entry);
                    }
                }
            }
            ServerEvent::ResponseCreated { response_id } => {
                // The model speaks: the caller is not silent now.
                self.silence_due = None;
                self.said_goodbye = false;
                if self.goodbye_asked && self.goodbye_response.is_none() {
                    self.goodbye_response = Some(response_id);
                }
            }
            ServerEvent::ResponseDone { response_id, .. } => {
                let is_goodbye = self.goodbye_response.as_deref() == Some(response_id.as_str());
                if is_goodbye && let Some((handoff, _)) = &self.ending {
                    return Some(Finish::End(handoff.clone()));
                }
                // A goodbye the model said without `end_call` ends the call too.
                if std::mem::take(&mut self.said_goodbye)
                    && self.deps.agent.settings.end_on_goodbye
                    && self.ending.is_none()
                    && self.running.is_empty()
                {
                    tracing::info!("the model said goodbye without end_call; ending the call");
                    return Some(Finish::End(Handoff {
                        reason_code: crate::agent::REASON_GOODBYE.into(),
                        reason: Some("the agent said goodbye".into()),
                        ..Handoff::default()
                    }));
                }
                // The silence clock starts once the reply has had time to be heard.
                let heard_in = SPEECH_PER_CHAR * std::mem::take(&mut self.reply_chars) as u32;
                self.silence_due = self.deps.silence_due(heard_in);
            }
            ServerEvent::Error { message, code, .. } => {
                tracing::warn!(code = ?code, error = %crate::transport::excerpt(&message, 300), "the sideband reported an error");
            }
            ServerEvent::Unknown { kind } if kind == "transport.failed" => {
                tracing::warn!("OpenAI reports the SIP transport failed");
                self.stats.errors += 1;
                return Some(Finish::Lost);
            }
            ServerEvent::Unknown { kind } if kind.starts_with("transport.") => {
                tracing::info!(event = %crate::transport::excerpt(&kind, 64), "SIP transport event");
            }
            _ => {}
        }
        None
    }

    fn start_tool(&mut self, link: &WsLink, call: FunctionCall) {
        tracing::info!(tool = %crate::transport::excerpt(&call.name, 64), "the model calls a tool");
        self.stats.tool_calls += 1;
        if self.running.len() >= MAX_RUNNING_TOOLS {
            self.send(
                link,
                ClientEvent::CreateItem {
                    item: Item::FunctionCallOutput {
                        call_id: call.call_id,
                        output: serde_json::json!({"error": "too many tools running"}).to_string(),
                    },
                },
            );
            return;
        }
        let ctx = ToolContext {
            now: SystemTime::now(),
            ..self.tool_ctx.clone()
        };
        self.running.push(self.deps.agent.tools.run(
            ToolCall {
                id: call.call_id,
                name: call.name,
                arguments: call.arguments,
            },
            &ctx,
        ));
    }

    fn on_tool_done(&mut self, link: &WsLink, run: ToolRun) {
        let follow_up = self.log.tool_run(&run);
        self.send(
            link,
            ClientEvent::CreateItem {
                item: Item::FunctionCallOutput {
                    call_id: run.call.id.clone(),
                    output: run.content(),
                },
            },
        );
        match follow_up {
            Some(ToolFollowUp::End(handoff)) => self.say_goodbye(link, handoff),
            Some(ToolFollowUp::SwitchLanguage(code)) => {
                // Instructions and the caller's transcription; never the voice.
                let settings = ConversationSettings {
                    instructions: language_instructions(&self.instructions, &code),
                    language: Some(crate::speech::language_code(&code)),
                    transcription_model: Some(self.deps.config.sip.transcription_model.clone()),
                    ..ConversationSettings::from_config(
                        &self.deps.config,
                        String::new(),
                        Vec::new(),
                    )
                };
                tracing::info!(language = %code, "switching language");
                self.send(
                    link,
                    ClientEvent::SessionUpdate {
                        session: Box::new(Session::language_switch(&settings)),
                    },
                );
                self.send(link, ClientEvent::CreateResponse { response: None });
            }
            Some(ToolFollowUp::SendDigits(_)) => {
                tracing::warn!("keypad tones cannot be sent on a SIP call");
                self.send(link, ClientEvent::CreateResponse { response: None });
            }
            // After a tool result the model does not speak by itself.
            None if self.ending.is_none() => {
                self.send(link, ClientEvent::CreateResponse { response: None });
            }
            None => {}
        }
    }

    /// The caller spoke: their silence starts over.
    fn caller_spoke(&mut self) {
        self.silences = 0;
        self.silence_due = self.deps.silence_due(Duration::ZERO);
    }

    /// The caller has been silent: ask once whether they are still there, then
    /// say goodbye and end; if the model never answers, end anyway.
    fn silence(&mut self, link: &WsLink) -> Option<Finish> {
        self.silences = self.silences.saturating_add(1);
        self.silence_due = self.deps.silence_due(Duration::ZERO);
        let handoff = || Handoff {
            reason_code: crate::agent::REASON_SILENCE.into(),
            reason: Some("the caller stayed silent".into()),
            ..Handoff::default()
        };
        tracing::info!(silences = self.silences, "the caller has been silent");
        match self.silences {
            1 => {
                let instructions = crate::agent::prompt::verbatim_instructions(
                    &self.deps.agent.settings.still_there_message,
                );
                self.send(
                    link,
                    ClientEvent::CreateResponse {
                        response: Some(ResponseParams {
                            instructions: Some(instructions),
                        }),
                    },
                );
                None
            }
            2 => {
                self.say_goodbye(link, handoff());
                None
            }
            _ => Some(Finish::End(handoff())),
        }
    }

    /// The call ends after a goodbye: asks the model for it and starts the clock.
    fn say_goodbye(&mut self, link: &WsLink, handoff: Handoff) {
        if self.ending.is_some() {
            tracing::warn!("the call is already ending; keeping the first ending");
            return;
        }
        let settings = &self.deps.agent.settings;
        let words = if handoff.is_live_agent() {
            &settings.handoff_message
        } else {
            &settings.goodbye_message
        };
        let instructions = format!(
            "The call is ending now. Say briefly, in the caller's language, something like: \"{words}\""
        );
        self.send(
            link,
            ClientEvent::CreateResponse {
                response: Some(ResponseParams {
                    instructions: Some(instructions),
                }),
            },
        );
        self.goodbye_asked = true;
        self.ending = Some((handoff, Instant::now() + GOODBYE_WAIT));
    }

    fn digits_entered(&mut self, link: &WsLink, digits: String) {
        tracing::info!(digits = digits.len(), "keypad digits to the model");
        self.log.turn(
            Speaker::Caller,
            &format!("DTMF: {digits}"),
            SystemTime::now(),
            Latency::default(),
        );
        self.send(
            link,
            ClientEvent::CreateItem {
                item: Item::user_text(format!("[keypad] {digits}")),
            },
        );
        self.send(link, ClientEvent::CreateResponse { response: None });
    }

    /// Hangs up or transfers, and closes the call's record.
    async fn finish(mut self, finish: Finish) -> SipCallStats {
        let control = &self.deps.control;
        let (status, handoff) = match finish {
            Finish::End(handoff) if handoff.is_live_agent() => {
                match self.deps.config.handoff.number.as_deref() {
                    Some(number) => match control.refer(&self.surface, &refer_target(number)).await
                    {
                        Ok(()) => ("handoff", Some(handoff)),
                        Err(e) => {
                            tracing::error!(error = %e, "could not transfer the SIP call; hanging up");
                            self.stats.errors += 1;
                            hang_up(control, &self.surface).await;
                            ("completed", Some(handoff))
                        }
                    },
                    None => {
                        tracing::warn!("a transfer needs HANDOFF_NUMBER on a SIP call; hanging up");
                        hang_up(control, &self.surface).await;
                        ("completed", Some(handoff))
                    }
                }
            }
            Finish::End(handoff) => {
                hang_up(control, &self.surface).await;
                ("completed", Some(handoff))
            }
            Finish::Lost => {
                hang_up(control, &self.surface).await;
                ("failed", None)
            }
            Finish::Over => ("completed", None),
        };
        self.stats.status = status.to_string();
        let reason = match (&handoff, status) {
            (Some(handoff), _) => handoff.reason_code.clone(),
            (None, "failed") => "failed".to_string(),
            (None, _) => "caller-hangup".to_string(),
        };
        self.deps.agent.metrics.call_ended(&reason);
        self.log.ended(&CallSummary {
            status: status.to_string(),
            handoff_data: handoff.map(|h| h.to_json()),
            turns: self.stats.turns,
            interrupts: 0,
            llm_errors: self.stats.errors,
        });
        tracing::info!(
            status,
            turns = self.stats.turns,
            tools = self.stats.tool_calls,
            "SIP call ended"
        );
        self.stats
    }
}

async fn open_sideband(config: Arc<Config>, surface: Surface) -> Result<WsLink, SpeechError> {
    let sip = &config.sip;
    let header = sip.auth.as_ref().map(|auth| auth.header());
    let url = surface.sideband_url(&sip.ws_base());
    ws::open(
        Service::OpenAiSip,
        &url,
        header.as_ref().map(|(name, value)| (*name, value.as_str())),
        config.speech.connect_timeout,
    )
    .await
}

async fn hang_up(control: &Control, surface: &Surface) {
    if let Err(e) = control.hangup(surface).await {
        tracing::warn!(error = %e, "could not hang up the SIP call");
    }
}

fn bounded(mut text: String) -> String {
    crate::text::cut_to(&mut text, MAX_TRANSCRIPT_BYTES);
    text
}

/// The call's record and agent data: `mode: "sip"`, the numbers from the SIP
/// headers, the custom headers as call data.
pub fn call_info(
    surface: &Surface,
    agent: &str,
    from: String,
    to: String,
    data: HashMap<String, String>,
) -> CallInfo {
    CallInfo {
        call_sid: surface.id().to_string(),
        from: crate::transport::bound_field(from),
        to: crate::transport::bound_field(to),
        direction: Some("inbound".into()),
        mode: CallMode::Sip.as_str().into(),
        agent: agent.to_string(),
        parameters: crate::transport::bound_parameters(data),
        ..CallInfo::default()
    }
}
