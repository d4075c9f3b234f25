//! Who may open a call's WebSocket: mints the per-call tokens of
//! [`super::call_token`] for the TwiML we serve, admits each token once, and checks
//! that the session's `setup.callSid` / `start.callSid` is the call the token was
//! minted for.
//!
//! The ledger of used tokens and the outbound bindings live in the store's shared
//! call state ([`SharedState`]), so every replica sees them: a token used on one
//! replica is refused on all. Entries expire with their tokens.
//!
//! Reconnects (`applicationReconnect`, ConversationRelay only): Twilio reconnects a
//! dropped socket to the same URL, so its token comes back. The ledger entry says
//! who holds the token: `open:<replica>` while a socket does, `dropped` once it
//! went away without a close frame, `closed` once the call's socket closed cleanly
//! or the call ended. A used token is admitted again only from `dropped`, or from
//! `open:<replica>` when that replica stopped beating (it was killed): one socket
//! at a time, and a call that ended keeps its token dead.
//!
//! Outbound calls: their TwiML is built before Twilio returns the call's SID, so
//! their token carries a nonce; `POST /api/calls` binds the nonce to the SID the
//! REST API returned, and the session waits briefly for that binding if the call
//! connects first (polling the store, woken at once when this replica binds it).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::call_token::{Binding, Claims, Route, TokenError, TokenKey};
use crate::store::SharedState;

/// Life of a token minted for a webhook's call: Twilio connects within a second.
pub const CALL_TOKEN_TTL: Duration = Duration::from_secs(120);
/// Life of an outbound call's token: the callee may take minutes to answer.
pub const OUTBOUND_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a session waits for an outbound call's SID to be bound.
pub const OUTBOUND_BIND_WAIT: Duration = Duration::from_secs(5);
/// How long a dropped socket's call may come back with its token.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How often a waiting session looks for another replica's outbound binding.
const BIND_POLL: Duration = Duration::from_millis(100);

const TOKEN: &str = "token";
/// Shared call state: a call whose `64105` reconnect we answered (for sessions
/// without tokens; one with a token reads its resume flag).
pub const RESUME_ARMED: &str = "resume";
/// How long an answered reconnect may be picked up.
pub const RESUME_ARMED_TTL: Duration = Duration::from_secs(300);
const OUTBOUND: &str = "outbound";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn ms(secs: u64) -> i64 {
    (secs as i64).saturating_mul(1000)
}

/// How tokens may come back after a drop.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// `applicationReconnect` is on: a dropped relay socket's token is admitted again.
    pub enabled: bool,
    /// The longest call (the ledger keeps a held token this long).
    pub max_call: Duration,
    /// A replica silent this long is dead (its held tokens may be reclaimed).
    pub stale_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            max_call: Duration::from_secs(3600),
            stale_after: Duration::from_secs(10),
        }
    }
}

/// Mints and admits call tokens.
pub struct CallTokens {
    key: TokenKey,
    state: Arc<dyn SharedState>,
    /// This replica's id (who holds a token it admitted).
    replica: String,
    reconnect: ReconnectPolicy,
    bound: tokio::sync::Notify,
    /// Whether the WebSocket routes refuse a handshake without a token.
    required: bool,
}

