//! `voxrelay call`: a terminal softphone that plays Twilio's side of a call, so an
//! agent can be tried without a phone, a tunnel or a Twilio account.
//!
//! - this file: command-line options, the caller's line commands (`/dtmf`,
//!   `/interrupt`, `/wait`, `/quit`), and the report of a call;
//! - [`relay`]: the ConversationRelay mode (JSON text over `/websocket`);
//! - [`media`]: the Media Streams mode (`--media`: a WAV file streamed to
//!   `/media-stream` in real time, the agent's audio saved to another);
//! - [`sip`]: SIP mode (`--sip`: plays OpenAI's side of a SIP call, webhook,
//!   call control and sideband, against the server's `/webhooks/openai`);
//! - [`handshake`]: how both open their WebSocket (with `--auth-token`, through the
//!   signed voice webhook and the per-call URL it answers, as Twilio does).
//!
//! A mode is a module with a `run(options, input, output)` that returns a
//! [`CallReport`]; a Media Streams mode (`--media`, audio in and out) belongs beside
//! [`relay`] and is chosen in [`run`].
//!
//! Input is either a terminal (lines are sent as they are typed, tokens print as they
//! stream) or a script (`--script file`: one caller turn per line, each waiting for
//! the agent's reply before the next), which is what demos and tests use.
//!
//! May import the protocol types of `relay` and `media`, `twilio` and `sip`
//! (signatures), `audio` and `transport`; nothing of the server (the order is checked by
//! `.ci/layers`).

pub mod handshake;
pub mod media;
pub mod peer;
pub mod relay;
pub mod sip;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite};

/// Where and how to call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOptions {
    /// The server's ConversationRelay WebSocket (`ws://` or `wss://`).
    pub url: String,
    pub from: String,
    pub to: String,
    /// `customParameters` of the `setup` message (TwiML `<Parameter>`s).
    pub params: BTreeMap<String, String>,
    /// Language reported with each prompt.
    pub lang: String,
    /// Run these turns non-interactively.
    pub script: Option<PathBuf>,
    /// Longest wait for a reply in script mode.
    pub reply_timeout: Duration,
    /// Signs the handshake with `X-Twilio-Signature`, as Twilio does, for servers
    /// that check it (`TWILIO_AUTH_TOKEN` set there).
    pub auth_token: Option<String>,
    /// Media Streams mode: stream a WAV file to `/media-stream` instead.
    pub media: bool,
    /// The caller's audio (any PCM16 or μ-law WAV; resampled to 8 kHz).
    pub wav_in: Option<PathBuf>,
    /// Where the agent's audio is saved (8 kHz μ-law WAV).
    pub wav_out: Option<PathBuf>,
    /// How long to keep listening after the caller's audio ends.
    pub tail: Duration,
    /// SIP mode: play OpenAI's side against the server's webhook at `url`.
    pub sip: bool,
    /// SIP mode: send GPT-Live's `live.transport.incoming` instead.
    pub live: bool,
    /// SIP mode: signs the webhook (`OPENAI_WEBHOOK_SECRET`).
    pub webhook_secret: Option<String>,
    /// SIP mode: where OpenAI's side listens (the server's `SIP_API_BASE` host).
    pub sip_listen: String,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8080/websocket".into(),
            from: "+5511999990000".into(),
            to: "+5511333330000".into(),
            params: BTreeMap::new(),
            lang: "pt-BR".into(),
            script: None,
            reply_timeout: Duration::from_secs(15),
            auth_token: None,
            media: false,
            wav_in: None,
            wav_out: None,
            tail: Duration::from_secs(5),
            sip: false,
            live: false,
            webhook_secret: None,
            sip_listen: "127.0.0.1:8099".into(),
        }
    }
}

pub const USAGE: &str = "\
voxrelay call: talk to a voxrelay agent from the terminal, as Twilio would

USAGE:
    voxrelay call [OPTIONS]

