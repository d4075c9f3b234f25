//! The cascade's speech-to-text stage: one of two realtime transcribers behind one
//! small interface, reduced to what turn-taking needs ([`Heard`]).
//!
//! - **OpenAI Realtime** (transcription session, server VAD): `speech_started` is the
//!   earliest sign the caller talks (barge-in), transcript deltas are partials, and
//!   `…input_audio_transcription.completed` ends the caller's turn.
//! - **ElevenLabs Scribe** (VAD commits): there is no speech-start event, so the first
//!   partial transcript with words in it stands for one; `committed_transcript` ends
//!   the caller's turn.
//!
//! Both take Twilio's base64 µ-law unchanged.
//!
//! **Language.** Both are told the call's language. A switch goes to OpenAI as a
//! `session.update` on the same socket ([`Stt::set_language`]); Scribe takes its
//! `language_code` only when the socket opens, so the cascade connects a new one in
//! the new language and swaps it in between the caller's utterances.

use crate::config::{CascadeStt, Config};
use crate::speech::elevenlabs_stt::{ElevenLabsStt, SttEvent, SttOptions};
use crate::speech::realtime::{
    ClientEvent, RealtimeClient, RealtimeOptions, ServerEvent, Session, TranscriptionSettings,
};
use crate::speech::{SpeechError, language_code};
use crate::text::base64::Base64Str;

/// What the transcriber noticed, for turn-taking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// The caller started speaking (voice activity).
    SpeechStarted,
    /// Words of an utterance in progress.
    Partial(String),
    /// A finished utterance.
    Final(String),
    /// Nothing that matters for the call (session events, recoverable errors).
    Nothing,
}

/// Fails when a setting the configured transcriber needs is missing (before any
/// socket is opened).
pub fn check_config(config: &Config) -> Result<(), SpeechError> {
    match config.speech.cascade_stt {
        CascadeStt::OpenAi => RealtimeOptions::from_config(config).map(drop),
        CascadeStt::ElevenLabs => SttOptions::from_config(config).map(drop),
    }
}

/// An open transcriber.
pub enum Stt {
    /// With the session's settings (a language switch re-sends them).
    OpenAi(Box<RealtimeClient>, TranscriptionSettings),
    ElevenLabs(ElevenLabsStt),
}

impl Stt {
    /// Connects the transcriber the configuration names, listening for `language`
    /// (a code such as `pt-BR`; the services take its ISO 639-1 part).
    pub async fn connect(config: &Config, language: &str) -> Result<Self, SpeechError> {
        match config.speech.cascade_stt {
            CascadeStt::OpenAi => {
                let options = RealtimeOptions::from_config(config)?;
                let settings = TranscriptionSettings {
                    language: Some(language_code(language)),
                    ..TranscriptionSettings::from_config(config)
                };
                let client = RealtimeClient::connect_transcription(&options, &settings).await?;
                Ok(Self::OpenAi(Box::new(client), settings))
            }
            CascadeStt::ElevenLabs => {
                let options = SttOptions {
                    language_code: Some(language_code(language)),
                    ..SttOptions::from_config(config)?
                };
                Ok(Self::ElevenLabs(ElevenLabsStt::connect(&options).await?))
            }
        }
    }

    /// Moves this socket to `language` when the service allows it mid-stream
    /// (OpenAI: a `session.update` with the new transcription language); `Ok(false)`
    /// when it does not (Scribe: connect a new socket).
    pub async fn set_language(&mut self, language: &str) -> Result<bool, SpeechError> {
        match self {
            Self::OpenAi(client, settings) => {
                settings.language = Some(language_code(language));
                client
                    .send(&ClientEvent::SessionUpdate {
                        session: Box::new(Session::transcription(settings)),
                    })
                    .await?;
                Ok(true)
            }
            Self::ElevenLabs(_) => Ok(false),
        }
    }

    /// Queues caller audio (Twilio's base64 µ-law) without waiting; a full queue drops
    /// the frame ([`SpeechError::QueueFull`]).
    pub fn send_audio(&self, payload_b64: Base64Str<'_>) -> Result<(), SpeechError> {
        match self {
            Self::OpenAi(client, _) => client.append_audio(payload_b64),
            Self::ElevenLabs(client) => client.send_audio(payload_b64),
        }
    }

    /// The next thing heard. Cancel-safe. An upstream close is an error.
    pub async fn next(&mut self) -> Result<Heard, SpeechError> {
        match self {
            Self::OpenAi(client, _) => Ok(match client.next_event().await? {
                ServerEvent::SpeechStarted { .. } => Heard::SpeechStarted,
                ServerEvent::InputTranscriptDelta { delta, .. } => Heard::Partial(delta),
                ServerEvent::InputTranscriptCompleted { transcript, .. } => {
                    Heard::Final(transcript)
                }
                ServerEvent::InputTranscriptFailed { message, .. } => {
                    tracing::warn!(message = %message, "a caller utterance could not be transcribed");
                    Heard::Nothing
                }
                _ => Heard::Nothing,
            }),
            Self::ElevenLabs(client) => Ok(match client.next_event().await? {
                SttEvent::Partial { text } => Heard::Partial(text),
                SttEvent::Committed { text } => Heard::Final(text),
                _ => Heard::Nothing,
            }),
        }
    }

    /// Closes the socket.
    pub async fn close(self) {
        match self {
            Self::OpenAi(client, _) => client.close().await,
            Self::ElevenLabs(client) => client.close().await,
        }
    }
}

/// Whether a partial transcript holds words (not just noise or punctuation).
pub fn has_words(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}
