//! Configuration: read once at start from the environment (and `.env`, loaded by
//! `main`), validated with every problem listed at once, secrets wrapped so they
//! never reach a log line.
//!
//! Tests build a [`Config`] from a plain map with [`Config::from_vars`], so they never
//! touch the process environment.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A string that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that must send it (an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which LLM backs the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmProviderKind {
    /// OpenAI or any OpenAI-compatible server (`OPENAI_BASE_URL`).
    OpenAi,
    /// Azure OpenAI (deployment + api-version).
    Azure,
    /// Offline, deterministic pt-BR replies: no key, no network.
    Scripted,
}

impl LlmProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
            Self::Scripted => "scripted",
        }
    }
}

/// Settings of the LLM provider.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    pub provider: LlmProviderKind,
    pub openai_api_key: Option<Secret>,
    /// `None` means OpenAI's own API.
    pub openai_base_url: Option<String>,
    pub model: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub azure_endpoint: Option<String>,
    pub azure_api_key: Option<Secret>,
    pub azure_deployment: Option<String>,
    pub azure_api_version: String,
    /// No first token within this time counts as a failure (the caller hears the apology).
    pub timeout: Duration,
    /// Delay between words of the scripted provider (0 in tests and benchmarks).
    pub scripted_token_delay: Duration,
}

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
}

/// Everything the server needs, read once.
#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    /// Address to listen on (`0.0.0.0` by default; `127.0.0.1` keeps it local).
    pub host: std::net::IpAddr,
    /// Public base URL (`https://voz.example.com`), no trailing slash. `None`: derive
    /// it per request from the proxy headers.
    pub public_url: Option<String>,
    pub llm: LlmConfig,
    pub system_prompt: String,
    /// Spoken when the LLM fails; the call goes on.
    pub fallback_message: String,
    pub relay: RelayConfig,
    pub log_dir: String,
    /// Digits are gathered until `#` or this much silence on the keypad.
    pub dtmf_timeout: Duration,
    /// Largest WebSocket message accepted from Twilio.
    pub max_ws_message_bytes: usize,
    /// How many calls may be live at once; more are refused with 503.
    pub max_calls: usize,
    /// How long a drain waits for live calls on SIGTERM.
    pub drain_timeout: Duration,
    /// Bearer token for `/api/*`.
    pub api_token: Secret,
    /// Whether `api_token` was generated at start (no `API_TOKEN` set).
    pub api_token_generated: bool,
}

/// Every problem found in the environment, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

pub const DEFAULT_SYSTEM_PROMPT: &str = "Você é um assistente de voz simpático e objetivo, atendendo uma ligação telefônica em português do Brasil. \
Responda em frases curtas e naturais, como numa conversa falada. Não use listas, markdown, emojis nem caracteres especiais: tudo o que você escreve será lido em voz alta.";
pub const DEFAULT_WELCOME_GREETING: &str = "Olá! Eu sou o assistente virtual. Como posso ajudar?";
pub const DEFAULT_FALLBACK_MESSAGE: &str =
    "Desculpe, tive um problema para responder agora. Pode repetir, por favor?";
const DEFAULT_OPENAI_MODEL: &str = "gpt-4.1-mini";

