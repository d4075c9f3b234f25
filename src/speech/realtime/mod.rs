//! OpenAI Realtime (GA protocol only) over WebSocket, in two modes:
//!
//! - **conversation** (`session.type: realtime`): speech to speech. Twilio's base64
//!   µ-law goes in unchanged (`audio/pcmu`), the model's µ-law comes out unchanged,
//!   with server VAD, input transcription, function tools and barge-in truncation;
//! - **transcription** (`session.type: transcription`, `?intent=transcription`): the
//!   speech-to-text stage of a cascade, emitting transcripts and `speech_started`.
//!
//! The beta protocol (`OpenAI-Beta` header, flat `input_audio_format`,
//! `response.audio.delta`) is switched off by OpenAI and is not spoken here. Azure's GA
//! endpoint (`https://<resource>.openai.azure.com/openai/v1/realtime`) works with the
//! same events and an `api-key` header.
//!
//! The wire types live in [`protocol`] (re-exported here): client events are the
//! serde enum [`ClientEvent`]; server events are parsed leniently by
//! [`ServerEvent::parse`] (dispatch on `type`, unknown types become
//! [`ServerEvent::Unknown`]). This file holds the connection options, the client
//! and [`AssistantAudio`], which computes the clamped `conversation.item.truncate`
//! value for barge-in.

use std::collections::HashSet;
use std::time::Duration;

mod protocol;
pub use protocol::*;

use super::ws::{self, WsLink};
use super::{Service, SpeechError, base64_decoded_len, query};
use crate::config::{Config, Secret};

const SERVICE: Service = Service::OpenAiRealtime;

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum RealtimeAuth {
    /// OpenAI: `Authorization: Bearer <key>`.
    Bearer(Secret),
    /// Azure OpenAI: `api-key: <key>`.
    ApiKey(Secret),
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct RealtimeOptions {
    /// WebSocket endpoint without a query, e.g. `wss://api.openai.com/v1/realtime`.
    pub url: String,
    /// Model (Azure: deployment name), sent as `?model=` in conversation mode.
    pub model: String,
    pub auth: RealtimeAuth,
    pub connect_timeout: Duration,
}

impl RealtimeOptions {
    /// From the configuration: `OPENAI_REALTIME_URL`/`_MODEL` with `OPENAI_API_KEY`, or
    /// for an `*.azure.com` URL the `api-key` header with `AZURE_OPENAI_API_KEY`
    /// (falling back to `OPENAI_API_KEY`).
    pub fn from_config(config: &Config) -> Result<Self, SpeechError> {
        let speech = &config.speech;
        let azure = is_azure(&speech.openai_realtime_url);
        let auth = if azure {
            config
                .llm
                .azure_api_key
                .clone()
                .or_else(|| config.llm.openai_api_key.clone())
                .map(RealtimeAuth::ApiKey)
                .ok_or(SpeechError::NotConfigured {
                    service: SERVICE,
                    missing: "AZURE_OPENAI_API_KEY",
                })?
        } else {
            config
                .llm
                .openai_api_key
                .clone()
                .map(RealtimeAuth::Bearer)
                .ok_or(SpeechError::NotConfigured {
                    service: SERVICE,
                    missing: "OPENAI_API_KEY",
                })?
        };
        Ok(Self {
            url: speech.openai_realtime_url.clone(),
            model: speech.openai_realtime_model.clone(),
            auth,
            connect_timeout: speech.connect_timeout,
        })
    }
}

/// Whether a Realtime URL points at Azure OpenAI (which wants an `api-key` header).
fn is_azure(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':', '?'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    host.ends_with(".azure.com")
}

// ---------------------------------------------------------------------------------
// Barge-in arithmetic

/// The `audio_end_ms` to truncate an assistant item to: what was played, but never
/// more than the audio the model generated (µ-law 8 kHz: 8 bytes per ms). Sending more
/// than was generated is an `invalid_request_error`.
pub fn truncate_audio_end_ms(played_ms: u64, generated_bytes: u64) -> u64 {
    played_ms.min(generated_bytes / 8)
}

/// Tracks the assistant item being played and how much µ-law was generated for it,
/// to build the `conversation.item.truncate` of a barge-in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssistantAudio {
    item_id: Option<String>,
    generated_bytes: u64,
}

