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
    /// Default caller id for outbound calls.
    pub phone_number: Option<E164>,
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

/// An E.164 phone number: `+`, then 2 to 15 digits, not starting with 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct E164(String);

impl E164 {
    pub fn parse(number: &str) -> Option<Self> {
        let digits = number.strip_prefix('+')?;
        let valid = (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        valid.then(|| Self(number.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for E164 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<E164> for String {
    fn from(number: E164) -> Self {
        number.0
    }
}

pub(super) fn read(env: &mut Vars) -> TwilioConfig {
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
    let phone_number = env.get("TWILIO_PHONE_NUMBER").and_then(|number| {
        let parsed = E164::parse(&number);
        if parsed.is_none() {
            env.errors.push(format!(
                "TWILIO_PHONE_NUMBER must be an E.164 number like +5511999990000, got {number:?}"
            ));
        }
        parsed
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_the_auth_token() {
        let c = read(&mut Vars::of(&[]));
        assert!(!c.validate_signatures);
        assert!(c.rest_credentials().is_none());
        assert_eq!(c.api_base, "https://api.twilio.com");
        assert!(c.security_warning().unwrap().contains("TWILIO_AUTH_TOKEN"));
        let c = read(&mut Vars::of(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "tok-secret"),
        ]));
        assert!(c.validate_signatures);
        assert_eq!(c.security_warning(), None);
        let (user, pass) = c.rest_credentials().unwrap();
        assert_eq!((user.as_str(), pass.expose()), ("AC123", "tok-secret"));
        assert!(!format!("{c:?}").contains("tok-secret"));
        let c = read(&mut Vars::of(&[
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_VALIDATE_SIGNATURES", "false"),
        ]));
        assert!(!c.validate_signatures);
        assert!(c.validation_disabled_by_config);
        assert!(c.security_warning().unwrap().contains("NOT checked"));
    }

    #[test]
    fn an_api_key_wins_over_the_auth_token_for_rest() {
        let c = read(&mut Vars::of(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_API_KEY_SID", "SK9"),
            ("TWILIO_API_KEY_SECRET", "key-secret"),
            ("TWILIO_API_BASE", "http://127.0.0.1:9/"),
        ]));
        let (user, pass) = c.rest_credentials().unwrap();
        assert_eq!((user.as_str(), pass.expose()), ("SK9", "key-secret"));
        assert_eq!(c.api_base, "http://127.0.0.1:9");
        assert!(!format!("{c:?}").contains("key-secret"));
    }

    #[test]
    fn settings_are_checked() {
        let mut env = Vars::of(&[
            ("TWILIO_ACCOUNT_SID", "XX1"),
            ("TWILIO_API_KEY_SID", "SK1"),
            ("TWILIO_PHONE_NUMBER", "11 9999-0000"),
            ("TWILIO_VALIDATE_SIGNATURES", "true"),
        ]);
        let c = read(&mut env);
        assert_eq!(c.phone_number, None);
        let err = env.errors.join("\n");
        for needle in [
            "TWILIO_ACCOUNT_SID must start with AC",
            "TWILIO_API_KEY_SECRET",
            "TWILIO_PHONE_NUMBER",
            "TWILIO_VALIDATE_SIGNATURES=true needs TWILIO_AUTH_TOKEN",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        let c = read(&mut Vars::of(&[("TWILIO_PHONE_NUMBER", "+5511999990000")]));
        assert_eq!(c.phone_number.unwrap().as_str(), "+5511999990000");
    }

    #[test]
    fn e164_numbers() {
        for ok in ["+5511999990000", "+14155550100", "+44"] {
            assert_eq!(E164::parse(ok).unwrap().to_string(), ok);
        }
        for bad in [
            "5511999990000",
            "+0551199",
            "+55 11 99999",
            "+",
            "+1234567890123456",
            "+55a1",
        ] {
            assert!(E164::parse(bad).is_none(), "{bad}");
        }
    }
}
