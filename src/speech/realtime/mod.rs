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
use crate::text::base64::Base64Str;

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
    pub fn append_audio(&self, payload_b64: Base64Str<'_>) -> Result<(), SpeechError> {
        self.link
            .try_send_text(ClientEvent::append_audio_json(payload_b64))
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
mod tests;
