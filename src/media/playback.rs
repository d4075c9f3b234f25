//! The outbound side of a Media Streams call: agent audio queued by turn, cut into
//! 160-byte frames, paced in real time, with `mark`s to learn what Twilio played.
//!
//! [`Playback`] is pure bookkeeping (no I/O, no clock of its own): the session asks
//! when the next frame is due ([`Playback::due`]), takes it ([`Playback::pop_frame`]),
//! sends it and the mark that may follow it, and feeds Twilio's echoed marks back
//! ([`Playback::on_mark`]).
//!
//! How much of the playing turn was heard (for `conversation.item.truncate` and for
//! cutting transcripts) is estimated from two sources: the pacer's real-time clock
//! (frame `i` of a run plays `i * 20 ms` after the run started) and Twilio's echoed
//! marks (sent every [`MARK_EVERY`] frames and after a turn's last frame), which
//! are authoritative when they arrive. The estimate never exceeds what was sent.
//! Marks flushed by a `clear` come back too; they are recognised by number and not
//! taken as played.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::audio::frame::{FRAME, FRAME_BYTES, Frame, Framer, Pace, Pacer, frame_offset};
use crate::audio::mulaw;

use super::pipeline::CallEvent;

/// A mark after every this many frames (200 ms) of a turn.
pub const MARK_EVERY: u64 = 10;
/// Most marks awaiting their echo (older ones are forgotten).
const MAX_PENDING_MARKS: usize = 1024;
/// Prefix of our mark names (`vx<number>`).
const MARK_PREFIX: &str = "vx";

/// One frame ready to send, with the mark to send right after it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    pub turn: u64,
    pub frame: Frame,
    pub mark: Option<String>,
}

#[derive(Debug, Clone)]
struct Segment {
    turn: u64,
    /// Bytes of this segment still in the framer.
    bytes: usize,
    /// No more audio will be appended (turn done, or another turn started).
    closed: bool,
}

#[derive(Debug, Clone)]
struct Playing {
    turn: u64,
    /// Pacer's sent duration when the turn's first frame went out.
    start: Duration,
    /// Frames of the turn sent.
    frames: u64,
    /// Last echoed mark: offset into the turn, and when it came back.
    heard: Option<(Duration, Instant)>,
}

#[derive(Debug, Clone)]
struct PendingMark {
    seq: u64,
    turn: u64,
    /// Offset into the turn at this mark.
    offset: Duration,
    last_of_turn: bool,
}

/// Outbound audio of one call. Bounded by the `max_buffered` audio given at
/// construction.
#[derive(Debug)]
pub struct Playback {
    framer: Framer,
    capacity: usize,
    segments: VecDeque<Segment>,
    pacer: Pacer,
    playing: Option<Playing>,
    marks: VecDeque<PendingMark>,
    next_mark: u64,
    /// Marks numbered at most this were flushed by a `clear`.
    cleared_upto: u64,
}

impl Playback {
    /// Holds at most `max_buffered` of unsent audio and keeps `lead` ahead of real
    /// time at Twilio.
    pub fn new(max_buffered: Duration, lead: Duration) -> Self {
        let framer = Framer::new(max_buffered);
        let capacity =
            (max_buffered.as_millis().div_ceil(FRAME.as_millis()).max(1) as usize) * FRAME_BYTES;
        Self {
            framer,
            capacity,
            segments: VecDeque::new(),
            pacer: Pacer::new(lead),
            playing: None,
            marks: VecDeque::new(),
            next_mark: 1,
            cleared_upto: 0,
        }
    }

    /// Queues agent audio of `turn`; returns the bytes accepted (fewer when full).
    pub fn push(&mut self, turn: u64, audio: &[u8]) -> usize {
        if audio.is_empty() {
            return 0;
        }
        let same_turn = self
            .segments
            .back()
            .is_some_and(|s| s.turn == turn && !s.closed);
        if !same_turn {
            self.close_back();
            self.segments.push_back(Segment {
                turn,
                bytes: 0,
                closed: false,
            });
        }
        let taken = self.framer.push(audio);
        if let Some(back) = self.segments.back_mut() {
            back.bytes += taken;
        }
        taken
    }

    /// No more audio for `turn`: its last partial frame is padded with silence.
    /// Returns a mark to send now when all of the turn's frames already went out.
    pub fn turn_done(&mut self, turn: u64) -> Option<String> {
        match self.segments.back() {
            Some(back) if back.turn == turn && !back.closed => {
                if back.bytes == 0 {
                    // Everything was sent already.
                    self.segments.pop_back();
                    return self.playing_turn_done(turn);
                }
                self.close_back();
                None
            }
            Some(_) => None,
            None => self.playing_turn_done(turn),
        }
    }

    fn playing_turn_done(&mut self, turn: u64) -> Option<String> {
        let playing = self.playing.as_ref().filter(|p| p.turn == turn)?;
        let offset = frame_offset(playing.frames);
        Some(self.new_mark(turn, offset, true))
    }

