//! A fake OpenAI-compatible `/chat/completions` server on loopback. It records every
//! request (path, headers, JSON body), answers with a scripted [`Reply`], and notices
//! when the client drops the connection mid-stream.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Streams these content deltas, `delay` apart, then `finish_reason: stop` and `[DONE]`.
    Tokens(Vec<String>, Duration),
    /// Streams tool-call deltas as OpenAI does (id and name first, arguments in three
    /// pieces), after the content deltas `text` if any.
    ToolCalls(Vec<(String, String, String)>),
    /// Streams these raw `delta` objects one chunk each, then `finish_reason`.
    Deltas(Vec<Value>, String),
    /// An HTTP error with this body.
    Status(u16, String),
    /// Sends the SSE headers, then nothing, forever.
    Hang,
    /// A 200 event stream whose data lines are not JSON.
    Garbage,
}

impl Reply {
    pub fn tokens(tokens: &[&str]) -> Self {
        Self::Tokens(
            tokens.iter().map(|t| t.to_string()).collect(),
            Duration::ZERO,
        )
    }
    /// Tool calls `(id, name, arguments)`, streamed in pieces.
    pub fn tools(calls: &[(&str, &str, &str)]) -> Self {
        Self::ToolCalls(
            calls
                .iter()
                .map(|(i, n, a)| (i.to_string(), n.to_string(), a.to_string()))
                .collect(),
        )
    }
    /// One tool call, streamed in pieces.
    pub fn tool(id: &str, name: &str, arguments: Value) -> Self {
        Self::tools(&[(id, name, &arguments.to_string())])
    }
    pub fn slow_tokens(tokens: &[&str], delay_ms: u64) -> Self {
        Self::Tokens(
            tokens.iter().map(|t| t.to_string()).collect(),
            Duration::from_millis(delay_ms),
        )
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Recorded {
    /// The messages sent, as JSON.
    pub fn raw_messages(&self) -> Vec<Value> {
        self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `(role, content)` of every message sent.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| {
                        (
                            m["role"].as_str().unwrap_or("").to_string(),
                            m["content"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<Reply>>,
    disconnects: AtomicUsize,
    disconnected: Notify,
    requested: Notify,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeLlm {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeLlm {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { serve(socket, s).await });
            }
        });
        Self { addr, shared }
    }

    /// Base URL to put in `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues the answer to the next request (default: a short "Olá!").
    pub fn push(&self, reply: Reply) {
        self.shared.replies.lock().unwrap().push_back(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.shared.requested.notified();
                if self.shared.requests.lock().unwrap().len() >= n {
                    return self.requests();
                }
                notified.await;
            }
        })
        .await
        .expect("the fake LLM did not get the expected requests")
    }

    /// How many streams the client dropped before they finished.
    pub fn disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }

    /// Waits until the client has dropped `n` streams early.
    pub async fn wait_disconnects(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.shared.disconnected.notified();
                if self.disconnects() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the client never dropped the LLM stream")
    }
}

async fn serve(mut socket: TcpStream, shared: Arc<Shared>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let reply = shared
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::tokens(&["Olá", "!"]));
    shared.requests.lock().unwrap().push(request);
    shared.requested.notify_waiters();

    let (mut reader, mut writer) = socket.into_split();
    // Set once the reply is complete but for its final chunk: a client closing
    // after that is not dropping a reply early.
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The client closing its end while we stream means it dropped the reply.
    let watcher = {
        let shared = shared.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        if finished.load(Ordering::SeqCst) {
                            return;
                        }
                        shared.disconnects.fetch_add(1, Ordering::SeqCst);
                        shared.disconnected.notify_waiters();
                        return;
                    }
                    Ok(_) => {}
                }
            }
        })
    };
    let sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
    let result: std::io::Result<()> = async {
        match reply {
            Reply::Tokens(tokens, delay) => {
                writer.write_all(sse_head.as_bytes()).await?;
                writer
                    .write_all(
                        chunk(json!({"role": "assistant", "content": ""}), None).as_bytes(),
                    )
                    .await?;
                for token in tokens {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    writer
                        .write_all(chunk(json!({ "content": token }), None).as_bytes())
                        .await?;
                }
                finished.store(true, Ordering::SeqCst);
                writer
                    .write_all(chunk(json!({}), Some("stop")).as_bytes())
                    .await?;
                writer.write_all(b"data: [DONE]\n\n").await?;
            }
            Reply::ToolCalls(calls) => {
                writer.write_all(sse_head.as_bytes()).await?;
                for (i, (id, name, args)) in calls.iter().enumerate() {
                    let first = json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""}}]});
                    writer.write_all(chunk(first, None).as_bytes()).await?;
                    for piece in thirds(args) {
                        let delta = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
                        writer.write_all(chunk(delta, None).as_bytes()).await?;
                    }
                }
                finished.store(true, Ordering::SeqCst);
                writer
                    .write_all(chunk(json!({}), Some("tool_calls")).as_bytes())
                    .await?;
                writer.write_all(b"data: [DONE]\n\n").await?;
            }
            Reply::Deltas(deltas, finish) => {
                writer.write_all(sse_head.as_bytes()).await?;
                for delta in deltas {
                    writer.write_all(chunk(delta, None).as_bytes()).await?;
                }
                finished.store(true, Ordering::SeqCst);
                writer
                    .write_all(chunk(json!({}), Some(&finish)).as_bytes())
                    .await?;
                writer.write_all(b"data: [DONE]\n\n").await?;
            }
            Reply::Status(status, body) => {
                finished.store(true, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                writer.write_all(head.as_bytes()).await?;
                writer.write_all(body.as_bytes()).await?;
            }
            Reply::Hang => {
                writer.write_all(sse_head.as_bytes()).await?;
                writer.write_all(b": waiting\n\n").await?;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Reply::Garbage => {
                finished.store(true, Ordering::SeqCst);
                writer.write_all(sse_head.as_bytes()).await?;
                writer
                    .write_all(b"data: this is not json\n\ndata: {broken\n\n")
                    .await?;
            }
        }
        writer.flush().await
    }
    .await;
    if result.is_ok() {
        finished.store(true, Ordering::SeqCst);
        watcher.abort();
    }
}

/// `text` in three pieces, cut at char boundaries.
fn thirds(text: &str) -> Vec<&str> {
    let mut cuts = vec![0];
    for k in 1..3 {
        let mut at = text.len() * k / 3;
        while !text.is_char_boundary(at) {
            at += 1;
        }
        cuts.push(at.max(*cuts.last().unwrap()));
    }
    cuts.push(text.len());
    cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {body}\n\n")
}

pub async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}
