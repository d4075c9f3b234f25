//! What every WebSocket transport reads: text, binary and close frames, already
//! separated from the HTTP framework (`http::ws` converts warp's messages into
//! these), so sessions can be driven by plain channels in tests; the bounds on
//! what a peer sends; call SIDs made on our side ([`random_sid`]); and the
//! registry of live calls by SID ([`live`]) that every transport's session joins;
//! the timer a session loop reuses across turns ([`alarm`]); and the gate that
//! keeps a loop from polling a branch that has not woken it ([`gate`]).
//!
//! May import `text` only (the order is checked by `.ci/layers`).

pub mod alarm;
pub mod gate;
pub mod live;

/// One frame from the peer. Pings and pongs are answered below this layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    /// A binary frame, by length; neither Twilio protocol uses them.
    Binary(usize),
    Close,
}

/// At most `max` bytes of `text`, cut on a character boundary, for log lines.
pub fn excerpt(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Longest call field kept (a number, a direction): far beyond any real one.
pub const MAX_FIELD_BYTES: usize = 128;
/// `customParameters` kept at most, and their sizes.
pub const MAX_PARAMETERS: usize = 32;
pub const MAX_PARAMETER_NAME_BYTES: usize = 64;
pub const MAX_PARAMETER_VALUE_BYTES: usize = 1024;
pub const MAX_PARAMETERS_BYTES: usize = 8 * 1024;

use crate::text::cut_to;

/// A call field from Twilio's first message, cut to [`MAX_FIELD_BYTES`].
pub fn bound_field(mut value: String) -> String {
    if cut_to(&mut value, MAX_FIELD_BYTES) {
        tracing::warn!(max = MAX_FIELD_BYTES, "a call field was too long; cut");
    }
    value
}

/// The call's `<Parameter>`s within their bounds: at most [`MAX_PARAMETERS`],
/// names of at most [`MAX_PARAMETER_NAME_BYTES`] (longer ones dropped), values
/// cut to [`MAX_PARAMETER_VALUE_BYTES`], [`MAX_PARAMETERS_BYTES`] in all. They
/// reach the LLM prompt and the store, so an oversized set is trimmed, with a warning.
pub fn bound_parameters(
    parameters: std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    let given = parameters.len();
    let mut sorted: Vec<(String, String)> = parameters.into_iter().collect();
    sorted.sort();
    let mut kept = std::collections::HashMap::new();
    let mut total = 0;
    let mut cut = 0;
    for (name, mut value) in sorted {
        if kept.len() >= MAX_PARAMETERS || name.len() > MAX_PARAMETER_NAME_BYTES {
            continue;
        }
        if cut_to(&mut value, MAX_PARAMETER_VALUE_BYTES) {
            cut += 1;
        }
        if total + name.len() + value.len() > MAX_PARAMETERS_BYTES {
            continue;
        }
        total += name.len() + value.len();
        kept.insert(name, value);
    }
    if kept.len() < given || cut > 0 {
        tracing::warn!(
            given,
            kept = kept.len(),
            values_cut = cut,
            "call parameters over their bounds were dropped or cut"
        );
    }
    kept
}

/// `XX` followed by 32 random hex digits, like Twilio's SIDs.
pub fn random_sid(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Not secret: any unique-enough value will do.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::cut_to;

    #[test]
    fn parameters_are_bounded_in_count_and_bytes() {
        let many: std::collections::HashMap<String, String> = (0..100)
            .map(|i| (format!("p{i:03}"), "v".repeat(5000)))
            .collect();
        let kept = bound_parameters(many);
        assert!(kept.len() <= MAX_PARAMETERS);
        let bytes: usize = kept.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(bytes <= MAX_PARAMETERS_BYTES, "{bytes}");
        assert!(kept.values().all(|v| v.len() <= MAX_PARAMETER_VALUE_BYTES));
        let mut text = "ação".repeat(100);
        assert!(cut_to(&mut text, 4));
        assert_eq!(text, "aç", "cut on a character boundary");
    }
}

/// Serde helpers both Twilio protocols use for fields Twilio may send as `null`.
pub mod lenient {
    use std::collections::HashMap;

    use serde::{Deserialize, Deserializer};

    /// The field's value, or its default when it is `null`.
    pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// `customParameters`: a JSON object (or `null`) whose values are strings in
    /// practice; numbers or booleans are turned into their text.
    pub fn params_or_null<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<String, String>, D::Error> {
        let raw = Option::<HashMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
        Ok(raw
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect())
    }
}

/// Test helpers for the sessions over a transport.
#[cfg(test)]
pub mod testing {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::{Sink, Stream};

    use super::Frame;

    /// A socket of no size that never speaks and accepts anything: to weigh a
    /// session's future alone.
    pub struct NoSocket;

    impl Stream for NoSocket {
        type Item = Result<Frame, String>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }

    impl<T> Sink<T> for NoSocket {
        type Error = String;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, _: T) -> Result<(), String> {
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The size of the value `f` returns (an opaque future's, say), without calling it.
    pub fn returned_size<A, B, R>(_: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }
}
