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
    pub twilio: TwilioConfig,
    /// Where call records live: `sqlite://path` (default `sqlite://data/voxrelay.db`)
    /// or `postgres://…`. May hold a password: show [`redact_database_url`] instead.
    pub database_url: Secret,
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
        let config = Config {
            port,
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
            twilio,
            database_url: Secret::new(database_url),
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
        let c = Config::from_vars(vars(&[("TWILIO_AUTH_TOKEN", "tok")])).unwrap();
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
    fn twilio_api_key_wins_over_the_auth_token_for_rest() {
        let c = Config::from_vars(vars(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_API_KEY_SID", "SK9"),
            ("TWILIO_API_KEY_SECRET", "key-secret"),
            ("TWILIO_API_BASE", "http://127.0.0.1:9/"),
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
    fn voice_falls_back_to_elevenlabs_voice_id() {
        let c = Config::from_vars(vars(&[("ELEVENLABS_VOICE_ID", "abc123")])).unwrap();
        assert_eq!(c.relay.tts_voice.as_deref(), Some("abc123"));
    }
}
