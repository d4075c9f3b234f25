//! The SIP part of the configuration: OpenAI (or Azure OpenAI) answers a SIP trunk
//! and tells us through a signed webhook; we accept the call and drive it over a
//! sideband WebSocket (README "SIP mode"). May import `vars` and the sections it
//! derives from (LLM for the Azure resource, speech for the model and voice).

use super::{LlmConfig, Secret, SpeechConfig, Vars};

const OPENAI_API_BASE: &str = "https://api.openai.com/v1";

/// Whose SIP endpoint answers the trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipProvider {
    OpenAi,
    Azure,
}

/// How a call-control request and the sideband authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipAuth {
    /// `Authorization: Bearer <key>` (OpenAI).
    Bearer(Secret),
    /// `api-key: <key>` (Azure OpenAI).
    ApiKey(Secret),
}

impl SipAuth {
    /// The header to send: its name and its value.
    pub fn header(&self) -> (&'static str, String) {
        match self {
            Self::Bearer(key) => ("authorization", format!("Bearer {}", key.expose())),
            Self::ApiKey(key) => ("api-key", key.expose().to_string()),
        }
    }
}

/// SIP mode: on when `OPENAI_WEBHOOK_SECRET` is set.
#[derive(Clone, Debug)]
pub struct SipConfig {
    /// `whsec_…`: signs OpenAI's webhooks. `None`: SIP mode is off.
    pub webhook_secret: Option<Secret>,
    pub provider: SipProvider,
    /// Call control and the sideband: `{base}/realtime/calls/{id}/accept`,
    /// `wss://…{base}/realtime?call_id={id}` (no trailing slash).
    pub api_base: String,
    /// `None` when no key is configured (SIP mode then refuses to start).
    pub auth: Option<SipAuth>,
    /// The Realtime model (`OPENAI_REALTIME_MODEL`; for Azure the deployment name).
    pub model: String,
    pub voice: String,
    /// Transcribes the caller for the records (`OPENAI_TRANSCRIPTION_MODEL`).
    pub transcription_model: String,
    /// The GPT-Live model (`SIP_LIVE_MODEL`).
    pub live_model: String,
}

impl SipConfig {
    pub fn is_enabled(&self) -> bool {
        self.webhook_secret.is_some()
    }

    /// The sideband WebSocket base: `SIP_API_BASE` with `https` → `wss`.
    pub fn ws_base(&self) -> String {
        if let Some(rest) = self.api_base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.api_base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.api_base.clone()
        }
    }
}

pub(super) fn read(env: &mut Vars, llm: &LlmConfig, speech: &SpeechConfig) -> SipConfig {
    let webhook_secret = env.get("OPENAI_WEBHOOK_SECRET").map(Secret::new);
    let provider = match env
        .one_of("SIP_PROVIDER", "openai", &["openai", "azure"])
        .as_str()
    {
        "azure" => SipProvider::Azure,
        _ => SipProvider::OpenAi,
    };
    let api_base = env
        .get("SIP_API_BASE")
        .map(|u| u.trim_end_matches('/').to_string())
        .or_else(|| match provider {
            SipProvider::OpenAi => Some(OPENAI_API_BASE.to_string()),
            SipProvider::Azure => llm
                .azure_endpoint
                .as_ref()
                .map(|endpoint| format!("{}/openai/v1", endpoint.trim_end_matches('/'))),
        })
        .unwrap_or_default();
    let auth = match provider {
        SipProvider::OpenAi => llm.openai_api_key.clone().map(SipAuth::Bearer),
        SipProvider::Azure => llm.azure_api_key.clone().map(SipAuth::ApiKey),
    };
    // For Azure, `OPENAI_REALTIME_MODEL` names the deployment.
    let model = speech.openai_realtime_model.clone();
    if webhook_secret.is_some() {
        if auth.is_none() {
            env.errors.push(match provider {
                SipProvider::OpenAi => {
                    "OPENAI_WEBHOOK_SECRET turns SIP mode on, which needs OPENAI_API_KEY to accept calls".to_string()
                }
                SipProvider::Azure => {
                    "SIP_PROVIDER=azure needs AZURE_OPENAI_API_KEY to accept calls".to_string()
                }
            });
        }
        if api_base.is_empty() {
            env.errors.push(
                "SIP_PROVIDER=azure needs SIP_API_BASE or AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com)".into(),
            );
        } else if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            env.errors.push(format!(
                "SIP_API_BASE must start with https:// (or http:// for local tests), got {api_base:?}"
            ));
        }
    }
    SipConfig {
        webhook_secret,
        provider,
        api_base,
        auth,
        model,
        voice: speech.openai_realtime_voice.clone(),
        transcription_model: speech.openai_transcription_model.clone(),
        live_model: env
            .get("SIP_LIVE_MODEL")
            .unwrap_or_else(|| "gpt-live-1".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn off_without_a_secret_and_openai_by_default() {
        let c = Config::from_pairs(&[]).unwrap();
        assert!(!c.sip.is_enabled());
        let c = Config::from_pairs(&[
            ("OPENAI_WEBHOOK_SECRET", "whsec_abc"),
            ("OPENAI_API_KEY", "sk-x"),
        ])
        .unwrap();
        assert!(c.sip.is_enabled());
        assert_eq!(c.sip.api_base, "https://api.openai.com/v1");
        assert_eq!(c.sip.ws_base(), "wss://api.openai.com/v1");
        assert_eq!(
            c.sip.auth.as_ref().unwrap().header(),
            ("authorization", "Bearer sk-x".to_string())
        );
        assert_eq!(c.sip.model, "gpt-realtime");
        assert_eq!(c.sip.live_model, "gpt-live-1");
        assert!(!format!("{c:?}").contains("whsec_abc"));
        let err = Config::from_pairs(&[("OPENAI_WEBHOOK_SECRET", "whsec_abc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
    }

    #[test]
    fn azure_derives_its_base_and_sends_api_key() {
        let c = Config::from_pairs(&[
            ("OPENAI_WEBHOOK_SECRET", "whsec_abc"),
            ("SIP_PROVIDER", "azure"),
            ("AZURE_OPENAI_ENDPOINT", "https://voz.openai.azure.com/"),
            ("AZURE_OPENAI_API_KEY", "az-key"),
            ("OPENAI_REALTIME_MODEL", "my-realtime-deployment"),
        ])
        .unwrap();
        assert_eq!(c.sip.api_base, "https://voz.openai.azure.com/openai/v1");
        assert_eq!(c.sip.ws_base(), "wss://voz.openai.azure.com/openai/v1");
        assert_eq!(
            c.sip.auth.as_ref().unwrap().header(),
            ("api-key", "az-key".to_string())
        );
        assert_eq!(c.sip.model, "my-realtime-deployment");
        let err = Config::from_pairs(&[
            ("OPENAI_WEBHOOK_SECRET", "whsec_abc"),
            ("SIP_PROVIDER", "azure"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("AZURE_OPENAI_API_KEY"), "{err}");
    }
}
