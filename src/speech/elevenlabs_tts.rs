//! ElevenLabs streaming text-to-speech over the multi-context WebSocket
//! (`/v1/text-to-speech/{voice}/multi-stream-input`), producing base64 µ-law 8 kHz
//! (`output_format=ulaw_8000`) that goes to Twilio unchanged.
//!
//! One socket serves a whole call; every reply ("turn") gets its own context, so a
//! barge-in stops a reply without reconnecting:
//!
//! - a context is initialised ahead of time (`{"text":" ","context_id",voice_settings,
//!   generation_config}`) so the first words of a reply go out at once;
//! - [`ElevenLabsTts::push_text`] sends whole words, each chunk ending in a space (the
//!   part of an LLM token after the last space waits for the next token);
//! - [`ElevenLabsTts::end_turn`] sends the rest with `flush: true`, then
//!   `close_context` (the server finishes the flush and ends the context);
//! - [`ElevenLabsTts::cancel`] sends `close_context` for every reply in flight and
//!   drops any audio still arriving for them, so nothing stale reaches the caller;
//! - while idle, `{"text":"","context_id"}` keeps the ready context alive well before
//!   `inactivity_timeout`.
//!
//! Server messages carry `contextId` or `context_id`, `isFinal` or `is_final`: both
//! spellings are accepted. The socket asks for `sync_alignment`, so each audio chunk
//! comes with the characters it speaks and their start times ([`Alignment`]), which a
//! barge-in uses to tell what the caller heard.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::ws::{self, WsLink};
use super::{Service, SpeechError, query, str_field, ws_base};
use crate::config::{Config, Secret};

const SERVICE: Service = Service::ElevenLabsTts;
/// Cancelled contexts remembered to drop their late audio.
const MAX_CANCELLED: usize = 32;

/// `voice_settings` of a context.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VoiceSettings {
    pub stability: f32,
    pub similarity_boost: f32,
    pub speed: f32,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self {
            stability: 0.5,
            similarity_boost: 0.75,
            speed: 1.0,
        }
    }
}

/// Where and how to synthesise.
#[derive(Clone, Debug)]
pub struct TtsOptions {
    /// `wss://api.elevenlabs.io` (or `https://`, or a regional host).
    pub api_base: String,
    pub api_key: Secret,
    pub voice_id: String,
    pub model_id: String,
    /// ISO 639-1 (`pt`); only sent to models that take it (v2.5 flash/turbo, v3).
    pub language_code: Option<String>,
    pub voice_settings: VoiceSettings,
    /// Characters buffered before each audio chunk (each 50–500).
    pub chunk_length_schedule: Vec<u32>,
    /// Seconds of silence after which the server closes (max 180).
    pub inactivity_timeout_secs: u32,
    /// Idle time after which a keep-alive is sent (well below the timeout).
    pub keepalive_every: Duration,
    pub connect_timeout: Duration,
}

impl TtsOptions {
    /// From the configuration: `ELEVENLABS_API_KEY`, `TTS_VOICE`/`ELEVENLABS_VOICE_ID`
    /// (a ConversationRelay-style `voice-model-settings` value is cut to the voice id),
    /// `ELEVENLABS_TTS_MODEL`, `LANGUAGE`.
    pub fn from_config(config: &Config) -> Result<Self, SpeechError> {
        let speech = &config.speech;
        let api_key = speech
            .elevenlabs_api_key
            .clone()
            .ok_or(SpeechError::NotConfigured {
                service: SERVICE,
                missing: "ELEVENLABS_API_KEY",
            })?;
        let voice_id = config
            .relay
            .tts_voice
            .as_deref()
            .map(voice_id)
            .filter(|v| !v.is_empty())
            .ok_or(SpeechError::NotConfigured {
                service: SERVICE,
                missing: "TTS_VOICE (or ELEVENLABS_VOICE_ID)",
            })?;
        Ok(Self {
            api_base: speech.elevenlabs_api_base.clone(),
            api_key,
            voice_id,
            model_id: speech.elevenlabs_tts_model.clone(),
            language_code: Some(super::language_code(&config.relay.language)),
            voice_settings: VoiceSettings::default(),
            chunk_length_schedule: vec![50, 90, 120, 150],
            inactivity_timeout_secs: 180,
            keepalive_every: Duration::from_secs(15),
            connect_timeout: speech.connect_timeout,
        })
    }

