//! OpenAI Chat Completions streaming, for OpenAI itself, Azure OpenAI, and any
//! OpenAI-compatible server (Groq, Ollama, vLLM, OpenRouter, DeepSeek, ...).
//!
//! async-openai's configuration types give the URL, headers and query (OpenAI or
//! Azure); the request itself is sent by [`super::sse`] (retries, connection reuse).
//! The body is plain JSON and each SSE chunk is read as a `serde_json::Value`, leniently,
//! because compatible servers add, drop or misspell fields that the crate's strict
//! types reject (`external-apis.md` §3.3, §4.6): chunks without `delta`, tool calls
//! without `index`, `finish_reason: ""`, errors inside a 200 stream, keep-alive
//! comments. A chunk that is not JSON at all is skipped with a warning.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use futures::{Stream, StreamExt, stream};
use serde_json::{Value, json};

use super::sse::{self, Endpoint, OpenError, SseItem, SseStream};
use super::{ChatMessage, LlmError, LlmEvent, LlmProvider, LlmRequest, LlmStream, Role};
use crate::config::{LlmConfig, LlmProviderKind};

const OPENAI_API_BASE: &str = "https://api.openai.com/v1";

/// Streams from an OpenAI-style `/chat/completions` endpoint.
pub struct OpenAiProvider {
    /// URL, headers and query built once from async-openai's OpenAI or Azure config.
    endpoint: Arc<Endpoint>,
    name: &'static str,
    model: String,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    /// OpenAI itself wants `max_completion_tokens`; most compatible servers only
    /// know `max_tokens`.
    official_openai: bool,
}

impl OpenAiProvider {
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| LlmError::Connect(format!("building the HTTP client: {e}")))?;
        let (api_config, name, official_openai): (Box<dyn Config>, _, _) = match config.provider {
            LlmProviderKind::Azure => {
                let cfg = AzureConfig::new()
                    .with_api_base(config.azure_endpoint.clone().unwrap_or_default())
                    .with_deployment_id(config.azure_deployment.clone().unwrap_or_default())
                    .with_api_version(config.azure_api_version.clone())
                    .with_api_key(
                        config
                            .azure_api_key
                            .as_ref()
                            .map(|k| k.expose().to_string())
                            .unwrap_or_default(),
                    );
                (Box::new(cfg), "azure", false)
            }
            _ => {
                let base = config
                    .openai_base_url
                    .clone()
                    .unwrap_or_else(|| OPENAI_API_BASE.to_string());
                let official = base == OPENAI_API_BASE;
                let cfg = OpenAIConfig::new()
                    .with_api_base(base)
                    .with_org_id("")
                    .with_project_id("")
                    .with_api_key(
                        config
                            .openai_api_key
                            .as_ref()
                            .map(|k| k.expose().to_string())
                            .unwrap_or_default(),
                    );
                (Box::new(cfg), "openai", official)
            }
        };
        let endpoint = Endpoint {
            http,
            url: api_config.url("/chat/completions"),
            headers: api_config.headers(),
            query: api_config
                .query()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Ok(Self {
            endpoint: Arc::new(endpoint),
            name,
            model: config.model.clone(),
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            official_openai,
        })
    }

    /// The JSON body of a streaming request.
    fn body(&self, request: &LlmRequest) -> Value {
        let mut body = json!({
            "model": self.model,
            "stream": true,
            "messages": request.messages.iter().map(message_json).collect::<Vec<_>>(),
        });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
            body["tool_choice"] = json!("auto");
        }
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = self.max_tokens {
            let key = if self.official_openai {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body[key] = json!(m);
        }
        body
    }
}

impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        let body = self.body(&request);
        let endpoint = self.endpoint.clone();
        let open = async move {
            match sse::open(&endpoint, &body).await {
                Ok(events) => Events {
                    sse: events,
                    queue: VecDeque::new(),
                }
                .boxed(),
                Err(e) => stream::iter([Err(open_error(e))]).boxed(),
            }
        };
        stream::once(open).flatten().boxed()
    }
}

fn message_json(m: &ChatMessage) -> Value {
    match m.role {
        Role::Assistant if !m.tool_calls.is_empty() => json!({
            "role": "assistant",
            "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
            "tool_calls": m.tool_calls.iter().map(|c| json!({
                "id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments}})).collect::<Vec<_>>(),
        }),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            "content": m.content,
        }),
        role => json!({"role": role, "content": m.content}),
    }
}

/// An error opening the stream.
fn open_error(e: OpenError) -> LlmError {
    match e {
        OpenError::Status { status, body } => {
            // OpenAI and most compatible servers: {"error": {"message": ...}}.
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| {
                    let error = v.get("error")?;
                    error
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| error.as_str().map(str::to_string))
                })
                .unwrap_or(body);
            LlmError::Http {
                status,
                message: truncate(&message, 300),
            }
        }
        OpenError::Connect(message) => LlmError::Connect(message),
    }
}

