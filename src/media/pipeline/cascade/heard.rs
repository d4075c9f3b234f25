//! What the caller heard of the agent's speech, for barge-in.
//!
//! The media session tells the pipeline how much of the interrupted turn had been
//! played when it answers a `clear` (from Twilio's marks and its pacing clock).
//! [`Spoken`] remembers, for each recent turn, the text sent to the TTS for it and
//! each audio chunk with its [`Alignment`] when ElevenLabs sent one, and turns
//! "this much was played" into "these words were heard" ([`Spoken::heard`]):
//!
//! 1. **Alignment** (preferred): every chunk lists the characters it speaks and when
//!    each starts. Chunks fully played count whole; in the chunk being played, the
//!    characters that started before the play position count. Character times are
//!    used only relative to the chunk's first character, so it does not matter
//!    whether the server counts them from the chunk or from the context.
//! 2. **Duration** (when a chunk came without alignment): the turn's text is assumed
//!    to be spoken at an even pace. Once the TTS has finished the turn, the pace is
//!    exact for it (characters sent ÷ audio generated); before that, a nominal 14
//!    characters per second (conversational Portuguese and English) is used, never
//!    beyond the text actually sent.
//!
//! Either way the result is cut back to whole words (a word counts once its last
//! character started), so the history never keeps half a word.

use std::collections::VecDeque;

use crate::speech::elevenlabs_tts::Alignment;

/// µ-law 8 kHz: bytes per millisecond.
const BYTES_PER_MS: u64 = 8;
/// Speaking pace assumed before the TTS has finished a turn (characters per second).
const NOMINAL_CHARS_PER_SEC: u64 = 14;
/// Turns remembered (older ones were played out long ago).
const MAX_TRACKS: usize = 8;
/// Chunks remembered per turn; past this the duration estimate is used.
const MAX_CHUNKS: usize = 4096;
/// Bytes of text remembered per turn.
const MAX_TEXT: usize = 16 * 1024;

/// One chunk of a turn's audio.
#[derive(Debug)]
struct Chunk {
    /// Offset of the chunk in the turn's audio, in bytes.
    offset: u64,
    len: u64,
    alignment: Option<Alignment>,
}

/// One turn's text and audio.
#[derive(Debug)]
struct Track {
    turn: u64,
    /// Text sent to the TTS for this turn.
    text: String,
    /// Audio bytes received.
    audio: u64,
    chunks: Vec<Chunk>,
    /// Whether every chunk came with an alignment.
    aligned: bool,
    /// The TTS has sent all of this turn's audio.
    generated: bool,
}

/// The recent turns, oldest first.
#[derive(Debug, Default)]
pub struct Spoken {
    tracks: VecDeque<Track>,
}

impl Spoken {
    pub fn new() -> Self {
        Self::default()
    }

    fn track(&mut self, turn: u64) -> &mut Track {
        if let Some(i) = self.tracks.iter().position(|t| t.turn == turn) {
            return &mut self.tracks[i];
        }
        if self.tracks.len() >= MAX_TRACKS {
            self.tracks.pop_front();
        }
        self.tracks.push_back(Track {
            turn,
            text: String::new(),
            audio: 0,
            chunks: Vec::new(),
            aligned: true,
            generated: false,
        });
        self.tracks.back_mut().expect("just pushed")
    }

    /// Text sent to the TTS for `turn`.
    pub fn text_sent(&mut self, turn: u64, text: &str) {
        let track = self.track(turn);
        if track.text.len() + text.len() <= MAX_TEXT {
            track.text.push_str(text);
        }
    }

    /// `len` bytes of `turn`'s audio came from the TTS (and went to the caller).
    pub fn audio(&mut self, turn: u64, len: u64, alignment: Option<Alignment>) {
        let track = self.track(turn);
        if alignment.is_none() {
            track.aligned = false;
        }
        if track.chunks.len() < MAX_CHUNKS {
            track.chunks.push(Chunk {
                offset: track.audio,
                len,
                alignment,
            });
        } else {
            track.aligned = false;
        }
        track.audio += len;
    }

