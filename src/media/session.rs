//! One Media Streams call: a single task, one `select!` loop over Twilio's frames,
//! the pipeline's outputs, the outbound frame clock and the server's stop signal.
//!
//! The session translates and paces; the speech work happens in a
//! [`Pipeline`]. It waits for `start` (call SID, stream SID, `<Parameter>`s),
//! reports the call to the observer, connects the pipeline chosen by
//! [`pipeline::choose`], then:
//!
//! - caller `media` is checked (bad base64 is logged and skipped), decoded only to
//!   record it or gather it into chunks, and handed to the pipeline unchanged;
//! - agent audio is cut into 160-byte frames, one per `media` message, paced in real
//!   time with a small lead ([`Playback`]), with `mark`s to learn what was heard;
//! - a barge-in ([`PipelineOutput::Clear`]) sends `clear` and answers the pipeline
//!   with how much of the interrupted turn was heard;
//! - `dtmf` and echoed `mark`s go to the pipeline;
//! - `stop`, a close or a socket error end the call; the pipeline is always closed
//!   (which closes its upstream sockets) and the Twilio socket too.
//!
//! A pipeline asking to end the call, or failing, gets its queued audio played
//! first (bounded wait), then the socket is closed; `/twiml/stream`'s TwiML continues
//! after `</Connect>` with `<Hangup/>` (or the transfer, see `http::twiml`). When the
//! agent ended the call and Twilio REST credentials are configured, the call is
//! first hung up or transferred through the REST API ([`super::control`]), with the
//! `<Redirect>` as the fallback.
//!
//! Generic over `Stream<Frame> + Sink<Outbound>`, so tests can drive it without warp.

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Span;

use super::chunks::CallerChunks;
use super::control::{self, EndedVia};
use super::pipeline::{
    self, CallEvent, CallerAudio, Pipeline, PipelineContext, PipelineError, PipelineOutput,
    PipelineStats,
};
use super::playback::Playback;
use super::protocol::{Inbound, MediaView, Outbound, Received, StartEvent, parse_received};
use super::recording::Recording;
use crate::agent::{
    AgentDeps, CallInfo, CallSummary, Handoff, REASON_MAX_DURATION, REASON_SILENCE,
};
use crate::audio::frame::Pace;
use crate::config::Config;
use crate::metrics::CallMode;
use crate::transport::alarm::Alarm;
use crate::transport::gate::WakeGate;
use crate::transport::live::{
    CallCommand, LiveCalls, REASON_API_END, REASON_FAX, Registration, next_command,
};
use crate::transport::{Frame, bound_field, bound_parameters, excerpt};
use crate::twilio::admission::Admission;
use crate::twilio::client::TwilioClient;

/// What a media session needs from the server.
#[derive(Clone)]
pub struct MediaDeps {
    pub config: Arc<Config>,
    pub agent: AgentDeps,
    /// Cancelled when the server's drain time is up: end the call now.
    pub stop: CancellationToken,
    /// Receives the way the call ended (transfer or hang-up), for the TwiML follow-up
    /// (`/twiml/stream/next`).
    pub endings: Arc<super::Endings>,
    /// Twilio's REST API, when credentials are configured: the agent's endings are
    /// carried out through it ([`super::control`]).
    pub twilio: Option<Arc<TwilioClient>>,
    /// The handshake's per-call token, when it carried one: `start.callSid` must be
    /// its call (so REST hang-ups and transfers act on that call only).
    pub admission: Option<Arc<Admission>>,
    /// Where the session registers once it knows its call, so the API and
    /// Twilio's answering-machine detection reach it.
    pub live: Arc<LiveCalls>,
}
/// Agent audio kept ahead of real time at Twilio.
pub const LEAD: Duration = Duration::from_millis(80);
/// When a frame goes out, the frames due within this much after it go in the same
/// write: the next two (the timer may ring up to `TIMER_SLACK` early, hence 50 ms
/// rather than 40), so one system call and one wake-up per three frames instead of
/// one per frame (the kernel's share of a media call is mostly those writes;
/// BENCHMARKS.md, issue 17, seventh session). Twilio then holds up to `LEAD` plus
/// two frames (120 ms) unplayed, which is what a `clear` discards; what was heard
/// is still measured by the clock and the marks, not by what was sent.
const BATCH_AHEAD: Duration = Duration::from_millis(50);
/// Unsent agent audio held at most; the pipeline is not polled while it is full.
const MAX_QUEUED_AUDIO: Duration = Duration::from_secs(60);
/// After the last frame of an ending call, how long we wait past its estimated
/// play-out before closing (marks usually settle it sooner).
const END_GRACE: Duration = Duration::from_millis(300);
/// The longest an ending call waits for its queued audio to play.
const END_MAX_WAIT: Duration = Duration::from_secs(30);
/// Bad frames logged individually before the log is thinned out.
const LOG_FIRST_BAD: u32 = 5;
/// The loop's reason when the agent's ending has played.
const ENDED_BY_AGENT: &str = "ended by the agent";

