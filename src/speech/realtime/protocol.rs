//! The OpenAI Realtime wire protocol (GA), both directions: the session settings
//! and client events we send ([`ClientEvent`], serde), and the server events we
//! read ([`ServerEvent::parse`], lenient: unknown types become
//! [`ServerEvent::Unknown`]). No I/O. May import serde and the speech module's
//! small parsing helpers.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::config::Config;
use crate::speech::str_field;
use crate::text::base64::Base64Str;

// ---------------------------------------------------------------------------------
// Client events

/// `session.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Realtime,
    Transcription,
}

/// An audio format object (`{"type":"audio/pcmu"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AudioFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

impl AudioFormat {
    /// G.711 µ-law 8 kHz, what Twilio Media Streams carries.
    pub fn pcmu() -> Self {
        Self {
            kind: "audio/pcmu".into(),
        }
    }
}

/// `audio.input.turn_detection`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TurnDetection {
    /// `server_vad` or `semantic_vad`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_padding_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_duration_ms: Option<u32>,
    /// Conversation mode only: answer automatically at the end of a turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_response: Option<bool>,
    /// Conversation mode only: cancel the response in flight when the caller speaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupt_response: Option<bool>,
}

impl TurnDetection {
    /// Server VAD with OpenAI's defaults.
    pub fn server_vad() -> Self {
        Self {
            kind: "server_vad".into(),
            threshold: None,
            prefix_padding_ms: None,
            silence_duration_ms: None,
            create_response: None,
            interrupt_response: None,
        }
    }
}

/// `audio.input.transcription`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputTranscription {
    pub model: String,
    /// ISO 639-1 (`pt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// `audio.input.noise_reduction` (`near_field` or `far_field`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoiseReduction {
    #[serde(rename = "type")]
    pub kind: String,
}

/// `audio.input`. In a partial update every field is optional: what is absent stays
/// as it was.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AudioInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription: Option<InputTranscription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_detection: Option<TurnDetection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_reduction: Option<NoiseReduction>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AudioOutput {
    pub format: AudioFormat,
    pub voice: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionAudio {
    pub input: AudioInput,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<AudioOutput>,
}

/// A function the model may call: `{"type":"function","name",…}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename = "function")]
pub struct FunctionTool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments, shared by every call (it is the agent's).
    pub parameters: crate::text::SharedJson,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    /// Force this function.
    Function(String),
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::None => s.serialize_str("none"),
            Self::Required => s.serialize_str("required"),
            Self::Function(name) => {
                serde_json::json!({"type": "function", "name": name}).serialize(s)
            }
        }
    }
}

/// The `session` object of `session.update` (GA shape). Only the fields present are
/// updated, so a mid-session update leaves the rest `None` (see
/// [`Session::language_switch`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Session {
    #[serde(rename = "type")]
    pub kind: SessionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<SessionAudio>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<FunctionTool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

/// What a speech-to-speech session should be like.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversationSettings {
    pub instructions: String,
    pub voice: String,
    /// ISO 639-1 language of the caller (`pt`), for the input transcription.
    pub language: Option<String>,
    /// Model transcribing the caller (`None`: no caller transcripts).
    pub transcription_model: Option<String>,
    pub tools: Vec<FunctionTool>,
    pub tool_choice: ToolChoice,
    pub turn_detection: TurnDetection,
    pub noise_reduction: Option<String>,
}

impl ConversationSettings {
    /// Settings from the configuration, with these instructions and tools.
    pub fn from_config(config: &Config, instructions: String, tools: Vec<FunctionTool>) -> Self {
        Self {
            instructions,
            voice: config.speech.openai_realtime_voice.clone(),
            language: Some(crate::speech::language_code(&config.relay.language)),
            transcription_model: Some(config.speech.openai_transcription_model.clone()),
            tools,
            tool_choice: ToolChoice::Auto,
            turn_detection: TurnDetection::server_vad(),
            noise_reduction: None,
        }
    }

    /// `audio.input.transcription`: the caller transcribed in `language`, when a
    /// transcription model is set.
    fn input_transcription(&self) -> Option<InputTranscription> {
        self.transcription_model
            .as_ref()
            .map(|model| InputTranscription {
                model: model.clone(),
                language: self.language.clone(),
                prompt: None,
            })
    }
}

/// What a transcription-only session should be like.
#[derive(Clone, Debug, PartialEq)]
pub struct TranscriptionSettings {
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub turn_detection: TurnDetection,
    pub noise_reduction: Option<String>,
}

