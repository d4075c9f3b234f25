//! OpenAI Chat Completions streaming, for OpenAI itself, Azure OpenAI, and any
//! OpenAI-compatible server (Groq, Ollama, vLLM, OpenRouter, DeepSeek, ...).
//!
//! async-openai's configuration types give the URL, headers and query (OpenAI or
//! Azure); the request itself is sent by [`super::sse`] (retries, connection reuse).
//! The body is plain JSON and each SSE chunk is read as a `serde_json::Value`, leniently,
//! because compatible servers add, drop or misspell fields that the crate's strict
//! types reject (`docs/openai.md`): chunks without `delta`, tool calls
//! without `index`, `finish_reason: ""`, errors inside a 200 stream, keep-alive
//! comments. A chunk that is not JSON at all is skipped with a warning.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::sse::{self, Endpoint, OpenError, SseItem, SseStream};
use super::{ChatMessage, LlmError, LlmEvent, LlmProvider, LlmRequest, LlmStream, Role, ToolSpec};
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
        let text = api_config.url("/chat/completions");
        let mut url = reqwest::Url::parse(&text)
            .map_err(|e| LlmError::Connect(format!("the LLM URL {text:?} is not valid: {e}")))?;
        let query = api_config.query();
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let endpoint = Endpoint {
            http,
            url,
            headers: api_config.headers(),
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

    /// The JSON body of a streaming request, serialised straight from the
    /// agent's history and tool specs (no intermediate JSON tree).
    fn body(&self, request: &LlmRequest<'_>) -> Result<Vec<u8>, serde_json::Error> {
        let tools = !request.tools.is_empty();
        let (max_tokens, max_completion_tokens) = match self.max_tokens {
            Some(m) if self.official_openai => (None, Some(m)),
            other => (other, None),
        };
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(
            &mut out,
            &Body {
                model: &self.model,
                stream: true,
                messages: Messages(request.messages),
                tools: tools.then_some(Tools(request.tools)),
                tool_choice: tools.then_some("auto"),
                temperature: self.temperature,
                max_tokens,
                max_completion_tokens,
            },
        )?;
        Ok(out)
    }
}

/// A `/chat/completions` request body.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    stream: bool,
    messages: Messages<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Tools<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// Most compatible servers only know `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// OpenAI itself wants `max_completion_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
}

struct Messages<'a>(&'a [ChatMessage]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(MessageJson))
    }
}

/// One message as Chat Completions wants it.
struct MessageJson<'a>(&'a ChatMessage);

impl Serialize for MessageJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("role", &m.role)?;
                let content = (!m.content.is_empty()).then_some(m.content.as_str());
                map.serialize_entry("content", &content)?;
                let calls: Vec<ToolCallJson<'_>> = m
                    .tool_calls
                    .iter()
                    .map(|c| ToolCallJson {
                        id: &c.id,
                        kind: "function",
                        function: CalledFunction {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                    .collect();
                map.serialize_entry("tool_calls", &calls)?;
                map.end()
            }
            Role::Tool => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("role", &m.role)?;
                map.serialize_entry("tool_call_id", m.tool_call_id.as_deref().unwrap_or(""))?;
                map.serialize_entry("content", &m.content)?;
                map.end()
            }
            _ => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("role", &m.role)?;
                map.serialize_entry("content", &m.content)?;
                map.end()
            }
        }
    }
}

#[derive(Serialize)]
struct ToolCallJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CalledFunction<'a>,
}

#[derive(Serialize)]
struct CalledFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

struct Tools<'a>(&'a [ToolSpec]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|t| ToolJson {
            kind: "function",
            function: FunctionJson {
                name: &t.name,
                description: &t.description,
                parameters: &t.parameters,
            },
        }))
    }
}

#[derive(Serialize)]
struct ToolJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a crate::text::SharedJson,
}

impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn stream(&self, request: LlmRequest<'_>) -> LlmStream {
        let body = match self.body(&request) {
            Ok(body) => Bytes::from(body),
            Err(e) => return stream::iter([Err(LlmError::Connect(e.to_string()))]).boxed(),
        };
        let endpoint = self.endpoint.clone();
        let open = async move {
            match sse::open(&endpoint, body).await {
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
                Some(SseItem::Data(data)) => match read_chunk(&data) {
                    Ok(events) => {
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

/// One streamed chunk, read as typed fields (no JSON tree) when it has the usual
/// shape; anything else (a field of an unexpected type) is read again leniently
/// as a `Value`. Errs only when the data is not JSON at all.
fn read_chunk(data: &str) -> Result<Vec<Result<LlmEvent, LlmError>>, serde_json::Error> {
    match serde_json::from_str::<Chunk<'_>>(data) {
        Ok(chunk) => Ok(typed_chunk_events(chunk)),
        Err(_) => serde_json::from_str::<Value>(data).map(chunk_events),
    }
}

/// The fields of a chunk we use; unknown fields are skipped without being stored.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    /// Rare and quirky across servers: read leniently.
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

fn typed_chunk_events(chunk: Chunk<'_>) -> Vec<Result<LlmEvent, LlmError>> {
    if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
        return vec![Err(upstream_error(&error))];
    }
    // A voice reply uses the first choice only.
    let Some(choice) = chunk
        .choices
        .into_iter()
        .flatten()
        .find(|c| c.index.unwrap_or(0) == 0)
    else {
        return Vec::new();
    };
    let mut events = Vec::with_capacity(1);
    if let Some(delta) = choice.delta {
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            events.push(Ok(LlmEvent::Text(text.into_owned())));
        }
        if let Some(calls) = delta.tool_calls {
            tool_call_events(&calls, &mut events);
        }
    }
    if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
        events.push(Ok(LlmEvent::Finished {
            reason: Some(reason.into_owned()),
        }));
    }
    events
}

/// An `error` inside a 200 stream: `{"message": ...}` or anything else.
fn upstream_error(error: &Value) -> LlmError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    LlmError::Upstream(truncate(&message, 300))
}

