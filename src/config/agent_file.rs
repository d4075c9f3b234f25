//! The agent file (`AGENT_CONFIG`, TOML; see `agent.example.toml`) and what is read
//! from it together with the environment: languages, tools, HTTP tools. Unknown
//! keys are errors. May import `vars` and the section types it fills.

use std::collections::HashMap;

use super::*;

/// The agent file (`AGENT_CONFIG`), as written. Unknown keys are errors, so a typo
/// never silently falls back to a default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentFile {
    pub(super) name: Option<String>,
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

impl AgentFile {
    pub(super) fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Copies the file's settings into the variables the environment left unset, so
    /// the environment wins and every value is validated in one place.
    pub(super) fn merge_into(&self, env: &mut Vars) {
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
pub(super) fn read_languages(
    env: &mut Vars,
    file: &AgentFile,
    relay: &RelayConfig,
) -> Vec<LanguageConfig> {
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
pub(super) fn read_tools(
    env: &mut Vars,
    file: &AgentFile,
    languages: &[LanguageConfig],
) -> ToolsConfig {
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

pub(super) fn read_http_tool(
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
pub(super) fn expand_vars(value: &str, vars: &HashMap<String, String>) -> Result<String, String> {
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
pub(super) fn parse_utc_offset(raw: &str) -> Option<i32> {
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
