//! 20 ms framing of μ-law audio and the pacing arithmetic for sending it in real
//! time.
//!
//! Twilio Media Streams carries 8 kHz μ-law in 20 ms frames (160 bytes). Outbound
//! audio arrives from speech providers in chunks of any size, faster than real
//! time; [`Framer`] cuts it into whole frames and [`Pacer`] says when each frame is
//! due, so that the far end's buffer holds only a small, bounded lead (which keeps
//! barge-in quick: a `clear` has little to throw away).
//!
//! Nothing here sleeps or reads a clock: the async loop passes `Instant`s in (from
//! `tokio::time::Instant::into_std` so paused test time works) and sleeps until the
//! instant it is given back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::mulaw;

/// Length of one frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// Frames per second.
pub const FRAMES_PER_SECOND: u32 = 50;
/// Sample rate of Twilio's μ-law audio.
pub const MULAW_RATE: u32 = 8000;
/// Bytes (= samples) in one 20 ms μ-law frame.
pub const FRAME_BYTES: usize = 160;

/// Samples in one 20 ms frame at `rate_hz` (rounded down).
pub const fn samples_per_frame(rate_hz: u32) -> usize {
    (rate_hz / FRAMES_PER_SECOND) as usize
}

/// Playing time of `samples` samples at `rate_hz`.
pub fn duration_of(samples: usize, rate_hz: u32) -> Duration {
    Duration::from_nanos((samples as u64).saturating_mul(1_000_000_000) / rate_hz.max(1) as u64)
}

/// One 20 ms frame of μ-law audio.
pub type Frame = [u8; FRAME_BYTES];

/// Size of the blocks a [`Framer`] stores audio in (an allocator size class).
const BLOCK_BYTES: usize = 4096;

/// Cuts a byte stream of μ-law audio into 160-byte frames.
///
/// Bounded: [`Framer::push`] accepts at most the capacity given at construction and
/// reports how many bytes it took, so a runaway producer cannot grow memory.
/// Audio is kept in fixed 4 KiB blocks rather than one growing ring, whose
/// allocation would stay at the size of the longest reply: memory follows what is
/// buffered (within one block) and is given back as it plays.
#[derive(Debug, Clone)]
pub struct Framer {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already taken.
    offset: usize,
    /// Bytes buffered.
    len: usize,
    capacity: usize,
}

impl Framer {
    /// A framer holding at most `max_buffered` of audio.
    pub fn new(max_buffered: Duration) -> Self {
        let frames = max_buffered.as_millis().div_ceil(FRAME.as_millis()).max(1) as usize;
        Self {
            chunks: VecDeque::new(),
            offset: 0,
            len: 0,
            capacity: frames * FRAME_BYTES,
        }
    }

    /// Appends audio; returns how many bytes fitted (all of them unless full).
    pub fn push(&mut self, mulaw_bytes: &[u8]) -> usize {
        let take = mulaw_bytes.len().min(self.capacity - self.len);
        let mut rest = &mulaw_bytes[..take];
        if let Some(last) = self.chunks.back_mut() {
            let n = (last.capacity() - last.len()).min(rest.len());
            last.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        while !rest.is_empty() {
            let n = rest.len().min(BLOCK_BYTES);
            let mut block = Vec::with_capacity(BLOCK_BYTES);
            block.extend_from_slice(&rest[..n]);
            self.chunks.push_back(block);
            rest = &rest[n..];
        }
        self.len += take;
        take
    }

    /// Moves the oldest `out.len()` bytes (at most [`Framer::len`]) into `out`.
    fn take_into(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let available = &front[self.offset..];
            let n = available.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&available[..n]);
            filled += n;
            self.offset += n;
            if self.offset == front.len() {
                self.chunks.pop_front();
                self.offset = 0;
            }
        }
        self.len -= filled;
    }

    /// The next whole frame, if one is buffered.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.len < FRAME_BYTES {
            return None;
        }
        let mut frame = [0u8; FRAME_BYTES];
        self.take_into(&mut frame);
        Some(frame)
    }

    /// The remaining partial frame padded with silence (end of an utterance), or
    /// `None` when nothing is left.
    pub fn flush_padded(&mut self) -> Option<Frame> {
        if let Some(frame) = self.next_frame() {
            return Some(frame);
        }
        if self.len == 0 {
            return None;
        }
        let mut frame = [mulaw::SILENCE; FRAME_BYTES];
        let left = self.len;
        self.take_into(&mut frame[..left]);
        Some(frame)
    }

    /// Drops everything buffered (barge-in); returns how many bytes were dropped.
    pub fn clear(&mut self) -> usize {
        let dropped = self.len;
        self.chunks = VecDeque::new();
        self.offset = 0;
        self.len = 0;
        dropped
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Audio buffered, as playing time.
    pub fn buffered(&self) -> Duration {
        duration_of(self.len, MULAW_RATE)
    }
}

