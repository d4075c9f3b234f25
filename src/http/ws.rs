//! WebSocket upgrades: `/websocket` (ConversationRelay). Converts warp's socket into
//! a `Stream<Frame> + Sink<Outbound>` and hands it to the transport's session,
//! tracked so a drain can wait for it.

use futures::{SinkExt, StreamExt, future};
use tracing::Instrument;
use warp::filters::BoxedFilter;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{json_error, with_state};
use crate::relay::protocol::Outbound;
use crate::server::AppState;
use crate::transport::Frame;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("websocket")
        .and(warp::ws())
        .and(with_state(state))
        .map(|ws: Ws, state: AppState| upgrade_relay(ws, state))
        .boxed()
}

fn upgrade_relay(ws: Ws, state: AppState) -> Response {
    if let Some(refusal) = refuse_new_call(&state) {
        return refusal;
    }
    // Counted as a live call from the moment the upgrade is accepted, so a drain
    // that starts before the socket is handed over still waits for this call.
    let live = state.calls.token();
    let max = state.config.max_ws_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let session = crate::relay::session::run(relay_socket(socket), state.session_deps());
            let span = crate::telemetry::call_span("relay");
            async move {
                session.instrument(span).await;
                drop(live);
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