impl Config {
    /// Reads the process environment (call `dotenvy::dotenv()` first to load `.env`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Builds and validates a configuration from a map of variables.
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = Vars {
            vars,
            errors: Vec::new(),
        };
        let port = env.parse("PORT", 8080u16);
        let host = env.parse("HOST", std::net::IpAddr::from([0, 0, 0, 0]));
        let public_url = env
            .get("PUBLIC_URL")
            .map(|u| u.trim_end_matches('/').to_string())
            .or_else(|| {
                env.get("RAILWAY_PUBLIC_DOMAIN")
                    .map(|d| format!("https://{}", d.trim_end_matches('/')))
            });
        if let Some(url) = &public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            env.errors.push(format!(
                "PUBLIC_URL must start with https:// (or http:// for local tests), got {url:?}"
            ));
        }

        let openai_api_key = env.get("OPENAI_API_KEY").map(Secret::new);
        let provider = match env.get("LLM_PROVIDER").map(|p| p.to_ascii_lowercase()) {
            None if openai_api_key.is_some() => LlmProviderKind::OpenAi,
            None => LlmProviderKind::Scripted,
            Some(p) => match p.as_str() {
                "openai" => LlmProviderKind::OpenAi,
                "azure" => LlmProviderKind::Azure,
                "scripted" | "offline" => LlmProviderKind::Scripted,
                other => {
                    env.errors.push(format!(
                        "LLM_PROVIDER must be one of openai, azure, scripted; got {other:?}"
                    ));
                    LlmProviderKind::Scripted
                }
            },
        };
        let openai_base_url = env
            .get("OPENAI_BASE_URL")
            .map(|u| u.trim_end_matches('/').to_string());
        let azure_endpoint = env
            .get("AZURE_OPENAI_ENDPOINT")
            .map(|u| u.trim_end_matches('/').to_string());
        let azure_api_key = env.get("AZURE_OPENAI_API_KEY").map(Secret::new);
        let azure_deployment = env.get("AZURE_OPENAI_DEPLOYMENT");
        match provider {
            LlmProviderKind::OpenAi if openai_api_key.is_none() && openai_base_url.is_none() => {
                env.errors.push(
                    "LLM_PROVIDER=openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a keyless compatible server)"
                        .into(),
                )
            }
            LlmProviderKind::Azure => {
                for (name, missing) in [
                    ("AZURE_OPENAI_ENDPOINT", azure_endpoint.is_none()),
                    ("AZURE_OPENAI_API_KEY", azure_api_key.is_none()),
                    ("AZURE_OPENAI_DEPLOYMENT", azure_deployment.is_none()),
                ] {
                    if missing {
                        env.errors
                            .push(format!("LLM_PROVIDER=azure needs {name}"));
                    }
                }
            }
            _ => {}
        }
        let model = match provider {
            LlmProviderKind::Scripted => "scripted".to_string(),
            LlmProviderKind::Azure => azure_deployment.clone().unwrap_or_default(),
            LlmProviderKind::OpenAi => env
                .get("OPENAI_MODEL")
                .unwrap_or_else(|| DEFAULT_OPENAI_MODEL.to_string()),
        };
        let temperature: Option<f32> = env.parse_opt("LLM_TEMPERATURE");
        if let Some(t) = temperature
            && !(0.0..=2.0).contains(&t)
        {
            env.errors
                .push(format!("LLM_TEMPERATURE must be between 0 and 2, got {t}"));
        }
        let max_tokens: Option<u32> = env.parse_opt("LLM_MAX_TOKENS");
        let llm = LlmConfig {
            provider,
            openai_api_key,
            openai_base_url,
            model,
            temperature,
            max_tokens,
            azure_endpoint,
            azure_api_key,
            azure_deployment,
            azure_api_version: env
                .get("AZURE_OPENAI_API_VERSION")
                .unwrap_or_else(|| "2024-10-21".to_string()),
            timeout: Duration::from_millis(env.parse("LLM_TIMEOUT_MS", 8000u64)),
            scripted_token_delay: Duration::from_millis(
                env.parse("SCRIPTED_TOKEN_DELAY_MS", 35u64),
            ),
        };

        let enum_var = |env: &mut Vars, name: &str, default: &str, allowed: &[&str]| {
            let value = env.get(name).unwrap_or_else(|| default.to_string());
            if !allowed.contains(&value.as_str()) {
                env.errors.push(format!(
                    "{name} must be one of {}; got {value:?}",
                    allowed.join(", ")
                ));
            }
            value
        };
        const MODES: &[&str] = &["none", "dtmf", "speech", "any", "true", "false"];
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
            interruptible: enum_var(&mut env, "INTERRUPTIBLE", "any", MODES),
            report_input_during_agent_speech: enum_var(
                &mut env,
                "REPORT_INPUT_DURING_AGENT_SPEECH",
                "any",
                MODES,
            ),
            hints: env.get("HINTS"),
            debug: env.get("RELAY_DEBUG"),
            events: env.get("RELAY_EVENTS"),
        };

        let (api_token, api_token_generated) = match env.get("API_TOKEN") {
            Some(token) if token.len() < 16 => {
                env.errors
                    .push("API_TOKEN must be at least 16 characters long".into());
                (Secret::new(token), false)
            }
            Some(token) => (Secret::new(token), false),
            None => (Secret::new(random_token()), true),
        };
        let config = Config {
            port,
            host,
            public_url,
            llm,
            system_prompt: env
                .get("SYSTEM_PROMPT")
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string()),
            fallback_message: env
                .get("FALLBACK_MESSAGE")
                .unwrap_or_else(|| DEFAULT_FALLBACK_MESSAGE.to_string()),
            relay,
            log_dir: env.get("LOG_DIR").unwrap_or_else(|| "logs".to_string()),
            dtmf_timeout: Duration::from_millis(env.parse("DTMF_TIMEOUT_MS", 1500u64)),
            max_ws_message_bytes: env.parse("MAX_WS_MESSAGE_BYTES", 64 * 1024usize),
            max_calls: env.parse("MAX_CALLS", 2000usize),
            drain_timeout: Duration::from_secs(env.parse("DRAIN_TIMEOUT_SECS", 30u64)),
            api_token,
            api_token_generated,
        };
        if env.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(env.errors))
        }
    }
}

