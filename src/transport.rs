//! What every WebSocket transport reads: text, binary and close frames, already
//! separated from the HTTP framework (`http::ws` converts warp's messages into
//! these), so sessions can be driven by plain channels in tests.

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
