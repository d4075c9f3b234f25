//! `voxrelay-floor` (`src/bin/voxrelay-floor.rs`): bare servers doing the least a ConversationRelay turn
//! (here) or a Media Streams call (`floor_media.rs`) needs, to measure what our
//! own server adds to it.
//!
//! The ConversationRelay one is a stand-in server with the same libraries and the same I/O as `voxrelay serve`
//! and nothing else: it reads a `prompt`, posts the conversation to the LLM
//! (reqwest, streamed), parses the SSE chunks and writes their tokens to the caller
//! as `text` messages (the first at once, the rest gathered as the real session
//! does), then `last: true`. No agent logic, tools, records, metrics, logs,
//! signature checks or limits: it is not safe to expose, and it is only started by
//! hand, on loopback, as BENCHMARKS.md describes. `voxrelay bench --target … --pid
//! …` drives it exactly as it drives our server, so the two CPU figures per turn
//! (and their instruction counts under callgrind) compare like for like.
//!
//! With `--record FILE`, it also keeps every turn in SQLite as durably as ours
//! does (`floor_records.rs`): the least a server that records costs.
//!
//! May import `relay`'s protocol types, `config`'s default prompt and `shutdown`
//! (the order is checked by `.ci/layers`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::BenchArgsError;
use super::flags::{Flags, bad};
use super::floor_records::{self, Row, Rows};
use crate::relay::protocol::{Inbound, Outbound, parse_inbound};

pub const USAGE: &str = "\
voxrelay-floor: a bare server (no checks; no records unless asked), to measure
the least a turn or a media call costs with our libraries. Loopback only; see
BENCHMARKS.md.

USAGE:
    voxrelay-floor --port P --llm-port Q        ConversationRelay
    voxrelay-floor --port P --llm-port Q --record FILE
                                                the same, each turn kept in SQLite
    voxrelay-floor --port P --realtime-port R   Media Streams to Realtime
    voxrelay-floor --port P --realtime-port R --paced
                                                the same, its audio paced as ours

It serves ws://127.0.0.1:P/ until SIGTERM (P may be 0: the address is printed),
then prints the turns it answered. ConversationRelay replies stream from an
OpenAI-compatible LLM at http://127.0.0.1:Q/v1 (model and key `bench`); drive it
with `voxrelay bench --target ws://127.0.0.1:P/ --pid PID --llm-port Q`. With
--record, every turn is written to the SQLite FILE (created) as ours writes it:
a row per turn, a reply's as its first words go out and again at its end. Media
calls are bridged to ws://127.0.0.1:R/v1/realtime; drive it with `voxrelay bench
media --target ws://127.0.0.1:P/ --pid PID --realtime-port R`.";

/// Where the floor server listens and what it calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorOptions {
    pub port: u16,
    pub upstream: Upstream,
    /// Media Streams: pace the agent's audio as our session does (`floor_media.rs`).
    pub paced: bool,
    /// ConversationRelay: keep every turn in this SQLite file (`floor_records.rs`).
    pub record: Option<PathBuf>,
}

/// The bare server's kind, by the fake it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// ConversationRelay, replies from an OpenAI-compatible LLM on this port.
    Llm(u16),
    /// Media Streams, bridged to a Realtime server on this port (`floor_media.rs`).
    Realtime(u16),
}

impl FloorOptions {
    pub fn from_args(args: &[String]) -> Result<Self, BenchArgsError> {
        let (mut port, mut upstream, mut paced, mut record) = (None, None, false, None);
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.next_flag() {
            match flag {
                "--port" => port = Some(flags.port(flag)?),
                "--llm-port" => upstream = Some(Upstream::Llm(flags.port(flag)?)),
                "--realtime-port" => upstream = Some(Upstream::Realtime(flags.port(flag)?)),
                "--paced" => paced = true,
                "--record" => record = Some(PathBuf::from(flags.value(flag)?)),
                "-h" | "--help" => return Err(BenchArgsError::Help),
                other => return Err(BenchArgsError::Unknown(other.to_string())),
            }
        }
        let missing = |flag: &str| BenchArgsError::MissingValue(flag.to_string());
        let upstream = upstream.ok_or_else(|| missing("--llm-port or --realtime-port"))?;
        // Each of these applies to one kind only: refused rather than ignored.
        match (&upstream, &record) {
            (Upstream::Realtime(_), Some(file)) => {
                let file = file.display().to_string();
                return Err(bad("--record", "--llm-port (ConversationRelay)", &file));
            }
            (Upstream::Llm(_), _) if paced => {
                return Err(bad(
                    "--paced",
                    "--realtime-port (Media Streams)",
                    "--llm-port",
                ));
            }
            _ => {}
        }
        Ok(Self {
            port: port.ok_or_else(|| missing("--port"))?,
            upstream,
            paced,
            record,
        })
    }
}

