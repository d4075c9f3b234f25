//! Configuration: read once at start from the environment (and `.env`, loaded by
//! `main`) and the optional agent file (`AGENT_CONFIG`, TOML; see
//! `agent.example.toml`), validated with every problem listed at once, secrets
//! wrapped so they never reach a log line. Environment variables override the file.
//!
//! Tests build a [`Config`] from a plain map with [`Config::from_vars`], so they never
//! touch the process environment.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub mod api_token;
mod replicas;
mod security;
pub use replicas::ReplicasConfig;
pub use security::{LimitsConfig, SecurityConfig};

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

/// Twilio account, REST API and webhook security.
#[derive(Clone, Debug)]
pub struct TwilioConfig {
    /// `AC…`: the account the REST API acts on.
    pub account_sid: Option<String>,
    /// The primary auth token: signs webhooks (and authenticates REST calls unless an
    /// API key is set).
    pub auth_token: Option<Secret>,
    /// `SK…`: an API key for the REST API (recommended over the auth token).
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<Secret>,
    /// Default caller id for outbound calls (E.164).
    pub phone_number: Option<String>,
    /// REST API base URL (no trailing slash); tests point it at a local fake.
    pub api_base: String,
    /// Time allowed for one REST request to Twilio.
    pub timeout: Duration,
    /// Whether `X-Twilio-Signature` is checked on every Twilio-facing route: on
    /// whenever the auth token is set, unless `TWILIO_VALIDATE_SIGNATURES=false`.
    pub validate_signatures: bool,
    /// Whether `TWILIO_VALIDATE_SIGNATURES=false` turned validation off explicitly.
    pub validation_disabled_by_config: bool,
}

impl TwilioConfig {
    /// What to shout at start when Twilio-facing routes are not authenticated.
    pub fn security_warning(&self) -> Option<&'static str> {
        if self.validate_signatures {
            None
        } else if self.validation_disabled_by_config {
            Some(
                "TWILIO_VALIDATE_SIGNATURES=false: X-Twilio-Signature is NOT checked. Anyone who finds this server can call /twiml, /twilio/* and open /websocket, spending your LLM credits and forging call records. Use this only for local tests.",
            )
        } else {
            Some(
                "TWILIO_AUTH_TOKEN is not set: X-Twilio-Signature cannot be checked, so /twiml, /twilio/* and /websocket accept anyone. Set TWILIO_AUTH_TOKEN before taking real calls.",
            )
        }
    }

    /// The REST API credentials (user, password), if the account is configured.
    pub fn rest_credentials(&self) -> Option<(String, Secret)> {
        self.account_sid.as_ref()?;
        match (&self.api_key_sid, &self.api_key_secret, &self.auth_token) {
            (Some(sid), Some(secret), _) => Some((sid.clone(), secret.clone())),
            (_, _, Some(token)) => Some((self.account_sid.clone()?, token.clone())),
            _ => None,
        }
    }
}

/// Whether `number` is an E.164 phone number: `+`, then 2 to 15 digits, not starting with 0.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
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

/// Which speech pipeline a Media Streams call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaPipelineKind {
    /// OpenAI Realtime speech to speech (µ-law both ways, tools from the registry).
    OpenAiRealtime,
    /// An ElevenLabs Conversational AI agent.
    ElevenLabsAgent,
    /// Speech-to-text, our agent and LLM, ElevenLabs streaming TTS.
    Cascade,
}

impl MediaPipelineKind {
    pub const NAMES: [&'static str; 3] = ["openai-realtime", "elevenlabs-agent", "cascade"];

    /// From `MEDIA_PIPELINE` or a `<Parameter name="pipeline">` (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "openai-realtime" | "realtime" => Some(Self::OpenAiRealtime),
            "elevenlabs-agent" | "elevenlabs" => Some(Self::ElevenLabsAgent),
            "cascade" => Some(Self::Cascade),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAiRealtime => "openai-realtime",
            Self::ElevenLabsAgent => "elevenlabs-agent",
            Self::Cascade => "cascade",
        }
    }
}