impl CallTokens {
    pub fn new(
        key: TokenKey,
        state: Arc<dyn SharedState>,
        replica: String,
        reconnect: ReconnectPolicy,
        required: bool,
    ) -> Self {
        Self {
            key,
            state,
            replica,
            reconnect,
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
    /// `agent`: the id of the agent that takes the call.
    pub fn for_call(
        &self,
        route: Route,
        call_sid: &str,
        agent: &str,
        resume: bool,
        now: u64,
    ) -> String {
        self.key.mint(&Claims {
            route,
            binding: Binding::Call(call_sid.to_string()),
            resume,
            expires: now + CALL_TOKEN_TTL.as_secs(),
            id: TokenKey::new_id(),
            agent: agent.to_string(),
        })
    }

    /// A token for an outbound call not yet placed, and the nonce to bind to its SID.
    pub fn for_outbound(&self, route: Route, agent: &str, now: u64) -> (String, String) {
        let nonce = TokenKey::new_id();
        let token = self.key.mint(&Claims {
            route,
            binding: Binding::Outbound(nonce.clone()),
            resume: false,
            expires: now + OUTBOUND_TOKEN_TTL.as_secs(),
            id: TokenKey::new_id(),
            agent: agent.to_string(),
        });
        (token, nonce)
    }

    /// Binds an outbound call's nonce to the SID Twilio returned for it.
    pub async fn bind_outbound(&self, nonce: &str, call_sid: &str, now: u64) {
        let expires = ms(now + OUTBOUND_TOKEN_TTL.as_secs());
        if let Err(e) = self
            .state
            .state_put(OUTBOUND, nonce, call_sid, expires)
            .await
        {
            tracing::error!(error = %e, "cannot record an outbound call's binding; its WebSocket will be refused");
        }
        self.bound.notify_waiters();
    }

    /// Admits `token` for `route` once: checks its signature, expiry and route,
    /// then marks it used (held by this replica). With reconnects on, a relay
    /// token whose socket dropped is admitted again (see the module docs).
    pub async fn admit(
        self: &Arc<Self>,
        route: Route,
        token: &str,
        now: u64,
    ) -> Result<Admission, TokenError> {
        let claims = self.key.verify_signature(token)?;
        if claims.route != route {
            return Err(TokenError::WrongRoute);
        }
        let holder = format!("open:{}", self.replica);
        let now_ms = ms(now);
        if now <= claims.expires {
            let held_until = self.held_until(&claims, now);
            match self
                .state
                .state_insert(TOKEN, &claims.id, &holder, held_until, now_ms)
                .await
            {
                Ok(true) => return Ok(self.admission(claims, false)),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot check a call token in the store");
                    return Err(TokenError::Unavailable);
                }
            }
        }
        if !(self.reconnect.enabled && route == Route::Relay) {
            return Err(if now > claims.expires {
                TokenError::Expired
            } else {
                TokenError::Replayed
            });
        }
        let stale_before = now_ms - self.reconnect.stale_after.as_millis() as i64;
        match self
            .state
            .state_reclaim_token(&claims.id, &holder, stale_before, now_ms)
            .await
        {
            Ok(true) => {
                tracing::info!("a dropped call's socket is back (applicationReconnect)");
                Ok(self.admission(claims, true))
            }
            Ok(false) if now > claims.expires => Err(TokenError::Expired),
            Ok(false) => Err(TokenError::Replayed),
            Err(e) => {
                tracing::error!(error = %e, "cannot check a call token in the store");
                Err(TokenError::Unavailable)
            }
        }
    }

    /// How long the ledger keeps a token it admits: until the token expires, or,
    /// when the call may reconnect with it, for as long as a call may last.
    fn held_until(&self, claims: &Claims, now: u64) -> i64 {
        let mut until = claims.expires;
        if self.reconnect.enabled && claims.route == Route::Relay {
            until = until.max(now + self.reconnect.max_call.as_secs() + RECONNECT_WINDOW.as_secs());
        }
        ms(until)
    }

    fn admission(self: &Arc<Self>, claims: Claims, reconnected: bool) -> Admission {
        Admission {
            claims,
            reconnected,
            tokens: self.clone(),
        }
    }

    /// The SID an outbound nonce is bound to, waiting up to `wait` for the binding.
    async fn outbound_sid(&self, nonce: &str, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.bound.notified();
            match self.state.state_get(OUTBOUND, nonce, ms(unix_now())).await {
                Ok(Some(sid)) => return Some(sid),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read an outbound call's binding"),
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let poll = deadline.min(tokio::time::Instant::now() + BIND_POLL);
            let _ = tokio::time::timeout_at(poll, notified).await;
        }
    }
}

/// A handshake admitted with a valid token.
pub struct Admission {
    claims: Claims,
    /// The token came back after its socket dropped (`applicationReconnect`).
    reconnected: bool,
    tokens: Arc<CallTokens>,
}

/// The session names a call other than its token's.
#[derive(Debug, thiserror::Error)]
#[error("the session's call SID is not the one its WebSocket token was minted for")]
pub struct WrongCall;

impl Admission {
    /// Whether the session may resume the call's earlier conversation: a reconnect
    /// we answered (`64105`), or the same token back after a drop.
    pub fn may_resume(&self) -> bool {
        self.claims.resume || self.reconnected
    }

