//! The simulator's SIP mode (`voxrelay call --sip`): it plays OpenAI's side of a
//! SIP call on loopback. It listens where the server's `SIP_API_BASE` points
//! ([`openai_side`]), posts a signed `realtime.call.incoming` (or GPT-Live's
//! `live.transport.incoming`) to the server's webhook, prints the session the
//! server accepts with, then turns each caller line into a transcription event on
//! the sideband and prints what the server asks of the model: responses, tool
//! results, hang-up, transfer. No model runs: `/tool NAME {json}` plays the
//! model calling a tool. `/quit` (or the end of a script) is the caller hanging up.

mod openai_side;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{CallError, CallOptions, CallReport, Command, TurnReport, USAGE, random_sid};
use openai_side::Seen;

/// How long the server has to accept and open the sideband.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// A script line is done once the server has been quiet this long.
const QUIET: Duration = Duration::from_millis(400);
/// How long a hang-up or transfer may follow the sideband's close.
const AFTER_CLOSE: Duration = Duration::from_secs(3);
/// Longest excerpt of instructions printed.
const SHOWN: usize = 240;

type Sideband = WebSocketStream<TcpStream>;

/// Places one SIP call against the server at `options.url` (its webhook).
pub async fn run<R, W>(
    options: &CallOptions,
    script: Option<Vec<Command>>,
    input: R,
    out: W,
) -> Result<CallReport, CallError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let secret = options
        .webhook_secret
        .clone()
        .ok_or_else(|| CallError::Connect {
            url: options.url.clone(),
            reason: "--sip needs the webhook secret: --webhook-secret or OPENAI_WEBHOOK_SECRET"
                .into(),
        })?;
    let (addr, seen) = openai_side::listen(&options.sip_listen)
        .await
        .map_err(|e| CallError::Connect {
            url: options.sip_listen.clone(),
            reason: e.to_string(),
        })?;
    let mut call = SipPhone {
        out,
        seen,
        sideband: None,
        report: CallReport {
            call_sid: format!(
                "{}{}",
                if options.live { "live_" } else { "rtc_" },
                &random_sid("")[..24]
            ),
            ..CallReport::default()
        },
        live: options.live,
        item: 0,
    };
    call.line(&format!(
        "OpenAI's side listens on http://{addr}/v1 (start the server with SIP_API_BASE=http://{addr}/v1)\n"
    ))
    .await?;
    call.ring(options, &secret).await?;
    if !call.answered().await? {
        return Ok(call.report);
    }
    match script {
        Some(commands) => {
            for command in commands {
                if call.is_over() {
                    break;
                }
                call.command(command).await?;
                call.listen_for(QUIET).await?;
            }
        }
        None => call.interactive(input).await?,
    }
    call.hang_up().await
}

struct SipPhone<W> {
    out: W,
    seen: mpsc::Receiver<Seen>,
    sideband: Option<Sideband>,
    report: CallReport,
    live: bool,
    /// Numbers the caller's transcription items.
    item: u32,
}

impl<W: AsyncWrite + Unpin> SipPhone<W> {
    async fn line(&mut self, text: &str) -> Result<(), CallError> {
        self.out.write_all(text.as_bytes()).await?;
        self.out.flush().await?;
        Ok(())
    }

    fn is_over(&self) -> bool {
        self.report.ended_by_agent.is_some() || self.report.closed_by_server
    }

