//! Standard Webhooks signatures, as OpenAI (and Azure OpenAI) sign their webhooks
//! (`docs/openai.md`, "Webhooks"): HMAC-SHA256 over `{id}.{timestamp}.{body}` with
//! the base64 key after `whsec_`, base64 in `webhook-signature` as one or more
//! space-separated `v1,<sig>` entries. Pure code: the caller passes the time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a delivery's timestamp may be from our clock, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a webhook was refused (never says anything about the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("the delivery is {0} s away from our clock (more than {TOLERANCE_SECS} s)")]
    Stale(i64),
    #[error("no v1 signature matches")]
    Mismatch,
}

/// The three headers of a delivery.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// The signing key: the base64 after `whsec_` (or, without the prefix, the
/// secret's own bytes, as OpenAI's SDK does).
fn key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD
            .decode(b64.trim())
            .unwrap_or_else(|_| b64.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// `v1,<base64>` for `id`, `timestamp` and `body` (for tests and the simulator).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Checks a delivery at `now` (Unix seconds); returns its `webhook-id`.
pub fn verify<'a>(
    secret: &str,
    delivery: Delivery<'a>,
    body: &[u8],
    now: i64,
) -> Result<&'a str, SignatureError> {
    let id = delivery.id.ok_or(SignatureError::Missing("webhook-id"))?;
    let timestamp = delivery
        .timestamp
        .ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let header = delivery
        .signature
        .ok_or(SignatureError::Missing("webhook-signature"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - at).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale(now - at));
    }
    let expected = sign(secret, id, at, body);
    let matches = header
        .split_whitespace()
        .filter(|entry| entry.starts_with("v1,"))
        .any(|entry| bool::from(entry.as_bytes().ct_eq(expected.as_bytes())));
    if matches {
        Ok(id)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const AT: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn delivery<'a>(timestamp: &'a str, signature: &'a str) -> Delivery<'a> {
        Delivery {
            id: Some(ID),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn the_standard_webhooks_vector() {
        assert_eq!(sign(SECRET, ID, AT, BODY), VECTOR);
        let at = AT.to_string();
        assert_eq!(verify(SECRET, delivery(&at, VECTOR), BODY, AT), Ok(ID));
        // Several entries: any v1 one may match.
        let several = format!("v1,bm90LWl0 v2,abc {VECTOR}");
        assert_eq!(
            verify(SECRET, delivery(&at, &several), BODY, AT + 299),
            Ok(ID)
        );
    }

    #[test]
    fn tampering_staleness_and_missing_headers_are_refused() {
        let at = AT.to_string();
        assert_eq!(
            verify(
                SECRET,
                delivery(&at, VECTOR),
                br#"{"test": 2432232315}"#,
                AT
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                "whsec_bm90LXRoZS1zZWNyZXQ=",
                delivery(&at, VECTOR),
                BODY,
                AT
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, delivery(&at, VECTOR), BODY, AT + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(SECRET, delivery(&at, VECTOR), BODY, AT - 400),
            Err(SignatureError::Stale(-400))
        );
        assert_eq!(
            verify(SECRET, delivery("soon", VECTOR), BODY, AT),
            Err(SignatureError::BadTimestamp)
        );
        let no_id = Delivery {
            id: None,
            ..delivery(&at, VECTOR)
        };
        assert_eq!(
            verify(SECRET, no_id, BODY, AT),
            Err(SignatureError::Missing("webhook-id"))
        );
        // A v1 prefix alone, or the right signature under another version, fails.
        assert_eq!(
            verify(
                SECRET,
                delivery(&at, &VECTOR.replace("v1,", "v2,")),
                BODY,
                AT
            ),
            Err(SignatureError::Mismatch)
        );
    }
}
