//! The simulator's ConversationRelay mode: connects to `/websocket` as Twilio does,
//! sends a `setup`, turns the caller's lines into `prompt`, `dtmf` and `interrupt`
//! messages, and prints the agent's `text` tokens as they stream, with the time to
//! the first token of every reply.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::peer::{PeerError, Received, RelayPeer, inbound_setup};
use super::{CallError, CallOptions, CallReport, Command, TurnReport, USAGE, random_sid};
use crate::relay::protocol::Outbound;

/// How long to watch for stray tokens after an interrupt in script mode.
const AFTER_INTERRUPT: Duration = Duration::from_millis(300);
/// How long a closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What a server message meant for the call.
#[derive(Debug, PartialEq)]
enum Heard {
    Token,
    TurnEnd,
    /// `end`: the call is over.
    Ended,
    /// The server closed the socket.
    Closed,
    Other,
}

/// The reply being received.
struct Current {
    turn: usize,
    sent_at: Instant,
    /// Text received so far: what an interrupt says was heard.
    heard: String,
}

/// One call from the simulator's side.
struct Phone<W> {
    peer: RelayPeer,
    out: W,
    report: CallReport,
    current: Option<Current>,
    lang: String,
    /// Whether the cursor is in the middle of an `agent:` line.
    mid_line: bool,
}

/// Runs `lines` as a script: each caller line waits for the agent's reply.
pub async fn run_script<W>(
    options: &CallOptions,
    lines: &[String],
    output: W,
) -> Result<CallReport, CallError>
where
    W: AsyncWrite + Unpin,
{
    let mut phone = Phone::dial(options, output).await?;
    let commands = super::script_commands(options, lines)?;
    let mut i = 0;
    while i < commands.len() && !phone.is_over() {
        let command = commands[i].clone();
        i += 1;
        match command {
            Command::Say(text) => {
                let barge_in = commands.get(i) == Some(&Command::Interrupt);
                if barge_in {
                    i += 1;
                }
                phone.line(&format!("caller: {text}\n")).await?;
                phone.say(&text).await?;
                phone.await_reply(options.reply_timeout, barge_in).await?;
            }
            Command::Dtmf(keys) => {
                phone.line(&format!("caller presses {keys}\n")).await?;
                phone.press(&keys).await?;
                phone.await_reply(options.reply_timeout, false).await?;
            }
            Command::Interrupt => {
                phone.line("caller talks over the agent\n").await?;
                phone.interrupt().await?;
            }
            Command::Wait(pause) => phone.listen_for(pause).await?,
            Command::Help => phone.line(&format!("{USAGE}\n")).await?,
            Command::Tool { .. } => phone.line("/tool works with --sip only\n").await?,
            Command::Quit => break,
            Command::Nothing => {}
        }
    }
    phone.hang_up().await
}

/// Reads the caller's lines from `input` as they are typed and prints the agent's
/// tokens as they arrive. End of input hangs up once the reply in flight is done.
pub async fn run_interactive<R, W>(
    options: &CallOptions,
    input: R,
    output: W,
) -> Result<CallReport, CallError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut phone = Phone::dial(options, output).await?;
    phone
        .line("Type what the caller says; /dtmf 123#, /interrupt, /quit (see /help).\n")
        .await?;
    let mut lines = input.lines();
    let mut input_open = true;
    while !phone.is_over() {
        if !input_open {
            // Let the reply in flight finish, then hang up.
            if phone.current.is_some() {
                phone.await_reply(options.reply_timeout, false).await?;
            }
            break;
        }
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match Command::parse(&line) {
                    Ok(Command::Say(text)) => phone.say(&text).await?,
                    Ok(Command::Dtmf(keys)) => phone.press(&keys).await?,
                    Ok(Command::Interrupt) => phone.interrupt().await?,
                    Ok(Command::Wait(pause)) => phone.listen_for(pause).await?,
                    Ok(Command::Help) => phone.line(&format!("{USAGE}\n")).await?,
                    Ok(Command::Tool { .. }) => phone.line("/tool works with --sip only\n").await?,
                    Ok(Command::Quit) => break,
                    Ok(Command::Nothing) => {}
                    Err(e) => phone.line(&format!("{e}\n")).await?,
                },
                Ok(None) | Err(_) => input_open = false,
            },
            received = phone.peer.next() => {
                phone.on_received(received).await?;
            }
        }
    }
    phone.hang_up().await
}

