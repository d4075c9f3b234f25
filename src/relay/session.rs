//! One ConversationRelay call: a single task, a single writer, one `select!` loop
//! over Twilio's frames, the agent's outputs and the server's stop signal.
//!
//! The session only translates: Twilio messages become [`AgentInput`]s, and
//! [`AgentOutput`]s become Twilio messages. It is generic over any
//! `Stream<Frame> + Sink<Outbound>`, so tests can drive it without warp.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Span;

use super::protocol::{Inbound, Outbound, parse_inbound};
use crate::agent::{
    Agent, AgentDeps, AgentInput, AgentOutput, CallInfo, CallStats, RecentCalls, Resume,
};
use crate::config::LimitsConfig;
use crate::metrics::CallMode;
use crate::store::Store;
use crate::transport::alarm::Alarm;
use crate::transport::gate::WakeGate;
use crate::transport::{Frame, bound_field, bound_parameters, excerpt};
use crate::twilio::admission::{Admission, RESUME_ARMED};

/// What a session needs from the server.
#[derive(Clone)]
pub struct SessionDeps {
    pub agent: AgentDeps,
    /// Cancelled when the server's drain time is up: end the call now.
    pub stop: CancellationToken,
    /// Conversations of recently dropped calls, to resume after a reconnect.
    pub recent: Arc<RecentCalls>,
    /// Time and size bounds (setup deadline, longest call).
    pub limits: LimitsConfig,
    /// The handshake's per-call token, when it carried one: `setup.callSid` must be
    /// its call, and only a reconnect token may resume a conversation.
    pub admission: Option<Arc<Admission>>,
    /// The store: a resumed call's conversation, and the reconnects we answered.
    pub store: Arc<dyn Store>,
    /// Where this session registers once it knows its call, for API commands.
    pub live: Arc<crate::transport::live::LiveCalls>,
    /// How the call is counted and recorded: `Relay` for Twilio's calls, `Console`
    /// for the web console's "Try it".
    pub mode: CallMode,
    /// `SILENCE_TIMEOUT_SECS`: the caller's silence after which the agent speaks up.
    pub silence_timeout: Option<std::time::Duration>,
}

pub use crate::transport::live::REASON_API_END;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    CallerHungUp,
    EndedByAgent,
    EndedThroughApi,
    /// The socket went away without a close frame.
    SocketDropped,
    SocketError,
    SocketClosedWhileSending,
    NoSetup,
    WrongCall,
    ServerShutDown,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHungUp => "caller hung up",
            EndReason::EndedByAgent => "ended by the agent",
            EndReason::EndedThroughApi => "ended through the API",
            EndReason::SocketDropped => "socket dropped",
            EndReason::SocketError => "socket error",
            EndReason::SocketClosedWhileSending => "socket closed while sending",
            EndReason::NoSetup => "no setup message",
            EndReason::WrongCall => "wrong call",
            EndReason::ServerShutDown => "server shut down",
        }
    }

    /// The socket went away under the call: Twilio may bring it back.
    fn dropped(self) -> bool {
        matches!(
            self,
            EndReason::SocketDropped | EndReason::SocketError | EndReason::SocketClosedWhileSending
        )
    }

    /// The call's record status for this end.
    fn status(self) -> &'static str {
        match self {
            EndReason::SocketError | EndReason::SocketDropped | EndReason::WrongCall => "failed",
            _ => "completed",
        }
    }
}

use crate::agent::endings::SPEECH_PER_CHAR;