OPTIONS:
    --url URL          ConversationRelay WebSocket [default: ws://127.0.0.1:8080/websocket]
    --from NUMBER      caller's number [default: +5511999990000]
    --to NUMBER        called number [default: +5511333330000]
    --param KEY=VALUE  a custom parameter of the setup message (repeatable)
    --lang TAG         language of the prompts [default: pt-BR]
    --script FILE      run FILE non-interactively: one caller turn per line
    --timeout SECS     longest wait for a reply in script mode [default: 15]
    --auth-token TOKEN sign the handshake like Twilio (servers with TWILIO_AUTH_TOKEN
                       check it) [default: $TWILIO_AUTH_TOKEN, also from .env]
    --media            Media Streams mode: stream --wav to /media-stream in real time
                       [default URL: ws://127.0.0.1:8080/media-stream]
    --wav FILE         the caller's audio (PCM16 or mu-law WAV, any sample rate)
    --out FILE         save the agent's audio here (8 kHz mu-law WAV)
    --tail SECS        keep listening after the caller's audio ends [default: 5]
    --sip              SIP mode: play OpenAI's side of a SIP call: post a signed
                       realtime.call.incoming to --url [default:
                       http://127.0.0.1:8080/webhooks/openai] and serve call control
                       and the sideband on --listen; each line becomes the caller's
                       transcript, and what the server asks of the model is printed
    --live             with --sip: GPT-Live's live.transport.incoming instead
    --listen ADDR      with --sip: where OpenAI's side listens; start the server with
                       SIP_API_BASE=http://ADDR/v1 [default: 127.0.0.1:8099]
    --webhook-secret S with --sip: the whsec_ secret [default: $OPENAI_WEBHOOK_SECRET]

Type what the caller says and press Enter. Commands:
    /dtmf 123#         press keys
    /interrupt         talk over the agent (sends what was heard so far)
    /wait MS           pause (useful in scripts)
    /tool NAME {json}  with --sip: the model calls a tool (e.g. /tool end_call {})
    /quit              hang up

In a script, a line `/interrupt` right after a caller line interrupts that line's
reply as soon as its first token arrives; lines starting with `#` are comments.";

/// Why the command line was not understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("--param wants KEY=VALUE, got {0:?}")]
    BadParam(String),
    #[error("--timeout wants seconds, got {0:?}")]
    BadTimeout(String),
    #[error("--media needs --wav FILE")]
    MissingWav,
    #[error("unknown option {0:?}")]
    Unknown(String),
    #[error("help requested")]
    Help,
}

impl CallOptions {
    /// Parses the arguments after `call`.
    pub fn from_args(args: &[String]) -> Result<Self, ArgsError> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| ArgsError::MissingValue(flag.clone()))
            };
            match flag.as_str() {
                "--url" => options.url = value()?,
                "--from" => options.from = value()?,
                "--to" => options.to = value()?,
                "--lang" => options.lang = value()?,
                "--script" => options.script = Some(PathBuf::from(value()?)),
                "--auth-token" => options.auth_token = Some(value()?),
                "--media" => options.media = true,
                "--sip" => options.sip = true,
                "--live" => options.live = true,
                "--listen" => options.sip_listen = value()?,
                "--webhook-secret" => options.webhook_secret = Some(value()?),
                "--wav" => options.wav_in = Some(PathBuf::from(value()?)),
                "--out" => options.wav_out = Some(PathBuf::from(value()?)),
                "--tail" => {
                    let secs = value()?;
                    let parsed: f64 = secs
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                        .ok_or_else(|| ArgsError::BadTimeout(secs.clone()))?;
                    options.tail = Duration::from_secs_f64(parsed);
                }
                "--param" => {
                    let pair = value()?;
                    let (k, v) = pair
                        .split_once('=')
                        .filter(|(k, _)| !k.is_empty())
                        .ok_or_else(|| ArgsError::BadParam(pair.clone()))?;
                    options.params.insert(k.to_string(), v.to_string());
                }
                "--timeout" => {
                    let secs = value()?;
                    let parsed: f64 = secs
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| ArgsError::BadTimeout(secs.clone()))?;
                    options.reply_timeout = Duration::from_secs_f64(parsed);
                }
                "-h" | "--help" => return Err(ArgsError::Help),
                other => return Err(ArgsError::Unknown(other.to_string())),
            }
        }
        if options.sip && options.url == Self::default().url {
            options.url = "http://127.0.0.1:8080/webhooks/openai".into();
        }
        if options.media {
            if options.wav_in.is_none() {
                return Err(ArgsError::MissingWav);
            }
            if options.url == Self::default().url {
                options.url = "ws://127.0.0.1:8080/media-stream".into();
            }
        }
        Ok(options)
    }
}

