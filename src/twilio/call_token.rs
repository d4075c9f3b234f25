//! Per-call WebSocket tokens: what makes each call's handshake URL different.
//!
//! Twilio signs a WebSocket handshake over its URL only, so the signature of a
//! fixed `wss://host/websocket` is the same for every call and, once seen, opens
//! sessions at will. Every TwiML document we serve therefore puts a token into the
//! WebSocket URL (`/websocket/<token>`, `/media-stream/<token>`); Twilio's signature
//! then covers it. A token is an HMAC-SHA256 with a server key over:
//!
//! - the route it opens (ConversationRelay or Media Streams),
//! - the call it is bound to: the `CallSid` of the signed webhook that minted it, or
//!   for an outbound call (whose SID is unknown when its TwiML is built) a random
//!   nonce that the server binds to the SID Twilio returns,
//! - whether the session may resume an earlier conversation of that call (only
//!   the reconnect answer of `/twiml/action` mints such tokens),
//! - its expiry (Unix seconds) and a random id that makes it single-use,
//! - the agent that takes the call (README "Agents per number"), so every replica
//!   runs the agent the TwiML was built for.
//!
//! Pure: no I/O, no clock (the time is an argument). The single-use ledger and the
//! outbound bindings are [`super::admission`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a token's random id (hex in the token).
const ID_BYTES: usize = 12;
/// Longest call SID or nonce a token carries.
const MAX_BINDING_CHARS: usize = 64;
/// Longest token accepted at all (a real one is about 130 characters).
pub const MAX_TOKEN_CHARS: usize = 256;

/// The WebSocket route a token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/websocket`: ConversationRelay.
    Relay,
    /// `/media-stream`: Media Streams.
    Media,
}

impl Route {
    /// The route's path segment: `websocket` or `media-stream`.
    pub fn path(self) -> &'static str {
        match self {
            Route::Relay => "websocket",
            Route::Media => "media-stream",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Route::Relay => "r",
            Route::Media => "m",
        }
    }
}

/// The call a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The `CallSid` of the signed webhook that minted the token.
    Call(String),
    /// An outbound call's nonce, bound to its SID once Twilio returns it.
    Outbound(String),
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub route: Route,
    pub binding: Binding,
    /// The session may resume the call's earlier conversation.
    pub resume: bool,
    /// Unix seconds after which the token is refused.
    pub expires: u64,
    /// Random, unique per token: the single-use key.
    pub id: String,
    /// The agent's id; empty for the default agent.
    pub agent: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no per-call token in the URL (static TwiML? see ALLOW_STATIC_TWIML)")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was already used")]
    Replayed,
    #[error("the token is for another WebSocket route")]
    WrongRoute,
    #[error("the token ledger cannot be reached")]
    Unavailable,
}

