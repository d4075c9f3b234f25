//! Configuration: read once at start from the environment (and `.env`, loaded by
//! `main`), the optional agent file (`AGENT_CONFIG`, TOML; see
//! `agent.example.toml`) and the optional folder of agents (`AGENTS_DIR`), validated with every problem listed at once, secrets
//! wrapped so they never reach a log line. Environment variables override the file.
//!
//! Tests build a [`Config`] from a plain map with [`Config::from_vars`], so they never
//! touch the process environment.
//!
//! May import nothing of voxrelay: every module may import it (the order is checked
//! by `.ci/layers`).

use std::collections::HashMap;
use std::time::Duration;

mod agent_file;
mod agents;
pub mod api_token;
mod endings;
mod llm;
mod media;
mod relay;
mod replicas;
mod security;
mod sip;
mod speech;
mod store;
mod tools;
mod twilio;
mod vars;
use agent_file::{AgentFile, Precedence};
use agents::AgentSource;
pub use agents::{AgentIdentity, DEFAULT_AGENT, valid_id as valid_agent_id};
pub use endings::EndingsConfig;
pub use llm::{LlmConfig, LlmProviderKind};
pub use media::{MediaConfig, MediaPipelineKind};
pub use relay::{DEFAULT_WELCOME_GREETING, LanguageConfig, RelayConfig};
pub use replicas::ReplicasConfig;
pub use security::{LimitsConfig, SecurityConfig};
pub use sip::{SipAuth, SipConfig, SipProvider};
pub use speech::{CascadeStt, SpeechConfig};
pub use store::{DEFAULT_DATABASE_URL, redact_database_url};
pub use tools::{
    BuiltinTool, DEFAULT_GOODBYE_MESSAGE, DEFAULT_HANDOFF_MESSAGE, DEFAULT_TOOL_FILLER,
    HandoffConfig, HttpToolConfig, ToolsConfig,
};
pub use twilio::{E164, TwilioConfig};
pub use vars::{ConfigError, Secret};
use vars::{Vars, random_token};

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
    /// SIP mode (OpenAI answers a SIP trunk; README "SIP mode").
    pub sip: SipConfig,
    /// Silence and goodbye endings.
    pub endings: EndingsConfig,
    /// Which agent this configuration is: its id, numbers and call limit.
    pub agent: AgentIdentity,
    /// The agents of `AGENTS_DIR`, each a whole configuration (the server's
    /// settings are the same in all; only the agent's differ). Empty without it.
    pub agents: Vec<Config>,
}

pub const DEFAULT_SYSTEM_PROMPT: &str = "Você é um assistente de voz simpático e objetivo, atendendo uma ligação telefônica em português do Brasil. \
Responda em frases curtas e naturais, como numa conversa falada. Não use listas, markdown, emojis nem caracteres especiais: tudo o que você escreve será lido em voz alta.";
pub const DEFAULT_FALLBACK_MESSAGE: &str =
    "Desculpe, tive um problema para responder agora. Pode repetir, por favor?";

impl Config {
    /// Reads the process environment (call `dotenvy::dotenv()` first to load `.env`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Builds and validates a configuration from name/value pairs (tests, benches).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Builds and validates a configuration from a map of variables: the default
    /// agent (`AGENT_CONFIG` and the environment), then the agents of `AGENTS_DIR`.
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let path = vars
            .get("AGENT_CONFIG")
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty());
        let source = AgentSource {
            id: DEFAULT_AGENT.to_string(),
            path,
            precedence: Precedence::Environment,
        };
        let (mut config, mut errors) = Self::read(vars.clone(), &source);
        if let Some(dir) = vars.get("AGENTS_DIR").filter(|d| !d.trim().is_empty()) {
            let (agents, agent_errors) = agents::read_dir(dir.trim(), &vars, &config);
            config.agents = agents;
            errors.extend(agent_errors);
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(errors))
        }
    }

    /// One agent's whole configuration: its file merged with the environment as
    /// `source` says. Returns the problems rather than failing, so every agent's
    /// can be listed together.
    fn read(vars: HashMap<String, String>, source: &AgentSource) -> (Self, Vec<String>) {
        let mut env = Vars {
            vars,
            errors: Vec::new(),
        };
        let agent_config_path = source.path.clone();
        let file = match &agent_config_path {
            None => AgentFile::default(),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => match AgentFile::parse(&text) {
                    Ok(file) => file,
                    Err(e) => {
                        env.errors
                            .push(format!("agent file {path:?} is not valid: {e}"));
                        AgentFile::default()
                    }
                },
                Err(e) => {
                    env.errors
                        .push(format!("agent file {path:?} cannot be read: {e}"));
                    AgentFile::default()
                }
            },
        };
        // The file fills in what the environment leaves unset (or, in AGENTS_DIR,
        // overrides it).
        file.merge_into(&mut env, source.precedence);
        let identity = agents::identity(&mut env, source, &file);
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

        let llm = llm::read(&mut env);
        let relay = relay::read(&mut env, &file);
        let speech = speech::read(&mut env);
        let media = media::read(&mut env, &llm, &speech);
        let sip = sip::read(&mut env, &llm, &speech);
        let endings = endings::read(&mut env);

        let (api_token, api_token_generated) = match env.get("API_TOKEN") {
            Some(token) if token.len() < 16 => {
                env.errors
                    .push("API_TOKEN must be at least 16 characters long".into());
                (Secret::new(token), false)
            }
            Some(token) => (Secret::new(token), false),
            None => (Secret::new(random_token()), true),
        };
        let twilio = twilio::read(&mut env);
        let database_url = store::read(&mut env);
        let handoff = tools::read_handoff(&mut env);
        let tools = tools::read(&mut env, &file, &relay.languages, &handoff);
        let max_calls = env.parse("MAX_CALLS", 2000usize);
        let security = security::read(&mut env);
        let limits = security::read_limits(&mut env, max_calls);
        let replicas = replicas::read(&mut env, database_url.expose());
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
            database_url,
            replicas,
            sip,
            endings,
            agent_name: env
                .get("AGENT_NAME")
                .unwrap_or_else(|| "voxrelay".to_string()),
            agent_config_path,
            tools,
            handoff,
            media,
            security,
            limits,
            agent: identity,
            agents: Vec::new(),
        };
        (config, env.errors)
    }

    /// The agent called `id` (`default` or a file's name in `AGENTS_DIR`).
    pub fn agent_named(&self, id: &str) -> Option<&Config> {
        if id == self.agent.id {
            return Some(self);
        }
        self.agents.iter().find(|a| a.agent.id == id)
    }

    /// Every agent, the default first.
    pub fn all_agents(&self) -> impl Iterator<Item = &Config> {
        std::iter::once(self).chain(self.agents.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
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

    fn write_agent_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join("voxrelay-config-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
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
}