/// How a call ended, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaCallStats {
    pub call_sid: Option<String>,
    pub pipeline: Option<&'static str>,
    pub reason: &'static str,
    /// `completed`, `handoff` or `failed`.
    pub status: &'static str,
    pub frames_in: u64,
    pub frames_out: u64,
    pub rejected_frames: u32,
    pub pipeline_stats: PipelineStats,
    pub recording: Option<String>,
    /// How the agent's ending reached Twilio (`None` when the agent did not end
    /// the call, or the caller hung up first).
    pub ended_via: Option<EndedVia>,
}

type Connecting = BoxFuture<'static, Result<Box<dyn Pipeline>, PipelineError>>;

/// Why the loop is winding down after the pipeline asked to.
enum Ending {
    Handoff(Handoff),
    Failed,
}

/// Per-call state outside the pipeline.
struct Call {
    info: Option<CallInfo>,
    stream_sid: String,
    playback: Playback,
    recording: Option<Recording>,
    decoded: Vec<u8>,
    /// Caller audio gathered for the upstream (`MEDIA_UPSTREAM_CHUNK_MS` above 20);
    /// boxed, as most calls forward frame by frame.
    chunks: Option<Box<CallerChunks>>,
    frames_in: u64,
    frames_out: u64,
    rejected: u32,
    media_while_connecting: u64,
}