/// The WebSocket settings of our own sockets: tungstenite's default read buffer is
/// 128 KiB, zero-filled as it is used, which would make the floor dearer than us.
pub(super) fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(1024)
}

/// Serves until SIGTERM or Ctrl-C, then prints how many turns (or Realtime
/// replies) it answered: figures per turn under a profiler need the count, and
/// this server has no `/metrics`.
pub async fn serve(options: FloorOptions) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port))).await?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(std::io::Error::other)?;
    let llm_url: reqwest::Url = match options.upstream {
        Upstream::Llm(port) => format!("http://127.0.0.1:{port}/v1/chat/completions"),
        // Never called: media calls go to the Realtime URL below.
        Upstream::Realtime(_) => "http://127.0.0.1/".into(),
    }
    .parse()
    .map_err(std::io::Error::other)?;
    let turns = Arc::new(AtomicU64::new(0));
    let (mut rows, mut writer) = (None, None);
    if let (Some(path), Upstream::Llm(_)) = (&options.record, options.upstream) {
        let (queue, handle) = floor_records::start(path)
            .await
            .map_err(std::io::Error::other)?;
        (rows, writer) = (Some(queue), Some(handle));
    }
    // Printed once it is ready, with the port bound, so `--port 0` can be used
    // (the tests do).
    eprintln!("floor server on ws://{}/", listener.local_addr()?);
    let mut stop = std::pin::pin!(crate::shutdown::signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, _) = accepted?;
                let _ = socket.set_nodelay(true);
                match options.upstream {
                    Upstream::Llm(_) => {
                        let llm = (http.clone(), llm_url.clone());
                        tokio::spawn(call(socket, llm, turns.clone(), rows.clone()));
                    }
                    Upstream::Realtime(port) => {
                        let url = format!("ws://127.0.0.1:{port}/v1/realtime?model=bench");
                        let media = super::floor_media::call(socket, url, turns.clone(), options.paced);
                        tokio::spawn(media);
                    }
                }
            }
            () = &mut stop => {
                eprintln!("turns: {}", turns.load(Ordering::Relaxed));
                drop(rows);
                if let Some(writer) = writer {
                    // Calls still open hold the queue: wait for them a bounded time.
                    match tokio::time::timeout(Duration::from_secs(5), writer).await {
                        Ok(Ok(w)) => eprintln!("rows written: {} in {} groups", w.rows, w.groups),
                        _ => eprintln!("rows written: unknown (calls still open)"),
                    }
                }
                return Ok(());
            }
        }
    }
}

#[derive(Serialize)]
struct ChatMessage {
    role: &'static str,
    content: String,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'static str,
    stream: bool,
    messages: &'a [ChatMessage],
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

/// One reply being streamed: the body, the bytes not yet split into events, the
/// text sent so far, and whether any of it went out yet.
struct Reply {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    pending: BytesMut,
    text: String,
    started: bool,
}

/// The tokens of the complete SSE events in `pending`; `true` once the stream said
/// `[DONE]`.
fn take_events(pending: &mut BytesMut, tokens: &mut String) -> bool {
    let mut done = false;
    while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
        let event = pending.split_to(end + 2);
        let Some(data) = event.strip_prefix(b"data: ") else {
            continue;
        };
        let data = &data[..data.len() - 2];
        if data == b"[DONE]" {
            done = true;
            continue;
        }
        if let Ok(chunk) = serde_json::from_slice::<Chunk>(data) {
            for choice in chunk.choices {
                tokens.extend(choice.delta.content);
            }
        }
    }
    done
}

/// The call's records, when the floor keeps them: its queue, its SID (from
/// `setup`) and the next turn's number.
struct Recording {
    rows: Rows,
    call_sid: Arc<str>,
    seq: u32,
}

impl Recording {
    fn row(&self, seq: u32, role: &'static str, text: &str) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let _ = self.rows.send(Row {
            call_sid: self.call_sid.clone(),
            seq,
            role,
            text: text.to_string(),
            at_ms,
        });
    }
}

