//! WebSocket upgrades: `/websocket` (ConversationRelay) and `/media-stream` (Media
//! Streams). Converts warp's socket into a `Stream<Frame> + Sink<Outbound>` of the
//! transport's protocol and hands it to the transport's session, tracked so a drain
//! can wait for it. The handshake's `X-Twilio-Signature` is checked before the
//! upgrade (403 on failure).

use futures::{SinkExt, StreamExt, future};
use tracing::Instrument;
use warp::filters::BoxedFilter;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{json_error, twilio_auth, with_state};
use crate::media::protocol::Outbound as MediaOutbound;
use crate::relay::protocol::Outbound;
use crate::server::AppState;
use crate::transport::Frame;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let relay = warp::path!("websocket")
        .and(warp::ws())
        .and(twilio_auth::websocket(state.clone()))
        .and(with_state(state.clone()))
        .map(|ws: Ws, state: AppState| upgrade_relay(ws, state));
    let media = warp::path!("media-stream")
        .and(warp::ws())
        .and(twilio_auth::websocket(state.clone()))
        .and(with_state(state))
        .map(|ws: Ws, state: AppState| upgrade_media(ws, state));
    relay.or(media).unify().boxed()
}

fn upgrade_media(ws: Ws, state: AppState) -> Response {
    if let Some(refusal) = refuse_new_call(&state) {
        return refusal;
    }
    let max = state.config.max_ws_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let session = crate::media::session::run(media_socket(socket), state.media_deps());
            let span = crate::telemetry::call_span("stream");
            let calls = state.calls.clone();
            async move {
                calls.track_future(session.instrument(span)).await;
            }
        })
        .into_response()
}

/// warp's socket as a stream of [`Frame`]s and a sink of Media Streams messages.
fn media_socket(
    socket: WebSocket,
) -> impl futures::Stream<Item = Result<Frame, warp::Error>>
+ futures::Sink<MediaOutbound, Error = warp::Error>
+ Unpin {
    socket
        .with(|out: MediaOutbound| {
            future::ready(Ok::<_, warp::Error>(Message::text(out.to_json())))
        })
        .filter_map(|message| future::ready(to_frame(message)))
}

fn upgrade_relay(ws: Ws, state: AppState) -> Response {
    if let Some(refusal) = refuse_new_call(&state) {
        return refusal;
    }
    let max = state.config.max_ws_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let session = crate::relay::session::run(relay_socket(socket), state.session_deps());
            let span = crate::telemetry::call_span("relay");
            let calls = state.calls.clone();
            async move {
                calls.track_future(session.instrument(span)).await;
            }
        })
        .into_response()
}

/// 503 while draining or when the server is full.
fn refuse_new_call(state: &AppState) -> Option<Response> {
    if state.is_draining() {
        return Some(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down",
        ));
    }
    if state.calls.len() >= state.config.max_calls {
        tracing::warn!(
            limit = state.config.max_calls,
            "refusing a call: too many live calls"
        );
        return Some(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many calls",
        ));
    }
    None
}

/// warp's socket as a stream of [`Frame`]s and a sink of [`Outbound`] messages.
fn relay_socket(
    socket: WebSocket,
) -> impl futures::Stream<Item = Result<Frame, warp::Error>>
+ futures::Sink<Outbound, Error = warp::Error>
+ Unpin {
    socket
        .with(|out: Outbound| future::ready(Ok::<_, warp::Error>(Message::text(out.to_json()))))
        .filter_map(|message| future::ready(to_frame(message)))
}

fn to_frame(message: Result<Message, warp::Error>) -> Option<Result<Frame, warp::Error>> {
    let message = match message {
        Ok(m) => m,
        Err(e) => return Some(Err(e)),
    };
    if message.is_close() {
        Some(Ok(Frame::Close))
    } else if let Ok(text) = message.to_str() {
        Some(Ok(Frame::Text(text.to_string())))
    } else if message.is_binary() {
        Some(Ok(Frame::Binary(message.as_bytes().len())))
    } else {
        // Ping/pong: answered by the WebSocket layer.
        None
    }
}
