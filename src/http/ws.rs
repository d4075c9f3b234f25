//! WebSocket upgrades: `/websocket` (ConversationRelay) and `/media-stream` (Media
//! Streams). Converts the upgraded connection into a `Stream<Frame> + Sink<Outbound>`
//! of the transport's protocol and hands it to the transport's session, tracked so
//! a drain can wait for it.
//!
//! The handshake is done here rather than with `warp::ws()`, because warp cannot
//! set tungstenite's read buffer: its default (128 KiB per socket, zero-filled on
//! every read) cost a third of the server's CPU and most of its memory per call in
//! the benchmark. Twilio's messages are small, so a 4 KiB buffer (grown on demand
//! up to the message size limit) is plenty.
//!
//! The handshake's `X-Twilio-Signature` is checked before the upgrade, then its
//! per-call token (`/websocket/<token>`, see `twilio::call_token`) is admitted once;
//! either failing answers 403 and never becomes a socket. The token names the
//! agent whose TwiML Twilio is following; the session runs that agent and holds
//! one of its slots (`state::roster`) while it lives.

use std::sync::Arc;

use futures::{FutureExt, SinkExt, StreamExt, future};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode, header};
use warp::hyper::upgrade::{OnUpgrade, Upgraded};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::HttpError;
use super::{twilio_auth, with_state};
use crate::media::protocol::Outbound as MediaOutbound;
use crate::media::session::MediaDeps;
use crate::relay::protocol::Outbound;
use crate::relay::session::SessionDeps;
use crate::state::AppState;
use crate::state::roster::{AgentEntry, LiveCall};
use crate::transport::Frame;
use crate::twilio::admission::{Admission, unix_now};
use crate::twilio::call_token::{Route, TokenError};

/// Bytes read from a socket at a time (the buffer grows for larger messages).
/// Twilio's messages are small (a `media` frame is ~370 bytes, a `prompt` a few
/// hundred), and tungstenite keeps this buffer per call and zero-fills it on
/// every read.
const READ_BUFFER_BYTES: usize = 1024;

/// An upgraded WebSocket connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let relay = warp::path(Route::Relay.path())
        .and(token_segment())
        .and(warp::get())
        .and(twilio_auth::websocket(state.clone()))
        .and(upgrade())
        .and(with_state(state.clone()))
        .then(|token: Option<String>, upgrade: Upgrade, state: AppState| {
            upgrade_relay(upgrade, token, state)
        });
    let media = warp::path(Route::Media.path())
        .and(token_segment())
        .and(warp::get())
        .and(twilio_auth::websocket(state.clone()))
        .and(upgrade())
        .and(with_state(state))
        .then(|token: Option<String>, upgrade: Upgrade, state: AppState| {
            upgrade_media(upgrade, token, state)
        });
    relay.or(media).unify().boxed()
}

/// The optional last path segment: the per-call token (`/websocket/<token>`). A
/// path segment rather than a query string, because `<Stream>` URLs may not carry
/// one and Twilio's handling of a query in a signed handshake URL is ambiguous.
fn token_segment() -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone {
    warp::path::param::<String>()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
        .and(warp::path::end())
}

/// Admits the handshake's token once (refused without a valid unused one when
/// tokens are required). The signature check ran first, so the token is the one
/// Twilio was given. The token itself is never logged.
async fn admit(
    state: &AppState,
    route: Route,
    token: Option<String>,
) -> Result<Option<Arc<Admission>>, TokenError> {
    match token {
        Some(token) => state
            .tokens
            .admit(route, &token, unix_now())
            .await
            .map(|admission| Some(Arc::new(admission))),
        None if state.tokens.required() => Err(TokenError::Missing),
        None => Ok(None),
    }
}

/// 403 for a handshake whose token was refused (503 when the ledger is down).
fn refuse_token(route: Route, error: TokenError) -> Response {
    tracing::warn!(route = ?route, reason = %error, "refusing a WebSocket handshake");
    if error == TokenError::Unavailable {
        return HttpError::unavailable("cannot check the call token right now").into_response();
    }
    HttpError::Forbidden("invalid or missing call token").into_response()
}

