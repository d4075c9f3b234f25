//! Caller audio gathered into larger chunks for the upstream
//! (`MEDIA_UPSTREAM_CHUNK_MS`). Twilio sends a 20 ms frame every 20 ms; forwarding
//! each is one upstream message and one socket write per frame, the largest share
//! of a media call's CPU (BENCHMARKS.md, issue 17, seventh session). Gathering
//! `n` frames writes `n` times less, and the upstream hears the caller up to
//! `(n - 1) × 20 ms` later. One frame (the default) passes Twilio's base64 through
//! untouched; larger chunks are encoded once each.
//!
//! Pure bookkeeping, no I/O and no clock. May import the pipeline's types only.

use crate::text::base64::Base64;

use super::pipeline::CallerAudio;

/// Frames of caller audio gathered before they go upstream as one.
#[derive(Debug)]
pub struct CallerChunks {
    frames: usize,
    gathered: usize,
    mulaw: Vec<u8>,
    timestamp_ms: Option<u64>,
    payload_b64: Base64,
}

impl CallerChunks {
    /// Chunks of `frames` frames (at least 2; one frame needs no chunker).
    pub fn new(frames: usize) -> Self {
        Self {
            frames: frames.max(2),
            gathered: 0,
            mulaw: Vec::new(),
            timestamp_ms: None,
            payload_b64: Base64::default(),
        }
    }

    /// Adds one frame (decoded μ-law, Twilio's timestamp); returns the chunk to
    /// send once it holds `frames` frames, stamped with its first frame's time.
    pub fn push(&mut self, mulaw: &[u8], timestamp_ms: Option<u64>) -> Option<CallerAudio<'_>> {
        if self.gathered == 0 {
            self.mulaw.clear();
            self.timestamp_ms = timestamp_ms;
        }
        self.mulaw.extend_from_slice(mulaw);
        self.gathered += 1;
        if self.gathered < self.frames {
            return None;
        }
        self.gathered = 0;
        self.payload_b64.encode_from(&self.mulaw);
        Some(CallerAudio {
            payload_b64: self.payload_b64.as_b64(),
            timestamp_ms: self.timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::base64::ENGINE as BASE64;
    use base64::Engine as _;

    #[test]
    fn frames_go_upstream_in_chunks_encoded_once_with_the_first_timestamp() {
        let mut chunks = CallerChunks::new(3);
        let frames: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 160]).collect();
        let mut sent = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            if let Some(chunk) = chunks.push(frame, Some(i as u64 * 20)) {
                sent.push((
                    BASE64.decode(chunk.payload_b64.as_str()).unwrap(),
                    chunk.timestamp_ms,
                ));
            }
        }
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0, frames[..3].concat());
        assert_eq!(sent[0].1, Some(0));
        assert_eq!(sent[1].0, frames[3..6].concat());
        assert_eq!(sent[1].1, Some(60));
        // The seventh frame waited for two more.
        let last = chunks.push(&[9; 160], Some(140)).is_none();
        assert!(last);
        let chunk = chunks.push(&[9; 160], Some(160)).unwrap();
        assert_eq!(
            BASE64.decode(chunk.payload_b64.as_str()).unwrap()[..160],
            frames[6][..]
        );
        assert_eq!(chunk.timestamp_ms, Some(120));
    }

    #[test]
    fn a_chunk_of_one_is_taken_as_two() {
        let mut chunks = CallerChunks::new(1);
        assert!(chunks.push(&[1; 160], None).is_none());
        let chunk = chunks.push(&[2; 160], None).unwrap();
        assert_eq!(
            BASE64.decode(chunk.payload_b64.as_str()).unwrap().len(),
            320
        );
    }
}