/// How long we wait for Twilio to close the socket after our `end`.
const END_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long our close frame may take to go out.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a call until Twilio closes the socket or the server stops.
/// Expects to run inside the call's span (fields `call_sid`, `session_id`).
// An async block rather than an async fn, on purpose (see the body).
#[allow(clippy::manual_async_fn)]
pub fn run<S, E>(mut socket: S, deps: SessionDeps) -> impl Future<Output = CallStats>
where
    S: Stream<Item = Result<Frame, E>> + Sink<Outbound> + Unpin,
    E: Display,
    <S as Sink<Outbound>>::Error: Display,
{
    // An async block rather than an async fn: the future of an async fn holds a
    // second copy of its arguments (the socket and the deps, 632 bytes of every
    // call's task).
    async move {
        let _active = deps.agent.metrics.call_started(deps.mode);
        let started = Instant::now();
        let mut agent = deps.agent.agent().with_recent_calls(deps.recent.clone());
        let mut frames_rejected: u32 = 0;
        // Set once we sent `end`: Twilio closes the socket, or we do after a grace time.
        let mut ending: Option<tokio::time::Instant> = None;
        // Whether a talk cycle is open (tokens sent, `last: true` not yet).
        let mut speaking = false;
        // Two alarms kept across loop turns (a fresh sleep on every turn would be a
        // timer-wheel entry each time): the call's deadline (its setup, then its
        // longest length), and the wait within it (the caller's silence, or
        // Twilio's close after our `end`).
        let now = tokio::time::Instant::now();
        let setup_by = now + deps.limits.setup_timeout;
        let time_up_at = now + deps.limits.max_call;
        let mut deadline = Alarm::new();
        let mut wait = Alarm::new();
        let mut timed_out = false;
        // Commands from the API for this call, once `setup` has named it.
        let mut registration: Option<crate::transport::live::Registration> = None;
        // Who asked for the `end` we sent: the agent, or the API.
        let mut ended_by = EndReason::EndedByAgent;
        // When the caller's silence is due (after the agent's last words were heard),
        // and the characters of the reply being spoken.
        let mut silence_due: Option<tokio::time::Instant> = None;
        let mut spoken_chars: usize = 0;
        // The server's stop, one wait kept across loop turns (a fresh one on every
        // turn would enter and leave the token's list of waiters each time), and
        // polled only once it has woken the loop.
        let stopping = std::pin::pin!(deps.stop.cancelled());
        let mut stopping = WakeGate::new(stopping);
        let end_reason: EndReason = loop {
            let waiting_for_setup = agent.call().is_none();
            deadline.set(if waiting_for_setup {
                Some(setup_by.min(time_up_at))
            } else if timed_out {
                None
            } else {
                Some(time_up_at)
            });
            wait.set(ending.or(silence_due));
            if registration.is_none()
                && let Some(call) = agent.call()
            {
                registration = Some(deps.live.register(&call.call_sid));
            }
            let command = crate::transport::live::next_command(&registration);
            tokio::select! {
                // Caller input first: an interrupt must win over a token that is ready.
                biased;
                frame = socket.next() => match frame {
                    None | Some(Ok(Frame::Close)) if ending.is_some() => break ended_by,
                    Some(Ok(Frame::Close)) => break EndReason::CallerHungUp,
                    None => break EndReason::SocketDropped,
                    Some(Err(_)) if ending.is_some() => break ended_by,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "WebSocket error; ending this call");
                        break EndReason::SocketError;
                    }
                    Some(Ok(Frame::Binary(len))) => {
                        frames_rejected += 1;
                        tracing::warn!(bytes = len, "ignoring a binary frame: ConversationRelay sends JSON text");
                    }
                    Some(Ok(Frame::Text(text))) => match parse_inbound(&text) {
                        Ok(Inbound::Setup(setup)) => {
                            if let Err(reason) = Box::pin(start_call(*setup, &mut agent, &deps)).await {
                                break reason;
                            }
                            // Twilio speaks the greeting; the silence clock starts after it.
                            let greeting = deps.agent.settings.welcome_greeting.chars().count();
                            silence_due = deps.silence_timeout.map(|timeout| {
                                tokio::time::Instant::now() + SPEECH_PER_CHAR * greeting as u32 + timeout
                            });
                        }
                        Ok(message) => {
                            if matches!(message, Inbound::Prompt(_) | Inbound::Dtmf(_) | Inbound::Interrupt(_)) {
                                silence_due = None;
                            }
                            // Twilio's replay after `applicationReconnect` may not start with
                            // a setup (unconfirmed): the token names the call, so pick it up.
                            if agent.call().is_none()
                                && let Some(setup) = implicit_setup(&deps).await
                            {
                                tracing::info!(frame = excerpt(&text, 200), "a reconnected socket spoke before any setup; resuming the call its token names");
                                if let Err(reason) = Box::pin(start_call(setup, &mut agent, &deps)).await {
                                    break reason;
                                }
                            }
                            on_message(message, &text, &mut agent)
                        }
                        Err(e) => {
                            frames_rejected += 1;
                            tracing::warn!(error = %e, frame = excerpt(&text, 200), "ignoring a malformed frame");
                        }
                    },
                },
                output = agent.next_output() => {
                    let batch = gather(output, &mut agent, speaking).await;
                    let turn_ended = batch.iter().any(|o| matches!(o, AgentOutput::TurnEnd));
                    spoken_chars += batch
                        .iter()
                        .map(|o| match o {
                            AgentOutput::Token(t) => t.chars().count(),
                            _ => 0,
                        })
                        .sum::<usize>();
                    let mut sent = Ok(());
                    for message in coalesce(batch, &mut ending, &mut speaking) {
                        sent = socket.feed(message).await;
                        if sent.is_err() {
                            break;
                        }
                    }
                    if sent.is_ok() {
                        sent = socket.flush().await;
                    }
                    if let Err(e) = sent {
                        tracing::info!(error = %e, "could not write to Twilio; ending this call");
                        break EndReason::SocketClosedWhileSending;
                    }
                    if speaking {
                        silence_due = None;
                    } else if turn_ended {
                        let heard_in = SPEECH_PER_CHAR * std::mem::take(&mut spoken_chars) as u32;
                        silence_due = deps
                            .silence_timeout
                            .map(|timeout| tokio::time::Instant::now() + heard_in + timeout);
                    }
                }
                () = wait.ring() => {
                    if ending.is_some() {
                        tracing::info!("Twilio did not close the socket after our end; closing it");
                        break ended_by;
                    }
                    silence_due = None;
                    tracing::info!("the caller has been silent; the agent speaks up");
                    agent.handle(AgentInput::Silence);
                }
                () = deadline.ring() => {
                    if waiting_for_setup {
                        tracing::warn!(timeout_secs = deps.limits.setup_timeout.as_secs(), "no setup message in time; closing");
                        break EndReason::NoSetup;
                    }
                    timed_out = true;
                    tracing::info!(max_secs = deps.limits.max_call.as_secs(), "the call reached its maximum duration; saying goodbye");
                    agent.handle(AgentInput::TimeUp);
                }
                kind = command, if ending.is_none() => {
                    if kind == crate::transport::live::CallCommand::Voicemail {
                        // Twilio's detection heard a voicemail: the agent leaves its message.
                        agent.handle(AgentInput::Voicemail { signal: "amd" });
                        continue;
                    }
                    // As when the agent ends the call: `end`, then Twilio closes.
                    let reason = if kind == crate::transport::live::CallCommand::Fax { crate::transport::live::REASON_FAX } else { REASON_API_END };
                    tracing::info!(reason, "ending the call as asked");
                    agent.handle(AgentInput::Hangup);
                    let handoff = serde_json::json!({"reasonCode": reason}).to_string();
                    if let Err(e) = socket.send(Outbound::End { handoff_data: Some(handoff) }).await {
                        tracing::info!(error = %e, "could not write to Twilio; ending this call");
                        break EndReason::SocketClosedWhileSending;
                    }
                    ending = Some(tokio::time::Instant::now() + END_GRACE);
                    ended_by = EndReason::EndedThroughApi;
                }
                () = &mut stopping => {
                    let handoff = serde_json::json!({"reasonCode": "server-shutdown"}).to_string();
                    let _ = socket.send(Outbound::End { handoff_data: Some(handoff) }).await;
                    break EndReason::ServerShutDown;
                }
            }
        };
        // A close frame, so Twilio sees a clean close rather than a dropped socket (1006).
        let _ = tokio::time::timeout(CLOSE_GRACE, socket.close()).await;
        agent.handle(AgentInput::Hangup);
        if let Some(admission) = &deps.admission {
            // A socket gone without a close frame may come back (applicationReconnect).
            let dropped = agent.ended().is_none() && end_reason.dropped();
            admission.release(dropped).await;
        }
        let status = end_reason.status();
        let ending_reason = match (agent.ended(), end_reason) {
            (Some(handoff), _) => handoff.reason_code.clone(),
            (None, EndReason::CallerHungUp) => "caller-hangup".into(),
            (None, EndReason::EndedThroughApi) => REASON_API_END.into(),
            (None, EndReason::ServerShutDown) => "server-shutdown".into(),
            (None, _) => "failed".into(),
        };
        deps.agent.metrics.call_ended(&ending_reason);
        agent.finish(status, None);
        let stats = agent.stats().clone();
        tracing::info!(
            duration = %humantime::format_duration(std::time::Duration::from_secs(started.elapsed().as_secs())),
            duration_ms = started.elapsed().as_millis() as u64,
            turns = stats.turns,
            interrupts = stats.interrupts,
            llm_errors = stats.llm_errors,
            rejected_frames = frames_rejected,
            reason = end_reason.as_str(),
            "call ended"
        );
        stats
    }
}