/// A request to upgrade to a WebSocket (or why it is not one).
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` for the reply.
    accept: Result<String, &'static str>,
    on_upgrade: Option<OnUpgrade>,
}

/// Reads the WebSocket handshake headers (RFC 6455 §4.2.1) and hyper's upgrade handle.
pub fn upgrade() -> impl Filter<Extract = (Upgrade,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(warp::ext::optional::<OnUpgrade>())
        .map(
            |headers: HeaderMap, on_upgrade: Option<OnUpgrade>| Upgrade {
                accept: handshake_accept(&headers),
                on_upgrade,
            },
        )
}

fn handshake_accept(headers: &HeaderMap) -> Result<String, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err("expected a WebSocket upgrade");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err("unsupported WebSocket version (13 expected)");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    Ok(derive_accept_key(key.as_bytes()))
}

impl Upgrade {
    /// Answers `101 Switching Protocols` and runs `session` on the socket once
    /// hyper hands it over; or answers why the upgrade is refused.
    pub fn accept<F, Fut>(self, config: WebSocketConfig, session: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = match self.accept {
            Ok(accept) => accept,
            Err(reason) => return HttpError::BadRequest(reason.to_string()).into_response(),
        };
        let Some(on_upgrade) = self.on_upgrade else {
            return HttpError::BadRequest("connection cannot be upgraded".into()).into_response();
        };
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    session(socket).await;
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        headers.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        if let Ok(value) = header::HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
        }
        response
    }
}

/// The socket settings for a call: small read buffer, bounded messages.
pub fn socket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

async fn upgrade_relay(upgrade: Upgrade, token: Option<String>, state: AppState) -> Response {
    if let Some(refusal) = refuse_new_call(&state) {
        return refusal;
    }
    let admission = match admit(&state, Route::Relay, token).await {
        Ok(admission) => admission,
        Err(e) => return refuse_token(Route::Relay, e),
    };
    // Counted as a live call from the moment the upgrade is accepted, so a drain
    // that starts before the socket is handed over still waits for this call.
    let live = state.calls.token();
    let (agent, slot) = agent_of(&state, admission.as_deref());
    let config = socket_config(state.config.max_ws_message_bytes);
    upgrade.accept(config, move |socket| {
        let deps = SessionDeps {
            admission,
            ..state.session_deps_for(&agent)
        };
        crate::relay::session::run(relay_socket(socket), deps)
            .instrument(crate::telemetry::call_span("relay"))
            .map(move |_stats| drop((live, slot)))
    })
}

async fn upgrade_media(upgrade: Upgrade, token: Option<String>, state: AppState) -> Response {
    if let Some(refusal) = refuse_new_call(&state) {
        return refusal;
    }
    let admission = match admit(&state, Route::Media, token).await {
        Ok(admission) => admission,
        Err(e) => return refuse_token(Route::Media, e),
    };
    let live = state.calls.token();
    let (agent, slot) = agent_of(&state, admission.as_deref());
    let config = socket_config(state.config.max_ws_message_bytes);
    upgrade.accept(config, move |socket| {
        let deps = MediaDeps {
            admission,
            ..state.media_deps_for(&agent)
        };
        crate::media::session::run(media_socket(socket), deps)
            .instrument(crate::telemetry::call_span("stream"))
            .map(move |_stats| drop((live, slot)))
    })
}

/// The agent the call's token names (the default without a token), and the slot
/// its call holds while the session lives.
fn agent_of(state: &AppState, admission: Option<&Admission>) -> (Arc<AgentEntry>, LiveCall) {
    let agent = state
        .agents
        .named_or_default(admission.map_or("", |a| a.agent()))
        .clone();
    let slot = agent.load.start(admission.map_or("", |a| a.slot_key()));
    (agent, slot)
}

/// The socket as a stream of [`Frame`]s and a sink of Media Streams messages.
fn media_socket(
    socket: Socket,
) -> impl futures::Stream<Item = Result<Frame, tungstenite::Error>>
+ futures::Sink<MediaOutbound, Error = tungstenite::Error>
+ Unpin {
    socket
        .with(|out: MediaOutbound| {
            future::ready(Ok::<_, tungstenite::Error>(Message::text(out.to_json())))
        })
        .filter_map(|message| future::ready(to_frame(message)))
}

/// 503 while draining, when the server is full, or while the store writer is far
/// behind (new calls wait; the live ones lose nothing).
pub(super) fn refuse_new_call(state: &AppState) -> Option<Response> {
    if state.recorder.busy() {
        let refused = state.recorder.refused_call();
        if crate::media::log_due(refused, 1, 100) {
            tracing::warn!(
                refused,
                pending = state.recorder.counts().pending,
                "refusing a call: the store writer is behind"
            );
        }
        return Some(
            HttpError::unavailable("busy: call records are being written").into_response(),
        );
    }
    if state.is_draining() {
        return Some(HttpError::unavailable("server is shutting down").into_response());
    }
    if state.calls.len() >= state.config.max_calls {
        tracing::warn!(
            limit = state.config.max_calls,
            "refusing a call: too many live calls"
        );
        return Some(HttpError::unavailable("too many calls").into_response());
    }
    None
}

/// The socket as a stream of [`Frame`]s and a sink of [`Outbound`] messages.
pub(super) fn relay_socket(
    socket: Socket,
) -> impl futures::Stream<Item = Result<Frame, tungstenite::Error>>
+ futures::Sink<Outbound, Error = tungstenite::Error>
+ Unpin {
    socket
        .with(|out: Outbound| {
            future::ready(Ok::<_, tungstenite::Error>(Message::text(out.to_json())))
        })
        .filter_map(|message| future::ready(to_frame(message)))
}

/// A WebSocket message as a [`Frame`]; `None` for control frames (answered below).
pub fn to_frame(
    message: Result<Message, tungstenite::Error>,
) -> Option<Result<Frame, tungstenite::Error>> {
    match message {
        Err(e) => Some(Err(e)),
        Ok(Message::Text(text)) => Some(Ok(Frame::Text(text.as_str().to_owned()))),
        Ok(Message::Binary(bytes)) => Some(Ok(Frame::Binary(bytes.len()))),
        Ok(Message::Close(_)) => Some(Ok(Frame::Close)),
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::transport::testing::{NoSocket, returned_size};

    /// Every call's task, spawned by [`super::Upgrade::accept`], holds its
    /// session's future. With the socket (416 bytes) and tokio's task header it
    /// must stay within mimalloc's 4 KiB size class, or each call costs 1 KiB more
    /// (BENCHMARKS.md, issue 17, fourth session). An async fn's second copy of its
    /// arguments, or timers kept inline, would break it.
    #[test]
    fn the_sessions_futures_stay_small() {
        for (session, size) in [
            (
                "relay",
                returned_size(crate::relay::session::run::<NoSocket, String>),
            ),
            (
                "media",
                returned_size(crate::media::session::run::<NoSocket, String>),
            ),
        ] {
            assert!(
                size <= 2900,
                "the {session} session's future grew to {size} bytes"
            );
        }
    }
}
