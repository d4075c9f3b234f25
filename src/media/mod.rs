//! The Twilio Media Streams transport (raw call audio at `/media-stream`).
//!
//! - [`protocol`]: the wire messages as serde enums tagged by `event`.
//!
//! The session (μ-law in, speech pipeline, μ-law out, barge-in) builds on
//! [`protocol`] and [`crate::audio`].

pub mod protocol;
