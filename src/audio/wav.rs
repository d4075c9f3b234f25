//! WAV files: an incremental writer (PCM16 or μ-law, mono or stereo) and a reader.
//!
//! [`WavWriter`] writes the header first with the sizes still unknown, appends
//! samples as they come, and fixes the sizes up at the end ([`WavWriter::finish`]),
//! so a call can be recorded frame by frame without holding it in memory. It also
//! patches the header on [`WavWriter::sync`] (call it now and then), so a file cut
//! short by a crash is still readable up to that point; the reader accepts such
//! files too (a data chunk longer than the file is read as far as it goes).
//!
//! [`parse`] reads PCM16 and μ-law WAVs (`WAVE_FORMAT_PCM` = 1, `WAVE_FORMAT_MULAW`
//! = 7, and both inside `WAVE_FORMAT_EXTENSIBLE`), skipping chunks it does not need
//! (`LIST`, `fact`, ...). This is std I/O only (any `Write + Seek`); the async code
//! decides where it runs.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use super::mulaw;

/// How samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 16-bit signed little-endian linear PCM.
    Pcm16,
    /// 8-bit G.711 μ-law.
    MuLaw,
}

impl Encoding {
    fn bytes_per_sample(self) -> u16 {
        match self {
            Encoding::Pcm16 => 2,
            Encoding::MuLaw => 1,
        }
    }

    fn format_tag(self) -> u16 {
        match self {
            Encoding::Pcm16 => FORMAT_PCM,
            Encoding::MuLaw => FORMAT_MULAW,
        }
    }
}

/// The format of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavSpec {
    pub sample_rate: u32,
    pub channels: u16,
    pub encoding: Encoding,
}

impl WavSpec {
    /// 16-bit mono at `sample_rate`.
    pub fn pcm16_mono(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            channels: 1,
            encoding: Encoding::Pcm16,
        }
    }

    /// 16-bit stereo at `sample_rate` (a call recording: caller left, agent right).
    pub fn pcm16_stereo(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            channels: 2,
            encoding: Encoding::Pcm16,
        }
    }

    /// μ-law mono at 8 kHz, what Twilio sends.
    pub fn mulaw_8k() -> Self {
        Self {
            sample_rate: 8000,
            channels: 1,
            encoding: Encoding::MuLaw,
        }
    }

    fn block_align(&self) -> u16 {
        self.channels * self.encoding.bytes_per_sample()
    }
}

const FORMAT_PCM: u16 = 1;
const FORMAT_MULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Problems writing a WAV file.
#[derive(Debug, thiserror::Error)]
pub enum WavWriteError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the spec is not writable: {0}")]
    BadSpec(&'static str),
    #[error("{got} samples is not a whole number of {channels}-channel frames")]
    PartialFrame { got: usize, channels: u16 },
    #[error("this writer stores {expected:?}, not {got:?}")]
    WrongEncoding { expected: Encoding, got: Encoding },
    #[error("the file would exceed the 4 GiB WAV limit")]
    TooLong,
}

/// Writes a WAV file incrementally and fixes the header up at the end.
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    inner: W,
    spec: WavSpec,
    /// Offset of the RIFF header in `inner`.
    start: u64,
    /// Offsets of the data size and (μ-law only) the fact count.
    data_size_at: u64,
    fact_at: Option<u64>,
    data_bytes: u64,
    synced_bytes: Option<u64>,
    scratch: Vec<u8>,
}

impl WavWriter<io::BufWriter<std::fs::File>> {
    /// Creates (or truncates) a file.
    pub fn create(path: impl AsRef<Path>, spec: WavSpec) -> Result<Self, WavWriteError> {
        let file = std::fs::File::create(path)?;
        Self::new(io::BufWriter::new(file), spec)
    }
}

