//! The media load mode's stand-in for OpenAI Realtime: a WebSocket server on
//! loopback that answers audio, not words. For every [`CUE`] frame in the caller
//! audio a connection appends (the load generator sends one at the end of each
//! second of silence), it sends one reply of [`DELTAS_PER_REPLY`]
//! `response.output_audio.delta` events of 20 ms each, framed by
//! `response.created` and `response.done` as Realtime does. It ignores everything
//! else (`session.update`, `response.create`, marks, truncation), so any Media
//! Streams server, ours or another, sees the same upstream. Cues rather than a
//! byte count: a server that drops the audio sent before its upstream opened
//! still answers the same frame.
//!
//! Reading is cheap on purpose (the load generator shares the CPU with the server
//! under test): an append's audio is found in its text without parsing the JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A frame of caller audio that asks for a reply: 20 ms of the μ-law byte 0x00,
/// which silence (0xff) never holds.
pub const CUE: [u8; DELTA_BYTES] = [0x00; DELTA_BYTES];
/// 20 ms deltas per reply: half a second of agent audio.
pub const DELTAS_PER_REPLY: usize = 25;
/// Bytes of one 20 ms delta of μ-law.
const DELTA_BYTES: usize = 160;

/// A running fake; it serves until the process exits.
pub struct FakeRealtime {
    port: u16,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    replies: AtomicU64,
}

impl FakeRealtime {
    /// Listens on `127.0.0.1:port` (0: any free port).
    pub async fn start(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        tokio::spawn(serve(listener, counters.clone()));
        Ok(Self { port, counters })
    }

    /// The URL to give a server as its Realtime endpoint (no query).
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/realtime", self.port)
    }

    /// WebSocket connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Replies sent so far.
    pub fn replies(&self) -> u64 {
        self.counters.replies.load(Ordering::Relaxed)
    }
}

async fn serve(listener: TcpListener, counters: Arc<Counters>) {
    let replies = Arc::new(Reply::new());
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let counters = counters.clone();
        let replies = replies.clone();
        tokio::spawn(async move {
            let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
            // Any path and query: `/v1/realtime?model=…` as both servers ask it.
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            counters.connections.fetch_add(1, Ordering::Relaxed);
            connection(ws, &replies, &counters).await;
        });
    }
}

/// One reply's messages, serialised once.
struct Reply {
    created: String,
    delta: String,
    done: String,
}

impl Reply {
    fn new() -> Self {
        let audio = base64::engine::general_purpose::STANDARD.encode([0x7fu8; DELTA_BYTES]);
        Self {
            created: serde_json::json!({"type": "response.created",
                "response": {"id": "resp_bench", "status": "in_progress"}})
            .to_string(),
            delta: serde_json::json!({"type": "response.output_audio.delta",
                "response_id": "resp_bench", "item_id": "item_bench",
                "output_index": 0, "content_index": 0, "delta": audio})
            .to_string(),
            done: serde_json::json!({"type": "response.done",
                "response": {"id": "resp_bench", "status": "completed", "output": []}})
            .to_string(),
        }
    }
}

async fn connection<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    reply: &Reply,
    counters: &Counters,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut cue_bytes = 0usize;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        cue_bytes += appended_cue_bytes(text.as_str());
        while cue_bytes >= CUE.len() {
            cue_bytes -= CUE.len();
            counters.replies.fetch_add(1, Ordering::Relaxed);
            let mut messages = Vec::with_capacity(DELTAS_PER_REPLY + 2);
            messages.push(reply.created.clone());
            messages.extend(std::iter::repeat_n(reply.delta.clone(), DELTAS_PER_REPLY));
            messages.push(reply.done.clone());
            for text in messages {
                if ws.feed(Message::text(text)).await.is_err() {
                    return;
                }
            }
            if ws.flush().await.is_err() {
                return;
            }
        }
    }
}

/// Cue bytes (0x00) in the audio of an `input_audio_buffer.append` (0 for
/// anything else).
fn appended_cue_bytes(text: &str) -> usize {
    if !text.contains("input_audio_buffer.append") {
        return 0;
    }
    let Some(start) = text.find("\"audio\"") else {
        return 0;
    };
    let rest = &text[start + 7..];
    let Some(open) = rest.find('"') else {
        return 0;
    };
    let body = &rest[open + 1..];
    let Some(close) = body.find('"') else {
        return 0;
    };
    base64::engine::general_purpose::STANDARD
        .decode(&body[..close])
        .map(|audio| audio.iter().filter(|&&b| b == CUE[0]).count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cue_bytes_in_appended_audio() {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let cue = b64(&CUE);
        let text = format!(r#"{{"type":"input_audio_buffer.append","audio":"{cue}"}}"#);
        assert_eq!(appended_cue_bytes(&text), 160);
        let spaced = format!(r#"{{"type": "input_audio_buffer.append", "audio": "{cue}"}}"#);
        assert_eq!(appended_cue_bytes(&spaced), 160);
        let mut mixed = vec![0xffu8; 200];
        mixed[10..90].fill(0);
        let text = format!(
            r#"{{"audio":"{}","type":"input_audio_buffer.append"}}"#,
            b64(&mixed)
        );
        assert_eq!(appended_cue_bytes(&text), 80);
        let silence = format!(
            r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
            b64(&[0xff; 160])
        );
        assert_eq!(appended_cue_bytes(&silence), 0);
        assert_eq!(appended_cue_bytes(r#"{"type":"session.update"}"#), 0);
    }
}
