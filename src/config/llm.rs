//! The LLM part of the configuration: which provider backs the agent (OpenAI or a
//! compatible server, Azure OpenAI, the offline scripted one) and its settings.
//! May import the shared reading machinery (`vars`).

use std::time::Duration;

use super::{Secret, Vars};

const DEFAULT_OPENAI_MODEL: &str = "gpt-4.1-mini";

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
#[derive(Clone, Debug, PartialEq)]
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

/// `LLM_PROVIDER` (default: OpenAI when `OPENAI_API_KEY` is set, else scripted),
/// the model, its limits and the Azure settings.
pub(super) fn read(env: &mut Vars) -> LlmConfig {
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
                    env.errors.push(format!("LLM_PROVIDER=azure needs {name}"));
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
    LlmConfig {
        provider,
        openai_api_key,
        openai_base_url,
        model,
        temperature,
        max_tokens: env.parse_opt("LLM_MAX_TOKENS"),
        azure_endpoint,
        azure_api_key,
        azure_deployment,
        azure_api_version: env
            .get("AZURE_OPENAI_API_VERSION")
            .unwrap_or_else(|| "2024-10-21".to_string()),
        timeout: Duration::from_millis(env.parse("LLM_TIMEOUT_MS", 8000u64)),
        scripted_token_delay: Duration::from_millis(env.parse("SCRIPTED_TOKEN_DELAY_MS", 35u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_without_a_key_openai_with_one_and_the_key_is_redacted() {
        let c = read(&mut Vars::of(&[]));
        assert_eq!(c.provider, LlmProviderKind::Scripted);
        assert_eq!(c.timeout, Duration::from_millis(8000));
        let mut env = Vars::of(&[("OPENAI_API_KEY", "sk-secret")]);
        let c = read(&mut env);
        assert_eq!(c.provider, LlmProviderKind::OpenAi);
        assert_eq!(c.model, DEFAULT_OPENAI_MODEL);
        assert!(env.errors.is_empty());
        assert!(!format!("{c:?}").contains("sk-secret"));
    }

    #[test]
    fn azure_needs_its_three_settings_and_uses_the_deployment_as_model() {
        let mut env = Vars::of(&[("LLM_PROVIDER", "azure"), ("LLM_TEMPERATURE", "7")]);
        read(&mut env);
        let text = env.errors.join("\n");
        for needle in [
            "AZURE_OPENAI_ENDPOINT",
            "AZURE_OPENAI_API_KEY",
            "AZURE_OPENAI_DEPLOYMENT",
            "LLM_TEMPERATURE",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        let mut env = Vars::of(&[
            ("LLM_PROVIDER", "Azure"),
            ("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com/"),
            ("AZURE_OPENAI_API_KEY", "k"),
            ("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-dep"),
        ]);
        let c = read(&mut env);
        assert!(env.errors.is_empty(), "{:?}", env.errors);
        assert_eq!(c.model, "gpt-4o-dep");
        assert_eq!(
            c.azure_endpoint.as_deref(),
            Some("https://r.openai.azure.com")
        );
    }
}