impl TranscriptionSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            model: config.speech.openai_transcription_model.clone(),
            language: Some(crate::speech::language_code(&config.relay.language)),
            prompt: None,
            turn_detection: TurnDetection::server_vad(),
            noise_reduction: None,
        }
    }
}

impl Session {
    /// A speech-to-speech session with µ-law in and out.
    pub fn conversation(model: &str, settings: &ConversationSettings) -> Self {
        Self {
            kind: SessionKind::Realtime,
            model: Some(model.to_string()),
            output_modalities: Some(vec!["audio".into()]),
            instructions: Some(settings.instructions.clone()),
            audio: Some(SessionAudio {
                input: AudioInput {
                    format: Some(AudioFormat::pcmu()),
                    transcription: settings.input_transcription(),
                    turn_detection: Some(settings.turn_detection.clone()),
                    noise_reduction: settings
                        .noise_reduction
                        .clone()
                        .map(|kind| NoiseReduction { kind }),
                },
                output: Some(AudioOutput {
                    format: AudioFormat::pcmu(),
                    voice: settings.voice.clone(),
                    speed: None,
                }),
            }),
            tools: Some(settings.tools.clone()),
            tool_choice: Some(settings.tool_choice.clone()),
        }
    }

    /// The partial update of a speech-to-speech session that moves it to another
    /// language: `settings`' instructions, and the caller's transcription in
    /// `settings`' language (same model). Nothing else is sent, so the rest stays as
    /// it was: not the voice or the model (OpenAI refuses to change them once the
    /// model has spoken), nor the tools, formats or turn detection.
    pub fn language_switch(settings: &ConversationSettings) -> Self {
        Self {
            kind: SessionKind::Realtime,
            model: None,
            output_modalities: None,
            instructions: Some(settings.instructions.clone()),
            audio: settings
                .input_transcription()
                .map(|transcription| SessionAudio {
                    input: AudioInput {
                        format: None,
                        transcription: Some(transcription),
                        turn_detection: None,
                        noise_reduction: None,
                    },
                    output: None,
                }),
            tools: None,
            tool_choice: None,
        }
    }

    /// A transcription-only session reading µ-law.
    pub fn transcription(settings: &TranscriptionSettings) -> Self {
        Self {
            kind: SessionKind::Transcription,
            model: None,
            output_modalities: None,
            instructions: None,
            audio: Some(SessionAudio {
                input: AudioInput {
                    format: Some(AudioFormat::pcmu()),
                    transcription: Some(InputTranscription {
                        model: settings.model.clone(),
                        language: settings.language.clone(),
                        prompt: settings.prompt.clone(),
                    }),
                    turn_detection: Some(settings.turn_detection.clone()),
                    noise_reduction: settings
                        .noise_reduction
                        .clone()
                        .map(|kind| NoiseReduction { kind }),
                },
                output: None,
            }),
            tools: None,
            tool_choice: None,
        }
    }
}

/// `response.create` parameters (only what a phone call needs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResponseParams {
    /// Instructions for this response only (e.g. the greeting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// A content part of a message item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    InputText { text: String },
}

/// A conversation item the client adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Message {
        role: String,
        content: Vec<ContentPart>,
    },
    FunctionCallOutput {
        call_id: String,
        output: String,
    },
}

impl Item {
    pub fn user_text(text: impl Into<String>) -> Self {
        Self::Message {
            role: "user".into(),
            content: vec![ContentPart::InputText { text: text.into() }],
        }
    }
}

/// Everything the client sends (GA names).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ClientEvent {
    #[serde(rename = "session.update")]
    SessionUpdate { session: Box<Session> },
    /// Base64 audio in the session's input format, passed through unchanged.
    #[serde(rename = "input_audio_buffer.append")]
    AppendAudio { audio: String },
    #[serde(rename = "input_audio_buffer.commit")]
    CommitAudio,
    #[serde(rename = "input_audio_buffer.clear")]
    ClearAudio,
    #[serde(rename = "response.create")]
    CreateResponse {
        #[serde(skip_serializing_if = "Option::is_none")]
        response: Option<ResponseParams>,
    },
    #[serde(rename = "response.cancel")]
    CancelResponse {
        #[serde(skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
    #[serde(rename = "conversation.item.create")]
    CreateItem { item: Item },
    #[serde(rename = "conversation.item.truncate")]
    TruncateItem {
        item_id: String,
        content_index: u32,
        audio_end_ms: u64,
    },
}

