//! Optional local call recording (`RECORD_CALLS=true`): one stereo 16-bit WAV per
//! Media Streams call, caller on the left, agent on the right, 8 kHz, in
//! `RECORDINGS_DIR/<CallSid>-<unix ms>-<random>.wav`.
//!
//! The caller's frames are the clock ([`StereoAligner`]); the agent side is fed
//! with the frames actually sent to Twilio and forgets what a `clear` threw away.
//!
//! Bounded, because the caller side is whatever the peer sends:
//! - caller audio arriving faster than real time (beyond [`BURST`]) is dropped and
//!   counted, so a flooding socket records no more than its real-time share;
//! - a recording stops at `MAX_RECORDING_SECS`;
//! - the file is created only once the call's pipeline is running, with
//!   `create_new` and a random part in its name, so it never truncates another
//!   call's file;
//! - the file I/O runs on a blocking thread fed by a bounded queue; a full queue
//!   or a write error stops the recording, never the call.
//!
//! Time is an argument (`now`), so the bookkeeping is testable without a clock.

use std::fs::OpenOptions;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::audio::record::StereoAligner;
use crate::audio::wav::{WavSpec, WavWriter};
use crate::audio::{frame::MULAW_RATE, mulaw};

/// Agent audio queued for the recording at most (10 s, far more than the lead).
const MAX_AGENT_QUEUE: usize = 10 * MULAW_RATE as usize;
/// Caller audio accepted ahead of real time (network jitter, a burst after a stall).
pub const BURST: Duration = Duration::from_secs(2);
/// Blocks (one per caller frame) waiting for the writer thread at most: 10 s.
const WRITE_QUEUE: usize = 500;

/// Why a recording stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("the recording reached its maximum duration")]
    Full,
    #[error("the recording's writer fell behind or failed")]
    WriterGone,
}

/// A call being recorded.
pub struct Recording {
    path: PathBuf,
    blocks: mpsc::SyncSender<Vec<i16>>,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
    aligner: StereoAligner,
    pcm: Vec<i16>,
    started: Instant,
    /// Caller samples recorded so far.
    samples: u64,
    max_samples: u64,
    /// Caller samples dropped for arriving faster than real time.
    dropped: u64,
    /// Set when the recording stopped early; later audio is ignored.
    stopped: bool,
}

impl Recording {
    /// Starts a new file for `call_sid` in `dir` (created when missing), at most
    /// `max` long. Needs a tokio runtime (the writer is a blocking task).
    pub fn create(
        dir: &Path,
        call_sid: &str,
        max: Duration,
        now: Instant,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut name: String = call_sid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect();
        if name.is_empty() {
            name = "call".into();
        }
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{name}-{millis}-{suffix}.wav"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut wav = WavWriter::new(BufWriter::new(file), WavSpec::pcm16_stereo(MULAW_RATE))
            .map_err(std::io::Error::other)?;
        let (blocks, queue) = mpsc::sync_channel::<Vec<i16>>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            for block in queue {
                wav.write_pcm16(&block).map_err(std::io::Error::other)?;
            }
            wav.finish().map_err(std::io::Error::other)?;
            Ok(())
        });
        Ok(Self {
            path,
            blocks,
            writer,
            aligner: StereoAligner::new(MAX_AGENT_QUEUE),
            pcm: Vec::with_capacity(160),
            started: now,
            samples: 0,
            max_samples: max.as_secs().saturating_mul(u64::from(MULAW_RATE)),
            dropped: 0,
            stopped: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caller samples dropped for arriving faster than real time.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped
    }

    /// Caller audio (μ-law) received at `now`; queues a stereo block of the same
    /// length, unless it arrives faster than real time (then it is dropped). An
    /// error says the recording just stopped (reported once); the file up to there
    /// is kept and completed by [`Recording::finish`].
    pub fn caller(&mut self, mulaw_bytes: &[u8], now: Instant) -> Result<(), RecordingError> {
        if self.stopped {
            return Ok(());
        }
        let result = self.record_caller(mulaw_bytes, now);
        self.stopped = result.is_err();
        result
    }

    fn record_caller(&mut self, mulaw_bytes: &[u8], now: Instant) -> Result<(), RecordingError> {
        let len = mulaw_bytes.len() as u64;
        let allowed = (now.saturating_duration_since(self.started) + BURST).as_millis() as u64
            * u64::from(MULAW_RATE)
            / 1000;
        if self.samples + len > allowed {
            self.dropped += len;
            return Ok(());
        }
        if self.samples + len > self.max_samples {
            return Err(RecordingError::Full);
        }
        self.samples += len;
        self.pcm.clear();
        mulaw::decode_into(mulaw_bytes, &mut self.pcm);
        let mut stereo = Vec::with_capacity(self.pcm.len() * 2);
        self.aligner.caller(&self.pcm, &mut stereo);
        self.blocks
            .try_send(stereo)
            .map_err(|_| RecordingError::WriterGone)
    }

    /// Agent audio as it is sent (μ-law).
    pub fn agent(&mut self, mulaw_bytes: &[u8]) {
        self.pcm.clear();
        mulaw::decode_into(mulaw_bytes, &mut self.pcm);
        self.aligner.agent(&self.pcm);
    }

    /// Twilio dropped the agent audio not yet played.
    pub fn clear_agent(&mut self) {
        self.aligner.clear_agent();
    }

    /// Waits for the writer to complete the file; returns its path.
    pub async fn finish(self) -> std::io::Result<PathBuf> {
        drop(self.blocks);
        match self.writer.await {
            Ok(result) => result.map(|()| self.path),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_records_only_its_real_time_share_and_files_never_collide() {
        let dir = std::env::temp_dir().join(format!("voxrelay-rec-{}", std::process::id()));
        let start = Instant::now();
        let mut a = Recording::create(&dir, "CA1", Duration::from_secs(60), start).unwrap();
        let b = Recording::create(&dir, "CA1", Duration::from_secs(60), start).unwrap();
        assert_ne!(
            a.path(),
            b.path(),
            "a second stream of the same call gets its own file"
        );
        // 10 s of frames delivered within the first second of the call.
        let frame = [0xffu8; 160];
        for i in 0..500u64 {
            a.caller(&frame, start + Duration::from_millis(i * 2))
                .unwrap();
        }
        // Allowed: about 1 s of elapsed time plus the 2 s burst.
        let kept = a.samples;
        assert!(kept <= 3 * 8000 + 160, "{kept} samples kept");
        assert!(a.dropped_samples() >= 500 * 160 - kept);
        let path = a.finish().await.unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes <= 44 + kept * 4, "{bytes} bytes");
        b.finish().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_recording_stops_at_its_maximum_duration() {
        let dir = std::env::temp_dir().join(format!("voxrelay-rec-max-{}", std::process::id()));
        let start = Instant::now();
        let mut r = Recording::create(&dir, "CA2", Duration::from_secs(1), start).unwrap();
        let frame = [0xffu8; 160];
        let errors = (0..100u64)
            .filter(|i| {
                r.caller(&frame, start + Duration::from_millis(i * 20))
                    .is_err()
            })
            .count();
        assert_eq!(errors, 1, "the stop is reported once");
        assert_eq!(r.samples, 8000);
        r.finish().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
