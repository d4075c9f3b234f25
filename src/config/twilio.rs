//! The `[twilio]` part of the configuration: the account, the REST API and webhook
//! signatures. May import the shared reading machinery (`vars`).

use std::time::Duration;

use super::{Secret, Vars};

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

pub(super) fn twilio_config(env: &mut Vars) -> TwilioConfig {
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