impl ClientEvent {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `AppendAudio { audio }`'s text, written directly: it is sent 50 times a
    /// second per call.
    pub fn append_audio_json(audio: Base64Str<'_>) -> String {
        let mut text = String::with_capacity(48 + audio.as_str().len());
        text.push_str(r#"{"type":"input_audio_buffer.append","audio":"#);
        audio.push_json(&mut text);
        text.push('}');
        text
    }
}

// ---------------------------------------------------------------------------------
// Server events

/// A function call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionCall {
    pub call_id: String,
    pub name: String,
    /// The arguments as the JSON text the model produced (may be invalid JSON).
    pub arguments: String,
}

/// What the server says, parsed leniently (missing strings become empty).
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// `session.created` (or `transcription_session.created`).
    SessionCreated {
        session: Value,
    },
    /// `session.updated` (or `transcription_session.updated`): the effective config.
    SessionUpdated {
        session: Value,
    },
    /// The caller started speaking: barge-in.
    SpeechStarted {
        item_id: String,
        audio_start_ms: Option<u64>,
    },
    SpeechStopped {
        item_id: String,
        audio_end_ms: Option<u64>,
    },
    ResponseCreated {
        response_id: String,
    },
    /// `response.output_audio.delta`: base64 audio of an assistant item.
    AudioDelta {
        response_id: String,
        item_id: String,
        delta: String,
    },
    AudioDone {
        item_id: String,
    },
    /// `response.output_audio_transcript.delta`: what the assistant is saying.
    TranscriptDelta {
        item_id: String,
        delta: String,
    },
    TranscriptDone {
        item_id: String,
        transcript: String,
    },
    /// `conversation.item.input_audio_transcription.delta`: the caller, in progress.
    InputTranscriptDelta {
        item_id: String,
        delta: String,
    },
    /// `conversation.item.input_audio_transcription.completed`: what the caller said.
    InputTranscriptCompleted {
        item_id: String,
        transcript: String,
    },
    InputTranscriptFailed {
        item_id: String,
        message: String,
    },
    /// A key pressed on a SIP call (only on a SIP sideband).
    Dtmf {
        digits: String,
    },
    /// `response.function_call_arguments.done`.
    FunctionCallDone(FunctionCall),
    /// `response.done`. From [`super::RealtimeClient::next_event`], `function_calls` holds only
    /// the calls not already reported by [`ServerEvent::FunctionCallDone`] (the
    /// fallback), so every call is seen exactly once.
    ResponseDone {
        response_id: String,
        /// `completed`, `cancelled`, `failed` or `incomplete`.
        status: String,
        /// `status_details.reason` (`turn_detected`, `client_cancelled` ...).
        reason: Option<String>,
        function_calls: Vec<FunctionCall>,
    },
    ItemTruncated {
        item_id: String,
        audio_end_ms: u64,
    },
    /// A server `error` event; most are recoverable and the socket stays open.
    Error {
        kind: String,
        code: Option<String>,
        message: String,
        event_id: Option<String>,
    },
    /// Any other type (rate limits, item bookkeeping, future events).
    Unknown {
        kind: String,
    },
}