/// Most agent outputs written to Twilio in one batch before the socket is read again.
const MAX_BATCH: usize = 16;

/// The agent's outputs to write together, starting with `first`.
///
/// The first token of a reply goes out at once (with whatever else is already
/// ready): it is what the caller waits for. Later tokens are gathered a little: an
/// LLM often sends several at once, but hyper hands the body over one chunk per
/// wake-up of its connection task, so the session yields to let those chunks
/// arrive and writes them in one go (one syscall and one TCP segment instead of
/// one per token). It stops at the first yield that brings nothing new, so a
/// token never waits for the next one.
async fn gather(first: AgentOutput, agent: &mut Agent, speaking: bool) -> Vec<AgentOutput> {
    let mut wait = speaking && matches!(first, AgentOutput::Token(_));
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        if let Some(output) = agent.next_output().now_or_never() {
            batch.push(output);
            continue;
        }
        if !wait {
            break;
        }
        // One scheduler pass: lets the HTTP connection task deliver what it has read.
        tokio::task::yield_now().await;
        match agent.next_output().now_or_never() {
            Some(output) => batch.push(output),
            None => wait = false,
        }
    }
    batch
}

/// The Twilio messages for a batch of outputs: consecutive tokens become one
/// `text` message (Twilio speaks the same words; the heard-text bookkeeping is
/// unaffected). `speaking` tracks whether a talk cycle is open.
fn coalesce(
    batch: Vec<AgentOutput>,
    ending: &mut Option<tokio::time::Instant>,
    speaking: &mut bool,
) -> Vec<Outbound> {
    let mut messages: Vec<Outbound> = Vec::with_capacity(batch.len());
    for output in batch {
        match output {
            AgentOutput::Token(token) => {
                *speaking = true;
                if let Some(Outbound::Text {
                    token: open,
                    last: false,
                    ..
                }) = messages.last_mut()
                {
                    open.push_str(&token);
                } else {
                    messages.push(Outbound::token(token));
                }
            }
            other => {
                if matches!(other, AgentOutput::TurnEnd | AgentOutput::End(_)) {
                    *speaking = false;
                }
                messages.push(outbound(other, ending));
            }
        }
    }
    messages
}