impl AssistantAudio {
    /// Counts a `response.output_audio.delta`. Returns true when it starts a new item
    /// (the moment to note where playback of that item begins).
    pub fn on_delta(&mut self, item_id: &str, delta_b64: &str) -> bool {
        let new_item = self.item_id.as_deref() != Some(item_id);
        if new_item {
            self.item_id = Some(item_id.to_string());
            self.generated_bytes = 0;
        }
        self.generated_bytes += base64_decoded_len(delta_b64) as u64;
        new_item
    }

    pub fn item_id(&self) -> Option<&str> {
        self.item_id.as_deref()
    }

    /// Milliseconds of audio generated for the current item.
    pub fn generated_ms(&self) -> u64 {
        self.generated_bytes / 8
    }

    /// The truncate event for a barge-in after `played_ms` of the current item were
    /// heard, and forgets the item. `None` when no assistant item is playing.
    pub fn truncate(&mut self, played_ms: u64) -> Option<ClientEvent> {
        let item_id = self.item_id.take()?;
        let audio_end_ms = truncate_audio_end_ms(played_ms, self.generated_bytes);
        self.generated_bytes = 0;
        Some(ClientEvent::TruncateItem {
            item_id,
            content_index: 0,
            audio_end_ms,
        })
    }

    /// Forgets the current item (it finished playing).
    pub fn reset(&mut self) {
        self.item_id = None;
        self.generated_bytes = 0;
    }
}

// ---------------------------------------------------------------------------------
// The client

/// Calls seen through `function_call_arguments.done` and not yet matched by a
/// `response.done` (bounded: a response has few calls).
const MAX_PENDING_CALLS: usize = 64;

/// One Realtime session. Send with the `&self` methods; read with the cancel-safe
/// [`RealtimeClient::next_event`]. Dropping it closes the socket.
pub struct RealtimeClient {
    link: WsLink,
    reported_calls: HashSet<String>,
}

impl RealtimeClient {
    /// Opens a speech-to-speech session and sends its `session.update`.
    pub async fn connect_conversation(
        options: &RealtimeOptions,
        settings: &ConversationSettings,
    ) -> Result<Self, SpeechError> {
        let url = format!(
            "{}?{}",
            options.url,
            query(&[("model", options.model.as_str())])
        );
        let session = Session::conversation(&options.model, settings);
        Self::connect(options, &url, session).await
    }

    /// Opens a transcription-only session (`?intent=transcription`) and sends its
    /// `session.update`.
    pub async fn connect_transcription(
        options: &RealtimeOptions,
        settings: &TranscriptionSettings,
    ) -> Result<Self, SpeechError> {
        let url = format!("{}?intent=transcription", options.url);
        Self::connect(options, &url, Session::transcription(settings)).await
    }

    async fn connect(
        options: &RealtimeOptions,
        url: &str,
        session: Session,
    ) -> Result<Self, SpeechError> {
        let (name, value) = match &options.auth {
            RealtimeAuth::Bearer(key) => ("authorization", format!("Bearer {}", key.expose())),
            RealtimeAuth::ApiKey(key) => ("api-key", key.expose().to_string()),
        };
        let link = ws::open(SERVICE, url, Some((name, &value)), options.connect_timeout).await?;
        let client = Self {
            link,
            reported_calls: HashSet::new(),
        };
        client
            .send(&ClientEvent::SessionUpdate {
                session: Box::new(session),
            })
            .await?;
        Ok(client)
    }

    /// Queues any client event (waits a bounded time for room in the queue).
    pub async fn send(&self, event: &ClientEvent) -> Result<(), SpeechError> {
        self.link.send_text(event.to_json()).await
    }

    /// Queues caller audio (base64 µ-law from Twilio, unchanged) without waiting: when
    /// the upstream lags and the queue is full, the frame is dropped
    /// ([`SpeechError::QueueFull`]).
    pub fn append_audio(&self, payload_b64: &str) -> Result<(), SpeechError> {
        self.link.try_send_text(
            ClientEvent::AppendAudio {
                audio: payload_b64.to_string(),
            }
            .to_json(),
        )
    }

    /// `response.create`, optionally with instructions for this response only.
    pub async fn create_response(&self, instructions: Option<String>) -> Result<(), SpeechError> {
        self.send(&ClientEvent::CreateResponse {
            response: instructions.map(|instructions| ResponseParams {
                instructions: Some(instructions),
            }),
        })
        .await
    }

    /// A tool's result, then `response.create` so the model speaks about it.
    pub async fn send_tool_result(&self, call_id: &str, output: &str) -> Result<(), SpeechError> {
        self.send(&ClientEvent::CreateItem {
            item: Item::FunctionCallOutput {
                call_id: call_id.to_string(),
                output: output.to_string(),
            },
        })
        .await?;
        self.create_response(None).await
    }

