//! What a transport tells the agent ([`AgentInput`]) and what the agent asks the
//! transport to do ([`AgentOutput`]). Every transport (ConversationRelay, Media
//! Streams) translates its own wire protocol to and from these types; the agent
//! never sees a Twilio message.

use std::collections::HashMap;

/// Facts about the call, known when the transport's session starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallInfo {
    pub call_sid: String,
    /// The transport's own session id (ConversationRelay's `sessionId`), if any.
    pub session_id: Option<String>,
    pub from: String,
    pub to: String,
    pub direction: Option<String>,
    /// The transport carrying the call: `relay` (ConversationRelay) or `stream`.
    pub mode: String,
    /// The agent taking the call (`default`, or an `AGENTS_DIR` file's name).
    pub agent: String,
    /// `<Parameter>`s from the TwiML (e.g. the lead's name on an outbound call).
    pub parameters: HashMap<String, String>,
    /// The transport vouches that this session may pick up the call's earlier
    /// conversation (its handshake came from our own reconnect answer).
    pub may_resume: bool,
    /// Set by the agent when this session picked up an earlier conversation of
    /// the call: its turns go on numbering from there.
    pub resumed: bool,
}

/// Something that happened on the call.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentInput {
    /// The call is connected.
    CallStarted(CallInfo),
    /// The caller finished an utterance.
    UserText { text: String, lang: Option<String> },
    /// One keypad press (`0-9`, `*`, `#`).
    Digit(char),
    /// The caller talked over the agent; `heard` is what of our reply they heard.
    Interrupt { heard: String },
    /// The call reached its maximum duration: say goodbye and end it.
    TimeUp,
    /// The caller has said nothing for the silence timeout since the agent last
    /// finished speaking.
    Silence,
    /// A voicemail answered (`signal`: `amd` from Twilio's detection, or
    /// `transcript`): leave the voicemail message and end.
    Voicemail { signal: &'static str },
    /// The call is gone.
    Hangup,
}

/// Something the transport must do.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentOutput {
    /// Speak this piece of text (streamed; never trimmed).
    Token(String),
    /// The current reply is complete.
    TurnEnd,
    /// End the call (after what was said before it): hang up, or hand the caller to
    /// a person when [`Handoff::is_live_agent`]. Boxed: every queued output is
    /// as large as the largest, and this one is rare and five strings wide.
    End(Box<Handoff>),
    /// Press these keys towards the far end (`0-9 * # w`).
    SendDigits(String),
    /// Speak and listen in this language (a configured code such as `en-US`) from now on.
    SwitchLanguage(String),
}

/// `reasonCode` of a call the agent ended.
pub const REASON_END_CALL: &str = "end-call";
/// `reasonCode` of a call handed to a person.
pub const REASON_LIVE_AGENT: &str = "live-agent-handoff";
/// `reasonCode` of a call ended because it reached `MAX_CALL_SECS`.
pub const REASON_MAX_DURATION: &str = "max-duration";

/// Why and how the agent ended the call; travels as ConversationRelay `handoffData`
/// and comes back to `/twiml/action` as `HandoffData`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handoff {
    /// [`REASON_END_CALL`] or [`REASON_LIVE_AGENT`].
    pub reason_code: String,
    pub reason: Option<String>,
    /// For a person taking over: what the call was about.
    pub summary: Option<String>,
    pub call_sid: Option<String>,
    /// The caller's number.
    pub from: Option<String>,
}

impl Handoff {
    pub fn is_live_agent(&self) -> bool {
        self.reason_code == REASON_LIVE_AGENT
    }

    /// The JSON document, as a string (ConversationRelay wants `handoffData` as a string).
    pub fn to_json(&self) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert("reasonCode".into(), self.reason_code.clone().into());
        for (key, value) in [
            ("reason", &self.reason),
            ("summary", &self.summary),
            ("callSid", &self.call_sid),
            ("from", &self.from),
        ] {
            if let Some(value) = value {
                doc.insert(key.into(), value.clone().into());
            }
        }
        serde_json::Value::Object(doc).to_string()
    }
}

/// Who spoke a transcript turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Caller,
    Agent,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Agent => "agent",
        }
    }
}

