//! The LLM seam: a small trait the agent streams from, and its providers.
//!
//! A provider turns a [`LlmRequest`] (the conversation so far and the tools on offer)
//! into a stream of [`LlmEvent`]s. The stream is lazy: nothing is sent until it is
//! first polled, and dropping it drops the upstream HTTP response at once, which is
//! how an interrupted reply stops costing tokens.
//!
//! Providers: [`openai`] (OpenAI, Azure OpenAI and any OpenAI-compatible server) and
//! [`scripted`] (offline, deterministic, pt-BR).
//!
//! May import `text` and `config` (the order is checked by `.ci/layers`).

pub mod openai;
pub mod scripted;
pub mod sse;

use std::sync::Arc;

use futures::stream::BoxStream;
use serde::Serialize;

use crate::config::{LlmConfig, LlmProviderKind};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call the model asked for, with its arguments as the JSON text it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: Text,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    fn new(role: Role, content: impl Into<Text>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    pub fn system(content: impl Into<Text>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<Text>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<Text>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// The result of a tool call, answering `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<Text>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A message's text: its own, or shared by every call of an agent. The system
/// prompt is the same for all of an agent's calls and often kilobytes long; each
/// call's history holds it without a copy until a call changes it.
#[derive(Clone, Eq)]
pub enum Text {
    Owned(String),
    Shared(Arc<str>),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Owned(text) => text,
            Text::Shared(text) => text,
        }
    }

    /// The text to change in place, made this message's own first.
    pub fn to_mut(&mut self) -> &mut String {
        if let Text::Shared(shared) = self {
            *self = Text::Owned(shared.to_string());
        }
        match self {
            Text::Owned(text) => text,
            Text::Shared(_) => unreachable!("made owned just above"),
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text::Owned(text)
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text::Owned(text.to_string())
    }
}

impl From<Arc<str>> for Text {
    fn from(text: Arc<str>) -> Self {
        Text::Shared(text)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments, built and serialised once, shared by every
    /// request.
    pub parameters: crate::text::SharedJson,
}

/// What the agent asks the model, borrowed from the agent for the moment a
/// provider takes to serialise it (nothing is copied per turn).
#[derive(Debug, Clone, Copy, Default)]
pub struct LlmRequest<'a> {
    pub messages: &'a [ChatMessage],
    pub tools: &'a [ToolSpec],
}

/// One piece of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// Spoken text, to be forwarded as is (never trimmed).
    Text(String),
    /// A fragment of a tool call; fragments with the same `index` are concatenated.
    ToolCallDelta {
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// The model finished (`stop`, `length`, `tool_calls`, ...).
    Finished { reason: Option<String> },
}

/// Why a reply failed. The caller hears the fallback message; the call goes on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("LLM request failed with HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("could not reach the LLM: {0}")]
    Connect(String),
    #[error("LLM stream broke: {0}")]
    Stream(String),
    #[error("LLM sent an error in its stream: {0}")]
    Upstream(String),
    #[error("LLM gave no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("LLM stream ended without any content")]
    Empty,
}

impl LlmError {
    /// A short label for metrics and the call summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Connect(_) => "connect",
            Self::Stream(_) => "stream",
            Self::Upstream(_) => "upstream",
            Self::Timeout(_) => "timeout",
            Self::Empty => "empty",
        }
    }
}

/// A streamed reply.
pub type LlmStream = BoxStream<'static, Result<LlmEvent, LlmError>>;

/// A chat model the agent can stream from.
pub trait LlmProvider: Send + Sync + 'static {
    /// `openai`, `azure` or `scripted`.
    fn name(&self) -> &'static str;
    /// The model (or Azure deployment) in use.
    fn model(&self) -> &str;
    /// Starts a reply. Lazy: the request goes out on the first poll; what the
    /// stream needs of `request` is taken before this returns.
    fn stream(&self, request: LlmRequest<'_>) -> LlmStream;
}

/// Builds the provider chosen by the configuration.
pub fn from_config(config: &LlmConfig) -> Result<Arc<dyn LlmProvider>, LlmError> {
    Ok(match config.provider {
        LlmProviderKind::Scripted => {
            Arc::new(scripted::ScriptedProvider::new(config.scripted_token_delay))
        }
        LlmProviderKind::OpenAi | LlmProviderKind::Azure => {
            Arc::new(openai::OpenAiProvider::new(config)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_text_is_copied_only_by_the_message_that_changes_it() {
        let prompt: Arc<str> = Arc::from("Seja breve.");
        let mut a = ChatMessage::system(prompt.clone());
        let b = ChatMessage::system(prompt.clone());
        a.content.to_mut().push_str(" Dados: x");
        assert_eq!(a.content, "Seja breve. Dados: x");
        assert_eq!(b.content, "Seja breve.");
        assert!(matches!(&b.content, Text::Shared(p) if Arc::ptr_eq(p, &prompt)));
        // Equal texts are equal however they are held, and serialise as strings.
        assert_eq!(b.content, Text::from("Seja breve."));
        assert_eq!(
            serde_json::to_string(&b.content).unwrap(),
            "\"Seja breve.\""
        );
    }
}