/// The Twilio message for one agent output (`ending` is set when it is `end`).
fn outbound(output: AgentOutput, ending: &mut Option<tokio::time::Instant>) -> Outbound {
    match output {
        AgentOutput::Token(token) => Outbound::token(token),
        AgentOutput::TurnEnd => Outbound::end_of_turn(),
        AgentOutput::End(handoff) => {
            tracing::info!(reason_code = %handoff.reason_code, "ending the session");
            *ending = Some(tokio::time::Instant::now() + END_GRACE);
            Outbound::End {
                handoff_data: Some(handoff.to_json()),
            }
        }
        AgentOutput::SendDigits(digits) => {
            tracing::info!(digits = digits.len(), "sending digits");
            Outbound::SendDigits { digits }
        }
        AgentOutput::SwitchLanguage(code) => {
            tracing::info!(language = %code, "switching language");
            Outbound::Language {
                tts_language: Some(code.clone()),
                transcription_language: Some(code),
            }
        }
    }
}

/// Twilio's `setup`: checks it names the call the handshake's token was minted
/// for, then starts the agent. A second `setup` is ignored (and renames nothing);
/// one for another call ends the session.
///
/// Awaited boxed: it runs once, and inline its state (1.2 KB) would be part of
/// every call's session for the whole call.
async fn start_call(
    setup: super::protocol::Setup,
    agent: &mut Agent,
    deps: &SessionDeps,
) -> Result<(), EndReason> {
    if agent.call().is_some() {
        tracing::warn!(
            session_id = excerpt(&setup.session_id, 64),
            "ignoring a second setup message on the same socket"
        );
        return Ok(());
    }
    if deps.admission.as_ref().is_some_and(|a| a.reconnected()) {
        tracing::info!(
            session_id = excerpt(&setup.session_id, 64),
            call_status = setup
                .call_status
                .as_deref()
                .map(|s| excerpt(s, 32))
                .unwrap_or_default(),
            "setup on a reconnected socket (applicationReconnect): resuming"
        );
    }
    if let Some(admission) = &deps.admission
        && admission.check(&setup.call_sid).await.is_err()
    {
        tracing::warn!(
            claimed_call_sid = excerpt(&setup.call_sid, 64),
            "setup names a call other than the one this WebSocket's token was minted for; ending the session"
        );
        return Err(EndReason::WrongCall);
    }
    let call_sid = bound_field(setup.call_sid);
    let session_id = bound_field(setup.session_id);
    let span = Span::current();
    span.record("call_sid", call_sid.as_str());
    span.record("session_id", session_id.as_str());
    let parameters = bound_parameters(setup.custom_parameters);
    let (from, to) = (bound_field(setup.from), bound_field(setup.to));
    let direction = setup.direction.map(bound_field);
    let may_resume = may_resume(deps, &call_sid).await;
    if may_resume && let Some(earlier) = earlier_conversation(deps, &call_sid).await {
        agent.resume_with(earlier);
    }
    tracing::info!(
        from = %from,
        to = %to,
        direction = direction.as_deref().unwrap_or(""),
        parameters = parameters.len(),
        "call connected"
    );
    agent.handle(AgentInput::CallStarted(CallInfo {
        call_sid,
        session_id: Some(session_id),
        from,
        to,
        direction,
        mode: deps.mode.as_str().into(),
        agent: deps.agent.settings.agent_id.clone(),
        parameters,
        may_resume,
        resumed: false,
    }));
    Ok(())
}

