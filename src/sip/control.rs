//! Call control over OpenAI's REST API (or Azure OpenAI's): accept, reject,
//! refer and hang up one call on its [`Surface`]. Every request carries the
//! configured key in its header, never in a URL or a log line, and has a deadline.
//! May import `config` and the SIP protocol types.

use std::time::Duration;

use serde_json::{Value, json};

use super::protocol::Surface;
use crate::config::{SipAuth, SipConfig};

/// The most one call-control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error body kept for a log line.
const MAX_ERROR_BODY: usize = 300;

/// Why a call-control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("SIP mode has no API key")]
    NoKey,
    #[error("{action} failed: {message}")]
    Network {
        action: &'static str,
        message: String,
    },
    #[error("{action} refused with HTTP {status}: {body}")]
    Refused {
        action: &'static str,
        status: u16,
        body: String,
    },
}

/// The call-control client of one server (cheap to clone).
#[derive(Clone)]
pub struct Control {
    /// The key and the HTTP client to send it with; `None` without a key (SIP
    /// mode off), so that a server without SIP parses no root certificates for it.
    client: Option<(SipAuth, reqwest::Client)>,
    api_base: String,
}

impl Control {
    pub fn new(sip: &SipConfig) -> Self {
        let client = sip.auth.clone().map(|auth| {
            let http = reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default();
            (auth, http)
        });
        Self {
            client,
            api_base: sip.api_base.clone(),
        }
    }

    async fn post(
        &self,
        surface: &Surface,
        action: &'static str,
        body: Option<Value>,
    ) -> Result<(), ControlError> {
        let (auth, http) = self.client.as_ref().ok_or(ControlError::NoKey)?;
        let (name, value) = auth.header();
        let mut request = http
            .post(surface.control_url(&self.api_base, action))
            .header(name, value);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| ControlError::Network {
            action,
            message: e.without_url().to_string(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = response.text().await.unwrap_or_default();
        crate::text::cut_to(&mut body, MAX_ERROR_BODY);
        Err(ControlError::Refused {
            action,
            status: status.as_u16(),
            body,
        })
    }

    /// Answers the call with this session (the body of [`Surface::accept_body`]).
    pub async fn accept(&self, surface: &Surface, session: Value) -> Result<(), ControlError> {
        self.post(surface, "accept", Some(session)).await
    }

    /// Turns the call away with a SIP status (486 busy, 503 unavailable), so the
    /// trunk can try elsewhere.
    pub async fn reject(&self, surface: &Surface, sip_status: u16) -> Result<(), ControlError> {
        self.post(surface, "reject", Some(json!({"status_code": sip_status})))
            .await
    }

    /// Transfers the caller to `target` (`tel:+…` or `sip:…`).
    pub async fn refer(&self, surface: &Surface, target: &str) -> Result<(), ControlError> {
        self.post(surface, "refer", Some(json!({"target_uri": target})))
            .await
    }

    pub async fn hangup(&self, surface: &Surface) -> Result<(), ControlError> {
        self.post(surface, "hangup", None).await
    }
}

/// The `target_uri` of a transfer to `number` (E.164 or already a SIP URI).
pub fn refer_target(number: &str) -> String {
    if number.starts_with("sip:") || number.starts_with("sips:") || number.starts_with("tel:") {
        number.to_string()
    } else {
        format!("tel:{number}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_targets() {
        assert_eq!(refer_target("+5511999999999"), "tel:+5511999999999");
        assert_eq!(
            refer_target("sip:agent@example.com"),
            "sip:agent@example.com"
        );
        assert_eq!(refer_target("tel:+1"), "tel:+1");
    }
}
