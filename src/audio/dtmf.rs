//! DTMF key tones as 8 kHz μ-law, so a pipeline that only sends audio (Media
//! Streams has no "press a key" message) can still press keys towards the far end
//! (an IVR menu). Each key is its two ITU-T Q.23 frequencies for 100 ms, then 100 ms
//! of silence; `w` is a half-second pause, as in Twilio's `sendDigits`.

use super::mulaw;

const RATE: f32 = 8000.0;
/// Samples of one key tone (100 ms) and of the gap after it (100 ms).
const TONE: usize = 800;
const GAP: usize = 800;
/// Samples of a `w` pause (500 ms).
const PAUSE: usize = 4000;
/// Peak of each of the two sines (the sum stays well below full scale).
const AMPLITUDE: f32 = 8000.0;

/// The (low, high) frequencies of a key, in Hz.
pub fn frequencies(key: char) -> Option<(f32, f32)> {
    let low = match key {
        '1' | '2' | '3' | 'A' => 697.0,
        '4' | '5' | '6' | 'B' => 770.0,
        '7' | '8' | '9' | 'C' => 852.0,
        '*' | '0' | '#' | 'D' => 941.0,
        _ => return None,
    };
    let high = match key {
        '1' | '4' | '7' | '*' => 1209.0,
        '2' | '5' | '8' | '0' => 1336.0,
        '3' | '6' | '9' | '#' => 1477.0,
        'A' | 'B' | 'C' | 'D' => 1633.0,
        _ => return None,
    };
    Some((low, high))
}

/// μ-law audio pressing `keys` (`0-9 * # A-D`, `w` pauses); other characters are
/// skipped. At most 64 keys are rendered (about 13 s).
pub fn tones(keys: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for key in keys.chars().take(64) {
        if key == 'w' || key == 'W' {
            out.resize(out.len() + PAUSE, mulaw::SILENCE);
            continue;
        }
        let Some((low, high)) = frequencies(key.to_ascii_uppercase()) else {
            continue;
        };
        let (wl, wh) = (
            2.0 * std::f32::consts::PI * low / RATE,
            2.0 * std::f32::consts::PI * high / RATE,
        );
        out.extend((0..TONE).map(|n| {
            let n = n as f32;
            let sample = AMPLITUDE * ((wl * n).sin() + (wh * n).sin());
            mulaw::encode_sample(sample as i16)
        }));
        out.resize(out.len() + GAP, mulaw::SILENCE);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Power of `samples` at `freq` (Goertzel).
    fn power(samples: &[i16], freq: f32) -> f32 {
        let coeff = 2.0 * (2.0 * std::f32::consts::PI * freq / RATE).cos();
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in samples {
            let s0 = x as f32 + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    #[test]
    fn each_key_has_its_two_tones() {
        for key in "0123456789*#ABCD".chars() {
            let audio = tones(&key.to_string());
            assert_eq!(audio.len(), TONE + GAP);
            let pcm = mulaw::decode(&audio[..TONE]);
            let (low, high) = frequencies(key).unwrap();
            let all = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
            let strongest: Vec<f32> = {
                let mut by_power: Vec<(f32, f32)> =
                    all.iter().map(|&f| (power(&pcm, f), f)).collect();
                by_power.sort_by(|a, b| b.0.total_cmp(&a.0));
                let mut two = vec![by_power[0].1, by_power[1].1];
                two.sort_by(f32::total_cmp);
                two
            };
            assert_eq!(strongest, vec![low, high], "key {key}");
            assert!(audio[TONE..].iter().all(|&b| b == mulaw::SILENCE));
        }
    }

    #[test]
    fn pauses_and_unknown_keys() {
        assert_eq!(tones("w").len(), PAUSE);
        assert_eq!(tones("1x2").len(), 2 * (TONE + GAP));
        assert!(tones("").is_empty());
        assert_eq!(tones(&"1".repeat(1000)).len(), 64 * (TONE + GAP));
    }
}
