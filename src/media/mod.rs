//! The Twilio Media Streams transport (raw call audio at `/media-stream`).
//!
//! - [`protocol`]: the wire messages as serde enums tagged by `event`.
//! - [`session`]: one call: Twilio's frames in, paced agent audio out, barge-in.
//! - [`playback`]: outbound framing, pacing and marks (what the caller heard).
//! - [`pipeline`]: the seam to the speech pipelines (OpenAI Realtime, ElevenLabs
//!   agent, cascade) and the pipelines themselves.
//! - [`recording`]: optional stereo WAV per call.
//! - [`control`]: the agent's hang-up or transfer through Twilio's REST API.
//!
//! [`Endings`] remembers how the agent ended each call (hang up or transfer) for the
//! TwiML that runs after `</Connect>` (`/twiml/stream/next`).

pub mod control;
pub mod pipeline;
pub mod playback;
pub mod protocol;
pub mod recording;
pub mod session;

/// Whether the `count`-th occurrence of a repeated problem on a call gets a log
/// line: the first `first` of them, then every `every`-th, so a misbehaving peer
/// cannot flood the logs at 50 frames a second.
pub(crate) fn log_due(count: u64, first: u64, every: u64) -> bool {
    count <= first || count % every == 0
}

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::agent::Handoff;

/// How long an ending is kept for Twilio's follow-up request.
const ENDING_TTL: Duration = Duration::from_secs(120);
/// Most endings kept at once.
const MAX_ENDINGS: usize = 10_000;

/// How recent media calls were ended by the agent, by call SID (bounded, expiring).
#[derive(Debug, Default)]
pub struct Endings {
    inner: Mutex<HashMap<String, (Handoff, Instant)>>,
}

impl Endings {
    pub fn record(&self, call_sid: &str, handoff: Handoff) {
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENDINGS {
            map.retain(|_, (_, at)| now.duration_since(*at) < ENDING_TTL);
            if map.len() >= MAX_ENDINGS {
                // Still full of fresh entries: forget the oldest.
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(call_sid.to_string(), (handoff, now));
    }

    /// The ending of `call_sid`, once (expired entries are gone).
    pub fn take(&self, call_sid: &str) -> Option<Handoff> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (handoff, at) = map.remove(call_sid)?;
        (at.elapsed() < ENDING_TTL).then_some(handoff)
    }
}
