//! ElevenLabs Scribe v2 realtime speech-to-text (`/v1/speech-to-text/realtime`):
//! the caller's µ-law goes in as `input_audio_chunk` messages (`audio_format=ulaw_8000`,
//! so Twilio's payload is sent unchanged), and partial and committed transcripts come
//! back. With `commit_strategy=vad` the server decides where an utterance ends.

use std::time::Duration;

use serde_json::{Value, json};

use super::ws::{self, WsLink};
use super::{Service, SpeechError, query, str_field, ws_base};
use crate::config::{Config, Secret};
use crate::text::base64::Base64Str;

const SERVICE: Service = Service::ElevenLabsStt;

/// Server `message_type`s that report an error.
const ERROR_TYPES: &[&str] = &[
    "error",
    "auth_error",
    "quota_exceeded",
    "commit_throttled",
    "transcriber_error",
    "unaccepted_terms",
    "rate_limited",
    "input_error",
    "invalid_request",
    "queue_overflow",
    "resource_exhausted",
    "session_time_limit_exceeded",
    "chunk_size_exceeded",
    "insufficient_audio_activity",
];

/// Where and how to transcribe.
#[derive(Clone, Debug)]
pub struct SttOptions {
    /// `wss://api.elevenlabs.io` (or `https://`, or a regional host).
    pub api_base: String,
    pub api_key: Secret,
    pub model_id: String,
    /// ISO 639-1 (`pt`); `None` lets the model detect the language.
    pub language_code: Option<String>,
    /// Silence (seconds) that ends an utterance with VAD commits (0.3–3.0).
    pub vad_silence_threshold_secs: Option<f32>,
    pub connect_timeout: Duration,
}

impl SttOptions {
    /// From `ELEVENLABS_API_KEY`, `ELEVENLABS_API_BASE`, `ELEVENLABS_STT_MODEL`,
    /// `LANGUAGE`.
    pub fn from_config(config: &Config) -> Result<Self, SpeechError> {
        let speech = &config.speech;
        Ok(Self {
            api_base: speech.elevenlabs_api_base.clone(),
            api_key: speech
                .elevenlabs_api_key
                .clone()
                .ok_or(SpeechError::NotConfigured {
                    service: SERVICE,
                    missing: "ELEVENLABS_API_KEY",
                })?,
            model_id: speech.elevenlabs_stt_model.clone(),
            language_code: Some(super::language_code(&config.relay.language)),
            vad_silence_threshold_secs: None,
            connect_timeout: speech.connect_timeout,
        })
    }

    fn url(&self) -> String {
        let silence = self.vad_silence_threshold_secs.map(|s| s.to_string());
        let mut pairs = vec![
            ("model_id", self.model_id.as_str()),
            ("audio_format", "ulaw_8000"),
            ("commit_strategy", "vad"),
        ];
        if let Some(language) = &self.language_code {
            pairs.push(("language_code", language.as_str()));
        }
        if let Some(silence) = &silence {
            pairs.push(("vad_silence_threshold_secs", silence.as_str()));
        }
        pairs.push(("include_timestamps", "false"));
        format!(
            "{}/v1/speech-to-text/realtime?{}",
            ws_base(&self.api_base),
            query(&pairs)
        )
    }
}

/// What the transcriber sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SttEvent {
    SessionStarted {
        session_id: Option<String>,
    },
    /// The utterance so far (replaces the previous partial).
    Partial {
        text: String,
    },
    /// A finished utterance.
    Committed {
        text: String,
    },
    /// An error message (`quota_exceeded`, `auth_error` ...); fatal ones are followed
    /// by the server closing the socket.
    Error {
        kind: String,
        message: String,
    },
    /// Any other `message_type`.
    Unknown {
        kind: String,
    },
}

impl SttEvent {
    /// Dispatches on `message_type`.
    pub fn from_value(v: &Value) -> Self {
        let kind = str_field(v, "message_type").unwrap_or_default();
        let text = || str_field(v, "text").unwrap_or_default();
        match kind.as_str() {
            "session_started" => Self::SessionStarted {
                session_id: str_field(v, "session_id"),
            },
            "partial_transcript" => Self::Partial { text: text() },
            "committed_transcript" => Self::Committed { text: text() },
            k if ERROR_TYPES.contains(&k) || k.ends_with("_error") => Self::Error {
                message: str_field(v, "error")
                    .or_else(|| str_field(v, "message"))
                    .unwrap_or_default(),
                kind,
            },
            _ => Self::Unknown { kind },
        }
    }
}

