//! A fake OpenAI for SIP mode on loopback: it signs `realtime.call.incoming` and
//! `live.transport.incoming` webhooks with a test secret and posts them to the
//! server, records every call-control request (accept, reject, refer, hangup:
//! path, headers, JSON body), and plays the sideband WebSocket of each accepted
//! call, so a test reads exactly what the server sent and answers as OpenAI would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warp::Filter;
use warp::http::HeaderMap;
use warp::ws::{Message, WebSocket};

use super::TestApp;

/// The webhook signing secret the tests configure (`OPENAI_WEBHOOK_SECRET`).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The API key the tests configure (`OPENAI_API_KEY` / `AZURE_OPENAI_API_KEY`).
pub const KEY: &str = "sk-sip-test";
/// How long a test waits for anything from the server.
const WAIT: Duration = Duration::from_secs(5);

/// One call-control request as received.
#[derive(Debug, Clone)]
pub struct ControlRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl ControlRequest {
    /// `accept`, `reject`, `refer`, `hangup`: the path's last part.
    pub fn action(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }
}

/// One sideband socket as the fake sees it.
pub struct Sideband {
    /// Path and query of the upgrade request.
    pub uri: String,
    pub headers: HeaderMap,
    ws: WebSocket,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<ControlRequest>>>,
    sidebands: mpsc::Receiver<Sideband>,
    /// The HTTP status every control request gets.
    status: Arc<AtomicU16>,
}

impl FakeOpenAi {
    pub async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (tx, sidebands) = mpsc::channel(16);
        let sideband = warp::ws()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .map(
                move |ws: warp::ws::Ws, path: warp::path::FullPath, query: String, headers| {
                    let tx = tx.clone();
                    let uri = if query.is_empty() {
                        path.as_str().to_string()
                    } else {
                        format!("{}?{query}", path.as_str())
                    };
                    ws.on_upgrade(move |ws| async move {
                        let _ = tx.send(Sideband { uri, headers, ws }).await;
                    })
                },
            );
        let recorded = requests.clone();
        let answer = status.clone();
        let control = warp::post()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |path: warp::path::FullPath, headers: HeaderMap, body: bytes::Bytes| {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    recorded.lock().unwrap().push(ControlRequest {
                        path: path.as_str().to_string(),
                        headers,
                        body,
                    });
                    let status = warp::http::StatusCode::from_u16(answer.load(Ordering::Relaxed))
                        .unwrap_or(warp::http::StatusCode::OK);
                    warp::reply::with_status(warp::reply::json(&json!({})), status)
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(sideband.or(control)).incoming(listener).run());
        Self {
            addr,
            requests,
            sidebands,
            status,
        }
    }

    /// `SIP_API_BASE` for this fake (`/v1`, or Azure's `/openai/v1`).
    pub fn base(&self, prefix: &str) -> String {
        format!("http://{}{prefix}", self.addr)
    }

    /// Every control request answers this status from now on.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<ControlRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits for the `n`-th (from 1) control request with this action.
    pub async fn wait_request(&self, action: &str, n: usize) -> ControlRequest {
        let requests = self.requests.clone();
        super::eventually(&format!("{action} request #{n}"), WAIT, || {
            requests
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.action() == action)
                .nth(n - 1)
                .cloned()
        })
        .await
    }

    /// The next sideband the server opens.
    pub async fn sideband(&mut self) -> Sideband {
        tokio::time::timeout(WAIT, self.sidebands.recv())
            .await
            .expect("no sideband opened in time")
            .expect("the fake stopped")
    }

    /// Whether a sideband opens within `wait`.
    pub async fn no_sideband(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.sidebands.recv())
            .await
            .is_err()
    }
}

/// A `realtime.call.incoming` event for `call_id` from `from` to `to`.
pub fn incoming(call_id: &str, from: &str, to: &str, extra: &[(&str, &str)]) -> Value {
    let mut headers = vec![
        json!({"name": "From", "value": format!("\"Caller\" <sip:{from}@pstn.twilio.com>;tag=1")}),
        json!({"name": "To", "value": format!("sip:{to}@sip.api.openai.com")}),
        json!({"name": "Call-ID", "value": "abc@10.0.0.1"}),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value})),
    );
    json!({
        "object": "event",
        "id": format!("evt_{call_id}"),
        "type": "realtime.call.incoming",
        "created_at": now(),
        "data": {"call_id": call_id, "sip_headers": headers},
    })
}

/// GPT-Live's `live.transport.incoming` for `session_id`.
pub fn live_incoming(session_id: &str, from: &str) -> Value {
    json!({
        "object": "event",
        "id": format!("evt_{session_id}"),
        "type": "live.transport.incoming",
        "created_at": now(),
        "data": {"type": "sip", "session_id": session_id,
                 "sip_headers": [{"name": "From", "value": format!("sip:{from}@x")}]},
    })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Posts `event` to the server's webhook `path`, signed with [`SECRET`] at
/// `timestamp`; returns the status and the JSON answer.
pub async fn post_webhook(
    app: &TestApp,
    path: &str,
    id: &str,
    timestamp: i64,
    event: &Value,
    secret: &str,
) -> (u16, Value) {
    let body = event.to_string();
    let signature = voxrelay::sip::signature::sign(secret, id, timestamp, body.as_bytes());
    let response = reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// [`post_webhook`] to `/webhooks/openai`, now, with the right secret.
pub async fn deliver(app: &TestApp, id: &str, event: &Value) -> (u16, Value) {
    post_webhook(app, "/webhooks/openai", id, now(), event, SECRET).await
}

impl Sideband {
    pub async fn send(&mut self, event: Value) {
        self.ws
            .send(Message::text(event.to_string()))
            .await
            .expect("sideband send");
    }

    /// Sends `text` as it is; false when the server cut the socket meanwhile.
    pub async fn send_raw(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    /// The next event the server sent, or `None` once the socket is closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing from the server in time")?;
            let message = message.ok()?;
            if message.is_close() {
                return None;
            }
            if let Ok(text) = message.to_str() {
                return Some(serde_json::from_str(text).expect("the server sent JSON"));
            }
        }
    }

    /// Skips events until one of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the sideband closed before a {kind}"));
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// Answers a `response.create` as OpenAI does: created, then done.
    pub async fn respond(&mut self, id: &str, transcript: &str) {
        self.send(json!({"type": "response.created", "response": {"id": id}}))
            .await;
        if !transcript.is_empty() {
            self.send(json!({"type": "response.output_audio_transcript.done",
                "response_id": id, "item_id": "item_a", "output_index": 0, "content_index": 0,
                "transcript": transcript}))
                .await;
        }
        self.send(json!({"type": "response.done", "response": {"id": id, "status": "completed"}}))
            .await;
    }

    /// The caller said `text` (the transcription OpenAI reports).
    pub async fn caller_says(&mut self, item: &str, text: &str) {
        self.send(
            json!({"type": "conversation.item.input_audio_transcription.completed",
            "item_id": item, "content_index": 0, "transcript": text}),
        )
        .await;
    }

    /// The model calls `name` with `arguments`.
    pub async fn tool_call(&mut self, call_id: &str, name: &str, arguments: Value) {
        self.send(json!({"type": "response.function_call_arguments.done",
            "response_id": "resp_tool", "item_id": "item_f", "output_index": 0,
            "call_id": call_id, "name": name, "arguments": arguments.to_string()}))
            .await;
    }

    /// Closes the socket with `code` (1000: the call is over).
    pub async fn close(mut self, code: u16) {
        let _ = self.ws.send(Message::close_with(code, "bye")).await;
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}
