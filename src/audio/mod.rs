//! Audio building blocks for the Media Streams path: pure, synchronous, no network.
//!
//! - [`mulaw`]: G.711 μ-law encode/decode, bit-exact with the ITU-T reference.
//! - [`resample`]: PCM16 rate conversion (8, 16, 24 kHz ...) with a windowed-sinc
//!   polyphase filter and a streaming API for 20 ms frames.
//! - [`frame`]: 20 ms framing of μ-law audio and real-time pacing arithmetic.
//! - [`wav`]: incremental WAV writer (PCM16/μ-law, mono/stereo) and reader.
//! - [`record`]: lines up caller and agent audio for a stereo call recording.
//!
//! This module sits at the bottom of the dependency graph: it imports nothing from
//! the rest of the crate except itself.

pub mod frame;
pub mod mulaw;
pub mod record;
pub mod resample;
pub mod wav;

pub use resample::{ResampleError, Resampler, resample};
