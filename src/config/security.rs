//! The `[security]` and `[limits]` parts of the configuration: what guards the
//! public edges (per-call WebSocket tokens, proxy headers) and the bounds in time
//! and bytes every call and connection lives within. README "Security" lists each
//! with the threat it answers.

use std::time::Duration;

use super::{Secret, Vars};

/// How the server trusts what reaches it.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// `ALLOW_STATIC_TWIML`: accept WebSocket handshakes without a per-call token
    /// (TwiML Bins and the `twiml/` examples cannot mint one). Off by default.
    pub allow_static_twiml: bool,
    /// `CALL_TOKEN_SECRET`: the key per-call tokens are signed with; unset, one is
    /// derived from `TWILIO_AUTH_TOKEN` (the same on every replica).
    pub call_token_secret: Option<Secret>,
    /// `TRUSTED_PROXIES`: how many proxies in front of the server append to
    /// `X-Forwarded-Host`/`-Proto`; the value that many from the right is used.
    /// Unset: forwarded headers are ignored (only `PUBLIC_URL` or `Host` count).
    pub trusted_proxies: Option<usize>,
}

/// Bounds in time and bytes.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// `SETUP_TIMEOUT_SECS`: a WebSocket that has not said which call it is
    /// (ConversationRelay `setup`, Media Streams `start`) is closed.
    pub setup_timeout: Duration,
    /// `MAX_CALL_SECS`: the longest a call may last; the caller hears a goodbye.
    pub max_call: Duration,
    /// `HTTP_HEADER_TIMEOUT_SECS`: time to send a request's headers, and the most an
    /// idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// `MAX_CONNECTIONS`: HTTP connections open at once (WebSocket calls count
    /// against `MAX_CALLS` once upgraded).
    pub max_connections: usize,
    /// `MAX_PROMPT_BYTES`: the longest caller utterance (`voicePrompt`, and the
    /// heard part of an interrupted reply) kept; longer ones are cut.
    pub max_prompt_bytes: usize,
    /// `MAX_HISTORY_BYTES`: the conversation sent to the LLM, besides the system
    /// prompt; the oldest turns are dropped first.
    pub max_history_bytes: usize,
    /// `MAX_RECORDING_SECS`: the longest local recording (`RECORD_CALLS`).
    pub max_recording: Duration,
}

impl SecurityConfig {
    /// What to shout at start when a guard is off.
    pub fn warning(&self) -> Option<&'static str> {
        self.allow_static_twiml.then_some(
            "ALLOW_STATIC_TWIML=true: WebSocket handshakes without a per-call token are accepted. Twilio signs a fixed URL the same way for every call, so anyone who sees one handshake (a proxy log, a capture) can open sessions at will and claim any call. Use it only while you serve static TwiML (TwiML Bins); point your number at /incoming-call instead.",
        )
    }
}

pub(super) fn read(env: &mut Vars) -> SecurityConfig {
    let trusted_proxies: Option<usize> = env.parse_opt("TRUSTED_PROXIES");
    if trusted_proxies.is_some_and(|n| n > 16) {
        env.errors
            .push("TRUSTED_PROXIES is a number of proxy hops (0 to 16)".into());
    }
    let call_token_secret = env.get("CALL_TOKEN_SECRET").map(Secret::new);
    if call_token_secret
        .as_ref()
        .is_some_and(|s| s.expose().len() < 16)
    {
        env.errors
            .push("CALL_TOKEN_SECRET must be at least 16 characters long".into());
    }
    SecurityConfig {
        allow_static_twiml: env.parse("ALLOW_STATIC_TWIML", false),
        call_token_secret,
        trusted_proxies: trusted_proxies.filter(|&n| n > 0),
    }
}

pub(super) fn read_limits(env: &mut Vars, max_calls: usize) -> LimitsConfig {
    let secs = |env: &mut Vars, name: &str, default: u64| {
        let value = env.parse(name, default);
        if value == 0 {
            env.errors.push(format!("{name} must be at least 1"));
        }
        Duration::from_secs(value.max(1))
    };
    let bytes = |env: &mut Vars, name: &str, default: usize, least: usize| {
        let value = env.parse(name, default);
        if value < least {
            env.errors
                .push(format!("{name} must be at least {least} bytes"));
        }
        value.max(least)
    };
    LimitsConfig {
        setup_timeout: secs(env, "SETUP_TIMEOUT_SECS", 10),
        max_call: secs(env, "MAX_CALL_SECS", 3600),
        header_read_timeout: secs(env, "HTTP_HEADER_TIMEOUT_SECS", 10),
        max_connections: env.parse("MAX_CONNECTIONS", max_calls.saturating_add(1024)),
        max_prompt_bytes: bytes(env, "MAX_PROMPT_BYTES", 8 * 1024, 256),
        max_history_bytes: bytes(env, "MAX_HISTORY_BYTES", 64 * 1024, 4 * 1024),
        max_recording: secs(env, "MAX_RECORDING_SECS", 3600),
    }
}