/// The Media Streams mode (`/twiml/stream`, `/media-stream`).
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// `MEDIA_PIPELINE`; unset: `openai-realtime` with `OPENAI_API_KEY`, else
    /// `elevenlabs-agent` with `ELEVENLABS_AGENT_ID`, else `cascade` with
    /// `ELEVENLABS_API_KEY`, else none (media calls are refused politely: hung up).
    pub pipeline: Option<MediaPipelineKind>,
    /// `RECORD_CALLS`: a stereo WAV per call (caller left, agent right).
    pub record_calls: bool,
    /// `RECORDINGS_DIR` (default `recordings`).
    pub recordings_dir: String,
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

fn twilio_config(env: &mut Vars) -> TwilioConfig {
    let account_sid = env.get("TWILIO_ACCOUNT_SID");
    if let Some(sid) = &account_sid
        && !sid.starts_with("AC")
    {
        env.errors.push(format!(
            "TWILIO_ACCOUNT_SID must start with AC, got {sid:?}"
        ));
    }
    let auth_token = env.get("TWILIO_AUTH_TOKEN").map(Secret::new);
    let api_key_sid = env.get("TWILIO_API_KEY_SID");
    let api_key_secret = env.get("TWILIO_API_KEY_SECRET").map(Secret::new);
    if api_key_sid.is_some() != api_key_secret.is_some() {
        env.errors
            .push("TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET must be set together".into());
    }
    if let Some(sid) = &api_key_sid
        && !sid.starts_with("SK")
    {
        env.errors.push(format!(
            "TWILIO_API_KEY_SID must start with SK, got {sid:?}"
        ));
    }
    let phone_number = env.get("TWILIO_PHONE_NUMBER");
    if let Some(number) = &phone_number
        && !is_e164(number)
    {
        env.errors.push(format!(
            "TWILIO_PHONE_NUMBER must be an E.164 number like +5511999990000, got {number:?}"
        ));
    }
    let api_base = env
        .get("TWILIO_API_BASE")
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "https://api.twilio.com".to_string());
    if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
        env.errors.push(format!(
            "TWILIO_API_BASE must start with https:// (or http://), got {api_base:?}"
        ));
    }
    let requested = match env
        .get("TWILIO_VALIDATE_SIGNATURES")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None => None,
        Some("true" | "1" | "yes" | "on") => Some(true),
        Some("false" | "0" | "no" | "off") => Some(false),
        Some(other) => {
            env.errors.push(format!(
                "TWILIO_VALIDATE_SIGNATURES must be true or false, got {other:?}"
            ));
            None
        }
    };
    if requested == Some(true) && auth_token.is_none() {
        env.errors
            .push("TWILIO_VALIDATE_SIGNATURES=true needs TWILIO_AUTH_TOKEN".into());
    }
    TwilioConfig {
        validate_signatures: auth_token.is_some() && requested != Some(false),
        validation_disabled_by_config: requested == Some(false),
        account_sid,
        auth_token,
        api_key_sid,
        api_key_secret,
        phone_number,
        api_base,
        timeout: Duration::from_millis(env.parse("TWILIO_TIMEOUT_MS", 15_000u64)),
    }
}

/// A database URL fit for a log line: the password (if any) becomes `***`.
pub fn redact_database_url(url: &str) -> String {
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url.to_string(),
    };
    let Some(scheme_end) = url.find("://") else {
        return url;
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.clone();
    };
    let user_info = &rest[..at];
    let user = match user_info.find(':') {
        Some(colon) => format!("{}:***", &user_info[..colon]),
        None => user_info.to_string(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], user, &rest[at..])
}

