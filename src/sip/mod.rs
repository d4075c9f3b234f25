//! SIP mode: OpenAI (or Azure OpenAI, or GPT-Live) answers a Twilio SIP trunk and
//! POSTs a signed webhook; we verify it ([`signature`]), take each delivery once
//! across replicas (the store's shared state), accept or reject the call
//! ([`control`]) and run it over its sideband WebSocket ([`session`]), with the
//! same agent settings, tools and records as the other modes. The audio never
//! reaches us. [`protocol`] holds the webhook events and the two API surfaces.
//!
//! May import `agent`, `tools`, `speech` (sideband plumbing, Realtime protocol),
//! `store`, `metrics`, `transport`, `text` and `config` (the order is checked by
//! `.ci/layers`).

pub mod control;
pub mod protocol;
pub mod session;
pub mod signature;

use std::sync::Arc;

use protocol::{Surface, WebhookEvent};
use signature::{Delivery, SignatureError};

use crate::store::Store;

/// The shared-state kind under which delivered `webhook-id`s are kept.
const DELIVERED: &str = "sip_webhook";
/// Longest `webhook-id` kept as a de-duplication key (OpenAI's are ~35 bytes).
const MAX_WEBHOOK_ID: usize = 256;
/// How long a `webhook-id` is remembered: OpenAI retries a delivery for about
/// three days.
const DELIVERED_TTL_MS: i64 = 4 * 24 * 3600 * 1000;

/// What to do with a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A call to take: accept it on this surface (or reject it when full).
    Call {
        surface: Surface,
        headers: Vec<protocol::SipHeader>,
    },
    /// Delivered before (a retry): answered 200, nothing done.
    Duplicate,
    /// An event type we do not handle: answered 200, logged.
    Ignored,
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("SIP mode is off (OPENAI_WEBHOOK_SECRET is not set)")]
    Disabled,
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("the body is not a webhook event: {0}")]
    Body(String),
    #[error("the call id is not one OpenAI issues")]
    BadCallId,
    #[error("the webhook-id is longer than {MAX_WEBHOOK_ID} bytes")]
    LongId,
    #[error("the store cannot say whether this delivery is new")]
    Store(#[from] crate::store::StoreError),
}

/// Verifies a delivery, de-duplicates it on `webhook-id` through `store` (so a
/// retry reaching another replica is not taken twice), and says what to do.
pub async fn decide(
    secret: Option<&str>,
    store: &Arc<dyn Store>,
    delivery: Delivery<'_>,
    body: &[u8],
    now_secs: i64,
) -> Result<Decision, Refusal> {
    let secret = secret.ok_or(Refusal::Disabled)?;
    let id = signature::verify(secret, delivery, body, now_secs)?;
    if id.len() > MAX_WEBHOOK_ID {
        return Err(Refusal::LongId);
    }
    let event: WebhookEvent =
        serde_json::from_slice(body).map_err(|e| Refusal::Body(e.to_string()))?;
    let (surface, headers) = match event {
        WebhookEvent::RealtimeCallIncoming { data } => (
            Surface::Realtime {
                call_id: data.call_id,
            },
            data.sip_headers,
        ),
        WebhookEvent::LiveTransportIncoming { data } => (
            Surface::Live {
                session_id: data.session_id,
            },
            data.sip_headers,
        ),
        WebhookEvent::Other => return Ok(Decision::Ignored),
    };
    if !surface.is_valid() {
        return Err(Refusal::BadCallId);
    }
    let now = now_secs * 1000;
    let first = store
        .state_insert(DELIVERED, id, surface.id(), now + DELIVERED_TTL_MS, now)
        .await?;
    if !first {
        return Ok(Decision::Duplicate);
    }
    Ok(Decision::Call { surface, headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_750_287_078;

    async fn deliver(
        store: &Arc<dyn Store>,
        id: &str,
        body: &str,
        secret: Option<&str>,
    ) -> Result<Decision, Refusal> {
        let signature = signature::sign(SECRET, id, NOW, body.as_bytes());
        let timestamp = NOW.to_string();
        let delivery = Delivery {
            id: Some(id),
            timestamp: Some(&timestamp),
            signature: Some(&signature),
        };
        decide(secret, store, delivery, body.as_bytes(), NOW).await
    }

    #[tokio::test]
    async fn a_call_is_taken_once_and_other_events_are_ignored() {
        let store = crate::store::in_memory().await;
        let body = r#"{"type":"realtime.call.incoming","data":{"call_id":"rtc_1","sip_headers":[{"name":"From","value":"sip:+5511999990000@x"}]}}"#;
        let first = deliver(&store, "wh_1", body, Some(SECRET)).await.unwrap();
        let Decision::Call { surface, headers } = first else {
            panic!("not a call: {first:?}")
        };
        assert_eq!(surface.id(), "rtc_1");
        assert_eq!(headers.len(), 1);
        assert_eq!(
            deliver(&store, "wh_1", body, Some(SECRET)).await.unwrap(),
            Decision::Duplicate
        );
        let live = r#"{"type":"live.transport.incoming","data":{"type":"sip","session_id":"live_1","sip_headers":[]}}"#;
        assert!(matches!(
            deliver(&store, "wh_2", live, Some(SECRET)).await.unwrap(),
            Decision::Call {
                surface: Surface::Live { .. },
                ..
            }
        ));
        assert_eq!(
            deliver(
                &store,
                "wh_3",
                r#"{"type":"batch.completed","data":{}}"#,
                Some(SECRET)
            )
            .await
            .unwrap(),
            Decision::Ignored
        );
    }

    #[tokio::test]
    async fn refusals() {
        let store = crate::store::in_memory().await;
        let body = r#"{"type":"realtime.call.incoming","data":{"call_id":"../admin"}}"#;
        assert!(matches!(
            deliver(&store, "wh_1", body, None).await,
            Err(Refusal::Disabled)
        ));
        assert!(matches!(
            deliver(&store, "wh_1", body, Some(SECRET)).await,
            Err(Refusal::BadCallId)
        ));
        assert!(matches!(
            deliver(&store, "wh_2", body, Some("whsec_bm90LXRoZS1zZWNyZXQ=")).await,
            Err(Refusal::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            deliver(&store, "wh_3", "not json", Some(SECRET)).await,
            Err(Refusal::Body(_))
        ));
        let long_id = "w".repeat(MAX_WEBHOOK_ID + 1);
        let call = r#"{"type":"realtime.call.incoming","data":{"call_id":"rtc_1"}}"#;
        assert!(matches!(
            deliver(&store, &long_id, call, Some(SECRET)).await,
            Err(Refusal::LongId)
        ));
    }
}
