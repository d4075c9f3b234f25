//! Lines up the two sides of a call for a stereo recording (caller left, agent
//! right).
//!
//! The caller's audio is the clock: Twilio sends it continuously, silence
//! included, 50 frames a second. The agent's audio arrives in bursts (only while
//! it speaks, and a little ahead of real time because of the pacer's lead). So
//! [`StereoAligner`] queues the agent's samples and, for every block of caller
//! samples, emits the same number of stereo frames, taking agent samples from the
//! queue and silence when there are none. Feed the agent side with what was
//! actually *sent* (after pacing) and call [`StereoAligner::clear_agent`] on
//! barge-in, since Twilio throws that audio away unplayed. The output goes straight
//! to [`super::wav::WavWriter::write_pcm16`] on a stereo writer.

use std::collections::VecDeque;

/// Aligns agent audio against the caller's audio clock (both at the same rate).
#[derive(Debug, Clone)]
pub struct StereoAligner {
    agent: VecDeque<i16>,
    max_queued: usize,
    dropped: u64,
}

impl StereoAligner {
    /// An aligner queueing at most `max_queued` agent samples (older ones are
    /// dropped beyond that, which only happens if the caller's audio stops).
    pub fn new(max_queued: usize) -> Self {
        Self {
            agent: VecDeque::new(),
            max_queued: max_queued.max(1),
            dropped: 0,
        }
    }

    /// Queues agent samples as they are sent.
    pub fn agent(&mut self, samples: &[i16]) {
        self.agent.extend(samples);
        let excess = self.agent.len().saturating_sub(self.max_queued);
        if excess > 0 {
            self.agent.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// Forgets queued agent audio that will never be played (after a `clear`).
    pub fn clear_agent(&mut self) {
        self.agent.clear();
    }

    /// Appends interleaved stereo samples for `caller` (left) and the queued agent
    /// audio (right, silence where there is none) to `out`.
    pub fn caller(&mut self, caller: &[i16], out: &mut Vec<i16>) {
        out.reserve(caller.len() * 2);
        for &left in caller {
            out.push(left);
            out.push(self.agent.pop_front().unwrap_or(0));
        }
    }

    /// Agent samples waiting for caller audio.
    pub fn queued(&self) -> usize {
        self.agent.len()
    }

    /// Agent samples dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::wav;

    #[test]
    fn agent_bursts_land_on_the_caller_clock() {
        let mut a = StereoAligner::new(8000);
        let mut out = Vec::new();
        a.caller(&[1, 2], &mut out); // agent silent
        a.agent(&[10, 20, 30]); // a burst, ahead of time
        a.caller(&[3, 4], &mut out);
        assert_eq!(a.queued(), 1);
        a.caller(&[5, 6], &mut out);
        assert_eq!(out, [1, 0, 2, 0, 3, 10, 4, 20, 5, 30, 6, 0]);
        // Barge-in drops what was queued but never played.
        a.agent(&[40, 50]);
        a.clear_agent();
        out.clear();
        a.caller(&[7], &mut out);
        assert_eq!(out, [7, 0]);
    }

    #[test]
    fn queue_is_bounded_and_output_writes_as_stereo_wav() {
        let mut a = StereoAligner::new(4);
        a.agent(&[1, 2, 3, 4, 5, 6]);
        assert_eq!((a.queued(), a.dropped()), (4, 2));
        let mut out = Vec::new();
        a.caller(&[-1, -2, -3, -4], &mut out);
        let mut w = wav::WavWriter::new(
            std::io::Cursor::new(Vec::new()),
            wav::WavSpec::pcm16_stereo(8000),
        )
        .unwrap();
        w.write_pcm16(&out).unwrap();
        let file = wav::parse(&w.finish().unwrap().into_inner()).unwrap();
        assert_eq!(file.channel(0).unwrap(), [-1, -2, -3, -4]);
        assert_eq!(file.channel(1).unwrap(), [3, 4, 5, 6]);
    }
}
