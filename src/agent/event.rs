//! What a transport tells the agent ([`AgentInput`]) and what the agent asks the
//! transport to do ([`AgentOutput`]). Every transport (ConversationRelay, Media
//! Streams) translates its own wire protocol to and from these types; the agent
//! never sees a Twilio message.

use std::collections::HashMap;

/// Facts about the call, known when the transport's session starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallInfo {
    pub call_sid: String,
    pub from: String,
    pub to: String,
    pub direction: Option<String>,
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