    /// The id of the agent the call's TwiML was built for (empty: the default).
    pub fn agent(&self) -> &str {
        &self.claims.agent
    }

    /// What the call's admission slot was reserved under (see
    /// `state::roster`): the call's SID, or an outbound call's nonce.
    pub fn slot_key(&self) -> &str {
        match &self.claims.binding {
            Binding::Call(sid) | Binding::Outbound(sid) => sid,
        }
    }

    /// Whether this socket is a dropped one come back with its token.
    pub fn reconnected(&self) -> bool {
        self.reconnected
    }

    /// The call the token was minted for (an outbound call's once bound).
    pub async fn call_sid(&self) -> Option<String> {
        match &self.claims.binding {
            Binding::Call(sid) => Some(sid.clone()),
            Binding::Outbound(nonce) => self.tokens.outbound_sid(nonce, OUTBOUND_BIND_WAIT).await,
        }
    }

    /// Checks that `call_sid` (from `setup` or `start`) is the token's call. For an
    /// outbound call this may wait a little for `POST /api/calls` to bind the SID.
    pub async fn check(&self, call_sid: &str) -> Result<(), WrongCall> {
        match self.call_sid().await {
            Some(sid) if !sid.is_empty() && sid == call_sid => Ok(()),
            _ => Err(WrongCall),
        }
    }

    /// Tells the ledger how the socket ended. With reconnects on, a socket gone
    /// without a close frame (`dropped`) leaves the token open to its call's next
    /// socket for [`RECONNECT_WINDOW`]; a clean end closes it for good.
    pub async fn release(&self, dropped: bool) {
        let tokens = &self.tokens;
        if !(tokens.reconnect.enabled && self.claims.route == Route::Relay) {
            return;
        }
        let now = unix_now();
        let (value, until) = if dropped {
            ("dropped", now + RECONNECT_WINDOW.as_secs())
        } else {
            ("closed", now.max(self.claims.expires) + 60)
        };
        if let Err(e) = tokens
            .state
            .state_put(TOKEN, &self.claims.id, value, ms(until))
            .await
        {
            tracing::warn!(error = %e, "cannot release the call's token in the store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tokens_with(reconnect: ReconnectPolicy) -> Arc<CallTokens> {
        let store = crate::store::in_memory().await;
        let state: Arc<dyn SharedState> = store;
        Arc::new(CallTokens::new(
            TokenKey::derive(b"k"),
            state,
            "replica-a".into(),
            reconnect,
            true,
        ))
    }

    async fn tokens() -> Arc<CallTokens> {
        tokens_with(ReconnectPolicy::default()).await
    }

    #[tokio::test]
    async fn a_token_is_admitted_once_for_its_route_and_call() {
        let t = tokens().await;
        let token = t.for_call(Route::Relay, "CA1", "", false, 1_000);
        assert_eq!(
            t.admit(Route::Media, &token, 1_000).await.err(),
            Some(TokenError::WrongRoute)
        );
        let admitted = t.admit(Route::Relay, &token, 1_000).await.unwrap();
        assert!(!admitted.may_resume());
        assert!(admitted.check("CA1").await.is_ok());
        assert!(admitted.check("CA2").await.is_err());
        assert_eq!(
            t.admit(Route::Relay, &token, 1_001).await.err(),
            Some(TokenError::Replayed)
        );
        let late = t.for_call(Route::Relay, "CA1", "", true, 1_000);
        assert_eq!(
            t.admit(Route::Relay, &late, 1_000 + CALL_TOKEN_TTL.as_secs() + 1)
                .await
                .err(),
            Some(TokenError::Expired)
        );
    }

    #[tokio::test]
    async fn an_outbound_token_waits_for_its_sid_and_then_binds() {
        let t = tokens().await;
        let (token, nonce) = t.for_outbound(Route::Relay, "", 1_000);
        let admitted = t.admit(Route::Relay, &token, 1_000).await.unwrap();
        let binder = {
            let t = t.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                t.bind_outbound(&nonce, "CAout", unix_now()).await;
            })
        };
        assert!(admitted.check("CAout").await.is_ok());
        binder.await.unwrap();
        assert!(admitted.check("CAother").await.is_err());
        // A nonce never bound: refused after the wait.
        let (token, _) = t.for_outbound(Route::Relay, "", 1_000);
        let admitted = t.admit(Route::Relay, &token, 1_000).await.unwrap();
        assert!(admitted.check("CAout").await.is_err());
    }