impl<W: AsyncWrite + Unpin> Phone<W> {
    async fn dial(options: &CallOptions, mut out: W) -> Result<Self, CallError> {
        let call_sid = random_sid("CA");
        let request = super::handshake::request(options, &call_sid, false).await?;
        let peer = RelayPeer::connect(request)
            .await
            .map_err(|e| CallError::Connect {
                url: options.url.clone(),
                reason: e.to_string(),
            })?;
        let setup = inbound_setup(
            &call_sid,
            &random_sid("VX"),
            &options.from,
            &options.to,
            options.params.clone().into_iter().collect(),
        );
        out.write_all(
            format!(
                "Calling {} from {} to {} (CallSid {call_sid})\n",
                options.url, options.from, options.to
            )
            .as_bytes(),
        )
        .await?;
        out.flush().await?;
        let mut phone = Self {
            peer,
            out,
            report: CallReport {
                call_sid,
                ..CallReport::default()
            },
            current: None,
            lang: options.lang.clone(),
            mid_line: false,
        };
        phone.peer.setup(setup).await.map_err(socket_error)?;
        Ok(phone)
    }

    fn is_over(&self) -> bool {
        self.report.ended_by_agent.is_some() || self.report.closed_by_server
    }

    /// Prints a line of its own (after ending an `agent:` line in progress).
    async fn line(&mut self, text: &str) -> Result<(), CallError> {
        if self.mid_line {
            self.out.write_all(b"\n").await?;
            self.mid_line = false;
        }
        self.out.write_all(text.as_bytes()).await?;
        self.out.flush().await?;
        Ok(())
    }

    fn begin_turn(&mut self, said: String) {
        self.report.turns.push(TurnReport {
            said,
            ..TurnReport::default()
        });
        self.current = Some(Current {
            turn: self.report.turns.len() - 1,
            sent_at: Instant::now(),
            heard: String::new(),
        });
    }

    async fn say(&mut self, text: &str) -> Result<(), CallError> {
        self.begin_turn(text.to_string());
        let lang = self.lang.clone();
        self.peer
            .prompt(text, Some(&lang))
            .await
            .map_err(socket_error)
    }

    async fn press(&mut self, keys: &str) -> Result<(), CallError> {
        for key in keys.chars() {
            self.peer.dtmf(key).await.map_err(socket_error)?;
        }
        // The agent answers once the digits are complete; time it from the last key.
        self.begin_turn(format!("DTMF: {keys}"));
        Ok(())
    }

    /// Talks over the reply in flight, saying what of it was heard.
    async fn interrupt(&mut self) -> Result<(), CallError> {
        let (heard, played) = match self.current.take() {
            Some(current) => {
                let turn = &mut self.report.turns[current.turn];
                turn.interrupted = true;
                (current.heard, current.sent_at.elapsed())
            }
            None => (String::new(), Duration::ZERO),
        };
        self.peer
            .interrupt(&heard, played)
            .await
            .map_err(socket_error)?;
        self.line("  [interrupted]\n").await
    }

    /// Waits for the current reply to end (or, with `barge_in`, interrupts it as
    /// soon as its first token arrives).
    async fn await_reply(&mut self, timeout: Duration, barge_in: bool) -> Result<(), CallError> {
        let deadline = Instant::now() + timeout;
        while self.current.is_some() && !self.is_over() {
            let Ok(received) = tokio::time::timeout_at(deadline, self.peer.next()).await else {
                if let Some(current) = self.current.take() {
                    self.report.turns[current.turn].timed_out = true;
                }
                return self
                    .line(&format!("  [no reply within {timeout:?}]\n"))
                    .await;
            };
            let heard = self.on_received(received).await?;
            if barge_in && heard == Heard::Token {
                self.interrupt().await?;
                self.listen_for(AFTER_INTERRUPT).await?;
            }
        }
        Ok(())
    }