/// Runs a call until Twilio stops the stream, the pipeline ends it or the server
/// stops. Expects to run inside the call's span (field `call_sid`).
// An async block rather than an async fn, on purpose (see the body).
#[allow(clippy::manual_async_fn)]
pub fn run<S, E>(mut socket: S, deps: MediaDeps) -> impl Future<Output = MediaCallStats>
where
    S: Stream<Item = Result<Frame, E>> + Sink<Outbound> + Unpin,
    E: Display,
    <S as Sink<Outbound>>::Error: Display,
{
    // An async block rather than an async fn: the future of an async fn holds a
    // second copy of its arguments (520 bytes of every call's task).
    async move {
        let _active = deps.agent.metrics.call_started(CallMode::Stream);
        let started = Instant::now();
        let mut call = Call {
            info: None,
            stream_sid: String::new(),
            playback: Playback::new(MAX_QUEUED_AUDIO, LEAD),
            recording: None,
            decoded: Vec::new(),
            chunks: (deps.config.media.upstream_chunk_frames > 1)
                .then(|| Box::new(CallerChunks::new(deps.config.media.upstream_chunk_frames))),
            frames_in: 0,
            frames_out: 0,
            rejected: 0,
            media_while_connecting: 0,
        };
        let mut connecting: Option<Connecting> = None;
        let mut pipeline: Option<Box<dyn Pipeline>> = None;
        let mut pipeline_name: Option<&'static str> = None;
        // An output read ahead while gathering a burst of audio (handled next).
        // Boxed: it is rare (once a reply), and inline it would size every call.
        let mut held: Option<Box<PipelineOutput>> = None;
        let mut ending: Option<(Ending, Instant)> = None;
        let start_deadline = started + deps.config.limits.setup_timeout;
        // Made once, not per frame (each new sleep is a timer-wheel entry).
        let time_up = tokio::time::sleep_until(started + deps.config.limits.max_call);
        tokio::pin!(time_up);
        // Commands for this call (API, answering-machine detection), once it is known.
        let mut registration: Option<Registration> = None;
        // The caller's silence: when it is due, and how many times it came in a row.
        let mut silence = Silence::new(deps.config.endings.silence_timeout);
        // Timers kept across turns of the loop, re-armed only when their time moves.
        let mut frame_alarm = Alarm::new();
        let mut silence_alarm = Alarm::new();
        let mut close_alarm = Alarm::new();
        // The server's stop, one wait kept across turns of the loop (a fresh one per
        // frame would enter and leave the token's list of waiters each time), and
        // polled only once it has woken the loop. Boxed: inline it would take this
        // future past its size test (`http::ws`).
        let mut stopping = WakeGate::new(Box::pin(deps.stop.clone().cancelled_owned()));

        let reason: &'static str = loop {
            let now = Instant::now();
            // The next outbound frame, if one is queued. A frame that is due goes out
            // without a timer: tokio's timer rounds every deadline up to the next
            // millisecond tick, so even a zero sleep would cost up to 1 ms per frame
            // (5 ms for the lead frames of a reply). For the same reason a frame due
            // within TIMER_SLACK goes now, and later ones wake TIMER_SLACK early: the
            // lead makes a frame 1 ms early harmless, while 1 ms late adds up.
            let (frame_now, frame_at) = match call.playback.due(now.into_std()) {
                None => (false, None),
                Some(Pace::Now) => (true, None),
                Some(Pace::At(at)) => {
                    let at = Instant::from_std(at);
                    if at <= now + TIMER_SLACK {
                        (true, None)
                    } else {
                        (false, Some(at - TIMER_SLACK))
                    }
                }
            };
            // Every turn sets it, so an alarm for a frame that is now due (or gone)
            // cannot ring late and send another ahead of its time.
            frame_alarm.set(frame_at);
            // An ending call closes once its audio has played (or at its deadline).
            close_alarm.set(ending.as_ref().map(|(_, deadline)| {
                if call.playback.has_frames() {
                    *deadline
                } else if call.playback.marks_settled() {
                    now
                } else {
                    (now + call.playback.ahead(now.into_std()) + END_GRACE).min(*deadline)
                }
            }));
            let poll_pipeline = ending.is_none() && call.playback.has_room();
            // The silence clock runs while the agent has nothing left to send; it
            // starts once what was sent has had time to play.
            let agent_quiet = call.playback.queued().is_zero();
            silence_alarm.set(silence.due(
                pipeline.is_some() && ending.is_none() && agent_quiet,
                || now + call.playback.ahead(now.into_std()),
            ));
            tokio::select! {
                biased;
                () = &mut stopping => break "server shut down",
                frame = socket.next() => match frame {
                    None | Some(Ok(Frame::Close)) => break "caller hung up",
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "WebSocket error; ending this call");
                        break "socket error";
                    }
                    Some(Ok(Frame::Binary(len))) => {
                        call.reject(format_args!("ignoring a binary frame of {len} bytes: Twilio sends JSON text"));
                    }
                    Some(Ok(Frame::Text(text))) => match parse_received(&text) {
                        Ok(Received::Media(media)) => call.on_media(&media, pipeline.as_deref_mut(), now),
                        Ok(Received::Other(Inbound::Stop(stop))) => {
                            tracing::info!(call_sid = %stop.stop.call_sid, "Twilio stopped the stream");
                            break "caller hung up";
                        }
                        Ok(Received::Other(Inbound::Start(start))) => {
                            if call.info.is_some() {
                                tracing::warn!("ignoring a second start message");
                            } else if let Some(admission) = &deps.admission
                                && admission.check(&start.start.call_sid).await.is_err()
                            {
                                tracing::warn!(
                                    claimed_call_sid = excerpt(&start.start.call_sid, 64),
                                    "start names a call other than the one this WebSocket's token was minted for; ending the session"
                                );
                                break "wrong call";
                            } else {
                                let ctx = call.start(start, &deps);
                                registration = Some(deps.live.register(&ctx.call.call_sid));
                                match pipeline::choose(&deps.config, &ctx.call) {
                                    Ok(kind) => {
                                        tracing::info!(pipeline = kind.as_str(), "connecting the pipeline");
                                        connecting = Some(Box::pin(pipeline::connect(kind, ctx)));
                                    }
                                    Err(e) => {
                                        tracing::error!(error = %e, "cannot serve this media call; hanging up");
                                        break "no pipeline";
                                    }
                                }
                            }
                        }
                        Ok(Received::Other(message)) => {
                            if let Some(event) = call.on_message(message, &text, pipeline.as_deref_mut(), now) {
                                if let Some(p) = pipeline.as_mut() {
                                    p.handle(event).await;
                                }
                            }
                        }
                        Err(e) => call.reject(format_args!("ignoring a malformed frame ({e}): {}", excerpt(&text, 200))),
                    },
                },
                () = std::future::ready(()), if frame_now => {
                    if let Err(e) = call.send_frame(&mut socket).await {
                        tracing::info!(error = %e, "could not write to Twilio; ending this call");
                        break "socket closed while sending";
                    }
                }
                () = frame_alarm.ring() => {
                    frame_alarm.set(None);
                    if let Err(e) = call.send_frame(&mut socket).await {
                        tracing::info!(error = %e, "could not write to Twilio; ending this call");
                        break "socket closed while sending";
                    }
                }
                result = poll_opt(&mut connecting) => {
                    connecting = None;
                    match result {
                        Ok(p) => {
                            tracing::info!(pipeline = p.name(), elapsed_ms = started.elapsed().as_millis() as u64, "pipeline connected");
                            call.start_recording(&deps.config);
                            pipeline_name = Some(p.name());
                            pipeline = Some(p);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the pipeline could not start; hanging up");
                            break "pipeline failed to start";
                        }
                    }
                }
                output = next_output(&mut held, &mut pipeline), if poll_pipeline => match output {
                    PipelineOutput::Audio { turn, mulaw } => {
                        call.queue_audio(turn, &mulaw);
                        // The rest of a burst that has already arrived joins the
                        // queue now, so its first frames leave in one write.
                        held = call.take_ready_audio(pipeline.as_deref_mut());
                    }
                    PipelineOutput::TurnDone { turn } => {
                        if let Some(mark) = call.playback.turn_done(turn) {
                            let message = Outbound::mark(call.stream_sid.clone(), mark);
                            if let Err(e) = socket.send(message).await {
                                tracing::info!(error = %e, "could not write to Twilio; ending this call");
                                break "socket closed while sending";
                            }
                        }
                    }
                    PipelineOutput::Clear => {
                        let (turn, played) = call.playback.clear(Instant::now().into_std());
                        if let Some(recording) = call.recording.as_mut() {
                            recording.clear_agent();
                        }
                        tracing::debug!(turn, played_ms = played.as_millis() as u64, "barge-in: clearing Twilio's audio");
                        if let Err(e) = socket.send(Outbound::clear(call.stream_sid.clone())).await {
                            tracing::info!(error = %e, "could not write to Twilio; ending this call");
                            break "socket closed while sending";
                        }
                        if let Some(p) = pipeline.as_mut() {
                            p.handle(CallEvent::Cleared { turn, played }).await;
                        }
                    }
                    PipelineOutput::CallerActive => silence.caller_spoke(),
                    PipelineOutput::End(handoff) => {
                        tracing::info!(reason_code = %handoff.reason_code, "the agent ends the call");
                        ending = Some((Ending::Handoff(handoff), Instant::now() + END_MAX_WAIT));
                    }
                    PipelineOutput::Failed(message) => {
                        tracing::warn!(error = %message, "the pipeline failed; hanging up");
                        ending = Some((Ending::Failed, Instant::now() + END_MAX_WAIT));
                    }
                },
                () = silence_alarm.ring() => {
                    match silence.elapsed() {
                        Some(goodbye) => {
                            tracing::info!(goodbye, "the caller has been silent; the agent speaks up");
                            if let Some(p) = pipeline.as_mut() {
                                p.handle(CallEvent::Silence { goodbye }).await;
                            }
                        }
                        None => {
                            tracing::info!("the caller stayed silent and the pipeline did not end the call; ending it");
                            ending = Some((Ending::Handoff(Handoff {
                                reason_code: REASON_SILENCE.into(),
                                reason: Some("the caller stayed silent".into()),
                                ..Handoff::default()
                            }), Instant::now() + END_MAX_WAIT));
                        }
                    }
                }
                command = next_command(&registration), if ending.is_none() => {
                    tracing::info!(?command, "a command for this call");
                    let reason_code = match command {
                        CallCommand::Voicemail => {
                            if let Some(p) = pipeline.as_mut() {
                                p.handle(CallEvent::Voicemail).await;
                            }
                            continue;
                        }
                        CallCommand::Fax => REASON_FAX,
                        CallCommand::End => REASON_API_END,
                    };
                    ending = Some((Ending::Handoff(Handoff {
                        reason_code: reason_code.into(),
                        reason: Some(format!("{command:?} command")),
                        ..Handoff::default()
                    }), Instant::now()));
                }
                () = close_alarm.ring() => {
                    break match &ending {
                        Some((Ending::Failed, _)) => "pipeline failed",
                        _ => ENDED_BY_AGENT,
                    };
                }
                () = &mut time_up, if ending.is_none() => {
                    tracing::info!(max_secs = deps.config.limits.max_call.as_secs(), "the call reached its maximum duration; ending it");
                    ending = Some((Ending::Handoff(Handoff {
                        reason_code: REASON_MAX_DURATION.into(),
                        reason: Some("the call reached its maximum duration".into()),
                        ..Handoff::default()
                    }), Instant::now()));
                }
                () = tokio::time::sleep_until(start_deadline), if call.info.is_none() => {
                    tracing::warn!("no start message from Twilio in time; closing");
                    break "no start message";
                }
            }
        };

        // Wind down: the upstream always closes, then Twilio's socket.
        drop(connecting);
        let handoff = match &ending {
            Some((Ending::Handoff(handoff), _)) => Some(handoff.clone()),
            _ => None,
        };
        let call_sid = call.info.as_ref().map(|info| info.call_sid.clone());
        // Before the socket closes: Twilio asks `/twiml/stream/next` right after (the
        // fallback when the REST update below does not happen).
        if let (Some(sid), Some(handoff)) = (&call_sid, &handoff) {
            deps.endings.record(sid, handoff).await;
        }
        let close_pipeline = async {
            match pipeline {
                Some(p) => p.close().await,
                None => PipelineStats::default(),
            }
        };
        // The agent's goodbye has played: hang up or transfer through the REST API.
        let end_through_twilio = async {
            let (Some(sid), Some(handoff)) = (&call_sid, &handoff) else {
                return None;
            };
            if reason != ENDED_BY_AGENT {
                return None;
            }
            Some(match &deps.twilio {
                Some(twilio) => control::end_call(twilio, &deps.config.handoff, sid, handoff).await,
                None => EndedVia::Redirect,
            })
        };
        // Boxed: inline, the wind-down's state would size every call's session for
        // its whole life (about 0.9 KB more per call).
        let (pipeline_stats, ended_via) =
            Box::pin(futures::future::join(close_pipeline, end_through_twilio)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close()).await;

        let status: &'static str = match (&ending, reason) {
            (Some((Ending::Failed, _)), _) => "failed",
            (_, "socket error" | "pipeline failed to start" | "no pipeline" | "wrong call") => {
                "failed"
            }
            (Some((Ending::Handoff(h), _)), _) if h.is_live_agent() => "handoff",
            _ => "completed",
        };
        let recording = match call.recording.take() {
            Some(r) => {
                if r.dropped_samples() > 0 {
                    tracing::warn!(
                        dropped_ms = r.dropped_samples() / 8,
                        "caller audio arrived faster than real time; the excess was not recorded"
                    );
                }
                match r.finish().await {
                    Ok(path) => Some(path.display().to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not finish the call recording");
                        None
                    }
                }
            }
            None => None,
        };
        if call_sid.is_some() {
            let reason = match (&handoff, status) {
                (Some(handoff), _) => handoff.reason_code.clone(),
                (None, "failed") => "failed".to_string(),
                (None, _) => "caller-hangup".to_string(),
            };
            deps.agent.metrics.call_ended(&reason);
        }
        if let Some(sid) = &call_sid {
            if let Some(path) = &recording {
                deps.agent.observer.recording(sid, path);
            }
            deps.agent.observer.call_ended(
                sid,
                &CallSummary {
                    status: status.to_string(),
                    handoff_data: handoff.as_ref().map(Handoff::to_json),
                    turns: pipeline_stats.turns,
                    interrupts: pipeline_stats.interrupts,
                    llm_errors: pipeline_stats.errors,
                },
            );
        }
        tracing::info!(
            duration_ms = started.elapsed().as_millis() as u64,
            pipeline = pipeline_name.unwrap_or(""),
            frames_in = call.frames_in,
            frames_out = call.frames_out,
            rejected_frames = call.rejected,
            dropped_while_connecting = call.media_while_connecting,
            turns = pipeline_stats.turns,
            interrupts = pipeline_stats.interrupts,
            errors = pipeline_stats.errors,
            status,
            reason,
            ended_via = ended_via.map(EndedVia::as_str).unwrap_or(""),
            "media call ended"
        );
        MediaCallStats {
            call_sid,
            pipeline: pipeline_name,
            reason,
            status,
            frames_in: call.frames_in,
            frames_out: call.frames_out,
            rejected_frames: call.rejected,
            pipeline_stats,
            recording,
            ended_via,
        }
    }
}