/// When frame `index` of a run that started at `start` is due (`start + index *
/// 20 ms`).
pub fn frame_due(start: Instant, index: u64) -> Instant {
    start + frame_offset(index)
}

/// `index * 20 ms`, without overflow for any realistic index.
pub fn frame_offset(index: u64) -> Duration {
    Duration::from_millis(index.saturating_mul(FRAME.as_millis() as u64))
}

/// What the send loop should do with the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Send it now.
    Now,
    /// Sleep until this instant, then ask again.
    At(Instant),
}

/// Real-time pacing of outbound frames, allowing a fixed lead.
///
/// A *run* is a stretch of back-to-back audio. Frame `i` of a run is due at
/// `anchor + i * 20 ms - lead`: the first `lead / 20 ms` frames go at once (to fill
/// the far end's jitter buffer), and after that one frame per 20 ms. When the
/// producer falls behind (the next frame comes later than it was due, because the
/// speech provider was slow or the agent was silent), the run re-anchors at that
/// moment instead of bursting to catch up, so the far end never receives more
/// than `lead` ahead.
///
/// The pacer also tracks how much of what was sent has been played out, assuming
/// the far end plays from the moment each run started, which is what barge-in needs
/// to cut the agent's transcript at what the caller heard.
#[derive(Debug, Clone)]
pub struct Pacer {
    lead: Duration,
    /// Start of the current run, if any.
    anchor: Option<Instant>,
    /// Frames sent in the current run.
    in_run: u64,
    /// Audio sent in earlier runs (all of it played, since runs are back-to-back
    /// only when the producer kept up).
    earlier: Duration,
    /// Frames sent in total.
    sent: u64,
}

impl Pacer {
    /// A pacer that keeps up to `lead` of audio ahead of real time. A few frames
    /// (40–100 ms) absorb network jitter; the lead is also the most a `clear` has
    /// to throw away. Keep it at least one frame, or timer jitter in the send loop
    /// counts as falling behind and restarts the run.
    pub fn new(lead: Duration) -> Self {
        Self {
            lead,
            anchor: None,
            in_run: 0,
            earlier: Duration::ZERO,
            sent: 0,
        }
    }

    /// When the next frame may be sent, given the current time.
    pub fn poll(&self, now: Instant) -> Pace {
        let Some(anchor) = self.anchor else {
            return Pace::Now;
        };
        let due = frame_due(anchor, self.in_run);
        match due.checked_sub(self.lead) {
            Some(allowed) if allowed > now => Pace::At(allowed),
            _ => Pace::Now,
        }
    }

    /// Records that a frame was sent at `now`.
    pub fn sent(&mut self, now: Instant) {
        match self.anchor {
            // The producer fell behind: this frame starts a new run.
            Some(anchor) if frame_due(anchor, self.in_run) < now => {
                self.earlier += frame_offset(self.in_run);
                self.anchor = Some(now);
                self.in_run = 0;
            }
            Some(_) => {}
            None => {
                self.anchor = Some(now);
                self.in_run = 0;
            }
        }
        self.in_run += 1;
        self.sent += 1;
    }

    /// Forgets the current run (after `clear`, or when an utterance ends) and
    /// returns how much of the audio sent had been played by `now`.
    pub fn reset(&mut self, now: Instant) -> Duration {
        let played = self.played(now);
        self.anchor = None;
        self.in_run = 0;
        self.earlier = Duration::ZERO;
        self.sent = 0;
        played
    }

    /// Audio sent since the last reset.
    pub fn sent_duration(&self) -> Duration {
        frame_offset(self.sent)
    }

    /// Frames sent since the last reset.
    pub fn frames_sent(&self) -> u64 {
        self.sent
    }

    /// Estimate of the audio the far end has played by `now` since the last reset.
    pub fn played(&self, now: Instant) -> Duration {
        let Some(anchor) = self.anchor else {
            return self.earlier;
        };
        let in_run = now
            .saturating_duration_since(anchor)
            .min(frame_offset(self.in_run));
        self.earlier + in_run
    }