impl<W: Write + Seek> WavWriter<W> {
    /// Starts a WAV stream on `inner` at its current position (normally 0).
    pub fn new(mut inner: W, spec: WavSpec) -> Result<Self, WavWriteError> {
        if spec.channels == 0 {
            return Err(WavWriteError::BadSpec("zero channels"));
        }
        if spec.sample_rate == 0 {
            return Err(WavWriteError::BadSpec("zero sample rate"));
        }
        let start = inner.stream_position()?;
        let header = header(&spec, 0);
        inner.write_all(&header)?;
        let (data_size_at, fact_at) = match spec.encoding {
            Encoding::Pcm16 => (start + 40, None),
            // fmt has the 2-byte cbSize, then a 12-byte fact chunk.
            Encoding::MuLaw => (start + 54, Some(start + 46)),
        };
        Ok(Self {
            inner,
            spec,
            start,
            data_size_at,
            fact_at,
            data_bytes: 0,
            synced_bytes: None,
            scratch: Vec::new(),
        })
    }

    /// The format being written.
    pub fn spec(&self) -> WavSpec {
        self.spec
    }

    /// Sample frames written so far (one sample per channel each).
    pub fn frames_written(&self) -> u64 {
        self.data_bytes / self.spec.block_align() as u64
    }

    /// Appends interleaved 16-bit samples (`L R L R ...` for stereo).
    pub fn write_pcm16(&mut self, samples: &[i16]) -> Result<(), WavWriteError> {
        self.check(samples.len(), Encoding::Pcm16)?;
        self.scratch.clear();
        self.scratch
            .extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        self.append_scratch()
    }

    /// Appends two channels of 16-bit samples, interleaving them (a missing tail on
    /// the shorter side is written as silence).
    pub fn write_stereo(&mut self, left: &[i16], right: &[i16]) -> Result<(), WavWriteError> {
        if self.spec.channels != 2 {
            return Err(WavWriteError::BadSpec("write_stereo needs two channels"));
        }
        self.check(0, Encoding::Pcm16)?;
        let frames = left.len().max(right.len());
        self.scratch.clear();
        for i in 0..frames {
            let l = left.get(i).copied().unwrap_or(0);
            let r = right.get(i).copied().unwrap_or(0);
            self.scratch.extend(l.to_le_bytes());
            self.scratch.extend(r.to_le_bytes());
        }
        self.append_scratch()
    }

    /// Appends interleaved μ-law bytes.
    pub fn write_mulaw(&mut self, codes: &[u8]) -> Result<(), WavWriteError> {
        self.check(codes.len(), Encoding::MuLaw)?;
        self.scratch.clear();
        self.scratch.extend_from_slice(codes);
        self.append_scratch()
    }

    fn check(&self, samples: usize, got: Encoding) -> Result<(), WavWriteError> {
        if self.spec.encoding != got {
            return Err(WavWriteError::WrongEncoding {
                expected: self.spec.encoding,
                got,
            });
        }
        if samples % self.spec.channels as usize != 0 {
            return Err(WavWriteError::PartialFrame {
                got: samples,
                channels: self.spec.channels,
            });
        }
        Ok(())
    }

    fn append_scratch(&mut self) -> Result<(), WavWriteError> {
        let total = self.data_bytes + self.scratch.len() as u64;
        // RIFF sizes are 32-bit; keep room for the header.
        if total + 64 > u32::MAX as u64 {
            return Err(WavWriteError::TooLong);
        }
        self.inner.write_all(&self.scratch)?;
        self.data_bytes = total;
        Ok(())
    }

