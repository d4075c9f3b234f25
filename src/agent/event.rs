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
    /// `<Parameter>`s from the TwiML (e.g. the lead's name on an outbound call).
    pub parameters: HashMap<String, String>,
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
    /// For agent turns: time from the caller's turn to the first token out.
    pub time_to_first_token_ms: Option<u64>,
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
}

/// An observer that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl CallObserver for NoObserver {}
