//! The loopback listener that stands in for OpenAI's API in `voxrelay call --sip`:
//! call control (`POST …/accept|reject|refer|hangup`, answered `200 {}`) and the
//! call's sideband WebSocket, on one port, as `SIP_API_BASE` expects. It reads
//! each request's head with `peek` first, so a WebSocket upgrade reaches
//! tungstenite's handshake untouched. Everything it sees goes to one channel.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Largest request head or body read.
const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// How long a request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server did towards "OpenAI".
#[derive(Debug)]
pub enum Seen {
    /// A call-control request: its action (`accept`, `reject`, …), path, JSON body.
    Control {
        action: String,
        path: String,
        body: Value,
        /// Whether it carried an `Authorization` or `api-key` header.
        authenticated: bool,
    },
    /// The server opened the call's sideband at `path`.
    Sideband {
        path: String,
        socket: Box<WebSocketStream<TcpStream>>,
    },
}

/// Binds `addr` and serves until the receiver is dropped.
pub async fn listen(addr: &str) -> std::io::Result<(SocketAddr, mpsc::Receiver<Seen>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(Some(seen)) = tokio::time::timeout(READ_TIMEOUT, serve(stream)).await {
                            let _ = tx.send(seen).await;
                        }
                    });
                }
            }
        }
    });
    Ok((local, rx))
}

/// One connection: a sideband upgrade or one control request.
async fn serve(mut stream: TcpStream) -> Option<Seen> {
    let head = peek_head(&stream).await?;
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (request_line.next()?, request_line.next()?.to_string());
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    if header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        let config = WebSocketConfig::default().max_message_size(Some(MAX_REQUEST_BYTES));
        let socket = tokio_tungstenite::accept_async_with_config(stream, Some(config))
            .await
            .ok()?;
        return Some(Seen::Sideband {
            path,
            socket: Box::new(socket),
        });
    }
    let authenticated = header("authorization").is_some() || header("api-key").is_some();
    let length: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST_BYTES);
    let mut whole = vec![0u8; head.len() + length];
    stream.read_exact(&mut whole).await.ok()?;
    let body = serde_json::from_slice(&whole[head.len()..]).unwrap_or(Value::Null);
    let answer = if method == "POST" {
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    } else {
        "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    };
    stream.write_all(answer.as_bytes()).await.ok()?;
    let _ = stream.shutdown().await;
    let action = path.rsplit('/').next().unwrap_or_default().to_string();
    Some(Seen::Control {
        action,
        path,
        body,
        authenticated,
    })
}

/// The request head (through the blank line), without consuming it.
async fn peek_head(stream: &TcpStream) -> Option<Vec<u8>> {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buffer[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buffer[..end + 4].to_vec());
        }
        if n == buffer.len() {
            return None;
        }
        if n == seen {
            // Nothing new yet: wait a little for the rest of the head.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}
