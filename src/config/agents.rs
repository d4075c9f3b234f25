//! Several agents on one server (README "Agents per number"): `AGENTS_DIR` names a
//! folder of agent files, each a whole agent (prompt, greeting, voices, tools,
//! messages) with the numbers it answers and its own call limit. Each file is read
//! like `AGENT_CONFIG`, except that the file wins over the environment; every
//! problem of every file is listed at once. May import `vars`, `agent_file` and the
//! [`Config`] it builds.

use std::collections::HashMap;

use super::agent_file::{AgentFile, Precedence};
use super::twilio::E164;
use super::{Config, Vars};

/// The id of the agent of `AGENT_CONFIG` and the environment: it takes every call
/// no other agent claims.
pub const DEFAULT_AGENT: &str = "default";
/// Longest agent id (it travels in call tokens and URLs).
const MAX_ID_CHARS: usize = 40;
/// Most agent files read from `AGENTS_DIR`.
const MAX_AGENTS: usize = 100;

/// Which agent a configuration is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    /// `default`, or the file's name without `.toml` (letters, digits, `-`, `_`).
    pub id: String,
    /// The numbers whose calls it takes: inbound by `To`, outbound by `from`.
    pub numbers: Vec<E164>,
    /// Live calls it takes at once on this replica; `None`: only `MAX_CALLS` limits.
    pub max_calls: Option<usize>,
}

/// Where an agent's file comes from, and who wins over it.
pub(super) struct AgentSource {
    pub(super) id: String,
    pub(super) path: Option<String>,
    pub(super) precedence: Precedence,
}

/// Whether `id` may name an agent: short, and safe in a URL and a token.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The identity of the agent `source` reads, checking its numbers and limit.
pub(super) fn identity(env: &mut Vars, source: &AgentSource, file: &AgentFile) -> AgentIdentity {
    let mut numbers = Vec::new();
    for raw in &file.numbers {
        match E164::parse(raw.trim()) {
            Some(number) if !numbers.contains(&number) => numbers.push(number),
            Some(_) => {}
            None => env.errors.push(format!(
                "numbers: {raw:?} is not an E.164 number (+5511...)"
            )),
        }
    }
    if file.max_calls == Some(0) {
        env.errors
            .push("max_calls must be at least 1 (leave it out for no limit)".into());
    }
    AgentIdentity {
        id: source.id.clone(),
        numbers,
        max_calls: file.max_calls,
    }
}

