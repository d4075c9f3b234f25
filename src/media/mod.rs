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
//!
//! May import `agent`, `speech`, `tools`, `llm`, `store`, `twilio`, `twiml`,
//! `audio`, `transport`, `metrics` and `config`; never `http`, `state` or `server`
//! (the order is checked by `.ci/layers`).

pub mod chunks;
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

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Handoff;
use crate::store::{SharedState, now_millis};

/// How long an ending is kept for Twilio's follow-up request.
const ENDING_TTL: Duration = Duration::from_secs(120);
/// Its kind in the store's shared call state.
const ENDING: &str = "media-ending";

/// How recent media calls were ended by the agent, by call SID, in the store's
/// shared call state: the `<Redirect>` Twilio follows after the stream may land on
/// any replica.
pub struct Endings {
    state: Arc<dyn SharedState>,
}

impl Endings {
    pub fn new(state: Arc<dyn SharedState>) -> Self {
        Self { state }
    }

    pub async fn record(&self, call_sid: &str, handoff: &Handoff) {
        let until = now_millis() + ENDING_TTL.as_millis() as i64;
        if let Err(e) = self
            .state
            .state_put(ENDING, call_sid, &handoff.to_json(), until)
            .await
        {
            tracing::error!(error = %e, "cannot record how the agent ended the call; /twiml/stream/next will hang up");
        }
    }

    /// The ending of `call_sid` (its handoff JSON), once.
    pub async fn take(&self, call_sid: &str) -> Option<String> {
        match self.state.state_take(ENDING, call_sid, now_millis()).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot read how the agent ended the call; hanging up");
                None
            }
        }
    }
}