    /// The same settings in another voice (a ConversationRelay-style voice value is
    /// cut to its id) and language (`en-US`; the ISO 639-1 part is used).
    pub fn with_voice_and_language(&self, voice: &str, language: &str) -> Self {
        Self {
            voice_id: voice_id(voice),
            language_code: Some(super::language_code(language)),
            ..self.clone()
        }
    }

    /// Whether a socket opened with `self` also serves `other` (voice, model and
    /// language are fixed per socket, in its URL).
    pub fn same_socket(&self, other: &TtsOptions) -> bool {
        self.url() == other.url()
    }

    fn url(&self) -> String {
        let inactivity = self.inactivity_timeout_secs.to_string();
        let mut pairs = vec![
            ("model_id", self.model_id.as_str()),
            ("output_format", "ulaw_8000"),
            ("inactivity_timeout", inactivity.as_str()),
            ("sync_alignment", "true"),
        ];
        if let Some(language) = &self.language_code
            && model_takes_language_code(&self.model_id)
        {
            pairs.push(("language_code", language.as_str()));
        }
        format!(
            "{}/v1/text-to-speech/{}/multi-stream-input?{}",
            ws_base(&self.api_base),
            self.voice_id,
            query(&pairs)
        )
    }
}

/// The ElevenLabs voice id in a ConversationRelay `voice` value
/// (`UgBBYS2sOqTuMpoF3BR0-flash_v2_5-1.2_1.0_0.8` → `UgBBYS2sOqTuMpoF3BR0`).
pub fn voice_id(voice: &str) -> String {
    voice
        .split('-')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Models documented to accept `language_code`; others may reject it.
fn model_takes_language_code(model: &str) -> bool {
    model.contains("v2_5") || model.contains("_v3")
}

/// One reply being spoken; increases through the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TurnId(pub u64);

/// Which characters an audio chunk speaks, and when (`alignment` of a server message:
/// the text as sent, not the normalised one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alignment {
    pub chars: Vec<char>,
    /// Start of each character, in ms (relative to the chunk, or to the context:
    /// readers should only rely on differences).
    pub starts_ms: Vec<u32>,
}

impl Alignment {
    /// Most characters kept from one chunk (a chunk speaks a few hundred at most).
    const MAX_CHARS: usize = 2048;

    /// Parses `{"chars":[..],"charStartTimesMs":[..]}`; `None` when absent, empty or
    /// inconsistent.
    pub fn from_value(value: &Value) -> Option<Self> {
        let chars = value.get("chars")?.as_array()?;
        let starts = value.get("charStartTimesMs")?.as_array()?;
        if chars.is_empty() || chars.len() != starts.len() || chars.len() > Self::MAX_CHARS {
            return None;
        }
        let mut alignment = Self::default();
        for (c, start) in chars.iter().zip(starts) {
            // Each entry is one character; a multi-char string keeps its first.
            let c = c.as_str()?.chars().next()?;
            let start = start.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
            alignment.chars.push(c);
            alignment.starts_ms.push(start.min(u32::MAX as f64) as u32);
        }
        Some(alignment)
    }
}

/// What the TTS sends back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TtsEvent {
    /// Base64 µ-law 8 kHz of a turn, header-less: Twilio's `media.payload` as is, with
    /// the characters it speaks when the server sent them.
    Audio {
        turn: TurnId,
        audio: String,
        alignment: Option<Alignment>,
    },
    /// All audio of the turn has been sent (`isFinal`).
    TurnDone { turn: TurnId },
    /// An error message from the server (it usually closes the socket next).
    Error { message: String },
}

/// The reply receiving text.
struct Current {
    turn: TurnId,
    context: String,
    /// Text after the last space, waiting for the rest of its word.
    pending: String,
}