/// For a socket that came back with its token after a drop: a setup naming the
/// token's call, to start from when Twilio's first message is not a setup.
async fn implicit_setup(deps: &SessionDeps) -> Option<super::protocol::Setup> {
    let admission = deps.admission.as_ref().filter(|a| a.reconnected())?;
    Some(super::protocol::Setup {
        call_sid: admission.call_sid().await?,
        ..super::protocol::Setup::default()
    })
}

/// Whether this session may pick up the call's earlier conversation: its token
/// says so (our `64105` answer, or its own token back after a drop), or, without
/// tokens, the store holds our `64105` answer for the call (taken once).
async fn may_resume(deps: &SessionDeps, call_sid: &str) -> bool {
    match &deps.admission {
        Some(admission) => admission.may_resume(),
        None => match deps
            .store
            .state_take(RESUME_ARMED, call_sid, crate::store::now_millis())
            .await
        {
            Ok(armed) => armed.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the reconnects we answered; starting afresh");
                false
            }
        },
    }
}

/// The call's earlier conversation: kept here when its socket dropped on this
/// replica, else rebuilt from the store.
async fn earlier_conversation(deps: &SessionDeps, call_sid: &str) -> Option<Resume> {
    if let Some(snapshot) = deps.recent.take(call_sid) {
        return Some(Resume::Snapshot(snapshot));
    }
    match crate::recorder::stored_conversation(&*deps.store, call_sid).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the call's conversation from the store; starting afresh");
            None
        }
    }
}

