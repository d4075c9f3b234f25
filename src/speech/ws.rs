//! The WebSocket plumbing the speech clients share: connect with a timeout and size
//! limits, then split the socket into a writer task fed by a bounded queue and a
//! reader the client polls. Dropping the [`WsLink`] stops the writer, which sends a
//! close frame; [`WsLink::close`] first lets the queued messages go out.

use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use super::{Service, SpeechError};
use crate::transport::gate::WakeGate;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Outbound messages that may wait for the writer (about 5 s of 20 ms audio frames).
const QUEUE: usize = 256;
/// Most queued messages written together.
const WRITE_BATCH: usize = 32;
/// How long a control message may wait for room in the queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message accepted from an upstream (audio chunks are far smaller).
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Bytes read from the socket at a time. tungstenite's read buffer (held for the
/// whole call) grows to fit a message plus what one read brought after it, and
/// never shrinks: with 4 KiB reads, bursts of 200 ms Realtime deltas (~2.2 KB each)
/// grew it to 16 KiB per call; with 1 KiB reads it stays at the 4 KiB the
/// handshake left (BENCHMARKS.md, issue 17, eighth session). Larger messages still
/// arrive whole; they only take more reads.
const READ_BUFFER_BYTES: usize = 1024;
/// Longest server error body kept in [`SpeechError::Rejected`].
const MAX_ERROR_BODY: usize = 300;

/// Opens `url` (see [`connect`]) with `secret_header` (a key or a bearer token)
/// marked sensitive, so it never shows in a debug print.
pub(crate) async fn open(
    service: Service,
    url: &str,
    secret_header: Option<(&'static str, &str)>,
    timeout: Duration,
) -> Result<WsLink, SpeechError> {
    connect(service, request(service, url, secret_header)?, timeout).await
}

fn request(
    service: Service,
    url: &str,
    secret_header: Option<(&'static str, &str)>,
) -> Result<Request, SpeechError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut request = url
        .into_client_request()
        .map_err(|e| SpeechError::Connect {
            service,
            message: format!("invalid URL: {e}"),
        })?;
    if let Some((name, value)) = secret_header {
        let mut value = HeaderValue::from_str(value).map_err(|_| SpeechError::Connect {
            service,
            message: "the API key is not a valid header value".into(),
        })?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    Ok(request)
}

/// One open upstream socket.
pub(crate) struct WsLink {
    service: Service,
    tx: mpsc::Sender<Message>,
    reader: SplitStream<Ws>,
    writer: Option<JoinHandle<()>>,
    /// Cancels the writer (which then sends a close frame) when the link is dropped.
    _stop: DropGuard,
    /// Set once the socket has ended; every later read returns it again.
    ended: Option<SpeechError>,
}

/// Opens `request` within `timeout`.
async fn connect(
    service: Service,
    request: Request,
    timeout: Duration,
) -> Result<WsLink, SpeechError> {
    let config = WebSocketConfig::default()
        // tungstenite's default read buffer is 128 KiB per socket, zero-filled as
        // it is used; upstream messages are a few KiB.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let ws = match tokio::time::timeout(
        timeout,
        connect_async_with_config(request, Some(config), true),
    )
    .await
    {
        Err(_) => {
            return Err(SpeechError::ConnectTimeout {
                service,
                after: timeout,
            });
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(MAX_ERROR_BODY)
                        .collect()
                })
                .unwrap_or_default();
            return Err(SpeechError::Rejected {
                service,
                status: response.status().as_u16(),
                body,
            });
        }
        Ok(Err(e)) => {
            return Err(SpeechError::Connect {
                service,
                message: e.to_string(),
            });
        }
        Ok(Ok((ws, _response))) => ws,
    };
    let (sink, reader) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    let stop = CancellationToken::new();
    let writer = tokio::spawn(write_loop(service, sink, rx, stop.clone()).in_current_span());
    tracing::debug!(%service, "upstream socket open");
    Ok(WsLink {
        service,
        tx,
        reader,
        writer: Some(writer),
        _stop: stop.drop_guard(),
        ended: None,
    })
}