/// The key tokens are signed with.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// A key derived from a secret (`CALL_TOKEN_SECRET`, else the Twilio auth token):
    /// every replica with the same secret mints and accepts the same tokens.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(b"voxrelay call token v1");
        Self(mac.finalize().into_bytes().into())
    }

    /// A random key, for a server with no secret to derive one from.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random number generator works");
        Self(key)
    }

    /// A new random token id.
    pub fn new_id() -> String {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random number generator works");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The token for `claims`. A binding is reduced to letters, digits, `_` and `-`
    /// (at most 64), so the token always parses back; real SIDs are only those.
    pub fn mint(&self, claims: &Claims) -> String {
        let (kind, value) = match &claims.binding {
            Binding::Call(sid) => ("c", sid.as_str()),
            Binding::Outbound(nonce) => ("o", nonce.as_str()),
        };
        let value: String = value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .take(MAX_BINDING_CHARS)
            .collect();
        let agent: String = claims
            .agent
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .take(MAX_BINDING_CHARS)
            .collect();
        let payload = format!(
            "2.{}.{kind}.{value}.{}.{}.{}.{agent}",
            claims.route.code(),
            u8::from(claims.resume),
            claims.expires,
            claims.id
        );
        let tag = self.tag(payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The claims of `token` if its signature holds and it has not expired at `now`
    /// (Unix seconds). Single use is the ledger's job, not this one's.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let claims = self.verify_signature(token)?;
        if now > claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a token we signed, however old (a call's reconnect may come
    /// long after its token's expiry; the ledger decides then).
    pub fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        if !bool::from(self.tag(&payload).as_slice().ct_eq(&tag)) {
            return Err(TokenError::BadSignature);
        }
        parse_payload(&payload).ok_or(TokenError::Malformed)
    }

    fn tag(&self, payload: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }
}

fn parse_payload(payload: &[u8]) -> Option<Claims> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('.');
    let mut next = || parts.next();
    // Version 1 had no agent (a replica of an older release minted it).
    let version = next()?;
    if version != "1" && version != "2" {
        return None;
    }
    let route = match next()? {
        "r" => Route::Relay,
        "m" => Route::Media,
        _ => return None,
    };
    let kind = next()?;
    let value = next()?.to_string();
    let binding = match kind {
        "c" => Binding::Call(value),
        "o" => Binding::Outbound(value),
        _ => return None,
    };
    let resume = match next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let expires = next()?.parse().ok()?;
    let id = next()?.to_string();
    let agent = match version {
        "1" => String::new(),
        _ => next()?.to_string(),
    };
    if id.is_empty() || next().is_some() {
        return None;
    }
    Some(Claims {
        route,
        binding,
        resume,
        expires,
        id,
        agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(binding: Binding, expires: u64) -> Claims {
        Claims {
            route: Route::Relay,
            binding,
            resume: false,
            expires,
            id: TokenKey::new_id(),
            agent: String::new(),
        }
    }

    #[test]
    fn the_agent_travels_and_version_one_tokens_still_parse() {
        let key = TokenKey::derive(b"secret");
        let mut c = claims(Binding::Call("CA1".into()), 1_000);
        c.agent = "vendas-sp".into();
        assert_eq!(key.verify(&key.mint(&c), 0).unwrap().agent, "vendas-sp");
        // Changing the agent breaks the tag.
        let token = key.mint(&c);
        let (payload, tag) = token.split_once('.').unwrap();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = text.replace(".vendas-sp", ".suporte");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(key.verify(&forged, 0), Err(TokenError::BadSignature));
        // A version 1 token (no agent) from an older replica.
        let old = format!("1.r.c.CA1.0.1000.{}", c.id);
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&old),
            URL_SAFE_NO_PAD.encode(key.tag(old.as_bytes()))
        );
        let back = key.verify(&token, 0).unwrap();
        assert_eq!(back.agent, "");
        assert_eq!(back.binding, Binding::Call("CA1".into()));
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let key = TokenKey::derive(b"secret");
        let c = claims(Binding::Call("CA0123456789abcdef".into()), 1_000);
        let token = key.mint(&c);
        assert!(token.len() < 160, "{token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "URL-safe: {token}"
        );
        assert_eq!(key.verify(&token, 999), Ok(c.clone()));
        assert_eq!(key.verify(&token, 1_000), Ok(c));
        assert_eq!(key.verify(&token, 1_001), Err(TokenError::Expired));
    }

    #[test]
    fn another_key_or_a_changed_byte_is_refused() {
        let key = TokenKey::derive(b"secret");
        let token = key.mint(&claims(Binding::Outbound("n1".into()), 1_000));
        assert_eq!(
            TokenKey::derive(b"other").verify(&token, 0),
            Err(TokenError::BadSignature)
        );
        // Swap the bound call for another one, keeping the tag: refused.
        let (payload, tag) = token.split_once('.').unwrap();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = text.replace(".o.n1.", ".c.CAvictim.");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(key.verify(&forged, 0), Err(TokenError::BadSignature));
        // Extending the expiry: refused.
        let later = text.replace(".1000.", ".9999999999.");
        let later = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(later));
        assert_eq!(key.verify(&later, 0), Err(TokenError::BadSignature));
        for junk in ["", ".", "abc", "a.b", &"x".repeat(300), "ü.ü"] {
            assert!(key.verify(junk, 0).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn the_binding_and_flags_survive_and_odd_sids_are_reduced() {
        let key = TokenKey::random();
        let mut c = claims(Binding::Call("CA1.2\n3_x".into()), 50);
        c.resume = true;
        c.route = Route::Media;
        let back = key.verify(&key.mint(&c), 0).unwrap();
        assert_eq!(back.binding, Binding::Call("CA123_x".into()));
        assert!(back.resume);
        assert_eq!(back.route, Route::Media);
    }

    #[test]
    fn derived_keys_agree_across_replicas() {
        let token = TokenKey::derive(b"shared").mint(&claims(Binding::Call("CA1".into()), 10));
        assert!(TokenKey::derive(b"shared").verify(&token, 0).is_ok());
    }
}
