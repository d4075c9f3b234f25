//! Optional local call recording (`RECORD_CALLS=true`): one stereo 16-bit WAV per
//! Media Streams call, caller on the left, agent on the right, 8 kHz, in
//! `RECORDINGS_DIR/<CallSid>.wav`.
//!
//! The caller's frames are the clock ([`StereoAligner`]); the agent side is fed
//! with the frames actually sent to Twilio and forgets what a `clear` threw away.
//! Writes go through a buffered file (a 20 ms stereo frame is 640 bytes); a write
//! error stops the recording, never the call.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::audio::record::StereoAligner;
use crate::audio::wav::{WavSpec, WavWriter};
use crate::audio::{frame::MULAW_RATE, mulaw};

/// Agent audio queued for the recording at most (10 s, far more than the lead).
const MAX_AGENT_QUEUE: usize = 10 * MULAW_RATE as usize;

/// A call being recorded.
pub struct Recording {
    path: PathBuf,
    writer: WavWriter<BufWriter<std::fs::File>>,
    aligner: StereoAligner,
    pcm: Vec<i16>,
    stereo: Vec<i16>,
}

impl Recording {
    /// Starts `dir/<call_sid>.wav` (the directory is created when missing). The call
    /// SID is reduced to letters and digits for the file name.
    pub fn create(dir: &Path, call_sid: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut name: String = call_sid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect();
        if name.is_empty() {
            name = format!(
                "call-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            );
        }
        let path = dir.join(format!("{name}.wav"));
        let writer = WavWriter::create(&path, WavSpec::pcm16_stereo(MULAW_RATE))
            .map_err(std::io::Error::other)?;
        Ok(Self {
            path,
            writer,
            aligner: StereoAligner::new(MAX_AGENT_QUEUE),
            pcm: Vec::with_capacity(160),
            stereo: Vec::with_capacity(320),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caller audio (μ-law); writes a stereo block of the same length.
    pub fn caller(&mut self, mulaw_bytes: &[u8]) -> std::io::Result<()> {
        self.pcm.clear();
        mulaw::decode_into(mulaw_bytes, &mut self.pcm);
        self.stereo.clear();
        self.aligner.caller(&self.pcm, &mut self.stereo);
        self.writer
            .write_pcm16(&self.stereo)
            .map_err(std::io::Error::other)
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

    /// Completes the file's header; returns its path.
    pub fn finish(self) -> std::io::Result<PathBuf> {
        self.writer.finish().map_err(std::io::Error::other)?;
        Ok(self.path)
    }
}
