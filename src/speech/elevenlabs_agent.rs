//! The ElevenLabs Conversational AI agent WebSocket (`/v1/convai/conversation`): the
//! whole conversation (STT, LLM, TTS, turn-taking) runs at ElevenLabs; we stream the
//! caller's µ-law in and the agent's µ-law out, answer pings, run client tools and
//! relay interruptions.
//!
//! A public agent is reached with `?agent_id=`; when an API key is configured, a signed
//! URL is fetched first (`GET /v1/convai/conversation/get-signed-url`, header
//! `xi-api-key`), which also works for private agents. The signed URL is a credential
//! and is never logged.
//!
//! The agent's audio formats are set on the agent itself, not per call: both must be
//! `ulaw_8000` for Twilio. [`AgentEvent::Metadata`] reports them and a mismatch is
//! logged loudly.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ws::{self, WsLink};
use super::{Service, SpeechError, http_base, query, ws_base};
use crate::config::{Config, Secret};
use crate::text::base64::Base64Str;

const SERVICE: Service = Service::ElevenLabsAgent;
/// The only audio format Twilio Media Streams carries.
pub const TWILIO_FORMAT: &str = "ulaw_8000";

/// Which agent, and how to reach it.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// `wss://api.elevenlabs.io` (or `https://`, or a regional host).
    pub api_base: String,
    /// With a key, a signed URL is fetched first (private agents need it).
    pub api_key: Option<Secret>,
    pub agent_id: String,
    /// Bounds the signed-URL request and the socket opening, each.
    pub connect_timeout: Duration,
}

impl AgentOptions {
    /// From `ELEVENLABS_AGENT_ID`, `ELEVENLABS_API_KEY`, `ELEVENLABS_API_BASE`.
    pub fn from_config(config: &Config) -> Result<Self, SpeechError> {
        let speech = &config.speech;
        Ok(Self {
            api_base: speech.elevenlabs_api_base.clone(),
            api_key: speech.elevenlabs_api_key.clone(),
            agent_id: speech
                .elevenlabs_agent_id
                .clone()
                .ok_or(SpeechError::NotConfigured {
                    service: SERVICE,
                    missing: "ELEVENLABS_AGENT_ID",
                })?,
            connect_timeout: speech.connect_timeout,
        })
    }
}

/// `conversation_initiation_client_data`: per-call variables and overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConversationInit {
    /// Values for the agent's `{{variables}}` (e.g. `caller_number`, `call_sid`).
    pub dynamic_variables: BTreeMap<String, String>,
    /// `conversation_config_override` (ignored unless allowed in the agent's security
    /// settings), e.g. `{"agent":{"language":"pt","first_message":"Olá!"}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_config_override: Option<Value>,
}

/// What the agent sends.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEvent {
    /// The conversation started; formats should both be `ulaw_8000`.
    Metadata {
        conversation_id: String,
        agent_output_audio_format: String,
        user_input_audio_format: String,
    },
    /// Base64 audio in the agent's output format (µ-law: Twilio's payload as is).
    Audio {
        audio: String,
        event_id: Option<u64>,
    },
    /// The caller interrupted: clear Twilio's buffer. Audio of earlier events that
    /// arrives later is dropped by the client.
    Interruption {
        event_id: Option<u64>,
    },
    AgentResponse {
        text: String,
    },
    AgentResponseCorrection {
        original: String,
        corrected: String,
    },
    UserTranscript {
        text: String,
    },
    /// Run a client tool, then [`ElevenLabsAgent::send_tool_result`].
    ClientToolCall {
        tool_call_id: String,
        tool_name: String,
        parameters: Value,
    },
    /// Any other type (`vad_score`, `internal_tentative_agent_response` ...).
    Unknown {
        kind: String,
    },
}

/// A parsed server message: an event, or a ping to answer.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentMessage {
    Event(AgentEvent),
    /// `ping` with its `event_id` (answered with `pong` carrying the same id).
    Ping {
        event_id: Value,
    },
}

impl AgentMessage {
    /// Reads one text frame, dispatching on `type`: unknown types become
    /// [`AgentEvent::Unknown`], and so does a known type whose fields do not fit.
    /// Only text that is not a JSON object is an error.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        match serde_json::from_str::<wire::Message>(text) {
            Ok(wire::Message::Other) | Err(_) => {
                let kind: wire::Kind = serde_json::from_str(text)?;
                Ok(Self::Event(AgentEvent::Unknown { kind: kind.kind }))
            }
            Ok(message) => Ok(message.into()),
        }
    }
}

/// The agent's messages as they come over the wire: each type carries its
/// fields in an object named after it (`audio` → `audio_event`).
mod wire {
    use serde::Deserialize;
    use serde_json::Value;