/// The events of a streamed reply: each SSE `data` parsed leniently as JSON.
struct Events {
    sse: SseStream,
    queue: VecDeque<Result<LlmEvent, LlmError>>,
}

impl Stream for Events {
    type Item = Result<LlmEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Poll::Ready(Some(event));
            }
            match std::task::ready!(self.sse.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(SseItem::Error(e)) => return Poll::Ready(Some(Err(LlmError::Stream(e)))),
                Some(SseItem::Data(data)) => match serde_json::from_str::<Value>(&data) {
                    Ok(chunk) => {
                        let events = chunk_events(chunk);
                        if events
                            .iter()
                            .any(|e| matches!(e, Ok(LlmEvent::Finished { .. })))
                        {
                            // The reply is complete: let its connection be reused.
                            self.sse.finished();
                        }
                        self.queue.extend(events);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, chunk = %truncate(&data, 200), "skipping an LLM chunk that is not JSON");
                    }
                },
            }
        }
    }
}

/// Turns one streamed chunk into events, leniently.
fn chunk_events(chunk: Value) -> Vec<Result<LlmEvent, LlmError>> {
    let mut events = Vec::new();
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| error.to_string());
        return vec![Err(LlmError::Upstream(truncate(&message, 300)))];
    }
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
        return events;
    };
    // A voice reply uses the first choice only.
    let Some(choice) = choices
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
    else {
        return events;
    };
    if let Some(delta) = choice.get("delta") {
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            events.push(Ok(LlmEvent::Text(text.to_string())));
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                let function = call.get("function");
                let field = |v: Option<&Value>, key: &str| {
                    v.and_then(|v| v.get(key))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                events.push(Ok(LlmEvent::ToolCallDelta {
                    // Ollama has sent tool calls without an index.
                    index: call
                        .get("index")
                        .and_then(Value::as_u64)
                        .map(|i| i as usize)
                        .unwrap_or(position),
                    id: field(Some(call), "id"),
                    name: field(function, "name"),
                    arguments: function
                        .and_then(|f| f.get("arguments"))
                        .map(|a| match a {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            // Some servers send the arguments as an object.
                            other => other.to_string(),
                        })
                        .unwrap_or_default(),
                }));
            }
        }
    }
    if let Some(reason) = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        events.push(Ok(LlmEvent::Finished {
            reason: Some(reason.to_string()),
        }));
    }
    events
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunk: Value) -> Vec<LlmEvent> {
        chunk_events(chunk)
            .into_iter()
            .map(|e| e.unwrap())
            .collect()
    }

    #[test]
    fn reads_text_and_finish() {
        assert_eq!(
            events(json!({"choices":[{"index":0,"delta":{"content":"Olá"},"finish_reason":null}]})),
            vec![LlmEvent::Text("Olá".into())]
        );
        assert_eq!(
            events(json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})),
            vec![LlmEvent::Finished {
                reason: Some("stop".into())
            }]
        );
    }

    #[test]
    fn tolerates_compatible_server_quirks() {
        // Azure's filter annotation, async-filter chunk without delta, empty finish reason.
        assert!(events(json!({"id":"","choices":[],"prompt_filter_results":[]})).is_empty());
        assert!(events(json!({"choices":[{"index":0,"content_filter_results":{}}]})).is_empty());
        assert!(events(json!({"choices":[{"index":0,"delta":{},"finish_reason":""}]})).is_empty());
        // Ollama: tool call without index, arguments whole.
        assert_eq!(
            events(
                json!({"choices":[{"delta":{"tool_calls":[{"id":"c1","function":{"name":"end_call","arguments":"{}"}}]}}]})
            ),
            vec![LlmEvent::ToolCallDelta {
                index: 0,
                id: Some("c1".into()),
                name: Some("end_call".into()),
                arguments: "{}".into()
            }]
        );
    }

    #[test]
    fn error_inside_a_stream_is_an_error() {
        let out = chunk_events(json!({"error":{"message":"overloaded"}}));
        assert!(matches!(&out[0], Err(LlmError::Upstream(m)) if m == "overloaded"));
    }

    #[test]
    fn assistant_tool_calls_and_tool_results_serialise() {
        let mut m = ChatMessage::assistant("");
        m.tool_calls.push(super::super::ToolCall {
            id: "c1".into(),
            name: "end_call".into(),
            arguments: "{}".into(),
        });
        assert_eq!(
            message_json(&m),
            json!({"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"end_call","arguments":"{}"}}]})
        );
        assert_eq!(
            message_json(&ChatMessage::tool("c1", "ok")),
            json!({"role":"tool","tool_call_id":"c1","content":"ok"})
        );
        assert_eq!(
            message_json(&ChatMessage::system("s")),
            json!({"role":"system","content":"s"})
        );
    }
}
