//! `GET /console/call`: the console's "Try it" WebSocket. A browser cannot put a
//! bearer token on a WebSocket handshake, so the first message must be
//! `{"type": "start", "token": "<API_TOKEN>", "from": …, "to": …, "parameters": {…}}`
//! within [`START_WAIT`]; a wrong or missing token closes the socket (1008) before
//! anything else happens. After it, the browser speaks ConversationRelay as Twilio
//! does (`prompt`, `dtmf`, `interrupt` in; `text`, `end`, … out) and the call runs
//! in the same relay session as Twilio's calls, recorded with `mode: "console"`.
//!
//! The server makes the `setup` itself: its call SID (`CON…`, random) is never
//! the browser's choice, so a console call cannot write into another call's
//! records; a `setup` from the browser is dropped.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt, future, stream};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;
use warp::reply::Response;

use super::super::auth::token_matches;
use super::super::ws::{Socket, Upgrade, refuse_new_call, relay_socket, socket_config};
use crate::metrics::CallMode;
use crate::relay::protocol::{Inbound, Setup};
use crate::state::AppState;
use crate::transport::Frame;

/// How long the browser has to send its `start`.
const START_WAIT: Duration = Duration::from_secs(10);
/// The console caller's number when the page gives none.
const CONSOLE_NUMBER: &str = "console";

/// The browser's first message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename = "start")]
struct Start {
    token: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    parameters: HashMap<String, String>,
    /// The agent to talk to (else the one of `to`, else the default).
    #[serde(default)]
    agent: Option<String>,
}

pub(super) async fn upgrade(upgrade: Upgrade, state: AppState) -> Response {
    if let Some(refusal) = refuse_new_call(&state) {
        return refusal;
    }
    let live = state.calls.token();
    let config = socket_config(state.config.max_ws_message_bytes);
    upgrade.accept(config, move |socket| async move {
        run(socket, state).await;
        drop(live);
    })
}

async fn run(mut socket: Socket, state: AppState) {
    let Some(start) = read_start(&mut socket, state.config.api_token.expose()).await else {
        tracing::warn!("a console socket without a valid start message; closing it");
        let _ = socket
            .send(Message::text(
                r#"{"type":"error","description":"invalid or missing API token"}"#,
            ))
            .await;
        let frame = CloseFrame {
            code: CloseCode::Policy,
            reason: "unauthorized".into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(Some(frame))).await;
        return;
    };
    let agent = match start.agent.as_deref().filter(|a| !a.is_empty()) {
        Some(id) => state.agents.named_or_default(id),
        None => state.agents.for_number(start.to.as_deref()),
    }
    .clone();
    let call_sid = crate::transport::random_sid("CON");
    // A console call counts towards the agent's live calls, but is never refused
    // for them: the operator is trying the agent out.
    let _slot = agent.load.start(&call_sid);
    // The page links to the call's record with it.
    let started = serde_json::json!({"type": "started", "callSid": call_sid, "agent": agent.id()})
        .to_string();
    if socket.send(Message::text(started)).await.is_err() {
        return;
    }
    // On a phone, Twilio speaks the greeting (TwiML's `welcomeGreeting`); here the
    // page shows it, as the text Twilio would have spoken.
    let greeting = crate::agent::CallOpening::new(&agent.settings, &start.parameters).greeting;
    if !greeting.is_empty() {
        let text = crate::relay::protocol::Outbound::Text {
            token: greeting,
            last: true,
            lang: None,
            interruptible: None,
            preemptible: None,
        };
        if socket.send(Message::text(text.to_json())).await.is_err() {
            return;
        }
    }
    let setup = Setup {
        session_id: crate::transport::random_sid("VX"),
        call_sid,
        from: start
            .from
            .filter(|f| !f.trim().is_empty())
            .unwrap_or_else(|| CONSOLE_NUMBER.into()),
        to: start.to.unwrap_or_default(),
        direction: Some("inbound".into()),
        custom_parameters: start.parameters,
        ..Setup::default()
    };
    let first = Frame::Text(Inbound::Setup(Box::new(setup)).to_json());
    let socket = relay_socket(socket);
    let (sink, frames) = socket.split();
    // The browser's own `setup`s are dropped: the call is the one made above.
    let frames = frames.filter(|frame| {
        let is_setup = matches!(frame, Ok(Frame::Text(text))
            if matches!(serde_json::from_str::<Inbound>(text), Ok(Inbound::Setup(_))));
        if is_setup {
            tracing::warn!("dropping a setup sent by the console");
        }
        future::ready(!is_setup)
    });
    let frames = stream::once(future::ready(Ok(first))).chain(frames);
    let deps = crate::relay::session::SessionDeps {
        mode: CallMode::Console,
        ..state.session_deps_for(&agent)
    };
    let span = crate::telemetry::call_span("console");
    crate::relay::session::run(Joined { frames, sink }, deps)
        .instrument(span)
        .await;
}

/// Waits for the `start` message and checks its token (in constant time).
async fn read_start(socket: &mut Socket, token: &str) -> Option<Start> {
    let message = tokio::time::timeout(START_WAIT, socket.next())
        .await
        .ok()??
        .ok()?;
    let Message::Text(text) = message else {
        return None;
    };
    let start: Start = serde_json::from_str(text.as_str()).ok()?;
    token_matches(&start.token, token).then_some(start)
}

/// A stream of frames and a sink of messages as one socket for the session.
struct Joined<St, Si> {
    frames: St,
    sink: Si,
}

impl<St: futures::Stream + Unpin, Si: Unpin> futures::Stream for Joined<St, Si> {
    type Item = St::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.frames.poll_next_unpin(cx)
    }
}

impl<St: Unpin, Si: futures::Sink<T> + Unpin, T> futures::Sink<T> for Joined<St, Si> {
    type Error = Si::Error;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.sink.poll_ready_unpin(cx)
    }

    fn start_send(mut self: std::pin::Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
        self.sink.start_send_unpin(item)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.sink.poll_flush_unpin(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.sink.poll_close_unpin(cx)
    }
}