/// The caller's silence (`SILENCE_TIMEOUT_SECS`): its clock runs while the agent
/// is quiet and starts over whenever the caller speaks or the agent talks.
/// Clock-free: the time is an argument.
#[derive(Debug)]
struct Silence {
    timeout: Option<Duration>,
    due: Option<Instant>,
    /// Silences in a row since the caller last spoke.
    count: u8,
}

impl Silence {
    fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            due: None,
            count: 0,
        }
    }

    /// When the silence is due, given whether its clock runs and when it starts
    /// (once the agent's audio has played).
    /// `from` is only asked when the clock starts (once per quiet spell, not per
    /// frame).
    fn due(&mut self, running: bool, from: impl FnOnce() -> Instant) -> Option<Instant> {
        if !running {
            self.due = None;
        } else if self.due.is_none() {
            self.due = self.timeout.map(|t| from() + t);
        }
        self.due
    }

    fn caller_spoke(&mut self) {
        self.due = None;
        self.count = 0;
    }

    /// The silence came: `Some(goodbye)` for the pipeline's first and second
    /// (ask, then say goodbye), `None` when the session must end the call itself.
    fn elapsed(&mut self) -> Option<bool> {
        self.due = None;
        self.count = self.count.saturating_add(1);
        match self.count {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }
}

