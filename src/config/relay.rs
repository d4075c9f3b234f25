//! The ConversationRelay part of the configuration: the `<ConversationRelay>`
//! attributes we emit and the languages a call may speak. May import the shared
//! reading machinery (`vars`) and the agent file it merges with.

use super::Vars;
use super::agent_file::AgentFile;

pub const DEFAULT_WELCOME_GREETING: &str = "Olá! Eu sou o assistente virtual. Como posso ajudar?";

/// The values `interruptible` and `reportInputDuringAgentSpeech` accept.
const MODES: &[&str] = &["none", "dtmf", "speech", "any", "true", "false"];

/// The `<ConversationRelay>` attributes we emit, straight from configuration.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub welcome_greeting: String,
    pub welcome_greeting_interruptible: Option<String>,
    pub language: String,
    pub tts_provider: String,
    pub tts_voice: Option<String>,
    pub transcription_provider: String,
    pub speech_model: Option<String>,
    pub interruptible: String,
    pub report_input_during_agent_speech: String,
    pub hints: Option<String>,
    pub debug: Option<String>,
    pub events: Option<String>,
    /// `RELAY_APPLICATION_RECONNECT`: `applicationReconnect="true"`, so Twilio
    /// keeps the call up and reconnects a dropped WebSocket to the same URL (its
    /// per-call token is admitted again only then; see `twilio::admission`).
    pub application_reconnect: bool,
    /// Every language the call may use, the main one (`language`) first; each gets a
    /// `<Language>` element so `switch_language` can move to it.
    pub languages: Vec<LanguageConfig>,
}

/// One language a call may speak, with its speech settings (unset ones inherit the
/// `<ConversationRelay>` attributes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageConfig {
    pub code: String,
    pub tts_provider: Option<String>,
    pub voice: Option<String>,
    pub transcription_provider: Option<String>,
    pub speech_model: Option<String>,
}

/// The relay attributes, then the languages (the main one first, with them).
pub(super) fn read(env: &mut Vars, file: &AgentFile) -> RelayConfig {
    let relay = RelayConfig {
        welcome_greeting: env
            .get_allow_empty("WELCOME_GREETING")
            .unwrap_or_else(|| DEFAULT_WELCOME_GREETING.to_string()),
        welcome_greeting_interruptible: env.get("WELCOME_GREETING_INTERRUPTIBLE"),
        language: env.get("LANGUAGE").unwrap_or_else(|| "pt-BR".to_string()),
        tts_provider: env
            .get("TTS_PROVIDER")
            .unwrap_or_else(|| "ElevenLabs".to_string()),
        tts_voice: env
            .get("TTS_VOICE")
            .or_else(|| env.get("ELEVENLABS_VOICE_ID")),
        transcription_provider: env
            .get("TRANSCRIPTION_PROVIDER")
            .unwrap_or_else(|| "Deepgram".to_string()),
        speech_model: env.get("SPEECH_MODEL"),
        interruptible: env.one_of("INTERRUPTIBLE", "any", MODES),
        report_input_during_agent_speech: env.one_of(
            "REPORT_INPUT_DURING_AGENT_SPEECH",
            "any",
            MODES,
        ),
        hints: env.get("HINTS"),
        debug: env.get("RELAY_DEBUG"),
        events: env.get("RELAY_EVENTS"),
        application_reconnect: env.parse("RELAY_APPLICATION_RECONNECT", false),
        languages: Vec::new(),
    };
    RelayConfig {
        languages: read_languages(env, file, &relay),
        ..relay
    }
}

/// The languages of a call: the main one first (with the effective relay settings),
/// then the others from `LANGUAGES` or the agent file.
fn read_languages(env: &mut Vars, file: &AgentFile, relay: &RelayConfig) -> Vec<LanguageConfig> {
    let main = LanguageConfig {
        code: relay.language.clone(),
        tts_provider: Some(relay.tts_provider.clone()),
        voice: relay.tts_voice.clone(),
        transcription_provider: Some(relay.transcription_provider.clone()),
        speech_model: relay.speech_model.clone(),
    };
    let others: Vec<LanguageConfig> = match env.get("LANGUAGES") {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|code| {
                file.languages
                    .iter()
                    .find(|l| l.code == code)
                    .cloned()
                    .unwrap_or_else(|| LanguageConfig {
                        code: code.to_string(),
                        tts_provider: None,
                        voice: None,
                        transcription_provider: None,
                        speech_model: None,
                    })
            })
            .collect(),
        None => file.languages.clone(),
    };
    let mut out = vec![main];
    for language in others {
        if language.code.trim().is_empty() {
            env.errors
                .push("every language needs a non-empty code".to_string());
        } else if !out.iter().any(|l| l.code == language.code) {
            out.push(language);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portuguese_by_default_and_the_voice_falls_back_to_elevenlabs_voice_id() {
        let c = read(&mut Vars::of(&[]), &AgentFile::default());
        assert_eq!(c.language, "pt-BR");
        assert_eq!(c.languages.len(), 1);
        assert_eq!(c.languages[0].code, "pt-BR");
        let c = read(
            &mut Vars::of(&[("ELEVENLABS_VOICE_ID", "abc123")]),
            &AgentFile::default(),
        );
        assert_eq!(c.tts_voice.as_deref(), Some("abc123"));
        assert_eq!(c.languages[0].voice.as_deref(), Some("abc123"));
    }

    #[test]
    fn languages_are_listed_once_and_modes_are_checked() {
        let mut env = Vars::of(&[
            ("LANGUAGES", "pt-BR, en-US, en-US"),
            ("INTERRUPTIBLE", "sometimes"),
        ]);
        let c = read(&mut env, &AgentFile::default());
        let codes: Vec<_> = c.languages.iter().map(|l| l.code.as_str()).collect();
        assert_eq!(codes, ["pt-BR", "en-US"]);
        assert!(env.errors.join("").contains("INTERRUPTIBLE"));
    }
}