/// One transcription socket. Read with the cancel-safe [`ElevenLabsStt::next_event`].
pub struct ElevenLabsStt {
    link: WsLink,
}

impl ElevenLabsStt {
    /// Opens the socket with header `xi-api-key`.
    pub async fn connect(options: &SttOptions) -> Result<Self, SpeechError> {
        let key = Some(("xi-api-key", options.api_key.expose()));
        let link = ws::open(SERVICE, &options.url(), key, options.connect_timeout).await?;
        Ok(Self { link })
    }

    /// Queues caller audio (base64 µ-law, unchanged) without waiting; a full queue
    /// drops the frame ([`SpeechError::QueueFull`]).
    /// Written directly, like the Realtime client's `append`: 50 a second per call.
    pub fn send_audio(&self, payload_b64: Base64Str<'_>) -> Result<(), SpeechError> {
        let mut text = String::with_capacity(96 + payload_b64.as_str().len());
        text.push_str(r#"{"message_type":"input_audio_chunk","audio_base_64":"#);
        payload_b64.push_json(&mut text);
        text.push_str(r#","commit":false,"sample_rate":8000}"#);
        self.link.try_send_text(text)
    }

    /// Ends the current utterance now (a manual commit).
    pub async fn commit(&self) -> Result<(), SpeechError> {
        self.link
            .send_text(
                json!({"message_type": "input_audio_chunk", "audio_base_64": "",
                       "commit": true, "sample_rate": 8000})
                .to_string(),
            )
            .await
    }

    /// The next event. Cancel-safe. Malformed messages are logged and skipped; an
    /// upstream close is `Err(SpeechError::Closed ..)`.
    pub async fn next_event(&mut self) -> Result<SttEvent, SpeechError> {
        loop {
            let text = self.link.next_text().await?;
            match serde_json::from_str::<Value>(text.as_str()) {
                Ok(value) => {
                    let event = SttEvent::from_value(&value);
                    if let SttEvent::Error { kind, message } = &event {
                        tracing::warn!(service = %self.link.service(), kind = %kind, message = %message, "transcriber error");
                    }
                    return Ok(event);
                }
                Err(e) => {
                    tracing::warn!(service = %SERVICE, error = %e, "skipping a malformed server message");
                }
            }
        }
    }

    /// Closes the socket (close code 1000).
    pub async fn close(self) {
        self.link.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SttEvent {
        SttEvent::from_value(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn parses_transcripts_and_errors() {
        assert_eq!(
            parse(r#"{"message_type":"session_started","session_id":"s1","config":{}}"#),
            SttEvent::SessionStarted {
                session_id: Some("s1".into())
            }
        );
        assert_eq!(
            parse(r#"{"message_type":"partial_transcript","text":"quero mar"}"#),
            SttEvent::Partial {
                text: "quero mar".into()
            }
        );
        assert_eq!(
            parse(r#"{"message_type":"committed_transcript","text":"quero marcar uma consulta"}"#),
            SttEvent::Committed {
                text: "quero marcar uma consulta".into()
            }
        );
        assert_eq!(
            parse(r#"{"message_type":"quota_exceeded","error":"Quota exceeded"}"#),
            SttEvent::Error {
                kind: "quota_exceeded".into(),
                message: "Quota exceeded".into()
            }
        );
        assert_eq!(
            parse(r#"{"message_type":"auth_error","message":"bad key"}"#),
            SttEvent::Error {
                kind: "auth_error".into(),
                message: "bad key".into()
            }
        );
        assert_eq!(
            parse(
                r#"{"message_type":"committed_transcript_with_timestamps","text":"x","words":[]}"#
            ),
            SttEvent::Unknown {
                kind: "committed_transcript_with_timestamps".into()
            }
        );
    }

    #[test]
    fn url_has_the_realtime_parameters() {
        let options = SttOptions {
            api_base: "wss://api.elevenlabs.io".into(),
            api_key: Secret::new("k"),
            model_id: "scribe_v2_realtime".into(),
            language_code: Some("pt".into()),
            vad_silence_threshold_secs: None,
            connect_timeout: Duration::from_secs(5),
        };
        assert_eq!(
            options.url(),
            "wss://api.elevenlabs.io/v1/speech-to-text/realtime?model_id=scribe_v2_realtime&audio_format=ulaw_8000&commit_strategy=vad&language_code=pt&include_timestamps=false"
        );
    }
}