/// One TTS socket for a call. Send with the `&mut self` methods; read with the
/// cancel-safe [`ElevenLabsTts::next_event`] (which also sends the keep-alives).
pub struct ElevenLabsTts {
    link: WsLink,
    voice_settings: Value,
    generation_config: Value,
    contexts_made: u64,
    turns_made: u64,
    /// An initialised context waiting for the next reply.
    ready: Option<String>,
    current: Option<Current>,
    /// Contexts whose audio is delivered, with their turn (current and flushing).
    live: HashMap<String, TurnId>,
    /// Contexts of cancelled turns: their late audio is dropped.
    cancelled: VecDeque<String>,
    /// Events parsed but not yet returned (a message with audio and `isFinal`).
    queued: VecDeque<TtsEvent>,
    keepalive_every: Duration,
    last_sent: Instant,
}

impl ElevenLabsTts {
    /// Opens the socket (header `xi-api-key`) and initialises the first context.
    pub async fn connect(options: &TtsOptions) -> Result<Self, SpeechError> {
        let key = Some(("xi-api-key", options.api_key.expose()));
        let link = ws::open(SERVICE, &options.url(), key, options.connect_timeout).await?;
        let mut tts = Self {
            link,
            voice_settings: serde_json::to_value(&options.voice_settings).unwrap_or_default(),
            generation_config: json!({"chunk_length_schedule": options.chunk_length_schedule}),
            contexts_made: 0,
            turns_made: 0,
            ready: None,
            current: None,
            live: HashMap::new(),
            cancelled: VecDeque::new(),
            queued: VecDeque::new(),
            keepalive_every: options.keepalive_every,
            last_sent: Instant::now(),
        };
        tts.ensure_ready().await?;
        Ok(tts)
    }

    async fn send(&mut self, message: Value) -> Result<(), SpeechError> {
        self.last_sent = Instant::now();
        self.link.send_text(message.to_string()).await
    }

    /// Initialises a context for the next reply if there is none.
    async fn ensure_ready(&mut self) -> Result<(), SpeechError> {
        if self.ready.is_some() {
            return Ok(());
        }
        self.contexts_made += 1;
        let context = format!("ctx-{}", self.contexts_made);
        self.send(json!({
            "text": " ",
            "context_id": context,
            "voice_settings": self.voice_settings,
            "generation_config": self.generation_config,
        }))
        .await?;
        self.ready = Some(context);
        Ok(())
    }

    /// Starts a reply. A reply still receiving text is ended first (flushed).
    pub async fn begin_turn(&mut self) -> Result<TurnId, SpeechError> {
        if self.current.is_some() {
            self.end_turn().await?;
        }
        self.ensure_ready().await?;
        let context = self.ready.take().unwrap_or_default();
        self.turns_made += 1;
        let turn = TurnId(self.turns_made);
        self.live.insert(context.clone(), turn);
        self.current = Some(Current {
            turn,
            context,
            pending: String::new(),
        });
        Ok(turn)
    }

    /// The reply receiving text, if any.
    pub fn current_turn(&self) -> Option<TurnId> {
        self.current.as_ref().map(|c| c.turn)
    }

    /// Adds text (any LLM token) to the current reply. Whole words go out at once,
    /// each chunk ending in a space; text without a reply in progress is ignored.
    pub async fn push_text(&mut self, text: &str) -> Result<(), SpeechError> {
        let Some(current) = self.current.as_mut() else {
            tracing::debug!(service = %SERVICE, "text outside a turn ignored");
            return Ok(());
        };
        current.pending.push_str(text);
        let Some((ready, rest)) = split_words(&current.pending) else {
            return Ok(());
        };
        let (ready, rest) = (ready.to_string(), rest.to_string());
        current.pending = rest;
        let context = current.context.clone();
        if ready.trim().is_empty() {
            return Ok(());
        }
        self.send(json!({"text": ready, "context_id": context}))
            .await
    }

    /// Ends the current reply: the rest of its text with `flush: true`, then
    /// `close_context`; its audio keeps arriving until [`TtsEvent::TurnDone`]. Prepares
    /// the next reply's context. Returns the ended turn.
    pub async fn end_turn(&mut self) -> Result<Option<TurnId>, SpeechError> {
        let Some(current) = self.current.take() else {
            return Ok(None);
        };
        let rest = current.pending.trim();
        let text = if rest.is_empty() {
            String::new()
        } else {
            format!("{rest} ")
        };
        self.send(json!({"text": text, "context_id": current.context, "flush": true}))
            .await?;
        self.send(json!({"context_id": current.context, "close_context": true}))
            .await?;
        self.ensure_ready().await?;
        Ok(Some(current.turn))
    }

