//! The streaming HTTP exchange with an OpenAI-style `/chat/completions` endpoint:
//! one POST (with retries for rate limits, server errors and failed connects), then
//! the Server-Sent Events of the reply parsed as they arrive.
//!
//! Done here rather than through async-openai's stream, which hands every event to
//! a task of its own over an unbounded channel and drops the response at
//! `data: [DONE]` before its body has ended, so an HTTP/1.1 connection (a local
//! Ollama or vLLM, or any plain-HTTP server) was never reused: each turn paid a new
//! connection, and at load the closed sockets piled up in TIME_WAIT. Here a reply
//! that has finished is read to its end (briefly, in the background if the caller
//! has moved on) so the connection goes back to the pool; a reply dropped before it
//! finished (an interruption) still closes the connection at once, which is what
//! stops the LLM from generating.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;

/// Retries after the first attempt (429, 5xx, failed connects).
pub const MAX_RETRIES: u32 = 3;
/// Longest SSE line or event accepted.
const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// How long a finished reply's remaining bytes are awaited to reuse the connection.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// What an endpoint answered instead of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenError {
    /// A non-success status, with the error message of the body if any.
    Status { status: u16, body: String },
    /// No connection (after retries), or the request could not be sent.
    Connect(String),
}

/// Where and how to post. The URL is parsed once, with its query (Azure's
/// `api-version`) already in it: parsing it for every request cost about 6 000
/// instructions a turn (BENCHMARKS.md, issue 17, eighth session).
#[derive(Clone)]
pub struct Endpoint {
    pub http: reqwest::Client,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
}

/// Posts `body` and returns the event stream of a success, retrying what is worth
/// retrying (with exponential backoff from 100 ms, or the server's `retry-after`).
pub async fn open(endpoint: &Endpoint, body: Bytes) -> Result<SseStream, OpenError> {
    let mut attempt = 0u32;
    loop {
        let sent = endpoint
            .http
            .post(endpoint.url.clone())
            .headers(endpoint.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let retry_in = match sent {
            Ok(response) if response.status().is_success() => {
                return Ok(SseStream::new(response.bytes_stream().boxed()));
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let retryable = status == 429 || response.status().is_server_error();
                if !retryable || attempt >= MAX_RETRIES {
                    let body = bounded_text(response, 16 * 1024).await;
                    return Err(OpenError::Status { status, body });
                }
                retry_after(response.headers())
            }
            Err(e) if e.is_connect() && attempt < MAX_RETRIES => None,
            Err(e) => return Err(OpenError::Connect(e.to_string())),
        };
        let backoff = Duration::from_millis(100).saturating_mul(2u32.saturating_pow(attempt));
        let wait = retry_in.unwrap_or(backoff).min(Duration::from_secs(8));
        tracing::info!(
            attempt = attempt + 1,
            wait_ms = wait.as_millis() as u64,
            "retrying the LLM request"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// At most `max` bytes of an error body, as text.
async fn bounded_text(response: reqwest::Response, max: usize) -> String {
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One item of the stream: the `data` of an event, or why the stream broke.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    Data(String),
    Error(String),
}

/// The `data` of each Server-Sent Event of a response body, up to `[DONE]`.
///
/// Call [`SseStream::finished`] once the reply is complete (its finish reason
/// arrived): dropping the stream then reads whatever remains of the body in the
/// background, so the HTTP/1.1 connection can be reused.
pub struct SseStream {
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    buffer: Vec<u8>,
    /// Data lines of the event being read.
    data: Option<String>,
    ready: VecDeque<SseItem>,
    done: bool,
    finished: bool,
}

impl SseStream {
    pub fn new(body: BoxStream<'static, reqwest::Result<Bytes>>) -> Self {
        Self {
            body: Some(body),
            buffer: Vec::new(),
            data: None,
            ready: VecDeque::new(),
            done: false,
            finished: false,
        }
    }

    /// The reply is complete: what is left of the body may be read for reuse.
    pub fn finished(&mut self) {
        self.finished = true;
    }

    /// Splits buffered bytes into lines and events.
    fn parse(&mut self) {
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buffer[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // Valid UTF-8 (always, from a well-behaved server) is checked by the
            // fast path; only a broken line pays for the replacement characters.
            let line = match std::str::from_utf8(line) {
                Ok(line) => std::borrow::Cow::Borrowed(line),
                Err(_) => String::from_utf8_lossy(line),
            };
            start += end + 1;
            if line.is_empty() {
                // A blank line dispatches the event.
                if let Some(data) = self.data.take() {
                    if data == "[DONE]" {
                        self.done = true;
                        self.finished = true;
                        break;
                    }
                    self.ready.push_back(SseItem::Data(data));
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we use.
        }
        self.buffer.drain(..start);
        if self.buffer.len() > MAX_EVENT_BYTES
            || self
                .data
                .as_ref()
                .is_some_and(|d| d.len() > MAX_EVENT_BYTES)
        {
            self.ready
                .push_back(SseItem::Error("an SSE event exceeded 1 MiB".into()));
            self.done = true;
        }
    }
}

impl Stream for SseStream {
    type Item = SseItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SseItem>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(None);
            };
            match body.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    self.buffer.extend_from_slice(&bytes);
                    self.parse();
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    self.body = None;
                    return Poll::Ready(Some(SseItem::Error(e.to_string())));
                }
                Poll::Ready(None) => {
                    // The body ended: a last line or event without its terminator
                    // still counts.
                    self.body = None;
                    if !self.buffer.is_empty() && !self.done {
                        self.buffer.push(b'\n');
                        self.parse();
                    }
                    if !self.done
                        && let Some(data) = self.data.take()
                        && data != "[DONE]"
                    {
                        self.ready.push_back(SseItem::Data(data));
                    }
                    self.done = true;
                }
            }
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if !self.finished {
            // Cut short (an interruption): closing the connection stops the LLM.
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_TIME, async {
                    let mut left = 64 * 1024usize;
                    while let Some(Ok(chunk)) = body.next().await {
                        left = left.saturating_sub(chunk.len());
                        if left == 0 {
                            break;
                        }
                    }
                })
                .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn sse(chunks: &[&str]) -> SseStream {
        let owned: Vec<reqwest::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from(c.to_string())))
            .collect();
        SseStream::new(stream::iter(owned).boxed())
    }

    #[tokio::test]
    async fn events_split_across_chunks_and_lines() {
        let items: Vec<SseItem> = sse(&[
            ": keep-alive\n\ndata: {\"a\":",
            "1}\r\n\r\nevent: x\ndata: one\ndata: two\n\n",
            "data: [DONE]\n\ndata: after\n\n",
        ])
        .collect()
        .await;
        assert_eq!(
            items,
            vec![
                SseItem::Data("{\"a\":1}".into()),
                SseItem::Data("one\ntwo".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_last_event_without_blank_line_counts() {
        let items: Vec<SseItem> = sse(&["data: x\n\ndata: y"]).collect().await;
        assert_eq!(
            items,
            vec![SseItem::Data("x".into()), SseItem::Data("y".into())]
        );
    }

    #[tokio::test]
    async fn oversized_events_are_an_error() {
        let big = format!("data: {}", "a".repeat(MAX_EVENT_BYTES + 10));
        let items: Vec<SseItem> = sse(&[&big]).collect().await;
        assert!(matches!(items.last(), Some(SseItem::Error(_))));
    }
}