    /// The TTS has sent all of `turn`'s audio.
    pub fn generated(&mut self, turn: u64) {
        if let Some(track) = self.tracks.iter_mut().find(|t| t.turn == turn) {
            track.generated = true;
        }
    }

    /// Audio bytes received for `turn`.
    pub fn audio_of(&self, turn: u64) -> u64 {
        self.tracks
            .iter()
            .find(|t| t.turn == turn)
            .map_or(0, |t| t.audio)
    }

    /// What the caller heard of `turn` once `played_ms` of it was played.
    pub fn heard(&self, turn: u64, played_ms: u64) -> String {
        let Some(track) = self.tracks.iter().find(|t| t.turn == turn) else {
            return String::new();
        };
        let played = played_ms.saturating_mul(BYTES_PER_MS).min(track.audio);
        if track.audio == 0 {
            return String::new();
        }
        if track.generated && played >= track.audio {
            return track.text.trim().to_string();
        }
        if track.aligned && !track.chunks.is_empty() {
            heard_aligned(&track.chunks, played)
        } else {
            heard_by_duration(track, played)
        }
    }

    /// Forgets `turn`.
    pub fn forget(&mut self, turn: u64) {
        self.tracks.retain(|t| t.turn != turn);
    }
}

/// Alignment method: whole chunks before the play position, and the characters of
/// the current chunk that started before it.
fn heard_aligned(chunks: &[Chunk], played: u64) -> String {
    let mut text: Vec<char> = Vec::new();
    let mut heard = 0usize;
    for chunk in chunks {
        let Some(alignment) = &chunk.alignment else {
            continue;
        };
        if chunk.offset >= played {
            // Only to see whether the last heard word is complete.
            text.extend(alignment.chars.iter().take(1));
            break;
        }
        let into_ms = (played - chunk.offset) / BYTES_PER_MS;
        let first = alignment.starts_ms.first().copied().unwrap_or(0);
        for (c, start) in alignment.chars.iter().zip(&alignment.starts_ms) {
            text.push(*c);
            if u64::from(start.saturating_sub(first)) < into_ms
                || played >= chunk.offset + chunk.len
            {
                heard = text.len();
            }
        }
    }
    whole_words(&text, heard)
}

/// Duration method: an even pace over the reply's text.
fn heard_by_duration(track: &Track, played: u64) -> String {
    let text: Vec<char> = track.text.chars().collect();
    let played_ms = played / BYTES_PER_MS;
    let chars = if track.generated && track.audio > 0 {
        (text.len() as u64).saturating_mul(played) / track.audio
    } else {
        played_ms.saturating_mul(NOMINAL_CHARS_PER_SEC) / 1000
    };
    whole_words(&text, chars.min(text.len() as u64) as usize)
}