impl Call {
    /// Logs a rejected frame (the first few, then every 100th).
    fn reject(&mut self, what: std::fmt::Arguments<'_>) {
        self.rejected += 1;
        if super::log_due(self.rejected.into(), LOG_FIRST_BAD.into(), 100) {
            tracing::warn!(rejected = self.rejected, "{what}");
        }
    }

    /// The call is running (its pipeline connected): starts its recording when
    /// `RECORD_CALLS` is on.
    fn start_recording(&mut self, config: &Config) {
        let Some(info) = self.info.as_ref().filter(|_| config.media.record_calls) else {
            return;
        };
        match Recording::create(
            Path::new(&config.media.recordings_dir),
            &info.call_sid,
            config.limits.max_recording,
            Instant::now().into_std(),
        ) {
            Ok(r) => {
                tracing::info!(path = %r.path().display(), "recording the call");
                self.recording = Some(r);
            }
            Err(e) => tracing::warn!(error = %e, "cannot record this call"),
        }
    }

    /// Twilio's `start`: the call is known; builds the pipeline's context.
    fn start(&mut self, start: StartEvent, deps: &MediaDeps) -> PipelineContext {
        let start_body = start.start;
        let stream_sid = bound_field(if start_body.stream_sid.is_empty() {
            start.stream_sid
        } else {
            start_body.stream_sid
        });
        let call_sid = bound_field(start_body.call_sid);
        let span = Span::current();
        span.record("call_sid", call_sid.as_str());
        if !start_body.media_format.is_mulaw_8k_mono() {
            tracing::warn!(format = ?start_body.media_format, "unexpected media format; treating it as 8 kHz μ-law");
        }
        let mut parameters = bound_parameters(start_body.custom_parameters);
        // `/twiml/stream` passes the webhook's caller fields as parameters.
        let from = bound_field(parameters.remove("from").unwrap_or_default());
        let to = bound_field(parameters.remove("to").unwrap_or_default());
        let direction = parameters
            .remove("direction")
            .filter(|d| !d.is_empty())
            .map(bound_field);
        let info = CallInfo {
            call_sid,
            from,
            to,
            direction,
            mode: CallMode::Stream.as_str().into(),
            agent: deps.agent.settings.agent_id.clone(),
            parameters,
            ..CallInfo::default()
        };
        tracing::info!(
            stream_sid = %stream_sid,
            from = %info.from,
            to = %info.to,
            parameters = info.parameters.len(),
            "media stream started"
        );
        deps.agent.observer.call_started(&info);
        self.stream_sid = stream_sid.clone();
        self.info = Some(info.clone());
        PipelineContext {
            call: info,
            stream_sid,
            config: deps.config.clone(),
            agent: deps.agent.clone(),
        }
    }