/// Sends queued messages until the queue closes, the link is dropped, a close frame
/// has been sent, or the socket fails; then closes the socket politely.
async fn write_loop(
    service: Service,
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Message>,
    stop: CancellationToken,
) {
    // One wait for the stop, kept across messages (a fresh one per message would
    // enter and leave the token's list of waiters twice a frame), and polled only
    // once it has woken this task.
    let stopped = std::pin::pin!(stop.cancelled());
    let mut stopped = WakeGate::new(stopped);
    loop {
        let message = tokio::select! {
            biased;
            () = &mut stopped => break,
            message = rx.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        // Everything already queued goes out in one write.
        let write = async {
            let mut closing = matches!(message, Message::Close(_));
            sink.feed(message).await?;
            let mut fed = 1;
            while !closing && fed < WRITE_BATCH {
                let Ok(message) = rx.try_recv() else { break };
                closing = matches!(message, Message::Close(_));
                sink.feed(message).await?;
                fed += 1;
            }
            sink.flush().await.map(|()| closing)
        };
        let sent = tokio::select! {
            biased;
            () = &mut stopped => break,
            sent = write => sent,
        };
        match sent {
            Err(e) => {
                tracing::debug!(%service, error = %e, "upstream socket write failed");
                return;
            }
            Ok(true) => return,
            Ok(false) => {}
        }
    }
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

impl WsLink {
    pub(crate) fn service(&self) -> Service {
        self.service
    }

    /// Queues a message without waiting; a full queue drops it (for audio frames,
    /// which are worthless once late).
    pub(crate) fn try_send_text(&self, text: String) -> Result<(), SpeechError> {
        self.tx.try_send(Message::text(text)).map_err(|e| match e {
            TrySendError::Full(_) => SpeechError::QueueFull {
                service: self.service,
            },
            TrySendError::Closed(_) => SpeechError::Gone {
                service: self.service,
            },
        })
    }

    /// Queues a control message, waiting a bounded time for room.
    pub(crate) async fn send_text(&self, text: String) -> Result<(), SpeechError> {
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Message::text(text))).await {
            Err(_) => Err(SpeechError::QueueFull {
                service: self.service,
            }),
            Ok(Err(_)) => Err(SpeechError::Gone {
                service: self.service,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// The next text message. Cancel-safe. Pings, pongs and binary frames are skipped;
    /// a close frame, a socket error or the end of the stream becomes
    /// [`SpeechError::Closed`], returned again on every later call.
    pub(crate) async fn next_text(&mut self) -> Result<Utf8Bytes, SpeechError> {
        if let Some(ended) = &self.ended {
            return Err(ended.clone());
        }
        let service = self.service;
        let ended = loop {
            match self.reader.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Binary(bytes))) => {
                    tracing::debug!(%service, bytes = bytes.len(), "ignoring a binary message");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    break SpeechError::Closed {
                        service,
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame
                            .map(|f| f.reason.as_str().to_string())
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| "closed by the server".into()),
                    };
                }
                Some(Err(e)) => {
                    break SpeechError::Closed {
                        service,
                        code: None,
                        reason: e.to_string(),
                    };
                }
                None => {
                    break SpeechError::Closed {
                        service,
                        code: None,
                        reason: "connection lost".into(),
                    };
                }
            }
        };
        tracing::debug!(%service, error = %ended, "upstream socket ended");
        self.ended = Some(ended.clone());
        Err(ended)
    }

    /// Sends what is queued, then a close frame, and waits (bounded) for the writer.
    pub(crate) async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: Utf8Bytes::from_static(""),
        };
        let queued =
            tokio::time::timeout(CLOSE_TIMEOUT, self.tx.send(Message::Close(Some(frame)))).await;
        if let (Ok(Ok(())), Some(writer)) = (queued, self.writer.take()) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
        }
        // Dropping `self` stops the writer if it is still running.
    }
}