/// Translates one Twilio message into agent input (or a log line).
fn on_message(message: Inbound, raw: &str, agent: &mut Agent) {
    match message {
        // Handled by `start_call` before a message reaches this function.
        Inbound::Setup(_) => {}
        Inbound::Prompt(prompt) => {
            if !prompt.is_final() {
                tracing::debug!("partial prompt");
                return;
            }
            if prompt.last.is_none() {
                tracing::debug!("prompt without `last`; treating it as final");
            }
            tracing::debug!(chars = prompt.voice_prompt.len(), "caller spoke");
            agent.handle(AgentInput::UserText {
                text: prompt.voice_prompt,
                lang: prompt.lang,
            });
        }
        Inbound::Dtmf(dtmf) => {
            let mut chars = dtmf.digit.chars();
            match (chars.next(), chars.next()) {
                (Some(digit), None) => agent.handle(AgentInput::Digit(digit)),
                _ => {
                    tracing::warn!(digit = %dtmf.digit, "ignoring a dtmf message without exactly one digit")
                }
            }
        }
        Inbound::Interrupt(interrupt) => {
            tracing::info!(
                heard_chars = interrupt.utterance_until_interrupt.len(),
                played_ms = interrupt.duration_until_interrupt_ms,
                "caller interrupted"
            );
            agent.handle(AgentInput::Interrupt {
                heard: interrupt.utterance_until_interrupt,
            });
        }
        Inbound::Error(error) => {
            // Never answered: echoing errors back makes Twilio close the socket.
            tracing::warn!(description = %error.description, "Twilio reported an error");
        }
        Inbound::Info(info) => {
            tracing::debug!(name = info.name.as_deref().unwrap_or(""), value = ?info.value, "info");
        }
        Inbound::Unknown => {
            tracing::info!(
                frame = excerpt(raw, 200),
                "ignoring a message type this version does not know"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_of(messages: &[Outbound]) -> Vec<(String, bool)> {
        messages
            .iter()
            .map(|m| match m {
                Outbound::Text { token, last, .. } => (token.clone(), *last),
                other => (format!("{other:?}"), false),
            })
            .collect()
    }

    #[test]
    fn consecutive_tokens_share_a_message_and_the_turn_end_stays_apart() {
        let mut ending = None;
        let mut speaking = false;
        let batch = vec![
            AgentOutput::Token("Bom ".into()),
            AgentOutput::Token("dia".into()),
            AgentOutput::TurnEnd,
            AgentOutput::Token("Oi".into()),
        ];
        let out = coalesce(batch, &mut ending, &mut speaking);
        assert_eq!(
            tokens_of(&out),
            vec![
                ("Bom dia".to_string(), false),
                (String::new(), true),
                ("Oi".to_string(), false)
            ]
        );
        assert!(speaking, "a talk cycle is open after the last token");
        assert!(ending.is_none());
    }

    #[test]
    fn other_outputs_keep_their_place_between_tokens() {
        let mut ending = None;
        let mut speaking = true;
        let batch = vec![
            AgentOutput::Token("Um momento.".into()),
            AgentOutput::SendDigits("12#".into()),
            AgentOutput::Token("Pronto.".into()),
            AgentOutput::TurnEnd,
        ];
        let out = coalesce(batch, &mut ending, &mut speaking);
        assert_eq!(out.len(), 4);
        assert!(matches!(&out[1], Outbound::SendDigits { digits } if digits == "12#"));
        assert!(!speaking);
    }

    #[test]
    fn end_reasons_say_whether_the_socket_may_come_back_and_how_the_call_is_recorded() {
        assert!(EndReason::SocketDropped.dropped() && EndReason::SocketError.dropped());
        assert!(!EndReason::CallerHungUp.dropped() && !EndReason::EndedThroughApi.dropped());
        assert_eq!(EndReason::SocketDropped.status(), "failed");
        assert_eq!(EndReason::WrongCall.status(), "failed");
        assert_eq!(EndReason::EndedThroughApi.status(), "completed");
        assert_eq!(EndReason::ServerShutDown.as_str(), "server shut down");
    }
}