/// The first `n` characters of `text`, cut back to the last whole word, trimmed.
fn whole_words(text: &[char], n: usize) -> String {
    let n = n.min(text.len());
    let mut end = n;
    let cut_in_word = n < text.len()
        && n > 0
        && !text[n].is_whitespace()
        && !text[n - 1].is_whitespace()
        && text[n].is_alphanumeric();
    if cut_in_word {
        end = text[..n]
            .iter()
            .rposition(|c| c.is_whitespace())
            .unwrap_or(0);
    }
    text[..end].iter().collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(text: &str, ms_per_char: u32, from: u32) -> Alignment {
        let chars: Vec<char> = text.chars().collect();
        let starts_ms = (0..chars.len() as u32)
            .map(|i| from + i * ms_per_char)
            .collect();
        Alignment { chars, starts_ms }
    }

    fn bytes(ms: u64) -> u64 {
        ms * BYTES_PER_MS
    }

    #[test]
    fn whole_words_only() {
        let t: Vec<char> = "Olá, tudo bem?".chars().collect();
        assert_eq!(whole_words(&t, 0), "");
        assert_eq!(whole_words(&t, 2), "");
        assert_eq!(whole_words(&t, 4), "Olá,");
        assert_eq!(whole_words(&t, 5), "Olá,");
        assert_eq!(whole_words(&t, 7), "Olá,");
        assert_eq!(whole_words(&t, 9), "Olá, tudo");
        assert_eq!(whole_words(&t, 13), "Olá, tudo bem");
        assert_eq!(whole_words(&t, 99), "Olá, tudo bem?");
    }

    #[test]
    fn alignment_places_the_cut_inside_a_chunk() {
        let mut s = Spoken::new();
        s.text_sent(1, "Olá, tudo bem? Como posso ajudar? ");
        // Two chunks, 100 ms per character, times relative to each chunk.
        s.audio(1, bytes(1500), Some(aligned("Olá, tudo bem? ", 100, 0)));
        s.audio(1, bytes(2000), Some(aligned("Como posso ajudar? ", 100, 0)));
        assert_eq!(s.heard(1, 0), "");
        assert_eq!(s.heard(1, 350), "Olá,");
        assert_eq!(s.heard(1, 950), "Olá, tudo");
        assert_eq!(s.heard(1, 1500), "Olá, tudo bem?");
        // 1500 + 650 ms: "Como po" started → "Como".
        assert_eq!(s.heard(1, 2150), "Olá, tudo bem? Como");
        assert_eq!(s.heard(1, 3000), "Olá, tudo bem? Como posso");
        s.generated(1);
        assert_eq!(s.heard(1, 3500), "Olá, tudo bem? Como posso ajudar?");
        assert_eq!(s.heard(1, 9999), "Olá, tudo bem? Como posso ajudar?");
        assert_eq!(s.audio_of(1), bytes(3500));
    }

    #[test]
    fn alignment_times_counted_from_the_context_work_too() {
        let mut s = Spoken::new();
        s.audio(4, bytes(1000), Some(aligned("Um dois ", 100, 0)));
        s.audio(4, bytes(1000), Some(aligned("tres quatro ", 80, 1000)));
        assert_eq!(s.heard(4, 1450), "Um dois tres");
    }

    #[test]
    fn without_alignment_the_pace_is_estimated() {
        let mut s = Spoken::new();
        // 28 characters.
        s.text_sent(7, "Claro, posso marcar amanhã. ");
        s.audio(7, bytes(1000), None);
        // Nominal 14 chars/s: 1 s → 14 chars → "Claro, posso m" → "Claro, posso".
        assert_eq!(s.heard(7, 1000), "Claro, posso");
        s.audio(7, bytes(1000), None);
        s.generated(7);
        // Exact pace once generated: 28 chars over 2 s; 1.5 s → 21 chars.
        assert_eq!(s.heard(7, 1500), "Claro, posso marcar");
        assert_eq!(s.heard(7, 2000), "Claro, posso marcar amanhã.");
        // Unknown turns, and turns without audio, were not heard.
        assert_eq!(s.heard(9, 2000), "");
        s.text_sent(8, "Nada ainda ");
        assert_eq!(s.heard(8, 2000), "");
        s.forget(7);
        assert_eq!(s.heard(7, 2000), "");
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = Spoken::new();
        for turn in 0..100 {
            s.text_sent(turn, "x ");
        }
        assert_eq!(s.tracks.len(), MAX_TRACKS);
        for _ in 0..(MAX_CHUNKS + 10) {
            s.audio(1000, 160, Some(aligned("a", 1, 0)));
        }
        let track = s.tracks.back().unwrap();
        assert_eq!(track.chunks.len(), MAX_CHUNKS);
        assert!(!track.aligned);
        s.text_sent(1000, &"y".repeat(MAX_TEXT + 1));
        assert!(s.tracks.back().unwrap().text.len() <= MAX_TEXT);
    }
}
