//! Who may open a call's WebSocket: mints the per-call tokens of
//! [`super::call_token`] for the TwiML we serve, admits each token once, and checks
//! that the session's `setup.callSid` / `start.callSid` is the call the token was
//! minted for.
//!
//! The "used" state sits behind [`UsedTokens`], so a deployment of several replicas
//! can share it through the store; this process keeps it in memory. Tokens expire
//! quickly, so the ledger only holds ids for their few minutes of life.
//!
//! Outbound calls: their TwiML is built before Twilio returns the call's SID, so
//! their token carries a nonce; `POST /api/calls` binds the nonce to the SID the
//! REST API returned, and the session waits briefly for that binding if the call
//! connects first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::call_token::{Binding, Claims, Route, TokenError, TokenKey};

/// Life of a token minted for a webhook's call: Twilio connects within a second.
pub const CALL_TOKEN_TTL: Duration = Duration::from_secs(120);
/// Life of an outbound call's token: the callee may take minutes to answer.
pub const OUTBOUND_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a session waits for an outbound call's SID to be bound.
pub const OUTBOUND_BIND_WAIT: Duration = Duration::from_secs(5);
/// Used token ids (and outbound bindings) kept at most; a full ledger refuses.
const LEDGER_CAPACITY: usize = 100_000;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Remembers which token ids were used until they expire.
pub trait UsedTokens: Send + Sync {
    /// Marks `id` used until `expires`. False when it already was, or when the
    /// ledger is full (refusing is the safe answer).
    fn claim(&self, id: &str, expires: u64, now: u64) -> bool;
}

/// The in-process ledger.
#[derive(Default)]
pub struct MemoryLedger {
    used: Mutex<HashMap<String, u64>>,
}

impl UsedTokens for MemoryLedger {
    fn claim(&self, id: &str, expires: u64, now: u64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() >= LEDGER_CAPACITY / 2 {
            used.retain(|_, until| *until >= now);
        }
        if used.len() >= LEDGER_CAPACITY || used.contains_key(id) {
            return false;
        }
        used.insert(id.to_string(), expires);
        true
    }
}

/// Mints and admits call tokens.
pub struct CallTokens {
    key: TokenKey,
    used: Arc<dyn UsedTokens>,
    /// Outbound nonce → (call SID, expiry).
    outbound: Mutex<HashMap<String, (String, u64)>>,
    bound: tokio::sync::Notify,
    /// Whether the WebSocket routes refuse a handshake without a token.
    required: bool,
}

impl CallTokens {
    pub fn new(key: TokenKey, used: Arc<dyn UsedTokens>, required: bool) -> Self {
        Self {
            key,
            used,
            outbound: Mutex::new(HashMap::new()),
            bound: tokio::sync::Notify::new(),
            required,
        }
    }

    /// Whether a handshake without a token is refused.
    pub fn required(&self) -> bool {
        self.required
    }

    /// A token for the call `call_sid` of a signed webhook. `resume`: the session
    /// may pick up the call's earlier conversation (the reconnect answer only).
    pub fn for_call(&self, route: Route, call_sid: &str, resume: bool, now: u64) -> String {
        self.key.mint(&Claims {
            route,
            binding: Binding::Call(call_sid.to_string()),
            resume,
            expires: now + CALL_TOKEN_TTL.as_secs(),
            id: TokenKey::new_id(),
        })
    }

    /// A token for an outbound call not yet placed, and the nonce to bind to its SID.
    pub fn for_outbound(&self, route: Route, now: u64) -> (String, String) {
        let nonce = TokenKey::new_id();
        let token = self.key.mint(&Claims {
            route,
            binding: Binding::Outbound(nonce.clone()),
            resume: false,
            expires: now + OUTBOUND_TOKEN_TTL.as_secs(),
            id: TokenKey::new_id(),
        });
        (token, nonce)
    }

    /// Binds an outbound call's nonce to the SID Twilio returned for it.
    pub fn bind_outbound(&self, nonce: &str, call_sid: &str, now: u64) {
        {
            let mut outbound = self.outbound.lock().unwrap_or_else(|e| e.into_inner());
            outbound.retain(|_, (_, until)| *until >= now);
            if outbound.len() >= LEDGER_CAPACITY {
                tracing::warn!("too many outbound calls awaiting their WebSocket; not binding");
                return;
            }
            outbound.insert(
                nonce.to_string(),
                (call_sid.to_string(), now + OUTBOUND_TOKEN_TTL.as_secs()),
            );
        }
        self.bound.notify_waiters();
    }

