//! Configuration: read once at start from the environment (and `.env`, loaded by
//! `main`) and the optional agent file (`AGENT_CONFIG`, TOML; see
//! `agent.example.toml`), validated with every problem listed at once, secrets
//! wrapped so they never reach a log line. Environment variables override the file.
//!
//! Tests build a [`Config`] from a plain map with [`Config::from_vars`], so they never
//! touch the process environment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod agent_file;
pub mod api_token;
mod media;
mod replicas;
mod security;
mod speech;
mod store;
mod twilio;
mod vars;
use agent_file::*;
use media::media_config;
pub use media::{MediaConfig, MediaPipelineKind};
pub use replicas::ReplicasConfig;
pub use security::{LimitsConfig, SecurityConfig};
use speech::speech_config;
pub use speech::{CascadeStt, SpeechConfig};
pub use store::redact_database_url;
use twilio::twilio_config;
pub use twilio::{TwilioConfig, is_e164};
pub use vars::{ConfigError, Secret};
use vars::{Vars, random_token};

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

/// The built-in tools, by the names the model sees.
pub const BUILTIN_TOOLS: &[&str] = &[
    "end_call",
    "transfer_to_human",
    "send_dtmf",
    "switch_language",
    "schedule_appointment",
];

/// Tool calling settings.
#[derive(Clone, Debug)]
pub struct ToolsConfig {
    /// Built-in tools offered to the model.
    pub enabled: Vec<String>,
    /// Tool rounds allowed in one reply; a model asking for more gets the fallback.
    pub max_rounds: u32,
    /// Spoken when tools take longer than `filler_after`.
    pub filler: String,
    pub filler_after: Duration,
    /// Time limit of a built-in tool.
    pub timeout: Duration,
    /// Spoken before hanging up when the model ends the call without a word.
    pub goodbye_message: String,
    /// Spoken before a transfer when the model gives no words of its own.
    pub handoff_message: String,
    /// The business's offset from UTC, in minutes, for "today" and "amanhã".
    pub utc_offset_minutes: i32,
    /// Tools that call your HTTP endpoints.
    pub http: Vec<HttpToolConfig>,
}

impl ToolsConfig {
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.iter().any(|t| t == name)
    }
}

/// A tool backed by an HTTP endpoint: the model's arguments are sent as JSON.
#[derive(Clone, Debug)]
pub struct HttpToolConfig {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: Arc<serde_json::Value>,
    pub url: String,
    /// `POST` (default), `PUT`, `PATCH`, `GET` or `DELETE` (the last two send the
    /// arguments as query parameters).
    pub method: String,
    /// Header values may hold secrets (`${VAR}` is expanded from the environment).
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
}

/// Where `transfer_to_human` sends the caller.
#[derive(Clone, Debug, Default)]
pub struct HandoffConfig {
    /// `<Dial>` this number (E.164) or SIP URI.
    pub number: Option<String>,
    /// `<Enqueue workflowSid=…>` into this TaskRouter workflow (Flex); wins over `number`.
    pub taskrouter_workflow_sid: Option<String>,
}

impl HandoffConfig {
    pub fn is_configured(&self) -> bool {
        self.number.is_some() || self.taskrouter_workflow_sid.is_some()
    }
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
    pub speech: SpeechConfig,
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
    pub twilio: TwilioConfig,
    /// Where call records live: `sqlite://path` (default `sqlite://data/voxrelay.db`)
    /// or `postgres://…`. May hold a password: show [`redact_database_url`] instead.
    pub database_url: Secret,
    /// The agent's name (logs, `/status`).
    pub agent_name: String,
    /// The agent file read at start, if any.
    pub agent_config_path: Option<String>,
    pub tools: ToolsConfig,
    pub handoff: HandoffConfig,
    pub media: MediaConfig,
    pub security: SecurityConfig,
    pub limits: LimitsConfig,
    pub replicas: ReplicasConfig,
}

pub const DEFAULT_SYSTEM_PROMPT: &str = "Você é um assistente de voz simpático e objetivo, atendendo uma ligação telefônica em português do Brasil. \
Responda em frases curtas e naturais, como numa conversa falada. Não use listas, markdown, emojis nem caracteres especiais: tudo o que você escreve será lido em voz alta.";
pub const DEFAULT_WELCOME_GREETING: &str = "Olá! Eu sou o assistente virtual. Como posso ajudar?";
pub const DEFAULT_FALLBACK_MESSAGE: &str =
    "Desculpe, tive um problema para responder agora. Pode repetir, por favor?";
