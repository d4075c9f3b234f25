//! Tools the model can call: the [`Tool`] trait, the [`ToolRegistry`] built from the
//! configuration, and the built-in and HTTP tools. Transport-free: a tool that acts
//! on the call (hang up, transfer, press keys, switch language, book) returns a
//! [`ToolEffect`] that the agent turns into an output; it never touches a socket.
//!
//! [`ToolRegistry::run`] never fails: invalid JSON arguments, unknown tools, tool
//! errors and timeouts all become a [`ToolRun`] whose content tells the model what
//! went wrong, so the model can ask the caller again instead of the turn crashing.
//!
//! May import `llm` (tool specs), `text` and `config` (the order is checked by
//! `.ci/layers`).

pub mod builtin;
pub mod dates;
pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::config::{BuiltinTool, Config};
use crate::llm::{ToolCall, ToolSpec};

/// What a tool knows about the call it runs in.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub call_sid: String,
    /// The caller's number.
    pub from: String,
    pub now: SystemTime,
}

impl ToolContext {
    /// The context of a call's tools, as of now.
    pub fn for_call(call_sid: &str, from: &str) -> Self {
        Self {
            call_sid: call_sid.to_string(),
            from: from.to_string(),
            now: SystemTime::now(),
        }
    }
}

/// An appointment the caller asked for, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appointment {
    pub name: String,
    pub email: Option<String>,
    /// ISO date, e.g. `2026-11-24`.
    pub day: String,
    /// `HH:MM` when understood, else the caller's words.
    pub time: Option<String>,
    pub phone: Option<String>,
    pub notes: Option<String>,
}

/// Something a tool asks the agent to do on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEffect {
    /// Say goodbye, then end the call.
    EndCall { reason: Option<String> },
    /// Hand the caller to a person.
    Handoff {
        reason: String,
        summary: Option<String>,
    },
    /// Press these keys towards the far end (`0-9 * # w`).
    SendDigits(String),
    /// Speak and listen in this configured language from now on.
    SwitchLanguage(String),
    /// Book this appointment.
    Appointment(Appointment),
}

impl ToolEffect {
    /// Whether the call ends after this effect.
    pub fn ends_call(&self) -> bool {
        matches!(self, Self::EndCall { .. } | Self::Handoff { .. })
    }
}

/// A successful tool result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// What goes back to the model (JSON text).
    pub content: String,
    pub effect: Option<ToolEffect>,
}

impl ToolOutput {
    pub fn json(content: Value) -> Self {
        Self {
            content: content.to_string(),
            effect: None,
        }
    }
    pub fn with_effect(mut self, effect: ToolEffect) -> Self {
        self.effect = Some(effect);
        self
    }
}

/// Why a tool call gave no result. The message goes back to the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    #[error("unknown tool {name:?}; available tools: {available}")]
    Unknown { name: String, available: String },
    #[error("{0}")]
    Failed(String),
    #[error("the tool took longer than {0:?} and was stopped")]
    Timeout(Duration),
}

/// A function the model may call.
pub trait Tool: Send + Sync {
    fn name(&self) -> &str;
    /// The description and JSON schema shown to the model (may mention today's date).
    fn spec(&self, ctx: &ToolContext) -> ToolSpec;
    /// The longest the tool may run.
    fn timeout(&self) -> Duration;
    /// Runs the tool with the model's arguments (always a JSON object).
    fn call(
        &self,
        args: Map<String, Value>,
        ctx: &ToolContext,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>>;
}

/// One finished tool call.
#[derive(Debug, Clone)]
pub struct ToolRun {
    pub call: ToolCall,
    pub result: Result<ToolOutput, ToolError>,
    pub started_at: SystemTime,
    pub duration: Duration,
}

impl ToolRun {
    /// What the model reads as the tool's result.
    pub fn content(&self) -> String {
        match &self.result {
            Ok(output) => output.content.clone(),
            Err(e) => json!({ "error": e.to_string() }).to_string(),
        }
    }

    pub fn effect(&self) -> Option<&ToolEffect> {
        self.result.as_ref().ok().and_then(|o| o.effect.as_ref())
    }
}

/// The tools offered to the model on every call.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: Vec<Arc<dyn Tool>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.name().to_string()))
            .finish()
    }
}