    /// Writes the current sizes into the header (so the file is valid as it stands)
    /// and flushes.
    pub fn sync(&mut self) -> Result<(), WavWriteError> {
        if self.synced_bytes != Some(self.data_bytes) {
            let end = self.inner.stream_position()?;
            let data = self.data_bytes as u32;
            let pad = self.data_bytes % 2;
            let header_len = self.data_size_at + 4 - self.start;
            let riff_size = (header_len - 8 + self.data_bytes + pad) as u32;
            self.inner.seek(SeekFrom::Start(self.start + 4))?;
            self.inner.write_all(&riff_size.to_le_bytes())?;
            if let Some(fact_at) = self.fact_at {
                self.inner.seek(SeekFrom::Start(fact_at))?;
                self.inner
                    .write_all(&(self.frames_written() as u32).to_le_bytes())?;
            }
            self.inner.seek(SeekFrom::Start(self.data_size_at))?;
            self.inner.write_all(&data.to_le_bytes())?;
            self.inner.seek(SeekFrom::Start(end))?;
            self.synced_bytes = Some(self.data_bytes);
        }
        self.inner.flush()?;
        Ok(())
    }

    /// Pads the data chunk to an even length, fixes the header up and returns the
    /// inner writer.
    pub fn finish(mut self) -> Result<W, WavWriteError> {
        if self.data_bytes % 2 == 1 {
            // The pad byte is not part of the data size.
            self.inner.write_all(&[0])?;
        }
        self.sync()?;
        Ok(self.inner)
    }
}

/// The header for `spec` with `data_bytes` of data (and the right fact count).
fn header(spec: &WavSpec, data_bytes: u32) -> Vec<u8> {
    let block_align = spec.block_align();
    let bits = spec.encoding.bytes_per_sample() * 8;
    let mut h = Vec::with_capacity(58);
    let (fmt_len, extra) = match spec.encoding {
        Encoding::Pcm16 => (16u32, 0u32),
        Encoding::MuLaw => (18, 12),
    };
    let pad = data_bytes % 2;
    let riff_size = 4 + (8 + fmt_len) + extra + 8 + data_bytes + pad;
    h.extend(b"RIFF");
    h.extend(riff_size.to_le_bytes());
    h.extend(b"WAVE");
    h.extend(b"fmt ");
    h.extend(fmt_len.to_le_bytes());
    h.extend(spec.encoding.format_tag().to_le_bytes());
    h.extend(spec.channels.to_le_bytes());
    h.extend(spec.sample_rate.to_le_bytes());
    h.extend((spec.sample_rate * block_align as u32).to_le_bytes());
    h.extend(block_align.to_le_bytes());
    h.extend(bits.to_le_bytes());
    if spec.encoding == Encoding::MuLaw {
        h.extend(0u16.to_le_bytes()); // cbSize
        h.extend(b"fact");
        h.extend(4u32.to_le_bytes());
        h.extend((data_bytes / block_align as u32).to_le_bytes());
    }
    h.extend(b"data");
    h.extend(data_bytes.to_le_bytes());
    h
}

/// A whole WAV file in memory (for tests and tools; recordings use [`WavWriter`]).
pub fn encode_pcm16(spec: WavSpec, samples: &[i16]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let spec = WavSpec {
        encoding: Encoding::Pcm16,
        ..spec
    };
    let mut out = header(&spec, data.len() as u32);
    out.extend(data);
    out
}

/// A whole μ-law WAV file in memory.
pub fn encode_mulaw(spec: WavSpec, codes: &[u8]) -> Vec<u8> {
    let spec = WavSpec {
        encoding: Encoding::MuLaw,
        ..spec
    };
    let mut out = header(&spec, codes.len() as u32);
    out.extend_from_slice(codes);
    if codes.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// Samples read from a WAV file, interleaved when there are several channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Samples {
    Pcm16(Vec<i16>),
    MuLaw(Vec<u8>),
}

/// A WAV file read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub spec: WavSpec,
    pub samples: Samples,
}

impl Wav {
    /// The samples as 16-bit PCM (μ-law is decoded), interleaved.
    pub fn to_pcm16(&self) -> Vec<i16> {
        match &self.samples {
            Samples::Pcm16(s) => s.clone(),
            Samples::MuLaw(c) => mulaw::decode(c),
        }
    }

