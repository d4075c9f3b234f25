//! The tools part of the configuration: which built-in tools the model is offered
//! ([`BuiltinTool`], the one list of their names), the HTTP tools of the agent
//! file, the messages around tool calls, and where a handoff goes. May import the
//! shared reading machinery (`vars`) and the agent file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::agent_file::{AgentFile, FileHttpTool};
use super::{LanguageConfig, Secret, Vars};

pub const DEFAULT_TOOL_FILLER: &str = "Só um instante, por favor.";
pub const DEFAULT_GOODBYE_MESSAGE: &str = "Obrigado pela ligação. Até logo!";
pub const DEFAULT_HANDOFF_MESSAGE: &str =
    "Vou transferir você para um atendente. Um momento, por favor.";

/// The built-in tools, by the names the model sees (`tools::builtin` implements them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinTool {
    EndCall,
    TransferToHuman,
    SendDtmf,
    SwitchLanguage,
    ScheduleAppointment,
}

impl BuiltinTool {
    pub const ALL: [Self; 5] = [
        Self::EndCall,
        Self::TransferToHuman,
        Self::SendDtmf,
        Self::SwitchLanguage,
        Self::ScheduleAppointment,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::EndCall => "end_call",
            Self::TransferToHuman => "transfer_to_human",
            Self::SendDtmf => "send_dtmf",
            Self::SwitchLanguage => "switch_language",
            Self::ScheduleAppointment => "schedule_appointment",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }

    /// Whether the tool named `name` is one of `tools`.
    pub fn listed(tools: &[Self], name: &str) -> bool {
        tools.iter().any(|tool| tool.name() == name)
    }
}

/// Tool calling settings.
#[derive(Clone, Debug)]
pub struct ToolsConfig {
    /// Built-in tools offered to the model.
    pub enabled: Vec<BuiltinTool>,
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
    pub fn is_enabled(&self, tool: BuiltinTool) -> bool {
        self.enabled.contains(&tool)
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

/// `HANDOFF_NUMBER` or `TASKROUTER_WORKFLOW_SID` (`[handoff]` in the agent file).
pub(super) fn read_handoff(env: &mut Vars) -> HandoffConfig {
    let handoff = HandoffConfig {
        number: env.get("HANDOFF_NUMBER"),
        taskrouter_workflow_sid: env.get("TASKROUTER_WORKFLOW_SID"),
    };
    if let Some(sid) = &handoff.taskrouter_workflow_sid
        && !sid.starts_with("WW")
    {
        env.errors.push(format!(
            "TASKROUTER_WORKFLOW_SID must be a workflow SID (WW…), got {sid:?}"
        ));
    }
    handoff
}

/// Tool settings, built-in tools and HTTP tools. Without `AGENT_TOOLS`, the tools
/// the rest of the configuration makes usable are on.
pub(super) fn read(
    env: &mut Vars,
    file: &AgentFile,
    languages: &[LanguageConfig],
    handoff: &HandoffConfig,
) -> ToolsConfig {
    let enabled: Vec<BuiltinTool> = match env.get("AGENT_TOOLS") {
        Some(list) if list.eq_ignore_ascii_case("none") => Vec::new(),
        Some(list) => {
            let mut tools = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match BuiltinTool::from_name(name) {
                    None => {
                        let known: Vec<_> = BuiltinTool::ALL.iter().map(|t| t.name()).collect();
                        env.errors.push(format!(
                            "unknown built-in tool {name:?} in AGENT_TOOLS / [tools] enabled; known: {}",
                            known.join(", ")
                        ));
                    }
                    Some(tool) if !tools.contains(&tool) => tools.push(tool),
                    Some(_) => {}
                }
            }
            tools
        }
        None => {
            let mut tools = vec![BuiltinTool::EndCall, BuiltinTool::ScheduleAppointment];
            if handoff.is_configured() {
                tools.push(BuiltinTool::TransferToHuman);
            }
            if languages.len() > 1 {
                tools.push(BuiltinTool::SwitchLanguage);
            }
            tools
        }
    };
    if enabled.contains(&BuiltinTool::TransferToHuman) && !handoff.is_configured() {
        env.errors.push(
            "the transfer_to_human tool needs HANDOFF_NUMBER or TASKROUTER_WORKFLOW_SID ([handoff] in the agent file)"
                .into(),
        );
    }
    if enabled.contains(&BuiltinTool::SwitchLanguage) && languages.len() < 2 {
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
    if BuiltinTool::from_name(name).is_some() || seen.iter().any(|t| t.name == name) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(pairs: &[(&str, &str)], languages: usize) -> (ToolsConfig, Vec<String>) {
        let mut env = Vars::of(pairs);
        let handoff = read_handoff(&mut env);
        let languages: Vec<LanguageConfig> = (0..languages)
            .map(|i| LanguageConfig {
                code: format!("l{i}"),
                tts_provider: None,
                voice: None,
                transcription_provider: None,
                speech_model: None,
            })
            .collect();
        let tools = read(&mut env, &AgentFile::default(), &languages, &handoff);
        (tools, env.errors)
    }

    #[test]
    fn the_default_tools_follow_what_is_configured() {
        use BuiltinTool::*;
        let (t, errors) = tools(&[], 1);
        assert!(errors.is_empty());
        assert_eq!(t.enabled, [EndCall, ScheduleAppointment]);
        assert_eq!(t.utc_offset_minutes, -180);
        let (t, _) = tools(&[("HANDOFF_NUMBER", "+5511988887777")], 2);
        assert_eq!(
            t.enabled,
            [
                EndCall,
                ScheduleAppointment,
                TransferToHuman,
                SwitchLanguage
            ]
        );
        let (t, _) = tools(&[("AGENT_TOOLS", "none")], 1);
        assert!(t.enabled.is_empty());
        let (t, errors) = tools(&[("AGENT_TOOLS", "send_dtmf, end_call, send_dtmf")], 1);
        assert_eq!(t.enabled, [SendDtmf, EndCall]);
        assert!(errors.is_empty());
    }

    #[test]
    fn tools_that_cannot_work_are_problems() {
        let (_, errors) = tools(
            &[
                (
                    "AGENT_TOOLS",
                    "fly_to_moon,transfer_to_human,switch_language",
                ),
                ("TASKROUTER_WORKFLOW_SID", "XX1"),
            ],
            1,
        );
        let text = errors.join("\n");
        for needle in ["fly_to_moon", "switch_language tool needs", "WW"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn every_builtin_name_round_trips() {
        for tool in BuiltinTool::ALL {
            assert_eq!(BuiltinTool::from_name(tool.name()), Some(tool));
        }
        assert_eq!(BuiltinTool::from_name("End_Call"), None);
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("-03:00"), Some(-180));
        assert_eq!(parse_utc_offset("+0530"), Some(330));
        assert_eq!(parse_utc_offset("UTC-3"), Some(-180));
        assert_eq!(parse_utc_offset("abc"), None);
    }

    #[test]
    fn header_variables_are_expanded() {
        let vars: HashMap<String, String> = [("T".to_string(), "abc".to_string())].into();
        assert_eq!(expand_vars("Bearer ${T}!", &vars), Ok("Bearer abc!".into()));
        assert_eq!(expand_vars("${NOPE}", &vars), Err("NOPE".into()));
        assert_eq!(expand_vars("plain ${", &vars), Ok("plain ${".into()));
    }
}