    /// Posts the signed webhook, as OpenAI does when a call reaches its SIP endpoint.
    async fn ring(&mut self, options: &CallOptions, secret: &str) -> Result<(), CallError> {
        let mut headers = vec![
            json!({"name": "From", "value": format!("<sip:{}@pstn.twilio.com>;tag=sim", options.from)}),
            json!({"name": "To", "value": format!("<sip:{}@sip.api.openai.com>", options.to)}),
        ];
        for (name, value) in &options.params {
            headers.push(json!({"name": format!("X-{name}"), "value": value}));
        }
        let id = self.report.call_sid.clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let event = if self.live {
            json!({"object": "event", "id": format!("evt_{id}"), "type": "live.transport.incoming",
                   "created_at": now, "data": {"type": "sip", "session_id": id, "sip_headers": headers}})
        } else {
            json!({"object": "event", "id": format!("evt_{id}"), "type": "realtime.call.incoming",
                   "created_at": now, "data": {"call_id": id, "sip_headers": headers}})
        };
        let body = event.to_string();
        let webhook_id = format!("wh_{id}");
        let signature = crate::sip::signature::sign(secret, &webhook_id, now, body.as_bytes());
        let connect_error = |reason: String| CallError::Connect {
            url: options.url.clone(),
            reason,
        };
        let response = reqwest::Client::builder()
            .timeout(ANSWER_WAIT)
            .build()
            .map_err(|e| connect_error(e.to_string()))?
            .post(&options.url)
            .header("content-type", "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| connect_error(e.without_url().to_string()))?;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        self.line(&format!(
            "Call {id} from {} to {}: webhook answered {} {}\n",
            options.from,
            options.to,
            status.as_u16(),
            answer.trim()
        ))
        .await?;
        if !status.is_success() {
            return Err(connect_error(format!(
                "the webhook refused the call: {} {}",
                status.as_u16(),
                answer.trim()
            )));
        }
        Ok(())
    }

    /// Waits for the accept (printed) and the sideband; false when rejected.
    async fn answered(&mut self) -> Result<bool, CallError> {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        while self.sideband.is_none() {
            let seen = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .ok()
                .flatten()
                .ok_or_else(|| {
                    CallError::Socket("the server neither accepted the call nor opened its sideband in time (is its SIP_API_BASE this listener?)".into())
                })?;
            self.on_seen(seen).await?;
            if self.is_over() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn on_seen(&mut self, seen: Seen) -> Result<(), CallError> {
        match seen {
            Seen::Sideband { path, socket } => {
                self.line(&format!("sideband open: {path}\n")).await?;
                self.sideband = Some(*socket);
            }
            Seen::Control {
                action,
                path,
                body,
                authenticated,
            } => {
                if !authenticated {
                    self.line("warning: a call-control request came without an API key\n")
                        .await?;
                }
                match action.as_str() {
                    "accept" => self.print_session(&body).await?,
                    "reject" => {
                        self.line(&format!(
                            "the server rejected the call ({})\n",
                            body["status_code"]
                        ))
                        .await?;
                        self.report.ended_by_agent = Some("reject".into());
                    }
                    "hangup" => {
                        self.line("the server hung up\n").await?;
                        self.report.ended_by_agent = Some("hangup".into());
                    }
                    "refer" => {
                        let target = body["target_uri"].as_str().unwrap_or_default().to_string();
                        self.line(&format!("the server transferred the call to {target}\n"))
                            .await?;
                        self.report.ended_by_agent = Some(format!("refer {target}"));
                    }
                    _ => self.line(&format!("request to {path}\n")).await?,
                }
            }
        }
        Ok(())
    }

    async fn print_session(&mut self, body: &Value) -> Result<(), CallError> {
        let session = body.get("session").unwrap_or(body);
        let tools: Vec<&str> = session["tools"]
            .as_array()
            .map(|tools| tools.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        let text = format!(
            "accepted: model {}, voice {}, tools [{}]\n  instructions: {}\n",
            session["model"],
            session["audio"]["output"]["voice"],
            tools.join(", "),
            excerpt(session["instructions"].as_str().unwrap_or_default())
        );
        self.line(&text).await
    }

    /// One message from the server on the sideband, printed (and answered when it
    /// asks for a response, as the model would).
    async fn on_sideband(&mut self, message: Option<Message>) -> Result<(), CallError> {
        let text = match message {
            Some(Message::Text(text)) => text,
            Some(Message::Close(_)) | None => {
                self.line("the server closed the sideband\n").await?;
                self.report.closed_by_server = true;
                self.sideband = None;
                return Ok(());
            }
            Some(_) => return Ok(()),
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        let shown = match event["type"].as_str().unwrap_or_default() {
            "response.create" => {
                let instructions = event["response"]["instructions"].as_str().unwrap_or("");
                let id = random_sid("resp_");
                self.send(json!({"type": "response.created", "response": {"id": id}}))
                    .await?;
                self.send(
                    json!({"type": "response.done", "response": {"id": id, "status": "completed"}}),
                )
                .await?;
                if instructions.is_empty() {
                    "the model is asked to answer".to_string()
                } else {
                    format!("the model is asked to answer: {}", excerpt(instructions))
                }
            }
            "conversation.item.create" => {
                let item = &event["item"];
                match item["type"].as_str() {
                    Some("function_call_output") => format!(
                        "tool result for {}: {}",
                        item["call_id"].as_str().unwrap_or_default(),
                        excerpt(item["output"].as_str().unwrap_or_default())
                    ),
                    _ => format!(
                        "caller item: {}",
                        excerpt(item["content"][0]["text"].as_str().unwrap_or_default())
                    ),
                }
            }
            "session.update" => {
                format!("session.update: {}", excerpt(&event["session"].to_string()))
            }
            other => format!("{other}: {}", excerpt(text.as_str())),
        };
        if let Some(turn) = self.report.turns.last_mut() {
            if !turn.reply.is_empty() {
                turn.reply.push('\n');
            }
            turn.reply.push_str(&shown);
        }
        self.line(&format!("server: {shown}\n")).await
    }

    async fn send(&mut self, event: Value) -> Result<(), CallError> {
        if let Some(sideband) = &mut self.sideband {
            sideband
                .send(Message::text(event.to_string()))
                .await
                .map_err(|e| CallError::Socket(e.to_string()))?;
        }
        Ok(())
    }

    async fn command(&mut self, command: Command) -> Result<(), CallError> {
        match command {
            Command::Say(text) => {
                self.item += 1;
                self.report.turns.push(TurnReport {
                    said: text.clone(),
                    ..TurnReport::default()
                });
                let item = format!("item_caller_{}", self.item);
                self.send(
                    json!({"type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item, "content_index": 0, "transcript": text}),
                )
                .await?;
            }
            Command::Dtmf(keys) => {
                self.report.turns.push(TurnReport {
                    said: format!("DTMF: {keys}"),
                    ..TurnReport::default()
                });
                let kind = if self.live {
                    "transport.dtmf.received"
                } else {
                    "input_audio_buffer.dtmf_event_received"
                };
                for key in keys.chars() {
                    self.send(json!({"type": kind, "event": key.to_string()}))
                        .await?;
                }
            }
            Command::Tool { name, arguments } => {
                let call_id = random_sid("call_")[..16].to_string();
                self.line(&format!("the model calls {name} {arguments}\n"))
                    .await?;
                self.send(json!({"type": "response.function_call_arguments.done",
                    "response_id": "resp_sim", "item_id": "item_sim", "output_index": 0,
                    "call_id": call_id, "name": name, "arguments": arguments}))
                    .await?;
            }
            Command::Wait(pause) => self.listen_for(pause).await?,
            Command::Interrupt => {
                self.line("on a SIP call OpenAI hears the caller talk over the agent itself\n")
                    .await?;
            }
            Command::Help => self.line(&format!("{USAGE}\n")).await?,
            Command::Quit | Command::Nothing => {}
        }
        Ok(())
    }

    /// Prints what the server sends for `wait` (or until the call ends).
    async fn listen_for(&mut self, wait: Duration) -> Result<(), CallError> {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.is_over() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                seen = self.seen.recv() => match seen {
                    Some(seen) => self.on_seen(seen).await?,
                    None => break,
                },
                message = next(&mut self.sideband) => self.on_sideband(message).await?,
            }
        }
        Ok(())
    }

    async fn interactive<R: AsyncBufRead + Unpin>(&mut self, input: R) -> Result<(), CallError> {
        self.line("Type what the caller says; /dtmf 12#, /tool NAME {json}, /quit (see /help).\n")
            .await?;
        let mut lines = input.lines();
        while !self.is_over() {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match Command::parse(&line) {
                        Ok(Command::Quit) => break,
                        Ok(command) => self.command(command).await?,
                        Err(e) => self.line(&format!("{e}\n")).await?,
                    },
                    Ok(None) | Err(_) => break,
                },
                seen = self.seen.recv() => match seen {
                    Some(seen) => self.on_seen(seen).await?,
                    None => break,
                },
                message = next(&mut self.sideband) => self.on_sideband(message).await?,
            }
        }
        Ok(())
    }

    /// The caller hangs up: OpenAI closes the sideband normally.
    async fn hang_up(mut self) -> Result<CallReport, CallError> {
        // The server closes the sideband before it hangs up or transfers.
        if self.report.closed_by_server && self.report.ended_by_agent.is_none() {
            let deadline = tokio::time::Instant::now() + AFTER_CLOSE;
            while self.report.ended_by_agent.is_none() {
                match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                    Ok(Some(seen)) => self.on_seen(seen).await?,
                    _ => break,
                }
            }
        }
        if !self.is_over() {
            self.line("caller hangs up\n").await?;
        }
        if let Some(mut sideband) = self.sideband.take() {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "caller hung up".into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), sideband.close(Some(frame))).await;
        }
        Ok(self.report)
    }
}

/// The sideband's next message; pending forever when there is none.
async fn next(sideband: &mut Option<Sideband>) -> Option<Message> {
    match sideband {
        Some(socket) => socket.next().await.and_then(Result::ok),
        None => std::future::pending().await,
    }
}

fn excerpt(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cut = crate::transport::excerpt(&clean, SHOWN);
    if cut.len() < clean.len() {
        format!("{cut}…")
    } else {
        cut.to_string()
    }
}