/// 32 random bytes as hex, for a generated API token.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source only fails on broken systems; a panic at start is clear.
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The variables being read, and the problems found so far.
struct Vars {
    vars: HashMap<String, String>,
    errors: Vec<String>,
}

impl Vars {
    /// A set, non-blank value.
    fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// A set value, which may be empty (an empty greeting turns the greeting off).
    fn get_allow_empty(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(|v| v.trim().to_string())
    }

    fn parse<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        self.parse_opt(name).unwrap_or(default)
    }

    fn parse_opt<T: std::str::FromStr>(&mut self, name: &str) -> Option<T> {
        let raw = self.get(name)?;
        match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.errors
                    .push(format!("{name} has an invalid value {raw:?}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_offline_and_portuguese() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.llm.provider, LlmProviderKind::Scripted);
        assert_eq!(c.relay.language, "pt-BR");
        assert_eq!(c.log_dir, "logs");
        assert_eq!(c.llm.timeout, Duration::from_millis(8000));
        assert!(c.public_url.is_none());
    }

    #[test]
    fn openai_is_default_with_a_key_and_key_is_redacted() {
        let c = Config::from_vars(vars(&[("OPENAI_API_KEY", "sk-secret")])).unwrap();
        assert_eq!(c.llm.provider, LlmProviderKind::OpenAi);
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
    }

    #[test]
    fn railway_domain_becomes_public_url() {
        let c =
            Config::from_vars(vars(&[("RAILWAY_PUBLIC_DOMAIN", "voz.up.railway.app")])).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://voz.up.railway.app"));
        let c = Config::from_vars(vars(&[
            ("RAILWAY_PUBLIC_DOMAIN", "voz.up.railway.app"),
            ("PUBLIC_URL", "https://voz.example.com/"),
        ]))
        .unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://voz.example.com"));
    }

    #[test]
    fn every_problem_is_reported_together() {
        let err = Config::from_vars(vars(&[
            ("PORT", "eighty"),
            ("LLM_PROVIDER", "azure"),
            ("LLM_TEMPERATURE", "7"),
            ("INTERRUPTIBLE", "sometimes"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "PORT",
            "AZURE_OPENAI_ENDPOINT",
            "AZURE_OPENAI_DEPLOYMENT",
            "LLM_TEMPERATURE",
            "INTERRUPTIBLE",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn api_token_is_generated_when_unset_and_checked_when_set() {
        let a = Config::from_vars(HashMap::new()).unwrap();
        let b = Config::from_vars(HashMap::new()).unwrap();
        assert!(a.api_token_generated);
        assert_eq!(a.api_token.expose().len(), 64);
        assert_ne!(a.api_token, b.api_token);
        let c = Config::from_vars(vars(&[("API_TOKEN", "0123456789abcdef")])).unwrap();
        assert!(!c.api_token_generated);
        assert_eq!(c.api_token.expose(), "0123456789abcdef");
        assert!(Config::from_vars(vars(&[("API_TOKEN", "short")])).is_err());
    }

    #[test]
    fn voice_falls_back_to_elevenlabs_voice_id() {
        let c = Config::from_vars(vars(&[("ELEVENLABS_VOICE_ID", "abc123")])).unwrap();
        assert_eq!(c.relay.tts_voice.as_deref(), Some("abc123"));
    }
}