    /// Prints whatever arrives during `pause`.
    async fn listen_for(&mut self, pause: Duration) -> Result<(), CallError> {
        let until = Instant::now() + pause;
        while !self.is_over() {
            match tokio::time::timeout_at(until, self.peer.next()).await {
                Ok(received) => {
                    self.on_received(received).await?;
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn on_received(&mut self, received: Received<Outbound>) -> Result<Heard, CallError> {
        match received {
            Received::Closed(_) => {
                self.report.closed_by_server = true;
                self.line("[the server closed the call]\n").await?;
                Ok(Heard::Closed)
            }
            Received::Unreadable(text) => {
                self.line(&format!("[not a ConversationRelay message: {text}]\n"))
                    .await?;
                Ok(Heard::Other)
            }
            Received::Message(message) => self.on_message(message).await,
        }
    }

    async fn on_message(&mut self, message: Outbound) -> Result<Heard, CallError> {
        match message {
            Outbound::Text { token, last, .. } => {
                if !token.is_empty() {
                    self.on_token(&token).await?;
                }
                if last {
                    self.on_turn_end().await?;
                    return Ok(Heard::TurnEnd);
                }
                Ok(if token.is_empty() {
                    Heard::Other
                } else {
                    Heard::Token
                })
            }
            Outbound::End { handoff_data } => {
                let data = handoff_data.unwrap_or_default();
                self.line(&format!("[the agent ended the call: {data}]\n"))
                    .await?;
                self.report.ended_by_agent = Some(data);
                Ok(Heard::Ended)
            }
            Outbound::Play { source, .. } => {
                self.line(&format!("[plays {source}]\n")).await?;
                Ok(Heard::Other)
            }
            Outbound::SendDigits { digits } => {
                self.line(&format!("[sends digits {digits}]\n")).await?;
                Ok(Heard::Other)
            }
            other => {
                self.line(&format!("[{}]\n", other.to_json())).await?;
                Ok(Heard::Other)
            }
        }
    }

    async fn on_token(&mut self, token: &str) -> Result<(), CallError> {
        let Some(current) = self.current.as_mut() else {
            // A reply nobody asked for right now (e.g. after an interrupt).
            self.line(&format!("agent (unprompted): {token}\n")).await?;
            return Ok(());
        };
        let turn = &mut self.report.turns[current.turn];
        let first = turn.time_to_first_token.is_none();
        if first {
            turn.time_to_first_token = Some(current.sent_at.elapsed());
        }
        turn.reply.push_str(token);
        current.heard.push_str(token);
        if first {
            self.line("agent: ").await?;
        }
        self.out.write_all(token.as_bytes()).await?;
        self.out.flush().await?;
        self.mid_line = true;
        Ok(())
    }

    async fn on_turn_end(&mut self) -> Result<(), CallError> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let turn = &mut self.report.turns[current.turn];
        let total = current.sent_at.elapsed();
        turn.duration = Some(total);
        let ttft = turn
            .time_to_first_token
            .map(|t| format!("{:.1} ms", t.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into());
        self.line(&format!(
            "  [first token {ttft}, reply {:.0} ms]\n",
            total.as_secs_f64() * 1000.0
        ))
        .await
    }

    /// Closes the socket as Twilio does when the caller hangs up, and prints a summary.
    async fn hang_up(mut self) -> Result<CallReport, CallError> {
        if !self.is_over() {
            self.peer.hang_up(CLOSE_WAIT).await;
        }
        let answered: Vec<Duration> = self
            .report
            .turns
            .iter()
            .filter_map(|t| t.time_to_first_token)
            .collect();
        let summary = if answered.is_empty() {
            format!("Call ended: {} turns.\n", self.report.turns.len())
        } else {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let mean = answered.iter().map(|d| ms(*d)).sum::<f64>() / answered.len() as f64;
            let max = answered.iter().map(|d| ms(*d)).fold(0.0, f64::max);
            format!(
                "Call ended: {} turns, first token mean {mean:.1} ms, max {max:.1} ms.\n",
                self.report.turns.len()
            )
        };
        self.line(&summary).await?;
        Ok(self.report)
    }
}

fn socket_error(error: PeerError) -> CallError {
    CallError::Socket(error.to_string())
}