/// Turns one streamed chunk into events, leniently.
fn chunk_events(chunk: Value) -> Vec<Result<LlmEvent, LlmError>> {
    let mut events = Vec::new();
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        return vec![Err(upstream_error(error))];
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
            tool_call_events(calls, &mut events);
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

/// The fragments of the tool calls in one delta.
fn tool_call_events(calls: &[Value], events: &mut Vec<Result<LlmEvent, LlmError>>) {
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
    use serde_json::json;

    /// The events of a chunk, checking that the typed and lenient readings agree.
    fn events(chunk: Value) -> Vec<LlmEvent> {
        let lenient: Vec<LlmEvent> = chunk_events(chunk.clone())
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        let typed: Vec<LlmEvent> = read_chunk(&chunk.to_string())
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(typed, lenient, "readings differ for {chunk}");
        typed
    }

    fn message_json(m: &ChatMessage) -> Value {
        serde_json::to_value(MessageJson(m)).unwrap()
    }

    #[test]
    fn odd_field_types_fall_back_to_the_lenient_reading() {
        // An index sent as a string does not fit the typed chunk.
        let out = read_chunk(r#"{"choices":[{"index":"0","delta":{"content":"oi"}}]}"#).unwrap();
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], Ok(LlmEvent::Text(t)) if t == "oi"));
        // Escaped text is read whole.
        let out = read_chunk(r#"{"choices":[{"delta":{"content":"a\"b\u00e9"}}]}"#).unwrap();
        assert!(matches!(&out[0], Ok(LlmEvent::Text(t)) if t == "a\"bé"));
        assert!(read_chunk("not json").is_err());
    }

    #[test]
    fn the_body_has_the_history_tools_and_limits() {
        let config = llm_config(&[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "k"),
            ("LLM_MAX_TOKENS", "200"),
            ("LLM_TEMPERATURE", "0.7"),
        ]);
        assert_eq!(
            (config.max_tokens, config.temperature),
            (Some(200), Some(0.7))
        );
        let provider = OpenAiProvider::new(&config).unwrap();
        let tools = [ToolSpec {
            name: "end_call".into(),
            description: "d".into(),
            parameters: json!({"type": "object"}).into(),
        }];
        let messages = [ChatMessage::system("s"), ChatMessage::user("oi")];
        let body = provider
            .body(&LlmRequest {
                messages: &messages,
                tools: &tools,
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": config.model, "stream": true,
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "oi"}],
                "tools": [{"type": "function", "function": {"name": "end_call", "description": "d", "parameters": {"type": "object"}}}],
                "tool_choice": "auto", "temperature": 0.7, "max_completion_tokens": 200
            })
        );
        let body = provider
            .body(&LlmRequest {
                messages: &messages,
                tools: &[],
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    }

    fn llm_config(vars: &[(&str, &str)]) -> LlmConfig {
        crate::config::Config::from_vars(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
        .llm
    }

    #[test]
    fn the_url_is_parsed_once_with_its_query_and_a_bad_one_is_refused_at_start() {
        let openai = llm_config(&[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        ]);
        let provider = OpenAiProvider::new(&openai).unwrap();
        assert_eq!(
            provider.endpoint.url.as_str(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        let azure = llm_config(&[
            ("LLM_PROVIDER", "azure"),
            ("AZURE_OPENAI_API_KEY", "k"),
            ("AZURE_OPENAI_ENDPOINT", "https://x.openai.azure.com"),
            ("AZURE_OPENAI_DEPLOYMENT", "gpt"),
            ("AZURE_OPENAI_API_VERSION", "2024-10-21"),
        ]);
        let provider = OpenAiProvider::new(&azure).unwrap();
        assert_eq!(
            provider.endpoint.url.as_str(),
            "https://x.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21"
        );
        let bad = llm_config(&[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", "not a url"),
        ]);
        let Err(LlmError::Connect(message)) = OpenAiProvider::new(&bad) else {
            panic!("a bad URL must be refused");
        };
        assert!(message.contains("not a url"), "{message}");
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
        let out = read_chunk(r#"{"error":{"message":"overloaded"}}"#).unwrap();
        assert!(matches!(&out[0], Err(LlmError::Upstream(m)) if m == "overloaded"));
        let out = read_chunk(r#"{"error":"busy"}"#).unwrap();
        assert!(matches!(&out[0], Err(LlmError::Upstream(m)) if m == "\"busy\""));
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