const DEFAULT_OPENAI_MODEL: &str = "gpt-4.1-mini";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/voxrelay.db";
pub const DEFAULT_TOOL_FILLER: &str = "Só um instante, por favor.";
pub const DEFAULT_GOODBYE_MESSAGE: &str = "Obrigado pela ligação. Até logo!";
pub const DEFAULT_HANDOFF_MESSAGE: &str =
    "Vou transferir você para um atendente. Um momento, por favor.";

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
        let agent_config_path = env.get("AGENT_CONFIG");
        let file = match &agent_config_path {
            None => AgentFile::default(),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => match AgentFile::parse(&text) {
                    Ok(file) => file,
                    Err(e) => {
                        env.errors.push(format!(
                            "AGENT_CONFIG {path:?} is not a valid agent file: {e}"
                        ));
                        AgentFile::default()
                    }
                },
                Err(e) => {
                    env.errors
                        .push(format!("AGENT_CONFIG {path:?} cannot be read: {e}"));
                    AgentFile::default()
                }
            },
        };
        // The file fills in what the environment leaves unset.
        file.merge_into(&mut env);
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
            application_reconnect: env.parse("RELAY_APPLICATION_RECONNECT", false),
            languages: Vec::new(),
        };
        let relay = RelayConfig {
            languages: read_languages(&mut env, &file, &relay),
            ..relay
        };

        let speech = speech_config(&mut env);
        let media = media_config(&mut env, &llm, &speech);

        let (api_token, api_token_generated) = match env.get("API_TOKEN") {
            Some(token) if token.len() < 16 => {
                env.errors
                    .push("API_TOKEN must be at least 16 characters long".into());
                (Secret::new(token), false)
            }
            Some(token) => (Secret::new(token), false),
            None => (Secret::new(random_token()), true),
        };
        let twilio = twilio_config(&mut env);
        let database_url = env
            .get("DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            env.errors.push(format!(
                "DATABASE_URL must start with sqlite: or postgres://, got {:?}",
                redact_database_url(&database_url)
            ));
        }
        let tools = read_tools(&mut env, &file, &relay.languages);
        let handoff = HandoffConfig {
            number: env.get("HANDOFF_NUMBER"),
            taskrouter_workflow_sid: env.get("TASKROUTER_WORKFLOW_SID"),
        };
        if tools.is_enabled("transfer_to_human") && !handoff.is_configured() {
            env.errors.push(
                "the transfer_to_human tool needs HANDOFF_NUMBER or TASKROUTER_WORKFLOW_SID ([handoff] in the agent file)"
                    .into(),
            );
        }
        if let Some(sid) = &handoff.taskrouter_workflow_sid
            && !sid.starts_with("WW")
        {
            env.errors.push(format!(
                "TASKROUTER_WORKFLOW_SID must be a workflow SID (WW…), got {sid:?}"
            ));
        }
        let max_calls = env.parse("MAX_CALLS", 2000usize);
        let security = security::security_config(&mut env);
        let limits = security::limits_config(&mut env, max_calls);
        let replicas = replicas::replicas_config(&mut env, &database_url);
        if twilio.validate_signatures && public_url.is_none() && security.trusted_proxies.is_none()
        {
            env.errors.push(
                "TWILIO_AUTH_TOKEN is set, so Twilio's signatures are checked, and that needs the public URL Twilio signed: set PUBLIC_URL (https://your-domain), or TRUSTED_PROXIES=<number of proxies in front of the server> when they set X-Forwarded-Host and X-Forwarded-Proto".into(),
            );
        }
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
            speech,
            log_dir: env.get("LOG_DIR").unwrap_or_else(|| "logs".to_string()),
            dtmf_timeout: Duration::from_millis(env.parse("DTMF_TIMEOUT_MS", 1500u64)),
            max_ws_message_bytes: env.parse("MAX_WS_MESSAGE_BYTES", 64 * 1024usize),
            max_calls,
            drain_timeout: Duration::from_secs(env.parse("DRAIN_TIMEOUT_SECS", 30u64)),
            api_token,
            api_token_generated,
            twilio,
            database_url: Secret::new(database_url),
            replicas,
            agent_name: env
                .get("AGENT_NAME")
                .unwrap_or_else(|| "voxrelay".to_string()),
            agent_config_path,
            tools,
            handoff,
            media,
            security,
            limits,
        };
        if env.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(env.errors))
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
    fn twilio_validation_follows_the_auth_token() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert!(!c.twilio.validate_signatures);
        assert!(c.twilio.rest_credentials().is_none());
        assert_eq!(c.twilio.api_base, "https://api.twilio.com");
        let c = Config::from_vars(vars(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "tok-secret"),
            ("PUBLIC_URL", "https://voz.example.com"),
        ]))
        .unwrap();
        assert!(c.twilio.validate_signatures);
        let (user, pass) = c.twilio.rest_credentials().unwrap();
        assert_eq!((user.as_str(), pass.expose()), ("AC123", "tok-secret"));
        assert!(!format!("{c:?}").contains("tok-secret"));
        let c = Config::from_vars(vars(&[
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_VALIDATE_SIGNATURES", "false"),
        ]))
        .unwrap();
        assert!(!c.twilio.validate_signatures);
        assert!(c.twilio.validation_disabled_by_config);
        assert!(c.twilio.security_warning().unwrap().contains("NOT checked"));
        let c = Config::from_vars(vars(&[
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TRUSTED_PROXIES", "1"),
        ]))
        .unwrap();
        assert_eq!(c.twilio.security_warning(), None);
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert!(
            c.twilio
                .security_warning()
                .unwrap()
                .contains("TWILIO_AUTH_TOKEN")
        );
    }

    #[test]
    fn the_example_environment_file_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
        let vars: HashMap<String, String> = dotenvy::from_path_iter(path)
            .unwrap()
            .map(|item| item.unwrap())
            .collect();
        assert!(vars.contains_key("MAX_CALL_SECS"));
        let c = Config::from_vars(vars).unwrap();
        assert_eq!(c.limits.setup_timeout, Duration::from_secs(10));
        assert!(!c.security.allow_static_twiml);
    }

    #[test]
    fn signature_checks_need_a_fixed_public_url_or_trusted_proxies() {
        let err = Config::from_vars(vars(&[("TWILIO_AUTH_TOKEN", "tok")])).unwrap_err();
        assert!(err.to_string().contains("PUBLIC_URL"), "{err}");
        for extra in [
            ("PUBLIC_URL", "https://voz.example.com"),
            ("RAILWAY_PUBLIC_DOMAIN", "voz.up.railway.app"),
            ("TRUSTED_PROXIES", "1"),
            ("TWILIO_VALIDATE_SIGNATURES", "false"),
        ] {
            assert!(
                Config::from_vars(vars(&[("TWILIO_AUTH_TOKEN", "tok"), extra])).is_ok(),
                "{extra:?}"
            );
        }
        let c = Config::from_vars(vars(&[
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TRUSTED_PROXIES", "2"),
        ]))
        .unwrap();
        assert_eq!(c.security.trusted_proxies, Some(2));
        assert!(!c.security.allow_static_twiml);
        assert!(Config::from_vars(vars(&[("TRUSTED_PROXIES", "many")])).is_err());
        assert!(Config::from_vars(vars(&[("CALL_TOKEN_SECRET", "short")])).is_err());
        assert_eq!(
            Config::from_vars(HashMap::new()).unwrap().limits.max_call,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn twilio_api_key_wins_over_the_auth_token_for_rest() {
        let c = Config::from_vars(vars(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_API_KEY_SID", "SK9"),
            ("TWILIO_API_KEY_SECRET", "key-secret"),
            ("TWILIO_API_BASE", "http://127.0.0.1:9/"),
            ("RAILWAY_PUBLIC_DOMAIN", "voz.up.railway.app"),
        ]))
        .unwrap();
        let (user, pass) = c.twilio.rest_credentials().unwrap();
        assert_eq!((user.as_str(), pass.expose()), ("SK9", "key-secret"));
        assert_eq!(c.twilio.api_base, "http://127.0.0.1:9");
        assert!(!format!("{c:?}").contains("key-secret"));
    }

    #[test]
    fn twilio_settings_are_checked() {
        let err = Config::from_vars(vars(&[
            ("TWILIO_ACCOUNT_SID", "XX1"),
            ("TWILIO_API_KEY_SID", "SK1"),
            ("TWILIO_PHONE_NUMBER", "11 9999-0000"),
            ("TWILIO_VALIDATE_SIGNATURES", "true"),
        ]))
        .unwrap_err()
        .to_string();
        for needle in [
            "TWILIO_ACCOUNT_SID must start with AC",
            "TWILIO_API_KEY_SECRET",
            "TWILIO_PHONE_NUMBER",
            "TWILIO_VALIDATE_SIGNATURES=true needs TWILIO_AUTH_TOKEN",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn e164_numbers() {
        for ok in ["+5511999990000", "+14155550100", "+44"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "5511999990000",
            "+0551199",
            "+55 11 99999",
            "+",
            "+1234567890123456",
            "+55a1",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn database_url_defaults_to_sqlite_and_is_checked() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(c.database_url.expose(), "sqlite://data/voxrelay.db");
        let c =
            Config::from_vars(vars(&[("DATABASE_URL", "postgresql://u:pw@db:5432/x")])).unwrap();
        assert!(!format!("{c:?}").contains("pw@"));
        let err = Config::from_vars(vars(&[("DATABASE_URL", "mysql://u:hunter2@db/x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_URL") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn database_urls_are_redacted() {
        assert_eq!(
            redact_database_url("postgres://user:p%40ss@host:5432/db?sslmode=require"),
            "postgres://user:***@host:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_database_url("postgres://user@host/db"),
            "postgres://user@host/db"
        );
        assert_eq!(
            redact_database_url("postgres://host/db?user=a@b"),
            "postgres://host/db?user=a@b"
        );
        assert_eq!(
            redact_database_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_database_url("sqlite://data/voxrelay.db"),
            "sqlite://data/voxrelay.db"
        );
    }

    #[test]
    fn speech_defaults_and_overrides() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(
            c.speech.openai_realtime_url,
            "wss://api.openai.com/v1/realtime"
        );
        assert_eq!(c.speech.openai_realtime_model, "gpt-realtime");
        assert_eq!(c.speech.openai_realtime_voice, "marin");
        assert_eq!(c.speech.elevenlabs_api_base, "wss://api.elevenlabs.io");
        assert_eq!(c.speech.elevenlabs_tts_model, "eleven_flash_v2_5");
        assert_eq!(c.speech.elevenlabs_stt_model, "scribe_v2_realtime");
        assert_eq!(c.speech.connect_timeout, Duration::from_secs(5));
        let c = Config::from_vars(vars(&[
            ("ELEVENLABS_API_KEY", "xi-secret"),
            (
                "ELEVENLABS_API_BASE",
                "wss://api.eu.residency.elevenlabs.io/",
            ),
            ("ELEVENLABS_AGENT_ID", "agent_1"),
        ]))
        .unwrap();
        assert_eq!(
            c.speech.elevenlabs_api_base,
            "wss://api.eu.residency.elevenlabs.io"
        );
        assert_eq!(c.speech.elevenlabs_agent_id.as_deref(), Some("agent_1"));
        assert!(!format!("{c:?}").contains("xi-secret"));
        let err = Config::from_vars(vars(&[
            ("OPENAI_REALTIME_URL", "https://api.openai.com/v1/realtime"),
            ("ELEVENLABS_API_BASE", "api.elevenlabs.io"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("OPENAI_REALTIME_URL"), "{err}");
        assert!(err.contains("ELEVENLABS_API_BASE"), "{err}");
    }

    #[test]
    fn cascade_stt_choice() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(c.speech.cascade_stt, CascadeStt::ElevenLabs);
        let c = Config::from_vars(vars(&[("CASCADE_STT", "OpenAI")])).unwrap();
        assert_eq!(c.speech.cascade_stt, CascadeStt::OpenAi);
        let err = Config::from_vars(vars(&[("CASCADE_STT", "whisper")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CASCADE_STT"), "{err}");
    }

    #[test]
    fn voice_falls_back_to_elevenlabs_voice_id() {
        let c = Config::from_vars(vars(&[("ELEVENLABS_VOICE_ID", "abc123")])).unwrap();
        assert_eq!(c.relay.tts_voice.as_deref(), Some("abc123"));
    }

    fn write_agent_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join("voxrelay-config-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn default_tools_and_languages() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(c.tools.enabled, vec!["end_call", "schedule_appointment"]);
        assert_eq!(c.relay.languages.len(), 1);
        assert_eq!(c.relay.languages[0].code, "pt-BR");
        assert_eq!(c.tools.utc_offset_minutes, -180);
        let c = Config::from_vars(vars(&[
            ("HANDOFF_NUMBER", "+5511988887777"),
            ("LANGUAGES", "pt-BR, en-US"),
        ]))
        .unwrap();
        assert_eq!(
            c.tools.enabled,
            vec![
                "end_call",
                "schedule_appointment",
                "transfer_to_human",
                "switch_language"
            ]
        );
        assert_eq!(c.relay.languages[1].code, "en-US");
        let c = Config::from_vars(vars(&[("AGENT_TOOLS", "none")])).unwrap();
        assert!(c.tools.enabled.is_empty());
    }

    #[test]
    fn the_example_agent_file_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/agent.example.toml");
        let c = Config::from_vars(vars(&[("AGENT_CONFIG", path), ("AGENDA_TOKEN", "tok-123")]))
            .unwrap();
        assert_eq!(c.agent_name, "Recepção Clínica Sorriso");
        assert!(c.system_prompt.contains("Clínica Sorriso"));
        assert_eq!(c.relay.language, "pt-BR");
        assert_eq!(c.relay.speech_model.as_deref(), Some("nova-3-general"));
        let codes: Vec<_> = c.relay.languages.iter().map(|l| l.code.as_str()).collect();
        assert_eq!(codes, vec!["pt-BR", "en-US"]);
        assert_eq!(c.handoff.number.as_deref(), Some("+5511999999999"));
        assert_eq!(c.llm.temperature, Some(0.6));
        assert_eq!(c.tools.http.len(), 1);
        let tool = &c.tools.http[0];
        assert_eq!(tool.headers[0].1.expose(), "Bearer tok-123");
        assert!(
            !format!("{c:?}").contains("tok-123"),
            "headers are redacted"
        );
    }

    #[test]
    fn the_environment_overrides_the_agent_file() {
        let path = write_agent_file(
            "override",
            "system_prompt = \"do arquivo\"\nwelcome_greeting = \"Oi do arquivo\"\n[llm]\nmodel = \"file-model\"\n[tools]\nfiller = \"\"\n",
        );
        let c = Config::from_vars(vars(&[
            ("AGENT_CONFIG", &path),
            ("SYSTEM_PROMPT", "do ambiente"),
            ("OPENAI_API_KEY", "sk-x"),
        ]))
        .unwrap();
        assert_eq!(c.system_prompt, "do ambiente");
        assert_eq!(c.relay.welcome_greeting, "Oi do arquivo");
        assert_eq!(c.llm.model, "file-model");
        assert_eq!(c.tools.filler, "", "an empty filler turns it off");
        let c =
            Config::from_vars(vars(&[("AGENT_CONFIG", &path), ("WELCOME_GREETING", "")])).unwrap();
        assert_eq!(c.relay.welcome_greeting, "");
    }

    #[test]
    fn agent_file_problems_are_listed_together() {
        let path = write_agent_file(
            "bad",
            r#"
[tools]
enabled = ["end_call", "fly_to_moon", "transfer_to_human", "switch_language"]
max_rounds = 50

[[http_tools]]
name = "end_call"
description = ""
url = "ftp://x"
method = "TRACE"
headers = { Authorization = "Bearer ${MISSING_TOKEN}" }
"#,
        );
        let err = Config::from_vars(vars(&[("AGENT_CONFIG", &path)]))
            .unwrap_err()
            .to_string();
        for needle in [
            "fly_to_moon",
            "transfer_to_human tool needs HANDOFF_NUMBER",
            "switch_language tool needs at least two languages",
            "MAX_TOOL_ROUNDS",
            "name is already taken",
            "needs a description",
            "url must start with https://",
            "method must be",
            "MISSING_TOKEN",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        let typo = write_agent_file("typo", "sistem_prompt = \"x\"\n");
        let err = Config::from_vars(vars(&[("AGENT_CONFIG", &typo)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sistem_prompt"), "{err}");
        let err = Config::from_vars(vars(&[("AGENT_CONFIG", "/nonexistent/agent.toml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("-03:00"), Some(-180));
        assert_eq!(parse_utc_offset("+0530"), Some(330));
        assert_eq!(parse_utc_offset("UTC-3"), Some(-180));
        assert_eq!(parse_utc_offset("abc"), None);
    }
}
