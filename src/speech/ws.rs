//! The WebSocket plumbing the speech clients share: connect with a timeout and size
//! limits, then split the socket into a writer side and a reader the client polls.
//! A message is written by the sending task itself when nothing queued is still
//! unwritten and the socket takes it at once; otherwise a writer task fed by a
//! bounded queue writes it, in order. Dropping the [`WsLink`] stops the writer,
//! which sends a close frame; [`WsLink::close`] first lets the queued messages go
//! out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::lock::Mutex;
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
type Sink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// What the writer task is given.
enum Outgoing {
    Send(Message),
    /// Finish a flush that a direct write left waiting on the socket.
    Flush,
}

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
///
/// A message goes out from the sending task itself when nothing is queued before
/// it and the socket takes it at once (the steady state of caller audio, one frame
/// every 20 ms); otherwise it waits in the queue for the writer task. Before, every
/// frame went through the queue, a task wake-up each (often on the other worker
/// thread) for one write (BENCHMARKS.md, issue 17, eleventh session).
pub(crate) struct WsLink {
    service: Service,
    tx: mpsc::Sender<Outgoing>,
    sink: Sink,
    /// Messages queued and not yet written by the writer task; a direct write
    /// waits for zero, so nothing overtakes what was queued before it.
    queued: Arc<AtomicUsize>,
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
    let sink = Arc::new(Mutex::new(sink));
    let queued = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel(QUEUE);
    let stop = CancellationToken::new();
    let writer = write_loop(service, sink.clone(), rx, queued.clone(), stop.clone());
    let writer = tokio::spawn(writer.in_current_span());
    tracing::debug!(%service, "upstream socket open");
    Ok(WsLink {
        service,
        tx,
        sink,
        queued,
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
    sink: Sink,
    mut rx: mpsc::Receiver<Outgoing>,
    queued: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    // One wait for the stop, kept across messages (a fresh one per message would
    // enter and leave the token's list of waiters twice a frame), and polled only
    // once it has woken this task.
    let stopped = std::pin::pin!(stop.cancelled());
    let mut stopped = WakeGate::new(stopped);
    loop {
        let first = tokio::select! {
            biased;
            () = &mut stopped => break,
            first = rx.recv() => match first {
                Some(first) => first,
                None => break,
            },
        };
        // Everything already queued goes out in one write.
        let write = async {
            let mut sink = sink.lock().await;
            let (mut taken, mut closing, mut next) = (1, false, Some(first));
            while let Some(outgoing) = next.take() {
                if let Outgoing::Send(message) = outgoing {
                    closing = matches!(message, Message::Close(_));
                    sink.feed(message).await?;
                }
                if closing || taken == WRITE_BATCH {
                    break;
                }
                next = rx.try_recv().ok();
                taken += usize::from(next.is_some());
            }
            let flushed = sink.flush().await.map(|()| closing);
            queued.fetch_sub(taken, Ordering::AcqRel);
            flushed
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
    let close = async { sink.lock().await.send(Message::Close(Some(frame))).await };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

/// How a direct write went.
enum Direct {
    Sent,
    /// Something is queued before it, or the socket is busy: queue it.
    Busy(Message),
    Failed,
}

impl WsLink {
    pub(crate) fn service(&self) -> Service {
        self.service
    }

    /// Sends a message without waiting: written at once when the socket is free,
    /// else queued; a full queue drops it (for audio frames, which are worthless
    /// once late).
    pub(crate) fn try_send_text(&self, text: String) -> Result<(), SpeechError> {
        let Some(message) = self.write_or_count(text)? else {
            return Ok(());
        };
        self.tx.try_send(Outgoing::Send(message)).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => SpeechError::QueueFull {
                    service: self.service,
                },
                TrySendError::Closed(_) => self.gone(),
            }
        })
    }

    /// Sends a control message: written at once when the socket is free, else
    /// queued, waiting a bounded time for room.
    pub(crate) async fn send_text(&self, text: String) -> Result<(), SpeechError> {
        let Some(message) = self.write_or_count(text)? else {
            return Ok(());
        };
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Outgoing::Send(message))).await;
        if !matches!(sent, Ok(Ok(()))) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        match sent {
            Err(_) => Err(SpeechError::QueueFull {
                service: self.service,
            }),
            Ok(Err(_)) => Err(self.gone()),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Writes `text` at once if [`WsLink::send_direct`] can; otherwise returns the
    /// message to queue, already counted in `queued` (the caller uncounts it if
    /// the queue refuses it).
    fn write_or_count(&self, text: String) -> Result<Option<Message>, SpeechError> {
        match self.send_direct(Message::text(text)) {
            Direct::Sent => Ok(None),
            Direct::Failed => Err(self.gone()),
            Direct::Busy(message) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                Ok(Some(message))
            }
        }
    }

    fn gone(&self) -> SpeechError {
        SpeechError::Gone {
            service: self.service,
        }
    }

    /// Writes `message` from this task, without waiting, when nothing queued is
    /// still unwritten and the socket takes it. A flush the socket cannot finish
    /// at once is left to the writer task (the bytes wait in the socket's buffer).
    fn send_direct(&self, message: Message) -> Direct {
        if self.queued.load(Ordering::Acquire) != 0 {
            return Direct::Busy(message);
        }
        let Some(mut sink) = self.sink.try_lock() else {
            return Direct::Busy(message);
        };
        let mut cx = Context::from_waker(Waker::noop());
        match sink.poll_ready_unpin(&mut cx) {
            Poll::Pending => return Direct::Busy(message),
            Poll::Ready(Err(_)) => return Direct::Failed,
            Poll::Ready(Ok(())) => {}
        }
        if sink.start_send_unpin(message).is_err() {
            return Direct::Failed;
        }
        match sink.poll_flush_unpin(&mut cx) {
            Poll::Ready(Ok(())) => Direct::Sent,
            Poll::Ready(Err(_)) => Direct::Failed,
            Poll::Pending => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                if self.tx.try_send(Outgoing::Flush).is_err() {
                    // Nothing was queued, so the queue is closed: the writer is gone.
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Direct::Failed;
                }
                Direct::Sent
            }
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
        self.queued.fetch_add(1, Ordering::AcqRel);
        let close = self.tx.send(Outgoing::Send(Message::Close(Some(frame))));
        let queued = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
        if let (Ok(Ok(())), Some(writer)) = (queued, self.writer.take()) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
        }
        // Dropping `self` stops the writer if it is still running.
    }
}