    /// Handles a `media` message: the caller's audio, checked (or decoded when
    /// the call is recorded or chunked) and handed to the pipeline.
    fn on_media(
        &mut self,
        media: &MediaView<'_>,
        pipeline: Option<&mut (dyn Pipeline + '_)>,
        now: Instant,
    ) {
        if !media.is_inbound() {
            return;
        }
        // Checking is enough for a pipeline, which forwards Twilio's base64 as it
        // came; the bytes are needed only to record the call or to gather frames
        // into chunks.
        self.decoded.clear();
        let checked = media.check_payload().and_then(|payload_b64| {
            if self.recording.is_some() || self.chunks.is_some() {
                media.decode_payload_into(&mut self.decoded)?;
            }
            Ok(payload_b64)
        });
        let payload_b64 = match checked {
            Ok(payload_b64) => payload_b64,
            Err(e) => {
                self.reject(format_args!("ignoring a media frame: {e}"));
                return;
            }
        };
        self.frames_in += 1;
        if let Some(recording) = self.recording.as_mut()
            && let Err(e) = recording.caller(&self.decoded, now.into_std())
        {
            tracing::warn!(error = %e, "no longer recording this call");
        }
        match (pipeline, self.chunks.as_mut()) {
            (Some(p), None) => p.caller_audio(CallerAudio {
                payload_b64,
                timestamp_ms: media.timestamp,
            }),
            (Some(p), Some(chunks)) => {
                if let Some(chunk) = chunks.push(&self.decoded, media.timestamp) {
                    p.caller_audio(chunk);
                }
            }
            (None, _) => self.media_while_connecting += 1,
        }
    }

    /// Handles everything except `start` and `stop`; returns what the pipeline
    /// should hear about.
    fn on_message(
        &mut self,
        message: Inbound,
        raw: &str,
        pipeline: Option<&mut (dyn Pipeline + '_)>,
        now: Instant,
    ) -> Option<CallEvent> {
        match message {
            Inbound::Media(media) => {
                self.on_media(&MediaView::of(&media), pipeline, now);
                None
            }
            Inbound::Dtmf(dtmf) => {
                let mut chars = dtmf.dtmf.digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(digit), None) if pipeline.is_some() => Some(CallEvent::Dtmf(digit)),
                    (Some(_), None) => {
                        tracing::info!("a keypress before the pipeline is ready; ignored");
                        None
                    }
                    _ => {
                        self.reject(format_args!(
                            "ignoring a dtmf message without exactly one digit: {:?}",
                            excerpt(&dtmf.dtmf.digit, 20)
                        ));
                        None
                    }
                }
            }
            Inbound::Mark(mark) => self.playback.on_mark(&mark.mark.name, now.into_std()),
            Inbound::Connected(c) => {
                tracing::debug!(protocol = %c.protocol, version = %c.version, "media stream connected");
                None
            }
            Inbound::Unknown => {
                tracing::info!(
                    frame = excerpt(raw, 200),
                    "ignoring a message type this version does not know"
                );
                None
            }
            Inbound::Start(_) | Inbound::Stop(_) => None,
        }
    }