    /// Barge-in: stops every reply in flight (`close_context`) and drops whatever audio
    /// still arrives for them. Returns the cancelled turns.
    pub async fn cancel(&mut self) -> Result<Vec<TurnId>, SpeechError> {
        let current = self.current.take();
        if let Some(current) = &current {
            self.send(json!({"context_id": current.context, "close_context": true}))
                .await?;
        }
        let mut turns: Vec<TurnId> = Vec::new();
        for (context, turn) in self.live.drain() {
            turns.push(turn);
            self.cancelled.push_back(context);
        }
        while self.cancelled.len() > MAX_CANCELLED {
            self.cancelled.pop_front();
        }
        turns.sort();
        self.queued
            .retain(|e| !matches!(e, TtsEvent::Audio { turn, .. } | TtsEvent::TurnDone { turn } if turns.contains(turn)));
        self.ensure_ready().await?;
        Ok(turns)
    }

    /// The next event. Cancel-safe. Sends a keep-alive when nothing was sent for
    /// `keepalive_every`. An upstream close is `Err(SpeechError::Closed ..)`.
    pub async fn next_event(&mut self) -> Result<TtsEvent, SpeechError> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Ok(event);
            }
            let keepalive_at = self.last_sent + self.keepalive_every;
            let text = tokio::select! {
                text = self.link.next_text() => text?,
                _ = tokio::time::sleep_until(keepalive_at) => {
                    self.keepalive();
                    continue;
                }
            };
            match serde_json::from_str::<Value>(text.as_str()) {
                Ok(value) => self.handle(&value),
                Err(e) => {
                    tracing::warn!(service = %SERVICE, error = %e, "skipping a malformed server message");
                }
            }
        }
    }

    fn keepalive(&mut self) {
        self.last_sent = Instant::now();
        let context = self
            .current
            .as_ref()
            .map(|c| c.context.clone())
            .or_else(|| self.ready.clone());
        if let Some(context) = context {
            // Dropped if the queue is full: then the socket is not idle anyway.
            let _ = self
                .link
                .try_send_text(json!({"text": "", "context_id": context}).to_string());
        }
    }

    /// Turns one server message into queued events.
    fn handle(&mut self, value: &Value) {
        let context = str_field(value, "contextId").or_else(|| str_field(value, "context_id"));
        let turn = match &context {
            Some(context) => self.live.get(context).copied(),
            // No context in the message: the reply being spoken, if unambiguous.
            None if self.live.len() == 1 => self.live.values().next().copied(),
            None => None,
        };
        let audio = value
            .get("audio")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty());
        let is_final = [value.get("isFinal"), value.get("is_final")]
            .into_iter()
            .flatten()
            .any(|v| v.as_bool() == Some(true));
        if audio.is_none() && !is_final {
            if let Some(message) = str_field(value, "message").or_else(|| str_field(value, "error"))
            {
                tracing::warn!(service = %SERVICE, message = %message, "server error message");
                self.queued.push_back(TtsEvent::Error { message });
            }
            return;
        }
        let Some(turn) = turn else {
            // Late audio of a cancelled (or unknown) context: dropped.
            tracing::trace!(service = %SERVICE, context = ?context, "dropping audio of a closed context");
            return;
        };
        if let Some(audio) = audio {
            self.queued.push_back(TtsEvent::Audio {
                turn,
                audio: audio.to_string(),
                alignment: value.get("alignment").and_then(Alignment::from_value),
            });
        }
        if is_final {
            self.live.retain(|_, t| *t != turn);
            self.queued.push_back(TtsEvent::TurnDone { turn });
        }
    }

    /// Ends the socket: `close_socket` (the server flushes what it has), then a close
    /// frame.
    pub async fn close(self) {
        let _ = self
            .link
            .try_send_text(json!({"close_socket": true}).to_string());
        self.link.close().await
    }
}