impl ServerEvent {
    /// Parses one server message. Only invalid JSON is an error.
    ///
    /// The streamed deltas (most of what a reply sends, one per 20–100 ms of
    /// audio) are read straight into their fields; everything else, and any
    /// delta whose fields are not all strings, goes through a JSON tree.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        if let Ok(streamed) = serde_json::from_str::<Streamed<'_>>(text)
            && let Some(event) = streamed.event()
        {
            return Ok(event);
        }
        let value: Value = serde_json::from_str(text)?;
        Ok(Self::from_value(&value))
    }

    /// Dispatches on `type`; unknown or missing types become [`ServerEvent::Unknown`].
    pub fn from_value(v: &Value) -> Self {
        let s = |key: &str| str_field(v, key).unwrap_or_default();
        let kind = s("type");
        match kind.as_str() {
            "session.created" | "transcription_session.created" => Self::SessionCreated {
                session: v.get("session").cloned().unwrap_or(Value::Null),
            },
            "session.updated" | "transcription_session.updated" => Self::SessionUpdated {
                session: v.get("session").cloned().unwrap_or(Value::Null),
            },
            "input_audio_buffer.speech_started" => Self::SpeechStarted {
                item_id: s("item_id"),
                audio_start_ms: v.get("audio_start_ms").and_then(Value::as_u64),
            },
            "input_audio_buffer.speech_stopped" => Self::SpeechStopped {
                item_id: s("item_id"),
                audio_end_ms: v.get("audio_end_ms").and_then(Value::as_u64),
            },
            "response.created" => Self::ResponseCreated {
                response_id: v
                    .get("response")
                    .and_then(|r| str_field(r, "id"))
                    .unwrap_or_default(),
            },
            "response.output_audio.delta" => Self::AudioDelta {
                response_id: s("response_id"),
                item_id: s("item_id"),
                delta: s("delta"),
            },
            "response.output_audio.done" => Self::AudioDone {
                item_id: s("item_id"),
            },
            "response.output_audio_transcript.delta" => Self::TranscriptDelta {
                item_id: s("item_id"),
                delta: s("delta"),
            },
            "response.output_audio_transcript.done" => Self::TranscriptDone {
                item_id: s("item_id"),
                transcript: s("transcript"),
            },
            "conversation.item.input_audio_transcription.delta" => Self::InputTranscriptDelta {
                item_id: s("item_id"),
                delta: s("delta"),
            },
            "conversation.item.input_audio_transcription.completed" => {
                Self::InputTranscriptCompleted {
                    item_id: s("item_id"),
                    transcript: s("transcript"),
                }
            }
            "conversation.item.input_audio_transcription.failed" => Self::InputTranscriptFailed {
                item_id: s("item_id"),
                message: v
                    .get("error")
                    .and_then(|e| str_field(e, "message"))
                    .unwrap_or_default(),
            },
            // A SIP call's keypad (Realtime; GPT-Live names it `transport.dtmf.received`).
            "input_audio_buffer.dtmf_event_received" | "transport.dtmf.received" => Self::Dtmf {
                digits: ["event", "digit", "digits"]
                    .iter()
                    .find_map(|key| str_field(v, key))
                    .unwrap_or_default(),
            },
            "response.function_call_arguments.done" => Self::FunctionCallDone(FunctionCall {
                call_id: s("call_id"),
                name: s("name"),
                arguments: s("arguments"),
            }),
            "response.done" => {
                let response = v.get("response").unwrap_or(&Value::Null);
                let function_calls = response
                    .get("output")
                    .and_then(Value::as_array)
                    .map(|items| {
                        items
                            .iter()
                            .filter(|item| {
                                item.get("type").and_then(Value::as_str) == Some("function_call")
                            })
                            .map(|item| FunctionCall {
                                call_id: str_field(item, "call_id").unwrap_or_default(),
                                name: str_field(item, "name").unwrap_or_default(),
                                arguments: str_field(item, "arguments").unwrap_or_default(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Self::ResponseDone {
                    response_id: str_field(response, "id").unwrap_or_default(),
                    status: str_field(response, "status").unwrap_or_default(),
                    reason: response
                        .get("status_details")
                        .and_then(|d| str_field(d, "reason")),
                    function_calls,
                }
            }
            "conversation.item.truncated" => Self::ItemTruncated {
                item_id: s("item_id"),
                audio_end_ms: v.get("audio_end_ms").and_then(Value::as_u64).unwrap_or(0),
            },
            "error" => {
                let error = v.get("error").unwrap_or(&Value::Null);
                Self::Error {
                    kind: str_field(error, "type").unwrap_or_default(),
                    code: str_field(error, "code"),
                    message: str_field(error, "message").unwrap_or_default(),
                    event_id: str_field(error, "event_id"),
                }
            }
            _ => Self::Unknown { kind },
        }
    }
}

/// The fields of a streamed delta event, borrowed from the message where they
/// hold no escapes; other fields are skipped unread.
#[derive(Deserialize)]
struct Streamed<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    response_id: Cow<'a, str>,
    #[serde(borrow, default)]
    item_id: Cow<'a, str>,
    #[serde(borrow)]
    delta: Option<Cow<'a, str>>,
}

impl Streamed<'_> {
    /// The event, when this is one of the delta types (with its `delta`).
    fn event(self) -> Option<ServerEvent> {
        enum Kind {
            Audio,
            Transcript,
            InputTranscript,
        }
        let kind = match &*self.kind {
            "response.output_audio.delta" => Kind::Audio,
            "response.output_audio_transcript.delta" => Kind::Transcript,
            "conversation.item.input_audio_transcription.delta" => Kind::InputTranscript,
            _ => return None,
        };
        let delta = self.delta?.into_owned();
        let item_id = self.item_id.into_owned();
        Some(match kind {
            Kind::Audio => ServerEvent::AudioDelta {
                response_id: self.response_id.into_owned(),
                item_id,
                delta,
            },
            Kind::Transcript => ServerEvent::TranscriptDelta { item_id, delta },
            Kind::InputTranscript => ServerEvent::InputTranscriptDelta { item_id, delta },
        })
    }
}