    /// Admits `token` for `route` once: checks its signature, expiry and route,
    /// then marks it used.
    pub fn admit(
        self: &Arc<Self>,
        route: Route,
        token: &str,
        now: u64,
    ) -> Result<Admission, TokenError> {
        let claims = self.key.verify(token, now)?;
        if claims.route != route {
            return Err(TokenError::WrongRoute);
        }
        if !self.used.claim(&claims.id, claims.expires, now) {
            return Err(TokenError::Replayed);
        }
        Ok(Admission {
            claims,
            tokens: self.clone(),
        })
    }

    /// The SID an outbound nonce is bound to, waiting up to `wait` for the binding.
    async fn outbound_sid(&self, nonce: &str, wait: Duration) -> Option<String> {
        let lookup = || {
            self.outbound
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(nonce)
                .map(|(sid, _)| sid.clone())
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.bound.notified();
            if let Some(sid) = lookup() {
                return Some(sid);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return lookup();
            }
        }
    }
}

/// A handshake admitted with a valid, unused token.
pub struct Admission {
    claims: Claims,
    tokens: Arc<CallTokens>,
}

/// The session names a call other than its token's.
#[derive(Debug, thiserror::Error)]
#[error("the session's call SID is not the one its WebSocket token was minted for")]
pub struct WrongCall;

impl Admission {
    /// Whether the session may resume the call's earlier conversation.
    pub fn may_resume(&self) -> bool {
        self.claims.resume
    }

    /// Checks that `call_sid` (from `setup` or `start`) is the token's call. For an
    /// outbound call this may wait a little for `POST /api/calls` to bind the SID.
    pub async fn check(&self, call_sid: &str) -> Result<(), WrongCall> {
        let expected = match &self.claims.binding {
            Binding::Call(sid) => Some(sid.clone()),
            Binding::Outbound(nonce) => self.tokens.outbound_sid(nonce, OUTBOUND_BIND_WAIT).await,
        };
        match expected {
            Some(sid) if !sid.is_empty() && sid == call_sid => Ok(()),
            _ => Err(WrongCall),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Arc<CallTokens> {
        Arc::new(CallTokens::new(
            TokenKey::derive(b"k"),
            Arc::new(MemoryLedger::default()),
            true,
        ))
    }

    #[tokio::test]
    async fn a_token_is_admitted_once_for_its_route_and_call() {
        let t = tokens();
        let token = t.for_call(Route::Relay, "CA1", false, 1_000);
        assert_eq!(
            t.admit(Route::Media, &token, 1_000).err(),
            Some(TokenError::WrongRoute)
        );
        let admitted = t.admit(Route::Relay, &token, 1_000).unwrap();
        assert!(!admitted.may_resume());
        assert!(admitted.check("CA1").await.is_ok());
        assert!(admitted.check("CA2").await.is_err());
        assert_eq!(
            t.admit(Route::Relay, &token, 1_001).err(),
            Some(TokenError::Replayed)
        );
        let late = t.for_call(Route::Relay, "CA1", true, 1_000);
        assert_eq!(
            t.admit(Route::Relay, &late, 1_000 + CALL_TOKEN_TTL.as_secs() + 1)
                .err(),
            Some(TokenError::Expired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outbound_token_waits_for_its_sid_and_then_binds() {
        let t = tokens();
        let (token, nonce) = t.for_outbound(Route::Relay, 1_000);
        let admitted = t.admit(Route::Relay, &token, 1_000).unwrap();
        let binder = {
            let t = t.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                t.bind_outbound(&nonce, "CAout", 1_001);
            })
        };
        assert!(admitted.check("CAout").await.is_ok());
        binder.await.unwrap();
        assert!(admitted.check("CAother").await.is_err());
        // A nonce never bound: refused after the wait.
        let (token, _) = t.for_outbound(Route::Relay, 1_000);
        let admitted = t.admit(Route::Relay, &token, 1_000).unwrap();
        assert!(admitted.check("CAout").await.is_err());
    }
}