impl ToolRegistry {
    /// No tools.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in tools the configuration enables, then its HTTP tools.
    pub fn from_config(config: &Config) -> Self {
        let mut registry = Self::empty();
        for tool in builtin::enabled(config) {
            registry.add(tool);
        }
        // Made only when a tool needs it: each HTTP client parses the system's
        // root certificates and keeps its own copy of them.
        if !config.tools.http.is_empty() {
            let client = http::client();
            for tool in &config.tools.http {
                registry.add(Arc::new(http::HttpTool::new(tool.clone(), client.clone())));
            }
        }
        registry
    }

    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        self.tools.retain(|t| t.name() != tool.name());
        self.tools.push(tool);
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.tools.iter().map(|t| t.name().to_string()).collect()
    }

    /// What the model is offered.
    pub fn specs(&self, ctx: &ToolContext) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec(ctx)).collect()
    }

    /// The specs of the tools a transport can carry out: all but the built-in
    /// ones in `unsupported`.
    pub fn specs_except(&self, ctx: &ToolContext, unsupported: &[BuiltinTool]) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .filter(|t| !BuiltinTool::listed(unsupported, t.name()))
            .map(|t| t.spec(ctx))
            .collect()
    }

    /// Runs one call under the tool's time limit. Never fails: every problem becomes
    /// an error result for the model.
    pub fn run(&self, call: ToolCall, ctx: &ToolContext) -> BoxFuture<'static, ToolRun> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let finish = move |call: ToolCall, result| ToolRun {
            call,
            result,
            started_at,
            duration: started.elapsed(),
        };
        let Some(tool) = self.tools.iter().find(|t| t.name() == call.name) else {
            let error = ToolError::Unknown {
                name: call.name.clone(),
                available: self.names().join(", "),
            };
            return futures::future::ready(finish(call, Err(error))).boxed();
        };
        let args = match parse_arguments(&call.arguments) {
            Ok(args) => args,
            Err(e) => return futures::future::ready(finish(call, Err(e))).boxed(),
        };
        let limit = tool.timeout();
        let running = tool.call(args, ctx);
        async move {
            let result = match tokio::time::timeout(limit, running).await {
                Ok(result) => result,
                Err(_) => Err(ToolError::Timeout(limit)),
            };
            finish(call, result)
        }
        .boxed()
    }
}

/// The model's argument text as a JSON object; empty text means no arguments.
pub fn parse_arguments(text: &str) -> Result<Map<String, Value>, ToolError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(other) => Err(ToolError::InvalidArguments(format!(
            "expected a JSON object, got {other}"
        ))),
        Err(e) => Err(ToolError::InvalidArguments(format!(
            "not valid JSON ({e}); send the arguments as a JSON object"
        ))),
    }
}

/// An optional string argument, trimmed; blank counts as absent.
pub fn string_arg(args: &Map<String, Value>, name: &str) -> Option<String> {
    match args.get(name)? {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ToolContext {
        ToolContext {
            call_sid: "CA1".into(),
            from: "+5511999990000".into(),
            now: SystemTime::now(),
        }
    }

    struct Slow;
    impl Tool for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn spec(&self, _: &ToolContext) -> ToolSpec {
            ToolSpec {
                name: "slow".into(),
                description: "sleeps".into(),
                parameters: json!({"type": "object"}).into(),
            }
        }
        fn timeout(&self) -> Duration {
            Duration::from_millis(50)
        }
        fn call(
            &self,
            _: Map<String, Value>,
            _: &ToolContext,
        ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(ToolOutput::json(json!({})))
            }
            .boxed()
        }
    }

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: args.into(),
        }
    }

    #[test]
    fn arguments_must_be_a_json_object() {
        assert!(parse_arguments("").unwrap().is_empty());
        assert_eq!(parse_arguments(r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(matches!(
            parse_arguments("{broken"),
            Err(ToolError::InvalidArguments(_))
        ));
        assert!(matches!(
            parse_arguments("[1]"),
            Err(ToolError::InvalidArguments(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_tools_bad_json_and_timeouts_become_error_results() {
        let mut registry = ToolRegistry::empty();
        registry.add(Arc::new(Slow));
        let run = registry.run(call("nope", "{}"), &ctx()).await;
        assert!(run.content().contains("unknown tool"), "{}", run.content());
        assert!(run.content().contains("slow"));
        let run = registry.run(call("slow", "{oops"), &ctx()).await;
        assert!(run.content().contains("invalid arguments"));
        let run = registry.run(call("slow", "{}"), &ctx()).await;
        assert_eq!(
            run.result,
            Err(ToolError::Timeout(Duration::from_millis(50)))
        );
        let parsed: Value = serde_json::from_str(&run.content()).unwrap();
        assert!(parsed["error"].as_str().unwrap().contains("longer than"));
    }
}