    /// A user text message (e.g. keypad digits) in the conversation.
    pub async fn send_user_text(&self, text: &str) -> Result<(), SpeechError> {
        self.send(&ClientEvent::CreateItem {
            item: Item::user_text(text),
        })
        .await
    }

    /// `conversation.item.truncate`.
    pub async fn truncate(&self, item_id: &str, audio_end_ms: u64) -> Result<(), SpeechError> {
        self.send(&ClientEvent::TruncateItem {
            item_id: item_id.to_string(),
            content_index: 0,
            audio_end_ms,
        })
        .await
    }

    /// `response.cancel` of the response in progress (harmless when there is none).
    pub async fn cancel_response(&self) -> Result<(), SpeechError> {
        self.send(&ClientEvent::CancelResponse { response_id: None })
            .await
    }

    /// The next server event. Cancel-safe. Malformed JSON is logged and skipped; an
    /// upstream close or a broken socket is `Err(SpeechError::Closed ..)`.
    pub async fn next_event(&mut self) -> Result<ServerEvent, SpeechError> {
        loop {
            let text = self.link.next_text().await?;
            let mut event = match ServerEvent::parse(text.as_str()) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(service = %SERVICE, error = %e, bytes = text.len(), "skipping a malformed server message");
                    continue;
                }
            };
            match &mut event {
                ServerEvent::FunctionCallDone(call) => {
                    if self.reported_calls.len() >= MAX_PENDING_CALLS {
                        self.reported_calls.clear();
                    }
                    self.reported_calls.insert(call.call_id.clone());
                }
                ServerEvent::ResponseDone { function_calls, .. } => {
                    function_calls.retain(|call| !self.reported_calls.remove(&call.call_id));
                }
                ServerEvent::Error {
                    kind,
                    code,
                    message,
                    ..
                } => {
                    tracing::warn!(service = %SERVICE, kind = %kind, code = ?code, message = %message, "server error event");
                }
                ServerEvent::Unknown { kind } => {
                    tracing::trace!(service = %SERVICE, kind = %kind, "unhandled server event");
                }
                _ => {}
            }
            return Ok(event);
        }
    }

    /// Closes the socket after the queued events have gone out.
    pub async fn close(self) {
        self.link.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> ConversationSettings {
        ConversationSettings {
            instructions: "Você é um assistente… Fale português do Brasil.".into(),
            voice: "marin".into(),
            language: Some("pt".into()),
            transcription_model: Some("gpt-4o-transcribe".into()),
            tools: vec![FunctionTool {
                name: "lookup_order".into(),
                description: "Busca um pedido pelo número".into(),
                parameters: json!({"type": "object",
                    "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}),
            }],
            tool_choice: ToolChoice::Auto,
            turn_detection: TurnDetection::server_vad(),
            noise_reduction: Some("near_field".into()),
        }
    }

    #[test]
    fn conversation_session_update_has_the_ga_shape() {
        let event = ClientEvent::SessionUpdate {
            session: Box::new(Session::conversation("gpt-realtime", &settings())),
        };
        let value = serde_json::to_value(&event).unwrap();
        // The reference's GA example, minus the fields we leave at their defaults.
        assert_eq!(
            value,
            json!({
              "type": "session.update",
              "session": {
                "type": "realtime",
                "model": "gpt-realtime",
                "output_modalities": ["audio"],
                "instructions": "Você é um assistente… Fale português do Brasil.",
                "audio": {
                  "input": {
                    "format": { "type": "audio/pcmu" },
                    "turn_detection": { "type": "server_vad" },
                    "transcription": { "model": "gpt-4o-transcribe", "language": "pt" },
                    "noise_reduction": { "type": "near_field" }
                  },
                  "output": { "format": { "type": "audio/pcmu" }, "voice": "marin" }
                },
                "tools": [
                  { "type": "function", "name": "lookup_order",
                    "description": "Busca um pedido pelo número",
                    "parameters": { "type": "object",
                      "properties": { "order_id": { "type": "string" } }, "required": ["order_id"] } }
                ],
                "tool_choice": "auto"
              }
            })
        );
    }

    #[test]
    fn a_language_switch_updates_only_instructions_and_transcription() {
        let mut switched = settings();
        switched.instructions = "Você é um assistente…\n\nFrom now on: en-US.".into();
        switched.language = Some("en".into());
        let event = ClientEvent::SessionUpdate {
            session: Box::new(Session::language_switch(&switched)),
        };
        // No voice, model, formats, turn detection, noise reduction or tools: OpenAI
        // updates only the fields present.
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
              "type": "session.update",
              "session": {
                "type": "realtime",
                "instructions": "Você é um assistente…\n\nFrom now on: en-US.",
                "audio": { "input": {
                  "transcription": { "model": "gpt-4o-transcribe", "language": "en" }
                } }
              }
            })
        );
        // Without caller transcription, only the instructions change.
        switched.transcription_model = None;
        assert_eq!(
            serde_json::to_value(Session::language_switch(&switched)).unwrap(),
            json!({"type": "realtime", "instructions": "Você é um assistente…\n\nFrom now on: en-US."})
        );
    }

    #[test]
    fn transcription_session_update_has_no_output() {
        let session = Session::transcription(&TranscriptionSettings {
            model: "gpt-4o-transcribe".into(),
            language: Some("pt".into()),
            prompt: None,
            turn_detection: TurnDetection::server_vad(),
            noise_reduction: None,
        });
        assert_eq!(
            serde_json::to_value(ClientEvent::SessionUpdate {
                session: Box::new(session)
            })
            .unwrap(),
            json!({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-transcribe", "language": "pt"},
                "turn_detection": {"type": "server_vad"}}}}})
        );
    }

    #[test]
    fn client_events_serialize_like_the_reference() {
        let cases = [
            (
                ClientEvent::AppendAudio {
                    audio: "//7+/w==".into(),
                },
                json!({"type":"input_audio_buffer.append","audio":"//7+/w=="}),
            ),
            (
                ClientEvent::CommitAudio,
                json!({"type":"input_audio_buffer.commit"}),
            ),
            (
                ClientEvent::ClearAudio,
                json!({"type":"input_audio_buffer.clear"}),
            ),
            (
                ClientEvent::CreateItem {
                    item: Item::user_text("Olá"),
                },
                json!({"type":"conversation.item.create",
                       "item":{"type":"message","role":"user","content":[{"type":"input_text","text":"Olá"}]}}),
            ),
            (
                ClientEvent::CreateItem {
                    item: Item::FunctionCallOutput {
                        call_id: "call_001".into(),
                        output: "{\"status\":\"shipped\"}".into(),
                    },
                },
                json!({"type":"conversation.item.create",
                       "item":{"type":"function_call_output","call_id":"call_001","output":"{\"status\":\"shipped\"}"}}),
            ),
            (
                ClientEvent::TruncateItem {
                    item_id: "item_002".into(),
                    content_index: 0,
                    audio_end_ms: 1500,
                },
                json!({"type":"conversation.item.truncate","item_id":"item_002","content_index":0,"audio_end_ms":1500}),
            ),
            (
                ClientEvent::CreateResponse { response: None },
                json!({"type":"response.create"}),
            ),
            (
                ClientEvent::CreateResponse {
                    response: Some(ResponseParams {
                        instructions: Some("Cumprimente o cliente.".into()),
                    }),
                },
                json!({"type":"response.create","response":{"instructions":"Cumprimente o cliente."}}),
            ),
            (
                ClientEvent::CancelResponse { response_id: None },
                json!({"type":"response.cancel"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(serde_json::to_value(&event).unwrap(), expected);
        }
        assert_eq!(
            serde_json::to_value(ToolChoice::Function("f".into())).unwrap(),
            json!({"type":"function","name":"f"})
        );
        assert_eq!(
            serde_json::to_value(ToolChoice::Required).unwrap(),
            json!("required")
        );
    }

    #[test]
    fn parses_the_reference_fixtures() {
        let created = r#"{"type":"session.created","event_id":"event_C9G5RJeJ2gF77mV7f2B1j",
           "session":{"type":"realtime","object":"realtime.session","id":"sess_C9G5QPteg4UIbotdKLoYQ",
             "model":"gpt-realtime-2025-08-28","output_modalities":["audio"],"instructions":"…",
             "tools":[],"tool_choice":"auto","max_output_tokens":"inf","tracing":null,"prompt":null,"expires_at":1756324625,
             "audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"transcription":null,"noise_reduction":null,
                "turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":200,
                                  "idle_timeout_ms":null,"create_response":true,"interrupt_response":true}},
               "output":{"format":{"type":"audio/pcm","rate":24000},"voice":"marin","speed":1}},"include":null}}"#;
        match ServerEvent::parse(created).unwrap() {
            ServerEvent::SessionCreated { session } => {
                assert_eq!(session["id"], "sess_C9G5QPteg4UIbotdKLoYQ")
            }
            other => panic!("{other:?}"),
        }
        let cases = [
            (
                r#"{"event_id":"event_1516","type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"msg_003"}"#,
                ServerEvent::SpeechStarted {
                    item_id: "msg_003".into(),
                    audio_start_ms: Some(1000),
                },
            ),
            (
                r#"{"event_id":"event_4950","type":"response.output_audio.delta","response_id":"resp_001",
                   "item_id":"msg_008","output_index":0,"content_index":0,"delta":"AAEC"}"#,
                ServerEvent::AudioDelta {
                    response_id: "resp_001".into(),
                    item_id: "msg_008".into(),
                    delta: "AAEC".into(),
                },
            ),
            (
                r#"{"type":"response.output_audio.done","response_id":"resp_001","item_id":"msg_008","output_index":0,"content_index":0}"#,
                ServerEvent::AudioDone {
                    item_id: "msg_008".into(),
                },
            ),
            (
                r#"{"type":"response.output_audio_transcript.delta","item_id":"msg_008","delta":"Hello, how can I a"}"#,
                ServerEvent::TranscriptDelta {
                    item_id: "msg_008".into(),
                    delta: "Hello, how can I a".into(),
                },
            ),
            (
                r#"{"type":"response.output_audio_transcript.done","item_id":"msg_008","transcript":"Hello, how can I assist you today?"}"#,
                ServerEvent::TranscriptDone {
                    item_id: "msg_008".into(),
                    transcript: "Hello, how can I assist you today?".into(),
                },
            ),
            (
                r#"{"type":"conversation.item.input_audio_transcription.completed","event_id":"event_CCXGRvtUVrax5SJAnNOWZ",
                   "item_id":"item_CCXGQ4e1ht4cOraEYcuR2","content_index":0,"transcript":"Hey, can you hear me?",
                   "usage":{"type":"tokens","total_tokens":22,"input_tokens":13,"input_token_details":{"text_tokens":0,"audio_tokens":13},"output_tokens":9}}"#,
                ServerEvent::InputTranscriptCompleted {
                    item_id: "item_CCXGQ4e1ht4cOraEYcuR2".into(),
                    transcript: "Hey, can you hear me?".into(),
                },
            ),
            (
                r#"{"event_id":"event_5556","type":"response.function_call_arguments.done","response_id":"resp_002",
                   "item_id":"fc_001","output_index":0,"call_id":"call_001","name":"get_weather",
                   "arguments":"{\"location\": \"San Francisco\"}"}"#,
                ServerEvent::FunctionCallDone(FunctionCall {
                    call_id: "call_001".into(),
                    name: "get_weather".into(),
                    arguments: "{\"location\": \"San Francisco\"}".into(),
                }),
            ),
            (
                r#"{"event_id":"event_890","type":"error","error":{"type":"invalid_request_error","code":"invalid_event",
                   "message":"The 'type' field is missing.","param":null,"event_id":"event_567"}}"#,
                ServerEvent::Error {
                    kind: "invalid_request_error".into(),
                    code: Some("invalid_event".into()),
                    message: "The 'type' field is missing.".into(),
                    event_id: Some("event_567".into()),
                },
            ),
            (
                r#"{"event_id":"event_5758","type":"rate_limits.updated","rate_limits":[]}"#,
                ServerEvent::Unknown {
                    kind: "rate_limits.updated".into(),
                },
            ),
            (
                r#"{"no_type":true}"#,
                ServerEvent::Unknown {
                    kind: String::new(),
                },
            ),
            (
                r#"{"type":"response.created","response":{"object":"realtime.response","id":"resp_9","status":"in_progress","output":[]}}"#,
                ServerEvent::ResponseCreated {
                    response_id: "resp_9".into(),
                },
            ),
            (
                r#"{"type":"conversation.item.input_audio_transcription.delta","item_id":"i1","content_index":0,"delta":"Olá"}"#,
                ServerEvent::InputTranscriptDelta {
                    item_id: "i1".into(),
                    delta: "Olá".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(ServerEvent::parse(text).unwrap(), expected, "{text}");
        }
        assert!(ServerEvent::parse("not json").is_err());
    }

    #[test]
    fn response_done_yields_its_function_calls() {
        let text = r#"{"type":"response.done","response":{"id":"resp_2","status":"completed",
            "status_details":null,"output":[
              {"type":"message","role":"assistant","content":[]},
              {"type":"function_call","call_id":"call_7","name":"transfer","arguments":"{}"}],
            "usage":{"total_tokens":10}}}"#;
        assert_eq!(
            ServerEvent::parse(text).unwrap(),
            ServerEvent::ResponseDone {
                response_id: "resp_2".into(),
                status: "completed".into(),
                reason: None,
                function_calls: vec![FunctionCall {
                    call_id: "call_7".into(),
                    name: "transfer".into(),
                    arguments: "{}".into()
                }],
            }
        );
        let cancelled = r#"{"type":"response.done","response":{"id":"r","status":"cancelled","status_details":{"type":"cancelled","reason":"turn_detected"},"output":[]}}"#;
        match ServerEvent::parse(cancelled).unwrap() {
            ServerEvent::ResponseDone { status, reason, .. } => {
                assert_eq!(status, "cancelled");
                assert_eq!(reason.as_deref(), Some("turn_detected"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncation_is_clamped_to_generated_audio() {
        // Played longer than generated (the known sample bug): clamp.
        assert_eq!(truncate_audio_end_ms(55_960, 13_600 * 8), 13_600);
        // Played less than generated: what was heard.
        assert_eq!(truncate_audio_end_ms(1_500, 16_000 * 8), 1_500);
        assert_eq!(truncate_audio_end_ms(0, 0), 0);

        let mut audio = AssistantAudio::default();
        assert!(audio.truncate(100).is_none(), "nothing playing");
        // One Twilio-sized frame: 160 bytes of µ-law = 20 ms (216 base64 chars).
        let frame = format!("{}AA==", "A".repeat(212));
        assert_eq!(base64_decoded_len(&frame), 160);
        assert!(audio.on_delta("item_1", &frame));
        assert!(!audio.on_delta("item_1", &frame));
        assert_eq!(audio.generated_ms(), 40);
        // The caller heard 10 s by the wall clock, but only 40 ms exist.
        assert_eq!(
            audio.truncate(10_000),
            Some(ClientEvent::TruncateItem {
                item_id: "item_1".into(),
                content_index: 0,
                audio_end_ms: 40,
            })
        );
        assert!(audio.truncate(10).is_none(), "forgotten after truncation");
        // A new item starts counting from zero.
        assert!(audio.on_delta("item_2", "AAAA"));
        assert_eq!(audio.item_id(), Some("item_2"));
        assert_eq!(audio.generated_ms(), 0);
        match audio.truncate(1) {
            Some(ClientEvent::TruncateItem { audio_end_ms, .. }) => assert_eq!(audio_end_ms, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn azure_hosts_are_detected() {
        assert!(is_azure("wss://my-res.openai.azure.com/openai/v1/realtime"));
        assert!(is_azure(
            "wss://my-res.cognitiveservices.azure.com:443/openai/v1/realtime"
        ));
        assert!(!is_azure("wss://api.openai.com/v1/realtime"));
        assert!(!is_azure("ws://127.0.0.1:9/v1/realtime"));
    }

    #[test]
    fn options_come_from_config() {
        let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap();
        assert!(matches!(
            RealtimeOptions::from_config(&config(&[])),
            Err(SpeechError::NotConfigured {
                missing: "OPENAI_API_KEY",
                ..
            })
        ));
        let o = RealtimeOptions::from_config(&config(&[("OPENAI_API_KEY", "sk-1")])).unwrap();
        assert!(matches!(&o.auth, RealtimeAuth::Bearer(k) if k.expose() == "sk-1"));
        assert_eq!(o.model, "gpt-realtime");
        let o = RealtimeOptions::from_config(&config(&[
            ("OPENAI_API_KEY", "sk-1"),
            ("AZURE_OPENAI_API_KEY", "az-1"),
            (
                "OPENAI_REALTIME_URL",
                "wss://r.openai.azure.com/openai/v1/realtime",
            ),
            ("OPENAI_REALTIME_MODEL", "my-deployment"),
        ]))
        .unwrap();
        assert!(matches!(&o.auth, RealtimeAuth::ApiKey(k) if k.expose() == "az-1"));
        assert_eq!(o.model, "my-deployment");
        let s = ConversationSettings::from_config(&config(&[]), "x".into(), vec![]);
        assert_eq!(s.voice, "marin");
        assert_eq!(s.language.as_deref(), Some("pt"));
    }
}