    #[tokio::test]
    async fn a_dropped_relay_socket_may_come_back_once_and_a_closed_one_never() {
        let t = tokens_with(ReconnectPolicy {
            enabled: true,
            ..ReconnectPolicy::default()
        })
        .await;
        let now = unix_now();
        let token = t.for_call(Route::Relay, "CA1", "", false, now);
        let first = t.admit(Route::Relay, &token, now).await.unwrap();
        assert!(!first.may_resume());
        // Held: a second socket with the same token is a replay.
        assert_eq!(
            t.admit(Route::Relay, &token, now).await.err(),
            Some(TokenError::Replayed)
        );
        first.release(true).await;
        // Dropped: the call's next socket gets in, long after the token expired,
        // and resumes; only one of two racing sockets does.
        let later = now + CALL_TOKEN_TTL.as_secs() + 60;
        let back = t.admit(Route::Relay, &token, later).await.unwrap();
        assert!(back.may_resume() && back.reconnected());
        assert_eq!(
            t.admit(Route::Relay, &token, later).await.err(),
            Some(TokenError::Expired)
        );
        back.release(false).await;
        assert!(t.admit(Route::Relay, &token, now + 1).await.is_err());
        // Held by a replica that was killed (no heartbeat since): the call's next
        // socket on another replica takes it over; while it beats, nobody can.
        let other = t.for_call(Route::Relay, "CA3", "", false, now);
        let state = t.state.clone();
        let stale = (now as i64 - 60) * 1000;
        state.heartbeat("replica-b", stale, stale).await.unwrap();
        let b = Arc::new(CallTokens::new(
            TokenKey::derive(b"k"),
            state.clone(),
            "replica-b".into(),
            t.reconnect.clone(),
            true,
        ));
        let _held_by_b = b.admit(Route::Relay, &other, now).await.unwrap();
        state.heartbeat("replica-b", stale, ms(now)).await.unwrap();
        assert_eq!(
            t.admit(Route::Relay, &other, now).await.err(),
            Some(TokenError::Replayed),
            "replica-b is alive"
        );
        state.heartbeat("replica-b", stale, stale).await.unwrap();
        assert!(
            t.admit(Route::Relay, &other, now)
                .await
                .unwrap()
                .reconnected()
        );
        // Media Streams tokens never come back.
        let media = t.for_call(Route::Media, "CA2", "", false, now);
        let held = t.admit(Route::Media, &media, now).await.unwrap();
        held.release(true).await;
        assert_eq!(
            t.admit(Route::Media, &media, now).await.err(),
            Some(TokenError::Replayed)
        );
    }
}
