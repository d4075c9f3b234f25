//! A fake upstream speech server (OpenAI Realtime, ElevenLabs) on loopback: real
//! WebSockets through tokio-tungstenite's `accept_hdr_async`, so each test can check
//! the handshake (path, query, auth headers), read exactly what the client sent, send
//! scripted events back, and see how the client closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// How long a test waits for anything from the client before failing.
const WAIT: Duration = Duration::from_secs(5);

/// The fake server; every accepted socket becomes a [`FakeConn`].
pub struct FakeWsServer {
    pub addr: SocketAddr,
    conns: mpsc::Receiver<FakeConn>,
}

/// One client connection as the server sees it.
pub struct FakeConn {
    /// Path and query of the handshake request.
    pub uri: String,
    pub headers: HeaderMap,
    ws: WebSocketStream<TcpStream>,
}

/// How the client's socket ended, as the server saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code.
    CloseFrame(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
}

impl FakeWsServer {
    /// Accepts every handshake.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Refuses every handshake with this HTTP status.
    pub async fn rejecting(status: u16) -> Self {
        Self::start_with(Some(status)).await
    }

    async fn start_with(reject: Option<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Like a real service: small messages go out at once.
                let _ = stream.set_nodelay(true);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let seen: Arc<Mutex<Option<(String, HeaderMap)>>> = Arc::default();
                    let slot = seen.clone();
                    // The callback's signature is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let callback = move |req: &Request, resp: Response| {
                        *slot.lock().unwrap() =
                            Some((req.uri().to_string(), req.headers().clone()));
                        match reject {
                            Some(status) => {
                                let mut refusal =
                                    ErrorResponse::new(Some("{\"error\":\"invalid key\"}".into()));
                                *refusal.status_mut() = status.try_into().unwrap();
                                Err(refusal)
                            }
                            None => Ok(resp),
                        }
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                        let (uri, headers) = seen.lock().unwrap().take().unwrap();
                        let _ = tx.send(FakeConn { uri, headers, ws }).await;
                    }
                });
            }
        });
        Self { addr, conns }
    }

    /// `ws://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The next connection the client opened.
    pub async fn next_conn(&mut self) -> FakeConn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the client connects")
            .expect("the fake server runs")
    }
}

impl FakeConn {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next text message, as JSON. Fails the test on anything else.
    pub async fn recv_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the client sends a message in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("the client sends JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.unwrap();
    }

    /// Closes the socket from the server side with this code and reason.
    pub async fn close_with(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
    }

    /// Reads until the client's socket ends; returns the text messages received on
    /// the way (as JSON) and how it ended.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Ending) {
        let mut texts = Vec::new();
        let ending = tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        texts.push(serde_json::from_str(text.as_str()).expect("JSON"));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break Ending::CloseFrame(frame.map_or(1005, |f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break Ending::Dropped,
                }
            }
        })
        .await
        .expect("the client closes its socket in time");
        (texts, ending)
    }
}