async fn call(
    socket: TcpStream,
    (http, url): (reqwest::Client, reqwest::Url),
    turns: Arc<AtomicU64>,
    rows: Option<Rows>,
) {
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(socket, Some(socket_config())).await
    else {
        return;
    };
    let mut history = vec![ChatMessage {
        role: "system",
        content: crate::config::DEFAULT_SYSTEM_PROMPT.into(),
    }];
    let mut reply: Option<Reply> = None;
    let mut recording = rows.map(|rows| Recording {
        rows,
        call_sid: "".into(),
        seq: 0,
    });
    loop {
        tokio::select! {
            biased;
            message = ws.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                match parse_inbound(&text) {
                    Ok(Inbound::Setup(setup)) => {
                        if let Some(r) = recording.as_mut() {
                            r.call_sid = setup.call_sid.as_str().into();
                        }
                    }
                    Ok(Inbound::Prompt(prompt)) => {
                        turns.fetch_add(1, Ordering::Relaxed);
                        if let Some(r) = recording.as_mut() {
                            r.row(r.seq, "caller", &prompt.voice_prompt);
                            // The reply's number: the next prompt's turn follows it.
                            r.seq += 2;
                        }
                        history.push(ChatMessage { role: "user", content: prompt.voice_prompt });
                        let body = serde_json::to_vec(&ChatRequest {
                            model: "bench",
                            stream: true,
                            messages: &history,
                        })
                        .unwrap_or_default();
                        let sent = http
                            .post(url.clone())
                            .bearer_auth("bench")
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        let Ok(response) = sent else { return };
                        reply = Some(Reply {
                            body: response.bytes_stream().boxed(),
                            pending: BytesMut::new(),
                            text: String::new(),
                            started: false,
                        });
                    }
                    Ok(Inbound::Interrupt(_)) => reply = None,
                    _ => {}
                }
            }
            chunk = next_chunk(&mut reply) => {
                let Some(current) = reply.as_mut() else { continue };
                let mut tokens = String::new();
                let mut done = match chunk {
                    Some(Ok(bytes)) => {
                        current.pending.extend_from_slice(&bytes);
                        take_events(&mut current.pending, &mut tokens)
                    }
                    _ => true,
                };
                // After the first token, gather what else is ready, as the session does:
                // hyper hands over one chunk per wake-up, so yield while that brings more.
                if current.started {
                    while !done {
                        tokio::task::yield_now().await;
                        let mut more = false;
                        while let Some(next) = current.body.next().now_or_never() {
                            more = true;
                            match next {
                                Some(Ok(bytes)) => {
                                    current.pending.extend_from_slice(&bytes);
                                    done |= take_events(&mut current.pending, &mut tokens);
                                }
                                _ => done = true,
                            }
                            if done {
                                break;
                            }
                        }
                        if !more {
                            break;
                        }
                    }
                }
                let mut out = Vec::with_capacity(2);
                if !tokens.is_empty() {
                    current.text.push_str(&tokens);
                    if let (false, Some(r)) = (current.started, &recording) {
                        r.row(r.seq - 1, "agent", &current.text);
                    }
                    current.started = true;
                    out.push(Outbound::token(tokens));
                }
                if done {
                    out.push(Outbound::end_of_turn());
                    if let Some(r) = &recording {
                        r.row(r.seq - 1, "agent", &current.text);
                    }
                    let said = std::mem::take(&mut current.text);
                    history.push(ChatMessage { role: "assistant", content: said });
                    reply = None;
                }
                for message in out {
                    let Ok(json) = serde_json::to_string(&message) else { continue };
                    if ws.feed(Message::text(json)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The next piece of the reply's body; pending forever when there is no reply.
async fn next_chunk(reply: &mut Option<Reply>) -> Option<reqwest::Result<Bytes>> {
    match reply {
        Some(reply) => reply.body.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_give_their_tokens_and_done() {
        let mut pending = BytesMut::from(
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"Ol\\u00e1 \"}}]}\n\n\
               data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\ndata: {\"cho"[..],
        );
        let mut tokens = String::new();
        assert!(take_events(&mut pending, &mut tokens));
        assert_eq!(tokens, "Olá ");
        assert_eq!(&pending[..], b"data: {\"cho");
    }

    #[test]
    fn flags_need_both_ports() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            FloorOptions::from_args(&args("--port 1 --llm-port 2")).unwrap(),
            FloorOptions {
                port: 1,
                upstream: Upstream::Llm(2),
                paced: false,
                record: None,
            }
        );
        assert_eq!(
            FloorOptions::from_args(&args("--port 1 --realtime-port 3"))
                .unwrap()
                .upstream,
            Upstream::Realtime(3)
        );
        assert!(
            FloorOptions::from_args(&args("--port 1 --realtime-port 3 --paced"))
                .unwrap()
                .paced
        );
        assert_eq!(
            FloorOptions::from_args(&args("--port 1 --llm-port 2 --record data/f.sqlite"))
                .unwrap()
                .record,
            Some(PathBuf::from("data/f.sqlite"))
        );
        assert!(FloorOptions::from_args(&args("--port 1 --llm-port 2 --record")).is_err());
        assert!(FloorOptions::from_args(&args("--port 1 --realtime-port 3 --record f")).is_err());
        assert!(FloorOptions::from_args(&args("--port 1 --llm-port 2 --paced")).is_err());
        assert!(FloorOptions::from_args(&args("--port 1")).is_err());
        assert!(FloorOptions::from_args(&args("--port x --llm-port 2")).is_err());
    }
}