/// The `[speech]` part of the configuration.
fn speech_config(env: &mut Vars) -> SpeechConfig {
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

/// The `[media]` part of the configuration.
fn media_config(env: &mut Vars, llm: &LlmConfig, speech: &SpeechConfig) -> MediaConfig {
    let pipeline = match env.get("MEDIA_PIPELINE") {
        Some(name) => {
            let kind = MediaPipelineKind::parse(&name);
            if kind.is_none() {
                env.errors.push(format!(
                    "MEDIA_PIPELINE must be one of {}, got {name:?}",
                    MediaPipelineKind::NAMES.join(", ")
                ));
            }
            kind
        }
        None if llm.openai_api_key.is_some() => Some(MediaPipelineKind::OpenAiRealtime),
        None if speech.elevenlabs_agent_id.is_some() && speech.elevenlabs_api_key.is_some() => {
            Some(MediaPipelineKind::ElevenLabsAgent)
        }
        None if speech.elevenlabs_api_key.is_some() => Some(MediaPipelineKind::Cascade),
        None => None,
    };
    MediaConfig {
        pipeline,
        record_calls: env.parse("RECORD_CALLS", false),
        recordings_dir: env
            .get("RECORDINGS_DIR")
            .unwrap_or_else(|| "recordings".to_string()),
    }
}

/// 32 random bytes as hex, for a generated API token.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source only fails on broken systems; a panic at start is clear.
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent file (`AGENT_CONFIG`), as written. Unknown keys are errors, so a typo
/// never silently falls back to a default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    name: Option<String>,
    system_prompt: Option<String>,
    welcome_greeting: Option<String>,
    fallback_message: Option<String>,
    /// The main language; defaults to the first of `languages`.
    language: Option<String>,
    #[serde(default)]
    languages: Vec<LanguageConfig>,
    #[serde(default)]
    llm: FileLlm,
    #[serde(default)]
    tools: FileTools,
    #[serde(default)]
    handoff: FileHandoff,
    #[serde(default)]
    http_tools: Vec<FileHttpTool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLlm {
    provider: Option<String>,
    model: Option<String>,
    base_url: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    timeout_ms: Option<u64>,
    azure_endpoint: Option<String>,
    azure_deployment: Option<String>,
    azure_api_version: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTools {
    enabled: Option<Vec<String>>,
    max_rounds: Option<u32>,
    filler: Option<String>,
    filler_after_ms: Option<u64>,
    timeout_ms: Option<u64>,
    goodbye_message: Option<String>,
    handoff_message: Option<String>,
    utc_offset: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHandoff {
    number: Option<String>,
    taskrouter_workflow_sid: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttpTool {
    name: String,
    #[serde(default)]
    description: String,
    url: String,
    method: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    parameters: Option<serde_json::Value>,
    timeout_ms: Option<u64>,
}

impl AgentFile {
    fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Copies the file's settings into the variables the environment left unset, so
    /// the environment wins and every value is validated in one place.
    fn merge_into(&self, env: &mut Vars) {
        env.fill("AGENT_NAME", self.name.clone());
        env.fill("SYSTEM_PROMPT", self.system_prompt.clone());
        env.fill("FALLBACK_MESSAGE", self.fallback_message.clone());
        let main = self
            .language
            .clone()
            .or_else(|| self.languages.first().map(|l| l.code.clone()));
        env.fill("LANGUAGE", main);
        // The main language's own entry supplies the session's speech settings.
        let main = env.get("LANGUAGE");
        if let Some(entry) = self
            .languages
            .iter()
            .find(|l| Some(&l.code) == main.as_ref())
        {
            env.fill("TTS_PROVIDER", entry.tts_provider.clone());
            if env.get("ELEVENLABS_VOICE_ID").is_none() {
                env.fill("TTS_VOICE", entry.voice.clone());
            }
            env.fill(
                "TRANSCRIPTION_PROVIDER",
                entry.transcription_provider.clone(),
            );
            env.fill("SPEECH_MODEL", entry.speech_model.clone());
        }
        env.fill("LLM_PROVIDER", self.llm.provider.clone());
        env.fill("OPENAI_MODEL", self.llm.model.clone());
        env.fill("OPENAI_BASE_URL", self.llm.base_url.clone());
        env.fill(
            "LLM_TEMPERATURE",
            self.llm.temperature.map(|t| t.to_string()),
        );
        env.fill("LLM_MAX_TOKENS", self.llm.max_tokens.map(|t| t.to_string()));
        env.fill("LLM_TIMEOUT_MS", self.llm.timeout_ms.map(|t| t.to_string()));
        env.fill("AZURE_OPENAI_ENDPOINT", self.llm.azure_endpoint.clone());
        env.fill("AZURE_OPENAI_DEPLOYMENT", self.llm.azure_deployment.clone());
        env.fill(
            "AZURE_OPENAI_API_VERSION",
            self.llm.azure_api_version.clone(),
        );
        env.fill(
            "AGENT_TOOLS",
            self.tools.enabled.as_ref().map(|list| {
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(",")
                }
            }),
        );
        env.fill(
            "MAX_TOOL_ROUNDS",
            self.tools.max_rounds.map(|n| n.to_string()),
        );
        env.fill(
            "TOOL_FILLER_AFTER_MS",
            self.tools.filler_after_ms.map(|n| n.to_string()),
        );
        env.fill(
            "TOOL_TIMEOUT_MS",
            self.tools.timeout_ms.map(|n| n.to_string()),
        );
        env.fill("GOODBYE_MESSAGE", self.tools.goodbye_message.clone());
        env.fill("HANDOFF_MESSAGE", self.tools.handoff_message.clone());
        env.fill("AGENT_UTC_OFFSET", self.tools.utc_offset.clone());
        env.fill("HANDOFF_NUMBER", self.handoff.number.clone());
        env.fill(
            "TASKROUTER_WORKFLOW_SID",
            self.handoff.taskrouter_workflow_sid.clone(),
        );
        // An empty greeting or filler is meaningful (it turns them off).
        for (name, value) in [
            ("WELCOME_GREETING", &self.welcome_greeting),
            ("TOOL_FILLER", &self.tools.filler),
        ] {
            if let Some(value) = value
                && !env.vars.contains_key(name)
            {
                env.vars.insert(name.to_string(), value.clone());
            }
        }
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

/// Tool settings, built-in tools and HTTP tools.
fn read_tools(env: &mut Vars, file: &AgentFile, languages: &[LanguageConfig]) -> ToolsConfig {
    let handoff_set =
        env.get("HANDOFF_NUMBER").is_some() || env.get("TASKROUTER_WORKFLOW_SID").is_some();
    let enabled: Vec<String> = match env.get("AGENT_TOOLS") {
        Some(list) if list.eq_ignore_ascii_case("none") => Vec::new(),
        Some(list) => {
            let mut names = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !BUILTIN_TOOLS.contains(&name) {
                    env.errors.push(format!(
                        "unknown built-in tool {name:?} in AGENT_TOOLS / [tools] enabled; known: {}",
                        BUILTIN_TOOLS.join(", ")
                    ));
                } else if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
            names
        }
        None => {
            let mut names = vec!["end_call".to_string(), "schedule_appointment".to_string()];
            if handoff_set {
                names.push("transfer_to_human".into());
            }
            if languages.len() > 1 {
                names.push("switch_language".into());
            }
            names
        }
    };
    if enabled.iter().any(|n| n == "switch_language") && languages.len() < 2 {
        env.errors.push(
            "the switch_language tool needs at least two languages (LANGUAGES or [[languages]] in the agent file)"
                .into(),
        );
    }
    let max_rounds = env.parse("MAX_TOOL_ROUNDS", 3u32);
    if !(1..=10).contains(&max_rounds) {
        env.errors.push(format!(
            "MAX_TOOL_ROUNDS must be between 1 and 10, got {max_rounds}"
        ));
    }
    let utc_offset_minutes = match env.get("AGENT_UTC_OFFSET") {
        None => -180,
        Some(raw) => parse_utc_offset(&raw).unwrap_or_else(|| {
            env.errors.push(format!(
                "AGENT_UTC_OFFSET must look like -03:00 or +01:00, got {raw:?}"
            ));
            0
        }),
    };
    let mut http = Vec::new();
    for tool in &file.http_tools {
        if let Some(t) = read_http_tool(env, tool, &http) {
            http.push(t);
        }
    }
    ToolsConfig {
        enabled,
        max_rounds,
        filler: env
            .get_allow_empty("TOOL_FILLER")
            .unwrap_or_else(|| DEFAULT_TOOL_FILLER.to_string()),
        filler_after: Duration::from_millis(env.parse("TOOL_FILLER_AFTER_MS", 1000u64)),
        timeout: Duration::from_millis(env.parse("TOOL_TIMEOUT_MS", 10_000u64)),
        goodbye_message: env
            .get("GOODBYE_MESSAGE")
            .unwrap_or_else(|| DEFAULT_GOODBYE_MESSAGE.to_string()),
        handoff_message: env
            .get("HANDOFF_MESSAGE")
            .unwrap_or_else(|| DEFAULT_HANDOFF_MESSAGE.to_string()),
        utc_offset_minutes,
        http,
    }
}

fn read_http_tool(
    env: &mut Vars,
    tool: &FileHttpTool,
    seen: &[HttpToolConfig],
) -> Option<HttpToolConfig> {
    let name = tool.name.trim();
    let mut problems = Vec::new();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push("name must be 1-64 letters, digits, _ or -".to_string());
    }
    if BUILTIN_TOOLS.contains(&name) || seen.iter().any(|t| t.name == name) {
        problems.push("name is already taken".to_string());
    }
    if tool.description.trim().is_empty() {
        problems.push("needs a description (the model reads it)".to_string());
    }
    if !(tool.url.starts_with("https://") || tool.url.starts_with("http://")) {
        problems.push(format!("url must start with https://, got {:?}", tool.url));
    }
    let method = tool
        .method
        .as_deref()
        .unwrap_or("POST")
        .to_ascii_uppercase();
    if !["POST", "PUT", "PATCH", "GET", "DELETE"].contains(&method.as_str()) {
        problems.push(format!(
            "method must be POST, PUT, PATCH, GET or DELETE, got {method:?}"
        ));
    }
    let parameters = tool
        .parameters
        .clone()
        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        problems.push("parameters must be a JSON schema object".to_string());
    }
    let timeout_ms = tool.timeout_ms.unwrap_or(5000);
    if !(1..=60_000).contains(&timeout_ms) {
        problems.push(format!(
            "timeout_ms must be between 1 and 60000, got {timeout_ms}"
        ));
    }
    let mut headers = Vec::new();
    for (key, value) in &tool.headers {
        match expand_vars(value, &env.vars) {
            Ok(v) => headers.push((key.clone(), Secret::new(v))),
            Err(var) => problems.push(format!(
                "header {key:?} uses ${{{var}}}, which is not set in the environment"
            )),
        }
    }
    if !problems.is_empty() {
        for problem in problems {
            env.errors
                .push(format!("http tool {:?}: {problem}", tool.name));
        }
        return None;
    }
    Some(HttpToolConfig {
        name: name.to_string(),
        description: tool.description.trim().to_string(),
        parameters: Arc::new(parameters),
        url: tool.url.clone(),
        method,
        headers,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// Replaces every `${NAME}` with the variable's value; `Err(NAME)` when unset.
fn expand_vars(value: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `-03:00`, `+0100`, `-3` → minutes east of UTC.
fn parse_utc_offset(raw: &str) -> Option<i32> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("UTC").unwrap_or(raw);
    let (sign, digits) = match raw.as_bytes().first()? {
        b'-' => (-1, &raw[1..]),
        b'+' => (1, &raw[1..]),
        _ => (1, raw),
    };
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?),
        None if digits.len() == 4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        None => (digits.parse().ok()?, 0),
    };
    if h > 14 || m > 59 {
        return None;
    }
    Some(sign * (h * 60 + m))
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

    /// Sets `name` to `value` unless the environment already has it.
    fn fill(&mut self, name: &str, value: Option<String>) {
        if let Some(value) = value
            && self.get(name).is_none()
        {
            self.vars.insert(name.to_string(), value);
        }
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