    use super::{AgentEvent, AgentMessage};

    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub(super) enum Message {
        Ping {
            #[serde(default)]
            ping_event: EventId<Value>,
        },
        ConversationInitiationMetadata {
            #[serde(default)]
            conversation_initiation_metadata_event: Metadata,
        },
        Audio {
            #[serde(default)]
            audio_event: Audio,
        },
        Interruption {
            #[serde(default)]
            interruption_event: EventId<Option<u64>>,
        },
        AgentResponse {
            #[serde(default)]
            agent_response_event: AgentResponse,
        },
        AgentResponseCorrection {
            #[serde(default)]
            agent_response_correction_event: Correction,
        },
        UserTranscript {
            #[serde(default)]
            user_transcription_event: UserTranscript,
        },
        ClientToolCall {
            #[serde(default)]
            client_tool_call: ToolCall,
        },
        #[serde(other)]
        Other,
    }

    /// Just the type, of a message that fits none of the above.
    #[derive(Deserialize)]
    pub(super) struct Kind {
        #[serde(rename = "type", default)]
        pub(super) kind: String,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub(super) struct EventId<T: Default> {
        event_id: T,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub(super) struct Metadata {
        conversation_id: String,
        agent_output_audio_format: String,
        user_input_audio_format: String,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub(super) struct Audio {
        audio_base_64: String,
        event_id: Option<u64>,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub(super) struct AgentResponse {
        agent_response: String,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub(super) struct Correction {
        original_agent_response: String,
        corrected_agent_response: String,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub(super) struct UserTranscript {
        user_transcript: String,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub(super) struct ToolCall {
        tool_call_id: String,
        tool_name: String,
        parameters: Option<Value>,
    }

    impl From<Message> for AgentMessage {
        fn from(message: Message) -> Self {
            let event = match message {
                Message::Ping { ping_event } => {
                    return Self::Ping {
                        event_id: ping_event.event_id,
                    };
                }
                Message::ConversationInitiationMetadata {
                    conversation_initiation_metadata_event: m,
                } => AgentEvent::Metadata {
                    conversation_id: m.conversation_id,
                    agent_output_audio_format: m.agent_output_audio_format,
                    user_input_audio_format: m.user_input_audio_format,
                },
                Message::Audio { audio_event: a } => AgentEvent::Audio {
                    audio: a.audio_base_64,
                    event_id: a.event_id,
                },
                Message::Interruption { interruption_event } => AgentEvent::Interruption {
                    event_id: interruption_event.event_id,
                },
                Message::AgentResponse {
                    agent_response_event,
                } => AgentEvent::AgentResponse {
                    text: agent_response_event.agent_response,
                },
                Message::AgentResponseCorrection {
                    agent_response_correction_event: c,
                } => AgentEvent::AgentResponseCorrection {
                    original: c.original_agent_response,
                    corrected: c.corrected_agent_response,
                },
                Message::UserTranscript {
                    user_transcription_event,
                } => AgentEvent::UserTranscript {
                    text: user_transcription_event.user_transcript,
                },
                Message::ClientToolCall {
                    client_tool_call: c,
                } => AgentEvent::ClientToolCall {
                    tool_call_id: c.tool_call_id,
                    tool_name: c.tool_name,
                    parameters: c
                        .parameters
                        .unwrap_or_else(|| Value::Object(Default::default())),
                },
                // `from_value` names the type.
                Message::Other => AgentEvent::Unknown {
                    kind: String::new(),
                },
            };
            Self::Event(event)
        }
    }
}

#[derive(Deserialize)]
struct SignedUrl {
    signed_url: String,
}

/// One agent conversation. Send with the `&self` methods; read with the cancel-safe
/// [`ElevenLabsAgent::next_event`], which also answers pings.
pub struct ElevenLabsAgent {
    link: WsLink,
    /// Audio of events up to this id is stale after an interruption.
    interrupted_up_to: Option<u64>,
}

impl ElevenLabsAgent {
    /// Connects (through a signed URL when a key is set) and sends
    /// `conversation_initiation_client_data`.
    pub async fn connect(
        options: &AgentOptions,
        init: &ConversationInit,
    ) -> Result<Self, SpeechError> {
        let url = match &options.api_key {
            Some(key) => signed_url(options, key).await?,
            None => format!(
                "{}/v1/convai/conversation?{}",
                ws_base(&options.api_base),
                query(&[("agent_id", options.agent_id.as_str())])
            ),
        };
        let link = ws::open(SERVICE, &url, None, options.connect_timeout).await?;
        let mut message = serde_json::to_value(init).unwrap_or_else(|_| json!({}));
        message["type"] = json!("conversation_initiation_client_data");
        link.send_text(message.to_string()).await?;
        Ok(Self {
            link,
            interrupted_up_to: None,
        })
    }

    /// Queues caller audio (base64 in the agent's input format) without waiting; a
    /// full queue drops the frame ([`SpeechError::QueueFull`]).
    pub fn send_audio(&self, payload_b64: Base64Str<'_>) -> Result<(), SpeechError> {
        let mut text = String::with_capacity(24 + payload_b64.as_str().len());
        text.push_str(r#"{"user_audio_chunk":"#);
        payload_b64.push_json(&mut text);
        text.push('}');
        self.link.try_send_text(text)
    }

    /// The result of a client tool call.
    pub async fn send_tool_result(
        &self,
        tool_call_id: &str,
        result: &str,
        is_error: bool,
    ) -> Result<(), SpeechError> {
        self.link
            .send_text(
                json!({"type": "client_tool_result", "tool_call_id": tool_call_id,
                       "result": result, "is_error": is_error})
                .to_string(),
            )
            .await
    }

    /// Context the agent should know without answering it (e.g. keypad digits).
    pub async fn send_contextual_update(&self, text: &str) -> Result<(), SpeechError> {
        self.link
            .send_text(json!({"type": "contextual_update", "text": text}).to_string())
            .await
    }

    /// The next event. Cancel-safe. Pings are answered here; stale audio (older than
    /// the last interruption) is dropped; malformed messages are logged and skipped.
    pub async fn next_event(&mut self) -> Result<AgentEvent, SpeechError> {
        loop {
            let text = self.link.next_text().await?;
            let message = match AgentMessage::parse(text.as_str()) {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(service = %SERVICE, error = %e, "skipping a malformed server message");
                    continue;
                }
            };
            let event = match message {
                AgentMessage::Ping { event_id } => {
                    let pong = json!({"type": "pong", "event_id": event_id}).to_string();
                    if let Err(e) = self.link.try_send_text(pong) {
                        tracing::warn!(service = %SERVICE, error = %e, "could not answer a ping");
                    }
                    continue;
                }
                AgentMessage::Event(event) => event,
            };
            match &event {
                AgentEvent::Metadata {
                    agent_output_audio_format,
                    user_input_audio_format,
                    ..
                } if !formats_fit_twilio(&event) => {
                    tracing::error!(
                        service = %SERVICE,
                        agent_output_audio_format = %agent_output_audio_format,
                        user_input_audio_format = %user_input_audio_format,
                        "the ElevenLabs agent must use ulaw_8000 for both input and output audio, or callers hear noise and are not understood; set both formats on the agent (see the README)"
                    );
                }
                AgentEvent::Interruption { event_id: Some(id) } => {
                    self.interrupted_up_to =
                        Some(self.interrupted_up_to.map_or(*id, |up_to| up_to.max(*id)));
                }
                AgentEvent::Audio {
                    event_id: Some(id), ..
                } if self.interrupted_up_to.is_some_and(|up_to| *id <= up_to) => {
                    tracing::trace!(service = %SERVICE, event_id = id, "dropping audio from before an interruption");
                    continue;
                }
                AgentEvent::Unknown { kind } => {
                    tracing::trace!(service = %SERVICE, kind = %kind, "unhandled agent event");
                }
                _ => {}
            }
            return Ok(event);
        }
    }

    /// Closes the socket after the queued messages have gone out.
    pub async fn close(self) {
        self.link.close().await
    }
}

/// Whether both formats of a metadata event suit Twilio.
pub fn formats_fit_twilio(event: &AgentEvent) -> bool {
    matches!(event, AgentEvent::Metadata { agent_output_audio_format, user_input_audio_format, .. }
        if agent_output_audio_format == TWILIO_FORMAT && user_input_audio_format == TWILIO_FORMAT)
}

/// Fetches a signed conversation URL with the API key.
async fn signed_url(options: &AgentOptions, key: &Secret) -> Result<String, SpeechError> {
    let fail = |message: String| SpeechError::SignedUrl {
        service: SERVICE,
        message,
    };
    let url = format!(
        "{}/v1/convai/conversation/get-signed-url?{}",
        http_base(&options.api_base),
        query(&[("agent_id", options.agent_id.as_str())])
    );
    let client = reqwest::Client::builder()
        .timeout(options.connect_timeout)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let response = client
        .get(url)
        .header("xi-api-key", key.expose())
        .send()
        .await
        .map_err(|e| {
            fail(if e.is_timeout() {
                "timed out".into()
            } else {
                e.without_url().to_string()
            })
        })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(fail(format!("HTTP {}: {body}", status.as_u16())));
    }
    let signed: SignedUrl = response
        .json()
        .await
        .map_err(|e| fail(format!("unexpected answer: {}", e.without_url())))?;
    if !(signed.signed_url.starts_with("wss://") || signed.signed_url.starts_with("ws://")) {
        return Err(fail("the signed URL is not a WebSocket URL".into()));
    }
    Ok(signed.signed_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AgentMessage {
        AgentMessage::parse(text).unwrap()
    }

    #[test]
    fn parses_the_reference_fixtures() {
        let cases = [
            (
                r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":
                   {"conversation_id":"conv_123","agent_output_audio_format":"ulaw_8000","user_input_audio_format":"ulaw_8000"}}"#,
                AgentEvent::Metadata {
                    conversation_id: "conv_123".into(),
                    agent_output_audio_format: "ulaw_8000".into(),
                    user_input_audio_format: "ulaw_8000".into(),
                },
            ),
            (
                r#"{"type":"audio","audio_event":{"audio_base_64":"//7+","event_id":1}}"#,
                AgentEvent::Audio {
                    audio: "//7+".into(),
                    event_id: Some(1),
                },
            ),
            (
                r#"{"type":"interruption","interruption_event":{"event_id":1}}"#,
                AgentEvent::Interruption { event_id: Some(1) },
            ),
            (
                r#"{"type":"agent_response","agent_response_event":{"agent_response":"Olá!"}}"#,
                AgentEvent::AgentResponse {
                    text: "Olá!".into(),
                },
            ),
            (
                r#"{"type":"agent_response_correction","agent_response_correction_event":{"original_agent_response":"Olá, tudo","corrected_agent_response":"Olá"}}"#,
                AgentEvent::AgentResponseCorrection {
                    original: "Olá, tudo".into(),
                    corrected: "Olá".into(),
                },
            ),
            (
                r#"{"type":"user_transcript","user_transcription_event":{"user_transcript":"Quero marcar"}}"#,
                AgentEvent::UserTranscript {
                    text: "Quero marcar".into(),
                },
            ),
            (
                r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"check_account_status","tool_call_id":"tool_call_123","parameters":{"user_id":"user_123"}}}"#,
                AgentEvent::ClientToolCall {
                    tool_call_id: "tool_call_123".into(),
                    tool_name: "check_account_status".into(),
                    parameters: json!({"user_id": "user_123"}),
                },
            ),
            (
                r#"{"type":"vad_score","vad_score_event":{"vad_score":0.95}}"#,
                AgentEvent::Unknown {
                    kind: "vad_score".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), AgentMessage::Event(expected), "{text}");
        }
        assert_eq!(
            parse(r#"{"type":"ping","ping_event":{"event_id":12345,"ping_ms":50}}"#),
            AgentMessage::Ping {
                event_id: json!(12345)
            }
        );
    }

    #[test]
    fn misfit_fields_are_unknown_and_only_non_json_is_an_error() {
        assert_eq!(
            AgentMessage::parse(r#"{"type":"audio","audio_event":"oops"}"#).unwrap(),
            AgentMessage::Event(AgentEvent::Unknown {
                kind: "audio".into()
            })
        );
        assert_eq!(
            AgentMessage::parse(r#"{"type":"vad_score","vad_score_event":{"vad_score":0.9}}"#)
                .unwrap(),
            AgentMessage::Event(AgentEvent::Unknown {
                kind: "vad_score".into()
            })
        );
        assert_eq!(
            AgentMessage::parse(r#"{"type":"interruption"}"#).unwrap(),
            AgentMessage::Event(AgentEvent::Interruption { event_id: None })
        );
        assert!(AgentMessage::parse("not json").is_err());
    }

    #[test]
    fn initiation_data_serializes_variables_and_overrides() {
        let init = ConversationInit {
            dynamic_variables: BTreeMap::from([
                ("caller_number".to_string(), "+5511999990000".to_string()),
                ("call_sid".to_string(), "CA123".to_string()),
            ]),
            conversation_config_override: Some(json!({"agent": {"language": "pt"}})),
        };
        assert_eq!(
            serde_json::to_value(&init).unwrap(),
            json!({"dynamic_variables": {"call_sid": "CA123", "caller_number": "+5511999990000"},
                   "conversation_config_override": {"agent": {"language": "pt"}}})
        );
    }

    #[test]
    fn formats_are_checked() {
        let event = |out: &str| AgentEvent::Metadata {
            conversation_id: String::new(),
            agent_output_audio_format: out.into(),
            user_input_audio_format: "ulaw_8000".into(),
        };
        assert!(formats_fit_twilio(&event("ulaw_8000")));
        assert!(!formats_fit_twilio(&event("pcm_16000")));
    }
}