/// Every `*.toml` of `dir` as an agent, sorted by name, and every problem found.
pub(super) fn read_dir(
    dir: &str,
    vars: &HashMap<String, String>,
    default: &Config,
) -> (Vec<Config>, Vec<String>) {
    let mut errors = Vec::new();
    let mut paths: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect(),
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("AGENTS_DIR {dir:?} cannot be read: {e}")],
            );
        }
    };
    paths.sort();
    if paths.len() > MAX_AGENTS {
        errors.push(format!(
            "AGENTS_DIR {dir:?} holds {} agent files; at most {MAX_AGENTS} are read",
            paths.len()
        ));
        paths.truncate(MAX_AGENTS);
    }
    // The environment every agent shares, without the default agent's file.
    let mut shared = vars.clone();
    shared.remove("AGENT_CONFIG");
    shared.remove("AGENTS_DIR");
    // The server's own problems are already reported by the default agent.
    let shared_problems = Config::read(
        shared.clone(),
        &AgentSource {
            id: DEFAULT_AGENT.into(),
            path: None,
            precedence: Precedence::Environment,
        },
    )
    .1;
    let mut agents: Vec<Config> = Vec::new();
    for path in paths {
        let name = path.display().to_string();
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !valid_id(&id) {
            errors.push(format!(
                "{name}: an agent file's name must be letters, digits, - or _ (at most {MAX_ID_CHARS}) before .toml"
            ));
            continue;
        }
        if id == DEFAULT_AGENT {
            errors.push(format!(
                "{name}: \"default\" is the agent of AGENT_CONFIG and the environment; name this file otherwise"
            ));
            continue;
        }
        let source = AgentSource {
            id,
            path: Some(name.clone()),
            precedence: Precedence::File,
        };
        let (agent, problems) = Config::read(shared.clone(), &source);
        errors.extend(
            problems
                .into_iter()
                .filter(|p| !shared_problems.contains(p))
                .map(|p| format!("{name}: {p}")),
        );
        agents.push(agent);
    }
    // A number answers to one agent.
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for agent in std::iter::once(default).chain(agents.iter()) {
        for number in &agent.agent.numbers {
            if let Some(first) = owners.insert(number.as_str(), &agent.agent.id) {
                errors.push(format!(
                    "{number} is listed by two agents, {first} and {}: a number answers to one agent",
                    agent.agent.id
                ));
            }
        }
    }
    (agents, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, files: &[(&str, &str)]) -> String {
        let dir = std::env::temp_dir().join(format!(
            "voxrelay-agents-config-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        dir.display().to_string()
    }

    fn config(pairs: &[(&str, &str)]) -> Result<Config, super::super::ConfigError> {
        Config::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn each_file_is_an_agent_whose_keys_win_over_the_environment() {
        let path = dir(
            "ok",
            &[
                (
                    "vendas.toml",
                    "name = \"Vendas\"\nnumbers = [\"+5511333330001\", \"+5511333330003\"]\nmax_calls = 5\nsystem_prompt = \"vendas\"\nvoicemail_message = \"Oi {name}, é da Loja.\"\n[[languages]]\ncode = \"en-US\"\n",
                ),
                ("suporte.toml", "numbers = [\"+5511333330002\"]\n"),
                ("README.md", "not an agent"),
            ],
        );
        let c = config(&[
            ("AGENTS_DIR", &path),
            ("SYSTEM_PROMPT", "geral"),
            ("LANGUAGES", "es-ES"),
            ("LLM_TEMPERATURE", "0.3"),
        ])
        .unwrap();
        assert_eq!(c.agent.id, DEFAULT_AGENT);
        assert_eq!(c.system_prompt, "geral");
        let ids: Vec<_> = c.agents.iter().map(|a| a.agent.id.as_str()).collect();
        assert_eq!(ids, ["suporte", "vendas"], "sorted, README skipped");
        let vendas = c.agent_named("vendas").unwrap();
        assert_eq!(vendas.system_prompt, "vendas", "the file wins");
        assert_eq!(vendas.agent_name, "Vendas");
        assert_eq!(vendas.agent.max_calls, Some(5));
        assert_eq!(vendas.agent.numbers.len(), 2);
        assert_eq!(vendas.endings.voicemail_message, "Oi {name}, é da Loja.");
        assert_eq!(vendas.relay.language, "en-US");
        let codes: Vec<_> = vendas.relay.languages.iter().map(|l| &l.code).collect();
        assert_eq!(codes, ["en-US"], "the file's languages, not LANGUAGES");
        assert_eq!(
            vendas.llm.temperature,
            Some(0.3),
            "unset keys come from the environment"
        );
        let suporte = c.agent_named("suporte").unwrap();
        assert_eq!(suporte.system_prompt, "geral");
        assert_eq!(suporte.agent.max_calls, None);
        assert!(c.agent_named("nobody").is_none());
        assert_eq!(c.all_agents().count(), 3);
    }

    #[test]
    fn the_second_agent_of_the_example_file_is_valid() {
        let example = include_str!("../../agent.example.toml");
        let (_, second) = example
            .split_once("# --- agents/lembretes.toml ---\n")
            .expect("the example shows a second agent");
        let text: String = second
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .map(|l| format!("{l}\n"))
            .collect();
        let first = concat!(env!("CARGO_MANIFEST_DIR"), "/agent.example.toml");
        let path = dir(
            "example",
            &[
                ("recepcao.toml", &std::fs::read_to_string(first).unwrap()),
                ("lembretes.toml", &text),
            ],
        );
        let c = config(&[("AGENTS_DIR", &path), ("AGENDA_TOKEN", "tok")]).unwrap();
        let lembretes = c.agent_named("lembretes").unwrap();
        assert_eq!(lembretes.agent_name, "Lembretes Clínica Sorriso");
        assert_eq!(lembretes.agent.max_calls, Some(5));
        assert!(lembretes.relay.welcome_greeting.contains("{name}"));
        let recepcao = c.agent_named("recepcao").unwrap();
        assert_eq!(recepcao.agent.numbers[0].as_str(), "+5511333330000");
        assert_eq!(recepcao.agent.max_calls, Some(20));
        assert!(
            recepcao
                .endings
                .voicemail_message
                .contains("Clínica Sorriso")
        );
    }

    #[test]
    fn every_problem_of_every_file_is_listed_at_once() {
        let path = dir(
            "bad",
            &[
                (
                    "a.toml",
                    "numbers = [\"11 3333\", \"+5511333330001\"]\nmax_calls = 0\n",
                ),
                (
                    "b.toml",
                    "numbers = [\"+5511333330001\"]\nsistem_prompt = \"x\"\n",
                ),
                ("c.toml", "[tools]\nenabled = [\"fly\"]\n"),
                ("default.toml", ""),
                ("bad name.toml", ""),
            ],
        );
        let err = config(&[("AGENTS_DIR", &path), ("PORT", "eighty")])
            .unwrap_err()
            .to_string();
        for needle in [
            "a.toml: numbers: \"11 3333\" is not an E.164 number",
            "a.toml: max_calls must be at least 1",
            "b.toml: agent file",
            "sistem_prompt",
            "c.toml: ",
            "fly",
            "default.toml: \"default\" is the agent of AGENT_CONFIG",
            "bad name.toml: an agent file's name",
            "PORT",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from {err}");
        }
        assert_eq!(
            err.matches("PORT").count(),
            1,
            "server problems once: {err}"
        );
        let two = dir(
            "twice",
            &[
                ("a.toml", "numbers = [\"+5511333330001\"]\n"),
                ("b.toml", "numbers = [\"+5511333330001\"]\n"),
            ],
        );
        let err = config(&[("AGENTS_DIR", &two)]).unwrap_err().to_string();
        assert!(
            err.contains("+5511333330001 is listed by two agents, a and b"),
            "{err}"
        );
        let err = config(&[("AGENTS_DIR", "/nonexistent/agents")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AGENTS_DIR \"/nonexistent/agents\" cannot be read"),
            "{err}"
        );
    }
}
