//! The agent file (`AGENT_CONFIG`, or one of `AGENTS_DIR`; TOML, see
//! `agent.example.toml`) and what is read from it together with the environment:
//! languages, tools, HTTP tools, the numbers it answers. Unknown keys are errors.
//! May import `vars` and the section types it fills.

use super::*;

/// The agent file (`AGENT_CONFIG`), as written. Unknown keys are errors, so a typo
/// never silently falls back to a default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentFile {
    pub(super) name: Option<String>,
    /// The numbers (E.164) whose calls this agent takes: inbound by `To`, outbound
    /// by `from`.
    #[serde(default)]
    pub(super) numbers: Vec<String>,
    /// How many live calls this agent takes at once (per replica); more are
    /// turned away like those over `MAX_CALLS`.
    pub(super) max_calls: Option<usize>,
    pub(super) voicemail_message: Option<String>,
    pub(super) screening_message: Option<String>,
    pub(super) still_there_message: Option<String>,
    pub(super) busy_message: Option<String>,
    pub(super) system_prompt: Option<String>,
    pub(super) welcome_greeting: Option<String>,
    pub(super) fallback_message: Option<String>,
    /// The main language; defaults to the first of `languages`.
    pub(super) language: Option<String>,
    #[serde(default)]
    pub(super) languages: Vec<LanguageConfig>,
    #[serde(default)]
    pub(super) llm: FileLlm,
    #[serde(default)]
    pub(super) tools: FileTools,
    #[serde(default)]
    pub(super) handoff: FileHandoff,
    #[serde(default)]
    pub(super) http_tools: Vec<FileHttpTool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLlm {
    pub(super) provider: Option<String>,
    pub(super) model: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) temperature: Option<f32>,
    pub(super) max_tokens: Option<u32>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) azure_endpoint: Option<String>,
    pub(super) azure_deployment: Option<String>,
    pub(super) azure_api_version: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTools {
    pub(super) enabled: Option<Vec<String>>,
    pub(super) max_rounds: Option<u32>,
    pub(super) filler: Option<String>,
    pub(super) filler_after_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) goodbye_message: Option<String>,
    pub(super) handoff_message: Option<String>,
    pub(super) utc_offset: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHandoff {
    pub(super) number: Option<String>,
    pub(super) taskrouter_workflow_sid: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHttpTool {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) url: String,
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) headers: std::collections::BTreeMap<String, String>,
    pub(super) parameters: Option<serde_json::Value>,
    pub(super) timeout_ms: Option<u64>,
}

/// Who wins when the environment and an agent file both set a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precedence {
    /// `AGENT_CONFIG`, the default agent: the environment wins (a quick change on
    /// Railway needs no redeploy of the file).
    Environment,
    /// A file of `AGENTS_DIR`: the file wins, since the environment is shared by
    /// every agent and only fills in what the file leaves unset.
    File,
}

impl AgentFile {
    pub(super) fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Copies the file's settings into the variables the environment left unset, so
    /// the environment wins and every value is validated in one place.
    pub(super) fn merge_into(&self, env: &mut Vars, precedence: Precedence) {
        let overwrite = precedence == Precedence::File;
        let mut env = Merge { env, overwrite };
        let env = &mut env;
        env.fill("AGENT_NAME", self.name.clone());
        env.fill("SYSTEM_PROMPT", self.system_prompt.clone());
        env.fill("FALLBACK_MESSAGE", self.fallback_message.clone());
        let main = self
            .language
            .clone()
            .or_else(|| self.languages.first().map(|l| l.code.clone()));
        env.fill("LANGUAGE", main);
        if env.overwrite && !self.languages.is_empty() {
            // The file's languages, not the shared `LANGUAGES`.
            let codes: Vec<&str> = self.languages.iter().map(|l| l.code.as_str()).collect();
            env.fill("LANGUAGES", Some(codes.join(",")));
        }
        // The main language's own entry supplies the session's speech settings.
        let main = env.get("LANGUAGE");
        if let Some(entry) = self
            .languages
            .iter()
            .find(|l| Some(&l.code) == main.as_ref())
        {
            env.fill("TTS_PROVIDER", entry.tts_provider.clone());
            if env.overwrite || env.get("ELEVENLABS_VOICE_ID").is_none() {
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
        env.fill("VOICEMAIL_MESSAGE", self.voicemail_message.clone());
        env.fill("SCREENING_MESSAGE", self.screening_message.clone());
        env.fill("STILL_THERE_MESSAGE", self.still_there_message.clone());
        env.fill("BUSY_MESSAGE", self.busy_message.clone());
        // An empty greeting or filler is meaningful (it turns them off).
        for (name, value) in [
            ("WELCOME_GREETING", &self.welcome_greeting),
            ("TOOL_FILLER", &self.tools.filler),
        ] {
            if let Some(value) = value
                && (overwrite || !env.env.vars.contains_key(name))
            {
                env.env.vars.insert(name.to_string(), value.clone());
            }
        }
    }
}

/// The variables an agent file is merged into, with its precedence.
struct Merge<'a> {
    env: &'a mut Vars,
    overwrite: bool,
}

impl Merge<'_> {
    fn fill(&mut self, name: &str, value: Option<String>) {
        self.env.put(name, value, self.overwrite);
    }

    fn get(&self, name: &str) -> Option<String> {
        self.env.get(name)
    }
}
