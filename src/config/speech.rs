//! The `[speech]` part of the configuration: the upstream speech services of the
//! Media Streams mode (OpenAI Realtime, ElevenLabs). May import `vars`.

use std::time::Duration;

use super::{Secret, Vars};

/// Upstream speech services of the Media Streams mode (OpenAI Realtime, ElevenLabs).
/// Every base URL is configurable so tests (and regional or proxy deployments) can
/// point elsewhere.
#[derive(Clone, Debug)]
pub struct SpeechConfig {
    /// Realtime WebSocket endpoint, without query (`?model=` is added). A host under
    /// `.azure.com` switches to Azure's `api-key` header.
    pub openai_realtime_url: String,
    /// Realtime model (on Azure: the deployment name).
    pub openai_realtime_model: String,
    /// Realtime voice (`marin`, `cedar`, `alloy` ...).
    pub openai_realtime_voice: String,
    /// Model transcribing the caller inside Realtime sessions.
    pub openai_transcription_model: String,
    pub elevenlabs_api_key: Option<Secret>,
    /// `wss://api.elevenlabs.io` or a regional host; `https://` works too.
    pub elevenlabs_api_base: String,
    pub elevenlabs_agent_id: Option<String>,
    pub elevenlabs_tts_model: String,
    pub elevenlabs_stt_model: String,
    /// Time allowed to open an upstream speech socket (TCP + TLS + handshake).
    pub connect_timeout: Duration,
    /// Speech-to-text of the `cascade` Media Streams pipeline (`CASCADE_STT`).
    pub cascade_stt: CascadeStt,
}

/// Which service transcribes the caller in the `cascade` pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CascadeStt {
    /// OpenAI Realtime in transcription mode (`OPENAI_API_KEY`).
    OpenAi,
    /// ElevenLabs Scribe realtime (`ELEVENLABS_API_KEY`, the same key as the TTS).
    #[default]
    ElevenLabs,
}

impl std::str::FromStr for CascadeStt {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "openai" | "openai-realtime" => Ok(Self::OpenAi),
            "elevenlabs" | "scribe" => Ok(Self::ElevenLabs),
            _ => Err(()),
        }
    }
}

/// The `[speech]` part of the configuration.
pub(super) fn read(env: &mut Vars) -> SpeechConfig {
    let openai_realtime_url = env
        .get("OPENAI_REALTIME_URL")
        .unwrap_or_else(|| "wss://api.openai.com/v1/realtime".to_string());
    if !(openai_realtime_url.starts_with("wss://") || openai_realtime_url.starts_with("ws://"))
        || openai_realtime_url.contains('?')
    {
        env.errors.push(format!(
            "OPENAI_REALTIME_URL must be a wss:// URL without a query, got {openai_realtime_url:?}"
        ));
    }
    let elevenlabs_api_base = env
        .get("ELEVENLABS_API_BASE")
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "wss://api.elevenlabs.io".to_string());
    if !["wss://", "ws://", "https://", "http://"]
        .iter()
        .any(|scheme| elevenlabs_api_base.starts_with(scheme))
    {
        env.errors.push(format!(
            "ELEVENLABS_API_BASE must start with wss:// or https://, got {elevenlabs_api_base:?}"
        ));
    }
    let connect_timeout_ms = env.parse("SPEECH_CONNECT_TIMEOUT_MS", 5000u64);
    if connect_timeout_ms == 0 {
        env.errors
            .push("SPEECH_CONNECT_TIMEOUT_MS must be greater than 0".into());
    }
    SpeechConfig {
        openai_realtime_url: openai_realtime_url.trim_end_matches('/').to_string(),
        openai_realtime_model: env
            .get("OPENAI_REALTIME_MODEL")
            .unwrap_or_else(|| "gpt-realtime".to_string()),
        openai_realtime_voice: env
            .get("OPENAI_REALTIME_VOICE")
            .unwrap_or_else(|| "marin".to_string()),
        openai_transcription_model: env
            .get("OPENAI_TRANSCRIPTION_MODEL")
            .unwrap_or_else(|| "gpt-4o-transcribe".to_string()),
        elevenlabs_api_key: env.get("ELEVENLABS_API_KEY").map(Secret::new),
        elevenlabs_api_base,
        elevenlabs_agent_id: env.get("ELEVENLABS_AGENT_ID"),
        elevenlabs_tts_model: env
            .get("ELEVENLABS_TTS_MODEL")
            .unwrap_or_else(|| "eleven_flash_v2_5".to_string()),
        elevenlabs_stt_model: env
            .get("ELEVENLABS_STT_MODEL")
            .unwrap_or_else(|| "scribe_v2_realtime".to_string()),
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        cascade_stt: env.parse("CASCADE_STT", CascadeStt::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = read(&mut Vars::of(&[]));
        assert_eq!(c.openai_realtime_url, "wss://api.openai.com/v1/realtime");
        assert_eq!(c.openai_realtime_model, "gpt-realtime");
        assert_eq!(c.openai_realtime_voice, "marin");
        assert_eq!(c.elevenlabs_api_base, "wss://api.elevenlabs.io");
        assert_eq!(c.elevenlabs_tts_model, "eleven_flash_v2_5");
        assert_eq!(c.elevenlabs_stt_model, "scribe_v2_realtime");
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        let c = read(&mut Vars::of(&[
            ("ELEVENLABS_API_KEY", "xi-secret"),
            (
                "ELEVENLABS_API_BASE",
                "wss://api.eu.residency.elevenlabs.io/",
            ),
            ("ELEVENLABS_AGENT_ID", "agent_1"),
        ]));
        assert_eq!(
            c.elevenlabs_api_base,
            "wss://api.eu.residency.elevenlabs.io"
        );
        assert_eq!(c.elevenlabs_agent_id.as_deref(), Some("agent_1"));
        assert!(!format!("{c:?}").contains("xi-secret"));
        let mut env = Vars::of(&[
            ("OPENAI_REALTIME_URL", "https://api.openai.com/v1/realtime"),
            ("ELEVENLABS_API_BASE", "api.elevenlabs.io"),
        ]);
        read(&mut env);
        let err = env.errors.join("\n");
        assert!(err.contains("OPENAI_REALTIME_URL"), "{err}");
        assert!(err.contains("ELEVENLABS_API_BASE"), "{err}");
    }

    #[test]
    fn cascade_stt_choice() {
        assert_eq!(read(&mut Vars::of(&[])).cascade_stt, CascadeStt::ElevenLabs);
        let c = read(&mut Vars::of(&[("CASCADE_STT", "OpenAI")]));
        assert_eq!(c.cascade_stt, CascadeStt::OpenAi);
        let mut env = Vars::of(&[("CASCADE_STT", "whisper")]);
        read(&mut env);
        assert!(env.errors.join("").contains("CASCADE_STT"));
    }
}