    /// Pads the newest segment to a whole frame and closes it.
    fn close_back(&mut self) {
        let Some(back) = self.segments.back_mut() else {
            return;
        };
        if back.closed {
            return;
        }
        back.closed = true;
        let partial = self.framer.len() % FRAME_BYTES;
        if partial != 0 {
            let pad = FRAME_BYTES - partial;
            // Always fits: the capacity is a whole number of frames.
            back.bytes += self.framer.push(&[mulaw::SILENCE; FRAME_BYTES][..pad]);
        }
        if back.bytes == 0 {
            self.segments.pop_back();
        }
    }

    /// When the next frame may go out, or `None` when no whole frame is queued.
    pub fn due(&self, now: Instant) -> Option<Pace> {
        if self.framer.len() < FRAME_BYTES {
            return None;
        }
        Some(self.pacer.poll(now))
    }

    /// Takes the next frame (sent at `now`), with the mark to send after it.
    pub fn pop_frame(&mut self, now: Instant) -> Option<OutFrame> {
        let frame = self.framer.next_frame()?;
        // Segments with nothing left that are closed were dropped; the front one
        // holds this frame.
        let Some(segment) = self.segments.front_mut() else {
            // Cannot happen (bytes are always attributed); keep the audio anyway.
            return Some(OutFrame {
                turn: 0,
                frame,
                mark: None,
            });
        };
        let turn = segment.turn;
        segment.bytes = segment.bytes.saturating_sub(FRAME_BYTES);
        let last_of_turn = segment.bytes == 0 && segment.closed;
        if last_of_turn {
            self.segments.pop_front();
        }
        let sent_before = self.pacer.sent_duration();
        self.pacer.sent(now);
        let playing = match &mut self.playing {
            Some(p) if p.turn == turn => p,
            slot => slot.insert(Playing {
                turn,
                start: sent_before,
                frames: 0,
                heard: None,
            }),
        };
        playing.frames += 1;
        let frames = playing.frames;
        let mark = if last_of_turn || frames % MARK_EVERY == 0 {
            Some(self.new_mark(turn, frame_offset(frames), last_of_turn))
        } else {
            None
        };
        Some(OutFrame { turn, frame, mark })
    }

    fn new_mark(&mut self, turn: u64, offset: Duration, last_of_turn: bool) -> String {
        let seq = self.next_mark;
        self.next_mark += 1;
        if self.marks.len() >= MAX_PENDING_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back(PendingMark {
            seq,
            turn,
            offset,
            last_of_turn,
        });
        format!("{MARK_PREFIX}{seq}")
    }

    /// Twilio echoed mark `name` at `now`: what the pipeline should learn from it.
    pub fn on_mark(&mut self, name: &str, now: Instant) -> Option<CallEvent> {
        let seq: u64 = name.strip_prefix(MARK_PREFIX)?.parse().ok()?;
        let mut found = None;
        while let Some(front) = self.marks.front() {
            if front.seq > seq {
                break;
            }
            let mark = self.marks.pop_front()?;
            if mark.seq == seq {
                found = Some(mark);
            }
        }
        let mark = found?;
        if seq <= self.cleared_upto {
            return None;
        }
        if let Some(playing) = self.playing.as_mut().filter(|p| p.turn == mark.turn) {
            playing.heard = Some((mark.offset, now));
        }
        Some(if mark.last_of_turn {
            CallEvent::PlayedOut { turn: mark.turn }
        } else {
            CallEvent::Played {
                turn: mark.turn,
                played: mark.offset,
            }
        })
    }

    /// How much of the playing turn had been heard by `now`.
    pub fn played(&self, now: Instant) -> Option<(u64, Duration)> {
        let p = self.playing.as_ref()?;
        let sent = frame_offset(p.frames);
        let played = match p.heard {
            Some((offset, at)) => offset + now.saturating_duration_since(at),
            None => self.pacer.played(now).saturating_sub(p.start),
        };
        Some((p.turn, played.min(sent)))
    }

    /// Barge-in: drops every queued frame, forgets pending marks and the pacing run.
    /// Returns the turn that was playing and how much of it was heard.
    pub fn clear(&mut self, now: Instant) -> (Option<u64>, Duration) {
        let (turn, played) = match self.played(now) {
            Some((turn, played)) => (Some(turn), played),
            None => (None, Duration::ZERO),
        };
        self.framer.clear();
        self.segments.clear();
        self.playing = None;
        self.cleared_upto = self.next_mark - 1;
        self.marks.clear();
        self.pacer.reset(now);
        (turn, played)
    }

    /// Audio sent but not yet played by `now` (estimate).
    pub fn ahead(&self, now: Instant) -> Duration {
        self.pacer.ahead(now)
    }

    /// Whether a whole frame or more is waiting to be sent.
    pub fn has_frames(&self) -> bool {
        self.framer.len() >= FRAME_BYTES
    }

    /// Unsent audio (including a partial frame).
    pub fn queued(&self) -> Duration {
        self.framer.buffered()
    }