    /// One channel as 16-bit PCM (`0` = left), or `None` if it does not exist.
    pub fn channel(&self, index: u16) -> Option<Vec<i16>> {
        if index >= self.spec.channels {
            return None;
        }
        let all = self.to_pcm16();
        let n = self.spec.channels as usize;
        Some(
            all.iter()
                .skip(index as usize)
                .step_by(n)
                .copied()
                .collect(),
        )
    }

    /// Mono 16-bit PCM (channels averaged).
    pub fn to_mono_pcm16(&self) -> Vec<i16> {
        let all = self.to_pcm16();
        let n = self.spec.channels as usize;
        if n == 1 {
            return all;
        }
        all.chunks_exact(n)
            .map(|f| (f.iter().map(|&s| s as i32).sum::<i32>() / n as i32) as i16)
            .collect()
    }

    /// Sample frames (one sample per channel each).
    pub fn frames(&self) -> usize {
        let n = self.spec.channels as usize;
        match &self.samples {
            Samples::Pcm16(s) => s.len() / n,
            Samples::MuLaw(c) => c.len() / n,
        }
    }
}

/// Why a WAV file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WavReadError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("not a RIFF/WAVE file")]
    NotWav,
    #[error("no fmt chunk before the data")]
    MissingFormat,
    #[error("no data chunk")]
    MissingData,
    #[error("malformed fmt chunk")]
    BadFormat,
    #[error(
        "unsupported encoding: format tag {tag:#06x}, {bits} bits (PCM16 and μ-law are supported)"
    )]
    Unsupported { tag: u16, bits: u16 },
    #[error("file larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
}

/// Reads a WAV file from disk, refusing files larger than `max_bytes`.
pub fn read_file(path: impl AsRef<Path>, max_bytes: u64) -> Result<Wav, WavReadError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max_bytes {
        return Err(WavReadError::TooLarge { limit: max_bytes });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    io::Read::read_to_end(&mut io::Read::take(file, max_bytes + 1), &mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(WavReadError::TooLarge { limit: max_bytes });
    }
    parse(&bytes)
}

/// Parses a WAV file held in memory.
pub fn parse(bytes: &[u8]) -> Result<Wav, WavReadError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavReadError::NotWav);
    }
    let mut at = 12usize;
    let mut spec = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size =
            u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default()) as usize;
        let body_start = at + 8;
        // A chunk running past the end is cut at the end (streamed or truncated files).
        let body_end = body_start.saturating_add(size).min(bytes.len());
        let body = &bytes[body_start..body_end];
        match id {
            b"fmt " => spec = Some(parse_format(body)?),
            b"data" => {
                let spec: WavSpec = spec.ok_or(WavReadError::MissingFormat)?;
                let block = spec.block_align() as usize;
                let whole = body.len() - body.len() % block;
                let body = &body[..whole];
                let samples = match spec.encoding {
                    Encoding::Pcm16 => Samples::Pcm16(
                        body.chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]]))
                            .collect(),
                    ),
                    Encoding::MuLaw => Samples::MuLaw(body.to_vec()),
                };
                return Ok(Wav { spec, samples });
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body_start.saturating_add(size).saturating_add(size % 2);
    }
    Err(if spec.is_none() {
        WavReadError::MissingFormat
    } else {
        WavReadError::MissingData
    })
}