    /// Audio sent but not yet played by `now` (what a `clear` would discard).
    pub fn ahead(&self, now: Instant) -> Duration {
        self.sent_duration().saturating_sub(self.played(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn frame_sizes() {
        assert_eq!(samples_per_frame(8000), FRAME_BYTES);
        assert_eq!(samples_per_frame(16000), 320);
        assert_eq!(samples_per_frame(24000), 480);
        assert_eq!(duration_of(160, 8000), FRAME);
        assert_eq!(duration_of(480, 24000), FRAME);
        let t0 = Instant::now();
        assert_eq!(frame_due(t0, 0), t0);
        assert_eq!(frame_due(t0, 50), t0 + Duration::from_secs(1));
    }

    #[test]
    fn framer_cuts_any_chunking_into_frames() {
        let mut f = Framer::new(Duration::from_secs(1));
        let audio: Vec<u8> = (0..500u32).map(|i| (i % 251) as u8).collect();
        let mut frames = Vec::new();
        for chunk in audio.chunks(37) {
            assert_eq!(f.push(chunk), chunk.len());
            while let Some(frame) = f.next_frame() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(f.len(), 20);
        assert_eq!(f.buffered(), Duration::from_micros(2500));
        let last = f.flush_padded().unwrap();
        assert_eq!(&last[..20], &audio[480..]);
        assert!(last[20..].iter().all(|&b| b == mulaw::SILENCE));
        assert!(f.flush_padded().is_none());
        let joined: Vec<u8> = frames.iter().flatten().copied().collect();
        assert_eq!(joined, audio[..480]);
    }

    #[test]
    fn framer_packs_small_pieces_into_blocks_and_frees_them_as_it_plays() {
        let mut f = Framer::new(Duration::from_secs(10));
        let audio: Vec<u8> = (0..16_000u32).map(|i| (i % 251) as u8).collect();
        for piece in audio.chunks(160) {
            assert_eq!(f.push(piece), 160);
        }
        assert_eq!(f.chunks.len(), 16_000usize.div_ceil(BLOCK_BYTES));
        let mut out = Vec::new();
        while let Some(frame) = f.next_frame() {
            out.extend_from_slice(&frame);
        }
        assert_eq!(out, audio);
        assert!(f.chunks.is_empty() && f.is_empty());
    }

    #[test]
    fn framer_is_bounded_and_clearable() {
        let mut f = Framer::new(ms(100)); // 5 frames
        assert_eq!(f.push(&[1; 700]), 700);
        assert_eq!(f.push(&[1; 700]), 100);
        assert_eq!(f.len(), 800);
        assert_eq!(f.clear(), 800);
        assert!(f.is_empty() && f.next_frame().is_none());
    }

    #[test]
    fn pacer_sends_the_lead_at_once_then_one_frame_per_20ms() {
        let t0 = Instant::now();
        let mut p = Pacer::new(ms(60));
        let mut now = t0;
        let mut send_times = Vec::new();
        // A producer that always has audio: loop as an async sender would.
        while send_times.len() < 10 {
            match p.poll(now) {
                Pace::Now => {
                    p.sent(now);
                    send_times.push(now - t0);
                }
                Pace::At(at) => {
                    assert!(at > now);
                    now = at;
                }
            }
        }
        assert_eq!(
            send_times,
            [0, 0, 0, 0, 20, 40, 60, 80, 100, 120].map(ms).to_vec()
        );
        // At 120 ms, 200 ms were sent and 120 ms played: 80 ms ahead (lead + 1 frame).
        assert_eq!(p.played(now), ms(120));
        assert_eq!(p.ahead(now), ms(80));
        assert_eq!(p.frames_sent(), 10);
    }

    #[test]
    fn pacer_reanchors_after_an_underrun_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(ms(40));
        for _ in 0..3 {
            assert_eq!(p.poll(t0), Pace::Now);
            p.sent(t0);
        }
        assert_eq!(p.poll(t0), Pace::At(t0 + ms(20)));
        // The producer stalls for a second; all 60 ms have played by then.
        let late = t0 + Duration::from_secs(1);
        assert_eq!(p.played(late), ms(60));
        assert_eq!(p.poll(late), Pace::Now);
        p.sent(late);
        p.sent(late);
        p.sent(late);
        // New run: only the lead goes out at once, not a second of catch-up.
        assert_eq!(p.poll(late), Pace::At(late + ms(20)));
        assert_eq!(p.played(late + ms(10)), ms(70));
        assert_eq!(p.sent_duration(), ms(120));
        // Barge-in: reset reports what was heard and starts afresh.
        assert_eq!(p.reset(late + ms(30)), ms(90));
        assert_eq!(p.poll(late + ms(30)), Pace::Now);
        assert_eq!(p.sent_duration(), Duration::ZERO);
    }
}