    /// Whether there is room for more audio (a second of headroom).
    pub fn has_room(&self) -> bool {
        self.framer.len() + 8000 <= self.capacity
    }

    /// Whether every mark sent has come back.
    pub fn marks_settled(&self) -> bool {
        self.marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(p: &mut Playback, now: Instant) -> Vec<OutFrame> {
        std::iter::from_fn(|| p.pop_frame(now)).collect()
    }

    #[test]
    fn frames_by_turn_with_padding_and_marks() {
        let t0 = Instant::now();
        let mut p = Playback::new(Duration::from_secs(10), ms(60));
        assert_eq!(p.due(t0), None);
        let audio: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        assert_eq!(p.push(1, &audio), 250);
        assert!(p.has_frames());
        assert_eq!(p.turn_done(1), None);
        // Turn 2 starts on a fresh frame.
        p.push(2, &[7u8; 160 * 10]);
        let frames = drain(&mut p, t0);
        assert_eq!(frames.len(), 12);
        assert_eq!(&frames[0].frame[..], &audio[..160]);
        assert_eq!(&frames[1].frame[..90], &audio[160..]);
        assert!(frames[1].frame[90..].iter().all(|&b| b == mulaw::SILENCE));
        assert_eq!(frames[1].turn, 1);
        assert_eq!(frames[1].mark.as_deref(), Some("vx1"));
        assert!(
            frames[2..]
                .iter()
                .all(|f| f.turn == 2 && f.frame == [7u8; 160])
        );
        // Turn 2 is not done: its 10th frame carries a periodic mark.
        assert_eq!(frames[11].mark.as_deref(), Some("vx2"));
        assert!(frames[2..11].iter().all(|f| f.mark.is_none()));
        // Done after everything was sent: a mark right away.
        assert_eq!(p.turn_done(2).as_deref(), Some("vx3"));
        assert_eq!(p.on_mark("vx1", t0), Some(CallEvent::PlayedOut { turn: 1 }));
        assert_eq!(
            p.on_mark("vx2", t0 + ms(200)),
            Some(CallEvent::Played {
                turn: 2,
                played: ms(200)
            })
        );
        assert_eq!(p.on_mark("vx3", t0), Some(CallEvent::PlayedOut { turn: 2 }));
        assert!(p.marks_settled());
        assert_eq!(p.on_mark("other", t0), None);
    }

    #[test]
    fn played_is_estimated_from_pacing_and_marks_and_clamped() {
        let t0 = Instant::now();
        let mut p = Playback::new(Duration::from_secs(10), ms(60));
        p.push(5, &[1u8; 160 * 20]);
        // Send 4 frames at t0 (lead), nothing played yet.
        for _ in 0..4 {
            assert_eq!(p.due(t0), Some(Pace::Now));
            p.pop_frame(t0).unwrap();
        }
        assert!(matches!(p.due(t0), Some(Pace::At(_))));
        assert_eq!(p.played(t0), Some((5, ms(0))));
        assert_eq!(p.played(t0 + ms(50)), Some((5, ms(50))));
        // Never more than sent.
        assert_eq!(p.played(t0 + ms(500)), Some((5, ms(80))));
        let (turn, played) = p.clear(t0 + ms(30));
        assert_eq!((turn, played), (Some(5), ms(30)));
        assert!(!p.has_frames());
        assert_eq!(p.played(t0 + ms(40)), None);
    }

    #[test]
    fn marks_flushed_by_clear_do_not_count_as_played() {
        let t0 = Instant::now();
        let mut p = Playback::new(Duration::from_secs(10), ms(60));
        p.push(1, &[1u8; 160 * 10]);
        let frames = drain(&mut p, t0);
        assert_eq!(frames[9].mark.as_deref(), Some("vx1"));
        p.clear(t0 + ms(10));
        assert_eq!(p.on_mark("vx1", t0 + ms(11)), None);
        // A new turn after the clear has its own accounting.
        p.push(2, &[2u8; 160 * 10]);
        let frames = drain(&mut p, t0 + ms(20));
        assert_eq!(frames[9].mark.as_deref(), Some("vx2"));
        assert_eq!(p.played(t0 + ms(40)), Some((2, ms(20))));
        // A mark echo makes the estimate authoritative from there.
        assert!(p.on_mark("vx2", t0 + ms(100)).is_some());
        assert_eq!(p.played(t0 + ms(100)), Some((2, ms(200))));
    }

    #[test]
    fn bounded() {
        let mut p = Playback::new(ms(100), ms(60));
        assert_eq!(p.push(1, &[0u8; 2000]), 800);
        assert!(!p.has_room());
        // Padding always fits (the capacity is whole frames).
        let mut p = Playback::new(ms(40), ms(60));
        assert_eq!(p.push(1, &[0u8; 300]), 300);
        assert_eq!(p.push(2, &[1u8; 10]), 0);
        assert_eq!(p.queued(), ms(40));
        let now = Instant::now();
        assert_eq!(drain(&mut p, now).len(), 2);
    }
}
