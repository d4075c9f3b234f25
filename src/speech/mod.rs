//! Upstream speech clients for the Media Streams mode: OpenAI Realtime (speech to
//! speech, or transcription only), ElevenLabs streaming TTS, the ElevenLabs
//! Conversational AI agent and ElevenLabs Scribe realtime STT.
//!
//! Every client is transport-independent: it knows nothing about Twilio, warp or the
//! call session. Each one owns one outbound WebSocket, split in two (see [`ws`]): a
//! writer task fed by a bounded queue, and a reader the caller polls with the
//! client's cancel-safe `next_event()` inside its own `select!` loop. Server messages
//! are parsed leniently from `serde_json::Value` (unknown types become `Unknown`,
//! never an error); client messages are serde types. Audio is passed through as the
//! base64 G.711 µ-law text Twilio uses, never decoded.
//!
//! An upstream close or a broken socket surfaces as `Err(SpeechError::Closed ..)` from
//! `next_event()` (and again on every later call), never as a hang. Dropping a client,
//! or calling its `close()`, closes the upstream socket with a WebSocket close frame.
//!
//! May import `config` only: no transport, no agent (the order is checked by
//! `.ci/layers`).

pub mod elevenlabs_agent;
pub mod elevenlabs_stt;
pub mod elevenlabs_tts;
pub mod realtime;
pub(crate) mod ws;

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// Which upstream service a message or an error is about (used in errors and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    OpenAiRealtime,
    ElevenLabsTts,
    ElevenLabsAgent,
    ElevenLabsStt,
    /// The sideband socket of a SIP call (OpenAI or Azure OpenAI).
    OpenAiSip,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OpenAiRealtime => "OpenAI Realtime",
            Self::ElevenLabsTts => "ElevenLabs TTS",
            Self::ElevenLabsAgent => "ElevenLabs agent",
            Self::ElevenLabsStt => "ElevenLabs STT",
            Self::OpenAiSip => "OpenAI SIP sideband",
        })
    }
}

/// Everything that can go wrong talking to a speech service. Messages never contain
/// keys or signed URLs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpeechError {
    /// A setting the client needs is missing (named in the message).
    #[error("{service} is not configured: {missing} is not set")]
    NotConfigured {
        service: Service,
        missing: &'static str,
    },
    /// TCP, TLS and the WebSocket handshake did not finish in time.
    #[error("{service}: connecting timed out after {after:?}")]
    ConnectTimeout { service: Service, after: Duration },
    /// The server answered the handshake with an HTTP error (bad key, unknown model ...).
    #[error("{service} refused the connection: HTTP {status}: {body}")]
    Rejected {
        service: Service,
        status: u16,
        body: String,
    },
    /// The connection could not be opened (DNS, TCP, TLS, bad URL).
    #[error("{service}: connection failed: {message}")]
    Connect { service: Service, message: String },
    /// Fetching an ElevenLabs signed URL failed.
    #[error("{service}: signed URL request failed: {message}")]
    SignedUrl { service: Service, message: String },
    /// The server closed the socket, or it broke. `code` is the WebSocket close code
    /// when the server sent one.
    #[error("{service} closed the connection (code {}): {reason}", code.map_or("none".to_string(), |c| c.to_string()))]
    Closed {
        service: Service,
        code: Option<u16>,
        reason: String,
    },
    /// The outbound queue is full (the upstream does not keep up); the message was
    /// dropped.
    #[error("{service}: send queue is full, message dropped")]
    QueueFull { service: Service },
    /// The socket's writer has stopped: the connection is gone.
    #[error("{service}: the connection is gone")]
    Gone { service: Service },
}

impl SpeechError {
    /// Whether the connection is finished (as opposed to one dropped message).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::QueueFull { .. })
    }
}

/// The ISO 639-1 code of a language tag: `pt-BR` → `pt`, `en_US` → `en`.
pub fn language_code(language: &str) -> String {
    language
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Number of bytes a base64 text decodes to, without decoding it (padded or not;
/// whitespace is not expected in these protocols).
pub fn base64_decoded_len(b64: &str) -> usize {
    let trimmed = b64.trim_end_matches('=');
    let n = trimmed.len();
    n / 4 * 3
        + match n % 4 {
            2 => 1,
            3 => 2,
            _ => 0,
        }
}

/// `value[key]` as a string, if it is one.
pub(crate) fn str_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The scheme and host of `base` rewritten for WebSockets (`https` → `wss`).
pub(crate) fn ws_base(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    }
}

/// The scheme and host of `base` rewritten for HTTP (`wss` → `https`).
pub(crate) fn http_base(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_string()
    }
}

/// A query string from pairs, percent-encoded.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes() {
        assert_eq!(language_code("pt-BR"), "pt");
        assert_eq!(language_code("en_US"), "en");
        assert_eq!(language_code("ES"), "es");
    }

    #[test]
    fn base64_lengths() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len as u8).collect();
            let padded = encode(&bytes, true);
            let unpadded = encode(&bytes, false);
            assert_eq!(base64_decoded_len(&padded), len, "{padded}");
            assert_eq!(base64_decoded_len(&unpadded), len, "{unpadded}");
        }
    }

    /// A tiny reference encoder, only for the test.
    fn encode(bytes: &[u8], pad: bool) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
            if pad {
                for _ in chunk.len()..3 {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base_urls_switch_scheme() {
        assert_eq!(
            ws_base("https://api.elevenlabs.io/"),
            "wss://api.elevenlabs.io"
        );
        assert_eq!(
            ws_base("wss://api.elevenlabs.io"),
            "wss://api.elevenlabs.io"
        );
        assert_eq!(
            http_base("wss://api.elevenlabs.io"),
            "https://api.elevenlabs.io"
        );
        assert_eq!(http_base("ws://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(query(&[("a", "b c"), ("d", "é")]), "a=b+c&d=%C3%A9");
    }
}