/// One line from the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Words the caller says (a final `prompt`).
    Say(String),
    /// Keys pressed, one `dtmf` message each.
    Dtmf(String),
    /// Talk over the agent.
    Interrupt,
    /// Pause.
    Wait(Duration),
    /// SIP mode: the model calls this tool with these JSON arguments.
    Tool {
        name: String,
        arguments: String,
    },
    Quit,
    Help,
    /// Nothing to do (blank line, comment).
    Nothing,
}

/// A line the caller typed that is not a valid command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl Command {
    /// Reads one line: text to say, or a `/command`.
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(Self::Nothing);
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Ok(Self::Say(line.to_string()));
        };
        let (name, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let arg = arg.trim();
        match name {
            "dtmf" => {
                let digits: String = arg.chars().filter(|c| !c.is_whitespace()).collect();
                if digits.is_empty() || !digits.chars().all(|c| matches!(c, '0'..='9' | '*' | '#'))
                {
                    return Err(CommandError(format!(
                        "/dtmf wants keys 0-9 * #, got {arg:?}"
                    )));
                }
                Ok(Self::Dtmf(digits))
            }
            "interrupt" => Ok(Self::Interrupt),
            "wait" => arg
                .parse::<u64>()
                .map(|ms| Self::Wait(Duration::from_millis(ms)))
                .map_err(|_| CommandError(format!("/wait wants milliseconds, got {arg:?}"))),
            "tool" => {
                let (name, arguments) = arg.split_once(char::is_whitespace).unwrap_or((arg, "{}"));
                let arguments = arguments.trim();
                if name.is_empty() || serde_json::from_str::<serde_json::Value>(arguments).is_err()
                {
                    return Err(CommandError(format!(
                        "/tool wants NAME {{json arguments}}, got {arg:?}"
                    )));
                }
                Ok(Self::Tool {
                    name: name.to_string(),
                    arguments: arguments.to_string(),
                })
            }
            "quit" | "exit" | "hangup" => Ok(Self::Quit),
            "help" | "?" => Ok(Self::Help),
            other => Err(CommandError(format!(
                "unknown command /{other} (try /help)"
            ))),
        }
    }
}

/// One caller turn and the agent's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnReport {
    /// What the caller said (`DTMF: 12#` for keys).
    pub said: String,
    /// The agent's reply as received (cut short if interrupted).
    pub reply: String,
    /// Caller's line sent → first token received.
    pub time_to_first_token: Option<Duration>,
    /// Caller's line sent → the reply's `last: true`.
    pub duration: Option<Duration>,
    pub interrupted: bool,
    /// No reply came within the timeout (script mode).
    pub timed_out: bool,
}

/// What happened on a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallReport {
    pub call_sid: String,
    pub turns: Vec<TurnReport>,
    /// The agent (or the server, when shutting down) ended the call with `end`;
    /// holds its `handoffData`.
    pub ended_by_agent: Option<String>,
    /// The server closed the connection.
    pub closed_by_server: bool,
    /// Media mode: bytes (8 kHz μ-law) of agent audio received.
    pub agent_audio_bytes: usize,
}

impl CallReport {
    /// Whether every scripted turn got a reply.
    pub fn ok(&self) -> bool {
        self.turns.iter().all(|t| !t.timed_out)
    }
}

