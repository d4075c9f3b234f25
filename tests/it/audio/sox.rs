//! Our audio codecs against `sox` (the reference most people reach for): μ-law
//! decoding and encoding, and WAV files in both directions. `scripts/setup.sh`
//! installs sox; where it is missing these tests print a notice and pass.
//!
//! sox is always run with `-D`: by default it dithers when it reduces the bit depth,
//! which adds random noise and would make a bit-exact comparison meaningless.

use std::path::{Path, PathBuf};
use std::process::Command;

use voxrelay::audio::{mulaw, wav};

fn sox_available() -> bool {
    let found = Command::new("sox")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "NOTICE: sox is not installed; skipping the codec checks against sox \
             (scripts/setup.sh installs it)"
        );
    }
    found
}

/// A fresh directory for one test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("voxrelay-sox-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sox -D input [options] output` (options are the output's format options).
fn sox(input: &Path, output: &Path, options: &[&str]) {
    let out = Command::new("sox")
        .arg("-D")
        .arg(input)
        .args(options)
        .arg(output)
        .output()
        .expect("run sox");
    assert!(
        out.status.success(),
        "sox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Known content: every 16-bit value in order, then a 1 kHz tone and a sweep at
/// speech-like levels (half a second each at 8 kHz).
fn test_signal() -> Vec<i16> {
    let mut x: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    for n in 0..4000 {
        let t = n as f64 / 8000.0;
        x.push((12000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()).round() as i16);
    }
    for n in 0..4000 {
        let t = n as f64 / 8000.0;
        let phase = 2.0 * std::f64::consts::PI * (100.0 * t + 3500.0 * t * t);
        x.push((3000.0 * phase.sin()).round() as i16);
    }
    x
}

/// What sox hands its μ-law encoder, expressed as the 16-bit sample the ITU
/// reference would need to see for the same 14-bit magnitude: sox rounds to 14 bits
/// (`(x + 2) >> 2`, clipped) and encodes sign and magnitude, where the ITU reference
/// truncates and takes the one's complement of negative samples.
fn sox_convention(x: i16) -> i16 {
    let p = ((x as i32 + 2) >> 2).min(8191);
    if p >= 0 {
        (4 * p) as i16
    } else {
        (4 * p - 1).max(i16::MIN as i32) as i16
    }
}

#[test]
fn sox_decodes_every_mulaw_code_exactly_like_us() {
    if !sox_available() {
        return;
    }
    let dir = Scratch::new("decode");
    let codes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let ulaw = dir.path("codes.wav");
    std::fs::write(&ulaw, wav::encode_mulaw(wav::WavSpec::mulaw_8k(), &codes)).unwrap();
    let pcm = dir.path("pcm.wav");
    sox(&ulaw, &pcm, &["-e", "signed-integer", "-b", "16"]);

    let decoded = wav::read_file(&pcm, 1 << 20).unwrap();
    assert_eq!(decoded.spec, wav::WavSpec::pcm16_mono(8000));
    assert_eq!(decoded.to_pcm16(), mulaw::decode(&codes));
}

#[test]
fn sox_encodes_mulaw_like_us_up_to_its_documented_rounding() {
    if !sox_available() {
        return;
    }
    let dir = Scratch::new("encode");
    let signal = test_signal();
    let pcm = dir.path("signal.wav");
    std::fs::write(
        &pcm,
        wav::encode_pcm16(wav::WavSpec::pcm16_mono(8000), &signal),
    )
    .unwrap();
    let ulaw = dir.path("signal-ulaw.wav");
    sox(&pcm, &ulaw, &["-e", "u-law"]);

    // Our reader takes sox's μ-law WAV (fmt tag 7 with a fact chunk).
    let theirs = wav::read_file(&ulaw, 1 << 20).unwrap();
    assert_eq!(theirs.spec, wav::WavSpec::mulaw_8k());
    let wav::Samples::MuLaw(theirs) = theirs.samples else {
        panic!("sox wrote {:?}", theirs.samples)
    };
    assert_eq!(theirs.len(), signal.len());

    // Bit-exact once sox's 16-to-14-bit rounding is applied to our input.
    for (i, (&x, &code)) in signal.iter().zip(&theirs).enumerate() {
        assert_eq!(
            mulaw::encode_sample(sox_convention(x)),
            code,
            "sample {i} ({x})"
        );
    }

    // On the raw input the two differ only at decision thresholds, by one level.
    let mut levels: Vec<i16> = mulaw::DECODE_TABLE.to_vec();
    levels.sort_unstable();
    levels.dedup();
    let rank = |code: u8| levels.binary_search(&mulaw::decode_sample(code)).unwrap() as i32;
    let mut differ = 0;
    for (&x, &code) in signal.iter().zip(&theirs) {
        let ours = mulaw::encode_sample(x);
        if ours != code {
            differ += 1;
            assert!(
                (rank(ours) - rank(code)).abs() <= 1,
                "sample {x}: {ours:#04x} vs {code:#04x}"
            );
        }
    }
    let exhaustive_differ = (i16::MIN..=i16::MAX)
        .filter(|&x| mulaw::encode_sample(x) != theirs[(x as i32 + 32768) as usize])
        .count();
    assert_eq!(
        exhaustive_differ, 510,
        "threshold cases among all 65536 inputs"
    );
    // In the tone and sweep (8000 samples at speech levels), about 2 % of samples
    // land that close to a threshold.
    let in_audio = differ - exhaustive_differ;
    assert!(
        in_audio < 8000 * 3 / 100,
        "{in_audio} differences in 8000 samples"
    );
}

#[test]
fn sox_reads_our_wav_files_and_we_read_theirs() {
    if !sox_available() {
        return;
    }
    let dir = Scratch::new("files");
    // A stereo PCM16 recording written incrementally, as a call recording is.
    let left: Vec<i16> = (0..1600)
        .map(|i| ((i * 97) % 20000 - 10000) as i16)
        .collect();
    let right: Vec<i16> = left.iter().map(|s| -s / 2).collect();
    let stereo = dir.path("stereo.wav");
    let mut w = wav::WavWriter::create(&stereo, wav::WavSpec::pcm16_stereo(8000)).unwrap();
    for (l, r) in left.chunks(160).zip(right.chunks(160)) {
        w.write_stereo(l, r).unwrap();
    }
    w.finish().unwrap();
    // sox splits the channels out of our file exactly.
    for (channel, expected) in [("1", &left), ("2", &right)] {
        let out = dir.path(&format!("ch{channel}.wav"));
        let status = Command::new("sox")
            .arg("-D")
            .arg(&stereo)
            .arg(&out)
            .args(["remix", channel])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(&wav::read_file(&out, 1 << 20).unwrap().to_pcm16(), expected);
    }

    // Our μ-law WAV (odd length, fact chunk) goes through sox unchanged.
    let codes: Vec<u8> = (0..161u32).map(|i| (i * 7 % 256) as u8).collect();
    let ours = dir.path("ours-ulaw.wav");
    let mut w = wav::WavWriter::create(&ours, wav::WavSpec::mulaw_8k()).unwrap();
    w.write_mulaw(&codes).unwrap();
    w.finish().unwrap();
    let copy = dir.path("copy-ulaw.wav");
    sox(&ours, &copy, &["-e", "u-law"]);
    assert_eq!(
        wav::read_file(&copy, 1 << 20).unwrap().samples,
        wav::Samples::MuLaw(codes)
    );
}