/// One finished transcript turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    /// Position in the call, from 0; an interruption later refers to it.
    pub seq: u32,
    pub speaker: Speaker,
    pub text: String,
    pub started_at: std::time::SystemTime,
    pub ended_at: std::time::SystemTime,
    /// For agent turns: time from the caller's turn to the first token out (a
    /// filler counts: it is what the caller hears first).
    pub time_to_first_token_ms: Option<u64>,
    /// For agent turns: time from the LLM request to the LLM's first token.
    pub llm_first_token_ms: Option<u64>,
    /// An agent reply still going out: `text` is what was sent so far, and a later
    /// record of the same `seq` completes it.
    pub partial: bool,
}

impl TurnRecord {
    /// A record of turn `seq`, ending now.
    pub fn now(
        seq: u32,
        speaker: Speaker,
        text: &str,
        started_at: std::time::SystemTime,
        latency: Latency,
        partial: bool,
    ) -> Self {
        Self {
            seq,
            speaker,
            text: text.to_string(),
            started_at,
            ended_at: std::time::SystemTime::now(),
            time_to_first_token_ms: latency.first_token.map(|d| d.as_millis() as u64),
            llm_first_token_ms: latency.llm_first_token.map(|d| d.as_millis() as u64),
            partial,
        }
    }
}

/// How long an agent turn took to start, both ways it is measured.
/// (`Latency::default()`: not measured, as for the caller's turns.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// The caller's turn → the first token out.
    pub first_token: Option<std::time::Duration>,
    /// The LLM request → the LLM's first token.
    pub llm_first_token: Option<std::time::Duration>,
}

impl Latency {
    /// Only the time to the first output (a speech-to-speech model's first audio).
    pub fn first_out(first_token: Option<std::time::Duration>) -> Self {
        Self {
            first_token,
            llm_first_token: None,
        }
    }
}

/// A tool the agent ran.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRecord {
    pub name: String,
    /// The arguments as the model produced them (JSON text).
    pub arguments: String,
    /// What went back to the model.
    pub result: String,
    pub ok: bool,
    pub started_at: std::time::SystemTime,
    pub duration_ms: u64,
}

/// An appointment booked by the `schedule_appointment` tool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppointmentRecord {
    pub name: String,
    pub email: Option<String>,
    /// As understood from the caller (normalised by the tool, e.g. `2026-11-24`).
    pub preferred_day: String,
    pub preferred_time: Option<String>,
    /// The phone given by the caller, else the caller's number.
    pub phone: Option<String>,
    pub notes: Option<String>,
    pub created_at: Option<std::time::SystemTime>,
}

impl AppointmentRecord {
    /// The record of an appointment the tool booked just now on a call from
    /// `caller` (whose number stands in when the caller gave none).
    pub fn booked(a: crate::tools::Appointment, caller: &str) -> Self {
        Self {
            name: a.name,
            email: a.email,
            preferred_day: a.day,
            preferred_time: a.time,
            phone: a
                .phone
                .or_else(|| Some(caller.to_string()).filter(|f| !f.is_empty())),
            notes: a.notes,
            created_at: Some(std::time::SystemTime::now()),
        }
    }
}

/// How a call ended, for its record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallSummary {
    /// `completed`, `handoff`, `failed`, ...
    pub status: String,
    /// The JSON sent in an `end` message, if any.
    pub handoff_data: Option<String>,
    pub turns: u32,
    pub interrupts: u32,
    pub llm_errors: u32,
}

/// Receives a call's durable facts as they happen; the store implements it so each
/// turn is saved when it completes. Every method must return at once (queue the
/// work, never block or await) and must never fail the call.
pub trait CallObserver: Send + Sync {
    fn call_started(&self, _call: &CallInfo) {}
    fn turn(&self, _call_sid: &str, _turn: &TurnRecord) {}
    /// An agent turn was cut short: the caller heard only `heard`.
    fn turn_interrupted(&self, _call_sid: &str, _seq: u32, _heard: &str) {}
    fn tool_call(&self, _call_sid: &str, _record: &ToolCallRecord) {}
    /// An appointment was booked on this call (caller number from `call_started`).
    fn appointment(&self, _call_sid: &str, _appointment: &AppointmentRecord) {}
    fn call_ended(&self, _call_sid: &str, _summary: &CallSummary) {}
    /// A local recording of the call was written to `path` (Media Streams mode with
    /// `RECORD_CALLS=true`); reported before `call_ended`.
    /// Who answered the call, as the caller's words showed (`what`: `voicemail`
    /// or `screening`; `signal`: `transcript`).
    fn answered_by(&self, _call_sid: &str, _what: &str, _signal: &str) {}
    fn recording(&self, _call_sid: &str, _path: &str) {}
}

/// An observer that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl CallObserver for NoObserver {}