/// Why a call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot read the script {path:?}: {source}")]
    Script {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connection lost: {0}")]
    Socket(String),
    #[error("cannot write to the terminal: {0}")]
    Output(#[from] std::io::Error),
    #[error("audio file: {0}")]
    Audio(String),
}

/// Places a call: runs `--script` if given, else reads the caller's lines from
/// `input`; everything the caller would hear (and timings) goes to `output`.
pub async fn run<R, W>(options: &CallOptions, input: R, output: W) -> Result<CallReport, CallError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if options.media {
        return media::run(options, output).await;
    }
    let lines = match &options.script {
        Some(path) => {
            let text =
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| CallError::Script {
                        path: path.clone(),
                        source,
                    })?;
            Some(text.lines().map(str::to_string).collect::<Vec<_>>())
        }
        None => None,
    };
    if options.sip {
        let script = lines
            .map(|lines| script_commands(options, &lines))
            .transpose()?;
        return sip::run(options, script, input, output).await;
    }
    match lines {
        Some(lines) => relay::run_script(options, &lines, output).await,
        None => relay::run_interactive(options, input, output).await,
    }
}

/// A script's commands (blank lines and comments left out); a bad line is an
/// error naming its number.
pub fn script_commands(options: &CallOptions, lines: &[String]) -> Result<Vec<Command>, CallError> {
    lines
        .iter()
        .enumerate()
        .filter_map(|(n, line)| match Command::parse(line) {
            Ok(Command::Nothing) => None,
            Ok(c) => Some(Ok(c)),
            Err(e) => Some(Err(format!("script line {}: {e}", n + 1))),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| CallError::Script {
            path: options.script.clone().unwrap_or_default(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
}

pub use crate::transport::random_sid;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_from_flags() {
        let o = CallOptions::from_args(&args(&[
            "--url",
            "wss://voz.example.com/websocket",
            "--from",
            "+5521988887777",
            "--param",
            "nome=Ana",
            "--param",
            "plano=ouro=1",
            "--script",
            "demo.txt",
            "--timeout",
            "2.5",
        ]))
        .unwrap();
        assert_eq!(o.url, "wss://voz.example.com/websocket");
        assert_eq!(o.from, "+5521988887777");
        assert_eq!(o.to, CallOptions::default().to);
        assert_eq!(o.params["nome"], "Ana");
        assert_eq!(o.params["plano"], "ouro=1");
        assert_eq!(o.script, Some(PathBuf::from("demo.txt")));
        assert_eq!(o.reply_timeout, Duration::from_millis(2500));
        assert_eq!(CallOptions::from_args(&[]).unwrap(), CallOptions::default());
    }

    #[test]
    fn bad_flags_are_explained() {
        assert_eq!(
            CallOptions::from_args(&args(&["--url"])),
            Err(ArgsError::MissingValue("--url".into()))
        );
        assert_eq!(
            CallOptions::from_args(&args(&["--param", "=x"])),
            Err(ArgsError::BadParam("=x".into()))
        );
        assert_eq!(
            CallOptions::from_args(&args(&["--timeout", "-1"])),
            Err(ArgsError::BadTimeout("-1".into()))
        );
        assert_eq!(
            CallOptions::from_args(&args(&["--nope"])),
            Err(ArgsError::Unknown("--nope".into()))
        );
    }

    #[test]
    fn lines_become_commands() {
        assert_eq!(Command::parse("  Olá! "), Ok(Command::Say("Olá!".into())));
        assert_eq!(Command::parse(""), Ok(Command::Nothing));
        assert_eq!(Command::parse("# comment"), Ok(Command::Nothing));
        assert_eq!(
            Command::parse("/dtmf 12 3#"),
            Ok(Command::Dtmf("123#".into()))
        );
        assert!(Command::parse("/dtmf 12a").is_err());
        assert!(Command::parse("/dtmf").is_err());
        assert_eq!(Command::parse("/interrupt"), Ok(Command::Interrupt));
        assert_eq!(
            Command::parse("/wait 250"),
            Ok(Command::Wait(Duration::from_millis(250)))
        );
        assert_eq!(Command::parse("/quit"), Ok(Command::Quit));
        assert!(Command::parse("/dance").is_err());
    }

    #[test]
    fn sids_look_like_twilio_ones() {
        let sid = random_sid("CA");
        assert_eq!(sid.len(), 34);
        assert!(sid.starts_with("CA"));
        assert_ne!(sid, random_sid("CA"));
    }
}