fn parse_format(body: &[u8]) -> Result<WavSpec, WavReadError> {
    if body.len() < 16 {
        return Err(WavReadError::BadFormat);
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) then the sub-format GUID, whose
        // first two bytes are the real format tag.
        if body.len() < 26 {
            return Err(WavReadError::BadFormat);
        }
        tag = u16_at(24);
    }
    let encoding = match (tag, bits) {
        (FORMAT_PCM, 16) => Encoding::Pcm16,
        (FORMAT_MULAW, 8) => Encoding::MuLaw,
        _ => return Err(WavReadError::Unsupported { tag, bits }),
    };
    let spec = WavSpec {
        sample_rate,
        channels,
        encoding,
    };
    if channels == 0 || sample_rate == 0 || block_align != spec.block_align() {
        return Err(WavReadError::BadFormat);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn pcm16_mono_round_trip_and_layout() {
        let samples: Vec<i16> = (0..1001).map(|i| (i * 37 % 65536 - 32768) as i16).collect();
        let mut w = WavWriter::new(Cursor::new(Vec::new()), WavSpec::pcm16_mono(16000)).unwrap();
        for chunk in samples.chunks(160) {
            w.write_pcm16(chunk).unwrap();
        }
        assert_eq!(w.frames_written(), 1001);
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes.len(), 44 + 2002);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
            36 + 2002
        );
        assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 2002);
        assert_eq!(bytes, encode_pcm16(WavSpec::pcm16_mono(16000), &samples));
        let wav = parse(&bytes).unwrap();
        assert_eq!(wav.spec, WavSpec::pcm16_mono(16000));
        assert_eq!(wav.samples, Samples::Pcm16(samples));
    }

    #[test]
    fn stereo_recording_interleaves_caller_left_agent_right() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), WavSpec::pcm16_stereo(8000)).unwrap();
        w.write_stereo(&[1, 2, 3], &[-1, -2]).unwrap();
        w.write_pcm16(&[4, -4]).unwrap();
        assert!(matches!(
            w.write_pcm16(&[5]),
            Err(WavWriteError::PartialFrame { .. })
        ));
        assert!(matches!(
            w.write_mulaw(&[5, 5]),
            Err(WavWriteError::WrongEncoding { .. })
        ));
        let wav = parse(&w.finish().unwrap().into_inner()).unwrap();
        assert_eq!(wav.frames(), 4);
        assert_eq!(wav.channel(0).unwrap(), [1, 2, 3, 4]);
        assert_eq!(wav.channel(1).unwrap(), [-1, -2, 0, -4]);
        assert_eq!(wav.channel(2), None);
        assert_eq!(wav.to_mono_pcm16(), [0, 0, 1, 0]);
    }

    #[test]
    fn mulaw_with_odd_length_is_padded_and_has_a_fact_chunk() {
        let codes = [0xFFu8, 0x00, 0x80, 0x7F, 0x12];
        let mut w = WavWriter::new(Cursor::new(Vec::new()), WavSpec::mulaw_8k()).unwrap();
        w.write_mulaw(&codes[..2]).unwrap();
        w.write_mulaw(&codes[2..]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes, encode_mulaw(WavSpec::mulaw_8k(), &codes));
        assert_eq!(bytes.len(), 58 + 6);
        assert_eq!(&bytes[38..42], b"fact");
        assert_eq!(u32::from_le_bytes(bytes[46..50].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(bytes[54..58].try_into().unwrap()), 5);
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
            bytes.len() - 8
        );
        let wav = parse(&bytes).unwrap();
        assert_eq!(wav.samples, Samples::MuLaw(codes.to_vec()));
        assert_eq!(
            wav.to_pcm16(),
            [0, -32124, 32124, 0, mulaw::decode_sample(0x12)]
        );
    }

    #[test]
    fn sync_leaves_a_readable_file_mid_recording() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), WavSpec::pcm16_mono(8000)).unwrap();
        w.write_pcm16(&[1, 2, 3]).unwrap();
        w.sync().unwrap();
        w.write_pcm16(&[4]).unwrap();
        // Unsynced tail: the header still says 3 samples, and the reader keeps them.
        let snapshot = w.inner.get_ref().clone();
        assert_eq!(
            parse(&snapshot).unwrap().samples,
            Samples::Pcm16(vec![1, 2, 3])
        );
        // A header that was never fixed up (size 0 or huge) is read to the end of file.
        let mut streamed = snapshot.clone();
        streamed[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse(&streamed).unwrap().samples,
            Samples::Pcm16(vec![1, 2, 3, 4])
        );
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(
            parse(&bytes).unwrap().samples,
            Samples::Pcm16(vec![1, 2, 3, 4])
        );
    }

    #[test]
    fn reader_skips_unknown_chunks_and_reads_extensible() {
        let mut bytes = encode_pcm16(WavSpec::pcm16_mono(24000), &[7, 8]);
        // Insert an odd-sized LIST chunk (with its pad byte) before the data.
        let list = [b"LIST".as_slice(), &3u32.to_le_bytes(), b"abc", &[0]].concat();
        bytes.splice(36..36, list);
        assert_eq!(parse(&bytes).unwrap().samples, Samples::Pcm16(vec![7, 8]));

        // WAVE_FORMAT_EXTENSIBLE with the μ-law sub-format.
        let mut fmt = Vec::new();
        fmt.extend(FORMAT_EXTENSIBLE.to_le_bytes());
        fmt.extend(1u16.to_le_bytes());
        fmt.extend(8000u32.to_le_bytes());
        fmt.extend(8000u32.to_le_bytes());
        fmt.extend(1u16.to_le_bytes());
        fmt.extend(8u16.to_le_bytes());
        fmt.extend(22u16.to_le_bytes());
        fmt.extend(8u16.to_le_bytes());
        fmt.extend(4u32.to_le_bytes());
        fmt.extend(FORMAT_MULAW.to_le_bytes());
        fmt.extend([0u8; 14]);
        let mut file = Vec::new();
        file.extend(b"RIFF");
        file.extend((4 + 8 + fmt.len() as u32 + 8 + 2).to_le_bytes());
        file.extend(b"WAVEfmt ");
        file.extend((fmt.len() as u32).to_le_bytes());
        file.extend(&fmt);
        file.extend(b"data");
        file.extend(2u32.to_le_bytes());
        file.extend([0xFF, 0x00]);
        let wav = parse(&file).unwrap();
        assert_eq!(wav.spec, WavSpec::mulaw_8k());
        assert_eq!(wav.samples, Samples::MuLaw(vec![0xFF, 0x00]));
    }

    #[test]
    fn reader_errors_are_clear() {
        assert!(matches!(parse(b"RIFX...."), Err(WavReadError::NotWav)));
        assert!(matches!(parse(b""), Err(WavReadError::NotWav)));
        let pcm = encode_pcm16(WavSpec::pcm16_mono(8000), &[1, 2]);
        assert!(matches!(parse(&pcm[..36]), Err(WavReadError::MissingData)));
        assert!(matches!(
            parse(&pcm[..12]),
            Err(WavReadError::MissingFormat)
        ));
        let mut float = pcm.clone();
        float[20..22].copy_from_slice(&3u16.to_le_bytes()); // IEEE float
        float[34..36].copy_from_slice(&32u16.to_le_bytes());
        let err = parse(&float).unwrap_err();
        assert!(matches!(
            err,
            WavReadError::Unsupported { tag: 3, bits: 32 }
        ));
        assert!(err.to_string().contains("PCM16 and μ-law"));
        let mut bad = pcm.clone();
        bad[32..34].copy_from_slice(&3u16.to_le_bytes()); // block align
        assert!(matches!(parse(&bad), Err(WavReadError::BadFormat)));
        // Odd trailing byte of a truncated PCM16 file is dropped, not misread.
        let mut cut = pcm.clone();
        cut.pop();
        assert_eq!(parse(&cut).unwrap().samples, Samples::Pcm16(vec![1]));
    }

    #[test]
    fn files_on_disk() {
        let dir = std::env::temp_dir().join(format!("voxrelay-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rec.wav");
        let mut w = WavWriter::create(&path, WavSpec::pcm16_stereo(8000)).unwrap();
        w.write_stereo(&[100; 160], &[-100; 160]).unwrap();
        w.finish().unwrap();
        let wav = read_file(&path, 1 << 20).unwrap();
        assert_eq!(wav.frames(), 160);
        assert!(matches!(
            read_file(&path, 100),
            Err(WavReadError::TooLarge { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