    /// Queues agent audio for playback, logging what a full queue drops.
    fn queue_audio(&mut self, turn: u64, mulaw: &[u8]) {
        let taken = self.playback.push(turn, mulaw);
        if taken < mulaw.len() {
            tracing::warn!(
                dropped = mulaw.len() - taken,
                "outbound audio queue full; dropping agent audio"
            );
        }
    }

    /// Queues the agent audio the pipeline has ready now (a burst from upstream),
    /// up to [`READY_AUDIO_MAX`] outputs and while there is room; returns the
    /// first output that is not audio, for the loop to handle next. Never waits.
    fn take_ready_audio(
        &mut self,
        pipeline: Option<&mut (dyn Pipeline + '_)>,
    ) -> Option<Box<PipelineOutput>> {
        let pipeline = pipeline?;
        for _ in 0..READY_AUDIO_MAX {
            if !self.playback.has_room() {
                return None;
            }
            match pipeline.next_output().now_or_never()? {
                PipelineOutput::Audio { turn, mulaw } => self.queue_audio(turn, &mulaw),
                other => return Some(Box::new(other)),
            }
        }
        None
    }

    /// Sends the next frame (and its mark), with the frames due within
    /// [`BATCH_AHEAD`] after it, in one write.
    async fn send_frame<S>(&mut self, socket: &mut S) -> Result<(), <S as Sink<Outbound>>::Error>
    where
        S: Sink<Outbound> + Unpin,
    {
        let now = Instant::now().into_std();
        let mut first = true;
        while let Some((media, mark)) = self.next_in_batch(now, first) {
            first = false;
            socket.feed(media).await?;
            if let Some(mark) = mark {
                socket.feed(mark).await?;
            }
        }
        socket.flush().await
    }

    /// The next frame's messages for the write being made at `now`: the frame that
    /// is due (`first`), then those due within [`BATCH_AHEAD`].
    fn next_in_batch(
        &mut self,
        now: std::time::Instant,
        first: bool,
    ) -> Option<(Outbound, Option<Outbound>)> {
        if !first {
            match self.playback.due(now)? {
                Pace::At(at) if at > now + BATCH_AHEAD => return None,
                _ => {}
            }
        }
        let out = self.playback.pop_frame(now)?;
        if let Some(recording) = self.recording.as_mut() {
            recording.agent(&out.frame);
        }
        self.frames_out += 1;
        let media = Outbound::media(self.stream_sid.clone(), &out.frame);
        let mark = out
            .mark
            .map(|mark| Outbound::mark(self.stream_sid.clone(), mark));
        Some((media, mark))
    }
}

/// Most outputs [`Call::take_ready_audio`] gathers at once (a second of 20 ms
/// deltas), so a fast upstream cannot hold up the loop.
const READY_AUDIO_MAX: usize = 50;

/// How early a paced frame may leave (the timer's resolution).
const TIMER_SLACK: Duration = Duration::from_millis(1);

async fn poll_opt(connecting: &mut Option<Connecting>) -> Result<Box<dyn Pipeline>, PipelineError> {
    match connecting.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_output(
    held: &mut Option<Box<PipelineOutput>>,
    pipeline: &mut Option<Box<dyn Pipeline>>,
) -> PipelineOutput {
    if let Some(output) = held.take() {
        return *output;
    }
    match pipeline.as_mut() {
        Some(p) => p.next_output().await,
        None => std::future::pending().await,
    }
}
