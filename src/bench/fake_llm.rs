//! The benchmark's LLM: a minimal OpenAI-compatible `/chat/completions` server on
//! loopback that streams a fixed token schedule as Server-Sent Events over HTTP/1.1
//! keep-alive, so the server under test runs its real LLM client path.
//!
//! The first token of every reply carries the time it was written (`t<ns> `,
//! nanoseconds since [`epoch`]), so a client in the same process can tell how long
//! the server took to pass it on: the server-added latency.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The benchmark's clock origin, shared by the fake LLM and the simulated calls.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The marker a prompt carries to ask for the long reply used to measure interrupts.
pub const LONG_MARKER: &str = "[long]";

/// How replies are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Delay before the first token (the LLM's own time to first token).
    pub first_token: Duration,
    pub tokens: usize,
    /// Delay between tokens.
    pub gap: Duration,
}

impl Schedule {
    /// A conversational reply: 12 words, 20 ms to the first, 10 ms apart.
    pub const NORMAL: Schedule = Schedule {
        first_token: Duration::from_millis(20),
        tokens: 12,
        gap: Duration::from_millis(10),
    };
    /// A long reply (0.4 s of dense tokens), for barge-in measurements.
    pub const LONG: Schedule = Schedule {
        first_token: Duration::from_millis(20),
        tokens: 400,
        gap: Duration::from_millis(1),
    };
    /// As fast as possible: 6 words at once (saturation).
    pub const BURST: Schedule = Schedule {
        first_token: Duration::ZERO,
        tokens: 6,
        gap: Duration::ZERO,
    };
}

/// Which schedule the fake follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// [`Schedule::NORMAL`], or [`Schedule::LONG`] when the newest user message
    /// carries [`LONG_MARKER`] (the request body is parsed for it).
    Conversation = 0,
    /// [`Schedule::BURST`] for every request; bodies are read but not parsed.
    Burst = 1,
}

/// A running fake LLM.
pub struct FakeLlm {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Whether streams end with `data: [DONE]` (OpenAI's behaviour).
    done: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl FakeLlm {
    /// Listens on `127.0.0.1:port` (0: any free port).
    pub async fn start(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(AtomicU8::new(Mode::Conversation as u8));
        let done = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            Shared {
                mode: mode.clone(),
                done: done.clone(),
                connections: connections.clone(),
            },
            stop.clone(),
        ));
        Ok(Self {
            port,
            mode,
            done,
            connections,
            stop,
        })
    }

    /// The `OPENAI_BASE_URL` to give the server.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// TCP connections accepted so far (a client that reuses connections opens few).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Leaves out the final `data: [DONE]` (the body just ends). OpenAI sends it;
    /// without it the client reads each body to its end and can reuse the
    /// HTTP/1.1 connection, which shows what connection reuse is worth.
    pub fn send_done(&self, done: bool) {
        self.done.store(done, Ordering::Relaxed);
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What every connection task reads.
#[derive(Clone)]
struct Shared {
    mode: Arc<AtomicU8>,
    done: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
}

async fn accept_loop(listener: TcpListener, shared: Shared, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                let _ = socket.set_nodelay(true);
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = serve_connection(socket, shared) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "fake LLM accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Answers requests on one keep-alive connection until the client goes away.
async fn serve_connection(socket: TcpStream, shared: Shared) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        // Request line and headers.
        let mut content_length = 0usize;
        let mut first = true;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((name, value)) = trimmed.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        body.resize(content_length, 0);
        read.read_exact(&mut body).await?;
        let schedule = if shared.mode.load(Ordering::Relaxed) == Mode::Burst as u8 {
            Schedule::BURST
        } else if newest_user_message(&body).is_some_and(|m| m.contains(LONG_MARKER)) {
            Schedule::LONG
        } else {
            Schedule::NORMAL
        };
        stream_reply(&mut write, schedule, shared.done.load(Ordering::Relaxed)).await?;
    }
}

/// The content of the last `user` message of a chat request.
fn newest_user_message(body: &[u8]) -> Option<String> {
    let request: serde_json::Value = serde_json::from_slice(body).ok()?;
    request["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .map(str::to_string)
}

/// One SSE event as an HTTP/1.1 chunk.
fn chunk(out: &mut Vec<u8>, data: &str) {
    let event = format!("data: {data}\n\n");
    out.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A content chunk as OpenAI sends it (`token` needs no JSON escaping here).
fn token_data(token: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench","choices":[{{"index":0,"delta":{{"content":"{token}"}},"finish_reason":null}}]}}"#
    )
}

const FINISH_DATA: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;

/// The chunks that never change, built once (the load generator shares the CPU
/// with the server, so it does as little as it can).
fn word_chunk() -> &'static [u8] {
    static WORD: OnceLock<Vec<u8>> = OnceLock::new();
    WORD.get_or_init(|| {
        let mut out = Vec::new();
        chunk(&mut out, &token_data("palavra "));
        out
    })
}

fn finish_chunks(send_done: bool) -> &'static [u8] {
    static WITH_DONE: OnceLock<Vec<u8>> = OnceLock::new();
    static WITHOUT: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if send_done { &WITH_DONE } else { &WITHOUT };
    cell.get_or_init(|| {
        let mut out = Vec::new();
        chunk(&mut out, FINISH_DATA);
        if send_done {
            chunk(&mut out, "[DONE]");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    })
}

async fn stream_reply<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    schedule: Schedule,
    send_done: bool,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    if !schedule.first_token.is_zero() {
        write.write_all(&out).await?;
        out.clear();
        tokio::time::sleep(schedule.first_token).await;
    }
    for i in 0..schedule.tokens {
        if i > 0 && !schedule.gap.is_zero() {
            write.write_all(&out).await?;
            out.clear();
            tokio::time::sleep(schedule.gap).await;
        }
        if i == 0 {
            // Stamped as late as possible: right before it is written.
            chunk(&mut out, &token_data(&format!("t{} ", now_ns())));
        } else {
            out.extend_from_slice(word_chunk());
        }
    }
    out.extend_from_slice(finish_chunks(send_done));
    write.write_all(&out).await
}

/// The write time stamped on a first token, if `token` is one.
/// (Tokens that arrive together may share one `text` message: only the leading
/// stamp counts.)
pub fn stamped_ns(token: &str) -> Option<u64> {
    token.strip_prefix('t')?.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_tokens_carry_their_time() {
        assert_eq!(stamped_ns("t123456 "), Some(123_456));
        assert_eq!(stamped_ns("palavra "), None);
        assert_eq!(stamped_ns("t42 palavra palavra "), Some(42));
    }

    #[test]
    fn the_newest_user_message_picks_the_schedule() {
        let body = br#"{"messages":[{"role":"user","content":"a [long]"},{"role":"assistant","content":"t1 "},{"role":"user","content":"b"}]}"#;
        assert_eq!(newest_user_message(body).as_deref(), Some("b"));
    }

    #[test]
    fn prebuilt_chunks_are_the_json_a_client_expects() {
        let word = String::from_utf8(word_chunk().to_vec()).unwrap();
        let data = word
            .split("data: ")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["choices"][0]["delta"]["content"], "palavra ");
        let end = String::from_utf8(finish_chunks(true).to_vec()).unwrap();
        assert!(end.contains(r#""finish_reason":"stop""#) && end.contains("data: [DONE]"));
        assert!(end.ends_with("0\r\n\r\n"));
    }

    #[test]
    fn events_are_chunked_sse() {
        let mut out = Vec::new();
        chunk(&mut out, "[DONE]");
        assert_eq!(out, b"e\r\ndata: [DONE]\n\n\r\n");
    }
}