/// Splits buffered text at its last whitespace: the words ready to send (ending in
/// one space) and the unfinished rest. `None` when there is no whitespace yet.
fn split_words(text: &str) -> Option<(String, &str)> {
    let end = text.rfind(char::is_whitespace)?;
    let space_len = text[end..].chars().next().map_or(1, char::len_utf8);
    let words = text[..end].trim_end();
    let rest = &text[end + space_len..];
    Some((format!("{words} "), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_go_out_whole_and_end_in_one_space() {
        assert_eq!(split_words("Olá"), None);
        assert_eq!(split_words("Olá, tu"), Some(("Olá, ".into(), "tu")));
        assert_eq!(
            split_words("Olá, tudo bem? "),
            Some(("Olá, tudo bem? ".into(), ""))
        );
        assert_eq!(split_words("linha\nnova"), Some(("linha ".into(), "nova")));
        assert_eq!(split_words("fim.  \n"), Some(("fim. ".into(), "")));
        assert_eq!(split_words(" "), Some((" ".into(), "")));
    }

    #[test]
    fn alignment_is_parsed_leniently() {
        let a = Alignment::from_value(&json!({"chars": ["O", "l", "á", " "],
            "charStartTimesMs": [0, 70, 139.5, 210], "charsDurationsMs": [70, 70, 70, 30]}))
        .unwrap();
        assert_eq!(a.chars, vec!['O', 'l', 'á', ' ']);
        assert_eq!(a.starts_ms, vec![0, 70, 139, 210]);
        assert_eq!(Alignment::from_value(&Value::Null), None);
        assert_eq!(
            Alignment::from_value(&json!({"chars": ["a"], "charStartTimesMs": []})),
            None
        );
        assert_eq!(
            Alignment::from_value(&json!({"chars": [], "charStartTimesMs": []})),
            None
        );
        assert_eq!(
            Alignment::from_value(&json!({"chars": ["a"], "charStartTimesMs": [-1]})),
            None
        );
    }

    #[test]
    fn voice_ids_and_urls() {
        assert_eq!(
            voice_id("UgBBYS2sOqTuMpoF3BR0-flash_v2_5-1.2_1.0_0.8"),
            "UgBBYS2sOqTuMpoF3BR0"
        );
        assert_eq!(voice_id("abc123"), "abc123");
        let options = TtsOptions {
            api_base: "https://api.elevenlabs.io".into(),
            api_key: Secret::new("k"),
            voice_id: "v1".into(),
            model_id: "eleven_flash_v2_5".into(),
            language_code: Some("pt".into()),
            voice_settings: VoiceSettings::default(),
            chunk_length_schedule: vec![50],
            inactivity_timeout_secs: 180,
            keepalive_every: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        };
        assert_eq!(
            options.url(),
            "wss://api.elevenlabs.io/v1/text-to-speech/v1/multi-stream-input?model_id=eleven_flash_v2_5&output_format=ulaw_8000&inactivity_timeout=180&sync_alignment=true&language_code=pt"
        );
        // Another language or voice needs a socket of its own, except for models
        // that take no language code (they follow the text).
        let english = options.with_voice_and_language("en_voice-flash_v2_5-1.0", "en-US");
        assert!(english.url().contains("/text-to-speech/en_voice/"));
        assert!(english.url().ends_with("&language_code=en"));
        assert!(!options.same_socket(&english));
        assert!(options.same_socket(&options.with_voice_and_language("v1", "pt-PT")));
        let multilingual = TtsOptions {
            model_id: "eleven_multilingual_v2".into(),
            ..options
        };
        assert!(!multilingual.url().contains("language_code"));
        assert!(multilingual.same_socket(&multilingual.with_voice_and_language("v1", "en-US")));
    }

    #[test]
    fn options_need_a_key_and_a_voice() {
        let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap();
        assert!(matches!(
            TtsOptions::from_config(&config(&[("TTS_VOICE", "v")])),
            Err(SpeechError::NotConfigured {
                missing: "ELEVENLABS_API_KEY",
                ..
            })
        ));
        assert!(matches!(
            TtsOptions::from_config(&config(&[("ELEVENLABS_API_KEY", "k")])),
            Err(SpeechError::NotConfigured { .. })
        ));
        let o = TtsOptions::from_config(&config(&[
            ("ELEVENLABS_API_KEY", "k"),
            ("ELEVENLABS_VOICE_ID", "voz-flash_v2_5"),
        ]))
        .unwrap();
        assert_eq!(o.voice_id, "voz");
        assert_eq!(o.language_code.as_deref(), Some("pt"));
        assert_eq!(o.model_id, "eleven_flash_v2_5");
    }
}
